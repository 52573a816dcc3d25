/**
 * Step-level retries around ACME calls. acme-client retries a signed request on badNonce
 * only (its own HTTP retries are off: they slept inside the request for any Retry-After);
 * this layer retries the whole step on what passes (a run of rejected nonces, a server
 * error, a connection reset) with capped, jittered exponential backoff, never before the
 * CA's Retry-After, so one flaky moment does not fail an issuance.
 */

import { setTimeout as delay } from 'node:timers/promises';
import { CertplaneError } from '../errors.js';
import { ErrorCode } from '../error-catalogue.js';

export interface RetryPolicy {
  readonly attempts: number;
  readonly baseDelayMs: number;
  readonly maxDelayMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 4, baseDelayMs: 500, maxDelayMs: 10_000 };

const TRANSIENT_CODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'ETIMEDOUT', 'EPIPE', 'EAI_AGAIN', 'ECONNABORTED', 'ENOTFOUND']);

/** Problems from the CA (acme/problems.ts) that another try of the same step may not meet. */
const TRANSIENT_PROBLEMS = new Set<string>([ErrorCode.ACME_BAD_NONCE, ErrorCode.ACME_SERVER_INTERNAL, ErrorCode.ACME_UNREACHABLE]);

/**
 * True for failures worth another try of the same step: network resets, nonce rejections,
 * server errors. Decided by codes and statuses only. A rate limit is not retried here: the
 * job is postponed to the CA's Retry-After instead (lifecycle/reasons.ts).
 */
export function isTransient(error: unknown): boolean {
  if (error instanceof CertplaneError) return TRANSIENT_PROBLEMS.has(error.code);
  const e = error as { code?: string; response?: { status?: number } };
  if (e?.code && TRANSIENT_CODES.has(e.code)) return true;
  const status = e?.response?.status;
  return status !== undefined && status >= 500;
}

/** Delay before attempt `attempt` (1-based retry count): exponential, capped, with full jitter. */
export function backoffDelay(attempt: number, policy: RetryPolicy, random: () => number = Math.random): number {
  const ceiling = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (attempt - 1));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

/**
 * When the CA asked to wait (a problem's Retry-After, as `details.retryAt`), how long from
 * now; undefined when it did not say.
 */
function askedDelayMs(error: unknown, now: number): number | undefined {
  const retryAt = error instanceof CertplaneError && typeof error.details.retryAt === 'string' ? Date.parse(error.details.retryAt) : Number.NaN;
  return Number.isFinite(retryAt) ? Math.max(0, retryAt - now) : undefined;
}

/**
 * Runs `step`, retrying transient failures under `policy`, no sooner than the CA's
 * Retry-After; a wait longer than the policy's longest delay is not waited out here (the
 * step fails and the job is postponed instead). `onRetry` lets the caller log each one.
 * `signal` ends the wait between attempts and prevents the next one: a process shutting
 * down, or one that lost its lease, stops retrying at once with the signal's reason.
 */
export async function withRetry<T>(
  step: () => Promise<T>,
  policy: RetryPolicy = DEFAULT_RETRY,
  onRetry: (error: unknown, attempt: number, delayMs: number) => void = () => {},
  signal?: AbortSignal,
  sleep: (ms: number, signal?: AbortSignal) => Promise<void> = (ms, signal) => delay(ms, undefined, { signal }),
): Promise<T> {
  for (let attempt = 1; ; attempt += 1) {
    signal?.throwIfAborted();
    try {
      return await step();
    } catch (error) {
      if (attempt >= policy.attempts || !isTransient(error) || signal?.aborted) throw error;
      const asked = askedDelayMs(error, Date.now());
      if (asked !== undefined && asked > policy.maxDelayMs) throw error;
      const wait = Math.max(backoffDelay(attempt, policy), asked ?? 0);
      onRetry(error, attempt, wait);
      await sleep(wait, signal).catch(() => signal?.throwIfAborted());
    }
  }
}
