import assert from 'node:assert/strict';
import { createHash, createPublicKey, generateKeyPairSync } from 'node:crypto';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { parseCsr } from '../../src/chain/index.js';
import { hasCode } from '../../src/errors.js';
import { createPendingKey, discardPendingKey, listPendingCertificateIds, pendingKeyPath, spkiSha256OfPrivateKeyPem } from '../../src/agent/keys.js';
import { openState, type AgentState } from '../../src/agent/state.js';
import { ErrorCode } from '../../src/error-catalogue.js';

async function temporaryState(t: TestContext): Promise<AgentState> {
  const directory = await fs.mkdtemp(path.join(os.tmpdir(), 'certplane-keys-'));
  t.after(() => fs.rm(directory, { recursive: true, force: true }));
  return openState(path.join(directory, 'state'));
}

test('a pending key is a 0600 file and the CSR names the hostnames and certifies that key', async (t) => {
  const state = await temporaryState(t);
  const { csrPem } = await createPendingKey(state, 'cert-1', 'ecdsa-p256', ['db1.example.com', 'db1-replica.example.com']);

  const file = pendingKeyPath(state, 'cert-1');
  assert.equal((await fs.stat(file)).mode & 0o777, 0o600);
  const csr = await parseCsr(csrPem);
  assert.deepEqual([...csr.dnsNames].sort(), ['db1-replica.example.com', 'db1.example.com']);
  assert.equal(csr.keyDescription, 'ECDSA P-256');
  assert.equal(csr.spkiSha256, spkiSha256OfPrivateKeyPem(await fs.readFile(file, 'utf8')));
  assert.doesNotMatch(csrPem, /PRIVATE KEY/);
  assert.deepEqual(await listPendingCertificateIds(state), ['cert-1']);
});

test('asking again for the same certificate reuses the pending key', async (t) => {
  const state = await temporaryState(t);
  const first = await parseCsr((await createPendingKey(state, 'cert-2', 'ecdsa-p256', ['db2.example.com'])).csrPem);
  const keyBefore = await fs.readFile(pendingKeyPath(state, 'cert-2'), 'utf8');
  const second = await parseCsr((await createPendingKey(state, 'cert-2', 'ecdsa-p256', ['db2.example.com'])).csrPem);

  assert.equal(second.spkiSha256, first.spkiSha256);
  assert.equal(await fs.readFile(pendingKeyPath(state, 'cert-2'), 'utf8'), keyBefore);
  const other = await parseCsr((await createPendingKey(state, 'cert-3', 'ecdsa-p256', ['db2.example.com'])).csrPem);
  assert.notEqual(other.spkiSha256, first.spkiSha256);
});

test('concurrent requests for one certificate agree on one key', async (t) => {
  const state = await temporaryState(t);
  const csrs = await Promise.all([1, 2, 3, 4].map(() => createPendingKey(state, 'cert-race', 'ecdsa-p256', ['db.example.com'])));
  const keys = new Set(await Promise.all(csrs.map(async ({ csrPem }) => (await parseCsr(csrPem)).spkiSha256)));

  assert.equal(keys.size, 1);
  assert.equal([...keys][0], spkiSha256OfPrivateKeyPem(await fs.readFile(pendingKeyPath(state, 'cert-race'), 'utf8')));
  assert.deepEqual(await fs.readdir(state.pendingDir), ['cert-race.key.pem']);
});

test('RSA 3072 keys work', async (t) => {
  const state = await temporaryState(t);
  const { csrPem } = await createPendingKey(state, 'cert-rsa', 'rsa-3072', ['rsa.example.com']);
  const again = await createPendingKey(state, 'cert-rsa', 'rsa-3072', ['rsa.example.com']);

  const csr = await parseCsr(csrPem);
  assert.equal(csr.keyDescription, 'RSA 3072');
  assert.equal((await parseCsr(again.csrPem)).spkiSha256, csr.spkiSha256);
});

test('a pending key of another algorithm is not silently reused', async (t) => {
  const state = await temporaryState(t);
  await createPendingKey(state, 'cert-4', 'ecdsa-p256', ['db4.example.com']);

  await assert.rejects(createPendingKey(state, 'cert-4', 'rsa-2048', ['db4.example.com']), (error) => hasCode(error, ErrorCode.AGENT_PENDING_KEY_CONFLICT));
});

test('invalid certificate ids are refused before they touch the file system', async (t) => {
  const state = await temporaryState(t);
  for (const id of ['../live/privkey', 'a/b', '', 'x'.repeat(65), 'cert.1', 'cert 1']) {
    await assert.rejects(createPendingKey(state, id, 'ecdsa-p256', ['db.example.com']), (error) => hasCode(error, ErrorCode.AGENT_BAD_CERTIFICATE_ID), id);
    await assert.rejects(discardPendingKey(state, id), (error) => hasCode(error, ErrorCode.AGENT_BAD_CERTIFICATE_ID), id);
  }
  assert.deepEqual(await fs.readdir(state.pendingDir), []);
  assert.deepEqual(await fs.readdir(state.liveDir), []);
});

test('discarding removes the pending key and is idempotent', async (t) => {
  const state = await temporaryState(t);
  await createPendingKey(state, 'cert-5', 'ecdsa-p256', ['db5.example.com']);
  await discardPendingKey(state, 'cert-5');
  await discardPendingKey(state, 'cert-5');

  assert.deepEqual(await listPendingCertificateIds(state), []);
  await assert.rejects(fs.stat(pendingKeyPath(state, 'cert-5')), { code: 'ENOENT' });
});

test("a key's SPKI digest is remembered by its text and stays each key's own, primed (ECDSA and RSA) or decoded", async (t) => {
  const state = await temporaryState(t);
  const direct = (pem: string) => createHash('sha256').update(createPublicKey(pem).export({ type: 'spki', format: 'der' })).digest('hex');
  await createPendingKey(state, 'cert-a', 'ecdsa-p256', ['a.example.com']);
  await createPendingKey(state, 'cert-b', 'rsa-2048', ['b.example.com']);
  const [a, b] = await Promise.all(['cert-a', 'cert-b'].map((id) => fs.readFile(pendingKeyPath(state, id), 'utf8')));
  const unseen = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  for (let round = 0; round < 2; round += 1) {
    assert.deepEqual([a, b, unseen].map((pem) => spkiSha256OfPrivateKeyPem(pem!)), [a, b, unseen].map((pem) => direct(pem!)), `round ${round + 1}`);
  }
  assert.notEqual(spkiSha256OfPrivateKeyPem(a!), spkiSha256OfPrivateKeyPem(b!));
});
