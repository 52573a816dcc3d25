/**
 * The agent's state directory: everything the agent must remember across restarts, in
 * plain files a person can inspect on the instance.
 *
 *   DIR/identity/   key.pem (0600), cert.pem, ca.pem, instance.json: who the agent is to the plane
 *   DIR/pending/    <certificateId>.key.pem (0600): keys whose certificates are being issued
 *   DIR/live/       fullchain.pem (0644), privkey.pem (0600): what the database server reads;
 *                   with a live group (--group), DIR is 0710 and live/ 0750 with that group and
 *                   privkey.pem 0640, so a server running as another user in it reads them in place
 *   DIR/previous/   the pair the last install replaced, so a failed reload can roll back
 *   DIR/journal.jsonl  append-only, fsynced: what was installed and reloaded, for crash recovery
 *
 * Every file is replaced through a fsynced temporary file and a rename, so a crash leaves
 * either the old or the new content under a name, never a torn private key; the directory
 * is fsynced before the caller acts on the new content (writeFileAtomic, writeFilesAtomic).
 */
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { CertplaneError } from '../errors.js';
import { ErrorCode } from '../error-catalogue.js';

/** Directories and private keys: the agent's user only. */
export const PRIVATE_FILE_MODE = 0o600;
/** Certificates: public by nature, and the database server may run as another user. */
export const PUBLIC_FILE_MODE = 0o644;
const PRIVATE_DIRECTORY_MODE = 0o700;
/** With a live group: the group may pass through DIR (not list it) and read live/. */
const SHARED_ROOT_MODE = 0o710;
const SHARED_LIVE_DIRECTORY_MODE = 0o750;
/** The live key, readable by the live group. */
export const SHARED_KEY_FILE_MODE = 0o640;
const GROUP_OR_OTHER_BITS = 0o077;
const TEMPORARY_FILE = /^\..*\.tmp$/;
const PENDING_KEY_FILE = /\.key\.pem$/;

/** The names inside live/ and previous/, fixed because customers' server configurations point at them. */
export const PairFile = { fullchain: 'fullchain.pem', privkey: 'privkey.pem' } as const;

/** Resolved paths of one opened state directory; passing this around keeps the layout in one file. */
export interface AgentState {
  readonly dir: string;
  readonly identityDir: string;
  readonly pendingDir: string;
  readonly liveDir: string;
  readonly previousDir: string;
  readonly journalPath: string;
  /** Group id that may read live/ (the database server's), or undefined: live/ is the agent's alone. */
  readonly liveGroup: number | undefined;
}

/**
 * Creates the layout if needed and refuses to start when the directory or a private key
 * in it is open to group or others: an agent that keeps going would be guarding keys
 * that may already have been copied. Removes temporary files a crash left behind,
 * because they may hold private keys that no name refers to any more.
 */
export async function openState(dir: string, options: { liveGroup?: number } = {}): Promise<AgentState> {
  const root = path.resolve(dir);
  const { liveGroup } = options;
  const state: AgentState = {
    dir: root,
    identityDir: path.join(root, 'identity'),
    pendingDir: path.join(root, 'pending'),
    liveDir: path.join(root, 'live'),
    previousDir: path.join(root, 'previous'),
    journalPath: path.join(root, 'journal.jsonl'),
    liveGroup,
  };
  await io('create the state directory', root, () => fs.mkdir(root, { recursive: true, mode: PRIVATE_DIRECTORY_MODE }));
  let stat = await io('inspect the state directory', root, () => fs.stat(root));
  if (!stat.isDirectory()) {
    throw new CertplaneError(ErrorCode.AGENT_STATE_IO, `Agent state path ${root} exists but is not a directory; point the agent at a directory it owns.`, { path: root });
  }
  if (liveGroup !== undefined) {
    await shareWithGroup(root, liveGroup, SHARED_ROOT_MODE);
    stat = await io('inspect the state directory', root, () => fs.stat(root));
  }
  assertPrivate(root, stat.mode, liveGroup === undefined ? PRIVATE_DIRECTORY_MODE : SHARED_ROOT_MODE);
  const keyFiles = [path.join(state.identityDir, 'key.pem'), path.join(state.previousDir, PairFile.privkey)];
  const liveKey = path.join(state.liveDir, PairFile.privkey);
  if (liveGroup === undefined) keyFiles.push(liveKey);
  for (const sub of [state.identityDir, state.pendingDir, state.liveDir, state.previousDir]) {
    await io('create a state subdirectory', sub, () => fs.mkdir(sub, { mode: PRIVATE_DIRECTORY_MODE }).catch(ignoreErrno('EEXIST')));
    if (sub === state.liveDir && liveGroup !== undefined) await shareWithGroup(sub, liveGroup, SHARED_LIVE_DIRECTORY_MODE);
    for (const entry of await io('list a state subdirectory', sub, () => fs.readdir(sub))) {
      if (TEMPORARY_FILE.test(entry)) await io('remove a leftover temporary file', sub, () => fs.rm(path.join(sub, entry), { force: true }));
      else if (sub === state.pendingDir && PENDING_KEY_FILE.test(entry)) keyFiles.push(path.join(sub, entry));
    }
  }
  for (const file of keyFiles) {
    const mode = await io('inspect a key file', file, () => fs.stat(file).then((s) => s.mode, ignoreErrno('ENOENT')));
    if (mode !== undefined) assertPrivate(file, mode, PRIVATE_FILE_MODE);
  }
  if (liveGroup !== undefined) {
    // A key installed before --group was given becomes the group's now, not at the next renewal.
    const present = await io('inspect a key file', liveKey, () => fs.stat(liveKey).then(() => true, (error) => (errnoOf(error) === 'ENOENT' ? false : Promise.reject(error))));
    if (present) await shareWithGroup(liveKey, liveGroup, SHARED_KEY_FILE_MODE);
  }
  return state;
}

