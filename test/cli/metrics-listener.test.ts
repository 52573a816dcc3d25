/**
 * CERTPLANE_METRICS_LISTEN on a real `certplane serve` in secure mode, over real HTTP:
 * the second listener serves GET /metrics in plain HTTP without a client certificate (the
 * process's and the fleet's metrics) and nothing else, while the main listener still
 * refuses /metrics without one. A bad value stops the start with CONFIG_INVALID naming the
 * variable, a taken port with METRICS_LISTEN_FAILED.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { request } from 'node:https';
import { createServer } from 'node:net';
import { after, test } from 'node:test';
import { loopbackServerCertificate } from '../../src/pki/factory.js';
import { scratch } from '../support/cli.js';
import { freePort } from '../support/ports.js';
import { freeLoopbackPorts } from '../../src/devenv/ports.js';
import { startCertplane } from '../support/processes.js';
import { ErrorCode } from '../../src/error-catalogue.js';

/** Start-up on PGlite under a loaded test machine can take tens of seconds. */
const START_MS = 240_000;

const dir = await scratch('certplane-metrics-listener-');
after(() => dir.remove());
const listener = await loopbackServerCertificate('metrics listener test CA');
const certPath = await dir.write('server.pem', listener.certPem);
const keyPath = await dir.write('server.key', listener.keyPem, 0o600);

/** A secure-mode plane (HTTPS, client certificates) on PGlite in memory. */
function planeEnv(name: string, port: number, metricsListen: string): Record<string, string> {
  return {
    CERTPLANE_LISTEN: `127.0.0.1:${port}`,
    CERTPLANE_METRICS_LISTEN: metricsListen,
    CERTPLANE_TLS_CERT: certPath,
    CERTPLANE_TLS_KEY: keyPath,
    CERTPLANE_DATABASE_URL: 'memory:',
    CERTPLANE_SECRETS: `file:${dir.path(`${name}-secrets`)}`,
    // Never contacted: nothing is ordered.
    CERTPLANE_ACME_DIRECTORY: 'https://127.0.0.1:9/dir',
    CERTPLANE_LOG_LEVEL: 'info',
  };
}

/** GET over HTTPS trusting the test CA, without a client certificate. */
function httpsGet(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { ca: listener.caPem }, (response) => {
      let body = '';
      response.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body }));
    });
    req.on('error', reject).end();
  });
}

test('the metrics listener answers GET /metrics in plain HTTP and nothing else; the main listener still wants a client certificate', async () => {
  const [port, metricsPort] = (await freeLoopbackPorts(2)) as [number, number];
  const plane = startCertplane(['serve'], planeEnv('up', port, `127.0.0.1:${metricsPort}`));
  try {
    const listening = JSON.parse(await plane.waitForLine((line) => line.includes('metrics listening'), START_MS));
    assert.equal(listening.url, `http://127.0.0.1:${metricsPort}`);
    await plane.waitForLine((line) => line.includes('management plane listening'), START_MS);

    const metrics = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
    assert.equal(metrics.status, 200);
    assert.match(metrics.headers.get('content-type') ?? '', /^text\/plain/);
    const text = await metrics.text();
    assert.match(text, /^certplane_agents_connected 0$/m, 'the process metrics');
    assert.match(text, /^# TYPE certplane_instance_ready gauge$/m, 'the fleet metrics');
    assert.match(text, /^certplane_trust_reload_broken_instances 0$/m);

    const other = await fetch(`http://127.0.0.1:${metricsPort}/v1/instances`);
    assert.equal(other.status, 404);
    assert.equal(((await other.json()) as { code: string }).code, ErrorCode.NOT_FOUND);
    assert.equal((await fetch(`http://127.0.0.1:${metricsPort}/metrics`, { method: 'POST' })).status, 404);

    const main = await httpsGet(`https://localhost:${port}/metrics`);
    assert.equal(main.status, 401, main.body);
    assert.equal(JSON.parse(main.body).code, ErrorCode.AUTH_CLIENT_CERTIFICATE_REQUIRED);
    const plainMain = await fetch(`http://127.0.0.1:${port}/metrics`).then(
      (response) => response.status,
      () => 'refused',
    );
    assert.notEqual(plainMain, 200, 'the main listener speaks no plain HTTP');
  } finally {
    await plane.stop();
  }
});

/** Runs `certplane serve` with `env` until it exits: its code and output. */
async function failedStart(env: Record<string, string>): Promise<{ code: number | null; output: string }> {
  const plane = startCertplane(['serve'], env);
  const [code] = (await Promise.race([once(plane.child, 'exit'), plane.waitForLine((line) => line.includes('management plane listening'), START_MS).then(() => [null])])) as [number | null];
  await plane.stop('SIGKILL');
  return { code, output: plane.lines.join('\n') };
}

test('a malformed CERTPLANE_METRICS_LISTEN, or the main address again: CONFIG_INVALID naming it, exit 2', async () => {
  const port = await freePort();
  for (const value of ['metrics.internal', `127.0.0.1:${port}`]) {
    const result = await failedStart(planeEnv('bad', port, value));
    assert.equal(result.code, 2, result.output);
    assert.match(result.output, new RegExp(`^certplane: ${ErrorCode.CONFIG_INVALID}: [^]*CERTPLANE_METRICS_LISTEN`, 'm'));
  }
});

test('a metrics port another process holds: METRICS_LISTEN_FAILED (EADDRINUSE), exit 1, the main port free again', async () => {
  const holder = createServer();
  await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
  const taken = (holder.address() as { port: number }).port;
  const port = await freePort();
  try {
    const result = await failedStart(planeEnv('taken', port, `127.0.0.1:${taken}`));
    assert.equal(result.code, 1, result.output);
    assert.match(result.output, new RegExp(`^certplane: ${ErrorCode.METRICS_LISTEN_FAILED}: .*EADDRINUSE.*CERTPLANE_METRICS_LISTEN`, 'm'));
    const probe = createServer();
    await new Promise<void>((resolve, reject) => probe.once('error', reject).listen(port, '127.0.0.1', resolve));
    probe.close();
  } finally {
    holder.close();
  }
});
