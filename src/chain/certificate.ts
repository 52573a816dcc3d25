/**
 * One parsed certificate with the facts path building and policy checks need, read
 * once. node:crypto's X509Certificate does signatures, names and host matching; asn1js
 * reads what node:crypto cannot (key usage, path length, EKU, SANs).
 */
import { X509Certificate, createHash, createPublicKey, type KeyObject } from 'node:crypto';
import * as asn1js from 'asn1js';
import { ipAddress } from './names.js';

/** OIDs of the extended key usages the engine reasons about. */
export const EKU_SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
export const EKU_ANY = '2.5.29.37.0';

/** The extensions the engine reads, by OID (RFC 5280 section 4.2.1). */
const OID = { basicConstraints: '2.5.29.19', keyUsage: '2.5.29.15', extKeyUsage: '2.5.29.37', subjectAltName: '2.5.29.17' } as const;

/** Key usage bits, as in RFC 5280 section 4.2.1.3. */
export const KeyUsage = {
  digitalSignature: 1,
  keyEncipherment: 4,
  keyCertSign: 32,
} as const;

export interface Certificate {
  readonly pem: string;
  readonly der: Buffer;
  /** Distinguished names as RFC 4514-ish strings, for display and name chaining. */
  readonly subject: string;
  readonly issuer: string;
  /** The subject's and issuer's common names, or the full name when there is none. */
  readonly subjectCN: string;
  readonly issuerCN: string;
  readonly serialNumber: string;
  /** SHA-256 of the DER encoding, lowercase hex: what identifies a certificate. */
  readonly fingerprintSha256: string;
  /** SHA-256 of the SubjectPublicKeyInfo, lowercase hex: what identifies a key (distrust, CSR match). */
  readonly spkiSha256: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** basicConstraints cA; undefined when the extension is absent. */
  readonly isCA: boolean | undefined;
  readonly pathLength: number | undefined;
  /** Key usage bit mask; undefined when the extension is absent (no restriction). */
  readonly keyUsage: number | undefined;
  /** Extended key usage OIDs; undefined when the extension is absent (no restriction). */
  readonly extendedKeyUsage: readonly string[] | undefined;
  readonly dnsNames: readonly string[];
  /** The same names as a Set, made once with the parse: coverage of N requested names is N lookups, not N scans of the leaf's names. */
  readonly dnsNameSet: ReadonlySet<string>;
  /** IP address SANs, canonical (IPv6 compressed): what a certificate for an `ip` identifier names. */
  readonly ipAddresses: readonly string[];
  /** Issuer name equals subject name: a root or a self-issued re-key. */
  readonly selfIssued: boolean;
  readonly publicKey: KeyObject;
  /** The node:crypto view, for signature checks and host matching. */
  readonly native: X509Certificate;
}

/**
 * Parsed certificates by DER SHA-256. The same few intermediates and roots arrive with
 * every chain, so parses are memoised: a bounded, least-recently-used map of immutable
 * values, which keeps the engine free of I/O and its answers independent of the cache.
 * Work over a whole fleet (a what-if, a trust reload) sees more distinct leaves than this
 * holds; it parses through a scope of its own (createCertificateScope in pem.ts), so it
 * neither thrashes this memo nor depends on its size.
 */
const CACHE_LIMIT = 4096;
const cache = new Map<string, Certificate>();

/** Empties the parse memo; for benchmarks that measure first sight (signature verdicts live with each parsed certificate, so they go too). */
export function clearCertificateCache(): void {
  cache.clear();
}

/**
 * Signature verdicts of each parsed certificate, by the SHA-256 SPKI of the signer's key.
 * Whether a key signed a certificate never changes, and a trust change re-judges every
 * installed chain in every profile, so the same pairs come back again and again. Kept
 * beside the certificate (weakly) rather than in one global map: the verdicts live exactly
 * as long as the parsed certificate, whatever the size of the fleet, and a cross-signed
 * intermediate (same key, another certificate) reuses the verdict of its twin.
 */
const signatures = new WeakMap<Certificate, Map<string, boolean>>();
/** More signer keys than this for one certificate is a hostile bundle, not a fleet; stop remembering. */
const SIGNERS_REMEMBERED = 64;

/** True when `signer`'s key verifies `child`'s signature (names are not compared: see isSignedBy). */
export function signatureVerifies(child: Certificate, signer: Certificate): boolean {
  let known = signatures.get(child);
  const verdict = known?.get(signer.spkiSha256);
  if (verdict !== undefined) return verdict;
  const verified = child.native.verify(signer.publicKey);
  if (!known) signatures.set(child, (known = new Map()));
  if (known.size < SIGNERS_REMEMBERED) known.set(signer.spkiSha256, verified);
  return verified;
}

