import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { freeLoopbackPorts } from '../../src/devenv/ports.js';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import pg from 'pg';
import { hasCode } from '../../src/errors.js';
import { DATABASE_POOL_SIZE } from '../../src/store/types.js';
import { openDatabase, redactUrl } from '../../src/store/engines.js';
import { MIGRATIONS, migrate } from '../../src/store/migrations.js';
import { openStore, type CertificateRecord, type InstanceRecord, type Store } from '../../src/store/index.js';
import { cleanupList, cleanups, type Defer } from '../support/cleanups.js';
import { TEST_POSTGRES_URL, clientConnections, dropDatabase } from '../support/postgres.js';
import { ErrorCode } from '../../src/error-catalogue.js';

const POSTGRES_URL = TEST_POSTGRES_URL;
const TIMEOUT = { timeout: 60_000 };
/** Opening runs every migration; on two cores shared with another suite it has taken 14 s. */
const OPEN_TIMEOUT = { timeout: 120_000 };
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const HOUR_MS = 3_600_000;


async function opened(url: string, defer: Defer): Promise<Store> {
  const store = await openStore(url);
  defer(() => store.close());
  return store;
}

interface Engine {
  readonly name: Store['engine'];
  /** The database the engine's shared tests run in; every test there creates its own instances. */
  sharedUrl(defer: Defer): Promise<string>;
  /** An empty database of its own, which may be closed and opened again; removed afterwards. */
  freshUrl(defer: Defer): Promise<string>;
}

const pglite: Engine = {
  name: 'pglite',
  sharedUrl: async () => 'memory:',
  freshUrl: async (defer) => {
    const directory = await fs.mkdtemp(path.join(os.tmpdir(), 'certplane-store-'));
    defer(() => fs.rm(directory, { recursive: true, force: true }));
    return `pglite:${path.join(directory, 'data')}`;
  },
};

let admin: pg.Pool | undefined;
after(() => admin?.end());

/** A connection to the configured test database, used only to create and drop databases of each test's own. */
async function adminPool(): Promise<pg.Pool> {
  if (admin !== undefined) return admin;
  const pool = new pg.Pool({ connectionString: POSTGRES_URL, max: 2, connectionTimeoutMillis: 5_000 });
  pool.on('error', () => undefined);
  try {
    await pool.query('SELECT 1');
  } catch (error) {
    await pool.end();
    const where = redactUrl(POSTGRES_URL);
    throw new Error(`The PostgreSQL test server at ${where} is not usable (${(error as Error).message}). Run infra/setup.sh as root to install and start it, or point CERTPLANE_TEST_POSTGRES_URL at a server where this role may CREATE DATABASE.`);
  }
  admin = pool;
  return pool;
}

const postgres: Engine = {
  name: 'postgres',
  sharedUrl: (defer) => postgres.freshUrl(defer),
  freshUrl: async (defer) => {
    const pool = await adminPool();
    const name = `certplane_test_${process.pid}_${randomBytes(6).toString('hex')}`;
    await pool.query(`CREATE DATABASE ${name} TEMPLATE template0`);
    defer(() => dropDatabase((sql) => pool.query(sql), name));
    const url = new URL(POSTGRES_URL);
    url.pathname = `/${name}`;
    return url.toString();
  },
};

let instanceCounter = 0;
function newInstance(store: Store, cluster: string | null = null): Promise<InstanceRecord> {
  instanceCounter += 1;
  return store.instances.create({ name: `db-${instanceCounter}`, hostnames: [`db-${instanceCounter}.example.net`, `db-${instanceCounter}.internal`], cluster, keyAlgorithm: 'ecdsa-p256' });
}

function tokenHash(): string {
  return randomBytes(32).toString('hex');
}

async function rejectsWith(promise: Promise<unknown>, code: ErrorCode, check: (message: string) => void = () => undefined): Promise<void> {
  await assert.rejects(promise, (error) => {
    assert.ok(hasCode(error, code), `expected ${code}, got ${String(error)}`);
    check(error.message);
    return true;
  });
}

/** Drives a certificate along the happy path to `installed`. */
async function install(store: Store, certificate: CertificateRecord): Promise<void> {
  for (const event of ['csr_accepted', 'order_created', 'chain_verified', 'delivered'] as const) assert.ok(await store.certificates.apply(certificate.id, event));
  assert.ok(await store.certificates.apply(certificate.id, 'installed', { installedAt: new Date() }));
}

