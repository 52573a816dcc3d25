/**
 * The plane's half of a keyCompromise revocation signed by the certificate key, against
 * Pebble, with the agent's side spoken by hand: the plane sends the agent the revokeCert URL,
 * a fresh nonce, the certificate and the reason; it posts what the agent signed (asking
 * again over a fresh nonce when Pebble rejects one, as it does on purpose); and when the
 * agent does not answer within the bounded wait, or refuses, the account key signs instead.
 * The certificate was issued to another ACME account, so the plane's account key may not
 * revoke it: only the certificate key can, which tells the two signers apart at the CA.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { ChalltestsrvDnsProvider } from '../../src/acme/dns/challtestsrv.js';
import { AcmeIssuer } from '../../src/acme/issuer.js';
import { Dns01Solver } from '../../src/acme/solver.js';
import { signRevocation } from '../../src/agent/revocation.js';
import { parseCertificateBundle } from '../../src/chain/index.js';
import { startPebble, type LocalPebble } from '../../src/devenv/pebble.js';
import { createCsr, generateKeyPair, type KeyPair } from '../../src/pki/factory.js';
import { FileSecretStore } from '../../src/secrets/index.js';
import { scratch } from '../support/cli.js';
import { advance } from '../support/lifecycle.js';
import { enrollTestAgent, openAgentChannel, startTestPlane, type AgentChannel, type TestPlane } from '../support/plane.js';
import { ErrorCode } from '../../src/error-catalogue.js';

const TIMEOUT = { timeout: 180_000 };

describe('keyCompromise signed by the certificate key, the plane against Pebble', async () => {
  const dir = await scratch('certplane-signing-');
  let pebble: LocalPebble;
  let plane: TestPlane;
  let otherAccount: AcmeIssuer;

  /** A certificate Pebble issued to another account, installed on a new instance whose agent speaks by hand. */
  const compromised = async (name: string): Promise<{ certificateId: string; key: KeyPair; fullchainPem: string; channel: AgentChannel }> => {
    const key = await generateKeyPair();
    const issued = await otherAccount.issue(await createCsr(key, [`${name}.signing.test`]));
    const agent = await enrollTestAgent(plane, name, [`${name}.signing.test`]);
    const certificate = await plane.store.certificates.create(agent.instanceId);
    await advance(plane.store, certificate.id, 'installed', { fullchainPem: issued.fullchainPem });
    const channel = await openAgentChannel(plane, agent);
    await channel.next('welcome');
    return { certificateId: certificate.id, key, fullchainPem: issued.fullchainPem, channel };
  };
  const revoke = async (certificateId: string) => {
    const response = await plane.app.inject({ method: 'POST', url: `/v1/certificates/${certificateId}/revoke`, payload: { reason: 'keyCompromise', reissue: false } });
    return { status: response.statusCode, body: response.json() as Record<string, any> };
  };
  const atPebble = (fullchainPem: string) => pebble.certificateStatus(new X509Certificate(fullchainPem).serialNumber);

  before(async () => {
    pebble = await startPebble({ alternateRoots: 0 });
    const root = parseCertificateBundle((await pebble.roots())[0]!)[0]!;
    otherAccount = new AcmeIssuer({
      directoryUrl: pebble.directoryUrl,
      serverCaPem: pebble.acmeServerCaPem,
      secrets: await FileSecretStore.open(dir.path('other-account')),
      solvers: [new Dns01Solver(new ChalltestsrvDnsProvider(pebble.challtestsrvUrl))],
      chainPolicy: { preferences: [root.subjectCN], fallback: 'none', trustAnchors: [root], distrustedSpkiSha256: new Set() },
      logger: pino({ level: 'silent' }),
    });
    plane = await startTestPlane({ acmeDirectoryUrl: pebble.directoryUrl, acmeServerCaPem: pebble.acmeServerCaPem, signingTimeoutMs: 1500 });
  });
  after(async () => {
    await plane?.close();
    await pebble?.stop();
    await dir.remove();
  });

  test('the agent signs what the plane sends (again over a fresh nonce when Pebble rejects one) and Pebble revokes the certificate as compromised', TIMEOUT, async () => {
    const { certificateId, key, fullchainPem, channel } = await compromised('signed');
    const asked: Record<string, any>[] = [];
    channel.socket.on('message', (data) => {
      const frame = JSON.parse(data.toString());
      if (frame.type !== 'revocation_sign') return;
      asked.push(frame);
      void signRevocation(frame, async () => key.privateKeyPem).then((jws) => channel.send({ type: 'revocation_signed', requestId: frame.requestId, jws }));
    });
    const revoked = await revoke(certificateId);
    assert.equal(revoked.status, 200, JSON.stringify(revoked.body));
    assert.deepEqual([revoked.body.certificate.revocation.signedBy, revoked.body.certificate.revocation.certificateKeyUnavailable], ['certificate-key', null]);
    assert.deepEqual(await atPebble(fullchainPem), { status: 'Revoked', reason: 1 });
    assert.ok(asked.length >= 1);
    const [first] = asked;
    assert.equal(first!.certificateId, certificateId);
    assert.equal(first!.reason, 1);
    assert.equal(first!.certificate, new X509Certificate(fullchainPem).raw.toString('base64url'));
    assert.match(first!.url, /^https:\/\/127\.0\.0\.1:\d+\/revoke-cert$/);
    assert.equal(new Set(asked.map((frame) => frame.nonce)).size, asked.length, 'a fresh nonce every time');
  });

  test('an agent that does not answer within the bounded wait: the account key signs instead, which may not revoke another account\'s certificate', TIMEOUT, async () => {
    const { certificateId, fullchainPem, channel } = await compromised('silent');
    const started = Date.now();
    const refused = await revoke(certificateId);
    assert.ok(channel.frames.some((frame) => frame.type === 'revocation_sign' && frame.certificateId === certificateId), 'the agent was asked first');
    assert.ok(Date.now() - started >= 1500, 'the plane waited for the agent');
    assert.deepEqual([refused.status, refused.body.code], [502, ErrorCode.ACME_ACCOUNT_REFUSED], JSON.stringify(refused.body));
    assert.deepEqual(await atPebble(fullchainPem), { status: 'Valid', reason: null });
    assert.equal((await plane.store.certificates.get(certificateId))?.status, 'installed', 'nothing recorded');
  });

  test('an agent that holds no key for the certificate refuses at once, and the account key signs instead', TIMEOUT, async () => {
    const { certificateId, channel } = await compromised('keyless');
    channel.socket.on('message', (data) => {
      const frame = JSON.parse(data.toString());
      if (frame.type === 'revocation_sign') channel.send({ type: 'error', requestId: frame.requestId, code: ErrorCode.AGENT_REVOCATION_KEY_UNKNOWN, message: 'this agent holds no key for that certificate' });
    });
    const started = Date.now();
    const refused = await revoke(certificateId);
    assert.ok(Date.now() - started < 1500, 'no wait for a refusal');
    assert.deepEqual([refused.status, refused.body.code], [502, ErrorCode.ACME_ACCOUNT_REFUSED], JSON.stringify(refused.body));
  });
});