/** Parses one DER certificate; throws whatever the parsers throw, callers turn that into CHAIN_UNPARSABLE_CERTIFICATE. */
export function parseCertificateDer(der: Buffer): Certificate {
  const fingerprint = sha256Hex(der);
  const hit = cache.get(fingerprint);
  if (hit) {
    cache.delete(fingerprint);
    cache.set(fingerprint, hit);
    return hit;
  }
  const parsed = parseUncached(Buffer.from(der), fingerprint);
  cache.set(fingerprint, parsed);
  if (cache.size > CACHE_LIMIT) cache.delete(cache.keys().next().value as string);
  return parsed;
}

/**
 * Parses one DER certificate without the global memo, for a caller that keeps its own
 * (one evaluation's scope). `der` must not be modified afterwards.
 */
export function parseCertificateDerUnmemoised(der: Buffer): Certificate {
  return parseUncached(der, sha256Hex(der));
}

/**
 * One DER decode by OpenSSL (node:crypto, which also verifies signatures), then asn1js for
 * what OpenSSL does not expose (key usage bits, basic constraints as written, the SANs,
 * the validity as dates). OpenSSL has accepted the whole encoding by then, so only the few
 * elements the engine reads are handed to asn1js: decoding the whole certificate with
 * asn1js (every name, every extension, the signature) cost as much as OpenSSL's decode
 * and verification together, and made first-sight parsing the cost of a fleet-wide
 * what-if. The PEM text is made when first asked for: it is only shown.
 */
function parseUncached(der: Buffer, fingerprintSha256: string): Certificate {
  const native = new X509Certificate(der);
  const tbs = tbsFields(der);
  const basic = tbs.extensions.get(OID.basicConstraints)?.valueBlock.value ?? [];
  const usage = tbs.extensions.get(OID.keyUsage) as asn1js.BitString | undefined;
  const eku = tbs.extensions.get(OID.extKeyUsage);
  const san = tbs.extensions.get(OID.subjectAltName);
  const hasBasic = tbs.extensions.has(OID.basicConstraints);
  const pathLength = basic.find((e): e is asn1js.Integer => e instanceof asn1js.Integer)?.valueBlock.valueDec;
  const dnsNames = (san?.valueBlock.value ?? []).flatMap((name) => (name.idBlock.tagClass === 3 && name.idBlock.tagNumber === 2 ? [Buffer.from((name as asn1js.Primitive).valueBlock.valueHexView).toString('latin1').toLowerCase()] : []));
  const ipAddresses = (san?.valueBlock.value ?? []).flatMap((name) => (name.idBlock.tagClass === 3 && name.idBlock.tagNumber === 7 ? ipAddressOf(Buffer.from((name as asn1js.Primitive).valueBlock.valueHexView)) : []));
  const subject = distinguishedName(native.subject);
  const issuer = distinguishedName(native.issuer);
  let pem: string | undefined;
  const certificate = {
    get pem() {
      return (pem ??= native.toString());
    },
    der,
    subject,
    issuer,
    subjectCN: commonName(native.subject) ?? subject,
    issuerCN: commonName(native.issuer) ?? issuer,
    serialNumber: tbs.serialNumber,
    fingerprintSha256,
    spkiSha256: sha256Hex(tbs.spki),
    notBefore: tbs.notBefore,
    notAfter: tbs.notAfter,
    isCA: hasBasic ? basic.some((e) => e instanceof asn1js.Boolean && e.valueBlock.value) : undefined,
    pathLength,
    keyUsage: usage ? namedBits(usage) : undefined,
    extendedKeyUsage: eku ? eku.valueBlock.value.map((oid) => (oid as asn1js.ObjectIdentifier).valueBlock.toString()) : undefined,
    dnsNames,
    dnsNameSet: new Set(dnsNames),
    ipAddresses,
    selfIssued: subject === issuer,
    // Read now, not on first use: a key OpenSSL cannot decode makes the certificate unparsable here, not a verifier's exception later.
    publicKey: native.publicKey,
    native,
  };
  return Object.freeze(certificate);
}

/** A SAN iPAddress (RFC 5280: 4 octets for IPv4, 16 for IPv6) in the canonical text form names.ts stores; nothing for any other length. */
function ipAddressOf(octets: Buffer): string[] {
  if (octets.length === 4) return [[...octets].join('.')];
  if (octets.length !== 16) return [];
  const groups = Array.from({ length: 8 }, (_, i) => octets.readUInt16BE(i * 2).toString(16));
  const text = ipAddress(groups.join(':'));
  return text ? [text] : [];
}

