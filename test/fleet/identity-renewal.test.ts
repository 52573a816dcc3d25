/**
 * Agent certificates are renewed over the channel before they expire, with a fresh identity
 * key, only inside their renewal window and at most once per connection and per interval.
 */
import assert from 'node:assert/strict';
import { after, afterEach, before, test } from 'node:test';
import pino from 'pino';
import { AgentClient, identityNeedsRenewal } from '../../src/agent/client.js';
import { Installer } from '../../src/agent/install.js';
import { openState, readIdentity, writeIdentity } from '../../src/agent/state.js';
import { createEnrollmentToken, enrollAgent } from '../../src/fleet/enrollment.js';
import { identityRenewalOpensAt } from '../../src/channel/protocol.js';
import { parseCertificateBundle } from '../../src/chain/index.js';
import { createCsr, generateKeyPair } from '../../src/pki/factory.js';
import { startChannelRecorder } from '../support/channel-recorder.js';
import { scratch } from '../support/cli.js';
import { eventually } from '../support/processes.js';
import { enrollTestAgent, openAgentChannel, startTestPlane, type TestPlane } from '../support/plane.js';
import { ErrorCode } from '../../src/error-catalogue.js';

const DAY = 86_400_000;
let plane: TestPlane;
/** How far ahead of the system's the plane's clock runs: tests move it into (or short of) the renewal window. */
let offset = 0;
const dir = await scratch('certplane-identity-');
before(async () => {
  plane = await startTestPlane({ clock: () => new Date(Date.now() + offset) });
});
afterEach(() => {
  offset = 0;
});
after(async () => {
  await plane.close();
  await dir.remove();
});

test('an agent whose certificate is past two thirds of its life gets a new one for a new key, and uses it next time', async () => {
  const instance = await plane.store.instances.create({ name: 'old', hostnames: ['old.example.com'], cluster: null, keyAlgorithm: 'ecdsa-p256' });
  const enrolledAt = new Date(Date.now() - 80 * DAY);
  const { token } = await createEnrollmentToken(plane.store, instance.id, enrolledAt, 60_000);
  const key = await generateKeyPair();
  const enrolled = await enrollAgent({ store: plane.store, ca: plane.ca }, token, await createCsr(key, ['certplane-agent']), enrolledAt);
  assert.equal(identityNeedsRenewal(enrolled.certificatePem, new Date()), true);
  const state = await openState(dir.path('agent'));
  await writeIdentity(state, { keyPem: key.privateKeyPem, certificatePem: enrolled.certificatePem, caPem: enrolled.caPem, instanceId: instance.id, server: plane.url });

  const logger = pino({ level: 'silent' });
  const start = async () => {
    const identity = (await readIdentity(state))!;
    const client = new AgentClient({ state, identity, installer: new Installer({ state, trustAnchors: [], logger }), logger, minBackoffMs: 50, maxBackoffMs: 200 });
    client.start();
    return client;
  };
  const first = await start();
  const renewed = await eventually(async () => {
    const identity = await readIdentity(state);
    return identity && identity.certificatePem !== enrolled.certificatePem ? identity : undefined;
  }, 10_000, 50, 'the renewed identity');
  await first.stop();
  const certificate = parseCertificateBundle(renewed.certificatePem)[0]!;
  assert.ok(certificate.notAfter.getTime() > Date.now() + 80 * DAY);
  assert.notEqual(renewed.keyPem, key.privateKeyPem);
  assert.equal(identityNeedsRenewal(renewed.certificatePem, new Date()), false);
  assert.equal((await plane.store.agentCertificates.get(certificate.fingerprintSha256))?.instanceId, instance.id);
  assert.ok((await plane.store.audit.list(5)).some((e) => e.action === 'agent.identity.renew' && e.target === certificate.fingerprintSha256));

  const second = await start();
  await eventually(async () => (plane.sessions.get(instance.id)?.identity.fingerprintSha256 === certificate.fingerprintSha256 ? true : undefined), 10_000, 50, 'a session with the new certificate');
  await second.stop();
});

/** How many agent certificates the instance has, revoked or not: what a renewal would have minted. */
const agentCertificateCount = async (instanceId: string) =>
  Number((await plane.store.query<{ n: string | number }>('SELECT count(*) AS n FROM agent_certificates WHERE instance_id = $1', [instanceId]))[0]!.n);

const renewalRequest = async () => ({ type: 'identity_renewal', csrPem: await createCsr(await generateKeyPair(), ['certplane-agent']) });

