/**
 * The agent's request written by hand (pki/request.ts) against @peculiar/x509's generator,
 * which made every agent's request before: the same key and names give the same
 * certificationRequestInfo, to the byte; the signature verifies; the plane reads it on its
 * direct path; and OpenSSL reads the same names from it.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createPrivateKey, createPublicKey, generateKeyPairSync, webcrypto } from 'node:crypto';
import { describe, test } from 'node:test';
import * as x509 from '@peculiar/x509';
import { decodeCsr } from '../../src/chain/csr.js';
import { parsePemBlocks } from '../../src/chain/index.js';
import { readCommonCsr } from '../../src/chain/csr-common.js';
import { createCsr, generateKeyPair, type KeyPair } from '../../src/pki/factory.js';
import { generateSigningKey, keyAlgorithmOf } from '../../src/pki/request.js';

/** The request as the generator made it (the code this module replaced), with the CN this module picks: the first DNS name of at most 64 bytes. */
async function generated(key: KeyPair, names: readonly string[]): Promise<x509.Pkcs10CertificateRequest> {
  const sans = names.map((value) => (/^[\d.]+$|:/.test(value) ? { type: 'ip' as const, value } : { type: 'dns' as const, value }));
  const cn = sans.find((san) => san.type === 'dns' && san.value.length <= 64)?.value ?? (names.length === 0 ? 'certplane' : undefined);
  const rsa = key.keys.privateKey.algorithm.name !== 'ECDSA';
  return x509.Pkcs10CertificateRequestGenerator.create({
    ...(cn === undefined ? {} : { name: `CN=${cn}` }),
    keys: key.keys,
    signingAlgorithm: rsa ? { name: 'RSASSA-PKCS1-v1_5' } : ({ name: 'ECDSA', hash: 'SHA-256' } as webcrypto.EcdsaParams),
    extensions: [new x509.SubjectAlternativeNameExtension(sans)],
  });
}

/** The elements (whole, header included) inside a DER SEQUENCE. */
function children(der: Buffer): Buffer[] {
  const span = (at: number): { start: number; end: number } => {
    const first = der[at + 1]!;
    const lengthBytes = first & 0x80 ? first & 0x7f : 0;
    let length = lengthBytes ? 0 : first;
    for (let n = 0; n < lengthBytes; n += 1) length = length * 256 + der[at + 2 + n]!;
    return { start: at + 2 + lengthBytes, end: at + 2 + lengthBytes + length };
  };
  const outer = span(0);
  const found: Buffer[] = [];
  for (let at = outer.start; at < outer.end; ) {
    const { end } = span(at);
    found.push(der.subarray(at, end));
    at = end;
  }
  return found;
}

const NAME_SETS: readonly (readonly string[])[] = [
  ['db1.example.com'],
  ['DB1.Example.com', 'db1.example.com', 'db2.example.com'],
  ['*.example.com', 'example.com'],
  ['under_score.example.com'],
  ['db1.example.com', '192.0.2.7', '2001:db8::1', 'fe80::1:2:3:4'],
  ['192.0.2.7', '2001:DB8::a'],
  ['::', '::1', '1::', '1:2:3:4:5:6:7:8'],
  [],
  [`${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.example.com`],
  [`${'a'.repeat(53)}.example.com`, 'db1.example.com'],
  Array.from({ length: 100 }, (_, n) => `host-${n}.fleet.example.com`),
];

