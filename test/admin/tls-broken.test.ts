/**
 * The incident case: the HTTPS listener's certificate is not trusted by clients (expired,
 * replaced, wrong CA), so nobody can reach the API. The operator registers a new client
 * certificate and starts a reissue through the admin socket, which needs no TLS at all.
 */
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { request } from 'node:https';
import { after, before, test } from 'node:test';
import { startAdminSocket, type AdminSocket } from '../../src/admin/index.js';
import { EKU, generateKeyPair, issueCertificate, loopbackServerCertificate } from '../../src/pki/factory.js';
import { scratch } from '../support/cli.js';
import { startTestPlane, type TestPlane } from '../support/plane.js';

let plane: TestPlane;
let admin: AdminSocket;
let listenerCa: string;
const dir = await scratch('certplane-tls-broken-');

before(async () => {
  const listener = await loopbackServerCertificate('listener CA nobody trusts');
  listenerCa = listener.caPem;
  plane = await startTestPlane({ tls: { certPem: listener.certPem, keyPem: listener.keyPem } });
  await plane.store.instances.create({ name: 'db1', hostnames: ['db1.example.com'], cluster: 'eu-1', keyAlgorithm: 'ecdsa-p256' });
  admin = await startAdminSocket({ path: dir.path('admin.sock'), deps: plane.adminDeps });
});
after(async () => {
  await admin.close();
  await plane.close();
  await dir.remove();
});

const get = (path: string, options: { ca?: string; cert?: string; key?: string }) =>
  new Promise<number>((resolve, reject) => {
    const req = request(new URL(path, plane.url), { method: 'GET', ...options }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.end();
  });

const ask = (line: object) =>
  new Promise<any>((resolve, reject) => {
    const socket = connect(dir.path('admin.sock'));
    let buffer = '';
    socket.on('data', (chunk) => {
      buffer += chunk.toString();
      if (buffer.includes('\n')) {
        socket.end();
        resolve(JSON.parse(buffer.slice(0, buffer.indexOf('\n'))));
      }
    });
    socket.on('error', reject);
    socket.write(`${JSON.stringify(line)}\n`);
  });

test('with the listener untrusted, the admin socket registers a client and starts a reissue', async () => {
  await assert.rejects(get('/v1/instances', {}), /self[- ]signed|unable to verify|certificate/i, 'clients do not trust the listener');

  const key = await generateKeyPair();
  const client = await issueCertificate({ subject: 'CN=on-call', key, extendedKeyUsage: [EKU.clientAuth] });
  const registered = await ask({ command: 'register-client', args: { name: 'on-call', role: 'operator', certificatePem: client.pem, reason: 'TLS incident' }, actor: 'alice' });
  assert.equal(registered.ok, true, JSON.stringify(registered));
  const reissue = await ask({ command: 'reissue', args: { selector: { all: true }, reason: 'listener CA compromised' }, actor: 'alice' });
  assert.equal(reissue.ok, true, JSON.stringify(reissue));
  const campaigns = await plane.store.query<{ reason: string; requested_by: string }>('SELECT reason, requested_by FROM campaigns');
  assert.deepEqual(campaigns.map((c) => c.reason), ['listener CA compromised']);
  assert.match(campaigns[0]!.requested_by, /alice/);

  // Once clients trust the listener again, the newly registered certificate works.
  assert.equal(await get('/v1/instances', { ca: listenerCa, cert: client.pem, key: key.privateKeyPem }), 200);
});