test('a renewal asked before two thirds of the lifetime is refused with AGENT_RENEWAL_TOO_EARLY and mints nothing', async () => {
  const agent = await enrollTestAgent(plane, 'too-early');
  const opensAt = identityRenewalOpensAt(parseCertificateBundle(agent.certificatePem)[0]!);
  offset = opensAt.getTime() - Date.now() - DAY;
  const channel = await openAgentChannel(plane, agent);
  await channel.next('welcome');
  channel.send(await renewalRequest());
  const refused = await channel.next(['identity_renewal_refused', 'identity_renewed']);
  assert.equal(refused.type, 'identity_renewal_refused');
  assert.equal(refused.code, ErrorCode.AGENT_RENEWAL_TOO_EARLY);
  assert.equal(refused.retryAt, opensAt.toISOString());
  assert.equal(await agentCertificateCount(agent.instanceId), 1);
  assert.equal((await plane.store.audit.list(20)).some((e) => e.action === 'agent.identity.renew' && (e.details as any)?.previous === parseCertificateBundle(agent.certificatePem)[0]!.fingerprintSha256), false);
  assert.equal(channel.socket.readyState, channel.socket.OPEN, 'a refused renewal leaves the connection open');
  channel.socket.close();
});

test('a flood of renewal requests mints one certificate: once per connection, then once per interval for the instance', async () => {
  const agent = await enrollTestAgent(plane, 'flood');
  offset = identityRenewalOpensAt(parseCertificateBundle(agent.certificatePem)[0]!).getTime() - Date.now() + DAY;
  const answers = ['identity_renewed', 'identity_renewal_refused'];
  const flood = async (requests: number) => {
    const channel = await openAgentChannel(plane, agent);
    await channel.next('welcome');
    const request = await renewalRequest();
    for (let i = 0; i < requests; i += 1) channel.send(request);
    await eventually(async () => (channel.frames.filter((f) => answers.includes(f.type)).length === requests ? true : undefined), 30_000, 50, `${requests} answers`);
    channel.socket.close();
    return channel.frames.filter((f) => answers.includes(f.type));
  };

  const first = await flood(50);
  assert.equal(first.filter((f) => f.type === 'identity_renewed').length, 1);
  assert.deepEqual(new Set(first.filter((f) => f.type === 'identity_renewal_refused').map((f) => f.code)), new Set([ErrorCode.AGENT_RENEWAL_RATE_LIMITED]));
  assert.equal(await agentCertificateCount(agent.instanceId), 2);

  const again = await flood(20);
  assert.deepEqual(new Set(again.map((f) => `${f.type} ${f.code}`)), new Set(['identity_renewal_refused AGENT_RENEWAL_RATE_LIMITED']));
  assert.equal(await agentCertificateCount(agent.instanceId), 2);
});

test('an agent whose clock runs ahead is refused without losing its connection, and keeps its certificate', async () => {
  const instance = await plane.store.instances.create({ name: 'fast-clock', hostnames: ['fast-clock.example.com'], cluster: null, keyAlgorithm: 'ecdsa-p256' });
  const enrolledAt = new Date(Date.now() - 70 * DAY);
  const { token } = await createEnrollmentToken(plane.store, instance.id, enrolledAt, 60_000);
  const key = await generateKeyPair();
  const enrolled = await enrollAgent({ store: plane.store, ca: plane.ca }, token, await createCsr(key, ['certplane-agent']), enrolledAt);
  // The agent sees day 70 of 90 and asks; the plane's clock says day 55, short of the window.
  offset = -15 * DAY;
  const recorder = await startChannelRecorder(plane.url);
  const state = await openState(dir.path('agent-fast-clock'));
  await writeIdentity(state, { keyPem: key.privateKeyPem, certificatePem: enrolled.certificatePem, caPem: enrolled.caPem, instanceId: instance.id, server: recorder.url });
  const logger = pino({ level: 'silent' });
  const client = new AgentClient({ state, identity: (await readIdentity(state))!, installer: new Installer({ state, trustAnchors: [], logger }), logger, minBackoffMs: 50, maxBackoffMs: 200 });
  client.start();
  try {
    const refusal = await eventually(async () => recorder.frames.find((f) => f.direction === 'to-agent' && f.text.includes('identity_renewal_refused')), 10_000, 50, 'the refusal on the channel');
    assert.equal(JSON.parse(refusal.text).code, ErrorCode.AGENT_RENEWAL_TOO_EARLY);
    const session = plane.sessions.get(instance.id);
    assert.ok(session);
    // The agent's next frame would have closed the channel had it not understood the refusal.
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.equal(plane.sessions.get(instance.id), session, 'the refusal cost the agent its connection');
    assert.equal(recorder.frames.filter((f) => f.direction === 'to-server' && f.text.includes('"identity_renewal"')).length, 1);
    assert.equal(await agentCertificateCount(instance.id), 1);
    assert.equal((await readIdentity(state))?.certificatePem, enrolled.certificatePem);
  } finally {
    await client.stop();
    await recorder.close();
  }
});
