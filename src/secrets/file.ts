/**
 * Secrets as files in one private directory: the embedded default, so a single-host
 * install needs no cloud account. Every write goes through a fsynced temporary file so a
 * crash never leaves a half-written key, and createIfMissing publishes with link(2),
 * which fails if the name is taken, so concurrent processes agree on one value.
 */
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { CertplaneError } from '../errors.js';
import { assertValidSecretName, type SecretStore } from './store.js';
import { ErrorCode } from '../error-catalogue.js';

const PRIVATE_DIRECTORY_MODE = 0o700;
const PRIVATE_FILE_MODE = 0o600;
const GROUP_OR_OTHER_BITS = 0o077;

/** Keeps secrets in `directory`, one file per secret, readable by the service's user only. */
export class FileSecretStore implements SecretStore {
  readonly description: string;

  private constructor(private readonly directory: string) {
    this.description = `file:${directory}`;
  }

  /**
   * Creates the directory if needed and refuses to start when it, or a secret already in
   * it, is open to group or others: a leaked account key is worse than a failed start.
   */
  static async open(directory: string): Promise<FileSecretStore> {
    const absolute = path.resolve(directory);
    await io('create the secrets directory', absolute, () => fs.mkdir(absolute, { recursive: true, mode: PRIVATE_DIRECTORY_MODE }));
    const stat = await io('inspect the secrets directory', absolute, () => fs.stat(absolute));
    if (!stat.isDirectory()) {
      throw new CertplaneError(ErrorCode.SECRETS_IO, `Secrets path ${absolute} exists but is not a directory; point the file: store at a directory.`, { path: absolute });
    }
    assertPrivate(absolute, stat.mode, PRIVATE_DIRECTORY_MODE);
    const entries = await io('list the secrets directory', absolute, () => fs.readdir(absolute));
    for (const entry of entries.filter(isSecretFileName)) {
      const file = path.join(absolute, entry);
      assertPrivate(file, (await io('inspect a secret file', file, () => fs.stat(file))).mode, PRIVATE_FILE_MODE);
    }
    return new FileSecretStore(absolute);
  }

  async get(name: string): Promise<string | undefined> {
    return readPrivateFile(this.pathOf(name));
  }

  async createIfMissing(name: string, value: string): Promise<string> {
    const file = this.pathOf(name);
    const temporary = await this.writeTemporary(value);
    let published: boolean;
    try {
      published = await linkUnlessTaken(temporary, file);
    } finally {
      await removeTemporary(temporary);
    }
    if (published) {
      await this.syncDirectory();
      return value;
    }
    const winner = await this.get(name);
    if (winner === undefined) {
      throw new CertplaneError(ErrorCode.SECRETS_IO, `Secret file ${file} vanished while it was being created; check for another process deleting secrets and retry.`, { path: file });
    }
    return winner;
  }

  async put(name: string, value: string): Promise<void> {
    const file = this.pathOf(name);
    const temporary = await this.writeTemporary(value);
    try {
      await io('replace a secret file', file, () => fs.rename(temporary, file));
    } catch (error) {
      await removeTemporary(temporary);
      throw error;
    }
    await this.syncDirectory();
  }

  private pathOf(name: string): string {
    assertValidSecretName(name);
    return path.join(this.directory, name);
  }

  /**
   * Writes `value` to a fresh 0600 file next to its destination (same file system, so
   * rename and link are atomic) and fsyncs it before anyone can see it under its final name.
   * Temporary names start with '.', which no valid secret name does, so they never collide.
   */
  private async writeTemporary(value: string): Promise<string> {
    const temporary = path.join(this.directory, `.tmp-${process.pid}-${randomBytes(8).toString('hex')}`);
    try {
      const handle = await fs.open(temporary, 'wx', PRIVATE_FILE_MODE);
      try {
        await handle.writeFile(value, 'utf8');
        await handle.sync();
      } finally {
        await handle.close();
      }
    } catch (error) {
      await removeTemporary(temporary);
      throw ioError('write a temporary secret file', temporary, error);
    }
    return temporary;
  }

  /** Makes the new directory entry itself durable, so a power loss cannot forget a key that was already used. */
  private async syncDirectory(): Promise<void> {
    await io('sync the secrets directory', this.directory, async () => {
      const handle = await fs.open(this.directory, 'r');
      try {
        await handle.sync();
      } finally {
        await handle.close();
      }
    });
  }
}

/**
 * Reads a file that must be private to the service's user, or undefined when there is
 * none: a secret file, or the listener's TLS key (compose.ts). The mode is checked on the
 * open handle, so the file checked is the file read; one open to group or others is
 * refused with SECRETS_FILE_PERMISSIONS and the `chmod` that fixes it.
 */
export async function readPrivateFile(file: string): Promise<string | undefined> {
  let handle: fs.FileHandle;
  try {
    handle = await fs.open(file, 'r');
  } catch (error) {
    if (errnoOf(error) === 'ENOENT') return undefined;
    throw ioError('open a secret file', file, error);
  }
  try {
    assertPrivate(file, (await io('inspect a secret file', file, () => handle.stat())).mode, PRIVATE_FILE_MODE);
    return await io('read a secret file', file, () => handle.readFile('utf8'));
  } finally {
    await handle.close();
  }
}

function isSecretFileName(entry: string): boolean {
  try {
    assertValidSecretName(entry);
    return true;
  } catch {
    return false;
  }
}

function assertPrivate(target: string, mode: number, expectedMode: number): void {
  if ((mode & GROUP_OR_OTHER_BITS) !== 0) {
    const expected = expectedMode.toString(8);
    throw new CertplaneError(
      ErrorCode.SECRETS_FILE_PERMISSIONS,
      `${target} is accessible by group or others (mode ${(mode & 0o777).toString(8)}); secrets must be private to the service's user. Fix it with: chmod ${expected} ${target}`,
      { path: target, mode: (mode & 0o777).toString(8), expectedMode: expected },
    );
  }
}

async function io<T>(action: string, target: string, operation: () => Promise<T>): Promise<T> {
  try {
    return await operation();
  } catch (error) {
    throw ioError(action, target, error);
  }
}

function ioError(action: string, target: string, cause: unknown): CertplaneError {
  const errno = errnoOf(cause) ?? 'unknown error';
  return new CertplaneError(
    ErrorCode.SECRETS_IO,
    `Could not ${action} ${target} (${errno}); check that the path exists on a writable local file system owned by the service's user.`,
    { path: target, errno },
    { cause },
  );
}

function errnoOf(error: unknown): string | undefined {
  return typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'string' ? error.code : undefined;
}

/**
 * link(2) instead of rename(2) because it refuses to replace an existing name: exactly one
 * process wins, and since the file was complete before the link, losers read a whole value.
 */
async function linkUnlessTaken(temporary: string, file: string): Promise<boolean> {
  try {
    await fs.link(temporary, file);
    return true;
  } catch (error) {
    if (errnoOf(error) === 'EEXIST') return false;
    throw ioError('publish a secret file', file, error);
  }
}

/**
 * Failing to remove a temporary file is not reported: it is private, ignored when the store
 * opens, and reporting it would hide either a successful write or the error that led here.
 */
async function removeTemporary(file: string): Promise<void> {
  await fs.rm(file, { force: true }).catch(() => undefined);
}
