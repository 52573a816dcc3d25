/**
 * An agent's key and its PKCS#10 request, made with node:crypto alone: the key by OpenSSL,
 * the request's few DER structures written here and signed by OpenSSL. This is the work an
 * agent does for every certificate: @peculiar/x509's generator took 2.2 to 3.2 ms a request
 * and WebCrypto's key with its two exports 0.6 to 0.8 ms, where these take about 0.1 and
 * 0.36 ms (500 of each in a loop, 2026-12-04). The bytes are the generator's own
 * (test/pki/request.test.ts compares them), but for an IPv6 address written with a dotted
 * IPv4 tail, which the generator got wrong (::ffff:192.0.2.9 as ::ffff:192): the subject is
 * CN=<first DNS name of at most 64 bytes>, a PrintableString when every character allows it
 * and a UTF8String otherwise; the names are one subjectAltName in one extensionRequest.
 */
import { generateKeyPair as generateNodeKeyPair, sign, type KeyObject } from 'node:crypto';
import { isIP } from 'node:net';
import { promisify } from 'node:util';
import { MAX_COMMON_NAME_BYTES, type KeyAlgorithm } from '../chain/csr.js';

/** A private key held as OpenSSL holds it, with what a request needs of it. */
export interface SigningKey {
  readonly algorithm: KeyAlgorithm;
  readonly privateKey: KeyObject;
  /** PKCS#8 PEM: what is written to disk. */
  readonly privateKeyPem: string;
  /** The public half's SubjectPublicKeyInfo, DER. */
  readonly spkiDer: Buffer;
}

const generate = promisify(generateNodeKeyPair);

/** Each algorithm's key: an EC curve or an RSA modulus length (exhaustive: a new algorithm must say which). */
const KEYS: Record<KeyAlgorithm, { readonly curve: 'P-256' } | { readonly modulusLength: number }> = {
  'ecdsa-p256': { curve: 'P-256' },
  'rsa-2048': { modulusLength: 2048 },
  'rsa-3072': { modulusLength: 3072 },
};

/** A fresh key of `algorithm`, generated off the event loop (libuv's pool). */
export async function generateSigningKey(algorithm: KeyAlgorithm = 'ecdsa-p256'): Promise<SigningKey> {
  const key = KEYS[algorithm];
  const { privateKey, publicKey } = 'curve' in key ? await generate('ec', { namedCurve: key.curve }) : await generate('rsa', { modulusLength: key.modulusLength, publicExponent: 0x10001 });
  return { algorithm, privateKey, privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, spkiDer: publicKey.export({ type: 'spki', format: 'der' }) };
}

/** Which of certplane's key algorithms `key` is, or undefined. */
export function keyAlgorithmOf(key: KeyObject): KeyAlgorithm | undefined {
  const details = key.asymmetricKeyDetails;
  if (key.asymmetricKeyType === 'ec' && details?.namedCurve === 'prime256v1') return 'ecdsa-p256';
  if (key.asymmetricKeyType === 'rsa' && details?.modulusLength === 2048) return 'rsa-2048';
  if (key.asymmetricKeyType === 'rsa' && details?.modulusLength === 3072) return 'rsa-3072';
  return undefined;
}

/**
 * A PKCS#10 request for `names`, signed by `key`: what an agent sends instead of its key. IP
 * addresses go in as IP SANs (RFC 8738). The subject CN is the first DNS name that fits
 * X.520's 64 characters (RFC 5280's ub-common-name): Let's Encrypt's Boulder refuses a request
 * whose CN is longer ("CN was longer than 64 bytes"), so a longer first name is left to the
 * SAN, which carries every name anyway. A request none of whose DNS names fits, or that names
 * only addresses, has no CN, as CAs issue such certificates without one.
 */
export function createRequest(key: Pick<SigningKey, 'privateKey' | 'spkiDer'>, names: readonly string[]): string {
  const rsa = key.privateKey.asymmetricKeyType === 'rsa';
  if (!rsa && key.privateKey.asymmetricKeyType !== 'ec') throw new RangeError(`a ${key.privateKey.asymmetricKeyType ?? 'secret'} key does not sign certplane's requests`);
  const dnsNames = names.filter((name) => isIP(name) === 0);
  const cn = dnsNames.find((name) => Buffer.byteLength(name, 'utf8') <= MAX_COMMON_NAME_BYTES) ?? (names.length === 0 ? 'certplane' : undefined);
  const subject = sequence(cn === undefined ? [] : [set([sequence([COMMON_NAME, text(cn)])])]);
  const generalNames = sequence(names.map((name) => (isIP(name) === 0 ? tlv(0x82, Buffer.from(name, 'latin1')) : tlv(0x87, addressBytes(name)))));
  const extension = sequence([SUBJECT_ALT_NAME, tlv(0x04, generalNames)]);
  const attributes = tlv(0xa0, sequence([EXTENSION_REQUEST, set([sequence([extension])])]));
  const info = sequence([VERSION_1, subject, key.spkiDer, attributes]);
  const signature = sign('sha256', info, rsa ? key.privateKey : { key: key.privateKey, dsaEncoding: 'der' });
  const der = sequence([info, rsa ? SHA256_WITH_RSA : ECDSA_WITH_SHA256, tlv(0x03, Buffer.concat([Buffer.of(0), signature]))]);
  return pem(der, 'CERTIFICATE REQUEST');
}

