import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import { hasCode } from '../../src/errors.js';
import { DEFAULT_RATE_LIMITS, RateLimiter, parseRateLimits, registeredDomain, type AcquireResult, type RateLimitConfig } from '../../src/jobs/ratelimit.js';
import { openStore, type Store } from '../../src/store/index.js';
import { freshPostgresDatabase } from '../support/postgres.js';
import { cleanupList, cleanups, type Defer } from '../support/cleanups.js';
import { ErrorCode } from '../../src/error-catalogue.js';

const TIMEOUT = { timeout: 60_000 };
const START = new Date('2026-05-13T00:00:00.000Z');
const MINUTE_MS = 60_000;
const HOUR_MS = 60 * MINUTE_MS;


interface Engine {
  readonly name: Store['engine'];
  /** An empty database that may be closed and opened again; removed afterwards. */
  freshUrl(defer: Defer): Promise<string>;
  /**
   * A second handle on the same database, standing for a second management-plane process.
   * PGlite is one process's embedded engine and cannot be opened twice at once, so there
   * the second "process" is a second limiter on the same handle.
   */
  sibling(store: Store, url: string, defer: Defer): Promise<Store>;
}

const pglite: Engine = {
  name: 'pglite',
  freshUrl: async (defer) => {
    const directory = await fs.mkdtemp(path.join(os.tmpdir(), 'certplane-ratelimit-'));
    defer(() => fs.rm(directory, { recursive: true, force: true }));
    return `pglite:${path.join(directory, 'data')}`;
  },
  sibling: async (store) => store,
};

const postgres: Engine = {
  name: 'postgres',
  freshUrl: async (defer) => {
    const database = await freshPostgresDatabase('certplane_ratelimit');
    defer(database.drop);
    return database.url;
  },
  sibling: async (_store, url, defer) => opened(url, defer),
};

async function opened(url: string, defer: Defer): Promise<Store> {
  const store = await openStore(url);
  defer(() => store.close());
  return store;
}

/** Time that moves only when a test says so. */
function manualClock(): { readonly clock: () => Date; advance(ms: number): void; now(): Date } {
  let now = START;
  return {
    clock: () => now,
    advance: (ms) => {
      now = new Date(now.getTime() + ms);
    },
    now: () => now,
  };
}

/** Generous limits, so each test constrains only the bucket it is about. */
function limits(overrides: Partial<RateLimitConfig>): RateLimitConfig {
  return {
    newOrders: { capacity: 1000, refillPerSecond: 1 },
    certificatesPerDomain: { capacity: 1000, refillPerSecond: 1 },
    failedValidationsPerHostname: { capacity: 1000, refillPerSecond: 1 },
    retryReserve: 0.5,
    ...overrides,
  };
}

let unique = 0;
/** A name no other test uses: domain buckets are shared across accounts, like the CA's. */
function fresh(prefix: string): string {
  unique += 1;
  return `${prefix}${process.pid}x${unique}`;
}

function refused(result: AcquireResult): { retryAt: Date; limitedBy: string } {
  if (result.granted) assert.fail('expected a refusal, got a grant');
  return { retryAt: result.retryAt, limitedBy: result.limitedBy };
}

async function tokensOf(store: Store, key: string): Promise<number | undefined> {
  const [bucket] = await store.rateBuckets.get([key]);
  return bucket?.tokens;
}

async function rejectsWith(promise: Promise<unknown>, code: ErrorCode, check: (message: string) => void = () => undefined): Promise<void> {
  await assert.rejects(promise, (error) => {
    assert.ok(hasCode(error, code), `expected ${code}, got ${String(error)}`);
    check(error.message);
    return true;
  });
}

function throwsWith(run: () => unknown, code: ErrorCode, check: (message: string) => void = () => undefined): void {
  assert.throws(run, (error) => {
    assert.ok(hasCode(error, code), `expected ${code}, got ${String(error)}`);
    check(error.message);
    return true;
  });
}

