/**
 * The agent's signature on a revocation for key compromise: made with the key of the
 * certificate named (found among the keys the agent holds: pending, live, previous), in the
 * shape RFC 8555 §7.6 asks for a request signed by the certificate key (JWK in the protected
 * header, the plane's URL and nonce), over a payload the agent builds itself; refused for a
 * certificate whose key the agent does not hold.
 */
import assert from 'node:assert/strict';
import { X509Certificate, createPublicKey, verify } from 'node:crypto';
import path from 'node:path';
import { test } from 'node:test';
import pino from 'pino';
import { Installer } from '../../src/agent/install.js';
import { signRevocation } from '../../src/agent/revocation.js';
import { PRIVATE_FILE_MODE, PUBLIC_FILE_MODE, PairFile, openState, writeFileAtomic } from '../../src/agent/state.js';
import { hasCode } from '../../src/errors.js';
import { scratch } from '../support/cli.js';
import { leaf, root } from '../support/hierarchies.js';
import { ErrorCode } from '../../src/error-catalogue.js';

const decode = (part: string) => JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));

test('the agent signs a revocation of its live certificate with that certificate\'s key, JWK in the header, over the URL and nonce the plane gave', async (t) => {
  const dir = await scratch('certplane-agent-revoke-');
  t.after(() => dir.remove());
  const state = await openState(dir.path('state'));
  const live = await leaf(await root('Revocation Test Root'), ['db1.example.com']);
  await writeFileAtomic(path.join(state.liveDir, PairFile.privkey), live.key.privateKeyPem, PRIVATE_FILE_MODE);
  await writeFileAtomic(path.join(state.liveDir, PairFile.fullchain), live.cert.pem, PUBLIC_FILE_MODE);
  const installer = new Installer({ state, trustAnchors: [], logger: pino({ level: 'silent' }) });
  const certificate = new X509Certificate(live.cert.pem).raw.toString('base64url');
  const url = 'https://ca.test/revoke-cert';
  const jws = await signRevocation(
    { v: 1, type: 'revocation_sign', requestId: 'r1', certificateId: '6f1c1d7e-52f3-4b8e-9a59-0d3c0c4b8f11', url, nonce: 'nonce-from-the-ca', certificate, reason: 1 },
    (spki, id) => installer.keyFor(spki, id),
  );
  const header = decode(jws.protected);
  assert.equal(header.alg, 'ES256');
  assert.equal(header.url, url);
  assert.equal(header.nonce, 'nonce-from-the-ca');
  assert.equal(header.kid, undefined, 'no account: the certificate key speaks for itself');
  assert.deepEqual(header.jwk, createPublicKey(live.key.publicKeyPem).export({ format: 'jwk' }));
  assert.deepEqual(decode(jws.payload), { certificate, reason: 1 });
  const signed = verify('sha256', Buffer.from(`${jws.protected}.${jws.payload}`), { key: live.key.publicKeyPem, dsaEncoding: 'ieee-p1363' }, Buffer.from(jws.signature, 'base64url'));
  assert.ok(signed, 'the signature verifies with the certificate\'s public key');
});

test('the agent refuses to sign for a certificate whose key it does not hold', async (t) => {
  const dir = await scratch('certplane-agent-revoke-');
  t.after(() => dir.remove());
  const state = await openState(dir.path('state'));
  const ca = await root('Revocation Test Root');
  const mine = await leaf(ca, ['db1.example.com']);
  const someoneElses = await leaf(ca, ['db1.example.com']);
  await writeFileAtomic(path.join(state.liveDir, PairFile.privkey), mine.key.privateKeyPem, PRIVATE_FILE_MODE);
  await writeFileAtomic(path.join(state.liveDir, PairFile.fullchain), mine.cert.pem, PUBLIC_FILE_MODE);
  const installer = new Installer({ state, trustAnchors: [], logger: pino({ level: 'silent' }) });
  await assert.rejects(
    signRevocation(
      { v: 1, type: 'revocation_sign', requestId: 'r2', certificateId: '6f1c1d7e-52f3-4b8e-9a59-0d3c0c4b8f12', url: 'https://ca.test/revoke-cert', nonce: 'n', certificate: new X509Certificate(someoneElses.cert.pem).raw.toString('base64url'), reason: 1 },
      (spki, id) => installer.keyFor(spki, id),
    ),
    (error: unknown) => hasCode(error, ErrorCode.AGENT_REVOCATION_KEY_UNKNOWN),
  );
});
