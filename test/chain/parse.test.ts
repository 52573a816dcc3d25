/**
 * The parser reads only the elements the engine needs (OpenSSL decodes the certificate,
 * node-forge's ASN.1 reader the validity and four extensions), so its facts are checked here against
 * @peculiar/x509's reading of the same DER, certificate by certificate, for every shape
 * the engine meets: roots, intermediates with and without path length and EKU, leaves
 * with DNS and IP names, GeneralizedTime validity. And a fleet's evaluation scope parses a
 * repeated block once and refuses what parseCertificateBundle refuses, with the same code.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import * as x509 from '@peculiar/x509';
import { clearCertificateCache, createCertificateScope, parseCertificateBundle, type Certificate } from '../../src/chain/index.js';
import { CertplaneError } from '../../src/errors.js';
import { ErrorCode } from '../../src/error-catalogue.js';
import { EKU, generateKeyPair, issueCertificate, type IssuedCertificate } from '../../src/pki/factory.js';
import { crossSign, generationY, intermediate, leaf, letsEncrypt2021, root } from '../support/hierarchies.js';

const codeOf = (fn: () => unknown): string | undefined => {
  try {
    fn();
  } catch (error) {
    return error instanceof CertplaneError ? error.code : `not a CertplaneError: ${String(error)}`;
  }
  return undefined;
};

/** The engine's facts as @peculiar/x509 reads them from the DER. */
function oracle(der: Buffer) {
  const cert = new x509.X509Certificate(der);
  const basic = cert.getExtension(x509.BasicConstraintsExtension);
  const usage = cert.getExtension(x509.KeyUsagesExtension);
  const eku = cert.getExtension(x509.ExtendedKeyUsageExtension);
  const names = cert.getExtension(x509.SubjectAlternativeNameExtension)?.names.items ?? [];
  return {
    serialNumber: cert.serialNumber.toLowerCase(),
    notBefore: cert.notBefore.getTime(),
    notAfter: cert.notAfter.getTime(),
    spkiSha256: createHash('sha256').update(Buffer.from(cert.publicKey.rawData)).digest('hex'),
    isCA: basic ? basic.ca : undefined,
    pathLength: basic?.pathLength,
    keyUsage: usage ? usage.usages : undefined,
    extendedKeyUsage: eku ? Array.from(eku.usages, String) : undefined,
    dnsNames: names.filter((n) => n.type === 'dns').map((n) => n.value.toLowerCase()),
    ipAddresses: names.filter((n) => n.type === 'ip').map((n) => n.value),
  };
}

const facts = (c: Certificate) => ({
  serialNumber: c.serialNumber,
  notBefore: c.notBefore.getTime(),
  notAfter: c.notAfter.getTime(),
  spkiSha256: c.spkiSha256,
  isCA: c.isCA,
  pathLength: c.pathLength,
  keyUsage: c.keyUsage,
  extendedKeyUsage: c.extendedKeyUsage,
  dnsNames: c.dnsNames,
  ipAddresses: c.ipAddresses,
});