for (const engine of [pglite, postgres]) {
  describe(`rate limiter on ${engine.name}`, () => {
    const suite = cleanupList();
    let url: string;
    let store: Store;
    before(async () => {
      url = await engine.freshUrl(suite.defer);
      store = await opened(url, suite.defer);
    }, TIMEOUT);
    after(() => suite.run(), TIMEOUT);

    function limiter(config: RateLimitConfig, clock: () => Date, account: string, on: Store = store): RateLimiter {
      return new RateLimiter({ store: on, config, clock, account });
    }

    test('tokens are taken, and come back at the refill rate as the clock moves', TIMEOUT, async () => {
      const time = manualClock();
      const account = fresh('acct');
      const domain = `${fresh('d')}.example`;
      const rl = limiter(limits({ newOrders: { capacity: 3, refillPerSecond: 0.1 } }), time.clock, account);

      for (let i = 0; i < 3; i += 1) assert.equal((await rl.acquire({ hostnames: [`h${i}.${domain}`], attempt: 'first' })).granted, true);
      const first = refused(await rl.acquire({ hostnames: [`h3.${domain}`], attempt: 'first' }));
      assert.deepEqual(first, { retryAt: new Date(START.getTime() + 10_000), limitedBy: `newOrders:${account}` });
      assert.equal(await tokensOf(store, `newOrders:${account}`), 0);
      assert.equal(await tokensOf(store, `certificatesPerDomain:${domain}`), 997);

      time.advance(9_999);
      assert.deepEqual(refused(await rl.acquire({ hostnames: [`h3.${domain}`], attempt: 'first' })).retryAt, first.retryAt);
      time.advance(1);
      assert.equal((await rl.acquire({ hostnames: [`h3.${domain}`], attempt: 'first' })).granted, true);
      assert.deepEqual(refused(await rl.acquire({ hostnames: [`h4.${domain}`], attempt: 'first' })).retryAt, new Date(time.now().getTime() + 10_000));

      time.advance(25_000);
      assert.equal((await rl.acquire({ hostnames: [`h4.${domain}`], attempt: 'first' })).granted, true);
      assert.equal((await rl.acquire({ hostnames: [`h5.${domain}`], attempt: 'first' })).granted, true);
      assert.deepEqual(refused(await rl.acquire({ hostnames: [`h6.${domain}`], attempt: 'first' })).retryAt, new Date(time.now().getTime() + 5_000), 'half a token was left over');
    });

    test('when several buckets are short, retryAt is when the last of them has refilled', TIMEOUT, async () => {
      const time = manualClock();
      const account = fresh('acct');
      const config = limits({ newOrders: { capacity: 1, refillPerSecond: 0.1 }, certificatesPerDomain: { capacity: 1, refillPerSecond: 0.01 }, retryReserve: 0 });
      const rl = limiter(config, time.clock, account);
      const [slow, other] = [`${fresh('slow')}.example`, `${fresh('other')}.example`];

      assert.equal((await rl.acquire({ hostnames: [`a.${slow}`], attempt: 'first' })).granted, true);
      assert.deepEqual(refused(await rl.acquire({ hostnames: [`b.${slow}`], attempt: 'first' })), { retryAt: new Date(START.getTime() + 100_000), limitedBy: `certificatesPerDomain:${slow}` });
      assert.deepEqual(refused(await rl.acquire({ hostnames: [`b.${other}`], attempt: 'first' })), { retryAt: new Date(START.getTime() + 10_000), limitedBy: `newOrders:${account}` });
    });

    test('a process whose clock lags another\'s does not refill the same seconds twice', TIMEOUT, async () => {
      const ahead = manualClock();
      ahead.advance(10_000);
      const behind = manualClock();
      const account = fresh('acct');
      const config = limits({ newOrders: { capacity: 2, refillPerSecond: 0.1 } });
      const hostnames = [`db.${fresh('d')}.example`];
      const [fast, slow] = [limiter(config, ahead.clock, account), limiter(config, behind.clock, account)];

      assert.equal((await fast.acquire({ hostnames, attempt: 'first' })).granted, true);
      assert.equal((await slow.acquire({ hostnames, attempt: 'first' })).granted, true);
      assert.deepEqual(refused(await fast.acquire({ hostnames, attempt: 'first' })).retryAt, new Date(START.getTime() + 20_000));
      assert.deepEqual(refused(await slow.acquire({ hostnames, attempt: 'first' })).retryAt, new Date(START.getTime() + 20_000));
    });

    test('a bucket never holds more than its capacity, however long it rested', TIMEOUT, async () => {
      const time = manualClock();
      const account = fresh('acct');
      const rl = limiter(limits({ newOrders: { capacity: 4, refillPerSecond: 1 } }), time.clock, account);
      const hostnames = [`a.${fresh('d')}.example`];

      assert.equal((await rl.acquire({ hostnames, attempt: 'first' })).granted, true);
      time.advance(30 * 24 * HOUR_MS);
      const results = [];
      for (let i = 0; i < 6; i += 1) results.push((await rl.acquire({ hostnames, attempt: 'first' })).granted);
      assert.deepEqual(results, [true, true, true, true, false, false]);
      assert.equal(await tokensOf(store, `newOrders:${account}`), 0);
    });

    test('a burst of 50 concurrent acquires from two processes against capacity 10 grants exactly 10', TIMEOUT, async (t) => {
      const defer = cleanups(t);
      const other = await engine.sibling(store, url, defer);
      const time = manualClock();
      const account = fresh('acct');
      const config = limits({ newOrders: { capacity: 10, refillPerSecond: 0.001 } });
      const processes = [limiter(config, time.clock, account), limiter(config, time.clock, account, other)];
      const domain = `${fresh('d')}.example`;

      const results = await Promise.all(Array.from({ length: 50 }, (_, i) => processes[i % 2]?.acquire({ hostnames: [`n${i}.${domain}`], attempt: 'first' })));
      assert.equal(results.filter((result) => result?.granted === true).length, 10);
      assert.equal(results.filter((result) => result?.granted === false).length, 40);
      assert.ok((await tokensOf(other, `newOrders:${account}`) ?? -1) < 1e-6);
      assert.equal(await tokensOf(store, `certificatesPerDomain:${domain}`), 990, 'refused acquires took nothing from the domain');
    });

    test('concurrent acquires in one process are decided together, in far fewer transactions, in arrival order', TIMEOUT, async () => {
      const time = manualClock();
      const account = fresh('acct');
      let transactions = 0;
      const counting: Pick<Store, 'rateBuckets'> = {
        rateBuckets: {
          get: (keys) => store.rateBuckets.get(keys),
          update: (initial, decide) => {
            transactions += 1;
            return store.rateBuckets.update(initial, decide);
          },
        },
      };
      const config = limits({ newOrders: { capacity: 12, refillPerSecond: 0.001 }, retryReserve: 0.5 });
      const shared = new RateLimiter({ store: counting, config, clock: time.clock, account });
      const domain = `${fresh('d')}.example`;
      const results = await Promise.all(Array.from({ length: 30 }, (_, i) => shared.acquire({ hostnames: [`n${i}.${domain}`], attempt: i % 3 === 0 ? 'retry' : 'first' })));
      assert.ok(transactions <= 3, `${transactions} transactions for 30 acquires`);
      assert.equal(results.filter((result) => result.granted).length, 12);
      // Arrival order: the first twelve callers get the tokens, except retries once the reserve (6 of 12) is reached.
      const granted = results.map((result, i) => (result.granted ? i : -1)).filter((i) => i >= 0);
      assert.deepEqual(granted, [0, 1, 2, 3, 4, 5, 7, 8, 10, 11, 13, 14]);
      assert.ok((await tokensOf(store, `newOrders:${account}`) ?? -1) < 1e-6);
    });

    test('concurrent acquires naming the same domains in any order neither deadlock nor overspend', TIMEOUT, async (t) => {
      const defer = cleanups(t);
      const other = await engine.sibling(store, url, defer);
      const time = manualClock();
      const account = fresh('acct');
      const config = limits({ certificatesPerDomain: { capacity: 10, refillPerSecond: 0.001 } });
      const processes = [limiter(config, time.clock, account), limiter(config, time.clock, account, other)];
      const domains = [`${fresh('p')}.example`, `${fresh('q')}.example`, `${fresh('r')}.example`];
      const orders = [[0, 1, 2], [2, 1, 0], [1, 2, 0], [0, 2, 1]];

      const results = await Promise.all(
        Array.from({ length: 40 }, (_, i) => processes[i % 2]?.acquire({ hostnames: (orders[i % orders.length] ?? []).map((d) => `n${i}.${domains[d]}`), attempt: 'first' })),
      );
      assert.equal(results.filter((result) => result?.granted === true).length, 10);
      for (const domain of domains) assert.ok((await tokensOf(store, `certificatesPerDomain:${domain}`) ?? -1) < 1e-6, domain);
    });

    test('retries are refused at the reserve while first attempts still pass', TIMEOUT, async () => {
      const time = manualClock();
      const account = fresh('acct');
      const rl = limiter(limits({ newOrders: { capacity: 10, refillPerSecond: 0.01 }, retryReserve: 0.5 }), time.clock, account);
      const hostnames = [`db.${fresh('d')}.example`];
      const take = async (attempt: 'first' | 'retry') => (await rl.acquire({ hostnames, attempt })).granted;

      for (let i = 0; i < 4; i += 1) assert.equal(await take('first'), true);
      assert.equal(await take('retry'), true, '6 tokens: a retry may take one and leave the reserve of 5');
      const atReserve = refused(await rl.acquire({ hostnames, attempt: 'retry' }));
      assert.equal(atReserve.limitedBy, `newOrders:${account}`);
      assert.deepEqual(atReserve.retryAt, new Date(START.getTime() + 100_000), 'back when there are 6 tokens again');
      time.advance(50_000);
      assert.equal(await take('retry'), false, '5.5 tokens: taking one would dip into the reserve');
      assert.equal(await tokensOf(store, `newOrders:${account}`), 5, 'refusals took nothing');

      for (let i = 0; i < 5; i += 1) assert.equal(await take('first'), true);
      assert.equal(await take('retry'), false);
      assert.equal(await take('first'), false);
    });

    test('retries keep out of a registered domain\'s reserve too', TIMEOUT, async () => {
      const time = manualClock();
      const account = fresh('acct');
      const domain = `${fresh('d')}.example`;
      const rl = limiter(limits({ certificatesPerDomain: { capacity: 4, refillPerSecond: 0.001 }, retryReserve: 0.5 }), time.clock, account);

      assert.equal((await rl.acquire({ hostnames: [`a.${domain}`], attempt: 'retry' })).granted, true);
      assert.equal((await rl.acquire({ hostnames: [`b.${domain}`], attempt: 'retry' })).granted, true);
      assert.equal(refused(await rl.acquire({ hostnames: [`c.${domain}`], attempt: 'retry' })).limitedBy, `certificatesPerDomain:${domain}`);
      assert.equal((await rl.acquire({ hostnames: [`c.${domain}`], attempt: 'first' })).granted, true);
      assert.equal((await rl.acquire({ hostnames: [`d.${domain}`], attempt: 'first' })).granted, true);
      assert.equal((await rl.acquire({ hostnames: [`e.${domain}`], attempt: 'first' })).granted, false);
    });

    test('a hostname out of failed validations is refused, other hosts are not, and nothing is spent', TIMEOUT, async () => {
      const time = manualClock();
      const account = fresh('acct');
      const domain = `${fresh('d')}.example`;
      const broken = `broken.${domain}`;
      const rl = limiter(limits({ failedValidationsPerHostname: { capacity: 2, refillPerSecond: 1 / 3600 } }), time.clock, account);

      await rl.recordFailedValidation(broken);
      assert.equal((await rl.acquire({ hostnames: [broken], attempt: 'retry' })).granted, true, 'one failed validation left');
      await rl.recordFailedValidation(`BROKEN.${domain}.`);
      const ordersBefore = await tokensOf(store, `newOrders:${account}`);

      const blocked = refused(await rl.acquire({ hostnames: [broken], attempt: 'retry' }));
      assert.deepEqual(blocked, { retryAt: new Date(START.getTime() + HOUR_MS), limitedBy: `failedValidationsPerHostname:${account}:${broken}` });
      assert.equal(refused(await rl.acquire({ hostnames: [`healthy.${domain}`, broken], attempt: 'retry' })).limitedBy, blocked.limitedBy);
      assert.equal(refused(await rl.acquire({ hostnames: [broken], attempt: 'first' })).limitedBy, blocked.limitedBy, 'the CA would refuse its authorization anyway');
      assert.equal(await tokensOf(store, `newOrders:${account}`), ordersBefore, 'refusals spent no order');
      assert.equal((await rl.acquire({ hostnames: [`healthy.${domain}`], attempt: 'retry' })).granted, true);
      assert.equal((await rl.acquire({ hostnames: [`other.${fresh('d')}.example`], attempt: 'first' })).granted, true);
      assert.equal((await limiter(limits({}), time.clock, fresh('acct')).acquire({ hostnames: [broken], attempt: 'retry' })).granted, true, 'another account has failed validations of its own');

      for (let i = 0; i < 3; i += 1) await rl.recordFailedValidation(broken);
      assert.equal(await tokensOf(store, `failedValidationsPerHostname:${account}:${broken}`), 0, 'never below empty');
      time.advance(HOUR_MS);
      assert.equal((await rl.acquire({ hostnames: [broken], attempt: 'retry' })).granted, true);
    });

    test('blockUntil refuses every acquire until then, in every process', TIMEOUT, async (t) => {
      const defer = cleanups(t);
      const other = await engine.sibling(store, url, defer);
      const time = manualClock();
      const account = fresh('acct');
      const mine = limiter(limits({}), time.clock, account);
      const theirs = limiter(limits({}), time.clock, account, other);
      const until = new Date(START.getTime() + 30 * MINUTE_MS);
      const hostnames = [`db.${fresh('d')}.example`];

      await mine.blockUntil(until, 'rateLimited: too many new orders recently');
      for (const attempt of ['first', 'retry'] as const) {
        assert.deepEqual(refused(await theirs.acquire({ hostnames, attempt })), { retryAt: until, limitedBy: 'caRetryAfter: rateLimited: too many new orders recently' });
      }
      await theirs.blockUntil(new Date(START.getTime() + MINUTE_MS), 'a shorter one');
      assert.deepEqual(refused(await mine.acquire({ hostnames, attempt: 'first' })).retryAt, until, 'a shorter block does not cut a longer one');
      assert.equal(await theirs.predictDuration(0), 30 * MINUTE_MS);
      assert.equal(await tokensOf(other, `newOrders:${account}`), 1000, 'refusals took nothing');
      assert.equal((await limiter(limits({}), time.clock, fresh('acct')).acquire({ hostnames: [`x.${fresh('d')}.example`], attempt: 'first' })).granted, true, 'other accounts are not blocked');

      time.advance(30 * MINUTE_MS - 1);
      assert.equal((await theirs.acquire({ hostnames, attempt: 'first' })).granted, false);
      time.advance(1);
      assert.equal((await theirs.acquire({ hostnames, attempt: 'first' })).granted, true);
      assert.equal((await mine.acquire({ hostnames, attempt: 'retry' })).granted, true);
    });

    test('per-domain buckets keep registered domains apart, and a certificate takes one token per domain', TIMEOUT, async () => {
      const time = manualClock();
      const rl = limiter(limits({ certificatesPerDomain: { capacity: 2, refillPerSecond: 0.001 } }), time.clock, fresh('acct'));
      const shop = `${fresh('shop')}.com`;
      const uk = `${fresh('uk')}.co.uk`;
      const acquire = async (hostnames: string[]) => rl.acquire({ hostnames, attempt: 'first' });

      assert.equal((await acquire([`a.eu.${shop}`, `b.us.${shop}`, shop])).granted, true, 'three names of one domain: one token');
      assert.equal(await tokensOf(store, `certificatesPerDomain:${shop}`), 1);
      assert.equal((await acquire([`c.${shop}`])).granted, true);
      assert.equal(refused(await acquire([`d.${shop}`])).limitedBy, `certificatesPerDomain:${shop}`);

      assert.equal((await acquire([`x.${uk}`])).granted, true, 'another domain has its own budget');
      assert.equal(refused(await acquire([`y.${uk}`, `e.${shop}`])).limitedBy, `certificatesPerDomain:${shop}`);
      assert.equal(await tokensOf(store, `certificatesPerDomain:${uk}`), 1, 'all or nothing: the refused certificate took nothing from co.uk');
      assert.equal((await acquire([`z.${uk}`])).granted, true);
      assert.equal((await acquire([`w.${uk}`])).granted, false);
    });

    test('predictDuration is 0 while tokens suffice, grows with the count, and takes nothing', TIMEOUT, async () => {
      const time = manualClock();
      const account = fresh('acct');
      const rl = limiter(limits({ newOrders: { capacity: 10, refillPerSecond: 0.5 } }), time.clock, account);

      assert.equal(await rl.predictDuration(0), 0);
      assert.equal(await rl.predictDuration(10), 0, 'a bucket never used is full');
      const predictions = [];
      for (const count of [11, 15, 20, 310]) predictions.push(await rl.predictDuration(count));
      assert.deepEqual(predictions, [2_000, 10_000, 20_000, 600_000]);

      const hostnames = [`db.${fresh('d')}.example`];
      for (let i = 0; i < 5; i += 1) assert.equal((await rl.acquire({ hostnames, attempt: 'first' })).granted, true);
      assert.equal(await rl.predictDuration(5), 0);
      assert.equal(await rl.predictDuration(6), 2_000);
      time.advance(1_000);
      assert.equal(await rl.predictDuration(6), 1_000, 'half a token came back');
      assert.equal(await tokensOf(store, `newOrders:${account}`), 5, 'predictions took nothing');
    });

    test('store: a bucket update that writes what it did not lock is refused and leaves nothing behind', TIMEOUT, async () => {
      const [mine, stray] = [fresh('locked:'), fresh('stray:')];
      const state = { tokens: 3, updatedAt: START, blockedUntil: null, blockedReason: null };
      await rejectsWith(
        store.rateBuckets.update(new Map([[mine, state]]), () => ({ write: [{ key: stray, ...state }], result: undefined })),
        ErrorCode.STORE_INVALID_WRITE,
        (message) => assert.ok(message.includes(stray), message),
      );
      assert.deepEqual(await store.rateBuckets.get([mine, stray]), [], 'the bucket created for the update was rolled back');
      const seen = await store.rateBuckets.update(new Map([[mine, state]]), (buckets) => ({ write: [], result: [...buckets.values()] }));
      assert.deepEqual(seen, [{ key: mine, ...state }]);
    });

    test('the budget survives a restart', TIMEOUT, async (t) => {
      const defer = cleanups(t);
      const restartable = await engine.freshUrl(defer);
      const time = manualClock();
      const config = limits({ newOrders: { capacity: 2, refillPerSecond: 0.001 } });
      const hostnames = [`db.${fresh('d')}.example`];

      const beforeRestart = await openStore(restartable);
      const first = new RateLimiter({ store: beforeRestart, config, clock: time.clock, account: 'restart' });
      assert.equal((await first.acquire({ hostnames, attempt: 'first' })).granted, true);
      assert.equal((await first.acquire({ hostnames, attempt: 'first' })).granted, true);
      await first.blockUntil(new Date(START.getTime() + HOUR_MS), 'Retry-After');
      await beforeRestart.close();

      const afterRestart = await opened(restartable, defer);
      const second = new RateLimiter({ store: afterRestart, config, clock: time.clock, account: 'restart' });
      assert.deepEqual(refused(await second.acquire({ hostnames, attempt: 'first' })).retryAt, new Date(START.getTime() + HOUR_MS));
      time.advance(HOUR_MS);
      assert.equal((await second.acquire({ hostnames, attempt: 'first' })).granted, true, 'an hour refilled 3.6 tokens, capped at 2');
    });
  });
}

