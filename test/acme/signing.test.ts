/**
 * The account key parsed once (src/acme/signing.ts): acme-client's own JWS, built with the
 * parsed key, verifies against the account's JWK for both key types an account can have,
 * and the thumbprint behind every key authorization is unchanged.
 */
import assert from 'node:assert/strict';
import { createPublicKey, verify, type KeyObject } from 'node:crypto';
import { test } from 'node:test';
import acme from 'acme-client';
import { parseAccountKeyOnce } from '../../src/acme/signing.js';

interface Jws {
  readonly protected: string;
  readonly payload: string;
  readonly signature: string;
}
interface Http {
  accountKey: unknown;
  getJwk(): Record<string, string>;
  createSignedBody(url: string, payload: unknown, options: { nonce: string; kid: string }): Jws;
}

for (const [kind, makeKey] of [
  ['ECDSA P-256 (the account key certplane creates)', () => acme.crypto.createPrivateEcdsaKey('P-256')],
  ['RSA 2048 (an account key brought from elsewhere)', () => acme.crypto.createPrivateRsaKey(2048)],
] as const) {
  test(`${kind}: after parsing once, acme-client's signed requests verify against the account's JWK, and key authorizations are unchanged`, async () => {
    const keyPem = await makeKey();
    const before = new acme.Client({ directoryUrl: 'https://acme.invalid/dir', accountKey: keyPem });
    const client = new acme.Client({ directoryUrl: 'https://acme.invalid/dir', accountKey: keyPem });
    parseAccountKeyOnce(client);
    const http = (client as unknown as { http: Http }).http;
    assert.equal((http.accountKey as KeyObject).type, 'private', 'the client holds a parsed private key');

    const jwk = http.getJwk();
    assert.deepEqual(jwk, (before as unknown as { http: Http }).http.getJwk());
    const challenge = { type: 'http-01', url: 'https://acme.invalid/chall/1', status: 'pending', token: 'tok' } as const;
    assert.equal(await client.getChallengeKeyAuthorization(challenge), await before.getChallengeKeyAuthorization(challenge));

    for (let i = 0; i < 3; i += 1) {
      const body = http.createSignedBody('https://acme.invalid/new-order', { identifiers: [{ type: 'dns', value: `n${i}.example` }] }, { nonce: `nonce${i}`, kid: 'https://acme.invalid/acct/1' });
      const header = JSON.parse(Buffer.from(body.protected, 'base64url').toString('utf8')) as { alg: string; nonce: string };
      assert.equal(header.nonce, `nonce${i}`);
      const ec = jwk.kty === 'EC';
      assert.equal(header.alg, ec ? 'ES256' : 'RS256');
      const valid = verify('sha256', Buffer.from(`${body.protected}.${body.payload}`), { key: createPublicKey({ key: jwk, format: 'jwk' }), ...(ec ? { dsaEncoding: 'ieee-p1363' as const } : {}) }, Buffer.from(body.signature, 'base64url'));
      assert.ok(valid, 'the signature verifies with the account\'s public key');
    }
  });
}
