/**
 * The rate limiter every order to the CA goes through. Let's Encrypt publishes its limits
 * as token buckets (new orders per account, certificates per registered domain, failed
 * validations per hostname); hitting one stalls the whole fleet for hours, and during an
 * incident reissue that is the worst moment for it. So the limiter models those buckets
 * itself, in the database, so several management-plane processes spend one budget and a
 * restart does not hand out a fresh one. It never sleeps: it says when to come back, and
 * the scheduler decides what to do meanwhile. Retries keep out of a reserve so one broken
 * host cannot eat the budget that routine renewals of healthy hosts need.
 */
import { isIP } from 'node:net';
import { z } from 'zod';
import { CertplaneError } from '../errors.js';
import { describeIssues } from '../validation.js';
import type { RateBucketRecord, RateBucketState, Store } from '../store/index.js';
import { ErrorCode } from '../error-catalogue.js';

/** One token bucket: a burst of `capacity`, then `refillPerSecond` sustained. */
export interface BucketSpec {
  readonly capacity: number;
  readonly refillPerSecond: number;
}

/** The CA's limits as this deployment models them; see DEFAULT_RATE_LIMITS for where the numbers come from. */
export interface RateLimitConfig {
  /** Orders created by one ACME account. */
  readonly newOrders: BucketSpec;
  /** Certificates naming one registered domain, across accounts, as the CA counts them. */
  readonly certificatesPerDomain: BucketSpec;
  /** Failed validations of one hostname by one account; the CA refuses further authorizations once spent. */
  readonly failedValidationsPerHostname: BucketSpec;
  /**
   * Fraction (0 to below 1) of the new-orders and per-domain buckets that retries may never
   * spend, so first attempts, routine renewals among them, always find tokens.
   */
  readonly retryReserve: number;
}

const HOUR_SECONDS = 3600;
const DAY_SECONDS = 24 * HOUR_SECONDS;

/**
 * Let's Encrypt's published limits: 300 new orders per account per 3 hours, 50 certificates
 * per registered domain per 7 days, 5 failed validations per hostname (per account) per hour.
 * A deployment with raised limits from the CA overrides them through CERTPLANE_RATE_LIMITS.
 */
export const DEFAULT_RATE_LIMITS: RateLimitConfig = {
  newOrders: { capacity: 300, refillPerSecond: 300 / (3 * HOUR_SECONDS) },
  certificatesPerDomain: { capacity: 50, refillPerSecond: 50 / (7 * DAY_SECONDS) },
  failedValidationsPerHostname: { capacity: 5, refillPerSecond: 5 / HOUR_SECONDS },
  retryReserve: 0.5,
};

const bucketSpec = z.strictObject({
  capacity: z.number().int('must be a whole number of tokens').min(1, 'must be at least 1'),
  refillPerSecond: z.number().positive('must be above 0, or the bucket never refills'),
});

const partialConfig = z.strictObject({
  newOrders: bucketSpec.partial().optional(),
  certificatesPerDomain: bucketSpec.partial().optional(),
  failedValidationsPerHostname: bucketSpec.partial().optional(),
  retryReserve: z.number().min(0, 'must be at least 0').lt(1, 'must be below 1').optional(),
});

/** Floating-point slack: a bucket refilled to 0.9999999999 of a token has its token. */
const EPSILON = 1e-6;
/** The same slack for durations, far below the millisecond the clock counts in. */
const NOISE_MS = 1e-6;

const fullConfig = z
  .strictObject({ newOrders: bucketSpec, certificatesPerDomain: bucketSpec, failedValidationsPerHostname: bucketSpec, retryReserve: z.number().min(0, 'must be at least 0').lt(1, 'must be below 1') })
  .superRefine((config, ctx) => {
    for (const name of ['newOrders', 'certificatesPerDomain'] as const) {
      const spare = config[name].capacity * (1 - config.retryReserve);
      if (spare + EPSILON < 1) {
        ctx.addIssue({ code: 'custom', path: ['retryReserve'], message: `leaves less than one of the ${config[name].capacity} ${name} tokens to retries, so no retry could ever run; lower it or raise ${name}.capacity` });
      }
    }
  });