describe('parsed facts agree with @peculiar/x509', async () => {
  const le = await letsEncrypt2021();
  const y = await generationY({ crossSignEku: [EKU.clientAuth] });
  const farRoot = await root('Far Future Root', 'Test', { notAfter: new Date('2061-03-04T05:06:07Z') });
  const restricted = await intermediate('Restricted', farRoot, { pathLength: 3, extendedKeyUsage: [EKU.clientAuth] });
  const unrestricted = await crossSign(farRoot, le.isrgX1, { pathLength: 2 });
  const named = await leaf(restricted, ['Db1.Example.com', '*.db.example.com', 'b.example.org']);
  const addressed = await issueCertificate({ subject: 'CN=10.0.0.1', key: await generateKeyPair(), issuer: restricted.asIssuer, ca: false, ipAddresses: ['10.0.0.1', '2001:db8::1'], dnsNames: ['x.example.com'], extendedKeyUsage: [EKU.serverAuth] });
  const bare = await issueCertificate({ subject: 'CN=No Extensions To Speak Of', key: await generateKeyPair(), keyUsage: [] });
  const rsa = await issueCertificate({ subject: 'CN=RSA Root', key: await generateKeyPair('rsa-2048'), ca: true });
  const all: Record<string, IssuedCertificate> = { dst: le.dst, x1: le.isrgX1, x1ByDst: le.x1ByDst, r3: le.r3, yr1: y.yr1, yrByX1: y.yrByX1, farRoot, restricted, unrestricted, addressed, bare, rsa, leaf: le.leaf.cert, named: named.cert };

  for (const [name, issued] of Object.entries(all)) {
    test(`${name}`, () => {
      clearCertificateCache();
      const [parsed] = parseCertificateBundle(issued.pem);
      assert.deepEqual(facts(parsed!), oracle(parsed!.der));
    });
  }

  test('a serial whose first byte has the high bit set keeps its 0x00 (the INTEGER\'s content octets, as ARI needs); @peculiar/x509 prints the magnitude', async () => {
    for (const serialNumber of ['ff01', '80', '7f', '0100']) {
      const issued = await issueCertificate({ subject: 'CN=serial.example.test', key: await generateKeyPair(), issuer: restricted.asIssuer, serialNumber });
      clearCertificateCache();
      const [parsed] = parseCertificateBundle(issued.pem);
      const expected = parseInt(serialNumber.slice(0, 2), 16) >= 0x80 ? `00${serialNumber}` : serialNumber;
      assert.equal(parsed!.serialNumber, expected);
      assert.deepEqual(facts(parsed!), { ...oracle(parsed!.der), serialNumber: expected });
      assert.equal(oracle(parsed!.der).serialNumber, serialNumber);
    }
  });

  test('GeneralizedTime validity (after 2049) reads as the same instant', () => {
    const [parsed] = parseCertificateBundle(farRoot.pem);
    assert.equal(parsed!.notAfter.toISOString(), '2061-03-04T05:06:07.000Z');
  });

  test('a validity time that is not a real instant in RFC 5280\'s form is refused as unparsable (OpenSSL lets these through)', () => {
    const der = Buffer.from(le.r3.pem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
    const at = der.indexOf(Buffer.from([0x17, 0x0d])) + 2; // notBefore, a UTCTime: YYMMDDHHMMSSZ
    const edited = (offset: number, text: string) => {
      const copy = Buffer.from(der);
      copy.write(text, at + offset, 'latin1');
      return `-----BEGIN CERTIFICATE-----\n${copy.toString('base64')}\n-----END CERTIFICATE-----\n`;
    };
    for (const [offset, text] of [[4, 'x'], [2, '13'], [4, '32'], [6, '25'], [12, '+']] as const) {
      clearCertificateCache();
      assert.equal(codeOf(() => parseCertificateBundle(edited(offset, text))), ErrorCode.CHAIN_UNPARSABLE_CERTIFICATE, `${text} at ${offset}`);
    }
    clearCertificateCache();
    assert.equal(codeOf(() => parseCertificateBundle(edited(4, '01'))), undefined, 'a real day still parses (the signature is another matter)');
  });

  test('hostile encodings of the extensions the engine reads are refused, never read as a CA or an allowed usage (OpenSSL does not decode them)', async () => {
    const bc = '2.5.29.19';
    const eku = '2.5.29.37';
    const serverAuth = '300a06082b06010505070301';
    const cases: Record<string, { oid: string; valueHex: string }[]> = {
      'cA as an empty BOOLEAN': [{ oid: bc, valueHex: '30020100' }],
      'cA as a two-octet BOOLEAN': [{ oid: bc, valueHex: '300401020000' }],
      'a path length of five octets': [{ oid: bc, valueHex: '300a0101ff02050100000000' }],
      'an EKU OID cut short (its last octet continues)': [{ oid: eku, valueHex: '300b06092b0601050507030181' }],
      'an EKU element that is not an OID': [{ oid: eku, valueHex: '3003020101' }],
      'basic constraints twice': [{ oid: bc, valueHex: '3000' }, { oid: bc, valueHex: '30030101ff' }],
      'extended key usage twice': [{ oid: eku, valueHex: '300a06082b06010505070302' }, { oid: eku, valueHex: serverAuth }],
      'an extension value with trailing bytes': [{ oid: eku, valueHex: serverAuth + '00' }],
    };
    for (const [name, rawExtensions] of Object.entries(cases)) {
      const issued = await issueCertificate({ subject: `CN=${name}`, key: await generateKeyPair(), issuer: farRoot.asIssuer, keyUsage: ['keyCertSign', 'digitalSignature'], rawExtensions });
      clearCertificateCache();
      assert.equal(codeOf(() => parseCertificateBundle(issued.pem)), ErrorCode.CHAIN_UNPARSABLE_CERTIFICATE, name);
    }
    const sound = await issueCertificate({ subject: 'CN=Sound', key: await generateKeyPair(), issuer: farRoot.asIssuer, rawExtensions: [{ oid: bc, valueHex: '30030101ff' }, { oid: eku, valueHex: serverAuth }] });
    const [parsed] = parseCertificateBundle(sound.pem);
    assert.deepEqual([parsed!.isCA, parsed!.extendedKeyUsage], [true, ['1.3.6.1.5.5.7.3.1']], 'the same extensions, well encoded, read as written');
  });

  test('an extension the engine does not read cannot make a certificate unparsable, whatever its OID (a UUID arc beyond 2^53)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'certplane-oid-'));
    try {
      execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-days', '1', '-subj', '/CN=Private Arc', '-addext', '2.25.329800735698586629295641978511506172918=DER:0500', '-addext', 'extendedKeyUsage=serverAuth'], { stdio: 'ignore' });
      clearCertificateCache();
      const [parsed] = parseCertificateBundle(readFileSync(join(dir, 'cert.pem'), 'utf8'));
      assert.deepEqual([parsed!.subjectCN, parsed!.extendedKeyUsage], ['Private Arc', ['1.3.6.1.5.5.7.3.1']]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a CA\'s key is hashed as OpenSSL re-encodes it (the form distrust pins take); a leaf\'s as written', () => {
    clearCertificateCache();
    for (const issued of [farRoot, restricted, named.cert]) {
      const [parsed] = parseCertificateBundle(issued.pem);
      assert.equal(parsed!.spkiSha256, createHash('sha256').update(parsed!.publicKey.export({ type: 'spki', format: 'der' })).digest('hex'));
    }
  });

  test('the PEM and public key made on first use are those of the certificate', () => {
    clearCertificateCache();
    const [parsed] = parseCertificateBundle(le.r3.pem);
    assert.equal(parsed!.pem.replace(/\s/g, ''), le.r3.pem.replace(/\s/g, ''));
    assert.equal(parsed!.publicKey.export({ type: 'spki', format: 'der' }).toString('hex'), Buffer.from(new x509.X509Certificate(le.r3.pem).publicKey.rawData).toString('hex'));
    assert.equal(parsed!.pem, parsed!.pem, 'the same string each time');
  });
});

describe('an evaluation scope', async () => {
  const le = await letsEncrypt2021();

  test('parses a block repeated across bundles once: the same object for the same certificate, another for another', () => {
    const scope = createCertificateScope();
    const [leafA, r3A] = scope.bundle(le.short);
    const [leafB, r3B, crossB] = scope.bundle(le.long);
    assert.equal(leafA, leafB);
    assert.equal(r3A, r3B);
    assert.notEqual(crossB, r3B);
    assert.ok(Object.isFrozen(leafA));
    assert.notEqual(createCertificateScope().bundle(le.short)[0], leafA, 'another scope parses again');
    assert.deepEqual(facts(leafA!), facts(parseCertificateBundle(le.short)[0]!));
  });

  test('refuses what parseCertificateBundle refuses, with the same code, also after the block was seen', () => {
    const scope = createCertificateScope();
    scope.bundle(le.short);
    const broken = le.short.replace(/(-----BEGIN CERTIFICATE-----\n)(.{10})/, '$1!!!!!!!!!!');
    const key = `-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n`;
    const truncated = le.short.replace(/(-----BEGIN CERTIFICATE-----\n)([A-Za-z0-9+/]{40})/, '$1');
    for (const text of [broken, le.short + key, truncated, 'prose\n' + le.short, '']) {
      const expected = codeOf(() => parseCertificateBundle(text));
      assert.ok(expected, 'parseCertificateBundle refuses it');
      assert.equal(codeOf(() => scope.bundle(text)), expected);
    }
    assert.equal(codeOf(() => scope.bundle(le.short + key)), ErrorCode.CHAIN_PRIVATE_KEY_IN_BUNDLE);
  });
});
