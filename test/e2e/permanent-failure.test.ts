/**
 * The incident rehearsal that used to spend the CA's budget: the preferred root is
 * distrusted but still preferred, so no chain the CA offers can be accepted. A campaign
 * over the fleet must place at most one order per instance (counted at the CA, through a
 * recording proxy in front of Pebble), end with every instance failed for that reason,
 * and `certplane reissue --follow` must exit 1 with the reason instead of waiting.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parseCertificateBundle, type Certificate } from '../../src/chain/index.js';
import { startPebble, type LocalPebble } from '../../src/devenv/pebble.js';
import { startAcmeProxy, type AcmeProxy } from '../support/acme-proxy.js';
import { certplane, scratch } from '../support/cli.js';
import { startSimulatedAgent, type SimulatedAgent } from '../support/fleet.js';
import { freePort } from '../support/ports.js';
import { eventually, localPlaneEnv, startCertplane, type RunningProcess } from '../support/processes.js';
import { ErrorCode } from '../../src/error-catalogue.js';

const INSTANCES = 3;

describe('a campaign whose chains cannot satisfy the preferences', async () => {
  const dir = await scratch('certplane-permanent-');
  let pebble: LocalPebble;
  let proxy: AcmeProxy;
  let preferred: Certificate;
  let plane: RunningProcess;
  let api: string;
  const agents: SimulatedAgent[] = [];

  const json = async (method: string, path: string, body?: unknown) => {
    const response = await fetch(`${api}${path}`, { method, headers: { ...(body ? { 'content-type': 'application/json' } : {}), 'x-certplane-actor': 'on-call test' }, body: body ? JSON.stringify(body) : undefined });
    return { status: response.status, body: (await response.json()) as Record<string, any> };
  };

  before(async () => {
    pebble = await startPebble({ alternateRoots: 1 });
    proxy = await startAcmeProxy({ upstreamDirectoryUrl: pebble.directoryUrl, upstreamCaPem: pebble.acmeServerCaPem, renewalInfo: false });
    preferred = parseCertificateBundle((await pebble.roots())[1]!)[0]!;
    await dir.write('root.pem', preferred.pem);
    await dir.write('proxy-ca.pem', proxy.caPem);
    const port = await freePort();
    api = `http://127.0.0.1:${port}`;
    plane = startCertplane(['serve'], {
      ...localPlaneEnv({
        port,
        dir: dir.dir,
        directoryUrl: proxy.directoryUrl,
        acmeCaPath: join(dir.dir, 'proxy-ca.pem'),
        preferredRootCN: preferred.subjectCN,
        trustStorePath: join(dir.dir, 'root.pem'),
        challtestsrvUrl: pebble.challtestsrvUrl,
      }),
      // The 2021 shape: the root every offered chain could lead to is distrusted, yet still preferred.
      CERTPLANE_DISTRUSTED_SPKI: preferred.spkiSha256,
    });
    await plane.waitForLine((line) => line.includes('management plane listening'), 60_000);
    for (let i = 0; i < INSTANCES; i += 1) {
      const created = await json('POST', '/v1/instances', { name: `p${i}`, hostnames: [`p${i}.permanent.test`], autoIssue: false });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      agents.push(await startSimulatedAgent({ server: api, token: created.body.enrollmentToken, stateDir: join(dir.dir, `agent-${i}`), trustAnchors: [preferred] }));
    }
    await eventually(async () => {
      const connected = await Promise.all(agents.map(async (a) => (await json('GET', `/v1/instances/${a.instanceId}`)).body.agent.connected));
      return connected.every(Boolean) ? true : undefined;
    }, 60_000, 250, 'every agent to connect');
  });

  after(async () => {
    await Promise.all(agents.map((a) => a.client.stop()));
    await plane?.stop();
    await proxy?.close();
    await pebble?.stop();
    await dir.remove();
  });

  test('one order per instance at most, every instance failed as ChainUnsatisfied, and --follow exits 1 with the reason', async () => {
    const followed = await certplane(['reissue', '--server', api, '--all', '--reason', 'rehearsal: preferred root distrusted', '--follow', '--poll-ms', '200', '--actor', 'on-call test'], {}, 120_000);
    assert.equal(followed.code, 1, `${followed.stdout}\n${followed.stderr}`);
    assert.match(followed.stdout, new RegExp(`done: 0 installed, ${INSTANCES} failed \\(ChainUnsatisfied ${INSTANCES}\\)`), followed.stdout);

    // Orders Pebble created (201), not newOrder POSTs: Pebble rejects some nonces on purpose and
    // acme-client sends those again, which creates nothing.
    const orders = proxy.createdAt('/order-plz');
    console.log(`new orders at the CA: ${orders} for ${INSTANCES} instances (${proxy.payloadsTo('/order-plz').length} newOrder requests)`);
    assert.ok(orders <= INSTANCES, `${orders} orders for ${INSTANCES} instances`);

    const campaignId = /campaign (\S+) started/.exec(followed.stdout)?.[1];
    const campaign = (await json('GET', `/v1/reissues/${campaignId}`)).body;
    assert.equal(campaign.state, 'done');
    assert.equal(campaign.counts.failed, INSTANCES);
    assert.deepEqual(campaign.counts.failureReasons, { ChainUnsatisfied: INSTANCES });
    for (const agent of agents) {
      const { certificate } = (await json('GET', `/v1/instances/${agent.instanceId}`)).body;
      assert.equal(certificate.status, 'failed');
      assert.deepEqual([certificate.failure.reason, certificate.failure.permanent, certificate.condition.status], ['ChainUnsatisfied', true, 'False']);
      // The only root of the instance's `default` trust profile is distrusted, so no offered chain
      // verifies in that profile: the refusal names the profile (chain/select.ts), before preferences.
      assert.equal(certificate.failure.code, ErrorCode.CHAIN_PROFILE_UNSATISFIED);
    }

    // Nothing is retried later: the scheduler leaves failed-for-good jobs alone.
    await new Promise((resolve) => setTimeout(resolve, 1500));
    assert.equal(proxy.createdAt('/order-plz'), orders);
  });
});
