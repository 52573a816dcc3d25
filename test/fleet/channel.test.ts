/**
 * The agent channel over a real WebSocket against an in-process plane: authentication,
 * and bad frames closing only their own connection with a reason.
 */
import assert from 'node:assert/strict';
import { sign, webcrypto } from 'node:crypto';
import { PassThrough } from 'node:stream';
import { getEventListeners } from 'node:events';
import { after, before, describe, test } from 'node:test';
import * as x509 from '@peculiar/x509';
import WebSocket from 'ws';
import { CHANNEL_PATH, PROTOCOL_VERSION, authPayload } from '../../src/channel/protocol.js';
import { createLogger } from '../../src/log/logger.js';
import { createCsr, generateKeyPair } from '../../src/pki/factory.js';
import { enrollTestAgent, startTestPlane, type EnrolledAgent, type TestPlane } from '../support/plane.js';
import { eventually } from '../support/processes.js';
import { root } from '../support/hierarchies.js';
import { opensslCsr } from '../support/openssl.js';
import { advance } from '../support/lifecycle.js';
import { ErrorCode } from '../../src/error-catalogue.js';
import { LAST_SEEN_RESOLUTION_MS } from '../../src/fleet/sessions.js';

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
  const open = async (target: TestPlane = plane) => {
    const socket = new WebSocket(`${target.url.replace('http', 'ws')}${CHANNEL_PATH}`);
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

  const authenticate = (agent: EnrolledAgent) => authenticateOn(plane, agent);
  const authenticateOn = async (target: TestPlane, agent: EnrolledAgent) => {
    const channel = await open(target);
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

  test('a request to an agent that does not answer ends at once when its order is stopped, with the stop\'s reason; a late answer is dropped', async () => {
    const agent = await enrolled('chanabort');
    const channel = await authenticate(agent);
    await channel.next('welcome');
    const session = plane.sessions.get(agent.instanceId)!;
    const stop = new AbortController();
    const reason = new Error('the management plane is shutting down');
    const asked = performance.now();
    // Two minutes to answer: only the signal can end this wait within the test.
    const waiting = session.request({ type: 'http01_serve', requestId: 'abort-me', token: 'tok', keyAuthorization: 'tok.key' }, 120_000, stop.signal);
    const served = await channel.next('http01_serve');
    assert.equal(served.requestId, 'abort-me');
    stop.abort(reason);
    await assert.rejects(waiting, (error) => error === reason);
    assert.ok(performance.now() - asked < 60_000, 'ended by the signal, not by the timeout');
    // The agent answers after all: nothing waits for it any more, and the channel stays up.
    channel.socket.send(JSON.stringify({ v: PROTOCOL_VERSION, type: 'http01_ready', requestId: 'abort-me' }));
    await assert.rejects(session.request({ type: 'http01_serve', requestId: 'already-stopped', token: 'tok', keyAuthorization: 'tok.key' }, 120_000, stop.signal), (error) => error === reason);
    const view = await plane.app.inject({ method: 'GET', url: `/v1/instances/${agent.instanceId}` });
    assert.equal(view.json().agent.connected, true);
    assert.ok(!channel.frames.some((frame) => frame.requestId === 'already-stopped'), 'a request whose order was stopped already is never sent');
    // Answered in time, a request leaves nothing listening on its order's signal (one order sends many).
    const running = new AbortController();
    const answered = session.request({ type: 'http01_serve', requestId: 'answered', token: 'tok', keyAuthorization: 'tok.key' }, 120_000, running.signal);
    assert.equal(getEventListeners(running.signal, 'abort').length, 1);
    await eventually(async () => (channel.frames.some((frame) => frame.requestId === 'answered') ? true : undefined), 10_000, 10, 'the request to arrive');
    channel.socket.send(JSON.stringify({ v: PROTOCOL_VERSION, type: 'http01_ready', requestId: 'answered' }));
    await answered;
    assert.equal(getEventListeners(running.signal, 'abort').length, 0);
    channel.socket.close();
  });

  test('an upper-case id in a path is the same instance, shown with its connected agent and current certificate', async () => {
    const agent = await enrolled('chan-case');
    const channel = await authenticate(agent);
    await channel.next('welcome');
    const upper = agent.instanceId.toUpperCase();
    assert.notEqual(upper, agent.instanceId);
    const issued = await plane.app.inject({ method: 'POST', url: `/v1/instances/${upper}/issue` });
    assert.equal(issued.statusCode, 202, issued.body);
    const lower = (await plane.app.inject({ method: 'GET', url: `/v1/instances/${agent.instanceId}` })).json();
    const shouted = await plane.app.inject({ method: 'GET', url: `/v1/instances/${upper}` });
    assert.equal(shouted.statusCode, 200);
    assert.equal(shouted.json().agent.connected, true, 'the session is found under the canonical id');
    assert.deepEqual([shouted.json().id, shouted.json().certificate?.id], [lower.id, lower.certificate?.id]);
    assert.equal(lower.agent.connected, true);
    const certificate = await plane.app.inject({ method: 'GET', url: `/v1/certificates/${String(issued.json().certificateId).toUpperCase()}` });
    assert.equal(certificate.json().id, issued.json().certificateId);
    const audit = (await plane.store.audit.list(20)).filter((e) => e.action === 'instance.issue');
    assert.equal(audit[0]?.target, agent.instanceId);
    channel.socket.close();
    await channel.closed;
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
    assert.deepEqual(await plane.store.agentCertificates.revoke(fingerprint, new Date()), [fingerprint]);
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

  test('an agent cannot answer another instance\'s CSR request, not even with a CSR its own policy accepts: the connection closes, the certificate stays pending', { timeout: 15_000 }, async () => {
    const owner = await enrolled('chan6');
    const intruder = await enrolled('chan7');
    const issued = await plane.app.inject({ method: 'POST', url: `/v1/instances/${owner.instanceId}/issue` });
    const certificateId = issued.json().certificateId;
    const channel = await authenticate(intruder);
    await channel.next('welcome');
    // Names the intruder's own instance owns, with its key algorithm: the policy check passes; the certificate is not its own.
    const csrPem = await createCsr(await generateKeyPair(), ['chan7.example.com']);
    channel.socket.send(JSON.stringify({ v: PROTOCOL_VERSION, type: 'csr', certificateId, csrPem }));
    const closed = await channel.closed;
    assert.equal(closed.code, 4000);
    assert.match(closed.reason, /^ISSUANCE_UNKNOWN_CERTIFICATE: /);
    const stored = await plane.store.certificates.get(certificateId);
    assert.deepEqual([stored?.status, stored?.csrPem], ['pending', null]);
  });

  test('a private key hidden by JSON escapes in install_failed or error is refused: nothing reaches last_error, the API or the log', async () => {
    const agent = await enrolled('chan-key');
    const issued = await plane.app.inject({ method: 'POST', url: `/v1/instances/${agent.instanceId}/issue` });
    const certificateId = issued.json().certificateId;
    await advance(plane.store, certificateId, 'delivered', { fingerprintSha256: 'ab'.repeat(32), deliveredAt: new Date() });
    const { privateKeyPem } = await generateKeyPair();
    const secret = privateKeyPem.split('\n').filter((l) => l.length >= 32 && !l.startsWith('-----'));
    // Escapes JSON.parse decodes: a pattern over the raw frame sees neither the dashes nor "PRIVATE".
    const hide = [(t: string) => t.replaceAll('-', '\\u002d'), (t: string) => t.replaceAll('PRIVATE', '\\u0050RIVATE'), (t: string) => t.replaceAll('-----BEGIN', '\\u002d----BEGIN').replaceAll('-----END', '\\u002d----END')];
    const messages = [
      { type: 'install_failed', certificateId, code: ErrorCode.AGENT_RELOAD_FAILED, message: `reload failed: ${privateKeyPem}` },
      { type: 'install_failed', certificateId, code: ErrorCode.AGENT_RELOAD_FAILED, message: privateKeyPem.replaceAll('\n', ' ') },
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
    await advance(plane.store, certificateId, 'delivered', { fingerprintSha256: 'ab'.repeat(32), deliveredAt: new Date() });
    const channel = await authenticate(agent);
    await channel.next('welcome');
    channel.socket.send(JSON.stringify({ v: PROTOCOL_VERSION, type: 'install_failed', certificateId, code: ErrorCode.AGENT_RELOAD_FAILED, message: 'nginx: [emerg] bad\nsha256:forged  admin  active\u001b[2K' }));
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

  /** Asks for a certificate for the agent's instance and answers the CSR request with `csrPem`; returns the plane's answer. */
  const answerCsrRequest = async (target: TestPlane, agent: EnrolledAgent, csrPem: string) => {
    const issued = await target.app.inject({ method: 'POST', url: `/v1/instances/${agent.instanceId}/issue` });
    assert.equal(issued.statusCode, 202, issued.body);
    const certificateId: string = issued.json().certificateId;
    const channel = await authenticateOn(target, agent);
    await channel.next('csr_request');
    channel.socket.send(JSON.stringify({ v: PROTOCOL_VERSION, type: 'csr', certificateId, csrPem }));
    const cancel = await channel.next('cancel');
    assert.equal(cancel.certificateId, certificateId);
    const stored = await target.store.certificates.get(certificateId);
    return { channel, cancel, stored };
  };

  test('an enrolled agent cannot stall the plane with a CSR of 3,000 copies of its own name: refused by size, its certificate failed, the plane healthy', async () => {
    const agent = await enrolled('stall1');
    const csrPem = await createCsr(await generateKeyPair(), Array(3000).fill('stall1.example.com'));
    const { channel, cancel, stored } = await answerCsrRequest(plane, agent, csrPem);
    assert.match(cancel.reason, /^CSR rejected: CSR_TOO_LARGE: /);
    assert.equal(stored?.status, 'failed');
    assert.equal(stored?.csrPem ?? null, null);
    assert.equal(channel.socket.readyState, WebSocket.OPEN);
    assert.equal((await plane.app.inject({ method: 'GET', url: '/healthz' })).statusCode, 200);
    channel.socket.close();
    await channel.closed;
    // The instance has one name, so its allowance is 4096 + 2 x (18 + 4) bytes, not the global 16 KiB.
    const small = await answerCsrRequest(plane, agent, await createCsr(await generateKeyPair(), Array(200).fill('stall1.example.com')));
    assert.match(small.cancel.reason, /^CSR rejected: CSR_TOO_LARGE: CSR: \d+ bytes, more than the 4140 /);
    small.channel.socket.close();
  });

  test('a CSR with 101 distinct names, and one signed with SHA-1, fail the certificate with CSR_TOO_MANY_NAMES and CSR_WEAK_SIGNATURE', async () => {
    const registered = Array.from({ length: 100 }, (_, i) => `n${i}.many1.example.com`);
    const many = await enrollTestAgent(plane, 'many1', registered);
    const manyNames = [...registered, 'many1.example.com'];
    const tooMany = await answerCsrRequest(plane, many, await createCsr(await generateKeyPair(), manyNames));
    assert.match(tooMany.cancel.reason, /^CSR rejected: CSR_TOO_MANY_NAMES: /);
    assert.equal(tooMany.stored?.status, 'failed');
    tooMany.channel.socket.close();
    const weak = await enrolled('weak1');
    const sha1 = await answerCsrRequest(plane, weak, await opensslCsr('ecdsa-p256', 'sha1', ['weak1.example.com']));
    assert.match(sha1.cancel.reason, /^CSR rejected: CSR_WEAK_SIGNATURE: /);
    assert.match(sha1.stored?.lastError ?? '', /CSR_WEAK_SIGNATURE/);
    sha1.channel.socket.close();
  });

  test('a CSR whose subject CN is longer than 64 bytes (an agent from before the rule) fails its certificate with CSR_INVALID before any order', async () => {
    const longName = `${'a'.repeat(50)}.cn1.example.com`; // 66 bytes
    const agent = await enrollTestAgent(plane, 'cn1', [longName]);
    const key = await generateKeyPair();
    const request = await x509.Pkcs10CertificateRequestGenerator.create({
      name: `CN=${longName}`,
      keys: key.keys,
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as webcrypto.EcdsaParams,
      extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: longName }])],
    });
    const { channel, cancel, stored } = await answerCsrRequest(plane, agent, request.toString('pem'));
    assert.match(cancel.reason, /^CSR rejected: CSR_INVALID: CSR: its subject CN is 66 bytes, more than the 64 /);
    assert.equal(stored?.status, 'failed');
    assert.equal(stored?.orderUrl ?? null, null, 'no order was placed for it');
    channel.socket.close();
  });

  test('CERTPLANE_MAX_NAMES_PER_CERTIFICATE caps an instance\'s distinct hostnames at registration and the names of its CSRs', async () => {
    const limited = await startTestPlane({ maxNamesPerCertificate: 2 });
    try {
      const three = await limited.app.inject({ method: 'POST', url: '/v1/instances', payload: { name: 'three', hostnames: ['a.three.example.com', 'b.three.example.com', 'c.three.example.com'] } });
      assert.equal(three.statusCode, 400, three.body);
      assert.equal(three.json().code, ErrorCode.VALIDATION_FAILED);
      assert.match(three.json().message, /3 distinct names, more than the 2/);
      const agent = await enrollTestAgent(limited, 'two', ['a.two.example.com', 'B.two.example.com', 'b.two.example.com']);
      assert.deepEqual((await limited.store.instances.get(agent.instanceId))?.hostnames, ['a.two.example.com', 'b.two.example.com']);
      const csrPem = await createCsr(await generateKeyPair(), ['a.two.example.com', 'b.two.example.com', 'a.two.example.com']);
      const { channel, cancel } = await answerCsrRequest(limited, agent, csrPem);
      assert.match(cancel.reason, /^CSR rejected: CSR_TOO_MANY_NAMES: .*3 names \(2 distinct\), more than the 2/);
      channel.socket.close();
    } finally {
      await limited.close();
    }
  });

  test('the instance\'s lastSeenAt is written by the authentication, then at most once in LAST_SEEN_RESOLUTION_MS, and again after it', async () => {
    let now = Date.parse('2026-12-02T12:00:00Z');
    const timed = await startTestPlane({ clock: () => new Date(now) });
    try {
      const agent = await enrollTestAgent(timed, 'seen');
      const first = now;
      const channel = await authenticateOn(timed, agent);
      await channel.next('welcome');
      const status = () => channel.socket.send(JSON.stringify({ v: PROTOCOL_VERSION, type: 'status', installedFingerprintSha256: null, pendingCertificateIds: [] }));
      const seen = async () => (await timed.store.instances.get(agent.instanceId))?.agentLastSeenAt?.getTime();
      // Written with the connection, before the welcome: no write of its own for the first message.
      assert.equal(await seen(), first);
      assert.equal((await timed.store.instances.get(agent.instanceId))?.agentConnectedAt?.getTime(), first);
      for (const step of [1_000, LAST_SEEN_RESOLUTION_MS - 2_000]) {
        now += step;
        status();
      }
      // A later message is handled after the ones before it: once this one is, they all were.
      const fingerprint = 'a'.repeat(64);
      channel.socket.send(JSON.stringify({ v: PROTOCOL_VERSION, type: 'status', installedFingerprintSha256: fingerprint, pendingCertificateIds: [] }));
      await eventually(async () => ((await timed.store.instances.get(agent.instanceId))?.installedFingerprintSha256 === fingerprint ? true : undefined), 10_000, 50, 'the last status');
      assert.equal(await seen(), first, 'messages within the resolution did not write it');
      now += 1_000;
      status();
      await eventually(async () => ((await seen()) === now ? true : undefined), 10_000, 50, 'a write for a message the resolution after the last one');
      channel.socket.close();
    } finally {
      await timed.close();
    }
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
