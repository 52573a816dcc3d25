/**
 * An ACME server that gives no HTTP answer at all (nothing listens on its port, or it
 * accepts and never answers) fails an issuance with ACME_UNREACHABLE naming the server, the
 * request and what the connection said (refused, timed out), not acme-client's bare
 * TypeError: in an incident, "refused" and "timed out" send an operator different ways.
 */
import assert from 'node:assert/strict';
import { createServer, type Socket } from 'node:net';
import { test } from 'node:test';
import * as acme from 'acme-client';
import { pino } from 'pino';
import { AcmeIssuer } from '../../src/acme/issuer.js';
import { CertplaneError } from '../../src/errors.js';
import { createCsr, generateKeyPair } from '../../src/pki/factory.js';
import { FileSecretStore } from '../../src/secrets/index.js';
import { scratch } from '../support/cli.js';
import { freePort } from '../support/ports.js';
import { ErrorCode } from '../../src/error-catalogue.js';

/** An issuer for `directoryUrl` that tries each step `attempts` times, 1 ms apart. */
async function issuerAt(directoryUrl: string, secretsDir: string, attempts: number): Promise<AcmeIssuer> {
  return new AcmeIssuer({
    directoryUrl,
    secrets: await FileSecretStore.open(secretsDir),
    solvers: [],
    chainPolicy: { preferences: ['ISRG Root X1'], fallback: 'none', trustAnchors: [], distrustedSpkiSha256: new Set() },
    logger: pino({ level: 'silent' }),
    retry: { attempts, baseDelayMs: 1, maxDelayMs: 1 },
  });
}

test('no HTTP answer from the ACME server: ACME_UNREACHABLE with the directory URL', async () => {
  (acme.axios.defaults as unknown as { acmeSettings: { retryDefaultDelay: number } }).acmeSettings.retryDefaultDelay = 0.01;
  const dir = await scratch('certplane-unreachable-');
  try {
    // A port that was free a moment ago: nothing listens, the connection is refused.
    const directoryUrl = `https://127.0.0.1:${await freePort()}/dir`;
    const issuer = await issuerAt(directoryUrl, dir.path('secrets'), 1);
    await assert.rejects(issuer.issue(await createCsr(await generateKeyPair(), ['a.example.com'])), (error: unknown) => {
      assert.ok(error instanceof CertplaneError, String(error));
      assert.equal(error.code, ErrorCode.ACME_UNREACHABLE);
      assert.ok(error.message.includes(directoryUrl), error.message);
      assert.match(error.message, /no HTTP answer to GET https:\/\/127\.0\.0\.1:\d+\/dir: connect ECONNREFUSED/);
      assert.match(String(error.details.transport), /ECONNREFUSED/);
      return true;
    });
  } finally {
    await dir.remove();
  }
});

test('an ACME server that accepts and never answers: ACME_UNREACHABLE that says the request timed out', async () => {
  const dir = await scratch('certplane-silent-');
  const sockets = new Set<Socket>();
  const silent = createServer((socket) => sockets.add(socket));
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  const directoryUrl = `https://127.0.0.1:${(silent.address() as { port: number }).port}/dir`;
  const timeout = acme.axios.defaults.timeout;
  try {
    const issuer = await issuerAt(directoryUrl, dir.path('secrets'), 1);
    // The issuer sets 30 s for the process; a silent server needs no more than a moment here.
    acme.axios.defaults.timeout = 300;
    await assert.rejects(issuer.issue(await createCsr(await generateKeyPair(), ['a.example.com'])), (error: unknown) => {
      assert.ok(error instanceof CertplaneError, String(error));
      assert.equal(error.code, ErrorCode.ACME_UNREACHABLE);
      assert.match(error.message, /no HTTP answer to GET https:\/\/127\.0\.0\.1:\d+\/dir: ECONNABORTED \(timeout of 300ms exceeded\)/);
      return true;
    });
  } finally {
    acme.axios.defaults.timeout = timeout;
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => silent.close(resolve));
    await dir.remove();
  }
});

test('a connection the ACME server resets is a passing failure: opening the account is tried again, then ACME_UNREACHABLE', async () => {
  const dir = await scratch('certplane-reset-');
  let connections = 0;
  const resetting = createServer((socket) => {
    connections += 1;
    socket.resetAndDestroy();
  });
  await new Promise<void>((resolve) => resetting.listen(0, '127.0.0.1', resolve));
  const directoryUrl = `https://127.0.0.1:${(resetting.address() as { port: number }).port}/dir`;
  try {
    const issuer = await issuerAt(directoryUrl, dir.path('secrets'), 3);
    await assert.rejects(issuer.issue(await createCsr(await generateKeyPair(), ['a.example.com'])), (error: unknown) => {
      assert.ok(error instanceof CertplaneError, String(error));
      assert.equal(error.code, ErrorCode.ACME_UNREACHABLE);
      assert.match(error.message, /ECONNRESET/);
      return true;
    });
    assert.equal(connections, 3, 'three tries of the same step');
  } finally {
    await new Promise((resolve) => resetting.close(resolve));
    await dir.remove();
  }
});
