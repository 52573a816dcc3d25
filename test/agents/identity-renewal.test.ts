/** Agent certificates are renewed over the channel before they expire, with a fresh identity key. */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import pino from 'pino';
import { AgentClient, identityNeedsRenewal } from '../../src/agent/client.js';
import { Installer } from '../../src/agent/install.js';
import { openState, readIdentity, writeIdentity } from '../../src/agent/state.js';
import { createEnrollmentToken, enrollAgent } from '../../src/agents/enrollment.js';
import { parseCertificateBundle } from '../../src/chain/index.js';
import { createCsr, generateKeyPair } from '../../src/pki/factory.js';
import { scratch } from '../support/cli.js';
import { eventually } from '../support/processes.js';
import { startTestPlane, type TestPlane } from '../support/plane.js';

const DAY = 86_400_000;
let plane: TestPlane;
const dir = await scratch('certplane-identity-');
before(async () => {
  plane = await startTestPlane();
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
