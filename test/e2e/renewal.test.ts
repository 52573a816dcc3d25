/**
 * The renewals issue's first Done-when: two management-plane processes on one real
 * PostgreSQL, agents connected to either, time moved forward past the renewal time the
 * CA asked for (ARI windows served beside Pebble's real directory), and every
 * certificate renewed and installed exactly once, with `replaces` sent in the new order.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ariCertId } from '../../src/acme/ari.js';
import { parseCertificateBundle, type Certificate } from '../../src/chain/index.js';
import { startPebble, type LocalPebble } from '../../src/devenv/pebble.js';
import { openStore } from '../../src/store/index.js';
import { startAcmeProxy, type AcmeProxy } from '../support/acme-proxy.js';
import { scratch } from '../support/cli.js';
import { startSimulatedAgent, type SimulatedAgent } from '../support/fleet.js';
import { freePort } from '../support/ports.js';
import { freshPostgresDatabase } from '../support/postgres.js';
import { eventually, logEvents, PLANE_START_MS, startCertplane, type RunningProcess } from '../support/processes.js';

const INSTANCES = 6;
const HOUR = 3_600_000;

describe('scheduled renewal with two management-plane processes on one PostgreSQL', async () => {
  const dir = await scratch('certplane-renewal-');
  let pebble: LocalPebble;
  let proxy: AcmeProxy;
  let preferred: Certificate;
  let database: { url: string; drop: () => Promise<void> };
  const planes: { process: RunningProcess; url: string }[] = [];
  const agents: SimulatedAgent[] = [];
  const clockFile = join(dir.dir, 'clock-offset');

  const json = async (url: string, method: string, path: string, body?: unknown) => {
    const response = await fetch(`${url}${path}`, { method, headers: body ? { 'content-type': 'application/json' } : {}, body: body ? JSON.stringify(body) : undefined });
    return { status: response.status, body: (await response.json()) as Record<string, any> };
  };

  before(async () => {
    pebble = await startPebble({ alternateRoots: 1 });
    proxy = await startAcmeProxy({ upstreamDirectoryUrl: pebble.directoryUrl, upstreamCaPem: pebble.acmeServerCaPem });
    preferred = parseCertificateBundle((await pebble.roots())[1]!)[0]!;
    await dir.write('root.pem', preferred.pem);
    await dir.write('acme-cas.pem', `${proxy.caPem.trim()}\n${pebble.acmeServerCaPem.trim()}\n`);
    await writeFile(clockFile, '0');
    database = await freshPostgresDatabase('certplane_renewal');
    for (let p = 0; p < 2; p += 1) {
      const port = await freePort();
      const process = startCertplane(['serve'], {
        CERTPLANE_INSECURE_HTTP: '1',
        CERTPLANE_LISTEN: `127.0.0.1:${port}`,
        CERTPLANE_DATABASE_URL: database.url,
        CERTPLANE_ACME_DIRECTORY: proxy.directoryUrl,
        CERTPLANE_ACME_CA_CERTS: join(dir.dir, 'acme-cas.pem'),
        CERTPLANE_PREFERRED_CHAINS: JSON.stringify([preferred.subjectCN]),
        CERTPLANE_TRUST_STORE: join(dir.dir, 'root.pem'),
        CERTPLANE_SECRETS: `file:${join(dir.dir, 'secrets')}`,
        CERTPLANE_DNS_PROVIDER: 'challtestsrv',
        CERTPLANE_CHALLTESTSRV_URL: pebble.challtestsrvUrl,
        CERTPLANE_CHALLENGE: 'dns-01',
        CERTPLANE_SCHEDULER_INTERVAL_MS: '200',
        CERTPLANE_CLOCK_OFFSET_FILE: clockFile,
        CERTPLANE_LOG_LEVEL: 'info',
      });
      await process.waitForLine((line) => line.includes('management plane listening'), PLANE_START_MS);
      planes.push({ process, url: `http://127.0.0.1:${port}` });
    }
    for (let i = 0; i < INSTANCES; i += 1) {
      const plane = planes[i % 2]!;
      const created = await json(plane.url, 'POST', '/v1/instances', { name: `r${i}`, hostnames: [`r${i}.renewal.test`], autoIssue: false });
      agents.push(await startSimulatedAgent({ server: plane.url, token: created.body.enrollmentToken, stateDir: join(dir.dir, `agent-${i}`), trustAnchors: [preferred] }));
    }
  });

  after(async () => {
    await Promise.all(agents.map((a) => a.client.stop()));
    for (const plane of planes) await plane.process.stop();
    await proxy?.close();
    await pebble?.stop();
    await database?.drop();
    await dir.remove();
  });

  test('every certificate past its renewal time is renewed once, by whichever process claims it, and delivered wherever its agent is', async () => {
    const installed = async (instanceId: string, notId?: string) =>
      eventually(async () => {
        const { body } = await json(planes[0]!.url, 'GET', `/v1/instances/${instanceId}`);
        if (body.certificate?.status === 'failed') throw new Error(body.certificate.lastError);
        return body.certificate?.status === 'installed' && body.certificate.id !== notId && body.renewal.renewAt ? body : undefined;
      }, 90_000, 200, `instance ${instanceId} installed`);

    for (const agent of agents) assert.equal((await json(planes[0]!.url, 'POST', `/v1/instances/${agent.instanceId}/issue`)).status, 202);
    const first = await Promise.all(agents.map((a) => installed(a.instanceId)));
    for (const view of first) assert.ok(Date.parse(view.renewal.renewAt) > Date.now() + 24 * HOUR, 'the renewal time is set on installation, far ahead');

    // The CA moves every window into the past (as Let's Encrypt did in May 2026); time moves 2 h on.
    const store = await openStore(database.url);
    try {
      for (const view of first) {
        const certificate = await store.certificates.get(view.certificate.id);
        proxy.setRenewalWindow(ariCertId(certificate!.fullchainPem!), { start: new Date(Date.now() - 2 * HOUR), end: new Date(Date.now() - HOUR), retryAfter: '60' });
      }
      await writeFile(clockFile, String(2 * HOUR));
      const renewed = await Promise.all(first.map((view, i) => installed(agents[i]!.instanceId, view.certificate.id)));

      // Let both schedulers run on for a while: nothing more may happen.
      await new Promise((resolve) => setTimeout(resolve, 3000));
      for (const [i, agent] of agents.entries()) {
        const rows = await store.query<{ status: string }>("SELECT status FROM certificates WHERE instance_id = $1 AND status IN ('installed', 'superseded') ORDER BY creation_order", [agent.instanceId]);
        assert.deepEqual(rows.map((r) => r.status), ['superseded', 'installed'], `instance ${i} has exactly the original, superseded, and one renewal`);
        const jobs = await store.jobs.history(agent.instanceId);
        assert.equal(jobs.filter((j) => j.kind === 'renewal' && j.state === 'done').length, 1);
        assert.equal((await agent.installs()).length, 2);
        assert.equal(renewed[i]!.certificate.fingerprintSha256 !== first[i]!.certificate.fingerprintSha256, true);
      }
      const orders = proxy.payloadsTo('/order-plz') as { replaces?: string; identifiers: { value: string }[] }[];
      const originalIds = await Promise.all(first.map(async (view) => ariCertId((await store.certificates.get(view.certificate.id))!.fullchainPem!)));
      const renewalOrders = orders.filter((order) => order.replaces);
      assert.deepEqual(new Set(renewalOrders.map((o) => o.replaces)), new Set(originalIds), `each renewal order says which certificate it replaces: ${JSON.stringify(orders)}`);
      const starters = new Set(
        planes.flatMap((p, index) => logEvents(p.process.lines).filter((e) => e.msg === 'job started').map(() => index)),
      );
      assert.ok(starters.size >= 1);
    } finally {
      await store.close();
    }
  });
});