describe('an agent request written by hand', async () => {
  const keys = { p256: await generateKeyPair(), rsa: await generateKeyPair('rsa-2048') };

  for (const [kind, key] of Object.entries(keys)) {
    for (const names of NAME_SETS) {
      test(`${kind}, ${names.length} names (${names.slice(0, 2).join(', ') || 'none'}): the generator's bytes, a signature that verifies`, async () => {
        const pem = await createCsr(key, names);
        const ours = new x509.Pkcs10CertificateRequest(pem);
        const theirs = await generated(key, names);
        const [ourInfo, ourAlgorithm] = children(Buffer.from(ours.rawData));
        const [theirInfo, theirAlgorithm] = children(Buffer.from(theirs.rawData));
        assert.equal(ourInfo!.toString('hex'), theirInfo!.toString('hex'));
        assert.equal(ourAlgorithm!.toString('hex'), theirAlgorithm!.toString('hex'));
        // RSA PKCS#1 v1.5 signatures are deterministic: the whole request, PEM text included.
        if (kind === 'rsa') assert.equal(pem, theirs.toString('pem'));
        assert.equal(await ours.verify(), true);
        // The plane reads it directly, and gets what the generic path gets.
        const der = parsePemBlocks(pem)[0]!.der;
        assert.notEqual(readCommonCsr(der), undefined);
        const direct = await decodeCsr(pem, 'CSR', { common: true });
        const generic = await decodeCsr(pem, 'CSR', { common: false });
        assert.deepEqual({ ...direct.parsed, der: null, publicKeySpkiDer: null }, { ...generic.parsed, der: null, publicKeySpkiDer: null });
      });
    }
  }

  // The generator wrote "::ffff:192.0.2.9" as ::ffff:192 (0000…ffff0192); OpenSSL is the judge here.
  test('OpenSSL reads the subject and the names, IPv6 and IPv4-mapped IPv6 written out, and the signature verifies', async () => {
    const pem = await createCsr(keys.p256, ['db1.example.com', '2001:db8::1', '192.0.2.7', '::ffff:192.0.2.9']);
    const read = spawnSync('openssl', ['req', '-noout', '-text', '-verify'], { input: pem });
    assert.equal(read.status, 0, read.stderr.toString());
    const text = read.stdout.toString();
    assert.match(text, /Subject: CN\s?=\s?db1\.example\.com/);
    assert.match(text, /DNS:db1\.example\.com, IP Address:2001:DB8:0:0:0:0:0:1, IP Address:192\.0\.2\.7, IP Address:0:0:0:0:0:FFFF:C000:209\n/);
    assert.match(text, /Signature Algorithm: ecdsa-with-SHA256/);
    assert.match(read.stderr.toString(), /verify OK/);
  });

  // Boulder refuses a request whose CN is longer than 64 bytes, only at finalization.
  test('the CN is the first DNS name of at most 64 bytes, or absent when none is that short; the SAN keeps every name', async () => {
    const long = `${'a'.repeat(53)}.example.com`; // 65 bytes
    const fits = `${'a'.repeat(52)}.example.com`; // 64 bytes
    const subjectOf = async (names: readonly string[]) => {
      const pem = await createCsr(keys.p256, names);
      const parsed = await decodeCsr(pem, 'CSR');
      assert.deepEqual([...parsed.parsed.dnsNames].sort(), names.filter((n) => !/^[\d.]+$|:/.test(n)).sort());
      return new x509.Pkcs10CertificateRequest(pem).subjectName.getField('CN');
    };
    assert.deepEqual(await subjectOf([long, 'db1.example.com']), ['db1.example.com']);
    assert.deepEqual(await subjectOf([fits, 'db1.example.com']), [fits]);
    assert.deepEqual(await subjectOf([long]), []);
    assert.deepEqual(await subjectOf([long, '192.0.2.7']), []);
  });

  test('every form of an IPv6 address becomes its 16 bytes; a zone index is refused', async () => {
    const forms: [string, string][] = [
      ['::', '00000000000000000000000000000000'],
      ['::1', '00000000000000000000000000000001'],
      ['1::', '00010000000000000000000000000000'],
      ['2001:DB8::a', '20010db800000000000000000000000a'],
      ['1:2:3:4:5:6:7::', '00010002000300040005000600070000'],
      ['::2:3:4:5:6:7:8', '00000002000300040005000600070008'],
      ['1:2:3:4:5:6:7:8', '00010002000300040005000600070008'],
      ['::1.2.3.4', '00000000000000000000000001020304'],
      ['::ffff:192.0.2.9', '00000000000000000000ffffc0000209'],
      ['1:2:3:4:5:6:1.2.3.4', '00010002000300040005000601020304'],
      ['1:2:3:4:5::1.2.3.4', '00010002000300040005000001020304'],
    ];
    for (const [address, bytes] of forms) {
      const der = parsePemBlocks(await createCsr(keys.p256, [address]))[0]!.der;
      const at = der.indexOf(Buffer.from([0x87, 0x10]));
      assert.equal(der.subarray(at + 2, at + 18).toString('hex'), bytes, address);
    }
    for (const zoned of ['fe80::1%eth0', 'fe80::1%1.2.3.4']) await assert.rejects(createCsr(keys.p256, [zoned]), RangeError, zoned);
  });

  test('a fresh signing key, its PEM read back, and its request', async () => {
    for (const algorithm of ['ecdsa-p256', 'rsa-2048'] as const) {
      const fresh = await generateSigningKey(algorithm);
      assert.equal(keyAlgorithmOf(fresh.privateKey), algorithm);
      const again = createPrivateKey(fresh.privateKeyPem);
      assert.equal(keyAlgorithmOf(again), algorithm);
      assert.equal(createPublicKey(again).export({ type: 'spki', format: 'der' }).toString('hex'), fresh.spkiDer.toString('hex'));
      const request = new x509.Pkcs10CertificateRequest(await createCsr(fresh, ['a.example.com']));
      assert.equal(await request.verify(), true);
      assert.equal(Buffer.from(request.publicKey.rawData).toString('hex'), fresh.spkiDer.toString('hex'));
    }
  });

  test('a key of another kind is none of certplane\'s algorithms', () => {
    assert.equal(keyAlgorithmOf(generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey), undefined);
    assert.equal(keyAlgorithmOf(generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey), undefined);
  });
});
