/**
 * The default deployment, with real processes over real TLS: `certplane serve` in secure
 * mode (HTTPS, a private listener CA, client certificates), the first client registered
 * through the admin socket, an instance registered over HTTPS with that certificate, a
 * `certplane agent` enrolling over HTTPS and holding its channel over mutual TLS, the
 * on-call `certplane reissue --follow` with the client certificate, Pebble issuing, and
 * then the agent revoked: cut off, refused, and told what to do.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { parseCertificateBundle, verifyChain, type Certificate } from '../../src/chain/index.js';
import { startPebble, type LocalPebble } from '../../src/devenv/pebble.js';
import { sendHttp } from '../../src/http-client.js';
import { EKU, generateKeyPair, issueCertificate, loopbackServerCertificate } from '../../src/pki/factory.js';
import { certplane, scratch } from '../support/cli.js';
import { freePort } from '../support/ports.js';
import { logEvents, PLANE_START_MS, startCertplane, type RunningProcess } from '../support/processes.js';
import { ErrorCode } from '../../src/error-catalogue.js';

const dir = await scratch('certplane-e2e-secure-');
let pebble: LocalPebble;
let preferred: Certificate;
let plane: RunningProcess;
let agent: RunningProcess | undefined;
let server: string;
const files: Record<string, string> = {};
const host = 'db1.secure.test';
const address = '127.0.0.7';

/** One HTTPS call to the plane with the on-call client certificate, through the client the CLI uses. */
const call = async (method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> => {
  const payload = body === undefined ? undefined : JSON.stringify(body);
  const tls = { ca: files.caPem!, cert: files.clientPem!, key: files.clientKeyPem! };
  const answer = await sendHttp(new URL(path, server), { method, headers: payload ? { 'content-type': 'application/json' } : {}, ...(payload ? { body: payload } : {}), tls });
  return { status: answer.status, body: JSON.parse(answer.text) };
};

before(async () => {
  pebble = await startPebble({ alternateRoots: 2 });
  preferred = parseCertificateBundle((await pebble.roots())[1]!)[0]!;
  await pebble.resolve(host, address);
  files.preferredRoot = await dir.write('preferred-root.pem', preferred.pem);
  const listener = await loopbackServerCertificate('plane listener CA');
  files.caPem = listener.caPem;
  files.ca = await dir.write('plane-ca.pem', listener.caPem);
  const clientKey = await generateKeyPair();
  const client = await issueCertificate({ subject: 'CN=on-call', key: clientKey, extendedKeyUsage: [EKU.clientAuth] });
  files.clientPem = client.pem;
  files.clientKeyPem = clientKey.privateKeyPem;
  files.client = await dir.write('oncall.pem', client.pem);
  files.clientKey = await dir.write('oncall.key', clientKey.privateKeyPem);
  const port = await freePort();
  server = `https://127.0.0.1:${port}`;
  files.adminSocket = dir.path('admin.sock');
  plane = startCertplane(['serve'], {
    CERTPLANE_LISTEN: `127.0.0.1:${port}`,
    CERTPLANE_TLS_CERT: await dir.write('server.pem', listener.certPem),
    CERTPLANE_TLS_KEY: await dir.write('server.key', listener.keyPem, 0o600),
    CERTPLANE_DATABASE_URL: `pglite:${dir.path('db')}`,
    CERTPLANE_ACME_DIRECTORY: pebble.directoryUrl,
    CERTPLANE_ACME_CA_CERTS: pebble.acmeServerCaPath,
    CERTPLANE_PREFERRED_CHAINS: JSON.stringify([preferred.subjectCN]),
    CERTPLANE_TRUST_STORE: files.preferredRoot,
    CERTPLANE_SECRETS: `file:${dir.path('secrets')}`,
    CERTPLANE_ADMIN_SOCKET: files.adminSocket,
    CERTPLANE_SCHEDULER_INTERVAL_MS: '500',
    CERTPLANE_LOG_LEVEL: 'info',
  });
  await plane.waitForLine((line) => line.includes('management plane listening'), PLANE_START_MS);
});

after(async () => {
  await agent?.stop();
  await plane?.stop();
  await pebble?.stop();
  await dir.remove();
});

test('bootstrap through the admin socket, enroll and issue over TLS, reissue from the on-call CLI, revoke', async () => {
  // Nobody can call the API until a client is registered locally.
  const anonymous = await call('GET', '/v1/instances');
  assert.equal(anonymous.status, 401);
  const registered = await certplane(['admin', '--socket', files.adminSocket!, 'register-client', '--name', 'on-call', '--role', 'operator', '--cert-file', files.client!, '--reason', 'bootstrap']);
  assert.equal(registered.code, 0, registered.stderr);

  const created = await call('POST', '/v1/instances', { name: 'db1', hostnames: [host], cluster: 'eu-1', autoIssue: false });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const instanceId: string = created.body.id;
  const stateDir = dir.path('agent');
  const startAgent = (token?: string) =>
    startCertplane(
      ['agent', '--server', server, '--state-dir', stateDir, ...(token ? ['--token', token] : []), '--http01-port', String(pebble.http01Port), '--http01-host', address, '--trust', files.preferredRoot!, '--server-ca', files.ca!],
      { CERTPLANE_LOG_LEVEL: 'info' },
    );
  agent = startAgent(created.body.enrollmentToken);
  await agent.waitForLine((line) => line.includes('"authenticated"'), 30_000);

  const reissued = await certplane(['reissue', '--server', server, '--instance', instanceId, '--reason', 'first certificate', '--follow', '--poll-ms', '250', '--cert', files.client!, '--key', files.clientKey!, '--server-ca', files.ca!], {}, 120_000);
  assert.equal(reissued.code, 0, `${reissued.stdout}\n${reissued.stderr}\n${plane.lines.slice(-10).join('\n')}`);
  assert.match(reissued.stdout, /done: 1 installed \(0 re-chained\), 0 failed, 0 skipped/);
  const live = parseCertificateBundle(await readFile(join(stateDir, 'live', 'fullchain.pem'), 'utf8'));
  assert.deepEqual(live[0]!.dnsNames, [host]);
  assert.equal(verifyChain(live, { trustAnchors: [preferred], at: new Date(), hostnames: [host] }).ok, true);
  const view = await call('GET', `/v1/instances/${instanceId}`);
  assert.equal(view.body.certificate.status, 'installed');
  assert.equal(view.body.certificate.fingerprintSha256, live[0]!.fingerprintSha256);

  // Who asked is the client certificate's registered name, not a header anyone can set.
  const trail = await certplane(['admin', '--socket', files.adminSocket!, '--json', 'audit', '--limit', '50']);
  const entries = JSON.parse(trail.stdout).entries as { action: string; actor: string }[];
  assert.equal(entries.find((e) => e.action === 'reissue.start')?.actor, 'client:on-call');
  assert.equal(entries.find((e) => e.action === 'instance.register')?.actor, 'client:on-call');

  // Revoked: cut off at once, refused on reconnection, and the agent says what to do.
  const revoked = await certplane(['admin', '--socket', files.adminSocket!, 'revoke-agent', '--instance', instanceId, '--reason', 'instance decommissioned']);
  assert.equal(revoked.code, 0, revoked.stderr);
  await agent.waitForLine((line) => line.includes('certificate is revoked') && line.includes('"code":4003'), 10_000);
  // It dials again at its slowest pace (30 s) and authentication refuses it.
  await agent.waitForLine((line) => line.includes('certificate is revoked') && line.includes('"code":4001') && line.includes(ErrorCode.AGENT_REVOKED), 60_000);
  const after = await call('GET', `/v1/instances/${instanceId}`);
  assert.equal(after.body.agent.connected, false);
  // No key material in anything the plane logged.
  for (const event of logEvents(plane.lines)) assert.doesNotMatch(JSON.stringify(event), /PRIVATE KEY/);
});
