/**
 * The admin console on a Unix domain socket, for a plane running as a service with no
 * terminal. The socket's mode (0600, owned by the service's user, in a directory nobody
 * else may write) is the authentication: only that user and root can connect, and they
 * can already do anything the service can, so the operating system is the guard
 * (RavenDB 4.0's design posts on the administrator's local console, 2017).
 * That is why it needs no certificate and keeps working when TLS is broken. The actor
 * a client names is recorded as `admin-socket:NAME`: a label for the audit trail, not a
 * credential.
 *
 * Protocol: newline-delimited JSON, one request per line `{command, args, actor}` and one
 * response per line, `{ok: true, data, text}` or `{ok: false, code, message}`, in order.
 * A bad line gets an error answer and never costs the connection, the other connections
 * or the process.
 */
import { lstat, mkdir, mkdtemp, chmod, rename, rm, stat, unlink } from 'node:fs/promises';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { z } from 'zod';
import { CertplaneError } from '../errors.js';
import { describeIssues } from '../validation.js';
import { refusePrivateKey } from '../untrusted-text.js';
import { runAdminCommand, type AdminDeps } from './commands.js';
import { ErrorCode } from '../error-catalogue.js';

/** Longest request line; an admin request is a few kilobytes (a certificate), so anything bigger is a mistake. */
export const MAX_REQUEST_BYTES = 1024 * 1024;
/** sun_path holds 108 bytes on Linux, with the terminating NUL. */
const MAX_SOCKET_PATH_BYTES = 107;
const GROUP_OR_OTHER_WRITE = 0o022;

/** One request line, checked before anything runs: the actor is a label for the audit trail, so control characters that could forge log lines are refused. */
export const AdminWireRequest = z.strictObject({
  command: z.string().min(1).max(100),
  args: z.record(z.string(), z.unknown()).default({}),
  actor: z.string().trim().min(1).max(200).regex(/^[^\p{Cc}]+$/u, 'no control characters').optional(),
});

/** One answer line: `text` for people, `data` for programs, or a stable code to branch on. */
export type AdminWireResponse = { ok: true; data: unknown; text: string } | { ok: false; code: string; message: string };

/** A running admin socket. */
export interface AdminSocket {
  readonly path: string;
  /** Stops listening, drops open connections and removes the socket file. */
  close(): Promise<void>;
}

/**
 * Refuses a socket directory that is not owned by one of `trustedOwners` or that group or
 * others may write: whoever can write it can replace the socket with their own, receive
 * the commands meant for the plane and answer them. The plane checks it before serving
 * (owner: its own user), `certplane admin` before sending (owner: root or the caller).
 */
export async function assertSocketDirectory(dir: string, trustedOwners: readonly number[]): Promise<void> {
  const stats = await stat(dir);
  const mode = stats.mode & 0o777;
  if (!stats.isDirectory() || !trustedOwners.includes(stats.uid) || (mode & GROUP_OR_OTHER_WRITE) !== 0) {
    throw new CertplaneError(
      ErrorCode.ADMIN_SOCKET_DIRECTORY_INSECURE,
      `the admin socket's directory ${dir} is mode ${mode.toString(8)} owned by uid ${stats.uid}; it must be a directory owned by uid ${trustedOwners.join(' or ')} that nobody else may write, or another user could put their own socket in its place: fix its owner and mode (for example chmod 700) or choose another CERTPLANE_ADMIN_SOCKET`,
      { path: dir, mode: mode.toString(8), uid: stats.uid, trustedOwners },
    );
  }
}

/**
 * Serves the admin console on `path`. Creates the parent directory (0700) if missing,
 * refuses one that another user owns or others may write, replaces a stale socket left
 * by a crashed process, and refuses a path another process is listening on. The socket
 * is bound in a private staging directory, set to 0600 and checked there, then renamed
 * into place, so it is never reachable with a wider mode.
 */
export async function startAdminSocket(options: { path: string; deps: AdminDeps }): Promise<AdminSocket> {
  const path = resolve(options.path);
  const dir = dirname(path);
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH_BYTES) {
    throw new CertplaneError(ErrorCode.ADMIN_SOCKET_PATH_TOO_LONG, `admin socket path ${path} is longer than ${MAX_SOCKET_PATH_BYTES} bytes, the limit of Unix sockets`);
  }
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await assertSocketDirectory(dir, [process.getuid!()]);
  await clearStale(path);
  const log = options.deps.logger.child({ adminSocket: path });
  const connections = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    connections.add(socket);
    socket.on('close', () => connections.delete(socket));
    serveConnection(socket, options.deps, log);
  });
  server.on('error', (error) => log.error({ err: error.message }, 'admin socket error'));
  const staging = await mkdtemp(join(dir, '.a'));
  try {
    const stagingPath = join(staging, 's');
    await listen(server, stagingPath);
    await chmod(stagingPath, 0o600);
    await assertPrivate(stagingPath);
    await rename(stagingPath, path);
  } catch (error) {
    server.close();
    throw error;
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
  const { ino } = await lstat(path);
  log.info('admin console listening (mode 0600: the operating system authenticates)');
  return {
    path,
    async close() {
      for (const socket of connections) socket.destroy();
      await new Promise<void>((done) => server.close(() => done()));
      // Another process may have replaced the file since; remove only ours.
      const now = await lstat(path).catch(() => undefined);
      if (now?.ino === ino) await unlink(path).catch(() => undefined);
    },
  };
}

