/**
 * The agent channel over a real WebSocket against an in-process plane: authentication,
 * and bad frames closing only their own connection with a reason.
 */
import assert from 'node:assert/strict';
import { sign } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { CHANNEL_PATH, PROTOCOL_VERSION, authPayload } from '../../src/agents/protocol.js';
import { generateKeyPair } from '../../src/pki/factory.js';
import { enrollTestAgent, startTestPlane, type EnrolledAgent, type TestPlane } from '../support/plane.js';
import { root } from '../support/hierarchies.js';
import { advance } from '../support/lifecycle.js';

describe('agent channel', async () => {
  let plane: TestPlane;
  before(async () => {
    plane = await startTestPlane({ authTimeoutMs: 2000 });
  });
  after(() => plane.close());

  const enrolled = (name: string) => enrollTestAgent(plane, name);

  /** Opens a channel and collects frames until closed. */
  const open = async () => {
    const socket = new WebSocket(`${plane.url.replace('http', 'ws')}${CHANNEL_PATH}`);
    const frames: any[] = [];
    const closed = new Promise<{ code: number; reason: string }>((resolve) => socket.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
    const next = (type: string) =>
      new Promise<any>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no ${type} frame`)), 5000);
        const check = () => {
          const found = frames.find((f) => f.type === type);
          if (found) {
            clearTimeout(timer);
            resolve(found);
          }
        };
        socket.on('message', check);
        check();
      });
    socket.on('message', (data) => frames.push(JSON.parse(data.toString())));
    await new Promise((resolve) => socket.once('open', resolve));
    return { socket, frames, closed, next };
  };

  const authenticate = async (agent: EnrolledAgent) => {
    const channel = await open();
    const hello = await channel.next('hello');
    const signature = sign('sha256', authPayload(hello.nonce), agent.keyPem).toString('base64');
    channel.socket.send(JSON.stringify({ v: PROTOCOL_VERSION, type: 'auth', certificatePem: agent.certificatePem, signature, agentVersion: 'test' }));
    return channel;
  };

  test('an enrolled agent authenticates and shows as connected; disconnection is recorded', async () => {
    const agent = await enrolled('chan1');
    const channel = await authenticate(agent);
    const welcome = await channel.next('welcome');
    assert.equal(welcome.instanceId, agent.instanceId);
    const view = await plane.app.inject({ method: 'GET', url: `/v1/instances/${agent.instanceId}` });
    assert.equal(view.json().agent.connected, true);
    channel.socket.close();
    await channel.closed;
    for (let i = 0; i < 50 && (await plane.store.instances.get(agent.instanceId))?.agentConnectedAt; i += 1) await new Promise((r) => setTimeout(r, 20));
    assert.equal((await plane.store.instances.get(agent.instanceId))?.agentConnectedAt, null);
  });

  test('a wrong signature, a foreign certificate and a revoked certificate are refused with 4001', async () => {
    const agent = await enrolled('chan2');
    const other = await generateKeyPair();
    const wrongKey = await authenticate({ ...agent, keyPem: other.privateKeyPem });
    assert.equal((await wrongKey.closed).code, 4001);
    const foreign = await root('Foreign CA');
    const foreignAuth = await authenticate({ ...agent, certificatePem: foreign.pem });
    assert.equal((await foreignAuth.closed).code, 4001);
    const fingerprint = (await import('../../src/chain/index.js')).parseCertificateBundle(agent.certificatePem)[0]!.fingerprintSha256;
    assert.equal(await plane.store.agentCertificates.revoke(fingerprint, new Date()), true);
    const revoked = await authenticate(agent);
    const closed = await revoked.closed;
    assert.equal(closed.code, 4001);
    assert.match(closed.reason, /AGENT_REVOKED/);
  });

  test('bad frames close only their own connection, with a reason', async () => {
    const healthy = await authenticate(await enrolled('chan3'));
    await healthy.next('welcome');
    const cases: [string | Buffer, RegExp][] = [
      ['{not json', /CHANNEL_MESSAGE_NOT_JSON/],
      [JSON.stringify({ v: 99, type: 'auth' }), /CHANNEL_VERSION_UNSUPPORTED/],
      [JSON.stringify({ v: PROTOCOL_VERSION, type: 'installed', certificateId: 'x', fingerprintSha256: 'ab' }), /CHANNEL_MESSAGE_INVALID/],
      [JSON.stringify({ v: PROTOCOL_VERSION, type: 'status', installedFingerprintSha256: null, pendingCertificateIds: [] }), /CHANNEL_MESSAGE_UNEXPECTED/],
      [JSON.stringify({ v: PROTOCOL_VERSION, type: 'error', code: 'x', message: '-----BEGIN PRIVATE KEY-----' }), /CHANNEL_PRIVATE_KEY_REFUSED/],
      [JSON.stringify({ v: PROTOCOL_VERSION, type: 'auth', certificatePem: '-----BEGIN CERTIFICATE-----', signature: 'x', agentVersion: '1', extra: true }), /CHANNEL_MESSAGE_INVALID/],
    ];
    for (const [frame, reason] of cases) {
      const channel = await open();
      await channel.next('hello');
      channel.socket.send(frame);
      const closed = await channel.closed;
      assert.equal(closed.code, 4000, String(frame));
      assert.match(closed.reason, reason);
    }
    const oversized = await open();
    oversized.socket.send('x'.repeat(300 * 1024));
    assert.equal((await oversized.closed).code, 1009);
    assert.equal(healthy.socket.readyState, WebSocket.OPEN);
    healthy.socket.close();
  });

  test('an agent cannot fail another instance\'s delivered certificate: install_failed for it closes the connection', async () => {
    const owner = await enrolled('chan4');
    const intruder = await enrolled('chan5');
    const issued = await plane.app.inject({ method: 'POST', url: `/v1/instances/${owner.instanceId}/issue` });
    const certificateId = issued.json().certificateId;
    await advance(plane.store, certificateId, 'delivered', { fingerprintSha256: 'ab'.repeat(32), deliveredAt: new Date() });
    const channel = await authenticate(intruder);
    await channel.next('welcome');
    channel.socket.send(JSON.stringify({ v: PROTOCOL_VERSION, type: 'install_failed', certificateId, code: 'INSTALL_CHAIN_UNVERIFIED', message: 'no' }));
    const closed = await channel.closed;
    assert.equal(closed.code, 4000);
    assert.match(closed.reason, /^ISSUANCE_UNKNOWN_CERTIFICATE: /);
    assert.equal((await plane.store.certificates.get(certificateId))?.status, 'delivered');
  });

  test('a refusal whose reason is long and multi-byte is cut on a character boundary, and the plane stays up', async () => {
    const channel = await open();
    await channel.next('hello');
    // The version echoed in the reason makes it longer than 123 bytes, with the cut inside a 4-byte character.
    channel.socket.send(JSON.stringify({ v: '🔥'.repeat(40), type: 'auth' }));
    const closed = await channel.closed;
    assert.equal(closed.code, 4000);
    assert.ok(Buffer.byteLength(closed.reason) <= 123, closed.reason);
    assert.doesNotMatch(closed.reason, /\ufffd/);
    assert.match(closed.reason, /\.\.\.$/);
    assert.equal((await plane.app.inject({ method: 'GET', url: '/healthz' })).statusCode, 200);
  });

  test('no authentication in time closes the connection', async () => {
    const channel = await open();
    const closed = await channel.closed;
    assert.equal(closed.code, 4001);
  });

  test('upgrades on other paths are refused', async () => {
    const socket = new WebSocket(`${plane.url.replace('http', 'ws')}/v1/other`);
    const error = await new Promise<Error>((resolve) => socket.on('error', resolve));
    assert.match(error.message, /404/);
  });
});