describe('rate limit configuration', () => {
  test('the defaults are Let\'s Encrypt\'s published limits', () => {
    assert.deepEqual(parseRateLimits(undefined), DEFAULT_RATE_LIMITS);
    assert.deepEqual(parseRateLimits('  '), DEFAULT_RATE_LIMITS);
    assert.equal(DEFAULT_RATE_LIMITS.newOrders.capacity, 300);
    assert.equal(DEFAULT_RATE_LIMITS.newOrders.refillPerSecond * 3 * 3600, 300);
    assert.equal(DEFAULT_RATE_LIMITS.certificatesPerDomain.capacity, 50);
    assert.equal(Math.round(DEFAULT_RATE_LIMITS.certificatesPerDomain.refillPerSecond * 7 * 86_400), 50);
    assert.equal(DEFAULT_RATE_LIMITS.failedValidationsPerHostname.capacity, 5);
    assert.equal(DEFAULT_RATE_LIMITS.failedValidationsPerHostname.refillPerSecond * 3600, 5);
    assert.equal(DEFAULT_RATE_LIMITS.retryReserve, 0.5);
  });

  test('a partial object merges over the defaults', () => {
    assert.deepEqual(parseRateLimits('{"newOrders":{"capacity":1000},"retryReserve":0.25}'), {
      ...DEFAULT_RATE_LIMITS,
      newOrders: { capacity: 1000, refillPerSecond: DEFAULT_RATE_LIMITS.newOrders.refillPerSecond },
      retryReserve: 0.25,
    });
    assert.deepEqual(parseRateLimits('{"failedValidationsPerHostname":{"capacity":5,"refillPerSecond":0.01}}').failedValidationsPerHostname, { capacity: 5, refillPerSecond: 0.01 });
  });

  test('errors name the variable and every bad field', () => {
    const cases: [json: string, field: RegExp][] = [
      ['{"newOrders":', /CERTPLANE_RATE_LIMITS: not valid JSON/],
      ['[]', /CERTPLANE_RATE_LIMITS: value: /],
      ['{"newOrders":{"capacity":0}}', /CERTPLANE_RATE_LIMITS: newOrders\.capacity: must be at least 1/],
      ['{"newOrders":{"capacity":2.5}}', /newOrders\.capacity: must be a whole number/],
      ['{"failedValidationsPerHostname":{"refillPerSecond":-1}}', /failedValidationsPerHostname\.refillPerSecond: must be above 0/],
      ['{"certificatesPerDomain":{"refillPerSecond":"fast"}}', /certificatesPerDomain\.refillPerSecond: /],
      ['{"retryReserve":1}', /retryReserve: must be below 1/],
      ['{"certificatesPerDomian":{"capacity":100}}', /certificatesPerDomian: not a rate limit field/],
      ['{"newOrders":{"capacity":10,"burst":5}}', /newOrders\.burst: not a rate limit field/],
      ['{"newOrders":{"capacity":1}}', /retryReserve: leaves less than one of the 1 newOrders tokens to retries/],
    ];
    for (const [json, field] of cases) throwsWith(() => parseRateLimits(json), ErrorCode.RATE_LIMIT_CONFIG_INVALID, (message) => assert.match(message, field, json));
    throwsWith(() => parseRateLimits('{"newOrders":{"capacity":0},"retryReserve":-1}'), ErrorCode.RATE_LIMIT_CONFIG_INVALID, (message) => {
      assert.match(message, /newOrders\.capacity/);
      assert.match(message, /retryReserve: must be at least 0/);
    });
  });

  test('a limiter built in code is held to the same checks', () => {
    const store = { rateBuckets: { get: () => assert.fail('no store access expected'), update: () => assert.fail('no store access expected') } };
    throwsWith(() => new RateLimiter({ store, config: limits({ newOrders: { capacity: 0, refillPerSecond: 1 } }), clock: () => START, account: 'a' }), ErrorCode.RATE_LIMIT_CONFIG_INVALID, (message) => assert.match(message, /newOrders\.capacity/));
    throwsWith(() => new RateLimiter({ store, config: limits({ certificatesPerDomain: { capacity: 10, refillPerSecond: 0 } }), clock: () => START, account: 'a' }), ErrorCode.RATE_LIMIT_CONFIG_INVALID, (message) => assert.match(message, /certificatesPerDomain\.refillPerSecond/));
  });

  test('requests that cannot be valid are refused before the store is touched', async () => {
    const store = { rateBuckets: { get: () => assert.fail('no store access expected'), update: () => assert.fail('no store access expected') } };
    const rl = new RateLimiter({ store, config: DEFAULT_RATE_LIMITS, clock: () => START, account: 'a' });
    await rejectsWith(rl.acquire({ hostnames: [], attempt: 'first' }), ErrorCode.RATE_LIMIT_INVALID_REQUEST, (message) => assert.match(message, /names no hostname/));
    await rejectsWith(rl.acquire({ hostnames: ['ok.example', 'bad..example'], attempt: 'first' }), ErrorCode.RATE_LIMIT_INVALID_REQUEST, (message) => assert.match(message, /bad\.\.example/));
    await rejectsWith(rl.recordFailedValidation(''), ErrorCode.RATE_LIMIT_INVALID_REQUEST);
    await rejectsWith(rl.blockUntil(new Date(Number.NaN), 'Retry-After: soon'), ErrorCode.RATE_LIMIT_INVALID_REQUEST, (message) => assert.match(message, /Retry-After/));
    for (const count of [-1, 1.5, Number.NaN]) await rejectsWith(rl.predictDuration(count), ErrorCode.RATE_LIMIT_INVALID_REQUEST);
  });
});

describe('registeredDomain', () => {
  test('the last two labels, or three under a known multi-label public suffix', () => {
    const cases: [hostname: string, domain: string][] = [
      ['db1.eu.example.com', 'example.com'],
      ['example.com', 'example.com'],
      ['Orders.Example.COM.', 'example.com'],
      ['*.api.example.net', 'example.net'],
      ['a.b.c.d.example.org', 'example.org'],
      ['shop.example.co.uk', 'example.co.uk'],
      ['example.co.uk', 'example.co.uk'],
      ['www.example.com.au', 'example.com.au'],
      ['db.customer.co.jp', 'customer.co.jp'],
      ['co.uk', 'co.uk'],
      ['uk.example.com', 'example.com'],
      ['localhost', 'localhost'],
      ['192.0.2.10', '192.0.2.10'],
      ['2001:DB8::1', '2001:db8::1'],
    ];
    for (const [hostname, domain] of cases) assert.equal(registeredDomain(hostname), domain, hostname);
  });

  test('what is not a hostname is refused', () => {
    for (const hostname of ['', ' ', '.', 'a..example.com', '.example.com']) throwsWith(() => registeredDomain(hostname), ErrorCode.RATE_LIMIT_INVALID_REQUEST);
  });
});