/** Gives `target` to `group` with `mode`; the agent's user must own it and be in the group (or be root). */
async function shareWithGroup(target: string, group: number, mode: number): Promise<void> {
  await io(`give group ${group} access to`, target, async () => {
    await fs.chown(target, -1, group);
    await fs.chmod(target, mode);
  });
}

/**
 * Replaces `file` with `data` so that readers see the old or the new content, never a mix,
 * and a crash after return cannot lose the new content: temporary file in the same
 * directory (same file system, so rename is atomic), fsync, rename, fsync the directory.
 * The mode is set explicitly because the process umask must not decide who reads a key.
 */
export async function writeFileAtomic(file: string, data: string, mode: number, group?: number): Promise<void> {
  const temporary = await writeTemporary(file, data, mode, group);
  try {
    await io('replace a state file', file, () => fs.rename(temporary, file));
  } catch (error) {
    await fs.rm(temporary, { force: true });
    throw error;
  }
  await syncDirectory(path.dirname(file));
}

/**
 * Replaces several files of one directory, in the order given, with one directory fsync for
 * all of them: what an install needs for a key and its chain. Atomic and durable like
 * writeFileAtomic, file by file, at a third of the fsyncs' wall time:
 * - Every temporary file is written and fsynced first, side by side (the fsyncs overlap),
 *   so whichever rename survives a crash names complete content, never a torn key.
 * - The renames then run one after another in the order given, so a reader of the live
 *   directory sees the same sequence as with one writeFileAtomic per file (the key before
 *   the chain: see Installer.makeLive).
 * - One fsync of the directory after the last rename makes all of them durable before this
 *   returns, which is all a caller acts on (the installer journals and acknowledges only
 *   after it). The fsync that writeFileAtomic places between two renames only fixed which
 *   of them a crash in between could keep; a crash before this fsync may keep either,
 *   both or none, and every one of those is a state the installer already handles: both
 *   or none is a whole pair (new or old), and one without the other is a pair whose key
 *   and leaf differ, which inspectPair calls torn, exactly like the state a crash between
 *   the two renames always left. The pending key is kept until after this returns, so the
 *   delivery that follows the crash installs again from it.
 */
export async function writeFilesAtomic(files: readonly { file: string; data: string; mode: number; group?: number }[]): Promise<void> {
  const written = await Promise.allSettled(files.map(({ file, data, mode, group }) => writeTemporary(file, data, mode, group)));
  const temporaries = written.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []));
  const failed = written.find((result): result is PromiseRejectedResult => result.status === 'rejected');
  let renamed = 0;
  try {
    if (failed) throw failed.reason;
    for (const [i, { file }] of files.entries()) {
      await io('replace a state file', file, () => fs.rename(temporaries[i]!, file));
      renamed += 1;
    }
  } catch (error) {
    await Promise.all(temporaries.slice(renamed).map((temporary) => fs.rm(temporary, { force: true })));
    // What was renamed already stays; make it durable so the caller's view (it failed) meets a consistent disk.
    if (renamed > 0) await syncDirectory(path.dirname(files[0]!.file)).catch(() => undefined);
    throw error;
  }
  const directories = [...new Set(files.map(({ file }) => path.dirname(file)))];
  await Promise.all(directories.map((dir) => syncDirectory(dir)));
}

/**
 * Like writeFileAtomic but never replaces an existing file: link(2) refuses a taken name,
 * so when two requests race to create the same key exactly one wins and the other learns
 * it lost (false) instead of silently orphaning the winner's key.
 */
