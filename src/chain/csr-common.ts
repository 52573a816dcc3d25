/**
 * The common shape of a certificate request read directly from its DER, for csr.ts: the
 * requests agents send (a P-256, P-384, P-521, RSA or Ed25519 key; a subject of plain
 * text; an extension request holding only a subjectAltName of DNS names and IP
 * addresses), which @peculiar/x509's schema decoder read in about 2 ms of the plane's
 * event loop each (a campaign's profile, 2026-12-04).
 *
 * It reads a strict subset and nothing else. Any request outside it, anything not DER
 * (a long length form where a short one fits, an indefinite length, a multi-byte tag),
 * any extension but the subjectAltName, any attribute but the extension request, any
 * string type but UTF8String, PrintableString and IA5String, any byte outside printable
 * ASCII in a name, any algorithm whose encoding is not byte for byte one of those below, a
 * key not in its one encoding (an EC point not uncompressed, an RSA key not minimal DER):
 * each gives undefined, and csr.ts decodes the request with @peculiar/x509 as before. It
 * never refuses anything: every refusal stays the slower path's, so this one cannot refuse
 * differently; and a test checks that what it accepts reads the same on both paths.
 */
import { ipAddress } from './names.js';

/** What csr.ts needs of a request it reads here; its signature is checked there. */
export interface CommonCsr {
  /** The CertificationRequestInfo, exactly as signed. */
  readonly signed: Buffer;
  readonly signature: Buffer;
  /** node:crypto's digest for the signature, or null for Ed25519. */
  readonly hash: 'sha256' | 'sha384' | 'sha512' | null;
  /** The node:crypto key type the signature algorithm needs. */
  readonly keyType: 'ec' | 'rsa' | 'ed25519';
  readonly spkiDer: Buffer;
  /** "ECDSA P-256", "RSA" (csr.ts adds the modulus length node:crypto reads), "Ed25519". */
  readonly keyName: string;
  /** The subject's common names, in order. */
  readonly commonNames: readonly string[];
  /** subjectAltName dNSName entries as written, and iPAddress entries canonical, in order. */
  readonly dnsNames: readonly string[];
  readonly ipAddresses: readonly string[];
}

/** Signature AlgorithmIdentifiers as DER, whole. RSA's with its NULL parameters, the form every tool writes. */
const SIGNATURE_ALGORITHMS: ReadonlyMap<string, { hash: CommonCsr['hash']; keyType: CommonCsr['keyType'] }> = new Map([
  ['300a06082a8648ce3d040302', { hash: 'sha256', keyType: 'ec' }],
  ['300a06082a8648ce3d040303', { hash: 'sha384', keyType: 'ec' }],
  ['300a06082a8648ce3d040304', { hash: 'sha512', keyType: 'ec' }],
  ['300d06092a864886f70d01010b0500', { hash: 'sha256', keyType: 'rsa' }],
  ['300d06092a864886f70d01010c0500', { hash: 'sha384', keyType: 'rsa' }],
  ['300d06092a864886f70d01010d0500', { hash: 'sha512', keyType: 'rsa' }],
  ['300506032b6570', { hash: null, keyType: 'ed25519' }],
] as const);

/** SubjectPublicKeyInfo AlgorithmIdentifiers as DER, whole: EC keys on a named curve, RSA, Ed25519. */
const KEY_ALGORITHMS: ReadonlyMap<string, { keyType: CommonCsr['keyType']; keyName: string; keyBytes?: number }> = new Map([
  // An EC point uncompressed (0x04, then both coordinates), the one form OpenSSL does not keep as given.
  ['301306072a8648ce3d020106082a8648ce3d030107', { keyType: 'ec', keyName: 'ECDSA P-256', keyBytes: 65 }],
  ['301006072a8648ce3d020106052b81040022', { keyType: 'ec', keyName: 'ECDSA P-384', keyBytes: 97 }],
  ['301006072a8648ce3d020106052b81040023', { keyType: 'ec', keyName: 'ECDSA P-521', keyBytes: 133 }],
  ['300d06092a864886f70d0101010500', { keyType: 'rsa', keyName: 'RSA' }],
  ['300506032b6570', { keyType: 'ed25519', keyName: 'Ed25519', keyBytes: 32 }],
] as const);

