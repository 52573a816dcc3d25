/**
 * The agent's handling of the plane's messages, against a real plane's channel: an http-01
 * answer is served at once, not behind the key a CSR request before it is still making, so
 * an order the plane placed while the agent makes its CSR has its challenge answered meanwhile.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import pino from 'pino';
import { AgentClient } from '../../src/agent/client.js';
import { Http01Responder } from '../../src/agent/http01.js';
import { Installer } from '../../src/agent/install.js';
import { openState, writeIdentity } from '../../src/agent/state.js';
import { SessionRegistry } from '../../src/fleet/sessions.js';
import { scratch } from '../support/cli.js';
import { eventually } from '../support/processes.js';
import { enrollTestAgent, startTestPlane, type TestPlane } from '../support/plane.js';

let plane: TestPlane;
const dir = await scratch('certplane-agent-client-');
before(async () => {
  plane = await startTestPlane();
});
after(async () => {
  await plane.close();
  await dir.remove();
});

test('an http-01 request is answered while the key of the CSR request before it is still being made, and the CSR follows', async () => {
  const agent = await enrollTestAgent(plane, 'answers-meanwhile');
  // What reaches the plane from this agent, in order (nothing else acts on it here).
  const arrived: string[] = [];
  plane.sessions.setHandler({ onConnected: async () => undefined, onMessage: async (_session, message) => void arrived.push(message.type) });
  const state = await openState(dir.path('agent'));
  await writeIdentity(state, { keyPem: agent.keyPem, certificatePem: agent.certificatePem, caPem: plane.ca.certificatePem, instanceId: agent.instanceId, server: plane.url });
  const logger = pino({ level: 'silent' });
  const http01 = new Http01Responder({ host: '127.0.0.1', port: 0 });
  const { port } = await http01.start();
  const client = new AgentClient({ state, identity: { keyPem: agent.keyPem, certificatePem: agent.certificatePem, caPem: plane.ca.certificatePem, instanceId: agent.instanceId, server: plane.url }, installer: new Installer({ state, trustAnchors: [], logger }), http01, logger });
  client.start();
  try {
    const session = await eventually(async () => plane.sessions.get(agent.instanceId), 10_000, 20, 'the agent to connect');
    await eventually(async () => (arrived.includes('status') ? true : undefined), 10_000, 20, 'the agent\'s status after its welcome');
    // An RSA 3072 key takes the agent hundreds of milliseconds; the http-01 request comes right after.
    session.send({ type: 'csr_request', certificateId: '00000000-0000-4000-8000-000000000001', hostnames: ['answers-meanwhile.example.com'], keyAlgorithm: 'rsa-3072' });
    await session.request({ type: 'http01_serve', requestId: SessionRegistry.requestId(), token: 'meanwhile-token', keyAuthorization: 'meanwhile-token.thumbprint' });
    assert.ok(!arrived.includes('csr'), `the http-01 answer came before the CSR: ${arrived.join(', ')}`);
    const served = await fetch(`http://127.0.0.1:${port}/.well-known/acme-challenge/meanwhile-token`);
    assert.equal(await served.text(), 'meanwhile-token.thumbprint');
    await eventually(async () => (arrived.includes('csr') ? true : undefined), 30_000, 20, 'the CSR');
  } finally {
    await client.stop();
    await http01.stop();
  }
});
