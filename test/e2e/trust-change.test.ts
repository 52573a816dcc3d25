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
import { startPebble, type LocalPebble } from '../../src/devenv/pebble.js';
import { startAcmeProxy, type AcmeProxy } from '../support/acme-proxy.js';
import { certplane, scratch } from '../support/cli.js';
import { opensslVerify } from '../support/openssl.js';
import { startSimulatedAgent, type SimulatedAgent } from '../support/fleet.js';
import { root } from '../support/hierarchies.js';
import { freePort } from '../support/ports.js';
import { eventually, localPlaneEnv, startCertplane, type RunningProcess } from '../support/processes.js';
import { ErrorCode } from '../../src/error-catalogue.js';
import { instanceSeries, singleValue } from '../support/metrics.js';

const INSTANCES = 3;

describe('clients lose a root: what-if, then reload, on Pebble with an alternate root', async () => {
  const dir = await scratch('certplane-trust-change-');
  let pebble: LocalPebble;
  let proxy: AcmeProxy;
  let roots: Certificate[];
  /** Leaf fingerprints installed before the trust change, by instance: a rechain keeps them. */
  const leaves = new Map<string, string>();
  let plane: RunningProcess;
  let api: string;
  let metricsUrl: string;
  let env: Record<string, string>;
  const agents: SimulatedAgent[] = [];

  const json = async (method: string, path: string, body?: unknown) => {
    const response = await fetch(`${api}${path}`, { method, headers: body ? { 'content-type': 'application/json' } : {}, body: body ? JSON.stringify(body) : undefined });
    return { status: response.status, body: (await response.json()) as Record<string, any> };
  };

  before(async () => {
    pebble = await startPebble({ alternateRoots: 1 });
    // Every order reaches Pebble through the proxy, which counts the ones Pebble created.
    proxy = await startAcmeProxy({ upstreamDirectoryUrl: pebble.directoryUrl, upstreamCaPem: pebble.acmeServerCaPem, renewalInfo: false });
    await dir.write('proxy-ca.pem', proxy.caPem);
    roots = (await pebble.roots()).map((text) => parseCertificateBundle(text)[0]!);
    const bothRoots = roots.map((r) => r.pem).join('');
    await dir.write('default.pem', bothRoots);
    await dir.write('clients.pem', bothRoots);
    await dir.write('nobody.pem', (await root('A Root No Pebble Chain Reaches')).pem);
    const port = await freePort();
    api = `http://127.0.0.1:${port}`;
    const metricsPort = await freePort();
    metricsUrl = `http://127.0.0.1:${metricsPort}/metrics`;
    env = {
      ...localPlaneEnv({
        port,
        dir: dir.dir,
        directoryUrl: proxy.directoryUrl,
        acmeCaPath: join(dir.dir, 'proxy-ca.pem'),
        preferredRootCN: roots[0]!.subjectCN,
        trustStorePath: join(dir.dir, 'default.pem'),
        challtestsrvUrl: pebble.challtestsrvUrl,
      }),
      CERTPLANE_PREFERRED_CHAINS: JSON.stringify([roots[0]!.subjectCN, roots[1]!.subjectCN]),
      CERTPLANE_TRUST_PROFILES: JSON.stringify({ clients: join(dir.dir, 'clients.pem'), nobody: join(dir.dir, 'nobody.pem') }),
      CERTPLANE_ADMIN_SOCKET: join(dir.dir, 'admin.sock'),
      CERTPLANE_LOG_LEVEL: 'info',
      CERTPLANE_METRICS_LISTEN: `127.0.0.1:${metricsPort}`,
    };
    plane = startCertplane(['serve'], env);
    await plane.waitForLine((line) => line.includes('management plane listening'), 240_000);
    for (let i = 0; i < INSTANCES; i += 1) {
      const created = await json('POST', '/v1/instances', { name: `t${i}`, hostnames: [`t${i}.trust.test`], trustProfiles: ['default', 'clients'] });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      agents.push(await startSimulatedAgent({ server: api, token: created.body.enrollmentToken, stateDir: join(dir.dir, `agent-${i}`), trustAnchors: roots }));
    }
  });

  after(async () => {
    await Promise.all(agents.map((a) => a.client.stop()));
    await plane?.stop();
    await proxy?.close();
    await pebble?.stop();
    await dir.remove();
  });

  test('whatif predicts the broken set; after the root leaves the profile and reload-trust, the API and status show exactly that set, each with an alternate chain', async () => {
    await eventually(async () => ((await Promise.all(agents.map(async (a) => (await json('GET', `/v1/instances/${a.instanceId}`)).body.agent.connected))).every(Boolean) ? true : undefined), 120_000, 500, 'every agent to connect');
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

    await dir.write('clients.pem', roots[1]!.pem);
    const reload = await certplane(['admin', '--socket', env.CERTPLANE_ADMIN_SOCKET!, '--actor', 'on-call', 'reload-trust', '--reason', 'clients drop the first Pebble root']);
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
    const fleet = agents.slice(0, INSTANCES);
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

    const clientsPem = await readFile(join(dir.dir, 'clients.pem'), 'utf8');
    for (const agent of fleet) {
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
    const audit = await certplane(['admin', '--socket', env.CERTPLANE_ADMIN_SOCKET!, 'audit', '--limit', '20']);
    assert.equal(audit.stdout.split('\n').filter((line) => line.includes('certificate.rechain')).length, INSTANCES, audit.stdout);
  });

  test('issuance takes the chain that verifies in every profile of the instance, refuses naming the profile when none does, and SIGHUP reloads', async () => {
    const enrol = async (name: string, trustProfiles: string[]) => {
      const created = await json('POST', '/v1/instances', { name, hostnames: [`${name}.trust.test`], trustProfiles });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      const agent = await startSimulatedAgent({ server: api, token: created.body.enrollmentToken, stateDir: join(dir.dir, `agent-${name}`), trustAnchors: roots });
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

    await dir.write('clients.pem', roots.map((r) => r.pem).join(''));
    plane.child.kill('SIGHUP');
    await plane.waitForLine((line) => line.includes('SIGHUP: trust settings reloaded'), 60_000);
    for (const agent of agents.slice(0, INSTANCES)) assert.equal((await json('GET', `/v1/instances/${agent.instanceId}`)).body.trust.status, 'ok');
  });
});
