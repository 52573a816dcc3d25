/**
 * The admin socket against an in-process plane over real Unix sockets: its mode, the
 * client registry through it with the audit trail, bad lines answered without losing the
 * connection, independent connections, stale versus live socket files, and directories
 * another user could write.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmod, chown, lstat, mkdir, readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { createConnection, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { startAdminSocket, type AdminDeps, type AdminSocket } from '../../src/admin/index.js';
import { EKU, generateKeyPair, issueCertificate } from '../../src/pki/factory.js';
import { scratch } from '../support/cli.js';
import { root } from '../support/hierarchies.js';
import { startTestPlane, type TestPlane } from '../support/plane.js';
import { ErrorCode } from '../../src/error-catalogue.js';

const DAY = 24 * 60 * 60 * 1000;
/** The uid of `nobody`: another local user, for directories the tests (run as root) hand to someone else. */
const NOBODY = 65534;

/** A line-oriented client: send a request, read the next answer. */
async function connect(path: string) {
  const socket: Socket = createConnection(path);
  await once(socket, 'connect');
  socket.setEncoding('utf8');
  let buffer = '';
  const waiting: ((line: string) => void)[] = [];
  const lines: string[] = [];
  socket.on('data', (chunk: string) => {
    buffer += chunk;
    for (let nl = buffer.indexOf('\n'); nl !== -1; nl = buffer.indexOf('\n')) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      const waiter = waiting.shift();
      if (waiter) waiter(line);
      else lines.push(line);
    }
  });
  /** The next answer; a server that never answers fails the test after five seconds instead of hanging it. */
  const next = () =>
    new Promise<any>((resolve, reject) => {
      const line = lines.shift();
      if (line !== undefined) return resolve(JSON.parse(line));
      const timer = setTimeout(() => reject(new Error('no answer within 5 s')), 5000);
      waiting.push((l) => {
        clearTimeout(timer);
        resolve(JSON.parse(l));
      });
    });
  return {
    socket,
    sendRaw: (text: string) => socket.write(text),
    next,
    request: async (command: string, args: Record<string, unknown> = {}, actor?: string) => {
      socket.write(`${JSON.stringify({ command, args, ...(actor ? { actor } : {}) })}\n`);
      return next();
    },
    close: () => socket.destroy(),
  };
}

async function clientCertificate(cn: string, options: { notAfter?: Date } = {}) {
  const ca = await root(`${cn} Client CA`);
  const key = await generateKeyPair();
  const cert = await issueCertificate({
    subject: `CN=${cn}`,
    key,
    issuer: ca.asIssuer,
    ca: false,
    extendedKeyUsage: [EKU.clientAuth],
    notBefore: new Date(Date.now() - 2 * DAY),
    notAfter: options.notAfter ?? new Date(Date.now() + 30 * DAY),
  });
  return { cert, key };
}