/**
 * Reads CERTPLANE_RATE_LIMITS: a JSON object whose fields merge over DEFAULT_RATE_LIMITS
 * (`{"newOrders":{"capacity":1000}}` changes only that), so a deployment states only where
 * its CA differs. Unset or empty means the defaults. Errors name every bad field.
 */
export function parseRateLimits(json: string | undefined): RateLimitConfig {
  if (json === undefined || json.trim() === '') return DEFAULT_RATE_LIMITS;
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch (error) {
    throw configInvalid([`not valid JSON (${(error as Error).message})`]);
  }
  const parsed = partialConfig.safeParse(raw);
  if (!parsed.success) throw configInvalid(problems(parsed.error));
  const given = parsed.data;
  return checkedRateLimits({
    newOrders: { ...DEFAULT_RATE_LIMITS.newOrders, ...given.newOrders },
    certificatesPerDomain: { ...DEFAULT_RATE_LIMITS.certificatesPerDomain, ...given.certificatesPerDomain },
    failedValidationsPerHostname: { ...DEFAULT_RATE_LIMITS.failedValidationsPerHostname, ...given.failedValidationsPerHostname },
    retryReserve: given.retryReserve ?? DEFAULT_RATE_LIMITS.retryReserve,
  });
}

/** A configuration built in code passes the same checks as one read from the environment. */
function checkedRateLimits(config: RateLimitConfig): RateLimitConfig {
  const parsed = fullConfig.safeParse(config);
  if (!parsed.success) throw configInvalid(problems(parsed.error));
  return parsed.data;
}

function problems(error: z.ZodError): string[] {
  return describeIssues(error.issues, { whole: 'value', unknownField: 'not a rate limit field' });
}

function configInvalid(found: string[]): CertplaneError {
  return new CertplaneError(
    ErrorCode.RATE_LIMIT_CONFIG_INVALID,
    `invalid rate limits:\n  CERTPLANE_RATE_LIMITS: ${found.join('\n  CERTPLANE_RATE_LIMITS: ')}\nExpected JSON like {"newOrders":{"capacity":300,"refillPerSecond":0.0278},"retryReserve":0.5}.`,
    { problems: found },
  );
}

/**
 * Public suffixes of more than one label that are common enough among customers to matter.
 * Without them, every customer under co.uk would share one 50-certificate budget.
 */
const MULTI_LABEL_SUFFIXES = new Set([
  'co.uk', 'org.uk', 'me.uk', 'ltd.uk', 'plc.uk', 'net.uk', 'ac.uk', 'gov.uk', 'nhs.uk',
  'com.au', 'net.au', 'org.au', 'edu.au', 'gov.au', 'id.au',
  'co.nz', 'net.nz', 'org.nz', 'govt.nz', 'ac.nz',
  'co.jp', 'ne.jp', 'or.jp', 'ac.jp', 'go.jp',
  'co.kr', 'or.kr', 'co.in', 'net.in', 'org.in', 'co.id', 'co.il', 'co.th', 'co.za', 'org.za',
  'com.br', 'net.br', 'org.br', 'com.mx', 'com.ar', 'com.co', 'com.tr', 'com.cn', 'net.cn', 'org.cn',
  'com.hk', 'com.tw', 'com.sg', 'com.my', 'com.ph', 'com.vn', 'com.pk', 'com.ng', 'com.eg', 'com.sa', 'com.ua', 'com.pl',
]);

/**
 * The registered domain the CA counts certificates against: the last two labels, or three
 * under a multi-label suffix this module knows (co.uk, com.au, ...). An IP address is its
 * own. This is an approximation of the Public Suffix List: an unlisted multi-label suffix,
 * or a private suffix such as github.io, makes different customers share one bucket,
 * which errs toward asking the CA for less, never for more.
 */
export function registeredDomain(hostname: string): string {
  const name = identifier(hostname);
  if (isIP(name) !== 0) return name;
  const labels = name.split('.');
  const suffixLabels = labels.length > 2 && MULTI_LABEL_SUFFIXES.has(labels.slice(-2).join('.')) ? 3 : 2;
  return labels.slice(-suffixLabels).join('.');
}

