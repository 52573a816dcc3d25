import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promises as fs, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { promisify } from 'node:util';
import { parseCertificateBundle, type Certificate } from '../../src/chain/index.js';
import { hasCode } from '../../src/errors.js';
import type { IssuedCertificate } from '../../src/pki/factory.js';
import { Installer, type InstallerOptions } from '../../src/agent/install.js';
import { createPendingKey, pendingKeyPath, spkiSha256OfPrivateKeyPem } from '../../src/agent/keys.js';
import { appendJournal, openState, readJournal, writeFileAtomic, type AgentState, type JournalEntry } from '../../src/agent/state.js';
import { crossSign, intermediate, leaf, leafForCsr, pem, root } from '../support/hierarchies.js';
import { ErrorCode } from '../../src/error-catalogue.js';

interface Fixture {
  readonly dir: string;
  readonly state: AgentState;
  readonly ca: IssuedCertificate;
  readonly anchors: Certificate[];
  /** One line per reload run: "FINGERPRINT FULLCHAIN_PATH PRIVKEY_PATH". */
  readonly reloadLog: string;
  /** A reload command that records its environment and succeeds. */
  readonly reloadCommand: string;
}

interface Delivery {
  readonly certificateId: string;
  readonly fullchainPem: string;
  readonly fingerprint: string;
}

async function fixture(t: TestContext): Promise<Fixture> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'certplane-install-'));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  const trustedRoot = await root('Test Root X1');
  const ca = await intermediate('Test CA R1', trustedRoot);
  const reloadLog = path.join(dir, 'reloads.log');
  return {
    dir,
    state: await openState(path.join(dir, 'state')),
    ca,
    anchors: parseCertificateBundle(trustedRoot.pem),
    reloadLog,
    reloadCommand: recordingCommand(reloadLog),
  };
}

function recordingCommand(log: string): string {
  return `printf '%s %s %s\\n' "$CERTPLANE_FINGERPRINT" "$CERTPLANE_FULLCHAIN" "$CERTPLANE_PRIVKEY" >> '${log}'`;
}

function installer(fx: Fixture, options: Partial<InstallerOptions> = {}): Installer {
  return new Installer({ state: fx.state, trustAnchors: fx.anchors, reloadCommand: fx.reloadCommand, ...options });
}

/** What the plane would deliver: the agent makes a key and CSR, the CA issues for the CSR. */
async function deliveryFor(fx: Fixture, certificateId: string, issuer: IssuedCertificate = fx.ca): Promise<Delivery> {
  const { csrPem } = await createPendingKey(fx.state, certificateId, 'ecdsa-p256', [`${certificateId}.db.example.com`]);
  const issued = await leafForCsr(issuer, csrPem);
  return { certificateId, fullchainPem: pem(issued, issuer), fingerprint: fingerprintOf(issued.pem) };
}

function fingerprintOf(certificatePem: string): string {
  return (parseCertificateBundle(certificatePem)[0] as Certificate).fingerprintSha256;
}

function deliver(target: Installer, delivery: Delivery) {
  return target.install(delivery.certificateId, delivery.fullchainPem, delivery.fingerprint);
}

async function reloadedFingerprints(fx: Fixture): Promise<string[]> {
  const text = await fs.readFile(fx.reloadLog, 'utf8').catch(() => '');
  return text.split('\n').filter(Boolean).map((line) => line.split(' ')[0] as string);
}

function events(journal: readonly JournalEntry[]): string[] {
  return journal.map((entry) => `${entry.event} ${entry.certificateId}`);
}

/** Every file under the state directory with its bytes, mode and mtime: equal snapshots mean nothing changed. */
async function snapshot(dir: string): Promise<Record<string, { content: string; mode: number; mtimeMs: number }>> {
  const result: Record<string, { content: string; mode: number; mtimeMs: number }> = {};
  for (const entry of await fs.readdir(dir, { recursive: true })) {
    const file = path.join(dir, entry);
    const stat = await fs.stat(file);
    if (stat.isFile()) result[entry] = { content: readFileSync(file, 'base64'), mode: stat.mode & 0o777, mtimeMs: stat.mtimeMs };
  }
  return result;
}

