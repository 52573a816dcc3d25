/**
 * The direct reading of common requests (csr-common.ts) against @peculiar/x509's: every
 * request an agent or openssl makes in the common shape reads the same on both paths, the
 * others are left to @peculiar/x509, and thousands of damaged requests are accepted or
 * refused the same way, with the same code, on both.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { describe, test } from 'node:test';
import * as x509 from '@peculiar/x509';
import { readCommonCsr } from '../../src/chain/csr-common.js';
import { decodeCsr } from '../../src/chain/csr.js';
import { parsePemBlocks } from '../../src/chain/index.js';
import { CertplaneError } from '../../src/errors.js';
import { createCsr, generateKeyPair } from '../../src/pki/factory.js';
import { opensslCsr } from '../support/openssl.js';

const derOf = (pem: string) => parsePemBlocks(pem)[0]!.der;
const pemOf = (der: Buffer) => x509.PemConverter.encode(der, 'CERTIFICATE REQUEST');

/** What decodeCsr answers on one path: the parsed request and its count of entries, or the refusal's code. */
async function outcome(pem: string, common: boolean): Promise<unknown> {
  try {
    const { parsed, entries } = await decodeCsr(pem, 'CSR', { common });
    return { ...parsed, der: parsed.der.toString('hex'), publicKeySpkiDer: parsed.publicKeySpkiDer.toString('hex'), entries };
  } catch (error) {
    if (error instanceof CertplaneError) return { refused: error.code };
    return { threw: (error as Error).name };
  }
}