for (const engine of [pglite, postgres]) {
  describe(`store on ${engine.name}`, () => {
    const suite = cleanupList();
    let store: Store;
    before(async () => {
      // Once (CI, 2026-12-03) this hook failed and the excerpt kept showed only the 38 tests
      // it cancelled: what failed, and how long it took, is said where every log keeps it.
      const startedAt = Date.now();
      const slow = setTimeout(() => console.error(`store on ${engine.name}: the shared database is still opening after ${OPEN_TIMEOUT.timeout / 2} ms`), OPEN_TIMEOUT.timeout / 2);
      try {
        store = await opened(await engine.sharedUrl(suite.defer), suite.defer);
      } catch (error) {
        console.error(`store on ${engine.name}: the shared database did not open (after ${Date.now() - startedAt} ms):`, error);
        throw error;
      } finally {
        clearTimeout(slow);
      }
    }, OPEN_TIMEOUT);
    after(() => suite.run(), TIMEOUT);

    test('reports its engine', () => {
      assert.equal(store.engine, engine.name);
    });

    test('instances: create returns the stored record and get finds it', TIMEOUT, async () => {
      const startedAt = Date.now();
      const created = await store.instances.create({ name: 'orders-db', hostnames: ['orders.example.net', 'orders-replica.example.net'], cluster: 'eu-1', keyAlgorithm: 'rsa-3072' });

      assert.match(created.id, UUID);
      assert.equal(created.name, 'orders-db');
      assert.deepEqual(created.hostnames, ['orders.example.net', 'orders-replica.example.net']);
      assert.equal(created.cluster, 'eu-1');
      assert.equal(created.keyAlgorithm, 'rsa-3072');
      assert.ok(created.createdAt instanceof Date);
      assert.ok(Math.abs(created.createdAt.getTime() - startedAt) < 60_000, `createdAt ${created.createdAt.toISOString()} is not now`);
      assert.equal(created.agentConnectedAt, null);
      assert.equal(created.agentLastSeenAt, null);
      assert.equal(created.installedFingerprintSha256, null);
      assert.deepEqual(await store.instances.get(created.id), created);
      assert.equal((await newInstance(store)).cluster, null);
    });

    test('certificates: ARI windows due are those of current installed certificates of live instances, oldest first; counts by state', TIMEOUT, async () => {
      const now = new Date();
      const due = new Date(now.getTime() - 60_000);
      const installedWith = async (instance: InstanceRecord, ariRetryAt: Date | null) => {
        const certificate = await store.certificates.create(instance.id);
        await install(store, certificate);
        await store.certificates.setRenewal(certificate.id, { renewAt: new Date(now.getTime() + 86_400_000), ariRetryAt });
        return certificate;
      };
      const current = await newInstance(store);
      const replaced = await installedWith(current, new Date(due.getTime() - 1_000));
      await store.certificates.apply(replaced.id, 'superseded');
      const newest = await installedWith(current, due);
      const older = await installedWith(await newInstance(store), new Date(due.getTime() - 5_000));
      await installedWith(await newInstance(store), new Date(now.getTime() + 60_000));
      await installedWith(await newInstance(store), null);
      const leaving = await newInstance(store);
      await installedWith(leaving, due);
      await store.instances.decommission(leaving.id, { at: now, requestedBy: 'test', comment: null, certificate: 'keep', revocationReason: null });

      const found = (await store.certificates.ariDue(now, 1_000)).map((c) => c.id);
      const mine = found.filter((id) => [replaced.id, newest.id, older.id].includes(id));
      assert.deepEqual(mine, [older.id, newest.id], 'the replaced one, one not due, one without ARI and a decommissioned instance\'s are left out');
      assert.equal((await store.certificates.ariDue(now, 1)).length, 1, 'at most the limit');

      const counts = await store.certificates.countByStatus();
      assert.ok((counts.installed ?? 0) >= 5 && (counts.superseded ?? 0) >= 1, JSON.stringify(counts));
      assert.ok(Object.values(counts).every((n) => typeof n === 'number' && n > 0), 'only states that have certificates, as numbers');
    });

    test('instances: get of an unknown or malformed id is undefined', TIMEOUT, async () => {
      assert.equal(await store.instances.get('00000000-0000-4000-8000-000000000000'), undefined);
      assert.equal(await store.instances.get('not-a-uuid'), undefined);
      assert.equal(await store.instances.get("' OR 1=1 --"), undefined);
    });

    test('instances: agent connection, last contact and installed fingerprint are recorded and cleared', TIMEOUT, async () => {
      const instance = await newInstance(store);
      const connectedAt = new Date('2026-05-13T10:00:00.123Z');
      const seenAt = new Date('2026-05-13T10:05:00.456Z');
      const fingerprint = 'ab'.repeat(32);

      await store.instances.setAgentConnected(instance.id, connectedAt);
      assert.deepEqual((await store.instances.get(instance.id))?.agentLastSeenAt, connectedAt, 'connecting is being seen');
      await store.instances.touchAgent(instance.id, seenAt);
      await store.instances.setInstalledFingerprint(instance.id, fingerprint);
      const updated = await store.instances.get(instance.id);
      assert.deepEqual(updated?.agentConnectedAt, connectedAt);
      assert.deepEqual(updated?.agentLastSeenAt, seenAt);
      assert.equal(updated?.installedFingerprintSha256, fingerprint);

      await store.instances.setAgentConnected(instance.id, null);
      await store.instances.setInstalledFingerprint(instance.id, null);
      const cleared = await store.instances.get(instance.id);
      assert.equal(cleared?.agentConnectedAt, null);
      assert.equal(cleared?.installedFingerprintSha256, null);
      assert.deepEqual(cleared?.agentLastSeenAt, seenAt);
      // Never moved back, by a late write or a connection with an earlier clock.
      await store.instances.touchAgent(instance.id, connectedAt);
      await store.instances.setAgentConnected(instance.id, connectedAt);
      assert.deepEqual((await store.instances.get(instance.id))?.agentLastSeenAt, seenAt);
    });

    test('instances: updating an instance that does not exist names it', TIMEOUT, async () => {
      const missing = '00000000-0000-4000-8000-0000000000aa';
      await rejectsWith(store.instances.touchAgent(missing, new Date()), ErrorCode.STORE_NOT_FOUND, (message) => assert.ok(message.includes(missing), message));
      await rejectsWith(store.instances.setAgentConnected('not-a-uuid', new Date()), ErrorCode.STORE_NOT_FOUND);
      await rejectsWith(store.instances.setInstalledFingerprint(missing, null), ErrorCode.STORE_NOT_FOUND);
    });

    test('instances: list pages through ties and microseconds without duplicates or gaps, stably', TIMEOUT, async (t) => {
      const defer = cleanups(t);
      const empty = await opened(await engine.freshUrl(defer), defer);
      assert.deepEqual(await empty.instances.list({ limit: 3 }), { items: [], nextCursor: null });

      const created = [];
      for (let i = 0; i < 7; i += 1) created.push(await newInstance(empty));
      // Three rows share one instant, the others differ from it by single microseconds: a
      // cursor that rounded to milliseconds would repeat or skip rows here.
      const instants = ['2026-01-01T00:00:00.000001Z', '2026-01-01T00:00:00.000001Z', '2026-01-01T00:00:00.000001Z', '2026-01-01T00:00:00.000002Z', '2026-01-01T00:00:00.000002Z', '2026-01-01T00:00:00.000003Z', '2026-01-01T00:00:00.000004Z'];
      for (const [i, instance] of created.entries()) await empty.query('UPDATE instances SET created_at = $1::timestamptz WHERE id = $2', [instants[i], instance.id]);
      const expected = created.map((instance, i) => ({ id: instance.id, at: instants[i] ?? '' })).sort((a, b) => a.at.localeCompare(b.at) || a.id.localeCompare(b.id)).map((entry) => entry.id);

      const walk = async (): Promise<string[][]> => {
        const pages: string[][] = [];
        let cursor: string | undefined;
        for (let guard = 0; guard < 10; guard += 1) {
          const page = await empty.instances.list(cursor === undefined ? { limit: 3 } : { cursor, limit: 3 });
          pages.push(page.items.map((item) => item.id));
          if (page.nextCursor === null) return pages;
          assert.match(page.nextCursor, /^[A-Za-z0-9_-]+$/);
          cursor = page.nextCursor;
        }
        assert.fail('paging did not end within 10 pages');
      };

      const pages = await walk();
      assert.deepEqual(pages.map((page) => page.length), [3, 3, 1]);
      assert.deepEqual(pages.flat(), expected);
      assert.deepEqual(await walk(), pages);

      const first = await empty.instances.list({ limit: 3 });
      const latecomer = await newInstance(empty);
      const rest = await empty.instances.list({ cursor: first.nextCursor ?? assert.fail('no cursor'), limit: 10 });
      const seen = [...first.items, ...rest.items].map((item) => item.id);
      assert.deepEqual(seen, [...expected, latecomer.id]);
      assert.equal(new Set(seen).size, seen.length);
      assert.equal(rest.nextCursor, null);
      assert.ok(rest.items[0]?.createdAt instanceof Date);
    });

    test('instances: list refuses cursors it did not issue', TIMEOUT, async () => {
      const forged = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
      const garbage = ['', 'not a cursor!', 'AAAA', forged({}), forged(['2026-01-01T00:00:00.000000Z']), forged(['yesterday', '00000000-0000-4000-8000-000000000000']), forged(['2026-01-01T00:00:00.000000Z', "x' OR '1'='1"]), forged(['2026-01-01T00:00:00.000Z', '00000000-0000-4000-8000-000000000000'])];
      for (const cursor of garbage) {
        await rejectsWith(store.instances.list({ cursor, limit: 3 }), ErrorCode.STORE_INVALID_CURSOR, (message) => assert.match(message, /nextCursor/));
      }
    });

    test('enrollment tokens: a token is found without being spent, and consumed once, at the time given', TIMEOUT, async () => {
      const instance = await newInstance(store);
      const hash = tokenHash();
      const now = new Date('2026-05-13T12:00:00.000Z');
      await store.enrollmentTokens.create(instance.id, hash, new Date(now.getTime() + HOUR_MS));

      assert.equal(await store.enrollmentTokens.find(hash, now), instance.id);
      assert.equal(await store.enrollmentTokens.find(hash, now), instance.id, 'finding does not spend');
      assert.equal(await store.enrollmentTokens.find(hash, new Date(now.getTime() + HOUR_MS)), undefined, 'expired');
      assert.equal(await store.enrollmentTokens.find(tokenHash(), now), undefined);
      assert.equal(await store.enrollmentTokens.consume(hash, now), instance.id);
      assert.equal(await store.enrollmentTokens.find(hash, now), undefined, 'spent');
      assert.equal(await store.enrollmentTokens.consume(hash, now), undefined);
      assert.equal(await store.enrollmentTokens.consume(tokenHash(), now), undefined);
      const [row] = await store.query<{ used_at: Date; instance_id: string }>('SELECT used_at, instance_id FROM enrollment_tokens WHERE token_sha256 = $1', [hash]);
      assert.deepEqual(row, { used_at: now, instance_id: instance.id });
    });

    test('enrollment tokens: an expired token is refused and stays unused', TIMEOUT, async () => {
      const instance = await newInstance(store);
      const expiresAt = new Date('2026-05-13T12:00:00.000Z');
      const [atExpiry, justBefore] = [tokenHash(), tokenHash()];
      await store.enrollmentTokens.create(instance.id, atExpiry, expiresAt);
      await store.enrollmentTokens.create(instance.id, justBefore, expiresAt);

      assert.equal(await store.enrollmentTokens.consume(atExpiry, expiresAt), undefined);
      assert.equal(await store.enrollmentTokens.consume(atExpiry, new Date(expiresAt.getTime() + HOUR_MS)), undefined);
      assert.equal(await store.enrollmentTokens.consume(justBefore, new Date(expiresAt.getTime() - 1)), instance.id);
      const [row] = await store.query<{ used_at: Date | null }>('SELECT used_at FROM enrollment_tokens WHERE token_sha256 = $1', [atExpiry]);
      assert.equal(row?.used_at, null);
    });

    test('enrollment tokens: of concurrent consumers exactly one wins', TIMEOUT, async () => {
      const instance = await newInstance(store);
      const now = new Date();
      for (let round = 0; round < 5; round += 1) {
        const hash = tokenHash();
        await store.enrollmentTokens.create(instance.id, hash, new Date(now.getTime() + HOUR_MS));
        const results = await Promise.all([1, 2, 3, 4].map(() => store.enrollmentTokens.consume(hash, now)));
        assert.deepEqual(results.filter((result) => result !== undefined), [instance.id], `round ${round}: ${JSON.stringify(results)}`);
      }
    });

    test('enrollment tokens: unknown instances and reused hashes are refused', TIMEOUT, async () => {
      const instance = await newInstance(store);
      const hash = tokenHash();
      const expiresAt = new Date(Date.now() + HOUR_MS);
      await store.enrollmentTokens.create(instance.id, hash, expiresAt);

      await rejectsWith(store.enrollmentTokens.create(instance.id, hash, expiresAt), ErrorCode.STORE_CONFLICT);
      await rejectsWith(store.enrollmentTokens.create('00000000-0000-4000-8000-0000000000bb', tokenHash(), expiresAt), ErrorCode.STORE_NOT_FOUND, (message) => assert.match(message, /00000000-0000-4000-8000-0000000000bb/));
      await rejectsWith(store.enrollmentTokens.create('nope', tokenHash(), expiresAt), ErrorCode.STORE_NOT_FOUND);
    });

    test('certificates: create starts a pending request with nothing filled in', TIMEOUT, async () => {
      const instance = await newInstance(store);
      const certificate = await store.certificates.create(instance.id);

      assert.match(certificate.id, UUID);
      assert.equal(certificate.instanceId, instance.id);
      assert.equal(certificate.status, 'pending');
      for (const field of ['csrPem', 'fullchainPem', 'fingerprintSha256', 'notAfter', 'anchorCN', 'report', 'lastError', 'deliveredAt', 'installedAt'] as const) {
        assert.equal(certificate[field], null, field);
      }
      assert.ok(certificate.createdAt instanceof Date && certificate.updatedAt instanceof Date);
      assert.deepEqual(await store.certificates.get(certificate.id), certificate);
      assert.equal(await store.certificates.get('00000000-0000-4000-8000-000000000000'), undefined);
      assert.equal(await store.certificates.get('garbage'), undefined);
      await rejectsWith(store.certificates.create('00000000-0000-4000-8000-0000000000cc'), ErrorCode.STORE_NOT_FOUND);
    });

    test('certificates: an event sets the state and fields only from a state the transition table allows', TIMEOUT, async () => {
      const instance = await newInstance(store);
      const created = await store.certificates.create(instance.id);
      const csrPem = '-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n';

      const accepted = await store.certificates.apply(created.id, 'csr_accepted', { csrPem, lastError: 'previous attempt timed out' });
      assert.equal(accepted?.status, 'csr_accepted');
      assert.equal(accepted?.csrPem, csrPem);
      assert.equal(accepted?.lastError, 'previous attempt timed out');
      assert.ok(accepted !== undefined && accepted.updatedAt.getTime() >= created.updatedAt.getTime());
      assert.ok(accepted !== undefined && accepted.stateChangedAt.getTime() >= created.stateChangedAt.getTime());
      assert.deepEqual(accepted?.createdAt, created.createdAt);

      const unchanged = await store.certificates.get(created.id);
      assert.equal(await store.certificates.apply(created.id, 'csr_accepted', { csrPem: 'a second CSR' }), undefined, 'a repeated event is stale, not an error');
      assert.deepEqual(await store.certificates.get(created.id), unchanged);

      const ordering = await store.certificates.apply(created.id, 'order_created', { orderUrl: 'https://ca.example/order/1' });
      assert.equal(ordering?.orderUrl, 'https://ca.example/order/1');
      const notAfter = new Date('2026-06-27T12:34:56.789Z');
      const issued = await store.certificates.apply(created.id, 'chain_verified', { fullchainPem: 'chain', fingerprintSha256: 'cd'.repeat(32), notAfter, anchorCN: 'ISRG Root X1', lastError: null });
      assert.equal(issued?.status, 'issued');
      assert.equal(issued?.csrPem, csrPem, 'fields not named keep their value');
      assert.equal(issued?.lastError, null, 'null clears a field');
      assert.deepEqual(issued?.notAfter, notAfter);
      assert.equal(issued?.anchorCN, 'ISRG Root X1');
      assert.equal(await store.certificates.apply('not-a-uuid', 'installed'), undefined);
    });

    test('certificates: the store refuses a transition outside the table with LIFECYCLE_TRANSITION_REFUSED and writes nothing', TIMEOUT, async () => {
      const certificate = await store.certificates.create((await newInstance(store)).id);
      await rejectsWith(store.certificates.apply(certificate.id, 'installed', { installedAt: new Date() }), ErrorCode.LIFECYCLE_TRANSITION_REFUSED, (message) =>
        assert.match(message, /pending cannot take the event installed/),
      );
      await rejectsWith(store.certificates.apply(certificate.id, 'chain_verified', { fullchainPem: 'forged' }), ErrorCode.LIFECYCLE_TRANSITION_REFUSED);
      const stored = await store.certificates.get(certificate.id);
      assert.equal(stored?.status, 'pending');
      assert.equal(stored?.fullchainPem, null);
      await rejectsWith(store.certificates.apply(certificate.id, 'failed', { lastError: 'no reason given' }), ErrorCode.STORE_INVALID_VALUE);
    });

    test('certificates: a failure is stored with its typed reason and a settled certificate takes no late event', TIMEOUT, async () => {
      const certificate = await store.certificates.create((await newInstance(store)).id);
      const failure = { reason: 'ChainUnsatisfied', code: ErrorCode.CHAIN_NO_PREFERRED_CHAIN } as const;
      const failed = await store.certificates.apply(certificate.id, 'failed', { failure, lastError: 'no offered chain fits' });
      assert.deepEqual(failed?.failure, failure);
      assert.equal(failed?.status, 'failed');
      assert.equal(await store.certificates.apply(certificate.id, 'csr_accepted', { csrPem: 'late' }), undefined);
      assert.equal(await store.certificates.apply(certificate.id, 'installed'), undefined);
      assert.equal((await store.certificates.get(certificate.id))?.csrPem, null);
    });

    test('certificates: installing supersedes the instance\'s previously installed certificate', TIMEOUT, async () => {
      const instance = await newInstance(store);
      const first = await store.certificates.create(instance.id);
      await install(store, first);
      const second = await store.certificates.create(instance.id);
      await install(store, second);
      assert.equal((await store.certificates.get(first.id))?.status, 'superseded');
      assert.equal((await store.certificates.latestInstalled(instance.id))?.id, second.id);
    });

    test('certificates: one lease at a time, taken over only once it lapses on the database clock', TIMEOUT, async () => {
      const certificate = await store.certificates.create((await newInstance(store)).id);
      const results = await Promise.all([store.certificates.lease(certificate.id, 'a', 60_000), store.certificates.lease(certificate.id, 'b', 60_000)]);
      assert.equal(results.filter(Boolean).length, 1, 'exactly one of two racing processes gets the lease');
      const [holder, other] = results[0] ? ['a', 'b'] : ['b', 'a'];
      assert.equal(await store.certificates.renewLease(certificate.id, holder, 60_000), true, 'the holder extends its lease');
      assert.equal(await store.certificates.renewLease(certificate.id, other, 60_000), false, 'only the holder extends it');
      assert.equal(await store.certificates.lease(certificate.id, other, 60_000), false, 'a live lease is not taken');
      assert.equal(await store.certificates.lease(certificate.id, holder, 60_000), false, 'not even by its holder: a parked certificate stays parked');
      const [row] = await store.query<{ live: boolean }>("SELECT lease_until > now() + interval '50 seconds' AS live FROM certificates WHERE id = $1", [certificate.id]);
      assert.equal(row?.live, true, 'the expiry is counted from the database clock');
      assert.equal(await store.certificates.renewLease(certificate.id, holder, 0), true, 'the holder shortens its lease to nothing');
      await new Promise((resolve) => setTimeout(resolve, 5));
      assert.equal(await store.certificates.lease(certificate.id, other, 60_000), true, 'a lapsed lease is taken over');
      assert.equal(await store.certificates.renewLease(certificate.id, holder, 60_000), false, 'the stalled holder learns at its next renewal that it lost the lease');
      assert.equal(await store.certificates.apply(certificate.id, 'csr_accepted', { csrPem: 'from the stalled process' }, { leaseOwner: holder }), undefined, 'a process that lost its lease writes nothing');
      assert.equal((await store.certificates.apply(certificate.id, 'csr_accepted', { csrPem: 'from the new holder' }, { leaseOwner: other }))?.csrPem, 'from the new holder');
      await store.certificates.release(certificate.id, holder);
      assert.equal((await store.certificates.get(certificate.id))?.leaseOwner, other, 'only the owner releases');
      await store.certificates.release(certificate.id, other);
      assert.equal((await store.certificates.get(certificate.id))?.leaseOwner, null);
    });

    test('certificates: leaseForOrder takes the lease like lease and returns the record as it stands under it, with its job\'s failed attempts', TIMEOUT, async () => {
      const instance = await newInstance(store);
      const { job } = await store.jobs.enqueue({ kind: 'reissue', instanceId: instance.id, dueAt: new Date(), reason: 'lease', requestedBy: 'test' });
      await store.jobs.fail(job.id, 'the CA was away', new Date(), { reason: 'CaUnreachable', code: ErrorCode.ACME_UNREACHABLE });
      const certificate = await store.certificates.create(instance.id, { jobId: job.id });
      await store.certificates.apply(certificate.id, 'csr_accepted', { csrPem: 'accepted before the lease' });
      const results = await Promise.all([store.certificates.leaseForOrder(certificate.id, 'a', 60_000), store.certificates.leaseForOrder(certificate.id, 'b', 60_000)]);
      const taken = results.filter((leased) => leased !== undefined);
      assert.equal(taken.length, 1, 'exactly one of two racing processes gets the lease');
      assert.equal(taken[0]?.certificate.status, 'csr_accepted', 'the record read under the lease, not the one in hand');
      assert.equal(taken[0]?.certificate.csrPem, 'accepted before the lease');
      assert.equal(taken[0]?.certificate.leaseOwner, results[0] ? 'a' : 'b', 'with the lease it just took');
      assert.equal(taken[0]?.jobAttempts, 1, 'the job failed once before: the order is a retry');
      assert.equal(await store.certificates.leaseForOrder(certificate.id, taken[0]!.certificate.leaseOwner === 'a' ? 'b' : 'a', 60_000), undefined, 'a live lease is not taken');
      const alone = await store.certificates.create((await newInstance(store)).id);
      assert.equal((await store.certificates.leaseForOrder(alone.id, 'a', 60_000))?.jobAttempts, null, 'no job: null');
    });

    test('certificates: acceptCsrForOrder accepts this instance\'s pending CSR and takes the order\'s lease in one write, or writes nothing', TIMEOUT, async () => {
      const instance = await newInstance(store);
      const { job } = await store.jobs.enqueue({ kind: 'reissue', instanceId: instance.id, dueAt: new Date(), reason: 'accept', requestedBy: 'test' });
      await store.jobs.fail(job.id, 'the CA was away', new Date(), { reason: 'CaUnreachable', code: ErrorCode.ACME_UNREACHABLE });
      const certificate = await store.certificates.create(instance.id, { jobId: job.id });
      const other = await newInstance(store);
      assert.equal(await store.certificates.acceptCsrForOrder(certificate.id, 'csr', other.id, 'a', 60_000), undefined, 'another instance\'s certificate is not accepted');
      assert.equal((await store.certificates.get(certificate.id))?.status, 'pending');
      const accepted = await store.certificates.acceptCsrForOrder(certificate.id, 'csr', instance.id, 'a', 60_000);
      assert.equal(accepted?.certificate.status, 'csr_accepted');
      assert.equal(accepted?.certificate.csrPem, 'csr');
      assert.equal(accepted?.certificate.leaseOwner, 'a');
      assert.ok(accepted!.certificate.leaseUntil! > new Date(Date.now() + 30_000), 'the lease runs for the duration asked');
      assert.equal(accepted?.jobAttempts, 1, 'the job failed once before: the order is a retry');
      assert.equal(await store.certificates.acceptCsrForOrder(certificate.id, 'again', instance.id, 'b', 60_000), undefined, 'a repeated CSR moves nothing');
      assert.equal((await store.certificates.get(certificate.id))?.csrPem, 'csr');
      const held = await store.certificates.create((await newInstance(store)).id);
      assert.equal(await store.certificates.lease(held.id, 'elsewhere', 60_000), true);
      assert.equal(await store.certificates.acceptCsrForOrder(held.id, 'csr', held.instanceId, 'a', 60_000), undefined, 'a live lease held elsewhere is not taken');
      assert.equal((await store.certificates.get(held.id))?.status, 'pending', 'and the CSR is not accepted under it');
      const alone = await store.certificates.create((await newInstance(store)).id);
      assert.equal((await store.certificates.acceptCsrForOrder(alone.id, 'csr', alone.instanceId, 'a', 60_000))?.jobAttempts, null, 'no job: null');
    });

    test('certificates: events applied together move along the table in one write, the lease given up in it; a sequence outside the table is refused and writes nothing', TIMEOUT, async () => {
      const certificate = await store.certificates.create((await newInstance(store)).id);
      await store.certificates.apply(certificate.id, 'csr_accepted', { csrPem: 'csr' });
      assert.ok(await store.certificates.lease(certificate.id, 'holder', 60_000));
      await store.certificates.apply(certificate.id, 'order_created', { orderUrl: 'https://ca.example/order/1' }, { leaseOwner: 'holder' });
      await rejectsWith(store.certificates.apply(certificate.id, ['order_created', 'installed']), ErrorCode.LIFECYCLE_TRANSITION_REFUSED, (message) => assert.match(message, /ordering cannot take the event installed/));
      await rejectsWith(store.certificates.apply(certificate.id, 'chain_verified', {}, { releaseLease: true }), ErrorCode.STORE_INVALID_VALUE);
      const deliveredAt = new Date('2026-12-03T04:00:00.000Z');
      assert.equal(await store.certificates.apply(certificate.id, ['chain_verified', 'delivered'], { fullchainPem: 'chain', deliveredAt }, { leaseOwner: 'another', releaseLease: true }), undefined, 'not the holder: nothing moves');
      const delivered = await store.certificates.apply(certificate.id, ['chain_verified', 'delivered'], { fullchainPem: 'chain', deliveredAt }, { leaseOwner: 'holder', releaseLease: true });
      assert.equal(delivered?.status, 'delivered');
      assert.equal(delivered?.fullchainPem, 'chain');
      assert.deepEqual(delivered?.deliveredAt, deliveredAt);
      assert.equal(delivered?.leaseOwner, null, 'the lease was given up in the same write');
      assert.equal(delivered?.leaseUntil, null);
      assert.equal(await store.certificates.apply(certificate.id, ['chain_verified', 'delivered'], { fullchainPem: 'again' }), undefined, 'repeated: stale');
    });

    test('certificates: an install names its instance and fingerprint; it supersedes the one installed before and records the fingerprint on the instance in the same write, and tells nothing of a certificate it does not name', TIMEOUT, async () => {
      const instance = await newInstance(store);
      const stranger = await newInstance(store);
      const first = await store.certificates.create(instance.id);
      await install(store, first);
      const second = await store.certificates.create(instance.id);
      const fingerprintSha256 = 'ab'.repeat(32);
      await store.certificates.apply(second.id, 'csr_accepted', { csrPem: 'csr' });
      await store.certificates.apply(second.id, 'order_created', { orderUrl: 'https://ca.example/order/2' });
      await store.certificates.apply(second.id, 'chain_verified', { fullchainPem: 'chain', fingerprintSha256 });
      // Issued, not delivered: installing it is outside the table, yet nobody but its own agent learns that.
      assert.equal(await store.certificates.apply(second.id, 'installed', { installedAt: new Date() }, { instanceId: stranger.id, fingerprintSha256 }), undefined, 'another instance\'s agent: nothing moves, nothing told');
      assert.equal(await store.certificates.apply(second.id, 'installed', { installedAt: new Date() }, { instanceId: instance.id, fingerprintSha256: 'cd'.repeat(32) }), undefined, 'another fingerprint: nothing moves');
      await rejectsWith(store.certificates.apply(second.id, 'installed', { installedAt: new Date() }, { instanceId: instance.id, fingerprintSha256 }), ErrorCode.LIFECYCLE_TRANSITION_REFUSED);
      await store.certificates.apply(second.id, 'delivered', { deliveredAt: new Date() });
      const installed = await store.certificates.apply(second.id, 'installed', { installedAt: new Date() }, { instanceId: instance.id, fingerprintSha256 });
      assert.equal(installed?.status, 'installed');
      assert.equal((await store.certificates.get(first.id))?.status, 'superseded');
      assert.equal((await store.instances.get(instance.id))?.installedFingerprintSha256, fingerprintSha256);
      assert.equal((await store.instances.get(stranger.id))?.installedFingerprintSha256, null);
    });

    test('certificates: of two racing CSRs for one pending certificate exactly one is accepted', TIMEOUT, async () => {
      for (let round = 0; round < 5; round += 1) {
        const certificate = await store.certificates.create((await newInstance(store)).id);
        const results = await Promise.all([
          store.certificates.apply(certificate.id, 'csr_accepted', { csrPem: 'from one process' }),
          store.certificates.apply(certificate.id, 'csr_accepted', { csrPem: 'from another process' }),
        ]);
        const winners = results.filter((result) => result !== undefined);
        assert.equal(winners.length, 1, `round ${round}`);
        assert.equal((await store.certificates.get(certificate.id))?.csrPem, winners[0]?.csrPem, 'the loser wrote nothing');
      }
    });

    test('certificates: latest, latestInstalled and open follow creation order', TIMEOUT, async () => {
      const instance = await newInstance(store);
      const other = await newInstance(store);
      assert.equal(await store.certificates.latest(instance.id), undefined);
      assert.equal(await store.certificates.latestInstalled(instance.id), undefined);
      assert.deepEqual(await store.certificates.open(instance.id), []);

      const first = await store.certificates.create(instance.id);
      await store.certificates.create(other.id);
      assert.deepEqual((await store.certificates.open(instance.id)).map((c) => c.id), [first.id]);
      await assert.rejects(store.certificates.create(instance.id), { code: ErrorCode.STORE_CONFLICT }, 'one open certificate per instance');
      await install(store, first);
      const second = await store.certificates.create(instance.id);
      await store.certificates.apply(second.id, 'failed', { failure: { reason: 'CaError', code: ErrorCode.ACME_PROBLEM }, lastError: 'CA said no' });
      const third = await store.certificates.create(instance.id);
      assert.ok(await store.certificates.apply(third.id, 'csr_accepted'));

      assert.deepEqual((await store.certificates.open(instance.id)).map((c) => [c.id, c.status]), [[third.id, 'csr_accepted']]);
      assert.equal((await store.certificates.latest(instance.id))?.id, third.id);
      const installed = await store.certificates.latestInstalled(instance.id);
      assert.equal(installed?.id, first.id);
      assert.ok(installed?.installedAt instanceof Date);
      assert.equal(await store.certificates.latestInstalled(other.id), undefined);
      assert.equal(await store.certificates.latest('not-a-uuid'), undefined);
      assert.deepEqual(await store.certificates.open('not-a-uuid'), []);
    });

    test('certificates: a create with notify: false sends no wake-up; other creates, and the quiet certificate\'s own later changes, still do', TIMEOUT, async () => {
      const heard: string[] = [];
      const unlisten = await store.wakeups.listen((work) => heard.push(`${work.id} ${work.status}`), () => undefined);
      try {
        const quiet: CertificateRecord[] = [];
        const announced: CertificateRecord[] = [];
        // Alternated, one after the other: the setting of a quiet create must not outlive its statement.
        for (let round = 0; round < 3; round += 1) {
          quiet.push(await store.certificates.create((await newInstance(store)).id, { notify: false }));
          announced.push(await store.certificates.create((await newInstance(store)).id, { notify: true }));
          announced.push(await store.certificates.create((await newInstance(store)).id));
        }
        for (const event of ['csr_accepted', 'order_created', 'chain_verified'] as const) assert.ok(await store.certificates.apply(quiet[0]!.id, event));
        // Notifications arrive in commit order: once the last change is heard, a quiet create's would have been too.
        const last = `${quiet[0]!.id} issued`;
        for (let waited = 0; !heard.includes(last); waited += 1) {
          assert.ok(waited < 500, `the issued chain's notification never came; heard ${JSON.stringify(heard)}`);
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
        for (const certificate of announced) assert.ok(heard.includes(`${certificate.id} pending`), `the creation of ${certificate.id} was announced`);
        for (const certificate of quiet) assert.ok(!heard.some((work) => work.startsWith(`${certificate.id} pending`)), `the quiet creation of ${certificate.id} was announced`);
      } finally {
        await unlisten();
      }
    });

    test('certificates: the report round-trips as JSON, objects and arrays alike', TIMEOUT, async () => {
      const instance = await newInstance(store);
      const report = {
        ok: true,
        evaluatedAt: '2026-05-13T12:00:00.000Z',
        leaf: { subject: 'CN=db-1.example.net', sans: ['db-1.example.net'], notAfter: '2026-06-27T12:00:00.000Z' },
        path: [{ subject: 'CN=YR1', issuer: 'CN=Root YR', serial: '00ff' }],
        anchor: { subject: 'CN=ISRG Root X1' },
        errors: [],
        warnings: [{ code: 'EKU_MISSING', message: 'Zertifikat ohne serverAuth – “Root YR” ✓', depth: 1, numbers: [0, -1, 1.5, 4096], flag: false, nothing: null }],
      };
      const certificate = await store.certificates.create(instance.id);
      const updated = await store.certificates.apply(certificate.id, 'csr_accepted', { report });
      assert.deepEqual(updated?.report, report);
      assert.deepEqual((await store.certificates.get(certificate.id))?.report, report);
      const [stored] = await store.query<{ kind: string }>('SELECT jsonb_typeof(report) AS kind FROM certificates WHERE id = $1', [certificate.id]);
      assert.equal(stored?.kind, 'object');

      const listed = await store.certificates.apply(certificate.id, 'order_created', { report: ['chain', { rejected: true }] });
      assert.deepEqual(listed?.report, ['chain', { rejected: true }]);
      const cleared = await store.certificates.apply(certificate.id, 'chain_verified', { report: null });
      assert.equal(cleared?.report, null);
    });

    test('agent certificates: record, get and revoke once', TIMEOUT, async () => {
      const instance = await newInstance(store);
      const fingerprintSha256 = randomBytes(32).toString('hex');
      const notAfter = new Date('2027-05-13T00:00:00.000Z');
      await store.agentCertificates.record({ fingerprintSha256, instanceId: instance.id, serialNumber: '7f3a', notAfter });

      const recorded = await store.agentCertificates.get(fingerprintSha256);
      assert.equal(recorded?.instanceId, instance.id);
      assert.equal(recorded?.serialNumber, '7f3a');
      assert.deepEqual(recorded?.notAfter, notAfter);
      assert.equal(recorded?.revokedAt, null);
      assert.ok(recorded?.createdAt instanceof Date);

      const revokedAt = new Date('2026-05-14T08:00:00.000Z');
      assert.deepEqual(await store.agentCertificates.revoke(fingerprintSha256, revokedAt), [fingerprintSha256]);
      assert.deepEqual(await store.agentCertificates.revoke(fingerprintSha256, new Date()), []);
      assert.deepEqual((await store.agentCertificates.get(fingerprintSha256))?.revokedAt, revokedAt);
      assert.equal(await store.agentCertificates.get(randomBytes(32).toString('hex')), undefined);
      assert.deepEqual(await store.agentCertificates.revoke(randomBytes(32).toString('hex'), revokedAt), []);
    });

    test('agent certificates: duplicates and unknown instances are refused', TIMEOUT, async () => {
      const instance = await newInstance(store);
      const input = { fingerprintSha256: randomBytes(32).toString('hex'), instanceId: instance.id, serialNumber: '01', notAfter: new Date('2027-01-01T00:00:00Z') };
      await store.agentCertificates.record(input);
      await rejectsWith(store.agentCertificates.record(input), ErrorCode.STORE_CONFLICT);
      await rejectsWith(store.agentCertificates.record({ ...input, fingerprintSha256: randomBytes(32).toString('hex'), instanceId: '00000000-0000-4000-8000-0000000000dd' }), ErrorCode.STORE_NOT_FOUND);
    });

    test('hostnames: a name belongs to one instance, whatever its case, trailing dot or wildcard form (stops one cluster taking another\'s name)', TIMEOUT, async () => {
      const zone = `own-${randomBytes(4).toString('hex')}.test`;
      const us = await store.instances.create({ name: 'us', hostnames: [`B.${zone}`, `api.${zone}`], cluster: 'us-1', keyAlgorithm: 'ecdsa-p256' });
      assert.deepEqual(us.hostnames, [`b.${zone}`, `api.${zone}`]);
      for (const hostnames of [[`b.${zone}`], [`B.${zone.toUpperCase()}.`], [`*.${zone}`], [`fresh.${zone}`, `api.${zone}`]]) {
        await rejectsWith(store.instances.create({ name: 'eu-evil', hostnames, cluster: 'eu-1', keyAlgorithm: 'ecdsa-p256' }), ErrorCode.INSTANCE_HOSTNAME_TAKEN, (message) => assert.ok(!message.includes(us.id) && !message.includes('us-1'), message));
      }
      const refused = await store.instances.create({ name: 'eu-evil', hostnames: [`*.${zone}`], cluster: 'eu-1', keyAlgorithm: 'ecdsa-p256' }).catch((error: unknown) => error);
      assert.ok(hasCode(refused, ErrorCode.INSTANCE_HOSTNAME_TAKEN));
      assert.deepEqual(refused.details.conflicts, [
        { requested: `*.${zone}`, held: `api.${zone}`, instanceId: us.id, cluster: 'us-1' },
        { requested: `*.${zone}`, held: `b.${zone}`, instanceId: us.id, cluster: 'us-1' },
      ]);
      // A refused registration leaves nothing behind, not even the names it did not conflict on.
      assert.deepEqual(await store.query('SELECT name FROM instance_hostnames WHERE name = $1', [`fresh.${zone}`]), []);
      assert.deepEqual(await store.query("SELECT id FROM instances WHERE name = 'eu-evil'"), []);

      // Names one level further down, the parent itself and a wildcard's own covered names under one owner are not conflicts.
      const deeper = await store.instances.create({ name: 'deeper', hostnames: [`x.b.${zone}`, zone], cluster: 'eu-1', keyAlgorithm: 'ecdsa-p256' });
      const wild = await store.instances.create({ name: 'wild', hostnames: [`*.w.${zone}`, `one.w.${zone}`], cluster: null, keyAlgorithm: 'ecdsa-p256' });
      await rejectsWith(store.instances.create({ name: 'two', hostnames: [`two.w.${zone}`], cluster: null, keyAlgorithm: 'ecdsa-p256' }), ErrorCode.INSTANCE_HOSTNAME_TAKEN);

      assert.deepEqual(await store.instances.ownedNames(us.id, [`b.${zone}`, `x.b.${zone}`, `api.${zone}`]), [`api.${zone}`, `b.${zone}`]);
      assert.deepEqual(await store.instances.ownedNames(deeper.id, [`b.${zone}`, `x.b.${zone}`]), [`x.b.${zone}`]);
      assert.deepEqual(await store.instances.ownedNames(wild.id, [`*.w.${zone}`, `two.w.${zone}`]), [`*.w.${zone}`]);
      assert.deepEqual(await store.instances.ownedNames('not-a-uuid', [`b.${zone}`]), []);
      // The same answer with the instance, in one read.
      const both = await store.instances.withOwnedNames(us.id, [`b.${zone}`, `x.b.${zone}`, `api.${zone}`]);
      assert.deepEqual(both?.owned, [`api.${zone}`, `b.${zone}`]);
      assert.deepEqual(both?.instance, await store.instances.get(us.id));
      assert.deepEqual((await store.instances.withOwnedNames(us.id, []))?.owned, []);
      assert.equal(await store.instances.withOwnedNames('not-a-uuid', [`b.${zone}`]), undefined);
      assert.equal(await store.instances.withOwnedNames('00000000-0000-4000-8000-0000000000ab', [`b.${zone}`]), undefined);
    });

    test('hostnames: of concurrent registrations of one name, or of a wildcard and a name it covers, exactly one wins', TIMEOUT, async () => {
      for (const spellings of [(zone: string) => [`race.${zone}`, `RACE.${zone}.`], (zone: string) => [`*.${zone}`, `race.${zone}`]]) {
        const zone = `race-${randomBytes(4).toString('hex')}.test`;
        const attempts = Array.from({ length: 16 }, (_, i) => store.instances.create({ name: `racer-${i}`, hostnames: [spellings(zone)[i % 2]!], cluster: `c${i}`, keyAlgorithm: 'ecdsa-p256' }));
        const settled = await Promise.allSettled(attempts);
        const won = settled.filter((result) => result.status === 'fulfilled');
        assert.equal(won.length, 1, `winners: ${won.length}`);
        for (const result of settled) if (result.status === 'rejected') assert.ok(hasCode(result.reason, ErrorCode.INSTANCE_HOSTNAME_TAKEN), String(result.reason));
        const owners = await store.query<{ instance_id: string }>('SELECT DISTINCT instance_id FROM instance_hostnames WHERE parent = $1', [zone]);
        assert.equal(owners.length, 1);
      }
    });

    test('instances: a cluster-limited list holds, and its cursor points at, only instances of those clusters', TIMEOUT, async (t) => {
      const defer = cleanups(t);
      const fresh = await opened(await engine.freshUrl(defer), defer);
      const clusters = ['eu-1', 'us-1', 'us-1', null, 'eu-1', 'us-1', 'eu-1', 'us-1', 'us-1'];
      const created = [];
      for (const cluster of clusters) created.push(await newInstance(fresh, cluster));
      const visible = created.filter((instance) => instance.cluster === 'eu-1').map((instance) => instance.id);
      const seen: string[] = [];
      let cursor: string | undefined;
      for (let guard = 0; guard < 10; guard += 1) {
        const page = await fresh.instances.list({ limit: 2, clusters: ['eu-1'], ...(cursor ? { cursor } : {}) });
        seen.push(...page.items.map((item) => item.id));
        if (page.nextCursor === null) break;
        const [, id] = JSON.parse(Buffer.from(page.nextCursor, 'base64url').toString()) as [string, string];
        assert.ok(visible.includes(id), 'the cursor names an instance outside the caller\'s clusters');
        cursor = page.nextCursor;
      }
      assert.deepEqual(seen, visible);
      assert.deepEqual(await fresh.instances.list({ limit: 5, clusters: [] }), { items: [], nextCursor: null });
      assert.equal((await fresh.instances.list({ limit: 50, clusters: null })).items.length, clusters.length);
    });

    test('migrations: version 8 gives a name listed by several existing instances to the oldest, and records the others', TIMEOUT, async (t) => {
      const defer = cleanups(t);
      const url = await engine.freshUrl(defer);
      const db = await openDatabase(url);
      defer(() => db.close());
      await migrate(db, MIGRATIONS.filter((migration) => migration.version < 6));
      const insert = async (name: string, hostnames: string[], at: string) =>
        (await db.query<{ id: string }>("INSERT INTO instances (id, name, hostnames, key_algorithm, created_at) VALUES (gen_random_uuid(), $1, $2::text[], 'ecdsa-p256', $3::timestamptz) RETURNING id", [name, hostnames, at]))[0]!.id;
      const newest = await insert('newest', ['shared.example.org', 'mine.example.org'], '2026-03-01T00:00:00Z');
      const oldest = await insert('oldest', ['shared.example.org'], '2026-01-01T00:00:00Z');
      const wildcard = await insert('wildcard', ['*.example.org'], '2026-02-01T00:00:00Z');
      await db.close();

      const store = await opened(url, defer);
      const owners = await store.query<{ name: string; instance_id: string }>('SELECT name, instance_id FROM instance_hostnames ORDER BY name');
      assert.deepEqual(owners, [
        { name: 'mine.example.org', instance_id: newest },
        { name: 'shared.example.org', instance_id: oldest },
      ]);
      const recorded = await store.query<{ actor: string; target: string; details: { name: string; heldBy: string } }>("SELECT actor, target, details FROM audit_log WHERE action = 'instance.hostname-conflict' ORDER BY id");
      assert.deepEqual(recorded, [
        { actor: 'migration 8', target: wildcard, details: { name: '*.example.org', heldBy: oldest } },
        { actor: 'migration 8', target: newest, details: { name: 'shared.example.org', heldBy: oldest } },
      ]);
      assert.deepEqual(await store.instances.unownedHostnames(10), [
        { instanceId: wildcard, name: '*.example.org' },
        { instanceId: newest, name: 'shared.example.org' },
      ]);
    });

    test('query: raw SQL returns rows, and a refused statement has a code', TIMEOUT, async () => {
      assert.deepEqual(await store.query('SELECT $1::int + 1 AS answer', [41]), [{ answer: 42 }]);
      await rejectsWith(store.query('SELEC nonsense'), ErrorCode.STORE_QUERY_FAILED, (message) => assert.match(message, /42601/));
      await rejectsWith(store.query("INSERT INTO certificates (id, instance_id, status) VALUES (gen_random_uuid(), gen_random_uuid(), 'lost')"), ErrorCode.STORE_QUERY_FAILED, (message) => assert.match(message, /23514/));
    });

    test('statements: a read or write is prepared once per connection and run by its name after that; DDL is not prepared', TIMEOUT, async (t) => {
      const defer = cleanups(t);
      const db = await openDatabase(await engine.freshUrl(defer));
      defer(() => db.close());
      await db.query('CREATE TABLE prepared_probe (id int PRIMARY KEY, label text)');
      const read = 'SELECT label FROM prepared_probe WHERE id = $1';
      const counted = await db.transaction(async (tx) => {
        await tx.query('INSERT INTO prepared_probe VALUES ($1, $2)', [1, 'one']);
        for (const _ of [1, 2, 3]) assert.deepEqual(await tx.query(read, [1]), [{ label: 'one' }]);
        // pg_prepared_statements lists this connection's own statements.
        return tx.query<{ statement: string }>('SELECT statement FROM pg_prepared_statements');
      });
      const statements = counted.map((row) => row.statement);
      assert.equal(statements.filter((text) => text === read).length, 1, `the read prepared once: ${statements.join(' | ')}`);
      assert.ok(statements.some((text) => text.startsWith('INSERT INTO prepared_probe')), 'the write prepared too');
      assert.ok(!statements.some((text) => /^\s*CREATE/i.test(text)), 'DDL not prepared');
    });

    test('statements: one whose table gained a column (a migration during a rolling upgrade) is prepared again and answers with it', TIMEOUT, async (t) => {
      const defer = cleanups(t);
      const db = await openDatabase(await engine.freshUrl(defer));
      defer(() => db.close());
      await db.query('CREATE TABLE prepared_probe (id int PRIMARY KEY)');
      await db.query('INSERT INTO prepared_probe VALUES (1)');
      const everyConnection = () => Promise.all(Array.from({ length: 16 }, () => db.query('SELECT * FROM prepared_probe')));
      // Run side by side, so that on PostgreSQL every pooled connection prepares it.
      for (const rows of await everyConnection()) assert.deepEqual(rows, [{ id: 1 }]);
      await db.query("ALTER TABLE prepared_probe ADD COLUMN label text NOT NULL DEFAULT 'new'");
      for (const rows of await everyConnection()) assert.deepEqual(rows, [{ id: 1, label: 'new' }]);
      // In a transaction the refused statement aborted it: that transaction fails, the next one runs.
      const inTransaction = () => db.transaction((tx) => tx.query('SELECT * FROM prepared_probe WHERE id = $1', [1]));
      assert.deepEqual(await inTransaction(), [{ id: 1, label: 'new' }]);
      await db.query('ALTER TABLE prepared_probe ADD COLUMN size int NOT NULL DEFAULT 2');
      const attempts = await Promise.allSettled([inTransaction(), inTransaction()]);
      const answered = attempts.filter((attempt) => attempt.status === 'fulfilled').map((attempt) => attempt.value);
      for (const rows of answered) assert.deepEqual(rows, [{ id: 1, label: 'new', size: 2 }]);
      assert.deepEqual(await inTransaction(), [{ id: 1, label: 'new', size: 2 }]);
    });

    test('migrations: opening a migrated database again changes nothing and keeps the data', TIMEOUT, async (t) => {
      const defer = cleanups(t);
      const url = await engine.freshUrl(defer);
      const first = await openStore(url);
      const instance = await newInstance(first);
      await first.close();
      await rejectsWith(first.query('SELECT 1'), ErrorCode.STORE_CLOSED);

      const second = await opened(url, defer);
      assert.deepEqual(await second.instances.get(instance.id), instance);
      const versions = await second.query<{ version: number; applied_at: Date }>('SELECT version, applied_at FROM schema_migrations ORDER BY version');
      assert.deepEqual(versions.map((row) => row.version), MIGRATIONS.map((migration) => migration.version));
      assert.ok(versions.every((row) => row.applied_at instanceof Date));
    });

    test('campaigns keep the clusters their instances are in, an instance without a cluster as null', TIMEOUT, async () => {
      const created = await store.campaigns.create({ selector: { all: true }, reason: 'r', requestedBy: 'a', rotateKey: true, matched: 3, clusters: ['eu-1', null, 'us-1'] });
      assert.deepEqual(created.clusters, ['eu-1', null, 'us-1']);
      assert.deepEqual((await store.campaigns.get(created.id))?.clusters, ['eu-1', null, 'us-1']);
    });

    test('migration 6: campaigns started before it get their clusters from a selector that names them, and none otherwise', TIMEOUT, async (t) => {
      const defer = cleanups(t);
      const db = await openDatabase(await engine.freshUrl(defer));
      defer(() => db.close());
      await migrate(db, MIGRATIONS.filter((migration) => migration.version < 6));
      const [eu, us, bare] = [randomUUID(), randomUUID(), randomUUID()];
      for (const [id, cluster] of [[eu, 'eu-1'], [us, 'us-1'], [bare, null]] as const) {
        await db.query("INSERT INTO instances (id, name, hostnames, cluster, key_algorithm) VALUES ($1, $2, ARRAY['x.example.com'], $3, 'ecdsa-p256')", [id, 'db', cluster]);
      }
      const selectors = { byCluster: { cluster: 'eu-1' }, byIds: { instanceIds: [eu, us] }, withBare: { instanceIds: [bare] }, everything: { all: true } };
      const campaignIds: Record<string, string> = {};
      for (const [name, selector] of Object.entries(selectors)) {
        campaignIds[name] = randomUUID();
        await db.query("INSERT INTO campaigns (id, selector, reason, requested_by, rotate_key, state, matched) VALUES ($1, $2::text::jsonb, 'r', 'a', true, 'running', 1)", [campaignIds[name], JSON.stringify(selector)]);
      }
      await migrate(db);
      const clusters = async (name: string) => (await db.query<{ clusters: (string | null)[] | null }>('SELECT clusters FROM campaigns WHERE id = $1', [campaignIds[name]]))[0]!.clusters;
      assert.deepEqual(await clusters('byCluster'), ['eu-1']);
      assert.deepEqual((await clusters('byIds'))?.toSorted(), ['eu-1', 'us-1']);
      assert.deepEqual(await clusters('withBare'), [null]);
      assert.equal(await clusters('everything'), null, 'unknown: reachable by unlimited callers only');
    });

    test('served: one judgement per instance, replaced by the next, read back as stored (problems as JSON), with no certificate when none was installed', TIMEOUT, async () => {
      const instance = await newInstance(store);
      const certificate = await store.certificates.create(instance.id);
      await install(store, certificate);
      const problem = { target: 'postgres://127.0.0.1:5432', sni: 'db.example.net', code: 'SERVED_STALE', message: 'serves another certificate\\n| not a row' };
      const checkedAt = new Date('2026-12-02T12:00:00.000Z');
      await store.served.record({ instanceId: instance.id, certificateId: certificate.id, status: 'stale', checkedAt, fingerprintSha256: 'ab'.repeat(32), anchor: null, problems: [problem] });
      assert.deepEqual((await store.served.of([instance.id])).get(instance.id), { instanceId: instance.id, certificateId: certificate.id, status: 'stale', checkedAt, fingerprintSha256: 'ab'.repeat(32), anchor: null, problems: [problem] });
      const later = new Date(checkedAt.getTime() + 60_000);
      await store.served.record({ instanceId: instance.id, certificateId: certificate.id, status: 'match', checkedAt: later, fingerprintSha256: 'cd'.repeat(32), anchor: 'Root', problems: [] });
      const replaced = (await store.served.of([instance.id, 'not-a-uuid', '00000000-0000-4000-8000-000000000000']));
      assert.deepEqual([...replaced.keys()], [instance.id]);
      assert.deepEqual([replaced.get(instance.id)?.status, replaced.get(instance.id)?.checkedAt, replaced.get(instance.id)?.anchor], ['match', later, 'Root']);
      const bare = await newInstance(store);
      await store.served.record({ instanceId: bare.id, certificateId: null, status: 'unreachable', checkedAt, fingerprintSha256: null, anchor: null, problems: [] });
      assert.equal((await store.served.of([bare.id])).get(bare.id)?.certificateId, null);
      // `unchecked` is the absence of a row, never a stored status.
      await assert.rejects(store.served.record({ instanceId: bare.id, certificateId: null, status: 'unchecked' as 'match', checkedAt, fingerprintSha256: null, anchor: null, problems: [] }));
      assert.equal((await store.served.of([bare.id])).get(bare.id)?.status, 'unreachable');
    });

    test('migrations: a failing migration leaves nothing behind', TIMEOUT, async (t) => {
      const defer = cleanups(t);
      const db = await openDatabase(await engine.freshUrl(defer));
      defer(() => db.close());
      const broken = [...MIGRATIONS, { version: 999, description: 'refers to a table that is not there', statements: ['CREATE TABLE half_done (id int)', 'ALTER TABLE no_such_table ADD COLUMN x int'] }];

      await rejectsWith(migrate(db, broken), ErrorCode.STORE_MIGRATION_FAILED, (message) => assert.match(message, /Migration 999 .*no_such_table/));
      assert.deepEqual(await db.query("SELECT tablename FROM pg_tables WHERE tablename IN ('half_done', 'instances', 'schema_migrations')"), []);
      assert.deepEqual(await migrate(db), MIGRATIONS.map((migration) => migration.version));
      assert.deepEqual(await migrate(db), []);
    });
  });
}

describe('store on pglite only', () => {
  test('pglite:PATH creates its directory and keeps data across close and reopen', TIMEOUT, async (t) => {
    const defer = cleanups(t);
    const parent = await fs.mkdtemp(path.join(os.tmpdir(), 'certplane-store-'));
    defer(() => fs.rm(parent, { recursive: true, force: true }));
    const directory = path.join(parent, 'nested', 'data');

    const first = await openStore(`pglite:${directory}`);
    assert.equal(first.engine, 'pglite');
    const instance = await newInstance(first, 'persisted');
    const certificate = await first.certificates.create(instance.id);
    await first.certificates.apply(certificate.id, 'csr_accepted', { report: { kept: ['yes'] } });
    await first.close();
    assert.ok((await fs.stat(directory)).isDirectory());

    const second = await opened(`pglite:${directory}`, defer);
    assert.deepEqual(await second.instances.get(instance.id), instance);
    assert.deepEqual((await second.certificates.latest(instance.id))?.report, { kept: ['yes'] });
  });

  test('a job\'s newest certificate, and an instance\'s newest installed one, are found through indexes of their own, not a scan of every certificate or of every installed one (PGlite never gathers statistics, so these are the plans a plane gets)', TIMEOUT, async (t) => {
    const defer = cleanups(t);
    const store = await opened('memory:', defer);
    const instance = await newInstance(store);
    const { job } = await store.jobs.enqueue({ kind: 'reissue', instanceId: instance.id, dueAt: new Date(), reason: 'index', requestedBy: 'test' });
    const certificate = await store.certificates.create(instance.id, { jobId: job.id });
    /** The scans PGlite counted so far: sequential ones of the certificates, and those through each of the two indexes. */
    const scans = async () => {
      await store.query('SELECT pg_stat_force_next_flush()');
      const [table] = await store.query<{ seq_scan: string }>("SELECT seq_scan::text FROM pg_stat_user_tables WHERE relname = 'certificates'");
      const indexes = await store.query<{ name: string; idx_scan: string }>(
        "SELECT indexrelname AS name, idx_scan::text FROM pg_stat_user_indexes WHERE indexrelname IN ('certificates_job', 'certificates_installed')",
      );
      const through = (name: string) => {
        const row = indexes.find((index) => index.name === name);
        assert.ok(row, `the index ${name} exists`);
        return Number(row.idx_scan);
      };
      return { seq: Number(table!.seq_scan), job: through('certificates_job'), installed: through('certificates_installed') };
    };
    const before = await scans();
    assert.equal((await store.certificates.latestOfJob(job.id))?.id, certificate.id);
    const afterJob = await scans();
    assert.equal(afterJob.seq, before.seq, 'no sequential scan of the certificates');
    assert.equal(afterJob.job, before.job + 1, 'read through certificates_job');
    await install(store, certificate);
    const installed = await scans();
    assert.equal((await store.certificates.latestInstalled(instance.id))?.id, certificate.id);
    const afterInstalled = await scans();
    assert.equal(afterInstalled.installed, installed.installed + 1, 'read through certificates_installed');
    assert.equal(afterInstalled.seq, installed.seq, 'no sequential scan of the certificates');
    // A job's start reads both in one statement, through the same two indexes.
    const { found, installed: newest } = await store.certificates.ofJob({ id: job.id, instanceId: instance.id, certificateId: null });
    assert.deepEqual([found?.id, newest?.id], [certificate.id, certificate.id]);
    const afterBoth = await scans();
    assert.deepEqual([afterBoth.job, afterBoth.installed, afterBoth.seq], [afterInstalled.job + 1, afterInstalled.installed + 1, afterInstalled.seq], 'one read through each index, no sequential scan');
    const pointed = await store.certificates.ofJob({ id: job.id, instanceId: instance.id, certificateId: certificate.id });
    assert.deepEqual([pointed.found?.id, pointed.installed?.id], [certificate.id, certificate.id]);
    const other = await newInstance(store);
    const elsewhere = await store.certificates.ofJob({ id: job.id, instanceId: other.id, certificateId: null });
    assert.equal(elsewhere.found?.id, certificate.id);
    assert.equal(elsewhere.installed, undefined, 'an instance with nothing installed');
    assert.deepEqual(await store.certificates.ofJob({ id: 'not-a-uuid', instanceId: other.id, certificateId: null }), {});
  });
});

describe('store on postgres only', () => {
  test('two processes starting at once on a fresh database both migrate it safely', TIMEOUT, async (t) => {
    const defer = cleanups(t);
    const url = await postgres.freshUrl(defer);

    const [first, second] = await Promise.all([openStore(url), openStore(url)]);
    defer(() => first.close());
    defer(() => second.close());
    assert.deepEqual((await first.query<{ version: number }>('SELECT version FROM schema_migrations ORDER BY version')).map((row) => row.version), MIGRATIONS.map((migration) => migration.version));
    const instance = await newInstance(first);
    assert.deepEqual(await second.instances.get(instance.id), instance);
  });

  test('an opened database opens its whole pool at once and keeps it: a burst of work is served by those connections, never by new ones', TIMEOUT, async (t) => {
    const defer = cleanups(t);
    const url = await postgres.freshUrl(defer);
    const db = await openDatabase(url);
    defer(() => db.close());
    assert.ok(DATABASE_POOL_SIZE.default > 1);
    assert.equal(await clientConnections(url, (count) => count >= DATABASE_POOL_SIZE.default), DATABASE_POOL_SIZE.default);
    // Used one after the other, they are not multiplied: the pool hands out the kept ones.
    for (let i = 0; i < 20; i += 1) assert.deepEqual(await db.query('SELECT 1 AS one'), [{ one: 1 }]);
    // Three times as many statements at once as there are connections: they wait their turn.
    const burst = await Promise.all(Array.from({ length: 3 * DATABASE_POOL_SIZE.default }, (_, i) => db.query<{ i: number }>('SELECT $1::int AS i, pg_sleep(0.05)', [i])));
    assert.deepEqual(burst.map(([row]) => row!.i), Array.from({ length: 3 * DATABASE_POOL_SIZE.default }, (_, i) => i));
    assert.equal(await clientConnections(url, () => true), DATABASE_POOL_SIZE.default);
  });

  test('the pool size is an option: 3 opens 3, and a size outside 1 to 200 is refused with CONFIG_INVALID before any connection', TIMEOUT, async (t) => {
    const defer = cleanups(t);
    const url = await postgres.freshUrl(defer);
    const db = await openDatabase(url, { poolSize: 3 });
    defer(() => db.close());
    await Promise.all(Array.from({ length: 9 }, () => db.query('SELECT pg_sleep(0.05)')));
    assert.equal(await clientConnections(url, (count) => count >= 3), 3);
    for (const poolSize of [0, 201, 2.5, Number.NaN]) {
      await rejectsWith(openDatabase(url, { poolSize }), ErrorCode.CONFIG_INVALID, (message) => assert.match(message, /CERTPLANE_DATABASE_POOL_SIZE/));
    }
    assert.equal(await clientConnections(url, () => true), 3);
  });

  test('a database closed right after it opened, its warm connections still opening, closes and leaves no connection behind', TIMEOUT, async (t) => {
    const defer = cleanups(t);
    const url = await postgres.freshUrl(defer);
    for (let i = 0; i < 3; i += 1) {
      const db = await openDatabase(url);
      await db.close();
      await rejectsWith(db.query('SELECT 1'), ErrorCode.STORE_CLOSED);
    }
    assert.equal(await clientConnections(url, (count) => count === 0), 0);
  });

  test('warm connections the server refuses do not stop the database from opening, nor its queries', TIMEOUT, async (t) => {
    const defer = cleanups(t);
    const url = await postgres.freshUrl(defer);
    const name = new URL(url).pathname.slice(1);
    const pool = await adminPool();
    await pool.query(`ALTER DATABASE ${name} CONNECTION LIMIT 2`);
    const db = await openDatabase(url);
    defer(() => db.close());
    // One at a time, within the limit: whatever the warm-up met is not these queries' business.
    for (let i = 0; i < 5; i += 1) assert.deepEqual(await db.query('SELECT $1::int AS n', [i]), [{ n: i }]);
    assert.deepEqual(await db.transaction((tx) => tx.query('SELECT 2 AS n')), [{ n: 2 }]);
    assert.ok((await clientConnections(url, () => true)) <= 2);
  });

  test('a wrong password is STORE_UNAVAILABLE and the message does not repeat it', TIMEOUT, async () => {
    await adminPool();
    const url = new URL(POSTGRES_URL);
    url.password = 'wrong-secret-pw';
    await rejectsWith(openStore(url.toString()), ErrorCode.STORE_UNAVAILABLE, (message) => {
      assert.ok(!message.includes('wrong-secret-pw'), message);
      assert.match(message, /\*\*\*@/);
      assert.match(message, /password authentication failed/);
    });
  });
});

describe('store URLs', () => {
  test('anything but postgres://, postgresql://, pglite:PATH and memory: is refused, password redacted', async () => {
    for (const url of ['', 'memory', 'pglite:', 'sqlite:/var/lib/certplane.db', 'mysql://root:hunter2@db.internal/certplane', 'postgres//root:hunter2@db.internal/certplane']) {
      await rejectsWith(openStore(url), ErrorCode.STORE_INVALID_URL, (message) => {
        assert.match(message, /postgres:\/\/user:password@host:port\/database .*pglite:\/path\/to\/data-directory, or memory:/);
        assert.ok(!message.includes('hunter2'), message);
      });
    }
  });

  test('a postgres URL that is not well-formed is refused, password redacted', async () => {
    for (const url of ['postgres://certplane:hunter2@[::1:5432/certplane', 'postgresql://certplane:hunter2@127.0.0.1:port/certplane']) {
      await rejectsWith(openStore(url), ErrorCode.STORE_INVALID_URL, (message) => {
        assert.match(message, /not a well-formed URL/);
        assert.ok(!message.includes('hunter2'), message);
      });
    }
  });

  test('a closed loopback port is STORE_UNAVAILABLE naming where, without the password', { timeout: 20_000 }, async () => {
    // Outside the ephemeral range: no connection of another test can be listening there.
    const [port] = await freeLoopbackPorts(1);

    for (const url of [`postgres://certplane:s3cret-pw@127.0.0.1:${port}/certplane`, `postgresql://certplane@127.0.0.1:${port}/certplane?password=query-secret`]) {
      await rejectsWith(openStore(url), ErrorCode.STORE_UNAVAILABLE, (message) => {
        assert.ok(!message.includes('s3cret-pw') && !message.includes('query-secret'), message);
        assert.ok(message.includes(`127.0.0.1:${port}`), message);
        assert.match(message, /ECONNREFUSED/);
        assert.match(message, /\*\*\*/);
      });
    }
  });
});