/** The name as the CA validates it: lower case, no trailing dot, a wildcard's base domain. */
function identifier(hostname: string): string {
  const name = hostname.trim().toLowerCase().replace(/\.$/, '').replace(/^\*\./, '');
  if (name === '' || name.split('.').some((label) => label === '')) {
    throw new CertplaneError(ErrorCode.RATE_LIMIT_INVALID_REQUEST, `"${hostname}" is not a hostname the CA could validate; pass the certificate's DNS names.`, { hostname });
  }
  return name;
}

/** What the caller is about to ask the CA for. */
export interface AcquireRequest {
  /** The names of the certificate to order. */
  readonly hostnames: readonly string[];
  /** 'retry' after this work already failed once: it may not spend the reserve. */
  readonly attempt: 'first' | 'retry';
}

/**
 * Granted: the tokens are taken, order now. Refused: nothing was taken; come back at
 * `retryAt`. `limitedBy` names the bucket that refused (`newOrders:ACCOUNT`,
 * `certificatesPerDomain:DOMAIN`, `failedValidationsPerHostname:ACCOUNT:HOST`) or, after the
 * CA's own 429, `caRetryAfter: REASON`, for logs and the job's last error.
 */
/** Granted (at `decidedAt`, the limiter's clock the buckets were refilled to), or when to come back and which bucket said no. */
export type AcquireResult = { readonly granted: true; readonly decidedAt: Date } | { readonly granted: false; readonly retryAt: Date; readonly limitedBy: string };

/** What a limiter needs, passed in by the composition root. */
export interface RateLimiterOptions {
  /** Where the buckets live: shared by every process on one database. */
  readonly store: Pick<Store, 'rateBuckets'>;
  readonly config: RateLimitConfig;
  /** The only source of time, so tests move it instead of waiting. */
  readonly clock: () => Date;
  /**
   * The ACME account whose budgets these are (its account URL, or the directory URL when
   * there is one account per CA). Processes sharing an account must pass the same value.
   */
  readonly account: string;
}

/** A bucket refilled up to a moment: the tokens it holds then. */
interface Level {
  readonly tokens: number;
  readonly at: Date;
}

/** One bucket an acquire looks at: spent (orders, domains) or only checked (failed validations). */
interface Touch {
  readonly key: string;
  readonly spec: BucketSpec;
  readonly spend: boolean;
}

/** An acquire waiting for its batch's decision. */
interface Waiting {
  readonly touches: readonly Touch[];
  /** The fraction of each spent bucket a retry must leave. */
  readonly reserved: number;
  resolve(result: AcquireResult): void;
  reject(error: unknown): void;
}

/** The most requests one transaction decides: bounded so a decision stays short. */
const MAX_BATCH = 200;

/**
 * Paces orders under the CA's limits, for every process sharing the store. Each decision is
 * one transaction over the bucket rows involved, so a burst from many workers in many
 * processes can never take more than the buckets hold.
 */
export class RateLimiter {
  private readonly config: RateLimitConfig;
  private readonly ordersKey: string;

  constructor(private readonly options: RateLimiterOptions) {
    this.config = checkedRateLimits(options.config);
    this.ordersKey = `newOrders:${options.account}`;
  }

  /**
   * Takes one new-orders token and one token per distinct registered domain, all or none.
   * A retry must leave the reserve untouched in each of those buckets. Any attempt is
   * refused while one of its hostnames has no failed validation left, because the CA would
   * refuse its authorization and the order would be spent for nothing; and everything is
   * refused until a CA-given Retry-After has passed.
   */
  async acquire(request: AcquireRequest): Promise<AcquireResult> {
    const touches = this.#touches(request);
    return new Promise<AcquireResult>((resolve, reject) => {
      this.#waiting.push({ touches, reserved: request.attempt === 'retry' ? this.config.retryReserve : 0, resolve, reject });
      if (!this.#deciding) void this.#decideWaiting();
    });
  }

  /** Requests that arrived while a decision was under way: decided together in the next transaction. */
  readonly #waiting: Waiting[] = [];
  #deciding = false;

  /**
   * Decides the waiting requests, batch after batch. Every decision locks the account's
   * new-orders row, so concurrent orders queue on it anyway; one transaction for everything
   * that queued meanwhile replaces a queue of transactions each holding a pooled connection.
   */
  async #decideWaiting(): Promise<void> {
    this.#deciding = true;
    try {
      while (this.#waiting.length > 0) {
        const batch = this.#waiting.splice(0, MAX_BATCH);
        try {
          const results = await this.#decide(batch);
          batch.forEach((waiting, i) => waiting.resolve(results[i]!));
        } catch (error) {
          for (const waiting of batch) waiting.reject(error);
        }
      }
    } finally {
      this.#deciding = false;
    }
  }

