/**
 * Rotating the service's own certificate node by node, on a real `certplane serve`
 * process: clients trust the old and the new issuer at once (a CA bundle), the files are
 * replaced, SIGHUP (or `certplane admin reload-tls`) makes new handshakes get the new
 * certificate while open connections keep the old one, and a bad replacement (a key that
 * does not match, an expired certificate, a key others may read) is refused with the old
 * certificate still served.
 */
import assert from 'node:assert/strict';
import { Agent, request } from 'node:https';
import { connect, type PeerCertificate, type TLSSocket } from 'node:tls';
import { after, before, test } from 'node:test';
import { EKU, generateKeyPair, issueCertificate, loopbackServerCertificate } from '../../src/pki/factory.js';
import { parseCertificateBundle } from '../../src/chain/index.js';
import { certplane, scratch } from '../support/cli.js';
import { freePort } from '../support/ports.js';
import { PLANE_START_MS, startCertplane, type RunningProcess } from '../support/processes.js';

const dir = await scratch('certplane-tls-rotation-');
let plane: RunningProcess;
let port: number;
let oldPair: { caPem: string; certPem: string; keyPem: string };
let newPair: { caPem: string; certPem: string; keyPem: string };
const env: Record<string, string> = {};

const fingerprintOf = (pem: string) => parseCertificateBundle(pem)[0]!.fingerprintSha256;
/** Node prints fingerprint256 as colon-separated upper-case hex. */
const normalise = (peer: PeerCertificate) => peer.fingerprint256.replaceAll(':', '').toLowerCase();

/** The certificate a fresh handshake gets, for a client that trusts `ca`; rejects when it does not verify. */
const served = (ca: string) =>
  new Promise<string>((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, ca, servername: 'localhost' }, () => {
      resolve(normalise(socket.getPeerCertificate()));
      socket.end();
    });
    socket.on('error', reject);
  });

const get = (agent: Agent, ca: string) =>
  new Promise<{ status: number; peer: string; socketId: unknown }>((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/healthz', agent, ca, servername: 'localhost' }, (res) => {
      const socket = res.socket as TLSSocket;
      const answer = { status: res.statusCode ?? 0, peer: normalise(socket.getPeerCertificate()), socketId: socket };
      res.resume();
      res.on('end', () => resolve(answer));
    });
    req.on('error', reject);
    req.end();
  });

const admin = (...args: string[]) => certplane(['admin', ...args], { CERTPLANE_ADMIN_SOCKET: env.CERTPLANE_ADMIN_SOCKET! });

before(async () => {
  oldPair = await loopbackServerCertificate('listener CA 2025');
  newPair = await loopbackServerCertificate('listener CA 2026');
  port = await freePort();
  Object.assign(env, {
    CERTPLANE_LISTEN: `127.0.0.1:${port}`,
    CERTPLANE_TLS_CERT: await dir.write('server.pem', oldPair.certPem),
    CERTPLANE_TLS_KEY: await dir.write('server.key', oldPair.keyPem, 0o600),
    CERTPLANE_DATABASE_URL: `pglite:${dir.path('db')}`,
    CERTPLANE_SECRETS: `file:${dir.path('secrets')}`,
    // Never contacted: no certificate is ordered here.
    CERTPLANE_ACME_DIRECTORY: 'https://127.0.0.1:9/dir',
    CERTPLANE_ADMIN_SOCKET: dir.path('admin.sock'),
    CERTPLANE_LOG_LEVEL: 'info',
  });
  plane = startCertplane(['serve'], env);
  await plane.waitForLine((line) => line.includes('management plane listening'), PLANE_START_MS);
});

test('a first start in secure mode says how to register the first client', async () => {
  const hint = await plane.waitForLine((line) => line.includes('no control-plane client is registered'), 5_000);
  assert.match(hint, /certplane admin register-client/);
  assert.ok(hint.includes(env.CERTPLANE_ADMIN_SOCKET!), hint);
});

after(async () => {
  await plane?.stop();
  await dir.remove();
});

