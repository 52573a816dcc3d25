/**
 * What parseCsr refuses before an order is ever placed: requests too large to decode
 * cheaply, more names than a certificate may carry, and signatures over broken hashes
 * (made for real by openssl, which still signs with SHA-1 and MD5 when asked).
 */
import assert from 'node:assert/strict';
import { webcrypto } from 'node:crypto';
import { describe, test } from 'node:test';
import * as x509 from '@peculiar/x509';
import { CertplaneError } from '../../src/errors.js';
import { DEFAULT_MAX_NAMES_PER_CERTIFICATE, MAX_COMMON_NAME_BYTES, MAX_CSR_PEM_BYTES, parseCsr, parsePemBlocks } from '../../src/chain/index.js';
import { decodeCsr } from '../../src/chain/csr.js';
import { createCsr, generateKeyPair } from '../../src/pki/factory.js';
import { opensslCsr } from '../support/openssl.js';
import { ErrorCode } from '../../src/error-catalogue.js';

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
    await assert.rejects(parseCsr(pem), refusedWith(ErrorCode.CSR_TOO_LARGE));
  });

  test('duplicates count against the limit: 150 copies of one name are refused, a few are asked for once', async () => {
    await assert.rejects(parseCsr(await createCsr(key, Array(150).fill('db1.example.com'))), refusedWith(ErrorCode.CSR_TOO_MANY_NAMES));
    const csr = await parseCsr(await createCsr(key, ['db1.example.com', 'DB1.example.com', 'db2.example.com', 'db1.example.com']));
    assert.deepEqual(csr.dnsNames, ['db1.example.com', 'db2.example.com']);
  });

  test('101 distinct names are refused, 100 accepted; a lower limit (a CA profile allowing 25) is honoured', async () => {
    const names = (n: number) => Array.from({ length: n }, (_, i) => `db${i}.example.com`);
    assert.equal(DEFAULT_MAX_NAMES_PER_CERTIFICATE, 100);
    await assert.rejects(parseCsr(await createCsr(key, names(101))), (error: unknown) => {
      refusedWith(ErrorCode.CSR_TOO_MANY_NAMES)(error);
      assert.deepEqual((error as CertplaneError).details, { source: 'CSR', names: 101, distinct: 101, limit: 100 });
      return true;
    });
    assert.equal((await parseCsr(await createCsr(key, names(100)))).dnsNames.length, 100);
    await assert.rejects(parseCsr(await createCsr(key, names(26)), 'CSR', { maxNames: 25 }), refusedWith(ErrorCode.CSR_TOO_MANY_NAMES));
    assert.equal((await parseCsr(await createCsr(key, names(25)), 'CSR', { maxNames: 25 })).dnsNames.length, 25);
  });

  test('a request checked again (the coordinator, then the issuer) is decoded once, and every caller\'s own size and name limits still apply to it', async () => {
    const pem = await createCsr(key, ['db1.example.com', 'db2.example.com', 'db3.example.com']);
    const first = await parseCsr(pem);
    assert.equal(await parseCsr(pem, 'CSR'), first, 'the second check reuses the first decoding');
    await assert.rejects(parseCsr(pem, 'CSR', { maxNames: 2 }), (error: unknown) => {
      refusedWith(ErrorCode.CSR_TOO_MANY_NAMES)(error);
      assert.deepEqual((error as CertplaneError).details, { source: 'CSR', names: 3, distinct: 3, limit: 2 });
      return true;
    });
    await assert.rejects(parseCsr(pem, 'CSR', { maxPemBytes: 100 }), refusedWith(ErrorCode.CSR_TOO_LARGE));
    // A request whose signature does not verify is never kept: checked again, it fails again.
    const der = Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
    der[der.length - 1]! ^= 0x01; // the last octet of the signature's s: still DER, no longer a signature
    const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64').replace(/.{64}/g, '$&\n')}\n-----END CERTIFICATE REQUEST-----\n`;
    for (let i = 0; i < 2; i += 1) await assert.rejects(parseCsr(tampered), refusedWith(ErrorCode.CSR_BAD_SIGNATURE));
  });

  test('CSRs signed with SHA-1 or MD5 (made by openssl) are refused with CSR_WEAK_SIGNATURE; SHA-256, SHA-384 and Ed25519 pass', async () => {
    const names = ['db1.example.com'];
    const weak = [
      ['ecdsa-p256', 'sha1', 'ECDSA with SHA-1'],
      ['rsa-2048', 'sha1', 'RSASSA-PKCS1-v1_5 with SHA-1'],
      ['rsa-2048', 'md5', '1.2.840.113549.1.1.4'],
    ] as const;
    for (const [keyKind, digest, shown] of weak) {
      await assert.rejects(parseCsr(await opensslCsr(keyKind, digest, names)), (error: unknown) => {
        refusedWith(ErrorCode.CSR_WEAK_SIGNATURE)(error);
        assert.equal((error as CertplaneError).details.signatureAlgorithm, shown);
        return true;
      });
    }
    for (const [keyKind, digest] of [['ecdsa-p256', 'sha256'], ['rsa-2048', 'sha384'], ['ed25519', undefined]] as const) {
      assert.deepEqual((await parseCsr(await opensslCsr(keyKind, digest, names))).dnsNames, names);
    }
  });

  test('a subject CN longer than 64 bytes, which Boulder refuses only at finalization, is refused before any order when the caller asks (issuance does); 64 bytes pass', async () => {
    const requestWithCn = async (cn: string, san: string) =>
      (
        await x509.Pkcs10CertificateRequestGenerator.create({
          name: `CN=${cn}`,
          keys: key.keys,
          signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as webcrypto.EcdsaParams,
          extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: san }])],
        })
      ).toString('pem');
    const long = `${'a'.repeat(53)}.example.com`;
    const fits = `${'a'.repeat(52)}.example.com`;
    const tooLong = await requestWithCn(long, long);
    // Both decoding paths measure it the same way.
    for (const common of [true, false]) {
      assert.equal((await decodeCsr(tooLong, 'CSR', { common })).commonNameBytes, 65);
      assert.equal((await decodeCsr(await requestWithCn(fits, fits), 'CSR', { common })).commonNameBytes, 64);
    }
    const issuing = { maxCommonNameBytes: MAX_COMMON_NAME_BYTES };
    await assert.rejects(parseCsr(tooLong, 'CSR', issuing), (error: unknown) => {
      refusedWith(ErrorCode.CSR_INVALID)(error);
      assert.deepEqual((error as CertplaneError).details, { source: 'CSR', commonNameBytes: 65, limit: 64 });
      return true;
    });
    assert.deepEqual((await parseCsr(await requestWithCn(fits, fits), 'CSR', issuing)).dnsNames, [fits]);
    // Bytes, not characters: 33 two-byte letters are 66 bytes (a UTF8String, read on the generic path).
    const accented = await requestWithCn('é'.repeat(33), 'db1.example.com');
    assert.equal((await decodeCsr(accented, 'CSR')).commonNameBytes, 66);
    await assert.rejects(parseCsr(accented, 'CSR', issuing), refusedWith(ErrorCode.CSR_INVALID));
    // A caller that only needs the key (`certplane chain verify --key`) is not bound by a CA's rule.
    assert.deepEqual((await parseCsr(tooLong)).dnsNames, [long]);
    // The same long name in the SAN alone is fine.
    assert.deepEqual((await parseCsr(await createCsr(key, [long]), 'CSR', issuing)).dnsNames, [long]);
  });

  test('a subject with two CNs (a CA reads one, Boulder the last, where the plane reads the first) is refused before any order when the caller asks', async () => {
    const twoCns = (
      await x509.Pkcs10CertificateRequestGenerator.create({
        name: 'CN=db1.example.com, CN=db2.example.com',
        keys: key.keys,
        signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as webcrypto.EcdsaParams,
        extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: 'db1.example.com' }])],
      })
    ).toString('pem');
    for (const common of [true, false]) assert.equal((await decodeCsr(twoCns, 'CSR', { common })).commonNames, 2);
    await assert.rejects(parseCsr(twoCns, 'CSR', { singleCommonName: true }), (error: unknown) => {
      refusedWith(ErrorCode.CSR_INVALID)(error);
      assert.deepEqual((error as CertplaneError).details, { source: 'CSR', commonNames: 2 });
      return true;
    });
    assert.equal((await decodeCsr(await createCsr(key, ['db1.example.com']), 'CSR')).commonNames, 1);
    assert.equal((await decodeCsr(await createCsr(key, ['192.0.2.7']), 'CSR')).commonNames, 0);
    assert.ok(await parseCsr(twoCns), 'a caller that only needs the key reads it');
  });

  test('IP addresses in the subjectAltName are read as addresses, canonical, and count toward the names a certificate may carry', async () => {
    const parsed = await parseCsr(await createCsr(key, ['db1.example.com', '10.0.0.5', '2001:DB8:0:0::1']));
    assert.deepEqual([parsed.dnsNames, parsed.ipAddresses], [['db1.example.com'], ['10.0.0.5', '2001:db8::1']]);
    const addressOnly = await parseCsr(await createCsr(key, ['10.0.0.5']));
    assert.deepEqual([addressOnly.dnsNames, addressOnly.ipAddresses], [[], ['10.0.0.5']]);
    await assert.rejects(parseCsr(await createCsr(key, ['db1.example.com', '10.0.0.5', '10.0.0.6']), 'CSR', { maxNames: 2 }), refusedWith(ErrorCode.CSR_TOO_MANY_NAMES));
  });

  test('a validly signed request on a curve other than P-256, P-384 or P-521, or on explicit curve parameters, is refused; an unusual RSA key is checked by WebCrypto', async () => {
    const names = ['db1.example.com'];
    for (const keyKind of ['ecdsa-secp256k1', 'ecdsa-p256-explicit'] as const) {
      const pem = await opensslCsr(keyKind, 'sha256', names);
      const checked = await countingWebCryptoChecks(() => assert.rejects(parseCsr(pem), refusedWith(ErrorCode.CSR_BAD_SIGNATURE), keyKind));
      assert.equal(checked.calls, 1, `${keyKind} goes to WebCrypto, which refuses it`);
    }
    const exponentThree = await opensslCsr('rsa-2048-e3', 'sha256', names);
    const webCryptoChecks = await countingWebCryptoChecks(() => parseCsr(exponentThree));
    assert.equal(webCryptoChecks.result.keyDescription, 'RSA 2048');
    assert.equal(webCryptoChecks.calls, 1, 'an exponent of 3 is checked by WebCrypto, off the event loop');
    await assert.rejects(parseCsr(flipLastSignatureByte(exponentThree)), refusedWith(ErrorCode.CSR_BAD_SIGNATURE), 'a bad signature on the WebCrypto path');
  });

  test('a request whose signature was altered is refused on every path checked directly (ECDSA on P-256, P-384 and P-521, RSA, Ed25519)', async () => {
    for (const [keyKind, digest] of [['ecdsa-p256', 'sha256'], ['ecdsa-p384', 'sha384'], ['ecdsa-p521', 'sha512'], ['rsa-2048', 'sha256'], ['ed25519', undefined]] as const) {
      const pem = await opensslCsr(keyKind, digest, ['db1.example.com']);
      assert.equal((await countingWebCryptoChecks(() => parseCsr(pem))).calls, 0, `${keyKind} is checked by node:crypto directly`);
      await assert.rejects(parseCsr(flipLastSignatureByte(pem)), refusedWith(ErrorCode.CSR_BAD_SIGNATURE), keyKind);
    }
  });

  test('a request is refused when its signature is good but its algorithm names another kind of key (an RSA signature labelled ECDSA)', async () => {
    const pem = await createCsr(await generateKeyPair('rsa-2048'), ['db1.example.com']);
    assert.equal((await parseCsr(pem)).keyDescription, 'RSA 2048', 'the request as made is accepted');
    const der = Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
    // CertificationRequest: SEQUENCE { info SEQUENCE, algorithm SEQUENCE, signature BIT STRING }, each short enough for these length forms.
    const outerHeader = 2 + (der[1]! & 0x7f);
    const element = (at: number) => at + 2 + (der[at + 1]! < 0x80 ? der[at + 1]! : (der[at + 1]! & 0x7f) + der.readUIntBE(at + 2, der[at + 1]! & 0x7f));
    const infoEnd = element(outerHeader);
    const algorithmEnd = element(infoEnd);
    assert.equal(der.subarray(infoEnd, algorithmEnd).toString('hex'), '300d06092a864886f70d01010b0500', 'sha256WithRSAEncryption as made');
    const ecdsaWithSha256 = Buffer.from('300a06082a8648ce3d040302', 'hex');
    const content = Buffer.concat([der.subarray(outerHeader, infoEnd), ecdsaWithSha256, der.subarray(algorithmEnd)]);
    const relabelled = Buffer.concat([Buffer.from([0x30, 0x82, content.length >> 8, content.length & 0xff]), content]);
    const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${relabelled.toString('base64').replace(/.{64}/g, '$&\n')}\n-----END CERTIFICATE REQUEST-----\n`;
    await assert.rejects(parseCsr(tampered), refusedWith(ErrorCode.CSR_BAD_SIGNATURE));
  });
});

/** The request with the last byte of its DER, the end of its signature, inverted. */
function flipLastSignatureByte(pem: string): string {
  const der = Buffer.from(parsePemBlocks(pem)[0]!.der);
  der[der.length - 1] = der[der.length - 1]! ^ 0xff;
  return x509.PemConverter.encode(der, 'CERTIFICATE REQUEST');
}

/** What `work` returned, and how many times @peculiar/x509's verify() (the WebCrypto path) ran meanwhile. */
async function countingWebCryptoChecks<T>(work: () => Promise<T>): Promise<{ result: T; calls: number }> {
  const prototype = x509.Pkcs10CertificateRequest.prototype;
  const original = prototype.verify;
  let calls = 0;
  prototype.verify = function (this: x509.Pkcs10CertificateRequest, ...args: Parameters<typeof original>) {
    calls += 1;
    return original.apply(this, args);
  };
  try {
    return { result: await work(), calls };
  } finally {
    prototype.verify = original;
  }
}
