/**
 * Polling a pending challenge or order until the CA settles it. acme-client's own
 * waitForValidStatus sleeps an exponential backoff (5 s before the second look by default)
 * and ignores Retry-After, so a validation the CA finished in 50 ms held every issuance for
 * seconds. Here the CA decides: its Retry-After when it sends one, otherwise a short steady
 * interval (no faster than `intervalMs`) that stretches only once the wait gets long, so a
 * slow DNS validation at Let's Encrypt is not asked about five times a second for a minute.
 */
import { CertplaneError } from '../errors.js';
import { retryAtOf } from './problems.js';
import { ErrorCode } from '../error-catalogue.js';

export interface PollPolicy {
  /** The floor between two looks, and the interval while the wait is short (CERTPLANE_ACME_POLL_INTERVAL_MS). */
  readonly intervalMs: number;
  /** The longest pause without a Retry-After, once the wait is long. */
  readonly maxIntervalMs: number;
  /** Give up (a passing failure: the job retries) when the item is still pending after this long. */
  readonly timeoutMs: number;
}

export const DEFAULT_POLL: PollPolicy = { intervalMs: 200, maxIntervalMs: 10_000, timeoutMs: 120_000 };

/** How long the interval stays at its floor before it grows with the time already waited. */
const STEADY_MS = 10_000;

/** What one look at the item returned: its status and the response's Retry-After header. */
export interface PolledItem<T> {
  readonly data: T & { status?: unknown };
  readonly retryAfter?: string;
}

/**
 * The pause before the next look: the CA's Retry-After when it sent one (never below the
 * floor), the floor for the first STEADY_MS, then a quarter of the time waited so far, capped.
 */
export function nextPollDelayMs(elapsedMs: number, retryAfter: string | undefined, policy: PollPolicy, now: Date): number {
  const asked = retryAtOf(retryAfter, now);
  if (asked) return Math.max(policy.intervalMs, asked.getTime() - now.getTime());
  if (elapsedMs < STEADY_MS) return policy.intervalMs;
  return Math.min(policy.maxIntervalMs, Math.max(policy.intervalMs, Math.round(elapsedMs / 4)));
}

/**
 * Looks at the item with `look` until its status is neither pending nor processing, and
 * returns that last answer (valid, invalid or whatever else the CA said: the caller decides).
 * `first` is an answer the caller already has (the response to the POST that started the
 * work), so a CA that settles at once costs no poll at all; one still pending is looked at
 * again at once, unless it carried Retry-After.
 */
export async function pollUntilSettled<T>(
  look: () => Promise<PolledItem<T>>,
  what: string,
  policy: PollPolicy = DEFAULT_POLL,
  first?: PolledItem<T>,
  sleep: (ms: number) => Promise<void> = (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
  clock: () => number = Date.now,
): Promise<T & { status?: unknown }> {
  const started = clock();
  let current = first ?? (await look());
  // The answer to the POST that started the work came before the CA could progress it: unless
  // it asked for a wait (Retry-After), the first look follows it at once, as acme-client's
  // own first look does, and the interval applies from there. A CA that finishes in
  // milliseconds (finalization at a local CA) is then seen done without an interval's wait.
  if (first !== undefined && first.retryAfter === undefined && isPending(current)) current = await look();
  while (isPending(current)) {
    const elapsed = clock() - started;
    const delay = nextPollDelayMs(elapsed, current.retryAfter, policy, new Date(clock()));
    if (elapsed + delay > policy.timeoutMs) {
      throw new CertplaneError(ErrorCode.ACME_ORDER_FAILED, `${what} is still ${String(current.data.status)} after ${Math.round(elapsed / 1000)} s; the CA did not settle it in time`, {
        status: String(current.data.status),
        waitedMs: elapsed,
      });
    }
    await sleep(delay);
    current = await look();
  }
  return current.data;
}

function isPending(item: PolledItem<unknown>): boolean {
  return item.data.status === 'pending' || item.data.status === 'processing';
}
