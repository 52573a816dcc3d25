/**
 * The trust issue's end-to-end case on real processes: a plane on Pebble with an alternate
 * root, a fleet of agents whose installed chains end at Pebble's first root. `certplane
 * whatif` is asked what happens if the instances' clients lose that root; the root is then
 * removed from the profile file and the trust settings reloaded with `certplane admin
 * reload-trust`: the API, `certplane status` and the metrics (scraped from the plain-HTTP
 * metrics listener) show exactly the predicted instances broken,
 * each with a stored alternate chain (the one to Pebble's other root) available. A `rechain`
 * campaign then moves every one of them to that stored chain with no new order (counted at
 * Pebble, through the recording proxy in front of it), and each agent's installed fullchain
 * verifies with openssl against the new profile. Issuance then takes the chain that verifies
 * in every profile of an instance, refuses naming the profile when none does, and SIGHUP
 * reloads the trust settings like the admin command.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parseCertificateBundle, type Certificate } from '../../src/chain/index.js';
import { certplane } from '../support/cli.js';
import { startE2eFleet, type E2eFleet } from '../support/e2e-fleet.js';
import { opensslVerify } from '../support/openssl.js';
import type { SimulatedAgent } from '../support/fleet.js';
import { root } from '../support/hierarchies.js';
import { eventually } from '../support/processes.js';
import { ErrorCode } from '../../src/error-catalogue.js';
import { instanceSeries, singleValue } from '../support/metrics.js';

const INSTANCES = 3;

describe('clients lose a root: what-if, then reload, on Pebble with an alternate root', () => {
  let fleet: E2eFleet;
  let roots: Certificate[];
  let api: string;
  let metricsUrl: string;
  let adminSocket: string;
  /** Leaf fingerprints installed before the trust change, by instance: a rechain keeps them. */
  const leaves = new Map<string, string>();
  const agents: SimulatedAgent[] = [];
  const json = (method: string, path: string, body?: unknown) => fleet.json(method, path, body);

  before(async () => {
    // Every order reaches Pebble through the proxy (withoutAri), which counts the ones Pebble created.
    fleet = await startE2eFleet({
      prefix: 'certplane-trust-change-',
      alternateRoots: 1,
      withoutAri: true,
      preferredRoot: 'first',
      agentsTrust: 'every-root',
      metrics: true,
      trustProfiles: async (pebbleRoots) => {
        const bothRoots = pebbleRoots.map((r) => r.pem).join('');
        return { default: bothRoots, clients: bothRoots, nobody: (await root('A Root No Pebble Chain Reaches')).pem };
      },
      env: ({ dir, roots: pebbleRoots }) => {
        adminSocket = join(dir, 'admin.sock');
        return {
          CERTPLANE_PREFERRED_CHAINS: JSON.stringify(pebbleRoots.map((r) => r.subjectCN)),
          CERTPLANE_ADMIN_SOCKET: adminSocket,
          CERTPLANE_LOG_LEVEL: 'info',
        };
      },
    });
    roots = fleet.roots;
    api = fleet.api;
    metricsUrl = fleet.metricsUrl!;
    for (let i = 0; i < INSTANCES; i += 1) agents.push(await fleet.enroll({ name: `t${i}`, hostnames: [`t${i}.trust.test`], trustProfiles: ['default', 'clients'] }));
  });

  after(() => fleet?.stop());

  test('whatif predicts the broken set; after the root leaves the profile and reload-trust, the API and status show exactly that set, each with an alternate chain', async () => {
    await fleet.allConnected(120_000);
    for (const agent of agents) assert.equal((await json('POST', `/v1/instances/${agent.instanceId}/issue`)).status, 202);
    for (const agent of agents) {
      const view = await eventually(async () => {
        const { body } = await json('GET', `/v1/instances/${agent.instanceId}`);
        return body.certificate?.status === 'installed' && body.trust.status === 'ok' ? body : undefined;
      }, 180_000, 500, `instance ${agent.instanceId} to install and be judged`);
      assert.equal(view.certificate.anchor, roots[0]!.subjectCN, 'the installed chain ends at the first root');
      const scraped = await (await fetch(metricsUrl)).text();
      assert.equal(instanceSeries(scraped, 'certplane_instance_ready').get(agent.instanceId)?.[1], 1, scraped);
      assert.equal(instanceSeries(scraped, 'certplane_certificate_expiry_timestamp_seconds').get(agent.instanceId)?.[1], Date.parse(view.certificate.notAfter) / 1000);
      leaves.set(agent.instanceId, view.certificate.fingerprintSha256);
    }

    const asked = await certplane(['whatif', '--server', api, '--remove-root', roots[0]!.subjectCN, '--from-profile', 'clients', '--json']);
    assert.equal(asked.code, 0, asked.stderr);
    const prediction = JSON.parse(asked.stdout) as { counts: Record<string, number>; items: { instanceId: string; outcome: string; brokenProfiles: string[] }[] };
    const predicted = prediction.items.filter((r) => r.outcome !== 'verifies').map((r) => r.instanceId).sort();
    assert.deepEqual(predicted, agents.map((a) => a.instanceId).sort());
    assert.ok(prediction.items.every((r) => r.outcome === 'alternate-chain' && r.brokenProfiles.join() === 'clients'), JSON.stringify(prediction.items));
    const table = await certplane(['whatif', '--server', api, '--remove-root', roots[0]!.subjectCN, '--from-profile', 'clients']);
    assert.match(table.stdout, new RegExp(`${INSTANCES} need another stored chain \\(no new order\\)`));
    assert.equal((await json('GET', `/v1/instances/${agents[0]!.instanceId}`)).body.trust.status, 'ok', 'asking changed nothing');

    await fleet.write('trust-clients.pem', roots[1]!.pem);
    const reload = await certplane(['admin', '--socket', adminSocket, '--actor', 'on-call', 'reload-trust', '--reason', 'clients drop the first Pebble root']);
    assert.equal(reload.code, 0, reload.stderr);
    assert.match(reload.stdout, new RegExp(`broken: ${INSTANCES} \\(${INSTANCES} with a stored alternate chain\\)`));

    const listed = await json('GET', '/v1/instances?limit=500');
    const broken = listed.body.items.filter((i: any) => i.trust.status === 'broken');
    assert.deepEqual(broken.map((i: any) => i.id).sort(), predicted);
    for (const instance of broken) {
      assert.deepEqual([instance.trust.brokenProfiles, instance.trust.alternateAvailable, instance.atRisk], [['clients'], true, true]);
    }
    const status = await certplane(['status', '--server', api]);
    assert.equal(status.code, 0, status.stderr);
    assert.equal(status.stdout.split('\n').filter((line) => line.includes('TRUST BROKEN in clients (a stored alternate chain verifies)')).length, INSTANCES);
    const scraped = await (await fetch(metricsUrl)).text();
    assert.deepEqual([...instanceSeries(scraped, 'certplane_instance_chain_broken')].filter(([, [, value]]) => value === 1).map(([id]) => id).sort(), predicted);
    assert.ok(predicted.every((id) => instanceSeries(scraped, 'certplane_instance_ready').get(id)?.[1] === 0), scraped);
    assert.deepEqual([singleValue(scraped, 'certplane_trust_reload_broken_instances'), singleValue(scraped, 'certplane_trust_reload_alternate_available_instances')], [INSTANCES, INSTANCES]);
  });

  test('a rechain campaign moves every broken instance to the stored chain that verifies, with zero new orders at Pebble; openssl agrees', async () => {
    const proxy = fleet.proxy!;
    const ordersBefore = proxy.createdAt('/order-plz');
    assert.ok(ordersBefore >= INSTANCES, `the proxy saw the first orders (${ordersBefore})`);
    const dry = await certplane(['reissue', '--server', api, '--trust-broken', '--mode', 'rechain', '--reason', 'clients drop the first Pebble root', '--dry-run']);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, new RegExp(`^dry run: ${INSTANCES} instance\\(s\\) match \\(mode rechain\\): ${INSTANCES} rechain \\(a stored chain, no order\\), 0 reissue \\(a new order\\), 0 skipped`));

    const startedAt = Date.now();
    const started = await json('POST', '/v1/reissues', { selector: { trustBroken: true }, mode: 'rechain', reason: 'clients drop the first Pebble root' });
    assert.equal(started.status, 201, JSON.stringify(started.body));
    const done = await eventually(async () => {
      const { body } = await json('GET', `/v1/reissues/${started.body.id}`);
      return body.state === 'done' ? body : undefined;
    }, 60_000, 200, 'the rechain campaign to finish');
    const seconds = (Date.now() - startedAt) / 1000;
    assert.deepEqual(
      [done.counts.matched, done.counts.installed, done.counts.rechained, done.counts.ordered, done.counts.failed, done.counts.skipped],
      [INSTANCES, INSTANCES, INSTANCES, 0, 0, 0],
      JSON.stringify(done.counts),
    );
    assert.equal(proxy.createdAt('/order-plz'), ordersBefore, 'no new order at Pebble');
    console.log(`rechain: ${INSTANCES} instances re-chained in ${seconds.toFixed(2)} s, ${proxy.createdAt('/order-plz') - ordersBefore} new orders at Pebble`);

    const clientsPem = await readFile(fleet.trustProfilePath('clients'), 'utf8');
    for (const agent of agents.slice(0, INSTANCES)) {
      const { body } = await json('GET', `/v1/instances/${agent.instanceId}`);
      assert.deepEqual([body.certificate.status, body.certificate.anchor, body.trust.status], ['installed', roots[1]!.subjectCN, 'ok'], JSON.stringify(body));
      assert.equal(body.certificate.fingerprintSha256, leaves.get(agent.instanceId), 'the same certificate, on another chain');
      const installed = await readFile(join(agent.state.liveDir, 'fullchain.pem'), 'utf8');
      assert.equal(parseCertificateBundle(installed)[0]!.fingerprintSha256, leaves.get(agent.instanceId));
      const verdict = await opensslVerify(installed, clientsPem);
      assert.ok(verdict.ok, `openssl verify of ${agent.instanceId}'s installed chain against the new clients profile: ${verdict.output}`);
      const replaced = await opensslVerify(await readFile(join(agent.state.previousDir, 'fullchain.pem'), 'utf8'), clientsPem);
      assert.ok(!replaced.ok, 'the chain it replaced does not verify there (the check can fail)');
    }
    const audit = await certplane(['admin', '--socket', adminSocket, 'audit', '--limit', '20']);
    assert.equal(audit.stdout.split('\n').filter((line) => line.includes('certificate.rechain')).length, INSTANCES, audit.stdout);
  });

  test('issuance takes the chain that verifies in every profile of the instance, refuses naming the profile when none does, and SIGHUP reloads', async () => {
    const enrol = async (name: string, trustProfiles: string[]) => {
      const agent = await fleet.enroll({ name, hostnames: [`${name}.trust.test`], trustProfiles });
      agents.push(agent);
      await eventually(async () => ((await json('GET', `/v1/instances/${agent.instanceId}`)).body.agent.connected ? true : undefined), 120_000, 500, `${name} to connect`);
      assert.equal((await json('POST', `/v1/instances/${agent.instanceId}/issue`)).status, 202);
      return agent.instanceId;
    };
    // clients.pem holds only the second root now: the first preference's chain fails there.
    const picky = await enrol('picky', ['clients']);
    const stranded = await enrol('stranded', ['default', 'nobody']);
    const installed = await eventually(async () => {
      const { body } = await json('GET', `/v1/instances/${picky}`);
      return body.certificate?.status === 'installed' ? body : undefined;
    }, 180_000, 500, 'picky to install');
    assert.equal(installed.certificate.anchor, roots[1]!.subjectCN);
    const refused = await eventually(async () => {
      const { body } = await json('GET', `/v1/instances/${stranded}`);
      return body.certificate?.status === 'failed' ? body.certificate : undefined;
    }, 180_000, 500, 'stranded to fail');
    assert.deepEqual([refused.failure.reason, refused.failure.code, refused.failure.permanent], ['ChainUnsatisfied', ErrorCode.CHAIN_PROFILE_UNSATISFIED, true]);
    assert.match(refused.lastError, /failing: "nobody"/);

    await fleet.write('trust-clients.pem', roots.map((r) => r.pem).join(''));
    fleet.plane.child.kill('SIGHUP');
    await fleet.plane.waitForLine((line) => line.includes('SIGHUP: trust settings reloaded'), 60_000);
    for (const agent of agents.slice(0, INSTANCES)) assert.equal((await json('GET', `/v1/instances/${agent.instanceId}`)).body.trust.status, 'ok');
  });
});
