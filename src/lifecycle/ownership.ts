/**
 * Who works on a certificate, and what a process does when it takes the work over: the
 * decisions behind the lease in the database, kept here as pure functions so they are read
 * and tested in one place, without a CA or a database. The coordinator (fleet/issuance.ts)
 * carries them out.
 */
import type { CertificateState } from './machine.js';

/** How long a lease lasts without renewal unless configured (CERTPLANE_LEASE_MS). */
export const DEFAULT_LEASE_MS = 60_000;

/** How often the holder renews its lease: three chances before it lapses, so one slow query does not lose it. */
export function leaseRenewalMs(leaseMs: number): number {
  return Math.max(1, Math.floor(leaseMs / 3));
}

/**
 * What the CA says about an order on record: its RFC 8555 §7.1.6 status, or `unknown` when
 * the CA no longer knows the URL (404: deleted, expired and purged, another CA behind the
 * same name), with the CA's words.
 */
export type OrderStanding =
  | { readonly status: 'pending' | 'ready' | 'processing' | 'valid' | 'invalid' }
  | { readonly status: 'unknown'; readonly detail: string };

/**
 * What to do with a certificate's order when a process starts (or takes over) work on it:
 * continue the stored order from where it stands, or place a new one, saying why when an
 * order existed. A new order spends the CA's rate-limit budget; resuming spends none.
 */
export type OrderPlan =
  | { readonly action: 'resume'; readonly orderUrl: string; readonly next: 'authorize' | 'finalize' | 'await' | 'download' }
  | { readonly action: 'new'; readonly replacing?: { readonly orderUrl: string; readonly why: string } };

const NEXT_STEP = { pending: 'authorize', ready: 'finalize', processing: 'await', valid: 'download' } as const;

/**
 * The plan for a certificate with `orderUrl` (null before any order) whose order the CA
 * reports as `standing` (undefined when there is no order to ask about). Any order the CA
 * can still complete is resumed: a pending one has its authorizations answered, a ready one
 * is finalized with the same CSR, a valid one downloaded. Only an invalid or unknown order
 * is replaced.
 */
export function planOrder(orderUrl: string | null, standing: OrderStanding | undefined): OrderPlan {
  if (!orderUrl || !standing) return { action: 'new' };
  switch (standing.status) {
    case 'invalid':
      return { action: 'new', replacing: { orderUrl, why: `the CA marked order ${orderUrl} invalid (an authorization failed or expired, or the order expired)` } };
    case 'unknown':
      return { action: 'new', replacing: { orderUrl, why: `the CA no longer knows order ${orderUrl}: ${standing.detail}` } };
    default:
      return { action: 'resume', orderUrl, next: NEXT_STEP[standing.status] };
  }
}

/** Why a process may not take up ordering for a certificate now; undefined when it may. */
export type TakeUpRefusal = 'no_csr' | 'running_here' | 'shutting_down' | 'no_channel' | 'not_ordering';

/**
 * Whether this process starts work on a certificate it found open (a reconnecting agent, the
 * periodic pass, an API request). The lease decides between processes; this decides whether
 * trying for it makes sense here: an http-01 order needs the agent's channel, which only the
 * process holding it can use, and a process shutting down starts nothing.
 */
export function takeUpRefusal(facts: {
  readonly status: CertificateState;
  readonly hasCsr: boolean;
  readonly runningHere: boolean;
  readonly shuttingDown: boolean;
  readonly needsChannel: boolean;
  readonly hasChannel: boolean;
}): TakeUpRefusal | undefined {
  if (facts.status !== 'csr_accepted' && facts.status !== 'ordering') return 'not_ordering';
  if (facts.shuttingDown) return 'shutting_down';
  if (!facts.hasCsr) return 'no_csr';
  if (facts.runningHere) return 'running_here';
  if (facts.needsChannel && !facts.hasChannel) return 'no_channel';
  return undefined;
}

/** Why this process does not order a pending certificate before its CSR arrives; undefined when it does. */
export type EarlyOrderRefusal = 'not_pending' | 'order_on_record' | 'running_here' | 'shutting_down' | 'no_channel';

/**
 * Whether to order a pending certificate while its agent makes the CSR, as this process asks
 * for it: newOrder, the authorizations and the challenges need only the instance's names, so
 * they run beside the agent's key generation and its answer, and only finalization waits for
 * the CSR. Only the process that holds the agent's channel (it asks for the CSR, and answers
 * http-01 through it), for a certificate without an order on record: a pending certificate
 * with one had an early order stopped before its CSR came (the agent went away, or the CSR
 * went to another process), and whoever accepts the CSR resumes that order. An order slot
 * must also be free (the caller's check): without one the certificate waits for its CSR as
 * before. The cost: a CSR refused afterwards leaves an order at the CA that is never
 * finalized (the refusal is permanent, so it happens once per certificate).
 */
export function earlyOrderRefusal(facts: {
  readonly status: CertificateState;
  readonly hasOrder: boolean;
  readonly runningHere: boolean;
  readonly shuttingDown: boolean;
  readonly hasChannel: boolean;
}): EarlyOrderRefusal | undefined {
  if (facts.status !== 'pending') return 'not_pending';
  if (facts.shuttingDown) return 'shutting_down';
  if (facts.hasOrder) return 'order_on_record';
  if (facts.runningHere) return 'running_here';
  if (!facts.hasChannel) return 'no_channel';
  return undefined;
}

/**
 * Why work on a certificate stopped before it settled. `shutdown`: this process is stopping;
 * `lease_lost`: a renewal found the lease held by another process (this one stalled past it);
 * `store_unavailable`: the database did not answer (the order itself is fine at the CA);
 * `no_csr`: an order placed before the CSR stopped without it (the agent went away or did not
 * answer in time, or its CSR went to another process): the order is on record, and whoever
 * accepts the CSR resumes it.
 */
export type StopCause = 'shutdown' | 'lease_lost' | 'store_unavailable' | 'no_csr';

/**
 * What a stopped order leaves behind. It never fails the certificate: the order is still
 * good at the CA and the next holder resumes it. On shutdown the lease is released, so
 * another process takes the order over at once instead of after the lease lapses (and so
 * when an early order stops without its CSR, for whoever accepts the CSR); a lost
 * lease belongs to someone else and is left alone; a database that did not answer cannot
 * be asked to release it, so it lapses, and the next pass (of any process) resumes the order.
 */
export function afterStop(cause: StopCause): { readonly releaseLease: boolean; readonly failCertificate: false } {
  return { releaseLease: cause === 'shutdown' || cause === 'no_csr', failCertificate: false };
}

/** How long to park a certificate under its lease until the rate limiter's `retryAt`, from `now`; never negative. */
export function parkedLeaseMs(retryAt: Date, now: Date): number {
  return Math.max(0, retryAt.getTime() - now.getTime());
}
