/**
 * Signed requests reuse the Replay-Nonce of earlier answers instead of asking newNonce
 * before each one, and never spend one nonce twice.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { reuseNonces } from '../../src/acme/nonces.js';

/** A stand-in for acme-client's HTTP client: a fresh nonce from newNonce when none is given, a new Replay-Nonce on every answer, badNonce retried through `this`. */
function fakeHttp(rejectFirst = 0) {
  let issued = 0;
  const used: string[] = [];
  let newNonceCalls = 0;
  let toReject = rejectFirst;
  const http = {
    async signedRequest(url: string, payload: unknown, options: { nonce?: string | null } = {}, attempts = 0): Promise<{ headers: Record<string, string | undefined>; bad?: boolean }> {
      let nonce = options.nonce;
      if (!nonce) {
        newNonceCalls += 1;
        nonce = `n${++issued}`;
      }
      used.push(nonce);
      const response = { headers: { 'replay-nonce': `n${++issued}` } };
      if (toReject > 0 && attempts < 5) {
        toReject -= 1;
        return this.signedRequest(url, payload, { nonce: response.headers['replay-nonce'] }, attempts + 1);
      }
      return response;
    },
  };
  return { client: { http }, http, used, newNonceCalls: () => newNonceCalls };
}

test('after the first answer no signed request asks newNonce: each uses the nonce of the answer before', async () => {
  const fake = fakeHttp();
  reuseNonces(fake.client);
  for (let i = 0; i < 5; i += 1) await fake.http.signedRequest('https://ca/x', null);
  assert.equal(fake.newNonceCalls(), 1);
  assert.deepEqual(fake.used, ['n1', 'n2', 'n3', 'n4', 'n5']);
});

test('a badNonce retry inside acme-client does not leave the same nonce to be spent twice', async () => {
  const fake = fakeHttp(2);
  reuseNonces(fake.client);
  for (let i = 0; i < 4; i += 1) await fake.http.signedRequest('https://ca/x', null);
  assert.equal(new Set(fake.used).size, fake.used.length, `nonces used: ${fake.used.join(', ')}`);
});

test('requests in flight at once each get a nonce of their own', async () => {
  const fake = fakeHttp();
  reuseNonces(fake.client);
  await Promise.all(Array.from({ length: 3 }, () => fake.http.signedRequest('https://ca/x', null)));
  await Promise.all(Array.from({ length: 3 }, () => fake.http.signedRequest('https://ca/x', null)));
  assert.equal(new Set(fake.used).size, 6);
  assert.equal(fake.newNonceCalls(), 3);
});
