/**
 * `certplane admin` as a real process against the admin socket of an in-process plane:
 * answers and exit codes (0 done, 1 refused or unreachable, 2 usage), files read on the
 * operator's side, and a private key never sent nor printed.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { chmod, chown, mkdir } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startAdminSocket, type AdminSocket } from '../../src/admin/index.js';
import { EKU, generateKeyPair, issueCertificate } from '../../src/pki/factory.js';
import { certplane, scratch } from '../support/cli.js';
import { root } from '../support/hierarchies.js';
import { startTestPlane, type TestPlane } from '../support/plane.js';
import { ErrorCode } from '../../src/error-catalogue.js';

/** The uid of `nobody`: another local user, for files the tests (run as root) hand to someone else. */
const NOBODY = 65534;

describe('certplane admin', () => {
  let plane: TestPlane;
  let dir: Awaited<ReturnType<typeof scratch>>;
  let admin: AdminSocket;
  let certFile: string;
  let certAndKeyFile: string;

  before(async () => {
    plane = await startTestPlane();
    dir = await scratch('certplane-admin-cli-');
    admin = await startAdminSocket({ path: dir.path('admin.sock'), deps: plane.adminDeps });
    const ca = await root('CLI Client CA');
    const key = await generateKeyPair();
    const cert = await issueCertificate({ subject: 'CN=ci-runner', key, issuer: ca.asIssuer, ca: false, extendedKeyUsage: [EKU.clientAuth], notBefore: new Date(Date.now() - 60_000), notAfter: new Date(Date.now() + 86_400_000) });
    certFile = await dir.write('client.pem', cert.pem);
    certAndKeyFile = await dir.write('client-and-key.pem', `${cert.pem}${key.privateKeyPem}`);
  });
  after(async () => {
    await admin?.close();
    await plane?.close();
    await dir.remove();
  });

  test('status answers with the fleet counts', async () => {
    await plane.app.inject({ method: 'POST', url: '/v1/instances', payload: { name: 'cli-1', hostnames: ['cli-1.example.com'] } });
    const result = await certplane(['admin', '--socket', admin.path, 'status']);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /^instances: [1-9]\d*\nagents connected: 0 to this process/);
  });

  test('register-client --cert-file registers the certificate, --json prints data, the actor is recorded', async () => {
    const registered = await certplane(['admin', '--socket', admin.path, '--actor', 'bob', 'register-client', '--name', 'ci', '--role', 'operator', '--cluster', 'eu-1', '--cluster', 'eu-2', '--cert-file', certFile, '--reason', 'CI pipeline']);
    assert.equal(registered.code, 0, registered.stderr);
    assert.match(registered.stdout, /^registered client "ci" \(operator, clusters eu-1, eu-2\) sha256:[0-9a-f]{64}/);
    // The socket path from the environment, as an operator's shell profile would set it.
    const listed = await certplane(['admin', '--json', 'list-clients'], { CERTPLANE_ADMIN_SOCKET: admin.path });
    assert.equal(listed.code, 0, listed.stderr);
    const client = JSON.parse(listed.stdout).clients.find((c: any) => c.name === 'ci');
    assert.deepEqual([client.role, client.clusters, client.revokedAt], ['operator', ['eu-1', 'eu-2'], null]);
    const [entry] = await plane.store.audit.list(1);
    assert.deepEqual([entry?.actor, entry?.action, entry?.reason], ['admin-socket:bob', 'client.register', 'CI pipeline']);
  });

  test('a refused command exits 1 with its code', async () => {
    const result = await certplane(['admin', '--socket', admin.path, 'revoke-client', '--thumbprint', 'cd'.repeat(32), '--reason', 'gone']);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /certplane: ADMIN_NOT_FOUND: no client with thumbprint/);
    const plain = await certplane(['admin', '--socket', admin.path, 'reload-tls', '--reason', 'rotation']);
    assert.equal(plain.code, 1);
    assert.match(plain.stderr, /certplane: ADMIN_TLS_NOT_CONFIGURED: this plane serves plain HTTP/);
  });

  test('nothing listening on the socket is CLI_ADMIN_UNREACHABLE, exit 1', async () => {
    const result = await certplane(['admin', '--socket', dir.path('nobody.sock'), 'status']);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /certplane: CLI_ADMIN_UNREACHABLE: cannot reach the admin console at .*nobody\.sock/);
  });

  test('never sends a command to a socket another user could have put there: a stand-in answering revoke-agent with success is refused', async () => {
    const received: string[] = [];
    const standIn = async (path: string) => {
      const server = createServer((socket) => {
        received.push(path);
        socket.end(`${JSON.stringify({ ok: true, data: {}, text: 'revoked 1 agent certificate' })}\n`);
      });
      await new Promise<void>((done) => server.listen(path, done));
      return server;
    };
    const revoke = (path: string) => certplane(['admin', '--socket', path, 'revoke-agent', '--instance', randomUUID(), '--reason', 'compromised']);
    const directory = async (name: string, mode: number, owner?: number) => {
      await mkdir(dir.path(name));
      await chmod(dir.path(name), mode);
      if (owner !== undefined) await chown(dir.path(name), owner, owner);
      return dir.path(name);
    };
    const cases = [
      { name: 'a directory owned by another user', directory: () => directory('foreign', 0o700, NOBODY), code: ErrorCode.ADMIN_SOCKET_DIRECTORY_INSECURE },
      { name: 'a directory others may write', directory: () => directory('shared', 0o1777), code: ErrorCode.ADMIN_SOCKET_DIRECTORY_INSECURE },
      { name: 'a socket owned by another user', directory: () => directory('own', 0o700), socketOwner: NOBODY, code: ErrorCode.ADMIN_SOCKET_UNTRUSTED },
    ];
    const servers: Server[] = [];
    try {
      for (const { name, directory, socketOwner, code } of cases) {
        const path = join(await directory(), 'admin.sock');
        servers.push(await standIn(path));
        if (socketOwner !== undefined) await chown(path, socketOwner, socketOwner);
        const result = await revoke(path);
        assert.equal(result.code, 1, `${name}: ${result.stdout}`);
        assert.match(result.stderr, new RegExp(`^certplane: ${code}: `), name);
        assert.equal(result.stdout, '', name);
      }
      assert.deepEqual(received, [], 'nothing connected to a stand-in');
      // The plane's own socket (this user's, in this user's 0700 directory) still gets the command.
      const genuine = await revoke(admin.path);
      assert.match(genuine.stderr, /^certplane: ADMIN_NOT_FOUND: /);
    } finally {
      for (const server of servers) server.close();
    }
  });

  test('usage mistakes exit 2 without contacting the plane', async () => {
    // An unreachable socket proves the mistakes are caught before connecting (that would be exit 1).
    const nowhere = dir.path('nowhere.sock');
    const cases: [string[], RegExp][] = [
      [['admin', '--socket', nowhere], /CLI_USAGE: a command is required/],
      [['admin', '--bogus', 'status'], /CLI_USAGE/],
      [['admin', '--socket', nowhere, 'status', '--verbose'], /ADMIN_BAD_ARGUMENTS: status: Unknown option '--verbose'/],
      [['admin', '--socket', nowhere, 'frobnicate'], /ADMIN_UNKNOWN_COMMAND/],
      [['admin', '--socket', nowhere, 'revoke-client', '--thumbprint', 'ab'.repeat(32)], /ADMIN_BAD_ARGUMENTS: .*reason is required/],
      [['admin', '--socket', nowhere, 'reissue', '--selector', '{cluster', '--reason', 'x'], /--selector must be JSON/],
      [['admin', '--socket', nowhere, 'register-client', '--name', 'x', '--role', 'reader', '--cert-file', dir.path('missing.pem')], /cannot read .*missing\.pem: ENOENT/],
    ];
    for (const [args, stderr] of cases) {
      const result = await certplane(args);
      assert.equal(result.code, 2, `${args.join(' ')}: ${result.stderr}`);
      assert.match(result.stderr, stderr);
    }
  });

  test('a --cert-file holding a private key is refused locally and the key is not printed', async () => {
    const before = await plane.store.apiClients.list();
    const result = await certplane(['admin', '--socket', admin.path, 'register-client', '--name', 'leaky', '--role', 'admin', '--cert-file', certAndKeyFile]);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /CHAIN_PRIVATE_KEY_IN_BUNDLE/);
    assert.doesNotMatch(result.stdout + result.stderr, /MI[A-Za-z0-9+/]{20}/);
    assert.equal((await plane.store.apiClients.list()).length, before.length);
  });

  test('admin help lists every command', async () => {
    const result = await certplane(['admin', 'help']);
    assert.equal(result.code, 0);
    for (const command of ['register-client', 'list-clients', 'revoke-client', 'list-agents', 'revoke-agent', 'status', 'reissue', 'reload-tls', 'audit']) assert.match(result.stdout, new RegExp(`^  ${command}`, 'm'));
  });
});
