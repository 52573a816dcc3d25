/**
 * The renewals issue's campaign Done-when: 200 instances (simulated agents running the
 * real agent code) reissued against Pebble under a new-order limit low enough to bind;
 * the management plane is killed with SIGKILL in the middle and restarted; the campaign
 * resumes and every instance ends with exactly one newly installed certificate, with the
 * order rate never above the limit.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { openStore } from '../../src/store/index.js';
import { startE2eFleet, type E2eFleet } from '../support/e2e-fleet.js';
import { eventually, logEvents } from '../support/processes.js';

const INSTANCES = 200;
const CAPACITY = 10;
const REFILL_PER_SECOND = 8;
/**
 * The limiter's own decisions are held to the bucket exactly. What the CA saw is held to it
 * over each window widened by this much: "order created" is logged when the CA has answered,
 * after a nonce and the request itself, whose time varies with the machine's load, so orders
 * granted apart can be answered closer together (seen: 17 answered within 733 ms, 0.14 of an
 * order over the bare limit plus one). Over the whole run the CA-side count is held to the
 * bucket over the run widened by the longest delay from a grant to its answer, plus one order.
 */
const ARRIVAL_JITTER_MS = 500;
// Or the longest delay measured in the run from a grant to the CA's answer, when longer: seen
// at 44 answers within 3,682 ms, 0.54 of an order over the limit widened by 500 ms, with the
// grants themselves within their limit.


