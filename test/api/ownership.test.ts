/**
 * Hostname ownership and listing cursors, as the adversarial review of the secure
 * deployment attacked them (issue 9, findings 1 and 7): over real TLS with registered,
 * cluster-limited client certificates, and through the real agent channel for the CSR
 * check. A name belongs to one instance; neither a 409 nor a cursor tells a caller
 * anything about a cluster it cannot see.
 */
import assert from 'node:assert/strict';
import { sign } from 'node:crypto';
import { request } from 'node:https';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { CHANNEL_PATH, PROTOCOL_VERSION, authPayload } from '../../src/channel/protocol.js';
import { parseCertificateBundle } from '../../src/chain/index.js';
import { EKU, createCsr, generateKeyPair, issueCertificate, loopbackServerCertificate } from '../../src/pki/factory.js';
import { enrollTestAgent, startTestPlane, type TestPlane } from '../support/plane.js';
import { ErrorCode } from '../../src/error-catalogue.js';

const DAY = 86_400_000;

interface Identity {
  readonly certPem: string;
  readonly keyPem: string;
  readonly fingerprint: string;
}

async function clientCertificate(name: string): Promise<Identity> {
  const key = await generateKeyPair();
  const cert = await issueCertificate({ subject: `CN=${name}`, key, extendedKeyUsage: [EKU.clientAuth], notBefore: new Date(Date.now() - DAY), notAfter: new Date(Date.now() + 30 * DAY) });
  return { certPem: cert.pem, keyPem: key.privateKeyPem, fingerprint: parseCertificateBundle(cert.pem)[0]!.fingerprintSha256 };
}

describe('secure mode: hostname ownership and cursors across clusters', async () => {
  let plane: TestPlane;
  let serverCaPem: string;
  const callers: Record<string, Identity> = {};
  let usInstance: string;

  const call = (method: string, path: string, who: string, body?: unknown) =>
    new Promise<{ status: number; text: string; body: any }>((resolve, reject) => {
      const identity = callers[who]!;
      const data = body === undefined ? undefined : JSON.stringify(body);
      const req = request(new URL(path, plane.url), { method, agent: false, ca: serverCaPem, cert: identity.certPem, key: identity.keyPem, headers: data ? { 'content-type': 'application/json' } : {} }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString();
          resolve({ status: res.statusCode ?? 0, text, body: JSON.parse(text) });
        });
      });
      req.on('error', reject);
      req.end(data);
    });

  before(async () => {
    const listener = await loopbackServerCertificate('certplane test plane CA');
    serverCaPem = listener.caPem;
    plane = await startTestPlane({ tls: { certPem: listener.certPem, keyPem: listener.keyPem } });
    const register = async (name: string, role: 'admin' | 'operator' | 'reader', clusters: string[] | null) => {
      callers[name] = await clientCertificate(name);
      await plane.store.apiClients.register({ fingerprintSha256: callers[name].fingerprint, name, role, clusters, notAfter: null });
    };
    await register('admin', 'admin', null);
    await register('euOperator', 'operator', ['eu-1']);
    await register('euReader', 'reader', ['eu-1']);
    await register('usReader', 'reader', ['us-1']);
    const us = await call('POST', '/v1/instances', 'admin', { name: 'us-b', hostnames: ['b.example', 'www.corp.example'], cluster: 'us-1' });
    assert.equal(us.status, 201, us.text);
    usInstance = us.body.id;
  });
  after(() => plane.close());

  test('finding 1: a cluster-limited operator cannot register another cluster\'s hostname, in any spelling, and the 409 does not reveal who holds it', async () => {
    for (const hostnames of [['b.example'], ['B.Example'], ['eu-only.example', 'b.example'], ['*.corp.example']]) {
      const refused = await call('POST', '/v1/instances', 'euOperator', { name: 'eu-evil', hostnames, cluster: 'eu-1' });
      assert.equal(refused.status, 409, refused.text);
      assert.equal(refused.body.code, ErrorCode.INSTANCE_HOSTNAME_TAKEN);
      assert.ok(!refused.text.includes(usInstance) && !refused.text.includes('us-1') && !refused.text.includes('us-b') && !refused.text.includes('www.corp'), `the 409 leaks the holder: ${refused.text}`);
      assert.match(refused.body.message, /another instance/);
    }
    // Nothing was registered by the refusals: the eu-1 operator's fleet is still empty.
    assert.deepEqual((await call('GET', '/v1/instances', 'euReader')).body.items, []);
    // A caller who may see the holder's cluster is told which instance holds the name.
    const admin = await call('POST', '/v1/instances', 'admin', { name: 'dup', hostnames: ['b.example', '*.corp.example'], cluster: 'eu-1' });
    assert.equal(admin.status, 409);
    assert.ok(admin.body.message.includes(usInstance) && admin.body.message.includes('www.corp.example'), admin.text);
    // And a name of its own is still the operator's to register.
    assert.equal((await call('POST', '/v1/instances', 'euOperator', { name: 'eu-good', hostnames: ['eu-good.example'], cluster: 'eu-1' })).status, 201);
  });

  test('finding 7: a cluster-limited reader\'s cursors name only its own instances, walk each once, and cannot be forged, edited or borrowed', async () => {
    const euIds: string[] = [];
    for (let i = 0; i < 5; i += 1) {
      const created = await call('POST', '/v1/instances', 'admin', { name: `eu-${i}`, hostnames: [`eu-${i}.cursor.example`], cluster: 'eu-1' });
      euIds.push(created.body.id);
      for (let j = 0; j < 3; j += 1) await call('POST', '/v1/instances', 'admin', { name: `us-${i}-${j}`, hostnames: [`us-${i}-${j}.cursor.example`], cluster: 'us-1' });
    }
    const everyEu = (await call('GET', '/v1/instances?limit=500', 'admin')).body.items.filter((i: { cluster: string }) => i.cluster === 'eu-1').map((i: { id: string }) => i.id);
    const usIds = new Set((await call('GET', '/v1/instances?limit=500', 'usReader')).body.items.map((i: { id: string }) => i.id));
    assert.ok(euIds.every((id) => everyEu.includes(id)));

    const seen: string[] = [];
    const cursors: string[] = [];
    let cursor: string | null = null;
    for (let guard = 0; guard < 20; guard += 1) {
      const page: { status: number; text: string; body: any } = await call('GET', `/v1/instances?limit=2${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`, 'euReader');
      assert.equal(page.status, 200, page.text);
      assert.ok(page.body.items.length > 0 || page.body.nextCursor === null, 'an empty page with a cursor');
      seen.push(...page.body.items.map((i: { id: string }) => i.id));
      cursor = page.body.nextCursor;
      if (cursor === null) break;
      cursors.push(cursor);
      const decoded = Buffer.from(cursor.split('.')[0]!, 'base64url').toString();
      for (const id of usIds) assert.ok(!decoded.includes(id as string) && !cursor.includes(id as string), `cursor ${decoded} names a us-1 instance`);
    }
    assert.deepEqual(seen, everyEu, 'every visible instance exactly once, in order');
    assert.ok(cursors.length >= 2);

    const last = cursors[0]!;
    const [position, mac] = last.split('.') as [string, string];
    const flipped = `${mac.slice(0, -1)}${mac.endsWith('A') ? 'B' : 'A'}`;
    const usPosition = Buffer.from(JSON.stringify(['2000-01-01T00:00:00.000000Z', [...usIds][0]])).toString('base64url');
    for (const forged of [`${position}.${flipped}`, position, `${usPosition}.${mac}`, `${position}x.${mac}`, 'AAAA.AAAA', `${last}.`]) {
      const refused = await call('GET', `/v1/instances?cursor=${encodeURIComponent(forged)}`, 'euReader');
      assert.equal(refused.status, 400, `${forged}: ${refused.text}`);
      assert.equal(refused.body.code, ErrorCode.STORE_INVALID_CURSOR);
    }
    // A cursor is bound to the view of the caller it was issued to.
    assert.equal((await call('GET', `/v1/instances?cursor=${encodeURIComponent(last)}`, 'usReader')).status, 400);
    assert.equal((await call('GET', `/v1/instances?cursor=${encodeURIComponent(last)}`, 'euReader')).status, 200);
  });
});

