/**
 * `certplane serve` when start-up fails, as a supervisor sees it: a real process that
 * prints the error's code once, closes what it had started (store, revocation watch,
 * listener, admin socket) and exits non-zero soon after, instead of staying alive without
 * listening and logging "revocation check failed" forever. Each failure point leaves
 * nothing behind: the port is free and an admin socket it created is gone.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { chmod, chown, lstat, mkdir, readdir, readFile } from 'node:fs/promises';
import { createConnection, createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { loopbackServerCertificate } from '../../src/pki/factory.js';
import { scratch } from '../support/cli.js';
import { freePort } from '../support/ports.js';
import { startCertplane } from '../support/processes.js';
import { ErrorCode } from '../../src/error-catalogue.js';

/** Start-up on PGlite under a loaded test machine can take tens of seconds before it reaches the failing step. */
const START_MS = 240_000;
/** Once the error is printed, a process that closed everything exits at once; the hang this stops never exited. */
const EXIT_MS = 15_000;
/** The uid of `nobody`: another local user, for a directory the tests (run as root) hand to someone else. */
const NOBODY = 65534;

const dir = await scratch('certplane-serve-startup-');
after(() => dir.remove());

/** The configuration of a plain-HTTP plane that would start; each test breaks one thing. */
function planeEnv(name: string, port: number, adminSocket: string): Record<string, string> {
  return {
    CERTPLANE_INSECURE_HTTP: '1',
    CERTPLANE_LISTEN: `127.0.0.1:${port}`,
    CERTPLANE_DATABASE_URL: 'memory:',
    CERTPLANE_SECRETS: `file:${dir.path(`${name}-secrets`)}`,
    // Never contacted: start-up fails before anything is ordered.
    CERTPLANE_ACME_DIRECTORY: 'https://127.0.0.1:9/dir',
    CERTPLANE_ADMIN_SOCKET: adminSocket,
    CERTPLANE_SCHEDULER_INTERVAL_MS: '200',
    CERTPLANE_LOG_LEVEL: 'info',
  };
}

/** Runs `certplane serve` with `env` and waits for it to fail: its exit code and everything it printed. */
async function failedStart(env: Record<string, string>): Promise<{ code: number | null; lines: readonly string[]; errorLine: string }> {
  const plane = startCertplane(['serve'], env);
  const exited = once(plane.child, 'exit');
  try {
    const errorLine = await plane.waitForLine((line) => line.startsWith('certplane: '), START_MS);
    let timer: NodeJS.Timeout | undefined;
    const stuck = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`still running ${EXIT_MS} ms after "${errorLine}"; last lines:\n${plane.lines.slice(-5).join('\n')}`)), EXIT_MS);
    });
    const [code] = (await Promise.race([exited, stuck]).finally(() => clearTimeout(timer))) as [number | null];
    return { code, lines: plane.lines, errorLine };
  } finally {
    await plane.stop('SIGKILL');
  }
}

/** The error was printed exactly once, with its code, and nothing ran on after it. */
function assertFailedOnce(result: { code: number | null; lines: readonly string[] }, code: string): void {
  assert.equal(result.code, 1, result.lines.join('\n'));
  assert.equal(result.lines.filter((line) => line.includes(code)).length, 1, result.lines.join('\n'));
  assert.ok(result.lines.some((line) => line.startsWith(`certplane: ${code}: `)), result.lines.join('\n'));
  assert.ok(!result.lines.some((line) => line.includes('revocation check failed') || line.includes('management plane listening')), result.lines.join('\n'));
}

/** The port can be bound again: no listener outlived the process. */
async function assertPortFree(port: number): Promise<void> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(port, '127.0.0.1', resolve));
  await new Promise((resolve) => server.close(resolve));
}

function listenOn(server: Server, target: string | number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    if (typeof target === 'number') server.listen(target, '127.0.0.1', resolve);
    else server.listen(target, resolve);
  });
}

test('a regular file at the admin socket path: ADMIN_SOCKET_PATH_OCCUPIED, exit 1 promptly, the file untouched', async () => {
  const port = await freePort();
  const path = await dir.write('occupied', 'precious data');
  const result = await failedStart(planeEnv('occupied', port, path));
  assertFailedOnce(result, ErrorCode.ADMIN_SOCKET_PATH_OCCUPIED);
  assert.equal(await readFile(path, 'utf8'), 'precious data');
  await assertPortFree(port);
});

test("a live socket of another process at the admin socket path: ADMIN_SOCKET_IN_USE, exit 1 promptly, the other process's socket still answers", async () => {
  const port = await freePort();
  const path = dir.path('live.sock');
  // The plane's probe connects and hangs up at once; that is no error of this server's.
  const other = createServer((socket) => socket.on('error', () => undefined).end('still here\n'));
  await listenOn(other, path);
  try {
    const result = await failedStart(planeEnv('live', port, path));
    assertFailedOnce(result, ErrorCode.ADMIN_SOCKET_IN_USE);
    const client = createConnection(path);
    const [answer] = (await once(client, 'data')) as [Buffer];
    assert.equal(answer.toString(), 'still here\n');
    client.destroy();
    await assertPortFree(port);
  } finally {
    other.close();
  }
});

