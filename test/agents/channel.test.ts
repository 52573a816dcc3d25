/**
 * The agent channel over a real WebSocket against an in-process plane: authentication,
 * and bad frames closing only their own connection with a reason.
 */
import assert from 'node:assert/strict';
import { sign } from 'node:crypto';
import { PassThrough } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { CHANNEL_PATH, PROTOCOL_VERSION, authPayload } from '../../src/agents/protocol.js';
import { createLogger } from '../../src/log/logger.js';
import { generateKeyPair } from '../../src/pki/factory.js';
import { enrollTestAgent, startTestPlane, type EnrolledAgent, type TestPlane } from '../support/plane.js';
import { root } from '../support/hierarchies.js';

describe('agent channel', async () => {
  let plane: TestPlane;
  /** Everything the plane logged, as `certplane serve` would write it. */
  const logged: string[] = [];
  before(async () => {
    const out = new PassThrough();
    out.on('data', (chunk: Buffer) => logged.push(chunk.toString()));
    plane = await startTestPlane({ authTimeoutMs: 2000, logger: createLogger('debug', out) });
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
    await plane.store.certificates.transition(certificateId, ['pending'], 'delivered', { fingerprintSha256: 'ab'.repeat(32), deliveredAt: new Date() });
    const channel = await authenticate(intruder);
    await channel.next('welcome');
    channel.socket.send(JSON.stringify({ v: PROTOCOL_VERSION, type: 'install_failed', certificateId, code: 'INSTALL_CHAIN_UNVERIFIED', message: 'no' }));
    const closed = await channel.closed;
    assert.equal(closed.code, 4000);
    assert.match(closed.reason, /^ISSUANCE_UNKNOWN_CERTIFICATE: /);
    assert.equal((await plane.store.certificates.get(certificateId))?.status, 'delivered');
  });

  test('a private key hidden by JSON escapes in install_failed or error is refused: nothing reaches last_error, the API or the log', async () => {
    const agent = await enrolled('chan-key');
    const issued = await plane.app.inject({ method: 'POST', url: `/v1/instances/${agent.instanceId}/issue` });
    const certificateId = issued.json().certificateId;
    await plane.store.certificates.transition(certificateId, ['pending'], 'delivered', { fingerprintSha256: 'ab'.repeat(32), deliveredAt: new Date() });
    const { privateKeyPem } = await generateKeyPair();
    const secret = privateKeyPem.split('\n').filter((l) => l.length >= 32 && !l.startsWith('-----'));
    // Escapes JSON.parse decodes: a pattern over the raw frame sees neither the dashes nor "PRIVATE".
    const hide = [(t: string) => t.replaceAll('-', '\\u002d'), (t: string) => t.replaceAll('PRIVATE', '\\u0050RIVATE'), (t: string) => t.replaceAll('-----BEGIN', '\\u002d----BEGIN').replaceAll('-----END', '\\u002d----END')];
    const messages = [
      { type: 'install_failed', certificateId, code: 'AGENT_RELOAD_FAILED', message: `reload failed: ${privateKeyPem}` },
      { type: 'install_failed', certificateId, code: 'AGENT_RELOAD_FAILED', message: privateKeyPem.replaceAll('\n', ' ') },
      { type: 'error', code: 'AGENT_X', message: privateKeyPem },
    ];
    for (const message of messages) {
      for (const escape of hide) {
        const channel = await authenticate(agent);
        await channel.next('welcome');
        channel.socket.send(escape(JSON.stringify({ v: PROTOCOL_VERSION, ...message })));
        // An accepted frame leaves the connection open: fail in seconds, not at the suite's timeout.
        const closed = await Promise.race([channel.closed, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`the plane accepted ${message.type} holding a private key`)), 5000).unref())]);
        assert.equal(closed.code, 4000);
        assert.match(closed.reason, /^CHANNEL_PRIVATE_KEY_REFUSED: /);
      }
    }
    const stored = await plane.store.certificates.get(certificateId);
    assert.deepEqual([stored?.status, stored?.lastError], ['delivered', null]);
    const view = await plane.app.inject({ method: 'GET', url: `/v1/instances/${agent.instanceId}` });
    const log = logged.join('');
    assert.match(log, /CHANNEL_PRIVATE_KEY_REFUSED/);
    for (const line of secret) {
      assert.ok(!view.body.includes(line), 'the API shows the key');
      assert.ok(!log.includes(line), 'the log holds the key');
    }
  });

  test('an agent\'s multi-line failure message is stored on one line, its newlines escaped', async () => {
    const agent = await enrolled('chan-lines');
    const issued = await plane.app.inject({ method: 'POST', url: `/v1/instances/${agent.instanceId}/issue` });
    const certificateId = issued.json().certificateId;
    await plane.store.certificates.transition(certificateId, ['pending'], 'delivered', { fingerprintSha256: 'ab'.repeat(32), deliveredAt: new Date() });
    const channel = await authenticate(agent);
    await channel.next('welcome');
    channel.socket.send(JSON.stringify({ v: PROTOCOL_VERSION, type: 'install_failed', certificateId, code: 'AGENT_RELOAD_FAILED', message: 'nginx: [emerg] bad\nsha256:forged  admin  active\u001b[2K' }));
    let stored = await plane.store.certificates.get(certificateId);
    for (let i = 0; i < 100 && stored?.status !== 'failed'; i += 1) {
      await new Promise((r) => setTimeout(r, 20));
      stored = await plane.store.certificates.get(certificateId);
    }
    assert.equal(stored?.lastError, 'the agent refused to install: AGENT_RELOAD_FAILED: nginx: [emerg] bad\\nsha256:forged  admin  active\\u001b[2K');
    channel.socket.close();
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
