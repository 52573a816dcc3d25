/**
 * The lifecycle issue's chaos Done-when, with real parts: two `certplane serve` processes
 * on one real PostgreSQL behind a layer-4 balancer, 100 instances whose agents (the real
 * agent code, in this process, over real WebSockets through the balancer) are cut off at
 * random (for a bounded number of rounds) and reconnect to whichever process the balancer
 * picks, a reissue campaign over all of them, and one process SIGKILLed while it holds
 * orders under way, then restarted.
 * Every instance must end with exactly one installed certificate, and the orders Pebble
 * created (counted at Pebble, through the recording proxy) may exceed the certificates by
 * at most the orders that were in flight in the killed process: the others resume the
 * stored ACME orders instead of placing new ones.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parseCertificateBundle, type Certificate } from '../../src/chain/index.js';
import { startPebble, type LocalPebble } from '../../src/devenv/pebble.js';
import { pebbleVerdict } from '../support/pebble-deadlock.js';
import { openStore, type Store } from '../../src/store/index.js';
import { startAcmeProxy, type AcmeProxy } from '../support/acme-proxy.js';
import { startBalancer, type Balancer } from '../support/balancer.js';
import { scratch } from '../support/cli.js';
import { startSimulatedAgent, type SimulatedAgent } from '../support/fleet.js';
import { freeLoopbackPorts } from '../../src/devenv/ports.js';
import { freshPostgresDatabase } from '../support/postgres.js';
import { eventually, logEvents, localPlaneEnv, startCertplane, type RunningProcess } from '../support/processes.js';

const INSTANCES = 100;
/** Short, so a dead process's orders are taken over within seconds (production default: 60 s). */
const LEASE_MS = 10_000;
/** The SIGKILL comes once the victim holds at least this many orders that exist at the CA. */
const ORDERS_UNDER_WAY_AT_KILL = 3;
/** Every CHAOS_EVERY_MS, this share of the agents' connections is cut, CHAOS_ROUNDS times: bounded, it stops by itself. */
const CHAOS_EVERY_MS = 500;
const CHAOS_SHARE = 0.02;
const CHAOS_ROUNDS = 60;
const START_TIMEOUT_MS = 120_000;