const live = (fx: Fixture, name: string) => path.join(fx.state.liveDir, name);
const previous = (fx: Fixture, name: string) => path.join(fx.state.previousDir, name);
const modeOf = async (file: string) => (await fs.stat(file)).mode & 0o777;

test('a first install writes both files with their modes, reloads once and journals installed then reloaded', async (t) => {
  const fx = await fixture(t);
  const c1 = await deliveryFor(fx, 'c1');
  const pendingKeyPem = await fs.readFile(pendingKeyPath(fx.state, 'c1'), 'utf8');
  const agent = installer(fx);

  assert.deepEqual(await deliver(agent, c1), { fingerprintSha256: c1.fingerprint, alreadyInstalled: false });

  assert.equal(await fs.readFile(live(fx, 'fullchain.pem'), 'utf8'), c1.fullchainPem);
  assert.equal(await fs.readFile(live(fx, 'privkey.pem'), 'utf8'), pendingKeyPem);
  assert.equal(await modeOf(live(fx, 'fullchain.pem')), 0o644);
  assert.equal(await modeOf(live(fx, 'privkey.pem')), 0o600);
  assert.deepEqual(await fs.readdir(fx.state.pendingDir), []);
  assert.deepEqual(await fs.readdir(fx.state.previousDir), []);
  assert.deepEqual(events(await readJournal(fx.state)), ['installed c1', 'reloaded c1']);
  assert.equal(await fs.readFile(fx.reloadLog, 'utf8'), `${c1.fingerprint} ${live(fx, 'fullchain.pem')} ${live(fx, 'privkey.pem')}\n`);
  assert.equal(await agent.installedFingerprint(), c1.fingerprint);
});

test('delivering the same certificate again changes nothing', async (t) => {
  const fx = await fixture(t);
  const c1 = await deliveryFor(fx, 'c1');
  const agent = installer(fx);
  await deliver(agent, c1);
  const before = await snapshot(fx.dir);

  assert.deepEqual(await deliver(agent, c1), { fingerprintSha256: c1.fingerprint, alreadyInstalled: true });
  assert.deepEqual(await deliver(installer(fx), c1), { fingerprintSha256: c1.fingerprint, alreadyInstalled: true });

  assert.deepEqual(await snapshot(fx.dir), before);
  assert.deepEqual(await reloadedFingerprints(fx), [c1.fingerprint]);
});

test('a new certificate moves the old pair to previous/', async (t) => {
  const fx = await fixture(t);
  const agent = installer(fx);
  await deliver(agent, await deliveryFor(fx, 'c1'));
  const oldChain = await fs.readFile(live(fx, 'fullchain.pem'));
  const oldKey = await fs.readFile(live(fx, 'privkey.pem'));
  const c2 = await deliveryFor(fx, 'c2');

  assert.equal((await deliver(agent, c2)).alreadyInstalled, false);

  assert.deepEqual(await fs.readFile(previous(fx, 'fullchain.pem')), oldChain);
  assert.deepEqual(await fs.readFile(previous(fx, 'privkey.pem')), oldKey);
  assert.equal(await modeOf(previous(fx, 'privkey.pem')), 0o600);
  assert.equal(await fs.readFile(live(fx, 'fullchain.pem'), 'utf8'), c2.fullchainPem);
  assert.equal(await agent.installedFingerprint(), c2.fingerprint);
  assert.notDeepEqual(await fs.readFile(live(fx, 'privkey.pem')), oldKey);
});