describe('the CSR check uses ownership, not the instance\'s list', async () => {
  let plane: TestPlane;
  before(async () => {
    plane = await startTestPlane();
  });
  after(() => plane.close());

  test('finding 1: a CSR for a name another instance owns is refused even when this instance lists it (a database from before ownership)', async () => {
    const owner = await plane.app.inject({ method: 'POST', url: '/v1/instances', payload: { name: 'us-b', hostnames: ['b.example'], cluster: 'us-1' } });
    assert.equal(owner.statusCode, 201, owner.body);
    const agent = await enrollTestAgent(plane, 'eu-evil', ['eu-evil.example']);
    // What an instance registered before migration 8 may look like: the name listed, not owned.
    await plane.store.query("UPDATE instances SET hostnames = ARRAY['eu-evil.example', 'b.example'] WHERE id = $1", [agent.instanceId]);

    const socket = new WebSocket(`${plane.url.replace('http', 'ws')}${CHANNEL_PATH}`);
    const frames: any[] = [];
    socket.on('message', (data) => frames.push(JSON.parse(data.toString())));
    const next = async (type: string, seen = 0) => {
      for (let i = 0; i < 250; i += 1) {
        const found = frames.filter((f) => f.type === type)[seen];
        if (found) return found;
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      assert.fail(`no ${type} frame`);
    };
    await new Promise((resolve) => socket.once('open', resolve));
    const hello = await next('hello');
    socket.send(JSON.stringify({ v: PROTOCOL_VERSION, type: 'auth', certificatePem: agent.certificatePem, signature: sign('sha256', authPayload(hello.nonce), agent.keyPem).toString('base64'), agentVersion: 'test' }));
    await next('welcome');

    const tls = await generateKeyPair();
    const answer = async (names: string[], round: number) => {
      const issued = await plane.app.inject({ method: 'POST', url: `/v1/instances/${agent.instanceId}/issue` });
      assert.equal(issued.statusCode, 202, issued.body);
      const prompt = await next('csr_request', round);
      socket.send(JSON.stringify({ v: PROTOCOL_VERSION, type: 'csr', certificateId: prompt.certificateId, csrPem: await createCsr(tls, names) }));
      return prompt.certificateId as string;
    };

    for (const [round, names] of [['b.example'], ['eu-evil.example', 'B.EXAMPLE.']].entries()) {
      const certificateId = await answer(names, round);
      const cancel = await next('cancel', round);
      assert.equal(cancel.certificateId, certificateId);
      assert.match(cancel.reason, /CSR rejected: it asks for b\.example, outside the hostnames this instance owns \(eu-evil\.example\)/);
      const certificate = await plane.store.certificates.get(certificateId);
      assert.equal(certificate?.status, 'failed');
      assert.equal(certificate?.csrPem, null, 'a refused CSR never reaches an order');
    }
    socket.close();
    await new Promise((resolve) => socket.once('close', resolve));
  });
});