async function clearStale(path: string): Promise<void> {
  const existing = await lstat(path).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined;
    throw error;
  });
  if (!existing) return;
  if (!existing.isSocket()) throw new CertplaneError(ErrorCode.ADMIN_SOCKET_PATH_OCCUPIED, `${path} exists and is not a socket; it is left alone: choose another admin socket path or remove it`);
  const refusal = await probe(path);
  if (refusal !== 'ECONNREFUSED') {
    throw new CertplaneError(ErrorCode.ADMIN_SOCKET_IN_USE, `${path}: ${refusal === 'listening' ? 'another process is listening on this admin socket (is another certplane serve running?)' : `cannot tell whether it is in use (${refusal})`}`);
  }
  await unlink(path);
}

/** 'listening', or the error code of a connection attempt (ECONNREFUSED: a stale socket). */
function probe(path: string): Promise<string> {
  return new Promise((done) => {
    const socket = createConnection(path);
    socket.once('connect', () => {
      socket.destroy();
      done('listening');
    });
    socket.once('error', (error: NodeJS.ErrnoException) => done(error.code ?? error.message));
  });
}

function listen(server: Server, path: string): Promise<void> {
  return new Promise((done, fail) => {
    server.once('error', fail);
    server.listen(path, () => {
      server.off('error', fail);
      done();
    });
  });
}

async function assertPrivate(path: string): Promise<void> {
  const stats = await lstat(path);
  const mode = stats.mode & 0o777;
  if (!stats.isSocket() || mode !== 0o600 || stats.uid !== process.getuid?.()) {
    throw new CertplaneError(ErrorCode.ADMIN_SOCKET_INSECURE, `admin socket ${path} is mode ${mode.toString(8)} owned by uid ${stats.uid}; expected a socket with mode 600 owned by uid ${process.getuid?.()}`);
  }
}

function serveConnection(socket: Socket, deps: AdminDeps, log: AdminDeps['logger']): void {
  socket.on('error', (error) => log.debug({ err: error.message }, 'admin connection error'));
  void (async () => {
    try {
      for await (const line of requestLines(socket)) {
        const response = line === TOO_LARGE ? failure(ErrorCode.ADMIN_REQUEST_TOO_LARGE, `a request line may hold at most ${MAX_REQUEST_BYTES} bytes`) : await answer(line, deps, log);
        if (socket.destroyed) return;
        if (!socket.write(`${JSON.stringify(response)}\n`)) await drained(socket);
      }
      socket.end();
    } catch (error) {
      log.debug({ err: (error as Error).message }, 'admin connection dropped');
      socket.destroy();
    }
  })();
}

const TOO_LARGE = Symbol('too large');

/**
 * The non-empty lines of a connection, each at most MAX_REQUEST_BYTES; a longer one is
 * reported once and skipped up to its newline, so memory stays bounded and the next
 * request still gets its answer. Reading pauses while a request is answered.
 */
async function* requestLines(socket: AsyncIterable<Buffer>): AsyncGenerator<string | typeof TOO_LARGE> {
  let pending: Buffer[] = [];
  let size = 0;
  let discarding = false;
  const take = (piece: Buffer): string | typeof TOO_LARGE | undefined => {
    const whole = size + piece.length > MAX_REQUEST_BYTES ? TOO_LARGE : Buffer.concat([...pending, piece]).toString('utf8').trim();
    pending = [];
    size = 0;
    return whole === '' ? undefined : whole;
  };
  for await (const chunk of socket) {
    let start = 0;
    for (let newline = chunk.indexOf(10); newline !== -1; newline = chunk.indexOf(10, start)) {
      const piece = chunk.subarray(start, newline);
      start = newline + 1;
      if (discarding) {
        discarding = false;
        continue;
      }
      const line = take(piece);
      if (line !== undefined) yield line;
    }
    const rest = chunk.subarray(start);
    if (discarding) continue;
    if (size + rest.length > MAX_REQUEST_BYTES) {
      pending = [];
      size = 0;
      discarding = true;
      yield TOO_LARGE;
      continue;
    }
    pending.push(rest);
    size += rest.length;
  }
  const last = discarding ? undefined : take(Buffer.alloc(0));
  if (last !== undefined) yield last;
}

async function answer(line: string, deps: AdminDeps, log: AdminDeps['logger']): Promise<AdminWireResponse> {
  let json: unknown;
  try {
    json = JSON.parse(line);
  } catch {
    return failure(ErrorCode.ADMIN_BAD_REQUEST, 'the line is not JSON; send one {"command": ..., "args": {...}, "actor": ...} object per line');
  }
  try {
    // Before the shape check, whose refusal would name an unknown key.
    refusePrivateKey(json, 'request');
  } catch (error) {
    return failure((error as CertplaneError).code, (error as CertplaneError).message);
  }
  const request = AdminWireRequest.safeParse(json);
  if (!request.success) {
    return failure(ErrorCode.ADMIN_BAD_REQUEST, `bad request: ${describeIssues(request.error.issues, { whole: 'request' }).join('; ')}`);
  }
  const { command, args } = request.data;
  try {
    const result = await runAdminCommand({ command, args, actor: `admin-socket:${request.data.actor ?? 'unknown'}` }, deps);
    return { ok: true, data: result.data, text: result.text };
  } catch (error) {
    if (error instanceof CertplaneError) return failure(error.code, error.message);
    log.error({ command, err: (error as Error).message }, 'admin command failed unexpectedly');
    return failure(ErrorCode.ADMIN_INTERNAL, (error as Error).message);
  }
}

function failure(code: string, message: string): AdminWireResponse {
  return { ok: false, code, message };
}

function drained(socket: Socket): Promise<void> {
  return new Promise((done) => {
    const finish = () => {
      socket.off('drain', finish);
      socket.off('close', finish);
      done();
    };
    socket.on('drain', finish);
    socket.on('close', finish);
  });
}