describe('common requests read directly, the same as @peculiar/x509 reads them', async () => {
  const p256 = await generateKeyPair();
  const rsa = await generateKeyPair('rsa-2048');
  const made: [string, string][] = [
    ['an agent\'s P-256 request for one name', await createCsr(p256, ['db1.example.com'])],
    ['names in mixed case, repeated', await createCsr(p256, ['DB1.Example.com', 'db1.example.com', 'db2.example.com'])],
    ['IPv4 and IPv6 addresses beside a name', await createCsr(p256, ['db1.example.com', '192.0.2.7', '2001:db8:0:0:0:0:0:1'])],
    ['addresses only, no CN', await createCsr(p256, ['192.0.2.7', '2001:DB8::a'])],
    ['no names at all (CN certplane, an empty subjectAltName)', await createCsr(p256, [])],
    ['a wildcard', await createCsr(p256, ['*.db.example.com'])],
    ['an agent\'s RSA 2048 request', await createCsr(rsa, ['db1.example.com', 'db2.example.com'])],
  ];
  for (const [keyKind, digest] of [['ecdsa-p256', 'sha256'], ['ecdsa-p384', 'sha384'], ['ecdsa-p521', 'sha512'], ['rsa-2048', 'sha512'], ['ed25519', undefined]] as const) {
    made.push([`openssl, ${keyKind}${digest ? ` with ${digest}` : ''}`, await opensslCsr(keyKind, digest, ['db1.example.com', 'db2.example.com'])]);
  }

  test('each is in the common shape and reads the same on both paths, PEM text included', async () => {
    for (const [what, pem] of made) {
      assert.ok(readCommonCsr(derOf(pem)), `${what}: in the common shape`);
      const direct = await outcome(pem, true);
      assert.ok(!('refused' in (direct as object)), `${what}: accepted (${JSON.stringify(direct)})`);
      assert.deepEqual(direct, await outcome(pem, false), what);
    }
  });

  test('requests outside the shape are left to @peculiar/x509: other curves, explicit parameters, SHA-1, an extra extension or attribute', async () => {
    const others: [string, string][] = [
      ['secp256k1', await opensslCsr('ecdsa-secp256k1', 'sha256', ['db1.example.com'])],
      ['P-256 as explicit parameters', await opensslCsr('ecdsa-p256-explicit', 'sha256', ['db1.example.com'])],
      ['signed with SHA-1', await opensslCsr('ecdsa-p256', 'sha1', ['db1.example.com'])],
      [
        'a keyUsage extension beside the subjectAltName',
        (
          await x509.Pkcs10CertificateRequestGenerator.create({
            name: 'CN=db1.example.com',
            keys: p256.keys,
            signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
            extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: 'db1.example.com' }]), new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature)],
          })
        ).toString('pem'),
      ],
      [
        'a challengePassword attribute',
        (
          await x509.Pkcs10CertificateRequestGenerator.create({
            name: 'CN=db1.example.com',
            keys: p256.keys,
            signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
            attributes: [new x509.ChallengePasswordAttribute('secret')],
          })
        ).toString('pem'),
      ],
    ];
    for (const [what, pem] of others) {
      assert.equal(readCommonCsr(derOf(pem)), undefined, what);
      assert.deepEqual(await outcome(pem, true), await outcome(pem, false), what);
    }
  });

  test('a public key not in its one DER encoding is refused on both paths, and an RSA key\'s size is its exact count of bits (found by an attacker)', async () => {
    const subject = tlv(0x30, tlv(0x31, tlv(0x30, Buffer.concat([Buffer.from('0603550403', 'hex'), tlv(0x0c, Buffer.from('db1.example.com'))]))));
    const attributes = tlv(0xa0, tlv(0x30, Buffer.concat([Buffer.from('06092a864886f70d01090e', 'hex'), tlv(0x31, tlv(0x30, tlv(0x30, Buffer.concat([Buffer.from('0603551d11', 'hex'), tlv(0x04, tlv(0x30, tlv(0x82, Buffer.from('db1.example.com'))))]))))])));
    /** A request over `spki`, signed by `privateKey` with `algorithm` (whole DER). */
    const requestOver = (spki: Buffer, privateKey: KeyObject, algorithm: string) => {
      const info = tlv(0x30, Buffer.concat([Buffer.from('020100', 'hex'), subject, spki, attributes]));
      return pemOf(tlv(0x30, Buffer.concat([info, Buffer.from(algorithm, 'hex'), tlv(0x03, Buffer.concat([Buffer.from([0]), sign('sha256', info, privateKey)]))])));
    };
    /** The SPKI's algorithm and key bytes, apart. */
    const spkiParts = (publicKey: KeyObject) => {
      const spki = publicKey.export({ format: 'der', type: 'spki' });
      const body = spki.subarray(spki[1]! < 0x80 ? 2 : 2 + (spki[1]! & 0x7f));
      const algorithm = body.subarray(0, 2 + body[1]!);
      const bits = body.subarray(algorithm.length);
      return { spki, algorithm, key: bits.subarray(bits[1]! < 0x80 ? 3 : 3 + (bits[1]! & 0x7f)) };
    };
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const ecParts = spkiParts(ec.publicKey);
    const ecdsa = '300a06082a8648ce3d040302';
    const control = requestOver(ecParts.spki, ec.privateKey, ecdsa);
    assert.deepEqual(await outcome(control, true), await outcome(control, false), 'the key as OpenSSL writes it');
    assert.ok(!('refused' in ((await outcome(control, true)) as object)));
    const oneUnusedBit = tlv(0x30, Buffer.concat([ecParts.algorithm, tlv(0x03, Buffer.concat([Buffer.from([1]), ecParts.key]))]));
    const point = ecParts.key;
    const hybrid = Buffer.from(point);
    hybrid[0] = 0x06 | (point[point.length - 1]! & 1);
    const hybridSpki = tlv(0x30, Buffer.concat([ecParts.algorithm, tlv(0x03, Buffer.concat([Buffer.from([0]), hybrid]))]));
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const rsaParts = spkiParts(rsa.publicKey);
    const junk = tlv(0x30, Buffer.concat([rsaParts.algorithm, tlv(0x03, Buffer.concat([Buffer.from([0]), rsaParts.key, Buffer.from([0x00])]))]));
    const rsaSigned = '300d06092a864886f70d01010b0500';
    for (const [what, pem] of [
      ['a count of unused bits on the key', requestOver(oneUnusedBit, ec.privateKey, ecdsa)],
      ['an EC point in hybrid form', requestOver(hybridSpki, ec.privateKey, ecdsa)],
      ['an RSA key followed by a stray byte', requestOver(junk, rsa.privateKey, rsaSigned)],
    ] as const) {
      assert.deepEqual(await outcome(pem, true), { refused: 'CSR_INVALID' }, what);
      assert.deepEqual(await outcome(pem, false), { refused: 'CSR_INVALID' }, what);
    }
    const odd = generateKeyPairSync('rsa', { modulusLength: 2047 });
    const oddPem = requestOver(odd.publicKey.export({ format: 'der', type: 'spki' }), odd.privateKey, rsaSigned);
    for (const common of [true, false]) assert.equal(((await outcome(oddPem, common)) as { keyDescription: string }).keyDescription, 'RSA 2047', `common: ${common}`);
  });

  test('damaged requests are accepted or refused alike on both paths, with the same code (3,000 changes to common requests)', async () => {
    // A fixed seed: a failure names a change that can be run again.
    let seed = 0x2f6b_4a1d;
    const random = (below: number) => {
      seed = (Math.imul(seed, 1_103_515_245) + 12_345) >>> 0;
      return seed % below;
    };
    let readDirectly = 0;
    for (let n = 0; n < 3000; n += 1) {
      const [what, pem] = made[n % made.length]!;
      const der = Buffer.from(derOf(pem));
      const at = random(der.length);
      const change = random(4);
      const damaged =
        change === 0
          ? (der.writeUInt8(der[at]! ^ (1 << random(8)), at), der) // one bit flipped
          : change === 1
            ? der.subarray(0, at) // cut short
            : change === 2
              ? Buffer.concat([der.subarray(0, at), Buffer.from([random(256)]), der.subarray(at)]) // a byte inserted
              : (der.writeUInt8(random(256), at), der); // a byte replaced
      const text = pemOf(damaged);
      if (damaged.length > 0 && readCommonCsr(damaged)) readDirectly += 1;
      const direct = await outcome(text, true);
      const slow = await outcome(text, false);
      assert.deepEqual(direct, slow, `change ${n} (kind ${change} at byte ${at}) to "${what}": ${text}`);
    }
    assert.ok(readDirectly > 0, 'some changes (in a signature or a name) still read as the common shape, and were compared');
  });

  test('requests damaged and then signed again by their own key (so the signature holds) read alike on both paths (3,000 of them)', async () => {
    let seed = 0x51ed_270b;
    const random = (below: number) => {
      seed = (Math.imul(seed, 1_103_515_245) + 12_345) >>> 0;
      return seed % below;
    };
    const signers = [
      { key: p256, pem: made[2]![1], algorithm: Buffer.from('300a06082a8648ce3d040302', 'hex') },
      { key: rsa, pem: made[6]![1], algorithm: Buffer.from('300d06092a864886f70d01010b0500', 'hex') },
    ];
    let accepted = 0;
    let readDirectly = 0;
    for (let n = 0; n < 3000; n += 1) {
      const { key, pem, algorithm } = signers[n % signers.length]!;
      const info = Buffer.from(infoOf(derOf(pem)));
      const at = random(info.length);
      const change = random(3);
      const damaged =
        change === 0
          ? (info.writeUInt8(info[at]! ^ (1 << random(8)), at), info)
          : change === 1
            ? Buffer.concat([info.subarray(0, at), Buffer.from([random(256)]), info.subarray(at)])
            : (info.writeUInt8(random(256), at), info);
      const signature = sign('sha256', damaged, key.privateKeyPem);
      const request = tlv(0x30, Buffer.concat([damaged, algorithm, tlv(0x03, Buffer.concat([Buffer.from([0]), signature]))]));
      if (readCommonCsr(request)) readDirectly += 1;
      const text = pemOf(request);
      const direct = await outcome(text, true);
      const slow = await outcome(text, false);
      if (!('refused' in (direct as object)) && !('threw' in (direct as object))) accepted += 1;
      assert.deepEqual(direct, slow, `change ${n} (kind ${change} at byte ${at} of the info): ${text}`);
    }
    assert.ok(readDirectly > 100 && accepted > 100, `enough damaged requests were read directly (${readDirectly}) and accepted (${accepted}) to compare`);
  });
});

/** The CertificationRequestInfo element of a request's DER (lengths in short or long form). */
function infoOf(der: Buffer): Buffer {
  const header = (at: number) => (der[at + 1]! < 0x80 ? 2 : 2 + (der[at + 1]! & 0x7f));
  const length = (at: number) => (der[at + 1]! < 0x80 ? der[at + 1]! : der.readUIntBE(at + 2, der[at + 1]! & 0x7f));
  const start = header(0);
  return der.subarray(start, start + header(start) + length(start));
}

/** A DER element of `tag` around `content`. */
function tlv(tag: number, content: Buffer): Buffer {
  const length = content.length < 0x80 ? Buffer.from([content.length]) : content.length < 0x100 ? Buffer.from([0x81, content.length]) : Buffer.from([0x82, content.length >> 8, content.length & 0xff]);
  return Buffer.concat([Buffer.from([tag]), length, content]);
}