  #touches(request: AcquireRequest): Touch[] {
    const hostnames = [...new Set(request.hostnames.map(identifier))];
    if (hostnames.length === 0) {
      throw new CertplaneError(ErrorCode.RATE_LIMIT_INVALID_REQUEST, 'A rate limit request names no hostname; pass the names of the certificate to order.');
    }
    const domains = [...new Set(hostnames.map(registeredDomain))];
    return [
      { key: this.ordersKey, spec: this.config.newOrders, spend: true },
      ...domains.map((domain) => ({ key: `certificatesPerDomain:${domain}`, spec: this.config.certificatesPerDomain, spend: true })),
      ...hostnames.map((hostname) => ({ key: this.failuresKey(hostname), spec: this.config.failedValidationsPerHostname, spend: false })),
    ];
  }

  /** One transaction over every bucket the batch touches; requests are decided in arrival order, each seeing what the ones before it spent. */
  async #decide(batch: readonly Pick<Waiting, 'touches' | 'reserved'>[]): Promise<AcquireResult[]> {
    const now = this.options.clock();
    const initial = new Map(batch.flatMap(({ touches }) => touches.map((touch) => [touch.key, full(touch.spec, now)] as const)));
    return this.options.store.rateBuckets.update<AcquireResult[]>(initial, (buckets) => {
      const orders = stored(buckets, this.ordersKey);
      if (orders.blockedUntil !== null && orders.blockedUntil > now) {
        const refused: AcquireResult = { granted: false, retryAt: orders.blockedUntil, limitedBy: `caRetryAfter: ${orders.blockedReason ?? 'the CA answered rateLimited'}` };
        return { write: [], result: batch.map(() => refused) };
      }
      const levels = new Map<string, { bucket: RateBucketRecord; level: Level }>();
      const levelOf = (touch: Touch) => {
        let entry = levels.get(touch.key);
        if (!entry) {
          const bucket = stored(buckets, touch.key);
          entry = { bucket, level: refill(bucket, touch.spec, now) };
          levels.set(touch.key, entry);
        }
        return entry;
      };
      const spent = new Set<string>();
      const result = batch.map(({ touches, reserved }): AcquireResult => {
        let latest: { readonly at: Date; readonly key: string } | undefined;
        for (const touch of touches) {
          const { level } = levelOf(touch);
          const needed = touch.spend ? reserved * touch.spec.capacity + 1 : 1;
          if (level.tokens + EPSILON >= needed) continue;
          const at = readyAt(level, touch.spec, needed);
          if (latest === undefined || at > latest.at) latest = { at, key: touch.key };
        }
        if (latest !== undefined) return { granted: false, retryAt: latest.at, limitedBy: latest.key };
        for (const touch of touches.filter((t) => t.spend)) {
          const entry = levelOf(touch);
          levels.set(touch.key, { ...entry, level: { ...entry.level, tokens: Math.max(0, entry.level.tokens - 1) } });
          spent.add(touch.key);
        }
        return { granted: true, decidedAt: now };
      });
      const write = [...spent].map((key) => {
        const { bucket, level } = levels.get(key)!;
        return { ...bucket, tokens: level.tokens, updatedAt: level.at };
      });
      return { write, result };
    });
  }

  /** Spends one of the hostname's failed validations, as the CA does when an authorization fails. */
  async recordFailedValidation(hostname: string): Promise<void> {
    const key = this.failuresKey(identifier(hostname));
    const spec = this.config.failedValidationsPerHostname;
    const now = this.options.clock();
    await this.options.store.rateBuckets.update(new Map([[key, full(spec, now)]]), (buckets) => {
      const bucket = stored(buckets, key);
      const level = refill(bucket, spec, now);
      return { write: [{ ...bucket, tokens: Math.max(0, level.tokens - 1), updatedAt: level.at }], result: undefined };
    });
  }

  /**
   * Refuses every acquire, in every process, until `until`: call it when the CA answers 429
   * rateLimited, with its Retry-After, because the CA's count is the one that matters when
   * ours was wrong. A block already reaching further is kept.
   */
  async blockUntil(until: Date, reason: string): Promise<void> {
    if (Number.isNaN(until.getTime())) {
      throw new CertplaneError(ErrorCode.RATE_LIMIT_INVALID_REQUEST, 'blockUntil needs a valid date; parse the CA\'s Retry-After (seconds or an HTTP date) first.', { reason });
    }
    const spec = this.config.newOrders;
    const now = this.options.clock();
    await this.options.store.rateBuckets.update(new Map([[this.ordersKey, full(spec, now)]]), (buckets) => {
      const bucket = stored(buckets, this.ordersKey);
      const reachesFurther = bucket.blockedUntil === null || until > bucket.blockedUntil;
      return { write: reachesFurther ? [{ ...bucket, blockedUntil: until, blockedReason: reason }] : [], result: undefined };
    });
  }

  /**
   * How long (ms) until the last of `count` first-attempt orders may start, given what the
   * account's new-orders bucket holds now, its refill rate and any CA block: what a reissue
   * campaign's dry run tells the engineer. Reads without taking. Per-domain budgets are not
   * in it, since a count says nothing about domains; acquire enforces them.
   */
  async predictDuration(count: number): Promise<number> {
    if (!Number.isInteger(count) || count < 0) {
      throw new CertplaneError(ErrorCode.RATE_LIMIT_INVALID_REQUEST, `Cannot predict the duration of ${count} orders; pass a whole number of at least 0.`, { count });
    }
    const spec = this.config.newOrders;
    const now = this.options.clock();
    const [bucket] = await this.options.store.rateBuckets.get([this.ordersKey]);
    const level = bucket === undefined ? { tokens: spec.capacity, at: now } : refill(bucket, spec, now);
    const blockedUntil = bucket?.blockedUntil ?? null;
    const start = blockedUntil !== null && blockedUntil > level.at ? blockedUntil : level.at;
    const available = Math.min(spec.capacity, level.tokens + ((start.getTime() - level.at.getTime()) / 1000) * spec.refillPerSecond);
    const waitForBlock = Math.max(0, start.getTime() - now.getTime());
    if (available + EPSILON >= count) return waitForBlock;
    return waitForBlock + wholeMs((count - available) / spec.refillPerSecond);
  }

  private failuresKey(hostname: string): string {
    return `failedValidationsPerHostname:${this.options.account}:${hostname}`;
  }
}