test('SIGHUP serves the replaced certificate to new connections; open ones keep theirs; clients trusting both issuers never notice', async () => {
  const bundle = `${oldPair.caPem.trimEnd()}\n${newPair.caPem}`;
  assert.equal(await served(bundle), fingerprintOf(oldPair.certPem));
  const keepAlive = new Agent({ keepAlive: true, maxSockets: 1 });
  const first = await get(keepAlive, bundle);
  assert.deepEqual([first.status, first.peer], [200, fingerprintOf(oldPair.certPem)]);

  await dir.write('server.pem', newPair.certPem);
  await dir.write('server.key', newPair.keyPem);
  plane.child.kill('SIGHUP');
  await plane.waitForLine((line) => line.includes('SIGHUP: server certificate reloaded'), 10_000);

  assert.equal(await served(bundle), fingerprintOf(newPair.certPem), 'a new handshake gets the new certificate');
  assert.equal(await served(newPair.caPem), fingerprintOf(newPair.certPem));
  await assert.rejects(served(oldPair.caPem), /self[- ]signed|unable to verify|certificate/i, 'a client that trusts only the old issuer no longer verifies');
  const again = await get(keepAlive, bundle);
  assert.equal(again.socketId, first.socketId, 'the keep-alive connection was reused');
  assert.deepEqual([again.status, again.peer], [200, fingerprintOf(oldPair.certPem)], 'an open connection keeps the certificate it was made with');
  keepAlive.destroy();

  const trail = await admin('--json', 'audit');
  assert.equal(trail.code, 0, trail.stderr);
  const reload = JSON.parse(trail.stdout).entries.find((e: any) => e.action === 'tls.reload');
  assert.match(reload.actor, /^signal:SIGHUP/);
  assert.deepEqual([reload.details.previous, reload.details.current], [fingerprintOf(oldPair.certPem), fingerprintOf(newPair.certPem)]);
});

test('a key that does not match and an expired certificate are refused; the current certificate stays', async () => {
  await dir.write('server.pem', oldPair.certPem);
  await dir.write('server.key', newPair.keyPem);
  const mismatch = await admin('reload-tls', '--reason', 'rotation step 2');
  assert.equal(mismatch.code, 1, mismatch.stdout);
  assert.match(mismatch.stderr, /TLS_RELOAD_FAILED/);
  assert.equal(await served(newPair.caPem), fingerprintOf(newPair.certPem));

  const key = await generateKeyPair();
  const caKey = await generateKeyPair();
  const ca = await issueCertificate({ subject: 'CN=listener CA 2026', key: caKey, ca: true });
  const expired = await issueCertificate({ subject: 'CN=localhost', key, issuer: ca.asIssuer, dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'], extendedKeyUsage: [EKU.serverAuth], notBefore: new Date(Date.now() - 10 * 86_400_000), notAfter: new Date(Date.now() - 86_400_000) });
  await dir.write('server.pem', expired.pem);
  await dir.write('server.key', key.privateKeyPem);
  const stale = await admin('reload-tls', '--reason', 'rotation step 2');
  assert.equal(stale.code, 1, stale.stdout);
  assert.match(stale.stderr, /TLS_RELOAD_FAILED.*not now/s);
  assert.equal(await served(newPair.caPem), fingerprintOf(newPair.certPem));

  // Put back a good pair: the admin command reloads it and says what it serves.
  await dir.write('server.pem', newPair.certPem);
  await dir.write('server.key', newPair.keyPem);
  const same = await admin('reload-tls', '--reason', 'rotation step 2');
  assert.equal(same.code, 0, same.stderr);
  assert.match(same.stdout, /the same certificate as before/);
});

test('a replacement key that group or others may read is refused on reload; the current certificate stays', async () => {
  await dir.write('server.pem', oldPair.certPem);
  await dir.write('server.key', oldPair.keyPem, 0o644);
  const refused = await admin('reload-tls', '--reason', 'rotation with a readable key');
  assert.equal(refused.code, 1, refused.stdout);
  assert.match(refused.stderr, /SECRETS_FILE_PERMISSIONS: .*server\.key is accessible by group or others \(mode 644\).*chmod 600/);
  assert.equal(await served(newPair.caPem), fingerprintOf(newPair.certPem));

  await dir.write('server.key', oldPair.keyPem, 0o600);
  const reloaded = await admin('reload-tls', '--reason', 'rotation with a private key');
  assert.equal(reloaded.code, 0, reloaded.stderr);
  assert.equal(await served(oldPair.caPem), fingerprintOf(oldPair.certPem));
});