test('chains for another key, with another fingerprint, or not verifying here are refused with nothing changed', async (t) => {
  const fx = await fixture(t);
  const agent = installer(fx);
  await deliver(agent, await deliveryFor(fx, 'c1'));
  const c2 = await deliveryFor(fx, 'c2');
  const before = await snapshot(fx.dir);

  const foreign = await leaf(fx.ca, ['c2.db.example.com']);
  await assert.rejects(agent.install('c2', pem(foreign.cert, fx.ca), fingerprintOf(foreign.cert.pem)), (error) => hasCode(error, ErrorCode.AGENT_KEY_MISMATCH));

  await assert.rejects(agent.install('c2', c2.fullchainPem, 'ab'.repeat(32)), (error) => hasCode(error, ErrorCode.AGENT_FINGERPRINT_MISMATCH));

  const impostorRoot = await root('Test Root X1');
  const impostorCa = await intermediate('Test CA R1', impostorRoot);
  const { csrPem } = await createPendingKey(fx.state, 'c2', 'ecdsa-p256', ['c2.db.example.com']);
  const underImpostor = await leafForCsr(impostorCa, csrPem);
  await assert.rejects(
    agent.install('c2', pem(underImpostor, impostorCa), fingerprintOf(underImpostor.pem)),
    (error) => hasCode(error, ErrorCode.AGENT_CHAIN_UNVERIFIED) && /CHAIN_BAD_SIGNATURE/.test(error.message),
  );

  const later = installer(fx, { clock: () => new Date(Date.now() + 400 * 24 * 60 * 60 * 1000) });
  await assert.rejects(deliver(later, c2), (error) => hasCode(error, ErrorCode.AGENT_CHAIN_UNVERIFIED) && (error.details.codes as string[]).includes(ErrorCode.CHAIN_EXPIRED));

  await assert.rejects(agent.install('c2', 'not a chain', c2.fingerprint), (error) => hasCode(error, ErrorCode.AGENT_CHAIN_UNVERIFIED) && /CHAIN_GARBAGE/.test(error.message));
  await assert.rejects(agent.install('c9', c2.fullchainPem, c2.fingerprint), (error) => hasCode(error, ErrorCode.AGENT_NO_PENDING_KEY));
  await assert.rejects(agent.install('../live/x', c2.fullchainPem, c2.fingerprint), (error) => hasCode(error, ErrorCode.AGENT_BAD_CERTIFICATE_ID));

  assert.deepEqual(await snapshot(fx.dir), before);
});

test('a delivery for a certificate with no pending key is refused', async (t) => {
  const fx = await fixture(t);
  const c1 = await deliveryFor(fx, 'c1');
  await fs.rm(pendingKeyPath(fx.state, 'c1'));
  const before = await snapshot(fx.dir);

  await assert.rejects(deliver(installer(fx), c1), (error) => hasCode(error, ErrorCode.AGENT_NO_PENDING_KEY));
  assert.deepEqual(await snapshot(fx.dir), before);
});

test('a failing reload rolls back to the previous pair byte for byte and journals rolled_back', async (t) => {
  const fx = await fixture(t);
  const c1 = await deliveryFor(fx, 'c1');
  await deliver(installer(fx), c1);
  const liveBefore = { chain: await fs.readFile(live(fx, 'fullchain.pem')), key: await fs.readFile(live(fx, 'privkey.pem')) };
  const c2 = await deliveryFor(fx, 'c2');
  const c2Key = await fs.readFile(pendingKeyPath(fx.state, 'c2'), 'utf8');
  const rejecting = `${fx.reloadCommand}; if [ "$CERTPLANE_FINGERPRINT" = "${c2.fingerprint}" ]; then echo "line 1" >&2; echo "server rejected the certificate" >&2; exit 3; fi`;

  await assert.rejects(deliver(installer(fx, { reloadCommand: rejecting }), c2), (error) => {
    assert.ok(hasCode(error, ErrorCode.AGENT_RELOAD_FAILED));
    assert.equal(error.details.exitCode, 3);
    assert.equal(error.details.restoredFingerprintSha256, c1.fingerprint);
    assert.equal(error.details.restoreReloadOk, true);
    assert.match(error.message, /exited with code 3/);
    assert.match(error.message, /server rejected the certificate/);
    return true;
  });

  assert.deepEqual(await fs.readFile(live(fx, 'fullchain.pem')), liveBefore.chain);
  assert.deepEqual(await fs.readFile(live(fx, 'privkey.pem')), liveBefore.key);
  assert.equal(await modeOf(live(fx, 'privkey.pem')), 0o600);
  assert.deepEqual(await reloadedFingerprints(fx), [c1.fingerprint, c2.fingerprint, c1.fingerprint]);
  assert.deepEqual(events(await readJournal(fx.state)).slice(2), ['installed c2', 'reload_failed c2', 'rolled_back c2']);
  assert.equal(await fs.readFile(pendingKeyPath(fx.state, 'c2'), 'utf8'), c2Key, 'the key stays pending so a re-delivery can retry');

  assert.equal((await deliver(installer(fx), c2)).alreadyInstalled, false);
  assert.equal(await fs.readFile(live(fx, 'fullchain.pem'), 'utf8'), c2.fullchainPem);
  assert.equal(spkiSha256OfPrivateKeyPem(await fs.readFile(live(fx, 'privkey.pem'), 'utf8')), spkiSha256OfPrivateKeyPem(c2Key));
});

