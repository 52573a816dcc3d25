/**
 * Wake-ups across processes on a real PostgreSQL server: two `certplane serve` processes
 * share one database, an agent holds its channel on process B, and work for it is created
 * elsewhere (through process A's API, or by another process holding the order's lease).
 * Both schedulers tick every 600 s, the longest the configuration allows, and the tests
 * end long before a second tick: only B's first tick, at its start and before the work
 * existed, could have found it by polling. B's wake-up counters say which path woke the
 * agent: the database notification, never the fallback pass. Work created by B itself for
 * its own agent is asked for at once and announced to nobody.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parseCertificateBundle } from '../../src/chain/index.js';
import { createCsr, generateKeyPair } from '../../src/pki/factory.js';
import { openStore } from '../../src/store/index.js';
import type { Store } from '../../src/store/types.js';
import { intermediate, leafForCsr, root } from '../support/hierarchies.js';
import { scratch } from '../support/cli.js';
import { openAgentChannel, type AgentChannel } from '../support/plane.js';
import { freshPostgresDatabase } from '../support/postgres.js';
import { eventually, startCertplane, type RunningProcess } from '../support/processes.js';
import { freePort } from '../support/ports.js';

describe('wake-ups between two plane processes on PostgreSQL', async () => {
  const dir = await scratch('certplane-wakeups-');
  let database: { url: string; drop: () => Promise<void> };
  const planes: RunningProcess[] = [];
  let a: string;
  let b: string;
  let store: Store;
  const channels: AgentChannel[] = [];

  const startPlane = async () => {
    const port = await freePort();
    const plane = startCertplane(['serve'], {
      CERTPLANE_INSECURE_HTTP: '1',
      CERTPLANE_LISTEN: `127.0.0.1:${port}`,
      CERTPLANE_DATABASE_URL: database.url,
      CERTPLANE_SECRETS: `file:${join(dir.dir, 'secrets')}`,
      CERTPLANE_SCHEDULER_INTERVAL_MS: '600000',
      // No CA here: the test plays the process that orders, so no plane orders while its agent makes the CSR.
      CERTPLANE_ORDER_BEFORE_CSR: '0',
      CERTPLANE_LOG_LEVEL: 'info',
    });
    planes.push(plane);
    await plane.waitForLine((line) => line.includes('management plane listening'), 120_000);
    return `http://127.0.0.1:${port}`;
  };
  const post = async (url: string, body?: unknown) => {
    const response = await fetch(url, { method: 'POST', headers: body ? { 'content-type': 'application/json' } : {}, body: body ? JSON.stringify(body) : undefined });
    return { status: response.status, body: (await response.json()) as Record<string, any> };
  };
  /** A new instance registered through A, its agent enrolled through A and connected to B. */
  const agentOnB = async (name: string) => {
    const instance = await post(`${a}/v1/instances`, { name, hostnames: [`${name}.wakeups.test`], autoIssue: false });
    assert.equal(instance.status, 201, JSON.stringify(instance.body));
    const key = await generateKeyPair();
    const enrolled = await post(`${a}/v1/agents/enroll`, { token: instance.body.enrollmentToken, csrPem: await createCsr(key, ['certplane-agent']) });
    assert.equal(enrolled.status, 201, JSON.stringify(enrolled.body));
    const channel = await openAgentChannel({ url: b }, { keyPem: key.privateKeyPem, certificatePem: enrolled.body.certificatePem });
    channels.push(channel);
    await channel.next('welcome', 30_000);
    return { instanceId: instance.body.id as string, channel };
  };
  /** B's certplane_agent_wakeups_total by source. */
  const wakeupsOnB = async () => {
    const text = await (await fetch(`${b}/metrics`)).text();
    const count = (source: string) => Number(new RegExp(`^certplane_agent_wakeups_total\\{source="${source}"\\} (\\d+)`, 'm').exec(text)?.[1] ?? 0);
    return { notification: count('notification'), fallback: count('fallback') };
  };

  before(async () => {
    database = await freshPostgresDatabase('certplane_wakeups');
    // One after the other: the first creates the agent CA in the shared secrets, the second loads it.
    a = await startPlane();
    b = await startPlane();
    store = await openStore(database.url);
  });
  after(async () => {
    for (const channel of channels) channel.socket.terminate();
    await Promise.all(planes.map((plane) => plane.stop()));
    await store?.close();
    await database?.drop();
    await dir.remove();
  });

  test('a certificate requested through process A reaches the agent connected to process B by notification, not by a scheduler tick', async () => {
    const { instanceId, channel } = await agentOnB('csr');
    assert.equal(channel.frames.some((frame) => frame.type === 'csr_request'), false);
    const accepted = await post(`${a}/v1/instances/${instanceId}/issue`);
    assert.equal(accepted.status, 202, JSON.stringify(accepted.body));
    const request = await channel.next('csr_request', 60_000);
    assert.equal(request.certificateId, accepted.body.certificateId);
    const woken = await wakeupsOnB();
    assert.ok(woken.notification >= 1, JSON.stringify(woken));
    assert.equal(woken.fallback, 0, 'B\'s fallback pass woke nothing: its only tick ran before the request existed');
  });

  test('a certificate requested through process B, which holds the agent\'s channel, is asked for at once and not announced', async () => {
    const { instanceId, channel } = await agentOnB('here');
    const unconnected = await post(`${a}/v1/instances`, { name: 'nowhere', hostnames: ['nowhere.wakeups.test'], autoIssue: false });
    assert.equal(unconnected.status, 201, JSON.stringify(unconnected.body));
    const heard: string[] = [];
    const unlisten = await store.wakeups.listen((work) => heard.push(work.id), () => undefined);
    try {
      const before = await wakeupsOnB();
      const accepted = await post(`${b}/v1/instances/${instanceId}/issue`);
      assert.equal(accepted.status, 202, JSON.stringify(accepted.body));
      const request = await channel.next('csr_request', 60_000);
      assert.equal(request.certificateId, accepted.body.certificateId);
      // Created after it and announced (its agent is connected nowhere): notifications arrive in commit order, so B's would have come first.
      const announced = await store.certificates.create(unconnected.body.id as string);
      await eventually(async () => (heard.includes(announced.id) ? true : undefined), 30_000, 20, 'the later creation\'s notification');
      assert.ok(!heard.includes(accepted.body.certificateId as string), 'B announced the certificate it asked its own agent for');
      assert.deepEqual(await wakeupsOnB(), before, 'nothing woke B: its request asked the agent itself');
    } finally {
      await unlisten();
    }
  });

  test('a chain issued by another process holding the order\'s lease is delivered by process B by notification', async () => {
    const { instanceId, channel } = await agentOnB('deliver');
    const before = await wakeupsOnB();
    // This test process plays the process that orders: it holds the lease, as the coordinator does.
    const owner = 'another process';
    const certificate = await store.certificates.create(instanceId);
    await channel.next('csr_request', 60_000);
    assert.ok(await store.certificates.lease(certificate.id, owner, 600_000));
    const key = await generateKeyPair();
    const csrPem = await createCsr(key, ['deliver.wakeups.test']);
    await store.certificates.apply(certificate.id, 'csr_accepted', { csrPem });
    await store.certificates.apply(certificate.id, 'order_created', { orderUrl: 'https://ca.invalid/order/1' }, { leaseOwner: owner });
    const anchor = await root('Wake-ups Root');
    const issuing = await intermediate('Wake-ups Intermediate', anchor);
    const fullchainPem = (await leafForCsr(issuing, csrPem)).pem + issuing.pem;
    const issued = parseCertificateBundle(fullchainPem)[0]!;
    const verified = await store.certificates.apply(
      certificate.id,
      'chain_verified',
      { fullchainPem, fingerprintSha256: issued.fingerprintSha256, notBefore: issued.notBefore, notAfter: issued.notAfter, anchorCN: 'Wake-ups Root', report: {}, lastError: null },
      { leaseOwner: owner },
    );
    assert.equal(verified?.status, 'issued');
    await store.certificates.release(certificate.id, owner);
    const delivery = await channel.next('deliver', 60_000);
    assert.equal(delivery.certificateId, certificate.id);
    assert.equal(delivery.fingerprintSha256, issued.fingerprintSha256);
    assert.equal((await store.certificates.get(certificate.id))?.status, 'delivered');
    const after = await wakeupsOnB();
    assert.ok(after.notification >= before.notification + 2, `the request and the issued chain each woke B: ${JSON.stringify({ before, after })}`);
    assert.equal(after.fallback, 0);
  });
});
