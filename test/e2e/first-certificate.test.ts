/**
 * Issue 14's Done-when for enrollment: creating an instance and starting its agent is
 * enough for an installed certificate. Real parts: `certplane serve` as a process, Pebble
 * behind the order-counting proxy, the real agent code; nobody calls issue.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parseCertificateBundle, type Certificate } from '../../src/chain/index.js';
import { startPebble, type LocalPebble } from '../../src/devenv/pebble.js';
import { startAcmeProxy, type AcmeProxy } from '../support/acme-proxy.js';
import { scratch } from '../support/cli.js';
import { startSimulatedAgent, type SimulatedAgent } from '../support/fleet.js';
import { freePort } from '../support/ports.js';
import { eventually, localPlaneEnv, startCertplane, type RunningProcess } from '../support/processes.js';

describe('the first certificate on enrollment', async () => {
  const dir = await scratch('certplane-first-');
  let pebble: LocalPebble;
  let proxy: AcmeProxy;
  let root: Certificate;
  let plane: RunningProcess;
  let api: string;
  const agents: SimulatedAgent[] = [];

  const json = async (method: string, path: string, body?: unknown) => {
    const response = await fetch(`${api}${path}`, { method, headers: body ? { 'content-type': 'application/json' } : {}, body: body ? JSON.stringify(body) : undefined });
    return { status: response.status, body: (await response.json()) as Record<string, any> };
  };

  before(async () => {
    pebble = await startPebble();
    proxy = await startAcmeProxy({ upstreamDirectoryUrl: pebble.directoryUrl, upstreamCaPem: pebble.acmeServerCaPem, renewalInfo: false });
    root = parseCertificateBundle((await pebble.roots())[0]!)[0]!;
    await dir.write('root.pem', root.pem);
    await dir.write('proxy-ca.pem', proxy.caPem);
    const port = await freePort();
    api = `http://127.0.0.1:${port}`;
    plane = startCertplane(
      ['serve'],
      localPlaneEnv({
        port,
        dir: dir.dir,
        directoryUrl: proxy.directoryUrl,
        acmeCaPath: join(dir.dir, 'proxy-ca.pem'),
        preferredRootCN: root.subjectCN,
        trustStorePath: join(dir.dir, 'root.pem'),
        challtestsrvUrl: pebble.challtestsrvUrl,
      }),
    );
    await plane.waitForLine((line) => line.includes('management plane listening'), 120_000);
  });

  after(async () => {
    await Promise.all(agents.map((a) => a.client.stop()));
    await plane?.stop();
    await proxy?.close();
    await pebble?.stop();
    await dir.remove();
  });

  test('creating the instance and starting its agent installs a certificate for its names, with one order and no issue call', async () => {
    const created = await json('POST', '/v1/instances', { name: 'first', hostnames: ['First.Enroll.Test.', 'www.first.enroll.test'] });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const agent = await startSimulatedAgent({ server: api, token: created.body.enrollmentToken, stateDir: join(dir.dir, 'agent'), trustAnchors: [root] });
    agents.push(agent);

    const view = await eventually(
      async () => {
        const current = (await json('GET', `/v1/instances/${agent.instanceId}`)).body;
        if (current.certificate?.status === 'failed') assert.fail(`the first certificate failed: ${current.certificate.lastError}`);
        return current.certificate?.status === 'installed' ? current : undefined;
      },
      120_000,
      250,
      'the first certificate to be installed',
    );
    const installs = await agent.installs();
    assert.deepEqual(installs.map((i) => i.fingerprintSha256), [view.certificate.fingerprintSha256], 'installed once, on the instance');
    const certificate = (await json('GET', `/v1/certificates/${view.certificate.id}`)).body;
    const leaf = parseCertificateBundle(certificate.fullchainPem)[0]!;
    assert.deepEqual([...leaf.dnsNames].sort(), ['first.enroll.test', 'www.first.enroll.test']);
    assert.equal(proxy.createdAt('/order-plz'), 1, 'one order at the CA');
  });
});