test('a failing reload after a first install removes the new pair', async (t) => {
  const fx = await fixture(t);
  const c1 = await deliveryFor(fx, 'c1');

  await assert.rejects(deliver(installer(fx, { reloadCommand: 'exit 3' }), c1), (error) => hasCode(error, ErrorCode.AGENT_RELOAD_FAILED) && error.details.exitCode === 3 && error.details.restoredFingerprintSha256 === null);

  assert.deepEqual(await fs.readdir(fx.state.liveDir), []);
  assert.equal(await installer(fx).installedFingerprint(), null);
  assert.deepEqual(events(await readJournal(fx.state)), ['installed c1', 'reload_failed c1', 'rolled_back c1']);
});

test('a hanging reload command is killed, with its children, at the timeout', async (t) => {
  const fx = await fixture(t);
  await deliver(installer(fx), await deliveryFor(fx, 'c1'));
  const liveChain = await fs.readFile(live(fx, 'fullchain.pem'));
  const c2 = await deliveryFor(fx, 'c2');
  const pids = path.join(fx.dir, 'pids');
  const hanging = installer(fx, { reloadCommand: `sleep 30 & echo $! >> '${pids}'; wait`, reloadTimeoutMs: 300 });

  const started = Date.now();
  await assert.rejects(deliver(hanging, c2), (error) => hasCode(error, ErrorCode.AGENT_RELOAD_FAILED) && error.details.timedOut === true && error.details.restoreReloadOk === false);

  assert.ok(Date.now() - started < 10_000, `took ${Date.now() - started} ms`);
  const sleepers = (await fs.readFile(pids, 'utf8')).split('\n').filter(Boolean).map(Number);
  assert.equal(sleepers.length, 2, 'the reload ran for the new pair and again for the restored one');
  for (const pid of sleepers) assert.equal(await isRunning(pid), false, `sleep ${pid} outlived the timeout`);
  assert.deepEqual(await fs.readFile(live(fx, 'fullchain.pem')), liveChain);
});

test('after a crash between install and reload, a re-delivery reloads once and does not install again', async (t) => {
  const fx = await fixture(t);
  const c1 = await deliveryFor(fx, 'c1');
  await deliver(installer(fx), c1);
  const c1Pair = { chain: await fs.readFile(live(fx, 'fullchain.pem'), 'utf8'), key: await fs.readFile(live(fx, 'privkey.pem'), 'utf8') };
  const c2 = await deliveryFor(fx, 'c2');
  // What install() leaves when the agent dies right after journaling 'installed'.
  await writeFileAtomic(previous(fx, 'privkey.pem'), c1Pair.key, 0o600);
  await writeFileAtomic(previous(fx, 'fullchain.pem'), c1Pair.chain, 0o644);
  await writeFileAtomic(live(fx, 'privkey.pem'), await fs.readFile(pendingKeyPath(fx.state, 'c2'), 'utf8'), 0o600);
  await writeFileAtomic(live(fx, 'fullchain.pem'), c2.fullchainPem, 0o644);
  await appendJournal(fx.state, { at: new Date().toISOString(), event: 'installed', certificateId: 'c2', fingerprintSha256: c2.fingerprint });
  const liveBefore = await snapshot(fx.state.liveDir);

  assert.deepEqual(await deliver(installer(fx), c2), { fingerprintSha256: c2.fingerprint, alreadyInstalled: true });

  assert.deepEqual(await reloadedFingerprints(fx), [c1.fingerprint, c2.fingerprint]);
  assert.deepEqual(events(await readJournal(fx.state)), ['installed c1', 'reloaded c1', 'installed c2', 'reloaded c2']);
  assert.deepEqual(await snapshot(fx.state.liveDir), liveBefore);
  assert.equal(await fs.readFile(previous(fx, 'fullchain.pem'), 'utf8'), c1Pair.chain, 'previous/ still holds the rollback target');
  assert.deepEqual(await fs.readdir(fx.state.pendingDir), []);

  assert.equal((await deliver(installer(fx), c2)).alreadyInstalled, true);
  assert.equal((await reloadedFingerprints(fx)).length, 2);
});

