/**
 * An ACME server that gives no HTTP answer at all (nothing listens on its port) fails an
 * issuance with ACME_UNREACHABLE naming the server, not acme-client's bare TypeError.
 * acme-client's own retries (5, 5 s apart and growing) are shortened for this process only.
 */
import assert from 'node:assert/strict';
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

test('no HTTP answer from the ACME server: ACME_UNREACHABLE with the directory URL', async () => {
  (acme.axios.defaults as unknown as { acmeSettings: { retryDefaultDelay: number } }).acmeSettings.retryDefaultDelay = 0.01;
  const dir = await scratch('certplane-unreachable-');
  try {
    // A port that was free a moment ago: nothing listens, the connection is refused.
    const directoryUrl = `https://127.0.0.1:${await freePort()}/dir`;
    const issuer = new AcmeIssuer({
      directoryUrl,
      secrets: await FileSecretStore.open(dir.path('secrets')),
      solvers: [],
      chainPolicy: { preferences: ['ISRG Root X1'], fallback: 'none', trustAnchors: [], distrustedSpkiSha256: new Set() },
      logger: pino({ level: 'silent' }),
      retry: { attempts: 1, baseDelayMs: 1, maxDelayMs: 1 },
    });
    await assert.rejects(issuer.issue(await createCsr(await generateKeyPair(), ['a.example.com'])), (error: unknown) => {
      assert.ok(error instanceof CertplaneError, String(error));
      assert.equal(error.code, ErrorCode.ACME_UNREACHABLE);
      assert.ok(error.message.includes(directoryUrl), error.message);
      return true;
    });
  } finally {
    await dir.remove();
  }
});