const OID_COMMON_NAME = '0603550403';
const OID_EXTENSION_REQUEST = '06092a864886f70d01090e';
const OID_SUBJECT_ALT_NAME = '0603551d11';
const PRINTABLE_STRING = 0x13;
/** UTF8String, PrintableString, IA5String. */
const TEXT_TAGS = new Set([0x0c, PRINTABLE_STRING, 0x16]);
/** What X.680 lets a PrintableString hold. */
const PRINTABLE_STRING_TEXT = /^[A-Za-z0-9 '()+,\-./:=?]+$/;

const SEQUENCE = 0x30;
const SET = 0x31;

/** One DER element: its tag and where its header, its content and it end. */
interface Element {
  readonly tag: number;
  readonly start: number;
  readonly content: number;
  readonly end: number;
}

/** The request's fields in the common shape, or undefined for anything else (csr.ts then reads it the slower way). */
export function readCommonCsr(der: Buffer): CommonCsr | undefined {
  try {
    return read(der);
  } catch (error) {
    if (error === OUTSIDE) return undefined;
    throw error;
  }
}

/** Thrown inside this module only: the request is outside the common shape. */
const OUTSIDE = Symbol('outside the common shape');

function outside(): never {
  throw OUTSIDE;
}

function read(der: Buffer): CommonCsr {
  const request = element(der, 0, der.length, SEQUENCE);
  if (request.end !== der.length) outside();
  const [infoElement, algorithm, signatureBits] = children(der, request, 3);
  const info = expect(infoElement!, SEQUENCE);
  const signed = der.subarray(info.start, info.end);
  const signatureAlgorithm = SIGNATURE_ALGORITHMS.get(hex(der, expect(algorithm!, SEQUENCE)));
  if (!signatureAlgorithm) outside();
  const bits = expect(signatureBits!, 0x03);
  // A signature is whole bytes: no unused bits.
  if (bits.end - bits.content < 2 || der[bits.content] !== 0) outside();

  // The attributes are not optional in PKCS#10, even when there are none.
  const [version, subject, spki, attributes] = children(der, info, 4);
  if (hex(der, version!) !== '020100') outside();
  const commonNames = readSubject(der, expect(subject!, SEQUENCE));
  const spkiElement = expect(spki!, SEQUENCE);
  const [keyAlgorithm, publicKey] = children(der, spkiElement, 2);
  const key = KEY_ALGORITHMS.get(hex(der, expect(keyAlgorithm!, SEQUENCE)));
  if (!key || key.keyType !== signatureAlgorithm.keyType) outside();
  // Whole bytes, as every key's encoding is: a count of unused bits would give one key several encodings.
  const keyBits = expect(publicKey!, 0x03);
  if (keyBits.end - keyBits.content < 2 || der[keyBits.content] !== 0) outside();
  // The key itself in its one encoding, so the SubjectPublicKeyInfo's SHA-256 is the key's
  // one hash: the plane names the leaf it expects by it.
  const keyStart = keyBits.content + 1;
  if (key.keyType === 'rsa') rsaPublicKey(der, keyStart, keyBits.end);
  else if (keyBits.end - keyStart !== key.keyBytes || (key.keyType === 'ec' && der[keyStart] !== 0x04)) outside();
  const names = readAttributes(der, expect(attributes!, 0xa0));
  return {
    signed,
    signature: der.subarray(bits.content + 1, bits.end),
    hash: signatureAlgorithm.hash,
    keyType: signatureAlgorithm.keyType,
    spkiDer: der.subarray(spkiElement.start, spkiElement.end),
    keyName: key.keyName,
    commonNames,
    ...names,
  };
}

/** Name: a SEQUENCE of SETs of (type, value); each value plain text. Returns the CN values in order. */
function readSubject(der: Buffer, name: Element): string[] {
  const commonNames: string[] = [];
  for (const rdn of children(der, name)) {
    const attributes = children(der, expect(rdn, SET));
    if (attributes.length === 0) outside();
    for (const attribute of attributes) {
      const [type, value] = children(der, expect(attribute, SEQUENCE), 2);
      objectIdentifier(der, type!);
      if (!TEXT_TAGS.has(value!.tag)) outside();
      const text = printable(der, value!, 0x20);
      if (value!.tag === PRINTABLE_STRING && !PRINTABLE_STRING_TEXT.test(text)) outside();
      if (hex(der, type!) === OID_COMMON_NAME) commonNames.push(text);
    }
  }
  return commonNames;
}

/** The attributes: none, or one extension request holding exactly one subjectAltName of DNS names and IP addresses. */
function readAttributes(der: Buffer, attributes: Element): { dnsNames: string[]; ipAddresses: string[] } {
  const list = children(der, attributes);
  if (list.length === 0) return { dnsNames: [], ipAddresses: [] };
  if (list.length !== 1) outside();
  const [type, values] = children(der, expect(list[0]!, SEQUENCE), 2);
  if (hex(der, type!) !== OID_EXTENSION_REQUEST) outside();
  const [extensions] = children(der, expect(values!, SET), 1);
  const [extension] = children(der, expect(extensions!, SEQUENCE), 1);
  const parts = children(der, expect(extension!, SEQUENCE));
  // extnID, critical (present only when TRUE in DER), extnValue.
  if (parts.length === 3 && hex(der, parts[1]!) !== '0101ff') outside();
  if (parts.length !== 2 && parts.length !== 3) outside();
  if (hex(der, parts[0]!) !== OID_SUBJECT_ALT_NAME) outside();
  const value = expect(parts[parts.length - 1]!, 0x04);
  const generalNames = element(der, value.content, value.end, SEQUENCE);
  if (generalNames.end !== value.end) outside();
  const dnsNames: string[] = [];
  const ipAddresses: string[] = [];
  for (const name of children(der, generalNames)) {
    if (name.tag === 0x82) dnsNames.push(printable(der, name, 0x21));
    else if (name.tag === 0x87) ipAddresses.push(addressOf(der.subarray(name.content, name.end)));
    else outside();
  }
  return { dnsNames, ipAddresses };
}

/** RSAPublicKey: a SEQUENCE of two positive INTEGERs, minimal, filling the key's bytes exactly. */
function rsaPublicKey(der: Buffer, start: number, end: number): void {
  const sequence = element(der, start, end, SEQUENCE);
  if (sequence.end !== end) outside();
  for (const integer of children(der, sequence, 2)) {
    expect(integer, 0x02);
    const first = der[integer.content]!;
    const next = der[integer.content + 1];
    if (integer.end === integer.content || first >= 0x80 || (first === 0 && (next === undefined || integer.content + 1 === integer.end || next < 0x80))) outside();
  }
}

/** An iPAddress entry, canonical: four bytes or sixteen, nothing else. */
function addressOf(bytes: Buffer): string {
  let text: string;
  if (bytes.length === 4) text = [...bytes].join('.');
  else if (bytes.length === 16) text = Array.from({ length: 8 }, (_, i) => bytes.readUInt16BE(2 * i).toString(16)).join(':');
  else outside();
  return ipAddress(text) ?? outside();
}

/** The content as text when every byte is printable ASCII from `lowest` up (0x20 allows spaces), and there is at least one. */
function printable(der: Buffer, text: Element, lowest: number): string {
  if (text.end === text.content) outside();
  for (let at = text.content; at < text.end; at += 1) if (der[at]! < lowest || der[at]! > 0x7e) outside();
  return der.toString('latin1', text.content, text.end);
}

/** An OBJECT IDENTIFIER whose encoding is whole: every subidentifier minimal and ended. */
function objectIdentifier(der: Buffer, oid: Element): void {
  expect(oid, 0x06);
  if (oid.end === oid.content) outside();
  let starting = true;
  for (let at = oid.content; at < oid.end; at += 1) {
    if (starting && der[at] === 0x80) outside();
    starting = (der[at]! & 0x80) === 0;
  }
  if (!starting) outside();
}

/** The whole element (header and content) as hex, for comparing an encoding byte for byte. */
function hex(der: Buffer, at: Element): string {
  return der.toString('hex', at.start, at.end);
}

function expect(at: Element, tag: number): Element {
  if (at.tag !== tag) outside();
  return at;
}

/** The elements inside a constructed one, in order, filling it exactly; exactly `count` of them when given. */
function children(der: Buffer, parent: Element, count?: number): Element[] {
  const found: Element[] = [];
  for (let at = parent.content; at < parent.end; ) {
    const child = element(der, at, parent.end);
    found.push(child);
    at = child.end;
  }
  if (count !== undefined && found.length !== count) outside();
  return found;
}

/** The DER element starting at `at`, within `limit`: a one-byte tag and a definite, minimal length. */
function element(der: Buffer, at: number, limit: number, tag?: number): Element {
  if (at + 2 > limit) outside();
  const found = der[at]!;
  // The high-tag-number form (low five bits all set) is never used by a request.
  if ((found & 0x1f) === 0x1f || (tag !== undefined && found !== tag)) outside();
  const first = der[at + 1]!;
  let length: number;
  let content: number;
  if (first < 0x80) {
    length = first;
    content = at + 2;
  } else {
    const octets = first & 0x7f;
    // 0x80 is the indefinite length (BER only); more than three octets is more than 16 MiB.
    if (octets === 0 || octets > 3 || at + 2 + octets > limit || der[at + 2] === 0) outside();
    length = der.readUIntBE(at + 2, octets);
    // DER uses the long form only where the short one cannot hold the length.
    if (length < 0x80) outside();
    content = at + 2 + octets;
  }
  const end = content + length;
  if (end > limit) outside();
  return { tag: found, start: at, content, end };
}