describe('reissue campaign over 200 instances, rate limited, surviving SIGKILL', () => {
  let fleet: E2eFleet;
  const json = (method: string, path: string, body?: unknown) => fleet.json(method, path, body);

  /** What an unfinished campaign waits for: its open jobs with their certificates, and what the plane warned about. */
  const stalled = async (campaignId: string): Promise<string> => {
    const store = await openStore(fleet.databaseUrl!);
    try {
      const rows = await store.query<Record<string, unknown>>(
        `SELECT j.instance_id, c.id AS certificate_id, j.state AS job, j.attempts, j.claimed_by, j.claimed_until, j.due_at, j.last_error, c.status, c.lease_owner, c.lease_until, c.updated_at, c.order_url IS NOT NULL AS ordered, now() AS at
         FROM jobs j LEFT JOIN certificates c ON c.instance_id = j.instance_id AND c.created_at >= j.created_at
         WHERE j.campaign_id = $1 AND j.state <> 'done' ORDER BY j.instance_id, c.created_at`,
        [campaignId],
      );
      const lines = fleet.planeLines();
      const warnings = lines.filter((line) => /"level":(40|50|60)/.test(line)).slice(-20);
      const first = rows[0]?.instance_id as string | undefined;
      const story = first ? lines.filter((line) => line.includes(first)).slice(-30) : [];
      return [`${rows.length} rows not done:`, ...rows.slice(0, 20).map((row) => JSON.stringify(row)), 'plane warnings:', ...warnings, `the first one's story:`, ...story, await fleet.pebbleVerdict()].join('\n');
    } finally {
      await store.close();
    }
  };

  before(async () => {
    fleet = await startE2eFleet({
      prefix: 'certplane-campaign-',
      alternateRoots: 1,
      postgres: true,
      env: () => ({
        CERTPLANE_RATE_LIMITS: JSON.stringify({
          newOrders: { capacity: CAPACITY, refillPerSecond: REFILL_PER_SECOND },
          certificatesPerDomain: { capacity: 100_000, refillPerSecond: 1000 },
        }),
        // debug: the limiter's grants are logged there.
        CERTPLANE_LOG_LEVEL: 'debug',
      }),
    });
    for (let i = 0; i < INSTANCES; i += 1) await fleet.enroll({ name: `c${i}`, hostnames: [`c${i}.campaign.test`], cluster: i % 2 ? 'odd' : 'even', autoIssue: false });
    await fleet.allConnected();
  });

  after(() => fleet?.stop());

  test('dry run predicts; the campaign finishes after a SIGKILL with one new certificate per instance and orders within the limit', async (t) => {
    const dry = await json('POST', '/v1/reissues', { selector: { all: true }, reason: 'rehearsal', dryRun: true });
    assert.equal(dry.status, 200);
    assert.equal(dry.body.matched, INSTANCES);
    assert.ok(dry.body.predictedSeconds >= Math.floor((INSTANCES - CAPACITY) / REFILL_PER_SECOND) - 1, `predicted ${dry.body.predictedSeconds} s`);

    const started = await json('POST', '/v1/reissues', { selector: { all: true }, reason: 'intermediate distrusted (test)' });
    assert.equal(started.status, 201, JSON.stringify(started.body));
    const campaignId = started.body.id as string;
    assert.equal(started.body.requestedBy, 'on-call test');

    await eventually(async () => ((await json('GET', `/v1/reissues/${campaignId}`)).body.counts.installed >= INSTANCES / 4 ? true : undefined), 120_000, 250, 'a quarter of the campaign');
    await fleet.restartPlane('SIGKILL');

    const finished = await eventually(async () => {
      const { body } = await json('GET', `/v1/reissues/${campaignId}`);
      return body.state === 'done' ? body : undefined;
    }, 240_000, 500, 'the campaign to finish').catch(async (error: Error) => {
      throw new Error(`${error.message}\n${await stalled(campaignId)}`);
    });
    assert.equal(finished.counts.installed, INSTANCES, JSON.stringify(finished.counts));
    assert.equal(finished.counts.failed, 0);

    const store = await openStore(fleet.databaseUrl!);
    try {
      const rows = await store.query<{ instance_id: string; n: string }>(
        `SELECT c.instance_id, count(*) AS n FROM certificates c JOIN campaigns k ON k.id = $1
         WHERE c.status = 'installed' AND c.created_at >= k.created_at GROUP BY c.instance_id`,
        [campaignId],
      );
      assert.equal(rows.length, INSTANCES);
      assert.ok(rows.every((r) => Number(r.n) === 1), 'exactly one new certificate per instance');
      const audit = await store.audit.list(10);
      assert.ok(audit.some((e) => e.action === 'reissue.start' && e.actor === 'on-call test' && e.target === campaignId));
    } finally {
      await store.close();
    }
    for (const agent of fleet.agents) {
      const installs = await agent.installs();
      assert.equal(new Set(installs.map((i) => i.fingerprintSha256)).size, installs.length, 'no certificate installed twice');
    }

    const events = logEvents(fleet.planeLines());
    /** At most `capacity + refill × (window + widenMs)` events in any window of up to 5 s. */
    const withinLimit = (what: string, times: number[], widenMs: number) => {
      for (let i = 0; i < times.length; i += 1) {
        for (let j = i; j < times.length && times[j]! - times[i]! <= 5000; j += 1) {
          const allowed = CAPACITY + REFILL_PER_SECOND * ((times[j]! - times[i]! + widenMs) / 1000) + 1e-6;
          assert.ok(j - i + 1 <= allowed, `${j - i + 1} ${what} within ${times[j]! - times[i]!} ms exceeds the limit (${allowed.toFixed(2)})`);
        }
      }
    };
    const grants = events.filter((e) => e.msg === 'order granted by the rate limiter').map((e) => Number(e.decidedAt)).sort((a, b) => a - b);
    assert.ok(grants.length >= INSTANCES, `saw ${grants.length} grants`);
    withinLimit('grants by the limiter', grants, 0);
    const created = events.filter((e) => e.msg === 'order created');
    const orders = created.map((e) => Number(e.time)).sort((a, b) => a - b);
    assert.ok(orders.length >= INSTANCES, `saw ${orders.length} orders`);
    // Every order the CA answered was granted first, for its names: the latest grant for them
    // before the answer. Answers then fall within [grant, grant + the longest such delay], so
    // any window of answers maps onto a window of grants that much longer.
    const key = (names: unknown) => [...(names as string[])].sort().join(',');
    const grantsFor = new Map<string, number[]>();
    for (const e of events.filter((e) => e.msg === 'order granted by the rate limiter')) grantsFor.set(key(e.names), [...(grantsFor.get(key(e.names)) ?? []), Number(e.decidedAt)]);
    let longestDelay = 0;
    for (const e of created) {
      const granted = (grantsFor.get(key(e.names)) ?? []).filter((at) => at <= Number(e.time));
      assert.ok(granted.length > 0, `the CA answered an order for ${key(e.names)} that the limiter never granted before it`);
      longestDelay = Math.max(longestDelay, Number(e.time) - Math.max(...granted));
    }
    t.diagnostic(`longest delay from a grant to the CA's answer: ${longestDelay} ms`);
    withinLimit('orders answered by the CA', orders, Math.max(ARRIVAL_JITTER_MS, longestDelay));
    // Over the whole run, by the same mapping: the answers' span is a span of grants at most
    // longestDelay longer (a CI run of 2026-12-04 saw 200 answers in 23,624 ms, 0.01 of an
    // order over the bare span's allowance, with every grant within the limit).
    const run = orders[orders.length - 1]! - orders[0]!;
    const allowed = CAPACITY + (REFILL_PER_SECOND * (run + longestDelay)) / 1000 + 1;
    assert.ok(orders.length <= allowed, `${orders.length} orders in ${run} ms (grants up to ${longestDelay} ms before their answers) exceed the limit over the whole run (${allowed.toFixed(2)})`);
  });
});
