/**
 * What parseCsr refuses before an order is ever placed: requests too large to decode
 * cheaply, more names than a certificate may carry, and signatures over broken hashes
 * (made for real by openssl, which still signs with SHA-1 and MD5 when asked).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { describe, test } from 'node:test';
import { CertplaneError } from '../../src/errors.js';
import { CsrErrorCode, DEFAULT_MAX_NAMES_PER_CERTIFICATE, MAX_CSR_PEM_BYTES, parseCsr } from '../../src/chain/index.js';
import { createCsr, generateKeyPair } from '../../src/pki/factory.js';
import { scratch } from '../support/cli.js';

const refusedWith = (code: string) => (error: unknown) => {
  assert.ok(error instanceof CertplaneError, String(error));
  assert.equal(error.code, code, error.message);
  return true;
};

describe('parseCsr limits: names, size and signature algorithm', async () => {
  const key = await generateKeyPair();

  test('a CSR of 3,000 copies of its own name (the plane-stalling attack) is refused by size, before any decoding', async () => {
    const pem = await createCsr(key, Array(3000).fill('db1.example.com'));
    assert.ok(Buffer.byteLength(pem) > MAX_CSR_PEM_BYTES);
    await assert.rejects(parseCsr(pem), refusedWith(CsrErrorCode.TOO_LARGE));
  });

  test('duplicates count against the limit: 150 copies of one name are refused, a few are asked for once', async () => {
    await assert.rejects(parseCsr(await createCsr(key, Array(150).fill('db1.example.com'))), refusedWith(CsrErrorCode.TOO_MANY_NAMES));
    const csr = await parseCsr(await createCsr(key, ['db1.example.com', 'DB1.example.com', 'db2.example.com', 'db1.example.com']));
    assert.deepEqual(csr.dnsNames, ['db1.example.com', 'db2.example.com']);
  });

  test('101 distinct names are refused, 100 accepted; a lower limit (a CA profile allowing 25) is honoured', async () => {
    const names = (n: number) => Array.from({ length: n }, (_, i) => `db${i}.example.com`);
    assert.equal(DEFAULT_MAX_NAMES_PER_CERTIFICATE, 100);
    await assert.rejects(parseCsr(await createCsr(key, names(101))), (error: unknown) => {
      refusedWith(CsrErrorCode.TOO_MANY_NAMES)(error);
      assert.deepEqual((error as CertplaneError).details, { source: 'CSR', names: 101, distinct: 101, limit: 100 });
      return true;
    });
    assert.equal((await parseCsr(await createCsr(key, names(100)))).dnsNames.length, 100);
    await assert.rejects(parseCsr(await createCsr(key, names(26)), 'CSR', { maxNames: 25 }), refusedWith(CsrErrorCode.TOO_MANY_NAMES));
    assert.equal((await parseCsr(await createCsr(key, names(25)), 'CSR', { maxNames: 25 })).dnsNames.length, 25);
  });

  test('CSRs signed with SHA-1 or MD5 are refused with CSR_WEAK_SIGNATURE; the same keys with SHA-256 and Ed25519 pass', async () => {
    const dir = await scratch('certplane-weak-csr-');
    try {
      const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir.path('.'), stdio: ['ignore', 'pipe', 'pipe'] }).toString();
      openssl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', 'ec.key');
      openssl('genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', 'rsa.key');
      openssl('genpkey', '-algorithm', 'ED25519', '-out', 'ed.key');
      const request = (keyFile: string, ...digest: string[]) =>
        openssl('req', '-new', '-key', keyFile, '-subj', '/CN=db1.example.com', '-addext', 'subjectAltName=DNS:db1.example.com', ...digest);
      for (const [keyFile, digest, shown] of [['ec.key', '-sha1', 'ECDSA with SHA-1'], ['rsa.key', '-sha1', 'RSASSA-PKCS1-v1_5 with SHA-1'], ['rsa.key', '-md5', '1.2.840.113549.1.1.4']] as const) {
        await assert.rejects(parseCsr(request(keyFile, digest)), (error: unknown) => {
          refusedWith(CsrErrorCode.WEAK_SIGNATURE)(error);
          assert.equal((error as CertplaneError).details.signatureAlgorithm, shown);
          return true;
        });
      }
      for (const [keyFile, ...digest] of [['ec.key', '-sha256'], ['rsa.key', '-sha384'], ['ed.key']]) {
        assert.deepEqual((await parseCsr(request(keyFile as string, ...digest))).dnsNames, ['db1.example.com']);
      }
    } finally {
      await dir.remove();
    }
  });
});
