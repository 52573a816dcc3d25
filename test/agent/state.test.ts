import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { hasCode } from '../../src/errors.js';
import { appendJournal, openState, readIdentity, readJournal, writeFileAtomic, writeIdentity } from '../../src/agent/state.js';
import { ErrorCode } from '../../src/error-catalogue.js';

async function temporaryDirectory(t: TestContext): Promise<string> {
  const directory = await fs.mkdtemp(path.join(os.tmpdir(), 'certplane-state-'));
  t.after(() => fs.rm(directory, { recursive: true, force: true }));
  return directory;
}

const modeOf = async (file: string): Promise<number> => (await fs.stat(file)).mode & 0o777;

test('opening creates the layout with private directories', async (t) => {
  const dir = path.join(await temporaryDirectory(t), 'state');
  const state = await openState(dir);

  assert.equal(state.dir, dir);
  assert.equal(await modeOf(dir), 0o700);
  for (const sub of [state.identityDir, state.pendingDir, state.liveDir, state.previousDir]) assert.equal(await modeOf(sub), 0o700, sub);
  assert.deepEqual((await fs.readdir(dir)).sort(), ['identity', 'live', 'pending', 'previous']);
});

test('refuses to start when the state directory is open to group or others', async (t) => {
  const dir = path.join(await temporaryDirectory(t), 'state');
  await openState(dir);
  await fs.chmod(dir, 0o750);

  await assert.rejects(openState(dir), (error) => hasCode(error, ErrorCode.AGENT_STATE_PERMISSIONS) && /chmod 700/.test(error.message));
});

test('refuses to start when a key file is open to group or others', async (t) => {
  const dir = path.join(await temporaryDirectory(t), 'state');
  const state = await openState(dir);
  for (const file of [path.join(state.pendingDir, 'cert-1.key.pem'), path.join(state.liveDir, 'privkey.pem'), path.join(state.identityDir, 'key.pem')]) {
    await writeFileAtomic(file, 'key', 0o640);
    await assert.rejects(openState(dir), (error) => hasCode(error, ErrorCode.AGENT_STATE_PERMISSIONS) && error.details.path === file, file);
    await fs.chmod(file, 0o600);
  }
  await openState(dir);
});

test('writeFileAtomic sets the exact mode whatever the umask, replaces content and leaves no temporary file', async (t) => {
  const state = await openState(path.join(await temporaryDirectory(t), 'state'));
  const file = path.join(state.liveDir, 'fullchain.pem');
  const umask = process.umask(0o077);
  try {
    await writeFileAtomic(file, 'first', 0o644);
  } finally {
    process.umask(umask);
  }
  await writeFileAtomic(file, 'second', 0o644);

  assert.equal(await fs.readFile(file, 'utf8'), 'second');
  assert.equal(await modeOf(file), 0o644);
  assert.deepEqual(await fs.readdir(state.liveDir), ['fullchain.pem']);
});

test('temporary files left by a crash are removed on open', async (t) => {
  const dir = path.join(await temporaryDirectory(t), 'state');
  const state = await openState(dir);
  const leftover = path.join(state.liveDir, '.privkey.pem.1234.abcdef.tmp');
  await fs.writeFile(leftover, 'half a key', { mode: 0o600 });

  await openState(dir);
  assert.deepEqual(await fs.readdir(state.liveDir), []);
});

test('identity round-trips, with a private key file, and is null before enrollment', async (t) => {
  const state = await openState(path.join(await temporaryDirectory(t), 'state'));
  assert.equal(await readIdentity(state), null);

  const identity = { keyPem: 'KEY', certificatePem: 'CERT', caPem: 'CA', instanceId: 'inst-1', server: 'https://plane.example.com/' };
  await writeIdentity(state, identity);

  assert.deepEqual(await readIdentity(state), identity);
  assert.equal(await modeOf(path.join(state.identityDir, 'key.pem')), 0o600);
  await fs.writeFile(path.join(state.identityDir, 'instance.json'), '{"instanceId":"x"}');
  await assert.rejects(readIdentity(state), (error) => hasCode(error, ErrorCode.AGENT_IDENTITY_INVALID));
});

test('the journal appends in order and survives a line torn by a crash', async (t) => {
  const state = await openState(path.join(await temporaryDirectory(t), 'state'));
  const entry = (event: 'installed' | 'reloaded', certificateId: string) => ({ at: '2026-05-20T00:00:00.000Z', event, certificateId, fingerprintSha256: 'ab'.repeat(32) });
  await appendJournal(state, entry('installed', 'a'));
  await fs.appendFile(state.journalPath, '{"at":"2026-05-20T00:00:00.000Z","ev');

  assert.deepEqual(await readJournal(state), [entry('installed', 'a')]);
  await appendJournal(state, entry('reloaded', 'a'));
  assert.deepEqual(await readJournal(state), [entry('installed', 'a'), entry('reloaded', 'a')]);

  await fs.appendFile(state.journalPath, 'garbage\n');
  await assert.rejects(readJournal(state), (error) => hasCode(error, ErrorCode.AGENT_JOURNAL_CORRUPT) && error.details.line === 3);
});