export async function createFileAtomic(file: string, data: string, mode: number): Promise<boolean> {
  const temporary = await writeTemporary(file, data, mode);
  try {
    const created = await io('publish a state file', file, () => fs.link(temporary, file).then(() => true, (error) => (errnoOf(error) === 'EEXIST' ? false : Promise.reject(error))));
    if (created) await syncDirectory(path.dirname(file));
    return created;
  } finally {
    await fs.rm(temporary, { force: true });
  }
}

/** Removes `file` if present and makes the removal durable, so a deleted key stays deleted after a crash. */
export async function removeFileDurably(file: string): Promise<void> {
  await io('remove a state file', file, () => fs.rm(file, { force: true }));
  await syncDirectory(path.dirname(file));
}

/**
 * Removes `files` (those present) in the order given, then fsyncs their directory once so
 * the removals survive a crash; no fsync when none was there. A crash before the fsync may
 * keep some of the removals and not others, so callers must tolerate any mix (see Installer.removePair).
 */
export async function removeFilesDurably(files: readonly string[]): Promise<void> {
  let removed = false;
  for (const file of files) {
    removed = (await io('remove a state file', file, () => fs.unlink(file).then(() => true, (error) => (errnoOf(error) === 'ENOENT' ? false : Promise.reject(error))))) || removed;
  }
  if (removed) await Promise.all([...new Set(files.map((file) => path.dirname(file)))].map((dir) => syncDirectory(dir)));
}

/** The file's text, or null when it does not exist: absence is a normal state here (no live pair yet). */
export async function readFileIfExists(file: string): Promise<string | null> {
  return (await io('read a state file', file, () => fs.readFile(file, 'utf8').catch(ignoreErrno('ENOENT')))) ?? null;
}

async function writeTemporary(file: string, data: string, mode: number, group?: number): Promise<string> {
  const temporary = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    const handle = await fs.open(temporary, 'wx', mode);
    try {
      // The group before the mode, so the file is never readable by a group it was not meant for.
      if (group !== undefined) await handle.chown(-1, group);
      await handle.chmod(mode);
      await handle.writeFile(data, 'utf8');
      await handle.sync();
    } finally {
      await handle.close();
    }
  } catch (error) {
    await fs.rm(temporary, { force: true });
    throw ioError('write a temporary state file', temporary, error);
  }
  return temporary;
}

