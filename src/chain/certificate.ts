/**
 * One parsed certificate with the facts path building and policy checks need, read
 * once. node:crypto's X509Certificate does signatures, names and host matching;
 * @peculiar/x509 reads what node:crypto cannot (key usage, path length, EKU, SANs).
 */
import { X509Certificate, createHash, createPublicKey, type KeyObject } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { ipAddress } from './names.js';

/** OIDs of the extended key usages the engine reasons about. */
export const EKU_SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
export const EKU_ANY = '2.5.29.37.0';

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
 * Parsed certificates by DER SHA-256. Decoding extensions costs milliseconds while the
 * same few intermediates and roots arrive with every chain, so parses are memoised: a
 * bounded, least-recently-used map of immutable values, which keeps the engine free of
 * I/O and its answers independent of the cache.
 */
const CACHE_LIMIT = 4096;
const cache = new Map<string, Certificate>();

/** Empties the memo; for benchmarks that measure first-sight parsing. */
export function clearCertificateCache(): void {
  cache.clear();
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

function parseUncached(der: Buffer, fingerprintSha256: string): Certificate {
  const native = new X509Certificate(der);
  const peculiar = new x509.X509Certificate(der);
  const basic = peculiar.getExtension(x509.BasicConstraintsExtension);
  const usage = peculiar.getExtension(x509.KeyUsagesExtension);
  const eku = peculiar.getExtension(x509.ExtendedKeyUsageExtension);
  const san = peculiar.getExtension(x509.SubjectAlternativeNameExtension);
  const spki = native.publicKey.export({ type: 'spki', format: 'der' });
  const dnsNames = san ? san.names.items.filter((name) => name.type === 'dns').map((name) => name.value.toLowerCase()) : [];
  const ipAddresses = san ? san.names.items.filter((name) => name.type === 'ip').map((name) => ipAddress(name.value) ?? name.value) : [];
  const subject = peculiar.subject;
  const issuer = peculiar.issuer;
  return Object.freeze({
    pem: native.toString(),
    der,
    subject,
    issuer,
    subjectCN: commonName(peculiar.subjectName) ?? subject,
    issuerCN: commonName(peculiar.issuerName) ?? issuer,
    serialNumber: peculiar.serialNumber.toLowerCase(),
    fingerprintSha256,
    spkiSha256: sha256Hex(spki),
    notBefore: peculiar.notBefore,
    notAfter: peculiar.notAfter,
    isCA: basic ? basic.ca : undefined,
    pathLength: basic?.pathLength,
    keyUsage: usage ? usage.usages : undefined,
    extendedKeyUsage: eku ? eku.usages.map(String) : undefined,
    dnsNames,
    dnsNameSet: new Set(dnsNames),
    ipAddresses,
    selfIssued: subject === issuer,
    publicKey: native.publicKey,
    native,
  });
}

function commonName(name: x509.Name): string | undefined {
  return name.getField('CN')[0];
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
  return child.issuer === candidate.subject && child.native.verify(candidate.publicKey);
}