/** The store creates every bucket it locks; one missing means the store broke its contract. */
function stored(buckets: ReadonlyMap<string, RateBucketRecord>, key: string): RateBucketRecord {
  const bucket = buckets.get(key);
  if (bucket === undefined) throw new CertplaneError(ErrorCode.STORE_QUERY_FAILED, `The store did not return rate bucket ${key} it was asked to lock.`, { key });
  return bucket;
}

/** A bucket never used starts full, as the CA's do. */
function full(spec: BucketSpec, now: Date): RateBucketState {
  return { tokens: spec.capacity, updatedAt: now, blockedUntil: null, blockedReason: null };
}

/**
 * The bucket's tokens now. Time never runs backwards for a bucket: a process whose clock
 * lags another's refills nothing rather than counting the same seconds twice.
 */
function refill(bucket: RateBucketRecord, spec: BucketSpec, now: Date): Level {
  const elapsedSeconds = Math.max(0, now.getTime() - bucket.updatedAt.getTime()) / 1000;
  const at = now > bucket.updatedAt ? now : bucket.updatedAt;
  return { tokens: Math.min(spec.capacity, bucket.tokens + elapsedSeconds * spec.refillPerSecond), at };
}

/** When the bucket will hold `needed` tokens if nobody else takes any, to the millisecond. */
function readyAt(level: Level, spec: BucketSpec, needed: number): Date {
  return new Date(level.at.getTime() + wholeMs((needed - level.tokens) / spec.refillPerSecond));
}

/** Rounds up, but not for the last bits of floating-point noise: 3600.0000000000005 s is 3,600,000 ms. */
function wholeMs(seconds: number): number {
  return Math.ceil(seconds * 1000 - NOISE_MS);
}