/** A named-bit BIT STRING (key usage) as the flags of KeyUsage: bit n, counted from the first octet's high bit, is 2^n. */
function namedBits(bits: asn1js.BitString): number {
  const octets = bits.valueBlock.valueHexView;
  let value = 0;
  for (let n = 0; n < octets.length * 8 - bits.valueBlock.unusedBits; n += 1) if (((octets[n >> 3] as number) >> (7 - (n & 7))) & 1) value += 2 ** n;
  return value;
}

interface TbsFields {
  readonly serialNumber: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly spki: Uint8Array;
  /** The decoded extnValue of each extension the engine reads, by OID. */
  readonly extensions: ReadonlyMap<string, asn1js.Constructed>;
}

/** The extensions the engine reads, by OID; the others are not kept. */
const WANTED_EXTENSIONS: ReadonlySet<string> = new Set(Object.values(OID));

/**
 * The TBSCertificate fields OpenSSL's object does not give as the engine needs them (RFC
 * 5280 section 4.1), decoded by asn1js (never by hand: DESIGN.md), keeping only the
 * extensions the engine reads.
 */
function tbsFields(der: Buffer): TbsFields {
  const tbs = ((decode(der) as asn1js.Sequence).valueBlock.value[0] as asn1js.Sequence).valueBlock.value;
  const explicit = (element: asn1js.AsnType | undefined, tag: number) => element?.idBlock.tagClass === 3 && element.idBlock.tagNumber === tag;
  const at = explicit(tbs[0], 0) ? 1 : 0;
  const [serial, , , validity, , spki] = tbs.slice(at);
  if (!(serial instanceof asn1js.Integer) || !(validity instanceof asn1js.Sequence) || !(spki instanceof asn1js.Sequence)) throw new Error('not an X.509 TBSCertificate');
  const [notBefore, notAfter]: (asn1js.AsnType | undefined)[] = validity.valueBlock.value;
  // GeneralizedTime extends UTCTime in asn1js: both give toDate().
  if (!(notBefore instanceof asn1js.UTCTime) || !(notAfter instanceof asn1js.UTCTime)) throw new Error('validity is not two times');
  const extensions = new Map<string, asn1js.Constructed>();
  const wrapper = tbs.find((element) => explicit(element, 3)) as asn1js.Constructed | undefined;
  for (const extension of ((wrapper?.valueBlock.value[0] as asn1js.Sequence | undefined)?.valueBlock.value ?? []) as asn1js.Sequence[]) {
    const fields = extension.valueBlock.value;
    const [oid, octets] = [fields[0], fields[fields.length - 1]];
    if (!(oid instanceof asn1js.ObjectIdentifier) || !(octets instanceof asn1js.OctetString)) throw new Error('malformed extension');
    const wanted = oid.valueBlock.toString();
    // asn1js decodes an OCTET STRING's contents when they are one whole BER value; otherwise decode them here.
    if (WANTED_EXTENSIONS.has(wanted)) extensions.set(wanted, (octets.valueBlock.value[0] ?? decode(octets.valueBlock.valueHexView)) as asn1js.Constructed);
  }
  return {
    serialNumber: Buffer.from(serial.valueBlock.valueHexView).toString('hex'),
    notBefore: notBefore.toDate(),
    notAfter: notAfter.toDate(),
    spki: spki.valueBeforeDecodeView,
    extensions,
  };
}

/** asn1js on a slice of the certificate's DER, which is never modified after parsing, so asn1js need not copy it. */
function decode(bytes: Uint8Array): asn1js.AsnType {
  const decoded = asn1js.fromBER(bytes, { copyInput: false });
  if (decoded.offset === -1) throw new Error(`not DER: ${decoded.result.error}`);
  return decoded.result;
}


/** OpenSSL's one-attribute-per-line form as the one-line "CN=..., O=..." form reports show. */
function distinguishedName(lines: string): string {
  return lines.split('\n').join(', ');
}

function commonName(lines: string): string | undefined {
  return lines.split('\n').find((line) => line.startsWith('CN='))?.slice(3);
}

/** Lowercase hex SHA-256, the one digest format used across certplane. */
export function sha256Hex(data: Buffer | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** SHA-256 of a public key's SubjectPublicKeyInfo, from a PEM public key. */
export function spkiSha256OfPublicKeyPem(pem: string): string {
  return sha256Hex(createPublicKey(pem).export({ type: 'spki', format: 'der' }));
}

/** True when `child` names `candidate` as its issuer and `candidate`'s key verifies `child`'s signature. */
export function isSignedBy(child: Certificate, candidate: Certificate): boolean {
  return child.issuer === candidate.subject && signatureVerifies(child, candidate);
}