test('the listen port in use: SERVER_LISTEN_FAILED (EADDRINUSE), exit 1 promptly, the admin socket it had opened removed', async () => {
  const holder = createServer();
  await listenOn(holder, 0);
  const port = (holder.address() as { port: number }).port;
  const adminDir = dir.path('port-in-use');
  try {
    const result = await failedStart(planeEnv('port', port, join(adminDir, 'admin.sock')));
    assertFailedOnce(result, ErrorCode.SERVER_LISTEN_FAILED);
    assert.match(result.errorLine, /EADDRINUSE.*CERTPLANE_LISTEN/);
    // The admin socket was up before the listener failed; it was closed and its file removed.
    assert.ok(result.lines.some((line) => line.includes('admin console listening')), 'the admin socket had started');
    assert.deepEqual(await readdir(adminDir), []);
  } finally {
    holder.close();
  }
});

test('an admin socket directory owned by another user: ADMIN_SOCKET_DIRECTORY_INSECURE, exit 1 promptly, nothing created in it', async () => {
  const port = await freePort();
  const foreign = dir.path('foreign');
  await mkdir(foreign, { mode: 0o700 });
  await chown(foreign, NOBODY, NOBODY);
  const result = await failedStart(planeEnv('foreign', port, join(foreign, 'admin.sock')));
  assertFailedOnce(result, ErrorCode.ADMIN_SOCKET_DIRECTORY_INSECURE);
  assert.deepEqual(await readdir(foreign), []);
  await assertPortFree(port);
});

test('a TLS key group or others may read: SECRETS_FILE_PERMISSIONS before anything starts, exit 1 promptly', async () => {
  const port = await freePort();
  const listener = await loopbackServerCertificate('startup listener CA');
  const adminDir = dir.path('tls');
  const env = planeEnv('tls', port, join(adminDir, 'admin.sock'));
  delete env.CERTPLANE_INSECURE_HTTP;
  env.CERTPLANE_TLS_CERT = await dir.write('server.pem', listener.certPem);
  env.CERTPLANE_TLS_KEY = await dir.write('server.key', listener.keyPem, 0o644);
  const result = await failedStart(env);
  assertFailedOnce(result, ErrorCode.SECRETS_FILE_PERMISSIONS);
  assert.match(result.errorLine, /server\.key is accessible by group or others \(mode 644\).*chmod 600/);
  await assert.rejects(lstat(adminDir), /ENOENT/, 'the admin socket was never created');
  await assertPortFree(port);
});

test('a secrets directory others may read, found after the store opened: SECRETS_FILE_PERMISSIONS, exit 1 promptly', async () => {
  const port = await freePort();
  const adminDir = dir.path('secrets-open');
  const env = planeEnv('open', port, join(adminDir, 'admin.sock'));
  await mkdir(dir.path('open-secrets'));
  await chmod(dir.path('open-secrets'), 0o755);
  const result = await failedStart(env);
  assertFailedOnce(result, ErrorCode.SECRETS_FILE_PERMISSIONS);
  assert.ok(result.lines.some((line) => line.includes('configuration change recorded')), 'the store had opened');
  await assert.rejects(lstat(adminDir), /ENOENT/);
  await assertPortFree(port);
});

/** Sends SIGTERM and asserts exit 0 and the "stopped" line (`why` says what that line proves). */
async function terminatedCleanly(plane: ReturnType<typeof startCertplane>, why: string): Promise<void> {
  const exited = once(plane.child, 'exit');
  plane.child.kill('SIGTERM');
  const [code, signal] = (await exited) as [number | null, NodeJS.Signals | null];
  assert.equal(code, 0, `exit ${code}, signal ${signal}; last lines:\n${plane.lines.slice(-5).join('\n')}`);
  assert.ok(plane.lines.some((line) => line.includes('"management plane stopped"')), why);
}

test('a started plane closes the same stack on SIGTERM: exit 0, admin socket removed, port free', async () => {
  const port = await freePort();
  const adminDir = dir.path('clean');
  const plane = startCertplane(['serve'], planeEnv('clean', port, join(adminDir, 'admin.sock')));
  try {
    await plane.waitForLine((line) => line.includes('management plane listening'), START_MS);
    assert.ok((await lstat(join(adminDir, 'admin.sock'))).isSocket());
    await terminatedCleanly(plane, 'it says so once everything, the store last, is closed');
    assert.deepEqual(await readdir(adminDir), []);
    await assertPortFree(port);
  } finally {
    await plane.stop('SIGKILL');
  }
});

test('a SIGTERM while the plane is still starting is not the default action\'s: it starts, then closes cleanly, exit 0', async () => {
  // Under load a SIGTERM right after "listening" once found no handler yet (exit null, signal SIGTERM).
  const port = await freePort();
  const adminDir = dir.path('early-term');
  const plane = startCertplane(['serve'], planeEnv('early-term', port, join(adminDir, 'admin.sock')));
  try {
    // The store is open and the start goes on: the listener, the admin socket and the scheduler are still to come.
    await plane.waitForLine((line) => line.includes('configuration change recorded'), START_MS);
    await terminatedCleanly(plane, 'it closed what it had started, the store last');
    await assertPortFree(port);
  } finally {
    await plane.stop('SIGKILL');
  }
});
