/**
 * The life of one certificate as one table. Every change of a certificate's state is an
 * event here, and the store applies events only through this table, so no room can write
 * a state the table does not allow (cert-manager learned the same lesson with explicit
 * conditions; a status string written in many files drifts). Pure: no I/O, no clock.
 */
import { CertplaneError } from '../errors.js';
import { ErrorCode } from '../error-catalogue.js';

/**
 * Where a certificate stands. `pending`: waiting for the agent's CSR. `csr_accepted`: the CSR
 * passed policy, no order yet (the rate limiter may hold it here). `ordering`: an ACME
 * order exists. `issued`: the chain was selected, verified and stored. `delivered`: sent to
 * the agent, awaiting its acknowledgement. `installed`: the agent acknowledged it.
 * `superseded`: a newer certificate of the same instance was installed (a renewal, a reissue, or
 * the same certificate re-chained). `failed`: given up,
 * with a typed reason (./reasons.ts). `revoked`: the CA was asked to revoke it and agreed
 * (RFC 8555 §7.6), with the RFC 5280 reason in its record (./revocation.ts); nothing moves it on.
 */
export const CERTIFICATE_STATES = ['pending', 'csr_accepted', 'ordering', 'issued', 'delivered', 'installed', 'superseded', 'failed', 'revoked'] as const;
export type CertificateState = (typeof CERTIFICATE_STATES)[number];

/** States in which a certificate still has work to do; an instance has at most one certificate in them. */
export const OPEN_STATES: readonly CertificateState[] = ['pending', 'csr_accepted', 'ordering', 'issued', 'delivered'];

/** States from which an ACME order may be placed or resumed. */
export const ORDERING_STATES: readonly CertificateState[] = ['csr_accepted', 'ordering'];

/**
 * States in which a certificate exists at the CA, so that it can be revoked: from `issued` on
 * the CA signed it, and neither a later failure (the agent refused it) nor a successor
 * (superseded) makes the signed certificate go away before it expires.
 */
export const REVOCABLE_STATES: readonly CertificateState[] = ['issued', 'delivered', 'installed', 'superseded', 'failed'];

/** What can happen to a certificate. Each name is an arc (or a set of arcs) of the table. */
export const LIFECYCLE_EVENTS = ['preordered', 'csr_accepted', 'order_created', 'order_replaced', 'chain_verified', 'delivered', 'installed', 'superseded', 'failed', 'revoked'] as const;
export type LifecycleEvent = (typeof LIFECYCLE_EVENTS)[number];

/** The one transition table: for each event, the states it may leave and the state it enters. */
export const TRANSITIONS: Readonly<Record<LifecycleEvent, { readonly from: readonly CertificateState[]; readonly to: CertificateState }>> = {
  /**
   * An ACME order was placed for the instance's names while its agent makes the CSR (newOrder,
   * the authorizations and the challenges need only the names): its URL is recorded, and the
   * certificate stays pending until its CSR is accepted, when `csr_accepted` and
   * `order_created` apply in one write (ownership.ts, earlyOrderRefusal).
   */
  preordered: { from: ['pending'], to: 'pending' },
  csr_accepted: { from: ['pending'], to: 'csr_accepted' },
  order_created: { from: ['csr_accepted'], to: 'ordering' },
  /** A process that took the order over found it unusable at the CA (invalid, expired, unknown) and placed a new one. */
  order_replaced: { from: ['ordering'], to: 'ordering' },
  chain_verified: { from: ['ordering'], to: 'issued' },
  delivered: { from: ['issued'], to: 'delivered' },
  installed: { from: ['delivered'], to: 'installed' },
  superseded: { from: ['installed'], to: 'superseded' },
  failed: { from: OPEN_STATES, to: 'failed' },
  revoked: { from: REVOCABLE_STATES, to: 'revoked' },
};

/**
 * The arc of several events applied one after the other in one write (an issued chain
 * delivered at once to an agent connected here: `chain_verified` then `delivered`): the states
 * the first event may leave, and the state the last one enters. Each step is an arc of the
 * table, checked here, so a composed write can go nowhere the events one by one could not.
 */
export function composedArc(events: readonly [LifecycleEvent, ...LifecycleEvent[]]): { readonly from: readonly CertificateState[]; readonly to: CertificateState } {
  const [first, ...rest] = events;
  let to = TRANSITIONS[first].to;
  for (const event of rest) {
    if (!TRANSITIONS[event].from.includes(to)) throw refusal(to, event);
    to = TRANSITIONS[event].to;
  }
  return { from: TRANSITIONS[first].from, to };
}