describe('chaos: two planes, 100 agents reconnecting at random, one plane SIGKILLed mid-order', { timeout: 900_000 }, async () => {
  const dir = await scratch('certplane-chaos-');
  let pebble: LocalPebble;
  let proxy: AcmeProxy;
  let preferred: Certificate;
  let database: { url: string; drop: () => Promise<void> };
  let store: Store;
  let balancer: Balancer;
  const ports: number[] = [];
  const planes: RunningProcess[] = [];
  /** Every plane process started, killed or not, for its logs. */
  const everyPlane: RunningProcess[] = [];
  const agents: SimulatedAgent[] = [];
  const envFor = new Map<number, Record<string, string>>();
  let chaos: NodeJS.Timeout | undefined;

  /** The API of the plane that is never killed, directly (the balancer's cuts are for agents). */
  const json = async (method: string, path: string, body?: unknown) => {
    const response = await fetch(`http://127.0.0.1:${ports[1]}${path}`, {
      method,
      headers: { ...(body ? { 'content-type': 'application/json' } : {}), 'x-certplane-actor': 'chaos test' },
      body: body ? JSON.stringify(body) : undefined,
    });
    return { status: response.status, body: (await response.json()) as Record<string, any> };
  };
  const startPlane = async (index: number) => {
    const plane = startCertplane(['serve'], envFor.get(index)!);
    planes[index] = plane;
    everyPlane.push(plane);
    await plane.waitForLine((line) => line.includes('management plane listening'), START_TIMEOUT_MS);
  };
  const count = async (sql: string, params: unknown[] = []) => Number((await store.query<{ n: string }>(sql, params))[0]?.n ?? 0);

  before(async () => {
    pebble = await startPebble({ alternateRoots: 1, logFile: dir.path('pebble.log') });
    proxy = await startAcmeProxy({ upstreamDirectoryUrl: pebble.directoryUrl, upstreamCaPem: pebble.acmeServerCaPem, renewalInfo: false });
    preferred = parseCertificateBundle((await pebble.roots())[1]!)[0]!;
    await dir.write('root.pem', preferred.pem);
    await dir.write('proxy-ca.pem', proxy.caPem);
    database = await freshPostgresDatabase('certplane_chaos');
    store = await openStore(database.url);
    ports.push(...(await freeLoopbackPorts(2)));
    balancer = await startBalancer(ports);
    for (const [index, port] of ports.entries()) {
      envFor.set(index, {
        ...localPlaneEnv({
          port,
          dir: dir.dir,
          databaseUrl: database.url,
          directoryUrl: proxy.directoryUrl,
          acmeCaPath: join(dir.dir, 'proxy-ca.pem'),
          preferredRootCN: preferred.subjectCN,
          trustStorePath: join(dir.dir, 'root.pem'),
          challtestsrvUrl: pebble.challtestsrvUrl,
        }),
        // Agents are told to come back through the balancer, never to one process directly.
        CERTPLANE_PUBLIC_URL: balancer.url,
        CERTPLANE_LEASE_MS: String(LEASE_MS),
        CERTPLANE_RATE_LIMITS: JSON.stringify({ certificatesPerDomain: { capacity: 100_000, refillPerSecond: 1000 } }),
        CERTPLANE_LOG_LEVEL: 'info',
      });
    }
    // One after the other: the first creates the shared secrets (agent CA, ACME account key) the second reads.
    await startPlane(0);
    await startPlane(1);
    for (let i = 0; i < INSTANCES; i += 1) {
      const created = await json('POST', '/v1/instances', { name: `x${i}`, hostnames: [`x${i}.chaos.test`], autoIssue: false });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      agents.push(await startSimulatedAgent({ server: balancer.url, token: created.body.enrollmentToken, stateDir: join(dir.dir, `agent-${i}`), trustAnchors: [preferred] }));
    }
    await eventually(async () => ((await count('SELECT count(*) AS n FROM instances WHERE agent_connected_at IS NOT NULL')) === INSTANCES ? true : undefined), 60_000, 250, 'every agent to connect');
  });

  after(async () => {
    clearInterval(chaos);
    await Promise.all(agents.map((a) => a.client.stop()));
    await Promise.all(planes.map((plane) => plane?.stop()));
    await balancer?.close();
    await store?.close();
    await proxy?.close();
    await pebble?.stop();
    await database?.drop();
    await dir.remove();
  });

  test('every instance ends with exactly one installed certificate, and Pebble created no order beyond those in flight in the killed plane', async () => {
    const started = Date.now();
    let cuts = 0;
    let rounds = 0;
    chaos = setInterval(() => {
      cuts += balancer.cut(CHAOS_SHARE);
      rounds += 1;
      if (rounds >= CHAOS_ROUNDS) clearInterval(chaos);
    }, CHAOS_EVERY_MS);
    const campaign = await json('POST', '/v1/reissues', { selector: { all: true }, reason: 'chaos rehearsal' });
    assert.equal(campaign.status, 201, JSON.stringify(campaign.body));

    const victim = planes[0]!;
    const victimOwner = `%:${victim.child.pid}:%`;
    await eventually(
      async () => ((await count("SELECT count(*) AS n FROM certificates WHERE lease_owner LIKE $1 AND status = 'ordering' AND order_url IS NOT NULL", [victimOwner])) >= ORDERS_UNDER_WAY_AT_KILL ? true : undefined),
      120_000,
      20,
      `plane 0 to hold ${ORDERS_UNDER_WAY_AT_KILL} orders under way`,
    );
    await victim.stop('SIGKILL');
    // The dead process writes nothing more: what it held now is what it held when it died.
    const inFlight = await count("SELECT count(*) AS n FROM certificates WHERE lease_owner LIKE $1 AND status IN ('csr_accepted', 'ordering')", [victimOwner]);
    const withStoredOrder = await count("SELECT count(*) AS n FROM certificates WHERE lease_owner LIKE $1 AND status = 'ordering' AND order_url IS NOT NULL", [victimOwner]);
    await startPlane(0);

    await eventually(async () => ((await count("SELECT count(DISTINCT instance_id) AS n FROM certificates WHERE status = 'installed'")) === INSTANCES ? true : undefined), 420_000, 250, 'every instance to install a certificate').catch(async (error: Error) => {
      const states = await store.query('SELECT status, lease_owner IS NOT NULL AS leased, order_url IS NOT NULL AS ordered, count(*) AS n FROM certificates GROUP BY 1, 2, 3');
      const failures = [...new Set(logEvents(everyPlane.flatMap((plane) => plane.lines)).filter((event) => event.msg === 'issuance failed').map((event) => String(event.err)))];
      throw new Error(`${error.message}; certificates: ${JSON.stringify(states)}; failures: ${JSON.stringify(failures.slice(0, 5))}; ${await pebbleVerdict(pebble, dir.path('pebble.log'))}`);
    });
    const finished = await eventually(async () => {
      const { body } = await json('GET', `/v1/reissues/${campaign.body.id}`);
      return body.state === 'done' ? body : undefined;
    }, 30_000, 250, 'the campaign to finish');
    assert.equal(finished.counts.installed, INSTANCES, JSON.stringify(finished.counts));
    assert.equal(finished.counts.failed, 0, JSON.stringify(finished.counts));

    const perInstance = await store.query<{ installed: string; issued: string; history: unknown }>(
      `SELECT count(*) FILTER (WHERE c.status = 'installed') AS installed, count(c.fingerprint_sha256) AS issued,
         json_agg(json_build_object('status', c.status, 'failure', c.failure, 'lastError', left(c.last_error, 200), 'job', c.job_id, 'created', c.created_at) ORDER BY c.created_at) AS history
       FROM instances i LEFT JOIN certificates c ON c.instance_id = i.id GROUP BY i.id`,
    );
    assert.equal(perInstance.length, INSTANCES);
    const odd = perInstance.filter((row) => Number(row.installed) !== 1 || Number(row.issued) !== 1);
    assert.deepEqual(odd, [], 'each instance has exactly one certificate, installed (the history of any other says how it came about)');
    for (const agent of agents) assert.equal((await agent.installs()).length, 1, `instance ${agent.instanceId} installed exactly once`);

    const certificates = await count('SELECT count(*) AS n FROM certificates WHERE fingerprint_sha256 IS NOT NULL');
    const orders = proxy.createdAt('/order-plz');
    const logs = logEvents(everyPlane.flatMap((plane) => plane.lines));
    const resumed = logs.filter((event) => event.msg === 'resuming the stored ACME order').length;
    const replaced = logs.filter((event) => event.msg === 'the stored order cannot be resumed; placing a new order').length;
    console.log(
      `chaos: Pebble created ${orders} orders for ${certificates} certificates; ${inFlight} in flight in the killed plane (${withStoredOrder} with a stored order), ` +
        `${resumed} resumed, ${replaced} replaced; ${cuts} connections cut, routed ${JSON.stringify(Object.fromEntries(balancer.routed))}; ${((Date.now() - started) / 1000).toFixed(1)} s`,
    );
    assert.equal(certificates, INSTANCES);
    assert.ok(inFlight >= ORDERS_UNDER_WAY_AT_KILL, 'the kill came while orders were under way');
    assert.ok(resumed >= 1 && resumed + replaced >= withStoredOrder, `every order stored by the killed plane was taken over (${resumed} resumed, ${replaced} replaced, ${withStoredOrder} stored)`);
    assert.ok(orders >= certificates, `${orders} orders for ${certificates} certificates`);
    assert.ok(orders <= certificates + inFlight, `${orders} orders exceed ${certificates} certificates plus ${inFlight} orders in flight in the killed plane`);
    assert.ok(cuts > 0 && [...balancer.routed.values()].every((n) => n > INSTANCES / 10), 'agents were cut off and spread over both processes');
  });
});
