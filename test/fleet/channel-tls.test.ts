/** In secure mode the agent's certificate must also be its TLS client certificate. */
import assert from 'node:assert/strict';
import { sign } from 'node:crypto';
import { request } from 'node:https';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { CHANNEL_PATH, PROTOCOL_VERSION, authPayload } from '../../src/channel/protocol.js';
import { createCsr, generateKeyPair, loopbackServerCertificate } from '../../src/pki/factory.js';
import { startTestPlane, type TestPlane } from '../support/plane.js';

describe('agent channel over mutual TLS', async () => {
  let plane: TestPlane;
  let ca: string;
  const agents: { instanceId: string; keyPem: string; certificatePem: string }[] = [];

  const enroll = (token: string, csrPem: string) =>
    new Promise<any>((resolve, reject) => {
      const req = request(new URL('/v1/agents/enroll', plane.url), { method: 'POST', ca, headers: { 'content-type': 'application/json' } }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve(JSON.parse(Buffer.concat(chunks).toString())));
      });
      req.on('error', reject);
      req.end(JSON.stringify({ token, csrPem }));
    });

  before(async () => {
    const listener = await loopbackServerCertificate('certplane channel TLS CA');
    ca = listener.caPem;
    plane = await startTestPlane({ tls: { certPem: listener.certPem, keyPem: listener.keyPem }, authTimeoutMs: 3000 });
    for (const name of ['tls1', 'tls2']) {
      const instance = await plane.store.instances.create({ name, hostnames: [`${name}.example.com`], cluster: null, keyAlgorithm: 'ecdsa-p256' });
      const { createEnrollmentToken } = await import('../../src/fleet/enrollment.js');
      const { token } = await createEnrollmentToken(plane.store, instance.id, new Date(), 60_000);
      const key = await generateKeyPair();
      const enrolled = await enroll(token, await createCsr(key, ['certplane-agent']));
      agents.push({ instanceId: instance.id, keyPem: key.privateKeyPem, certificatePem: enrolled.certificatePem });
    }
  });
  after(() => plane.close());

  const connect = (tlsIdentity: { certificatePem: string; keyPem: string } | undefined, authAs: (typeof agents)[number]) =>
    new Promise<{ code: number; reason: string; welcomed: boolean; error?: string }>((resolve) => {
      const socket = new WebSocket(`${plane.url.replace('https', 'wss')}${CHANNEL_PATH}`, { ca, ...(tlsIdentity ? { cert: tlsIdentity.certificatePem, key: tlsIdentity.keyPem } : {}) });
      let welcomed = false;
      socket.on('message', (data) => {
        const message = JSON.parse(data.toString());
        if (message.type === 'hello') {
          socket.send(JSON.stringify({ v: PROTOCOL_VERSION, type: 'auth', certificatePem: authAs.certificatePem, signature: sign('sha256', authPayload(message.nonce), authAs.keyPem).toString('base64'), agentVersion: 'test' }));
        } else if (message.type === 'welcome') {
          welcomed = true;
          socket.close(1000, 'done');
        }
      });
      socket.on('error', (error) => resolve({ code: -1, reason: '', welcomed, error: error.message }));
      socket.on('close', (code, reason) => resolve({ code, reason: reason.toString(), welcomed }));
    });

  test('the agent certificate as TLS client certificate and on the channel: welcomed', async () => {
    const result = await connect(agents[0], agents[0]!);
    assert.equal(result.welcomed, true, JSON.stringify(result));
  });

  test('no TLS client certificate: the upgrade is refused with 401', async () => {
    const result = await connect(undefined, agents[0]!);
    assert.match(result.error ?? '', /401/);
  });

  test('another agent\'s TLS certificate with this agent\'s channel credentials: refused with 4001', async () => {
    const result = await connect(agents[1], agents[0]!);
    assert.equal(result.welcomed, false);
    assert.equal(result.code, 4001);
    assert.match(result.reason, /AGENT_AUTH_FAILED/);
  });
});