/** PEM as @peculiar/x509 writes it: 64-character lines, no newline after the footer. */
function pem(der: Buffer, label: string): string {
  const base64 = der.toString('base64');
  const lines: string[] = [];
  for (let at = 0; at < base64.length; at += 64) lines.push(base64.slice(at, at + 64));
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----`;
}

/** DER of one element: tag, definite length, contents. */
function tlv(tag: number, contents: Buffer): Buffer {
  const length = contents.length;
  if (length > 0xffffff) throw new RangeError(`a DER element of ${length} bytes is beyond what a request holds`);
  const header = length < 0x80 ? [tag, length] : length < 0x100 ? [tag, 0x81, length] : length < 0x10000 ? [tag, 0x82, length >> 8, length & 0xff] : [tag, 0x83, length >> 16, (length >> 8) & 0xff, length & 0xff];
  return Buffer.concat([Buffer.from(header), contents]);
}

const sequence = (elements: readonly Buffer[]): Buffer => tlv(0x30, Buffer.concat(elements));
/** A SET of one element, or of elements already in DER order. */
const set = (elements: readonly Buffer[]): Buffer => tlv(0x31, Buffer.concat(elements));

/** What X.680 lets a PrintableString hold. */
const PRINTABLE = /^[A-Za-z0-9 '()+,\-./:=?]*$/;

/** A directory string: PrintableString when it can be, else UTF8String. */
function text(value: string): Buffer {
  return PRINTABLE.test(value) ? tlv(0x13, Buffer.from(value, 'latin1')) : tlv(0x0c, Buffer.from(value, 'utf8'));
}

/**
 * The 4 or 16 bytes of an IP address, in any form node:net reads; refused (RangeError) with a
 * zone index ("fe80::1%eth0" names an interface of one machine, never a certificate's address)
 * or anything but eight groups of one to four hex digits once the "::" is filled in.
 */
function addressBytes(address: string): Buffer {
  if (isIP(address) === 4) return Buffer.from(address.split('.').map(Number));
  if (isIP(address) !== 6 || address.includes('%')) throw new RangeError(`"${address.slice(0, 64)}" is not an IP address a certificate can name`);
  let text = address.toLowerCase();
  // An IPv6 address may end in dotted IPv4: two groups of it.
  const dotted = text.match(/(\d+)\.(\d+)\.(\d+)\.(\d+)$/);
  if (dotted) {
    const [a, b, c, d] = dotted.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, dotted.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.includes('::') ? (text.split('::') as [string, string]) : [text, undefined];
  const groupsOf = (part: string) => (part === '' ? [] : part.split(':'));
  const front = groupsOf(head);
  const back = tail === undefined ? [] : groupsOf(tail);
  const missing = 8 - front.length - back.length;
  const groups = tail === undefined ? front : missing > 0 ? [...front, ...Array<string>(missing).fill('0'), ...back] : [];
  if (groups.length !== 8 || !groups.every((group) => /^[0-9a-f]{1,4}$/.test(group))) throw new RangeError(`"${address.slice(0, 64)}" is not an IP address a certificate can name`);
  const bytes = Buffer.alloc(16);
  groups.forEach((group, index) => bytes.writeUInt16BE(parseInt(group, 16), index * 2));
  return bytes;
}

/** An OBJECT IDENTIFIER's DER. */
function oid(dotted: string): Buffer {
  const [first, second, ...rest] = dotted.split('.').map(Number) as [number, number, ...number[]];
  const bytes: number[] = [];
  for (const arc of [first * 40 + second, ...rest]) {
    const base128 = [arc & 0x7f];
    for (let value = arc >>> 7; value > 0; value >>>= 7) base128.unshift((value & 0x7f) | 0x80);
    bytes.push(...base128);
  }
  return tlv(0x06, Buffer.from(bytes));
}

const VERSION_1 = Buffer.from([0x02, 0x01, 0x00]);
const COMMON_NAME = oid('2.5.4.3');
const SUBJECT_ALT_NAME = oid('2.5.29.17');
const EXTENSION_REQUEST = oid('1.2.840.113549.1.9.14');
const ECDSA_WITH_SHA256 = sequence([oid('1.2.840.10045.4.3.2')]);
const SHA256_WITH_RSA = sequence([oid('1.2.840.113549.1.1.11'), Buffer.from([0x05, 0x00])]);