test('after a crash between the key and chain renames, the torn pair is not kept as previous/', async (t) => {
  const fx = await fixture(t);
  await deliver(installer(fx), await deliveryFor(fx, 'c1'));
  const c1Chain = await fs.readFile(live(fx, 'fullchain.pem'), 'utf8');
  const c1Key = await fs.readFile(live(fx, 'privkey.pem'), 'utf8');
  const c2 = await deliveryFor(fx, 'c2');
  await writeFileAtomic(previous(fx, 'privkey.pem'), c1Key, 0o600);
  await writeFileAtomic(previous(fx, 'fullchain.pem'), c1Chain, 0o644);
  await writeFileAtomic(live(fx, 'privkey.pem'), await fs.readFile(pendingKeyPath(fx.state, 'c2'), 'utf8'), 0o600);

  assert.equal((await deliver(installer(fx), c2)).alreadyInstalled, false);

  assert.equal(await fs.readFile(previous(fx, 'fullchain.pem'), 'utf8'), c1Chain);
  assert.equal(await fs.readFile(previous(fx, 'privkey.pem'), 'utf8'), c1Key);
  assert.equal(await fs.readFile(live(fx, 'fullchain.pem'), 'utf8'), c2.fullchainPem);
});

test('after a crash that kept the new chain but not its key (one directory fsync for both renames), the re-delivery installs the pair whole', async (t) => {
  const fx = await fixture(t);
  await deliver(installer(fx), await deliveryFor(fx, 'c1'));
  const c1Chain = await fs.readFile(live(fx, 'fullchain.pem'), 'utf8');
  const c1Key = await fs.readFile(live(fx, 'privkey.pem'), 'utf8');
  const c2 = await deliveryFor(fx, 'c2');
  const c2Key = await fs.readFile(pendingKeyPath(fx.state, 'c2'), 'utf8');
  // What the crash left: previous/ saved, live/ with c2's chain beside c1's key, c2's key still pending.
  await writeFileAtomic(previous(fx, 'privkey.pem'), c1Key, 0o600);
  await writeFileAtomic(previous(fx, 'fullchain.pem'), c1Chain, 0o644);
  await writeFileAtomic(live(fx, 'fullchain.pem'), c2.fullchainPem, 0o644);
  const agent = installer(fx);
  assert.equal(await agent.installedFingerprint(), c2.fingerprint, 'the torn pair names the new leaf');

  assert.equal((await deliver(agent, c2)).alreadyInstalled, false, 'a torn pair is not taken for an installed one');

  assert.equal(await fs.readFile(live(fx, 'privkey.pem'), 'utf8'), c2Key);
  assert.equal(await fs.readFile(live(fx, 'fullchain.pem'), 'utf8'), c2.fullchainPem);
  assert.equal(await fs.readFile(previous(fx, 'privkey.pem'), 'utf8'), c1Key, 'previous/ keeps what the interrupted install replaced');
  assert.equal(await fs.readFile(previous(fx, 'fullchain.pem'), 'utf8'), c1Chain);
  await assert.rejects(fs.access(pendingKeyPath(fx.state, 'c2')), 'the pending key is gone once the pair is live');
  assert.deepEqual(events(await readJournal(fx.state)).slice(-2), ['installed c2', 'reloaded c2']);
});

test('concurrent deliveries of one certificate install it once', async (t) => {
  const fx = await fixture(t);
  const c1 = await deliveryFor(fx, 'c1');
  const agent = installer(fx);

  const results = await Promise.all([deliver(agent, c1), deliver(agent, c1), deliver(agent, c1)]);

  assert.deepEqual(results.map((r) => r.alreadyInstalled), [false, true, true]);
  assert.deepEqual(events(await readJournal(fx.state)), ['installed c1', 'reloaded c1']);
  assert.deepEqual(await reloadedFingerprints(fx), [c1.fingerprint]);
});