async function syncDirectory(dir: string): Promise<void> {
  await io('sync a state directory', dir, async () => {
    const handle = await fs.open(dir, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  });
}

/** Who the agent is: its enrolled key and certificate, the agent CA it trusts, and the plane it talks to. */
export interface AgentIdentity {
  readonly keyPem: string;
  readonly certificatePem: string;
  readonly caPem: string;
  readonly instanceId: string;
  readonly server: string;
  /**
   * The --server URL the operator last gave. `server` may differ (the plane names its public
   * URL at enrollment); when --server changes, the agent follows the operator instead.
   */
  readonly configuredServer?: string;
}

const InstanceFile = z.strictObject({ instanceId: z.string().min(1).max(128), server: z.url(), configuredServer: z.url().optional() });

/**
 * The enrolled identity, or null before enrollment. instance.json is written last by
 * writeIdentity, so its presence means the other three files are complete.
 */
export async function readIdentity(state: AgentState): Promise<AgentIdentity | null> {
  const instancePath = path.join(state.identityDir, 'instance.json');
  const instanceText = await readFileIfExists(instancePath);
  if (instanceText === null) return null;
  let instance: z.infer<typeof InstanceFile>;
  try {
    instance = InstanceFile.parse(JSON.parse(instanceText));
  } catch (cause) {
    throw new CertplaneError(ErrorCode.AGENT_IDENTITY_INVALID, `${instancePath} is not a valid instance file ({instanceId, server}); re-enroll the agent.`, { path: instancePath }, { cause });
  }
  const [keyPem, certificatePem, caPem] = await Promise.all(['key.pem', 'cert.pem', 'ca.pem'].map((name) => readFileIfExists(path.join(state.identityDir, name))));
  if (!keyPem || !certificatePem || !caPem) {
    throw new CertplaneError(ErrorCode.AGENT_IDENTITY_INVALID, `The agent identity in ${state.identityDir} is incomplete (key.pem, cert.pem and ca.pem are all required); re-enroll the agent.`, { path: state.identityDir });
  }
  return { keyPem, certificatePem, caPem, instanceId: instance.instanceId, server: instance.server, ...(instance.configuredServer ? { configuredServer: instance.configuredServer } : {}) };
}

/** Stores a new identity after enrollment; instance.json goes last so a crash never leaves a half identity that looks whole. */
export async function writeIdentity(state: AgentState, identity: AgentIdentity): Promise<void> {
  await writeFileAtomic(path.join(state.identityDir, 'key.pem'), identity.keyPem, PRIVATE_FILE_MODE);
  await writeFileAtomic(path.join(state.identityDir, 'cert.pem'), identity.certificatePem, PUBLIC_FILE_MODE);
  await writeFileAtomic(path.join(state.identityDir, 'ca.pem'), identity.caPem, PUBLIC_FILE_MODE);
  await writeInstanceFile(state, identity);
}

/** Rewrites only instance.json: the plane's URL changed, the keys did not. */
export async function writeInstanceFile(state: AgentState, identity: AgentIdentity): Promise<void> {
  const instance = InstanceFile.parse({ instanceId: identity.instanceId, server: identity.server, configuredServer: identity.configuredServer });
  await writeFileAtomic(path.join(state.identityDir, 'instance.json'), `${JSON.stringify(instance)}\n`, PUBLIC_FILE_MODE);
}

/** What happened to a certificate on this instance; the installer reads these back to recover from a crash. */
export const JournalEvent = z.enum(['installed', 'reloaded', 'rolled_back', 'reload_failed']);
export type JournalEvent = z.infer<typeof JournalEvent>;

/** One journal line. */
export const JournalEntry = z.strictObject({
  at: z.string(),
  event: JournalEvent,
  certificateId: z.string(),
  fingerprintSha256: z.string(),
});
export type JournalEntry = z.infer<typeof JournalEntry>;

/**
 * Appends one line and fsyncs before returning, so an event the agent acted on survives a
 * power loss. A line torn by an earlier crash is cut off first, so it cannot merge with this one.
 */
export async function appendJournal(state: AgentState, entry: JournalEntry): Promise<void> {
  const line = `${JSON.stringify(JournalEntry.parse(entry))}\n`;
  let created = false;
  await io('append to the journal', state.journalPath, async () => {
    const handle = await fs.open(state.journalPath, 'a+', PRIVATE_FILE_MODE);
    try {
      const { size } = await handle.stat();
      created = size === 0;
      const last = Buffer.alloc(1);
      if (size > 0 && (await handle.read(last, 0, 1, size - 1)).bytesRead === 1 && last[0] !== 0x0a) {
        const text = await fs.readFile(state.journalPath);
        await handle.truncate(text.lastIndexOf(0x0a) + 1);
      }
      await handle.appendFile(line, 'utf8');
      await handle.sync();
    } finally {
      await handle.close();
    }
  });
  // The file's own fsync makes an appended line durable; the directory needs one only while
  // the file's name may be new (an empty file: just created, or created by a crashed append).
  if (created) await syncDirectory(state.dir);
}

/**
 * Every journal entry in order. A final line without its newline is a write the crash
 * interrupted, never acted on, and is ignored; any other bad line is corruption a person must look at.
 */
export async function readJournal(state: AgentState): Promise<JournalEntry[]> {
  const text = await readFileIfExists(state.journalPath);
  if (text === null) return [];
  const lines = text.split('\n');
  lines.pop();
  return lines.map((line, index) => {
    try {
      return JournalEntry.parse(JSON.parse(line));
    } catch (cause) {
      throw new CertplaneError(
        ErrorCode.AGENT_JOURNAL_CORRUPT,
        `${state.journalPath} line ${index + 1} is not a journal entry; move the file aside to let the agent start a new journal (the next delivery re-establishes the state).`,
        { path: state.journalPath, line: index + 1 },
        { cause },
      );
    }
  });
}

/** Refuses group or other bits beyond those of `expectedMode` (none, or the live group's execute bit on DIR). */
function assertPrivate(target: string, mode: number, expectedMode: number): void {
  if ((mode & GROUP_OR_OTHER_BITS & ~expectedMode) === 0) return;
  const expected = expectedMode.toString(8);
  throw new CertplaneError(
    ErrorCode.AGENT_STATE_PERMISSIONS,
    `${target} is accessible by group or others (mode ${(mode & 0o777).toString(8)}); the agent's state holds private keys and must be private to its user. Fix it with: chmod ${expected} ${target}`,
    { path: target, mode: (mode & 0o777).toString(8), expectedMode: expected },
  );
}

function ignoreErrno(code: string): (error: unknown) => undefined {
  return (error) => {
    if (errnoOf(error) === code) return undefined;
    throw error;
  };
}

async function io<T>(action: string, target: string, operation: () => Promise<T>): Promise<T> {
  try {
    return await operation();
  } catch (error) {
    if (error instanceof CertplaneError) throw error;
    throw ioError(action, target, error);
  }
}

function ioError(action: string, target: string, cause: unknown): CertplaneError {
  const errno = errnoOf(cause) ?? 'unknown error';
  return new CertplaneError(
    ErrorCode.AGENT_STATE_IO,
    `Could not ${action} ${target} (${errno}); check that the agent's state directory is on a writable local file system owned by the agent's user.`,
    { path: target, errno },
    { cause },
  );
}

function errnoOf(error: unknown): string | undefined {
  return typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'string' ? error.code : undefined;
}