/**
 * How a certificate record comes into being, and the state it starts in. `requested`: a new
 * certificate, waiting for its agent's CSR. `rechained`: the same signed certificate (same
 * leaf, same key) on another chain the CA offered for it and certplane kept: nothing to
 * order and no key to make, so the record starts `issued`, and from there the delivery arcs
 * of the table carry it (delivered, installed, superseding the record it re-chains; or
 * failed, when the agent refuses it, leaving the installed one as it was).
 */
export const ENTRY_EVENTS = ['requested', 'rechained'] as const;
export type EntryEvent = (typeof ENTRY_EVENTS)[number];
export const ENTRIES: Readonly<Record<EntryEvent, CertificateState>> = {
  requested: 'pending',
  rechained: 'issued',
};

/**
 * Whether a rechain of the instance's installed certificate may start now: it needs an
 * installed certificate to re-chain (`no-installed-certificate` otherwise) and no other
 * certificate under way (`issuance-under-way`: the instance holds one open certificate at a
 * time, and the one under way gets its chain chosen under the trust in force anyway).
 */
export function rechainRefusal(facts: { readonly installed: CertificateState | undefined; readonly open: readonly CertificateState[] }): 'no-installed-certificate' | 'issuance-under-way' | undefined {
  if (facts.installed !== 'installed') return 'no-installed-certificate';
  if (facts.open.some(isOpen)) return 'issuance-under-way';
  return undefined;
}

/** The order of progress along the happy path, for telling a late event from an impossible one. */
const PROGRESS: Readonly<Record<CertificateState, number>> = {
  pending: 0,
  csr_accepted: 1,
  ordering: 2,
  issued: 3,
  delivered: 4,
  installed: 5,
  superseded: 6,
  failed: 7,
  revoked: 8,
};

/**
 * What an event means for a certificate in `state`:
 * - `apply`: the table has the arc; the certificate moves to `to`.
 * - `stale`: the certificate is already there or past it (another process or a repeated
 *   message got there first, or it settled meanwhile); nothing to do, and nothing wrong.
 * - `refused`: the event skips ahead or runs backwards (an acknowledgement of something
 *   never delivered): a bug or a lying peer, refused with LIFECYCLE_TRANSITION_REFUSED.
 */
export function classify(state: CertificateState, event: LifecycleEvent): 'apply' | 'stale' | 'refused' {
  const arc = TRANSITIONS[event];
  if (arc.from.includes(state)) return 'apply';
  if (!OPEN_STATES.includes(state)) return 'stale';
  if (event !== 'failed' && PROGRESS[state] >= PROGRESS[arc.to]) return 'stale';
  return 'refused';
}

/** The state `event` leads to from `state`, or a LIFECYCLE_TRANSITION_REFUSED error; undefined when the event is stale. */
export function next(state: CertificateState, event: LifecycleEvent): CertificateState | undefined {
  const verdict = classify(state, event);
  if (verdict === 'apply') return TRANSITIONS[event].to;
  if (verdict === 'stale') return undefined;
  throw refusal(state, event);
}

export function refusal(state: CertificateState, event: LifecycleEvent): CertplaneError {
  return new CertplaneError(
    ErrorCode.LIFECYCLE_TRANSITION_REFUSED,
    `a certificate in state ${state} cannot take the event ${event} (it needs one of: ${TRANSITIONS[event].from.join(', ')})`,
    { state, event, allowedFrom: TRANSITIONS[event].from },
  );
}

export function isOpen(state: CertificateState): boolean {
  return OPEN_STATES.includes(state);
}

/** A certificate's standing as one condition in cert-manager's shape, so dashboards built for it read certplane too. */
export interface ReadyCondition {
  readonly type: 'Ready';
  /** True when installed, False when failed, superseded or revoked, Unknown while work is under way. */
  readonly status: 'True' | 'False' | 'Unknown';
  /** The failure reason when failed (./reasons.ts), else the state in PascalCase. */
  readonly reason: string;
  readonly message: string | null;
  readonly lastTransitionTime: string;
}

export function readyCondition(state: CertificateState, failureReason: string | null, message: string | null, changedAt: Date): ReadyCondition {
  const status = state === 'installed' ? 'True' : state === 'failed' || state === 'superseded' || state === 'revoked' ? 'False' : 'Unknown';
  const reason = state === 'failed' && failureReason ? failureReason : state.replace(/(^|_)([a-z])/g, (_m, _sep: string, letter: string) => letter.toUpperCase());
  return { type: 'Ready', status, reason, message: state === 'failed' ? message : null, lastTransitionTime: changedAt.toISOString() };
}
