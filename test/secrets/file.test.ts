import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { hasCode } from '../../src/errors.js';
import { FileSecretStore } from '../../src/secrets/file.js';
import { ErrorCode } from '../../src/error-catalogue.js';

async function temporaryDirectory(t: TestContext): Promise<string> {
  const directory = await fs.mkdtemp(path.join(os.tmpdir(), 'certplane-secrets-'));
  t.after(() => fs.rm(directory, { recursive: true, force: true }));
  return directory;
}

function modeOf(stat: { mode: number }): number {
  return stat.mode & 0o777;
}

test('put then get returns the value, in a 0700 directory of 0600 files', async (t) => {
  const directory = path.join(await temporaryDirectory(t), 'secrets');
  const store = await FileSecretStore.open(directory);

  assert.equal(store.description, `file:${directory}`);
  assert.equal(await store.get('acme-account-abc123'), undefined);
  await store.put('acme-account-abc123', 'first\nkey');
  await store.put('acme-account-abc123', 'second key');

  assert.equal(await store.get('acme-account-abc123'), 'second key');
  assert.equal(modeOf(await fs.stat(directory)), 0o700);
  assert.equal(modeOf(await fs.stat(path.join(directory, 'acme-account-abc123'))), 0o600);
  assert.deepEqual(await fs.readdir(directory), ['acme-account-abc123']);
});

test('createIfMissing keeps the first value and returns it on later calls', async (t) => {
  const directory = await temporaryDirectory(t);
  const store = await FileSecretStore.open(directory);

  assert.equal(await store.createIfMissing('agent-ca-key', 'original'), 'original');
  assert.equal(await store.createIfMissing('agent-ca-key', 'replacement'), 'original');

  assert.equal(await store.get('agent-ca-key'), 'original');
  assert.equal(modeOf(await fs.stat(path.join(directory, 'agent-ca-key'))), 0o600);
  assert.deepEqual(await fs.readdir(directory), ['agent-ca-key']);
});

test('concurrent createIfMissing calls from two stores converge on one value', async (t) => {
  const directory = await temporaryDirectory(t);
  const [first, second] = await Promise.all([FileSecretStore.open(directory), FileSecretStore.open(directory)]);

  const results = await Promise.all([
    first.createIfMissing('acme-account-race', 'value-from-first'),
    second.createIfMissing('acme-account-race', 'value-from-second'),
  ]);

  assert.equal(results[0], results[1]);
  assert.ok(['value-from-first', 'value-from-second'].includes(results[0]));
  assert.equal(await first.get('acme-account-race'), results[0]);
  assert.deepEqual(await fs.readdir(directory), ['acme-account-race']);
});

test('open refuses a secret file readable by its group and names the chmod fix', async (t) => {
  const directory = await temporaryDirectory(t);
  await fs.chmod(directory, 0o700);
  const file = path.join(directory, 'acme-account-abc123');
  await fs.writeFile(file, 'exposed-secret-value', { mode: 0o600 });
  await fs.chmod(file, 0o640);

  await assert.rejects(FileSecretStore.open(directory), (error) => {
    assert.ok(hasCode(error, ErrorCode.SECRETS_FILE_PERMISSIONS));
    assert.ok(error.message.includes(`chmod 600 ${file}`), error.message);
    assert.ok(!JSON.stringify(error.toJSON()).includes('exposed-secret-value'));
    return true;
  });
});

test('open refuses a directory readable by others and names the chmod fix', async (t) => {
  const directory = await temporaryDirectory(t);
  await fs.chmod(directory, 0o755);

  await assert.rejects(FileSecretStore.open(directory), (error) => {
    assert.ok(hasCode(error, ErrorCode.SECRETS_FILE_PERMISSIONS));
    assert.ok(error.message.includes(`chmod 700 ${directory}`), error.message);
    return true;
  });
});

test('get refuses a secret file that became group-readable after open', async (t) => {
  const directory = await temporaryDirectory(t);
  const store = await FileSecretStore.open(directory);
  await store.put('agent-ca-key', 'private');
  await fs.chmod(path.join(directory, 'agent-ca-key'), 0o604);

  await assert.rejects(store.get('agent-ca-key'), (error) => hasCode(error, ErrorCode.SECRETS_FILE_PERMISSIONS));
});

test('names that could escape the directory are refused before touching the disk', async (t) => {
  const directory = await temporaryDirectory(t);
  const store = await FileSecretStore.open(directory);

  for (const name of ['../x', 'a/b', '', '..', '.hidden', 'a\\b', 'x'.repeat(129)]) {
    await assert.rejects(store.get(name), (error) => hasCode(error, ErrorCode.SECRETS_INVALID_NAME), `get(${JSON.stringify(name)})`);
    await assert.rejects(store.put(name, 'value'), (error) => hasCode(error, ErrorCode.SECRETS_INVALID_NAME), `put(${JSON.stringify(name)})`);
    await assert.rejects(store.createIfMissing(name, 'value'), (error) => hasCode(error, ErrorCode.SECRETS_INVALID_NAME), `createIfMissing(${JSON.stringify(name)})`);
  }
  assert.deepEqual(await fs.readdir(directory), []);
  await assert.rejects(fs.stat(path.join(directory, '..', 'x')));
});

test('open reports a path that is a file, not a directory, as SECRETS_IO', async (t) => {
  const directory = await temporaryDirectory(t);
  const file = path.join(directory, 'not-a-directory');
  await fs.writeFile(file, '', { mode: 0o600 });

  await assert.rejects(FileSecretStore.open(file), (error) => hasCode(error, ErrorCode.SECRETS_IO));
});