describe('admin socket', () => {
  let plane: TestPlane;
  let dir: Awaited<ReturnType<typeof scratch>>;
  let deps: AdminDeps;
  let admin: AdminSocket;

  before(async () => {
    plane = await startTestPlane();
    dir = await scratch('certplane-admin-');
    deps = { store: plane.store, sessions: plane.sessions, campaigns: plane.campaigns, clock: plane.clock, logger: plane.logger };
    admin = await startAdminSocket({ path: dir.path('run/admin.sock'), deps });
  });
  after(async () => {
    await admin?.close();
    await plane?.close();
    await dir.remove();
  });

  test('the socket is 0600, owned by this user, in a 0700 directory it created', async () => {
    const socket = await lstat(admin.path);
    assert.ok(socket.isSocket());
    assert.equal(socket.mode & 0o777, 0o600);
    assert.equal(socket.uid, process.getuid?.());
    assert.equal((await stat(dir.path('run'))).mode & 0o777, 0o700);
  });

  test('register-client from a certificate, list-clients, revoke-client, and the audit trail', async () => {
    const { cert } = await clientCertificate('ops-laptop');
    const client = await connect(admin.path);
    try {
      const registered = await client.request('register-client', { name: 'ops', role: 'admin', clusters: ['eu-1'], certificatePem: cert.pem, reason: 'first admin' }, 'alice');
      assert.equal(registered.ok, true, JSON.stringify(registered));
      const thumbprint = registered.data.client.thumbprint as string;
      assert.match(thumbprint, /^[0-9a-f]{64}$/);
      assert.match(registered.text, /registered client "ops" \(admin, clusters eu-1\)/);
      assert.ok(registered.data.client.notAfter > new Date().toISOString());

      const listed = await client.request('list-clients');
      const row = listed.data.clients.find((c: any) => c.thumbprint === thumbprint);
      assert.equal(row.role, 'admin');
      assert.equal(row.revokedAt, null);
      assert.match(listed.text, new RegExp(`sha256:${thumbprint}  ops  admin  eu-1 .* active`));

      const missingReason = await client.request('revoke-client', { thumbprint }, 'alice');
      assert.equal(missingReason.code, ErrorCode.ADMIN_BAD_ARGUMENTS);
      assert.match(missingReason.message, /reason is required/);

      // openssl's upper-case, colon-separated form names the same client.
      const colons = thumbprint.toUpperCase().match(/../g)!.join(':');
      const revoked = await client.request('revoke-client', { thumbprint: colons, reason: 'laptop lost' }, 'alice');
      assert.equal(revoked.ok, true, JSON.stringify(revoked));
      assert.equal(revoked.data.alreadyRevoked, false);
      assert.ok((await plane.store.apiClients.get(thumbprint))?.revokedAt instanceof Date);
      const again = await client.request('revoke-client', { thumbprint, reason: 'twice' }, 'alice');
      assert.equal(again.data.alreadyRevoked, true);

      const audit = await client.request('audit', { limit: 5 });
      const revocations = audit.data.entries.filter((e: any) => e.action === 'client.revoke');
      assert.equal(revocations.length, 1);
      assert.equal(revocations[0].actor, 'admin-socket:alice');
      assert.equal(revocations[0].reason, 'laptop lost');
      assert.equal(revocations[0].target, thumbprint);
      const registration = audit.data.entries.find((e: any) => e.action === 'client.register');
      assert.equal(registration.reason, 'first admin');
      assert.equal(registration.details.role, 'admin');
    } finally {
      client.close();
    }
  });

  test('register-client refuses a PEM holding a private key and an expired certificate, and records nothing', async () => {
    const { cert, key } = await clientCertificate('with-key');
    const expired = await clientCertificate('old', { notAfter: new Date(Date.now() - DAY) });
    const client = await connect(admin.path);
    try {
      const before = (await plane.store.audit.list(1000)).length;
      const withKey = await client.request('register-client', { name: 'k', role: 'reader', certificatePem: `${cert.pem}${key.privateKeyPem}` });
      assert.deepEqual([withKey.ok, withKey.code], [false, ErrorCode.PRIVATE_KEY_REFUSED]);
      assert.doesNotMatch(JSON.stringify(withKey), /PRIVATE KEY-----\n|MI[A-Za-z0-9+/]{20}/);
      const old = await client.request('register-client', { name: 'old', role: 'reader', certificatePem: expired.cert.pem });
      assert.deepEqual([old.ok, old.code], [false, ErrorCode.CHAIN_EXPIRED]);
      const both = await client.request('register-client', { name: 'x', role: 'reader', certificatePem: cert.pem, thumbprint: 'ab'.repeat(32) });
      assert.equal(both.code, ErrorCode.ADMIN_BAD_ARGUMENTS);
      assert.equal((await plane.store.audit.list(1000)).length, before);
      assert.equal((await plane.store.apiClients.list()).some((c) => c.name === 'k' || c.name === 'old'), false);
    } finally {
      client.close();
    }
  });

  test('list-clients cannot be forged: a newline in a name, cluster or reason is refused, and a stored one is shown escaped on its own row', async () => {
    const client = await connect(admin.path);
    try {
      const forged = `evil\nsha256:${'ff'.repeat(32)}  root  admin  all clusters  until -  active`;
      const thumbprint = 'cd'.repeat(32);
      for (const args of [
        { name: forged, role: 'reader', thumbprint },
        { name: 'ok', role: 'reader', clusters: ['eu-1\nus-1'], thumbprint },
        { name: 'ok', role: 'reader', thumbprint, reason: 'because\r\nforged' },
        { name: 'tab\tand\u001b[2Kescape', role: 'reader', thumbprint },
      ]) {
        const answer = await client.request('register-client', args);
        assert.deepEqual([answer.ok, answer.code], [false, ErrorCode.ADMIN_BAD_ARGUMENTS], JSON.stringify(args));
      }
      assert.equal((await plane.store.apiClients.get(thumbprint)), undefined);
      // A row stored before the rule existed still shows as one row, its newline escaped.
      await plane.store.apiClients.register({ fingerprintSha256: 'ef'.repeat(32), name: forged, role: 'reader', clusters: ['a\nb'], notAfter: null });
      const listed = await client.request('list-clients');
      const clients = (await plane.store.apiClients.list()).length;
      assert.equal(listed.text.split('\n').length, clients, listed.text);
      assert.equal(listed.text.split('\n').filter((line: string) => line.startsWith(`sha256:${'ff'.repeat(32)}`)).length, 0, listed.text);
      assert.ok(listed.text.includes('evil\\nsha256:'), listed.text);
    } finally {
      client.close();
    }
  });

  test('a private key anywhere in a request, one-line or hidden by a JSON escape, is refused, not stored and not echoed', async () => {
    const { privateKeyPem } = await generateKeyPair();
    const body = privateKeyPem.split('\n').filter((l) => l && !l.startsWith('-----')).join('');
    const oneLine = `-----BEGIN PRIVATE KEY----- ${body} -----END PRIVATE KEY-----`;
    const client = await connect(admin.path);
    try {
      const before = (await plane.store.audit.list(1000)).length;
      const lines = [
        JSON.stringify({ command: 'register-client', args: { name: oneLine, role: 'reader', thumbprint: 'ce'.repeat(32) } }),
        JSON.stringify({ command: 'register-client', args: { name: 'x', role: 'reader', thumbprint: 'ce'.repeat(32), reason: oneLine } }),
        JSON.stringify({ command: 'revoke-agent', args: { thumbprint: 'ce'.repeat(32), reason: oneLine } }),
        // The escape is decoded by JSON.parse: a pattern over the raw line would not see the dashes.
        JSON.stringify({ command: 'register-client', args: { name: 'x', role: 'reader', thumbprint: 'ce'.repeat(32), reason: oneLine } }).replaceAll('-----BEGIN', '\\u002d----BEGIN'),
        JSON.stringify({ command: 'status', args: {}, [oneLine]: 1 }),
        JSON.stringify({ command: oneLine, args: {} }),
      ];
      for (const line of lines) {
        client.sendRaw(`${line}\n`);
        const answer = await client.next();
        assert.deepEqual([answer.ok, answer.code], [false, ErrorCode.PRIVATE_KEY_REFUSED], line.slice(0, 120));
        assert.ok(!JSON.stringify(answer).includes(body.slice(40, 80)), `the answer echoes the key: ${JSON.stringify(answer)}`);
      }
      assert.equal((await plane.store.audit.list(1000)).length, before);
      assert.equal(await plane.store.apiClients.get('ce'.repeat(32)), undefined);
    } finally {
      client.close();
    }
  });

  test('bad lines get error answers and the same connection keeps working', async () => {
    const client = await connect(admin.path);
    try {
      client.sendRaw('{not json\n');
      assert.equal((await client.next()).code, ErrorCode.ADMIN_BAD_REQUEST);
      client.sendRaw(`${JSON.stringify({ command: 'status', args: [], extra: 1 })}\n`);
      const shape = await client.next();
      assert.equal(shape.code, ErrorCode.ADMIN_BAD_REQUEST);
      assert.match(shape.message, /extra|args/);
      client.sendRaw(`{"command":"status","args":{"x":"${'y'.repeat(1536 * 1024)}"}}\n`);
      assert.equal((await client.next()).code, ErrorCode.ADMIN_REQUEST_TOO_LARGE);
      assert.equal((await client.request('drop-database')).code, ErrorCode.ADMIN_UNKNOWN_COMMAND);
      const badArgs = await client.request('audit', { limit: 'all' });
      assert.equal(badArgs.code, ErrorCode.ADMIN_BAD_ARGUMENTS);
      assert.match(badArgs.message, /limit/);
      const status = await client.request('status');
      assert.equal(status.ok, true);
      assert.equal(typeof status.data.instances, 'number');
      assert.match(status.text, /^instances: \d+/);
      const help = await client.request('help');
      assert.deepEqual(help.data.commands.map((c: any) => c.name), ['register-client', 'list-clients', 'revoke-client', 'list-agents', 'revoke-agent', 'status', 'reissue', 'reload-tls', 'reload-trust', 'audit', 'help']);
      assert.equal(help.data.commands.find((c: any) => c.name === 'revoke-agent').audited, true);
    } finally {
      client.close();
    }
  });

  test('connections are independent: a half-sent line on one does not hold up another', async () => {
    await plane.app.inject({ method: 'POST', url: '/v1/instances', payload: { name: 'both', hostnames: ['both.example.com'] } });
    const first = await connect(admin.path);
    const second = await connect(admin.path);
    try {
      first.sendRaw('{"command":"sta');
      const [a, b] = await Promise.all([second.request('status'), second.request('list-clients')]);
      assert.equal(a.ok, true);
      assert.ok(a.data.instances >= 1);
      assert.ok(Array.isArray(b.data.clients));
      first.sendRaw('tus"}\n');
      assert.equal((await first.next()).ok, true);
      const [x, y] = await Promise.all([first.request('audit', { limit: 1 }), second.request('list-agents')]);
      assert.equal(x.ok, true);
      assert.equal(y.ok, true);
    } finally {
      first.close();
      second.close();
    }
  });

  test('a stale socket file is replaced; a live one, or a file that is not a socket, refuses the second server', async () => {
    const path = dir.path('stale.sock');
    // A process that dies without cleaning up leaves its socket file behind.
    const child = spawn(process.execPath, ['-e', 'require("net").createServer().listen(process.argv[1], () => console.log("up"))', path], { stdio: ['ignore', 'pipe', 'inherit'] });
    await once(child.stdout, 'data');
    child.kill('SIGKILL');
    await once(child, 'exit');
    assert.ok((await lstat(path)).isSocket());

    const replaced = await startAdminSocket({ path, deps });
    try {
      const client = await connect(path);
      assert.equal((await client.request('status')).ok, true);
      client.close();
      const second = await startAdminSocket({ path, deps }).catch((error: unknown) => error);
      if (second && typeof second === 'object' && 'close' in second) await (second as AdminSocket).close();
      assert.equal((second as { code?: string }).code, ErrorCode.ADMIN_SOCKET_IN_USE);
      const still = await connect(path);
      assert.equal((await still.request('status')).ok, true);
      still.close();
    } finally {
      await replaced.close();
    }
    await assert.rejects(lstat(path), /ENOENT/);

    const file = await dir.write('not-a-socket', 'precious data');
    await assert.rejects(startAdminSocket({ path: file, deps }), (error: any) => error.code === ErrorCode.ADMIN_SOCKET_PATH_OCCUPIED);
    assert.equal(await readFile(file, 'utf8'), 'precious data');
  });

  test('refuses a socket directory another user owns or others may write, where that user could swap in a socket of their own', async () => {
    /** The refusal's code; a socket that started anyway is closed, so a failing run does not hang the file. */
    const refusal = async (path: string) => {
      const started = await startAdminSocket({ path, deps }).catch((error: { code?: string; message: string }) => error);
      if ('close' in started) {
        await started.close();
        return 'started';
      }
      return started;
    };
    const foreign = dir.path('foreign');
    await mkdir(foreign, { mode: 0o700 });
    await chown(foreign, NOBODY, NOBODY);
    const foreignRefusal = await refusal(join(foreign, 'admin.sock'));
    assert.equal((foreignRefusal as { code?: string }).code, ErrorCode.ADMIN_SOCKET_DIRECTORY_INSECURE, String(foreignRefusal));
    assert.match((foreignRefusal as Error).message, new RegExp(`owned by uid ${NOBODY}`));
    assert.deepEqual(await readdir(foreign), [], 'nothing was created in it');
    for (const mode of [0o777, 0o1777, 0o770, 0o702]) {
      const shared = dir.path(`shared-${mode.toString(8)}`);
      await mkdir(shared);
      await chmod(shared, mode);
      assert.equal(((await refusal(join(shared, 'admin.sock'))) as { code?: string }).code, ErrorCode.ADMIN_SOCKET_DIRECTORY_INSECURE, `mode ${mode.toString(8)}`);
      assert.deepEqual(await readdir(shared), []);
    }
  });
});
