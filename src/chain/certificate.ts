/**
 * One parsed certificate with the facts path building and policy checks need, read
 * once. node:crypto's X509Certificate does signatures, names and host matching;
 * node-forge's ASN.1 reader reads what node:crypto cannot (key usage, path length, EKU, SANs).
 */
import { X509Certificate, createHash, createPublicKey, type KeyObject } from 'node:crypto';
import forge from 'node-forge';
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

/** How many parsed certificates the memo holds; for tests of which work goes through it. */
export function certificateCacheSize(): number {
  return cache.size;
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
 * One DER decode by OpenSSL (node:crypto, which also verifies signatures), then node-forge's
 * ASN.1 reader for what OpenSSL does not expose (key usage bits, basic constraints as
 * written, the SANs, the validity as dates). OpenSSL checks the certificate's frame but not
 * the contents of these extensions, so the reading below is strict itself: DER BOOLEANs,
 * small INTEGERs, one copy of each extension, and extended key usages OpenSSL can decode.
 * The PEM text is made when first asked for: it is only shown.
 */
function parseUncached(der: Buffer, fingerprintSha256: string): Certificate {
  const native = new X509Certificate(der);
  const tbs = tbsFields(der);
  const basic = tbs.extensions.get(OID.basicConstraints);
  const usage = tbs.extensions.get(OID.keyUsage);
  const eku = tbs.extensions.get(OID.extKeyUsage);
  const san = tbs.extensions.get(OID.subjectAltName);
  const basicFields = basic ? elements(basic, forge.asn1.Type.SEQUENCE) : [];
  const pathLength = basicFields.find((e) => isUniversal(e, forge.asn1.Type.INTEGER));
  const generalNames = san ? elements(san, forge.asn1.Type.SEQUENCE) : [];
  const dnsNames = generalNames.flatMap((name) => (isContext(name, 2) ? [primitive(name).toLowerCase()] : []));
  const ipAddresses = generalNames.flatMap((name) => (isContext(name, 7) ? ipAddressOf(Buffer.from(primitive(name), 'latin1')) : []));
  const subject = distinguishedName(native.subject);
  const issuer = distinguishedName(native.issuer);
  const isCA = basicFields.some((e) => isUniversal(e, forge.asn1.Type.BOOLEAN) && booleanOf(e));
  const selfIssued = subject === issuer;
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
    // A CA's key (what distrust pins and removed roots name) is hashed as OpenSSL re-encodes
    // it, as pins made with `openssl pkey -pubin` are: an issuer cannot dodge a pin with another
    // encoding of the same key. A leaf's is its SPKI with minimal lengths (node-forge), the same
    // for every key a CA issues from a CSR: OpenSSL's re-encoding costs as much as the whole
    // parse, and leaves are most of what a what-if parses.
    spkiSha256: sha256Hex(isCA || selfIssued ? native.publicKey.export({ type: 'spki', format: 'der' }) : Buffer.from(forge.asn1.toDer(tbs.spki).getBytes(), 'latin1')),
    notBefore: tbs.notBefore,
    notAfter: tbs.notAfter,
    isCA: basic ? isCA : undefined,
    pathLength: pathLength ? integerOf(pathLength) : undefined,
    keyUsage: usage ? namedBits(usage) : undefined,
    extendedKeyUsage: eku ? extendedKeyUsageOf(eku, native) : undefined,
    dnsNames,
    dnsNameSet: new Set(dnsNames),
    ipAddresses,
    selfIssued,
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

/** A named-bit BIT STRING (key usage) as the flags of KeyUsage: bit n, counted from the first content octet's high bit, is 2^n. */
function namedBits(bits: forge.asn1.Asn1): number {
  if (!isUniversal(bits, forge.asn1.Type.BITSTRING)) throw new Error('key usage is not a BIT STRING');
  // Undecoded, a BIT STRING's value is its contents: the count of unused bits, then the bits.
  const contents = Buffer.from(primitive(bits), 'latin1');
  const unusedBits = contents[0] ?? 0;
  const octets = contents.subarray(1);
  let value = 0;
  for (let n = 0; n < octets.length * 8 - unusedBits; n += 1) if (((octets[n >> 3] as number) >> (7 - (n & 7))) & 1) value += 2 ** n;
  return value;
}

/** The OID of the Authority Key Identifier extension (RFC 5280 section 4.2.1.1), as its DER contents octets. */
const AUTHORITY_KEY_IDENTIFIER = forge.asn1.oidToDer('2.5.29.35').getBytes();

/**
 * The keyIdentifier of a certificate's Authority Key Identifier extension, or undefined when
 * it has none (or the extension names its issuer otherwise). Read on demand, not with every
 * parse: only ARI's certID needs it, and a malformed AKI must not make a chain unparsable.
 */
export function authorityKeyIdentifier(certificate: Pick<Certificate, 'der'>): Buffer | undefined {
  for (const { oid, octets } of extensionsOf(tbsOf(certificate.der))) {
    if (oid !== AUTHORITY_KEY_IDENTIFIER) continue;
    // AuthorityKeyIdentifier ::= SEQUENCE { keyIdentifier [0] IMPLICIT OCTET STRING OPTIONAL, ... }
    const keyIdentifier = elements(decode(primitive(octets)), forge.asn1.Type.SEQUENCE).find((element) => isContext(element, 0));
    return keyIdentifier ? Buffer.from(primitive(keyIdentifier), 'latin1') : undefined;
  }
  return undefined;
}

/** The TBSCertificate's elements (RFC 5280 section 4.1). */
function tbsOf(der: Buffer): forge.asn1.Asn1[] {
  return elements(elements(decode(der.toString('latin1')), forge.asn1.Type.SEQUENCE)[0], forge.asn1.Type.SEQUENCE);
}

/** Each extension of a TBSCertificate: its OID as DER contents octets, and its extnValue OCTET STRING, undecoded. */
function* extensionsOf(tbs: readonly forge.asn1.Asn1[]): Generator<{ oid: string; octets: forge.asn1.Asn1 }> {
  const wrapper = tbs.find((element) => isContext(element, 3));
  for (const extension of wrapper ? elements(elements(wrapper)[0], forge.asn1.Type.SEQUENCE) : []) {
    const fields = elements(extension, forge.asn1.Type.SEQUENCE);
    const [oid, octets] = [fields[0], fields[fields.length - 1]];
    if (!isUniversal(oid, forge.asn1.Type.OID) || !isUniversal(octets, forge.asn1.Type.OCTETSTRING)) throw new Error('malformed extension');
    yield { oid: primitive(oid), octets };
  }
}

interface TbsFields {
  readonly serialNumber: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** The SubjectPublicKeyInfo as node-forge read it (re-encoded for a leaf's key hash only). */
  readonly spki: forge.asn1.Asn1;
  /** The decoded extnValue of each extension the engine reads, by OID. */
  readonly extensions: ReadonlyMap<string, forge.asn1.Asn1>;
}

/**
 * The extensions the engine reads, by the contents octets of their OID: an extension's id
 * is compared as written and only the four wanted ones are decoded, so an extension the
 * engine does not read (a private one with arcs beyond 2^53, say) cannot make the
 * certificate unparsable.
 */
const WANTED_EXTENSIONS: ReadonlyMap<string, string> = new Map(Object.values(OID).map((oid) => [forge.asn1.oidToDer(oid).getBytes(), oid]));

/**
 * The TBSCertificate fields OpenSSL's object does not give as the engine needs them (RFC
 * 5280 section 4.1), decoded by node-forge's ASN.1 reader (never by hand: DESIGN.md), and
 * only after OpenSSL has accepted the certificate's frame. node-forge, rather than asn1js
 * which this used before: forge's reader builds plain objects and leaves OCTET and BIT
 * STRING contents undecoded unless asked, so a whole certificate costs about 3 us where
 * asn1js (which tries to decode every string's contents as BER, and builds a class
 * instance per element) costs about 140 us, as much as OpenSSL's own parse: that made
 * first sight, and so a fleet-wide what-if, twice the cost of node:crypto's checks.
 */
function tbsFields(der: Buffer): TbsFields {
  const tbs = tbsOf(der);
  const at = isContext(tbs[0], 0) ? 1 : 0;
  const [serial, , , validity, , spki] = tbs.slice(at);
  if (!isUniversal(serial, forge.asn1.Type.INTEGER) || !isUniversal(validity, forge.asn1.Type.SEQUENCE) || !isUniversal(spki, forge.asn1.Type.SEQUENCE)) throw new Error('not an X.509 TBSCertificate');
  const [notBefore, notAfter] = elements(validity, forge.asn1.Type.SEQUENCE).map(time);
  if (!notBefore || !notAfter) throw new Error('validity is not two times');
  const extensions = new Map<string, forge.asn1.Asn1>();
  for (const { oid, octets } of extensionsOf(tbs)) {
    const wanted = WANTED_EXTENSIONS.get(oid);
    if (wanted === undefined) continue;
    // RFC 5280 section 4.2: an extension appears at most once; which copy a client honours is anyone's guess.
    if (extensions.has(wanted)) throw new Error(`extension ${wanted} appears twice`);
    extensions.set(wanted, decode(primitive(octets)));
  }
  return {
    serialNumber: Buffer.from(primitive(serial), 'latin1').toString('hex'),
    notBefore,
    notAfter,
    spki,
    extensions,
  };
}

/** node-forge's reader on a binary string: strict DER lengths, every byte consumed, BIT STRING contents left alone. */
function decode(bytes: string): forge.asn1.Asn1 {
  // @types/node-forge declares only the older boolean form of the second argument.
  const options = { strict: true, parseAllBytes: true, decodeBitStrings: false } as unknown as boolean;
  return forge.asn1.fromDer(forge.util.createBuffer(bytes), options);
}

function isUniversal(element: forge.asn1.Asn1 | undefined, type: number): element is forge.asn1.Asn1 {
  return element !== undefined && element.tagClass === forge.asn1.Class.UNIVERSAL && element.type === type;
}

function isContext(element: forge.asn1.Asn1 | undefined, tag: number): element is forge.asn1.Asn1 {
  return element !== undefined && element.tagClass === forge.asn1.Class.CONTEXT_SPECIFIC && element.type === tag;
}

/** The elements of a constructed value (of the universal type given, when one is); throws on a primitive. */
function elements(element: forge.asn1.Asn1 | undefined, type?: number): forge.asn1.Asn1[] {
  if (element === undefined || !Array.isArray(element.value) || (type !== undefined && !isUniversal(element, type))) throw new Error('expected a constructed ASN.1 value');
  return element.value;
}

/** The contents octets of a primitive value, as the binary string node-forge keeps them. */
function primitive(element: forge.asn1.Asn1): string {
  if (typeof element.value !== 'string') throw new Error('expected a primitive ASN.1 value');
  return element.value;
}

/** A DER BOOLEAN: exactly one octet, 0x00 or 0xFF (a longer or empty one is not DER, and asn1js and OpenSSL never read it as true). */
function booleanOf(element: forge.asn1.Asn1): boolean {
  const value = primitive(element);
  if (value === '\xff') return true;
  if (value === '\x00') return false;
  throw new Error('a BOOLEAN that is not DER');
}

/** A DER INTEGER of at most four octets (a path length); anything longer or empty is refused. */
function integerOf(element: forge.asn1.Asn1): number {
  const value = primitive(element);
  if (value.length === 0 || value.length > 4) throw new Error('a path length that is not a small INTEGER');
  return forge.asn1.derToInteger(value);
}

/**
 * Extended key usages: the extension's presence as node-forge reads it, the OIDs as OpenSSL
 * decodes them (dotted, whatever their size). OpenSSL answers nothing for an extension it
 * cannot decode (an OID cut short, an element that is not an OID); that is refused, never
 * read as "no restriction".
 */
function extendedKeyUsageOf(extension: forge.asn1.Asn1, native: X509Certificate): string[] {
  const listed = elements(extension, forge.asn1.Type.SEQUENCE);
  const decoded = native.keyUsage as string[] | undefined;
  if (decoded === undefined || decoded.length !== listed.length || listed.some((oid) => !isUniversal(oid, forge.asn1.Type.OID))) throw new Error('an extended key usage OpenSSL cannot decode');
  return decoded;
}

/**
 * A Validity time in the only forms RFC 5280 section 4.1.2.5 allows: UTCTime YYMMDDHHMMSSZ
 * (years 1950 to 2049) or GeneralizedTime YYYYMMDDHHMMSSZ; undefined for anything else.
 * node-forge converts without checking (a corrupted digit gives an invalid or rolled-over
 * date), so the text must have the form and name a real instant: the date written back in
 * the same form must be the same text.
 */
function time(element: forge.asn1.Asn1): Date | undefined {
  const utc = isUniversal(element, forge.asn1.Type.UTCTIME);
  if (!utc && !isUniversal(element, forge.asn1.Type.GENERALIZEDTIME)) return undefined;
  const text = primitive(element);
  if (!(utc ? /^\d{12}Z$/ : /^\d{14}Z$/).test(text)) return undefined;
  const date = utc ? forge.asn1.utcTimeToDate(text) : forge.asn1.generalizedTimeToDate(text);
  if (Number.isNaN(date.getTime())) return undefined;
  const written = date.toISOString().replace(/[-:T]|\.\d{3}/g, '');
  return (utc ? written.slice(2) : written) === text ? date : undefined;
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
