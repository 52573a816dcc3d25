/**
 * `certplane admin`: one command to the admin socket of a running plane. It needs no
 * certificate and no network, which is the point: it works when TLS is broken, and it is
 * how the first client certificate is registered. Being able to connect (the socket is
 * 0600, the service's user or root) is the authentication; `--actor` only names who
 * asks in the audit trail. In the other direction, the command is only sent to a socket
 * that root or the caller owns, so another local user cannot pose as the plane.
 * Arguments are checked here first, so a usage mistake is exit 2 without a round trip,
 * and files are read here, by the operator's own path.
 */
import { lstat, realpath } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { basename, dirname, join, resolve } from 'node:path';
import { userInfo } from 'node:os';
import { z } from 'zod';
import { adminHelp, assertSocketDirectory, parseCommandWords, validateAdminArgs } from '../admin/index.js';
import { CertplaneError } from '../errors.js';
import { ExitCode, parse, usageError, type Io } from './args.js';
import { ErrorCode } from '../error-catalogue.js';

const USAGE = `usage: certplane admin [--socket PATH] [--actor NAME] [--json] COMMAND [--option value]...
  --socket  the plane's admin socket (default $CERTPLANE_ADMIN_SOCKET, else ./data/admin.sock)
  --actor   who asks, for the audit trail (default $USER)
  --json    print the answer's data as JSON
commands:
${adminHelp()}`;

const GLOBAL_OPTIONS = { socket: { type: 'string' }, actor: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } as const;
const ANSWER_TIMEOUT_MS = 120_000;

const WireResponse = z.union([
  z.object({ ok: z.literal(true), data: z.unknown(), text: z.string() }),
  z.object({ ok: z.literal(false), code: z.string(), message: z.string() }),
]);
type WireResponse = z.infer<typeof WireResponse>;

/** Options before the command word are the CLI's own; everything from the command word on is the command's. */
function splitAtCommand(args: string[]): { own: string[]; words: string[] } {
  let i = 0;
  while (i < args.length && (args[i] as string).startsWith('-')) {
    const name = (args[i] as string).replace(/^--?/, '').split('=')[0] as string;
    const takesValue = Object.hasOwn(GLOBAL_OPTIONS, name) && GLOBAL_OPTIONS[name as keyof typeof GLOBAL_OPTIONS].type === 'string' && !(args[i] as string).includes('=');
    i += takesValue ? 2 : 1;
  }
  return { own: args.slice(0, i), words: args.slice(i) };
}

/** Exit 0 when the plane did it, 1 when it refused (or cannot be reached), 2 when the command line is wrong. */
export async function admin(args: string[], io: Io): Promise<number> {
  const { own, words } = splitAtCommand(args);
  const { values } = parse(own, GLOBAL_OPTIONS, USAGE);
  if (values.help || words[0] === 'help') {
    io.stdout.write(`${USAGE}\n`);
    return ExitCode.OK;
  }
  if (words.length === 0) throw usageError('a command is required', USAGE);
  let request: { command: string; args: Record<string, unknown> };
  try {
    request = await parseCommandWords(words);
    validateAdminArgs(request.command, request.args);
  } catch (error) {
    if (!(error instanceof CertplaneError)) throw error;
    io.stderr.write(`certplane: ${error.code}: ${error.message}\n`);
    return ExitCode.BAD_INPUT;
  }
  const socketPath = values.socket ?? io.env.CERTPLANE_ADMIN_SOCKET ?? './data/admin.sock';
  const actor = values.actor ?? io.env.USER ?? userInfo().username;
  const response = await exchange(await trustedSocket(socketPath), { ...request, actor });
  if (!response.ok) {
    io.stderr.write(`certplane: ${response.code}: ${response.message}\n`);
    return ExitCode.NO;
  }
  io.stdout.write(values.json ? `${JSON.stringify(response.data, null, 2)}\n` : `${response.text}\n`);
  return ExitCode.OK;
}

/**
 * The socket's path once it is known to be the plane's, checked before anything is sent:
 * a socket of root or of the caller, in a directory owned by one of them that nobody else
 * may write. Otherwise another local user could stand in for the plane, receive the
 * command and answer a success that never happened. The directory is resolved once and
 * the socket reached through that resolved path, so a symbolic link cannot be re-pointed
 * between the check and the connection.
 */
async function trustedSocket(path: string): Promise<string> {
  const trustedOwners = [0, process.getuid!()];
  const dir = await realpath(dirname(resolve(path))).catch((error: NodeJS.ErrnoException) => {
    throw unreachable(path, error);
  });
  await assertSocketDirectory(dir, trustedOwners);
  const socketPath = join(dir, basename(path));
  const stats = await lstat(socketPath).catch((error: NodeJS.ErrnoException) => {
    throw unreachable(path, error);
  });
  if (!stats.isSocket() || !trustedOwners.includes(stats.uid)) {
    throw new CertplaneError(
      ErrorCode.ADMIN_SOCKET_UNTRUSTED,
      `${socketPath} is ${stats.isSocket() ? `a socket owned by uid ${stats.uid}` : 'not a socket'}; nothing was sent: the plane's admin socket belongs to root or to the user running this command (run it as the service's user)`,
      { path: socketPath, uid: stats.uid },
    );
  }
  return socketPath;
}

/** Sends one request line and reads one answer line. */
function exchange(path: string, request: { command: string; args: Record<string, unknown>; actor: string }): Promise<WireResponse> {
  return new Promise((resolve, reject) => {
    const socket = createConnection(path);
    let connected = false;
    let received = '';
    socket.setTimeout(ANSWER_TIMEOUT_MS, () => socket.destroy(new CertplaneError(ErrorCode.CLI_ADMIN_NO_ANSWER, `no answer on ${path} within ${ANSWER_TIMEOUT_MS / 1000} s`)));
    socket.setEncoding('utf8');
    socket.on('connect', () => {
      connected = true;
      socket.write(`${JSON.stringify(request)}\n`);
    });
    socket.on('data', (chunk: string) => {
      received += chunk;
      const newline = received.indexOf('\n');
      if (newline === -1) return;
      socket.destroy();
      try {
        resolve(WireResponse.parse(JSON.parse(received.slice(0, newline))));
      } catch {
        reject(new CertplaneError(ErrorCode.CLI_ADMIN_BAD_ANSWER, `${path} answered something that is not an admin console response`));
      }
    });
    socket.on('error', (error: NodeJS.ErrnoException) => reject(error instanceof CertplaneError ? error : connected ? new CertplaneError(ErrorCode.CLI_ADMIN_NO_ANSWER, `${path}: ${error.message}`) : unreachable(path, error)));
    socket.on('close', () => reject(new CertplaneError(ErrorCode.CLI_ADMIN_NO_ANSWER, `${path} closed the connection without answering`)));
  });
}

function unreachable(path: string, error: NodeJS.ErrnoException): CertplaneError {
  const why =
    error.code === 'ENOENT'
      ? 'no admin socket there: is `certplane serve` running, and with this socket path (CERTPLANE_ADMIN_SOCKET)?'
      : error.code === 'ECONNREFUSED'
        ? 'nothing listens on it (a stale socket left by a stopped plane?)'
        : error.code === 'EACCES'
          ? "permission denied: the admin socket is only for the service's user and root"
          : error.message;
  return new CertplaneError(ErrorCode.CLI_ADMIN_UNREACHABLE, `cannot reach the admin console at ${path}: ${why}`, { code: error.code }, { cause: error });
}