test('without a reload command an install journals only installed and is then already installed', async (t) => {
  const fx = await fixture(t);
  const c1 = await deliveryFor(fx, 'c1');
  const agent = new Installer({ state: fx.state, trustAnchors: fx.anchors });

  assert.equal((await deliver(agent, c1)).alreadyInstalled, false);
  assert.equal((await deliver(agent, c1)).alreadyInstalled, true);
  assert.deepEqual(events(await readJournal(fx.state)), ['installed c1']);
});

/** A killed child may linger as a zombie until its new parent reaps it; a zombie is not running. */
async function isRunning(pid: number): Promise<boolean> {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  return stat !== '' && !/^\d+ \(.*\) Z /.test(stat);
}

test('with --group, the database server running as another user reads live/ in place, and nothing else of the agent (live/ 0750, key 0640, state dir 0710)', async (t) => {
  const fx = await fixture(t);
  const group = 65534;
  await fs.chmod(fx.dir, 0o755);
  const state = await openState(fx.state.dir, { liveGroup: group });
  const c1 = await deliveryFor({ ...fx, state }, 'c1');
  await deliver(installer({ ...fx, state }), c1);

  const groupAndMode = async (file: string) => {
    const stat = await fs.stat(file);
    return [stat.gid, stat.mode & 0o777];
  };
  assert.deepEqual(await groupAndMode(state.dir), [group, 0o710]);
  assert.deepEqual(await groupAndMode(state.liveDir), [group, 0o750]);
  assert.deepEqual(await groupAndMode(live(fx, 'privkey.pem')), [group, 0o640]);
  assert.deepEqual(await groupAndMode(live(fx, 'fullchain.pem')), [group, 0o644]);
  assert.equal(await modeOf(state.identityDir), 0o700, 'the agent identity stays private');
  // The next start accepts what --group made (the default start would refuse it: see the next test).
  await openState(fx.state.dir, { liveGroup: group });

  if (process.getuid?.() === 0) {
    // As the database server would: another user whose only link to the agent is the group.
    const asServer = (file: string) => promisify(execFile)('setpriv', ['--reuid=65534', `--regid=${group}`, '--clear-groups', 'cat', file]);
    assert.equal((await asServer(live(fx, 'privkey.pem'))).stdout, await fs.readFile(live(fx, 'privkey.pem'), 'utf8'));
    await assert.rejects(asServer(path.join(state.identityDir, 'key.pem')), /Permission denied/);
  }
});

test('without --group nothing changes: live/ stays the agent\'s alone, and a shared layout left by --group is refused with the chmod that fixes it', async (t) => {
  const fx = await fixture(t);
  const c1 = await deliveryFor(fx, 'c1');
  await deliver(installer(fx), c1);
  assert.equal(await modeOf(fx.state.dir), 0o700);
  assert.equal(await modeOf(live(fx, 'privkey.pem')), 0o600);
  await openState(fx.state.dir, { liveGroup: 65534 });
  await assert.rejects(openState(fx.state.dir), (error) => hasCode(error, ErrorCode.AGENT_STATE_PERMISSIONS) && /chmod 700/.test((error as Error).message));
});

/** The delivered leaf on another chain: its intermediate cross-signed by another root (what a CA's alternate chain is). */
async function alternateChainOf(fx: Fixture, delivery: Delivery, otherRootCn: string): Promise<{ fullchainPem: string; root: Certificate }> {
  const other = await root(otherRootCn);
  const cross = await crossSign(fx.ca, other);
  const leafPem = delivery.fullchainPem.slice(0, delivery.fullchainPem.indexOf('-----END CERTIFICATE-----') + '-----END CERTIFICATE-----'.length) + '\n';
  return { fullchainPem: leafPem + cross.pem, root: parseCertificateBundle(other.pem)[0] as Certificate };
}

