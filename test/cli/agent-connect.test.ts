/**
 * `certplane agent` against a plane over real TLS, as an operator runs it: a moved plane
 * (--server changed after enrollment) is followed and remembered, and the usual mistakes
 * (http:// against the TLS port, no --server-ca, a wrong port) answer with a stable code
 * and the fix instead of Node's "socket hang up" or "unable to verify the first certificate".
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { after, before, test } from 'node:test';
import { createEnrollmentToken } from '../../src/fleet/enrollment.js';
import { loopbackServerCertificate } from '../../src/pki/factory.js';
import { certplane, scratch } from '../support/cli.js';
import { startTestPlane, type TestPlane } from '../support/plane.js';
import { freePort } from '../support/ports.js';
import { startCertplane } from '../support/processes.js';

const dir = await scratch('certplane-agent-connect-');
let plane: TestPlane;
let port: number;
let caFile: string;

/** A fresh instance's enrollment token, straight from the store (the API would want a client certificate). */
const token = async (name: string): Promise<string> => {
  const instance = await plane.store.instances.create({ name, hostnames: [`${name}.example.com`], cluster: null, keyAlgorithm: 'ecdsa-p256' });
  return (await createEnrollmentToken(plane.store, instance.id, new Date(), 60_000)).token;
};

before(async () => {
  const listener = await loopbackServerCertificate('agent connect test CA');
  caFile = await dir.write('plane-ca.pem', listener.caPem);
  plane = await startTestPlane({ tls: { certPem: listener.certPem, keyPem: listener.keyPem } });
  port = Number(new URL(plane.url).port);
});

after(async () => {
  await plane?.close();
  await dir.remove();
});

test('an enrolled agent given a new --server uses it, says so, and saves it for the next start', async () => {
  const stateDir = dir.path('moved');
  const first = startCertplane(['agent', '--server', `https://127.0.0.1:${port}`, '--state-dir', stateDir, '--token', await token('moved'), '--server-ca', caFile], {});
  await first.waitForLine((line) => line.includes('channel open'), 30_000);
  await first.stop();

  const moved = startCertplane(['agent', '--server', `https://localhost:${port}`, '--state-dir', stateDir, '--server-ca', caFile], {});
  try {
    const changed = JSON.parse(await moved.waitForLine((line) => line.includes('--server URL changed'), 30_000));
    assert.equal(changed.previous, `https://127.0.0.1:${port}/`);
    assert.equal(changed.server, `https://localhost:${port}/`);
    const open = JSON.parse(await moved.waitForLine((line) => line.includes('channel open'), 30_000));
    assert.equal(open.server, `wss://localhost:${port}`);
  } finally {
    await moved.stop();
  }
  const saved = JSON.parse(await readFile(`${stateDir}/identity/instance.json`, 'utf8'));
  assert.equal(saved.server, `https://localhost:${port}/`);
  assert.equal(saved.configuredServer, `https://localhost:${port}/`);
});

test('http:// against the TLS port answers AGENT_SERVER_SPEAKS_TLS and says to use https://, not "socket hang up"', async () => {
  const result = await certplane(['agent', '--server', `http://127.0.0.1:${port}`, '--state-dir', dir.path('plain'), '--token', 'unused', '--server-ca', caFile]);
  assert.equal(result.code, 1);
  assert.match(result.stderr, /AGENT_SERVER_SPEAKS_TLS: .*use --server https:\/\/127\.0\.0\.1:\d+/);
});

test('a missing --server-ca answers AGENT_SERVER_UNTRUSTED and names --server-ca, not "unable to verify the first certificate"', async () => {
  const result = await certplane(['agent', '--server', `https://127.0.0.1:${port}`, '--state-dir', dir.path('untrusted'), '--token', await token('untrusted')]);
  assert.equal(result.code, 1);
  assert.match(result.stderr, /AGENT_SERVER_UNTRUSTED: .*pass --server-ca with the CA certificate/);
});

test('a port nobody listens on answers AGENT_SERVER_UNREACHABLE and points at --server', async () => {
  const result = await certplane(['agent', '--server', `https://127.0.0.1:${await freePort()}`, '--state-dir', dir.path('nobody'), '--token', 'unused', '--server-ca', caFile]);
  assert.equal(result.code, 1);
  assert.match(result.stderr, /AGENT_SERVER_UNREACHABLE: .*ECONNREFUSED.*--server/);
});

test('--token-file enrolls and removes the spent token', async () => {
  const tokenFile = await dir.write('token', `${await token('from-file')}\n`);
  const agent = startCertplane(['agent', '--server', `https://127.0.0.1:${port}`, '--state-dir', dir.path('from-file'), '--token-file', tokenFile, '--server-ca', caFile], {});
  try {
    await agent.waitForLine((line) => line.includes('channel open'), 30_000);
  } finally {
    await agent.stop();
  }
  await assert.rejects(readFile(tokenFile), { code: 'ENOENT' });
});

test('--probe takes [postgres://]HOST:PORT, at most 8, and --probe-interval whole seconds with a --probe; anything else is a usage error (exit 2) before anything starts', async () => {
  const base = ['agent', '--server', `https://127.0.0.1:${port}`, '--state-dir', dir.path('probe-usage'), '--token', 'unused', '--server-ca', caFile];
  const cases: [string[], RegExp][] = [
    [['--probe', 'db.example.com'], /--probe takes HOST:PORT/],
    [['--probe', 'https://db.example.com:443'], /--probe takes HOST:PORT/],
    [Array.from({ length: 9 }, (_, i) => ['--probe', `127.0.0.1:${1000 + i}`]).flat(), /at most 8 --probe targets/],
    [['--probe', '127.0.0.1:5432', '--probe-interval', '0'], /--probe-interval takes whole seconds/],
    [['--probe', '127.0.0.1:5432', '--probe-interval', '1.5'], /--probe-interval takes whole seconds/],
    [['--probe-interval', '60'], /--probe-interval needs at least one --probe/],
  ];
  for (const [extra, message] of cases) {
    const result = await certplane([...base, ...extra]);
    assert.equal(result.code, 2, `${extra.join(' ')}: ${result.stderr}`);
    assert.match(result.stderr, /CLI_USAGE/);
    assert.match(result.stderr, message);
  }
});
