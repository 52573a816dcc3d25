/**
 * Why a certificate failed, as data a program can act on: the reason decides whether the
 * work is tried again and when, and the API shows it beside the message for people, in
 * the style of cert-manager's conditions. A retry that cannot change the outcome only
 * spends the CA's rate-limit budget, so permanent reasons fail the job at once.
 */

/** Every failure reason, each with whether another attempt could succeed without a person changing something. */
export const FAILURE_REASONS = {
  /** The CA or certplane's own limiter said wait; `retryAt` is when the budget is back. */
  RateLimited: { permanent: false },
  /** No HTTP answer from the CA. */
  CaUnreachable: { permanent: false },
  /** The CA answered with a problem that may pass (serverInternal, a run of badNonce, an unknown problem). */
  CaError: { permanent: false },
  /** The CA could not validate a challenge for `names` (the agent's port, DNS, a firewall). */
  ValidationFailed: { permanent: false },
  /** The CA says the order's `replaces` was already replaced (RFC 9773); the next order goes without it. */
  AlreadyReplaced: { permanent: false },
  /** The agent refused the delivery or could not install it (`agentCode` says why). */
  AgentRefused: { permanent: false },
  /** The agent was not connected when it was needed. */
  AgentOffline: { permanent: false },
  /** The instance's names or key algorithm changed while it was under way; a certificate for the new ones replaces it. */
  InstanceChanged: { permanent: false },
  /** Something inside certplane failed (database, bug); the log has the detail. */
  Internal: { permanent: false },
  /** The CSR breaks the instance's policy (names, key, signature). */
  CsrRejected: { permanent: true },
  /** No chain the CA offered satisfies the preferences and trust: another order gets the same chains. */
  ChainUnsatisfied: { permanent: true },
  /** The instance asks for an ACME profile the CA does not offer. */
  ProfileUnknown: { permanent: true },
  /** The CA refuses to issue for an identifier (policy, blocked name, malformed). */
  IdentifierRejected: { permanent: true },
  /** No configured solver answers any challenge type the CA offers for a name. */
  ChallengeUnsupported: { permanent: true },
  /** The CA refuses the account itself (unauthorized outside a challenge, terms to accept, external binding required). */
  AccountRefused: { permanent: true },
  /** A rechain found no stored chain of the installed certificate that the trust in force accepts, or nothing to re-chain: only a new order (a reissue) helps. */
  RechainUnavailable: { permanent: true },
  /** The instance was decommissioned while the certificate was under way: nobody will install it. */
  InstanceDecommissioned: { permanent: true },
} as const satisfies Record<string, { permanent: boolean }>;

export type FailureReasonName = keyof typeof FAILURE_REASONS;

/** A failure as stored: the reason, the stable error code that led to it, and the facts a person or program needs. */
export interface FailureReason {
  readonly reason: FailureReasonName;
  /** The CertplaneError code (or channel code) the failure came from. */
  readonly code: string;
  /** When another attempt may start (RateLimited). */
  readonly retryAt?: string;
  /** The names concerned (ValidationFailed, IdentifierRejected). */
  readonly names?: readonly string[];
  /** The agent's own code (AgentRefused). */
  readonly agentCode?: string;
  /** The RFC 8555 / RFC 9773 problem type, when the CA sent one. */
  readonly problemType?: string;
}

export function isPermanent(failure: Pick<FailureReason, 'reason'>): boolean {
  return FAILURE_REASONS[failure.reason].permanent;
}

/** After this many failed attempts a transient failure also stops retrying and waits for a person. */
export const MAX_ATTEMPTS = 8;

/** Capped exponential backoff with full jitter between failed attempts. */
export function retryDelayMs(attempts: number, baseMs = 60_000, maxMs = 6 * 3_600_000, random: () => number = Math.random): number {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.max(0, attempts - 1));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

export type RetryDecision = { readonly retry: true; readonly at: Date } | { readonly retry: false; readonly why: 'permanent' | 'attempts_exhausted' };

/**
 * Whether and when the work behind a failed certificate runs again, after its `attempts`-th
 * failure (1-based). A rate limit's own time wins over the backoff when it is later.
 */
export function retryDecision(failure: FailureReason, attempts: number, now: Date, random: () => number = Math.random): RetryDecision {
  if (isPermanent(failure)) return { retry: false, why: 'permanent' };
  if (attempts >= MAX_ATTEMPTS) return { retry: false, why: 'attempts_exhausted' };
  const backoff = now.getTime() + retryDelayMs(attempts, undefined, undefined, random);
  const limit = failure.retryAt ? Date.parse(failure.retryAt) : Number.NaN;
  return { retry: true, at: new Date(Number.isFinite(limit) ? Math.max(limit, backoff) : backoff) };
}