test('a rechain (the live certificate on another chain) is verified, installed atomically next to the live key, reloaded, and then already installed', async (t) => {
  const fx = await fixture(t);
  const c1 = await deliveryFor(fx, 'c1');
  await deliver(installer(fx), c1);
  const before = { chain: await fs.readFile(live(fx, 'fullchain.pem')), key: await fs.readFile(live(fx, 'privkey.pem')) };
  const alternate = await alternateChainOf(fx, c1, 'Test Root X2');
  const rechain: Delivery = { certificateId: 'c1-rechained', fullchainPem: alternate.fullchainPem, fingerprint: c1.fingerprint };
  const agent = installer(fx, { trustAnchors: [...fx.anchors, alternate.root] });

  assert.deepEqual(await deliver(agent, rechain), { fingerprintSha256: c1.fingerprint, alreadyInstalled: false });

  assert.equal(await fs.readFile(live(fx, 'fullchain.pem'), 'utf8'), alternate.fullchainPem);
  assert.deepEqual(await fs.readFile(live(fx, 'privkey.pem')), before.key, 'the key is the live one, unchanged');
  assert.deepEqual(await fs.readFile(previous(fx, 'fullchain.pem')), before.chain, 'the old chain is kept for a rollback');
  assert.deepEqual(await fs.readFile(previous(fx, 'privkey.pem')), before.key);
  assert.deepEqual(await reloadedFingerprints(fx), [c1.fingerprint, c1.fingerprint]);
  assert.deepEqual(events(await readJournal(fx.state)).slice(2), ['installed c1-rechained', 'reloaded c1-rechained']);
  await assert.rejects(fs.access(pendingKeyPath(fx.state, 'c1-rechained')), 'no key is ever pending for a rechain');

  assert.deepEqual(await deliver(agent, rechain), { fingerprintSha256: c1.fingerprint, alreadyInstalled: true });
  assert.deepEqual(await reloadedFingerprints(fx), [c1.fingerprint, c1.fingerprint], 'a repeated rechain delivery reloads nothing');
});

test('a rechain to a chain this instance does not trust is refused and the live chain stays', async (t) => {
  const fx = await fixture(t);
  const c1 = await deliveryFor(fx, 'c1');
  await deliver(installer(fx), c1);
  const before = await snapshot(fx.dir);
  const alternate = await alternateChainOf(fx, c1, 'Root This Agent Does Not Trust');

  await assert.rejects(deliver(installer(fx), { certificateId: 'c1-rechained', fullchainPem: alternate.fullchainPem, fingerprint: c1.fingerprint }), (error) => hasCode(error, ErrorCode.AGENT_CHAIN_UNVERIFIED));
  assert.deepEqual(await snapshot(fx.dir), before);
});

test('a rechain whose reload fails rolls back to the previous chain and leaves no key pending', async (t) => {
  const fx = await fixture(t);
  const c1 = await deliveryFor(fx, 'c1');
  await deliver(installer(fx), c1);
  const before = { chain: await fs.readFile(live(fx, 'fullchain.pem')), key: await fs.readFile(live(fx, 'privkey.pem')) };
  const alternate = await alternateChainOf(fx, c1, 'Test Root X2');
  const rejectsNewChain = `${fx.reloadCommand}; if grep -q '${alternate.fullchainPem.split('\n').at(-3)}' "$CERTPLANE_FULLCHAIN"; then exit 4; fi`;

  await assert.rejects(
    deliver(installer(fx, { trustAnchors: [...fx.anchors, alternate.root], reloadCommand: rejectsNewChain }), { certificateId: 'c1-rechained', fullchainPem: alternate.fullchainPem, fingerprint: c1.fingerprint }),
    (error) => hasCode(error, ErrorCode.AGENT_RELOAD_FAILED) && error.details.restoredFingerprintSha256 === c1.fingerprint,
  );
  assert.deepEqual(await fs.readFile(live(fx, 'fullchain.pem')), before.chain);
  assert.deepEqual(await fs.readFile(live(fx, 'privkey.pem')), before.key);
  await assert.rejects(fs.access(pendingKeyPath(fx.state, 'c1-rechained')));
  assert.deepEqual(events(await readJournal(fx.state)).slice(2), ['installed c1-rechained', 'reload_failed c1-rechained', 'rolled_back c1-rechained']);
});
