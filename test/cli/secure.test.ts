/**
 * `certplane status` and `certplane reissue` against a plane in secure mode (the default):
 * HTTPS with a private listener CA and client certificates, over real TLS.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { parseCertificateBundle } from '../../src/chain/index.js';
import { EKU, generateKeyPair, issueCertificate, loopbackServerCertificate } from '../../src/pki/factory.js';
import { certplane, scratch } from '../support/cli.js';
import { startTestPlane, type TestPlane } from '../support/plane.js';

let plane: TestPlane;
const dir = await scratch('certplane-cli-secure-');
const files: Record<string, string> = {};

async function client(name: string, role: 'operator' | 'reader') {
  const key = await generateKeyPair();
  const cert = await issueCertificate({ subject: `CN=${name}`, key, extendedKeyUsage: [EKU.clientAuth] });
  await plane.store.apiClients.register({ fingerprintSha256: parseCertificateBundle(cert.pem)[0]!.fingerprintSha256, name, role, clusters: null, notAfter: null });
  files[`${name}.pem`] = await dir.write(`${name}.pem`, cert.pem);
  files[`${name}.key`] = await dir.write(`${name}.key`, key.privateKeyPem);
}

before(async () => {
  const listener = await loopbackServerCertificate('listener CA');
  plane = await startTestPlane({ tls: { certPem: listener.certPem, keyPem: listener.keyPem } });
  files.ca = await dir.write('listener-ca.pem', listener.caPem);
  await plane.store.instances.create({ name: 'db1', hostnames: ['db1.example.com'], cluster: 'eu-1', keyAlgorithm: 'ecdsa-p256' });
  await client('oncall', 'operator');
  await client('dashboard', 'reader');
});
after(async () => {
  await plane.close();
  await dir.remove();
});

test('status and a dry-run reissue with a client certificate and the listener CA', async () => {
  const shown = await certplane(['status', '--server', plane.url, '--cert', files['oncall.pem']!, '--key', files['oncall.key']!, '--server-ca', files.ca!]);
  assert.equal(shown.code, 0, shown.stderr);
  assert.match(shown.stdout, /db1/);
  const env = { CERTPLANE_CLIENT_CERT: files['oncall.pem']!, CERTPLANE_CLIENT_KEY: files['oncall.key']!, CERTPLANE_SERVER_CA: files.ca! };
  const dry = await certplane(['reissue', '--server', plane.url, '--cluster', 'eu-1', '--reason', 'rehearsal', '--dry-run'], env);
  assert.equal(dry.code, 0, dry.stderr);
  assert.match(dry.stdout, /dry run: 1 instance\(s\) match/);
});

test('refusals: no client certificate, a reader reissuing, an untrusted listener, half the key pair', async () => {
  const anonymous = await certplane(['status', '--server', plane.url, '--server-ca', files.ca!]);
  assert.equal(anonymous.code, 1);
  assert.match(anonymous.stderr, /AUTH_CLIENT_CERTIFICATE_REQUIRED/);
  const reader = await certplane(['reissue', '--server', plane.url, '--all', '--reason', 'x', '--dry-run', '--cert', files['dashboard.pem']!, '--key', files['dashboard.key']!, '--server-ca', files.ca!]);
  assert.equal(reader.code, 1);
  assert.match(reader.stderr, /AUTH_FORBIDDEN/);
  const untrusted = await certplane(['status', '--server', plane.url, '--cert', files['oncall.pem']!, '--key', files['oncall.key']!]);
  assert.equal(untrusted.code, 1);
  assert.match(untrusted.stderr, /CLI_SERVER_UNREACHABLE.*(self[- ]signed|unable to verify|certificate)/i);
  const half = await certplane(['status', '--server', plane.url, '--cert', files['oncall.pem']!]);
  assert.equal(half.code, 2);
  assert.match(half.stderr, /--cert and --key together/);
  const notUrl = await certplane(['status', '--server', 'certplane.internal:8443']);
  assert.equal(notUrl.code, 2);
  assert.match(notUrl.stderr, /--server must be/);
});
