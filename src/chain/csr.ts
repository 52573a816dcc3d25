/**
 * Reads what a CSR or a public key tells the verifier: which key the issued leaf must
 * certify and which names it asked for. An agent sends only a CSR, so the CSR is the
 * management plane's whole knowledge of the instance's key.
 */
import { createPublicKey, verify as verifySignature, webcrypto, type KeyObject } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { CertplaneError } from '../errors.js';
import { sha256Hex, spkiSha256OfPublicKeyPem } from './certificate.js';
import { ipAddress } from './names.js';
import { readCommonCsr, type CommonCsr } from './csr-common.js';
import { parsePemBlocks } from './pem.js';
import { isPrivateKeyLabel } from '../untrusted-text.js';
import { ErrorCode } from '../error-catalogue.js';

export interface ParsedCsr {
  readonly pem: string;
  readonly der: Buffer;
  readonly spkiSha256: string;
  /** The requested key's SubjectPublicKeyInfo, DER: what an issuer certifies. */
  readonly publicKeySpkiDer: Buffer;
  /** DNS names from the subjectAltName extension request, plus the subject CN if it is not among them: lowercase, each once. */
  readonly dnsNames: readonly string[];
  /** IP addresses from the subjectAltName extension request (and a CN that is one), canonical, each once: `ip` identifiers of an order. */
  readonly ipAddresses: readonly string[];
  /** "ECDSA P-256", "RSA 2048", ...: what the key policy checks. */
  readonly keyDescription: string;
}

/** Let's Encrypt's limit of names per certificate (its newer profiles allow fewer): more is refused by the CA anyway. */
export const DEFAULT_MAX_NAMES_PER_CERTIFICATE = 100;

/** The key algorithms an instance's policy may require of its agent's keys. */
export const KEY_ALGORITHMS = ['ecdsa-p256', 'rsa-2048', 'rsa-3072'] as const;
export type KeyAlgorithm = (typeof KEY_ALGORITHMS)[number];

/** What a CSR's `keyDescription` reads for each key algorithm. */
export const KEY_DESCRIPTIONS: Readonly<Record<KeyAlgorithm, string>> = { 'ecdsa-p256': 'ECDSA P-256', 'rsa-2048': 'RSA 2048', 'rsa-3072': 'RSA 3072' };

/**
 * The largest CSR text accepted, in bytes. Decoding a request is synchronous and costs
 * tens of microseconds per subjectAltName entry whatever the names say, so this bound,
 * checked before any decoding, is what bounds the event-loop time one request can take
 * (a few thousand one-letter entries at most). 100 names averaging 100 characters with
 * an RSA 4096 key still fit.
 */
export const MAX_CSR_PEM_BYTES = 16 * 1024;

/** Hashes a CSR signature may use: SHA-1 and MD5 have chosen-prefix collisions. */
const STRONG_HASHES = new Set(['SHA-256', 'SHA-384', 'SHA-512']);
const HASHED_SIGNATURES = new Set(['RSASSA-PKCS1-v1_5', 'RSA-PSS', 'ECDSA']);
/** Ed448 is not among them: @peculiar/x509 names it 'EdDSA', and it is refused as unknown. */
const EDDSA_SIGNATURES = new Set(['Ed25519']);

export interface CsrLimits {
  /** Most DNS names (SAN entries, and a name-like CN not among them) one request may carry; duplicates count. */
  readonly maxNames?: number;
  /** A tighter size limit than MAX_CSR_PEM_BYTES, when the caller knows which names a request may carry (csrPemBytesFor). */
  readonly maxPemBytes?: number;
  /** The longest subject CN allowed, in bytes as Let's Encrypt counts them (MAX_COMMON_NAME_BYTES for a request to be ordered); unchecked when absent. */
  readonly maxCommonNameBytes?: number;
  /** Refuse a request with more than one subject CN: a CA reads one (Go's parser, Boulder's, the last) where the plane reads the first. */
  readonly singleCommonName?: boolean;
}

/** A request decoded and its signature verified: what parseCsr's limits are checked against. */
interface DecodedCsr {
  readonly parsed: ParsedCsr;
  /** SAN entries and a name-like CN not among them, duplicates counted. */
  readonly entries: number;
  /** The longest subject CN, in bytes as Go's parser (Boulder's) counts them; 0 without one. */
  readonly commonNameBytes: number;
  /** How many subject CNs the request carries. */
  readonly commonNames: number;
}

/**
 * Room for a request that asks for `names`: 4 KiB for the key (RSA 4096 included), the
 * signature, the subject and the encoding, plus twice the names' own bytes (base64 and the
 * repeated CN), never more than MAX_CSR_PEM_BYTES. An agent whose instance has one name
 * then cannot make the plane decode thousands of entries it could never be granted.
 */
export function csrPemBytesFor(names: readonly string[]): number {
  const nameBytes = names.reduce((sum, name) => sum + Buffer.byteLength(name) + 4, 0);
  return Math.min(MAX_CSR_PEM_BYTES, 4096 + 2 * nameBytes);
}

/**
 * Parses a PEM CSR (CERTIFICATE REQUEST or NEW CERTIFICATE REQUEST) and checks, in this
 * order, its size, its signature algorithm, its self-signature and the number of names: the
 * size before any decoding, because it bounds the work every later step can be made to do.
 */
export async function parseCsr(pem: string, source = 'CSR', limits: CsrLimits = {}): Promise<ParsedCsr> {
  const bytes = Buffer.byteLength(pem);
  const maxBytes = Math.min(limits.maxPemBytes ?? MAX_CSR_PEM_BYTES, MAX_CSR_PEM_BYTES);
  if (bytes > maxBytes) {
    throw new CertplaneError(ErrorCode.CSR_TOO_LARGE, `${source}: ${bytes} bytes, more than the ${maxBytes} this certificate request may take; send one request with only the names the certificate needs, each once`, {
      source,
      bytes,
      limit: maxBytes,
    });
  }
  const { parsed, entries, commonNameBytes, commonNames } = RECENT_CSRS.get(pem) ?? (await decodeCsr(pem, source));
  const maxNames = limits.maxNames ?? DEFAULT_MAX_NAMES_PER_CERTIFICATE;
  if (entries > maxNames) {
    throw new CertplaneError(ErrorCode.CSR_TOO_MANY_NAMES, `${source}: ${entries} names (${parsed.dnsNames.length + parsed.ipAddresses.length} distinct), more than the ${maxNames} a certificate may have; ask for each name once, and split larger sets across certificates`, {
      source,
      names: entries,
      distinct: parsed.dnsNames.length + parsed.ipAddresses.length,
      limit: maxNames,
    });
  }
  if (limits.maxCommonNameBytes !== undefined && commonNameBytes > limits.maxCommonNameBytes) {
    throw new CertplaneError(
      ErrorCode.CSR_INVALID,
      `${source}: its subject CN is ${commonNameBytes} bytes, more than the ${limits.maxCommonNameBytes} Let's Encrypt accepts (RFC 5280 bounds a CN at 64 characters); put a name that long in the subjectAltName only, and leave the CN out or set it to a shorter name`,
      { source, commonNameBytes, limit: limits.maxCommonNameBytes },
    );
  }
  if (limits.singleCommonName && commonNames > 1) {
    throw new CertplaneError(
      ErrorCode.CSR_INVALID,
      `${source}: its subject has ${commonNames} CNs; a CA reads only one of them (Let's Encrypt the last), so the names the order asks for could differ from the CA's: give the subject one CN, or none`,
      { source, commonNames },
    );
  }
  return parsed;
}

/**
 * Requests decoded and verified lately, by their exact PEM text, at most RECENT_CSR_LIMIT
 * (the oldest forgotten first): an agent's CSR is checked by the coordinator when it arrives
 * and again by the issuer before its order, and the decoding and the signature check are
 * most of what either costs. Only requests that decoded and whose signature
 * verified are kept; the size and name limits, which differ by caller, are checked on every
 * call, and the instance's policy by the coordinator. Every caller gets the same frozen
 * object; its Buffers are shared too, to be read and never written.
 */
const RECENT_CSRS = new Map<string, DecodedCsr>();
const RECENT_CSR_LIMIT = 256;

/**
 * The size-independent checks of parseCsr: PEM, PKCS#10, signature algorithm and
 * self-signature; the names it asks for. A request in the common shape (csr-common.ts)
 * whose signature verifies is read directly; every other one, and every refusal, goes
 * through @peculiar/x509. `common: false` takes that path for every request: for tests
 * that compare the two.
 */
export async function decodeCsr(pem: string, source: string, options: { common?: boolean } = {}): Promise<DecodedCsr> {
  const blocks = parsePemBlocks(pem, source);
  if (blocks.some((b) => isPrivateKeyLabel(b.label))) {
    throw new CertplaneError(ErrorCode.CSR_INVALID, `${source}: holds a private key; send only the CERTIFICATE REQUEST, private keys never leave the instance`, { source });
  }
  const block = blocks.find((b) => b.label === 'CERTIFICATE REQUEST' || b.label === 'NEW CERTIFICATE REQUEST');
  if (!block) {
    throw new CertplaneError(ErrorCode.CSR_INVALID, `${source}: no "-----BEGIN CERTIFICATE REQUEST-----" block found`, { source });
  }
  const common = options.common === false ? undefined : readCommonCsr(block.der);
  const direct = common && directlyVerified(common);
  if (common && direct) return remember(pem, decodedCommon(block.der, common, direct));
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(block.der);
  } catch (cause) {
    throw new CertplaneError(ErrorCode.CSR_INVALID, `${source}: not a valid PKCS#10 request (${(cause as Error).message})`, { source }, { cause });
  }
  requireStrongSignature(csr, source);
  const verified = await selfSignatureVerifies(csr);
  if (!verified) {
    throw new CertplaneError(ErrorCode.CSR_BAD_SIGNATURE, `${source}: the request's signature does not verify with its own key`, { source });
  }
  const names = requestedNames(csr, source);
  const spki = Buffer.from(csr.publicKey.rawData);
  // @peculiar/x509 writes the key anew from what it decoded: the request must hold exactly
  // those bytes, in OpenSSL's one encoding of the key, or the plane would expect a leaf
  // under a hash the CA does not compute (a count of unused bits, junk after the key).
  const canonical = canonicalKey(spki);
  if (!canonical || !block.der.includes(spki)) {
    throw new CertplaneError(ErrorCode.CSR_INVALID, `${source}: its public key is not written in DER's one encoding (unused bits, trailing bytes, or a point not in uncompressed form); make the request with a standard tool`, { source });
  }
  const decoded = {
    parsed: Object.freeze({
      pem: csr.toString('pem'),
      der: block.der,
      spkiSha256: sha256Hex(spki),
      publicKeySpkiDer: spki,
      dnsNames: names.distinct,
      ipAddresses: names.addresses,
      keyDescription: describeKey(csr.publicKey.algorithm, canonical),
    }),
    entries: names.entries,
    ...commonNamesOf(csr.subjectName),
  };
  return remember(pem, decoded);
}

/**
 * The longest subject CN Let's Encrypt accepts, in bytes: Boulder refuses a request whose CN
 * is longer ("CN was longer than 64 bytes") only at finalization, after its order and
 * authorizations spent their rate limits. RFC 5280 bounds a CN at 64 characters.
 */
export const MAX_COMMON_NAME_BYTES = 64;
const COMMON_NAME_OID = '2.5.4.3';

/** The limits a request to be ordered is held to besides its names: one subject CN at most, of at most MAX_COMMON_NAME_BYTES. */
export const ORDERED_CSR_LIMITS = { maxCommonNameBytes: MAX_COMMON_NAME_BYTES, singleCommonName: true } as const satisfies CsrLimits;

/** One attribute of a decoded Name (@peculiar/asn1-x509's AttributeTypeAndValue): its type's OID and its value under its string type. */
interface NameAttribute {
  readonly type: string;
  readonly value: { readonly utf8String?: string; readonly printableString?: string; readonly ia5String?: string; readonly bmpString?: string; readonly universalString?: string; readonly teletexString?: string };
}

/**
 * How many subject CNs a request carries, and the longest in bytes as Go's parser counts
 * them (Boulder's `len`): a UTF8String, PrintableString, IA5String, BMPString or
 * UniversalString as its text in UTF-8, a TeletexString byte for byte. A CN of any other type
 * (which Go's parser drops) counts as a CN of 0 bytes. 0 and 0 without a CN.
 */
function commonNamesOf(name: x509.Name): { commonNameBytes: number; commonNames: number } {
  let longest = 0;
  let count = 0;
  // The decoded ASN.1 keeps each value's string type, which the Name's text loses; `asn`
  // is public at runtime, only its TypeScript declaration marks it private.
  for (const rdn of (name as unknown as { asn: readonly (readonly NameAttribute[])[] }).asn) {
    for (const attribute of rdn) {
      if (attribute.type !== COMMON_NAME_OID) continue;
      count += 1;
      const { utf8String, printableString, ia5String, bmpString, universalString, teletexString } = attribute.value;
      const text = utf8String ?? printableString ?? ia5String ?? bmpString ?? universalString;
      const bytes = text !== undefined ? Buffer.byteLength(text, 'utf8') : teletexString !== undefined ? teletexString.length : 0;
      longest = Math.max(longest, bytes);
    }
  }
  return { commonNameBytes: longest, commonNames: count };
}

/** Keeps a decoded request in RECENT_CSRS, forgetting the oldest past RECENT_CSR_LIMIT. */
function remember(pem: string, decoded: DecodedCsr): DecodedCsr {
  RECENT_CSRS.set(pem, decoded);
  if (RECENT_CSRS.size > RECENT_CSR_LIMIT) RECENT_CSRS.delete(RECENT_CSRS.keys().next().value as string);
  return decoded;
}

/**
 * A request in the common shape (csr-common.ts) whose signature verifies with one
 * node:crypto call: its key, with the key description, or undefined for csr.ts's slower
 * path to decide (every refusal is that path's). The key must be of the type the
 * algorithm names; an EC key on the curve its encoding names (csr-common.ts matched the
 * encoding, and checked the key's own bytes are in their one encoding, as canonicalKey
 * checks on the slower path); an RSA key of at most 4096 bits with exponent 65537, as on
 * the slower path.
 */
function directlyVerified(common: CommonCsr): { keyDescription: string } | undefined {
  let key: KeyObject;
  try {
    key = createPublicKey({ key: common.spkiDer, format: 'der', type: 'spki' });
  } catch {
    return undefined;
  }
  if (key.asymmetricKeyType !== common.keyType) return undefined;
  const details = key.asymmetricKeyDetails ?? {};
  if (key.asymmetricKeyType === 'ec' && !NAMED_CURVES.has(details.namedCurve ?? '')) return undefined;
  if (key.asymmetricKeyType === 'rsa' && ((details.modulusLength ?? Infinity) > DIRECT_RSA_BITS || details.publicExponent !== DIRECT_RSA_EXPONENT)) return undefined;
  try {
    if (!verifySignature(common.hash, common.signed, key, common.signature)) return undefined;
  } catch {
    return undefined;
  }
  return { keyDescription: common.keyType === 'rsa' ? `RSA ${details.modulusLength}` : common.keyName };
}

/**
 * The key of `spkiDer` when `spkiDer` is the one encoding OpenSSL writes for it; undefined
 * for a key OpenSSL does not read, or one written another way (junk after the key, an
 * over-long length, an EC point in hybrid or compressed form): each would give one key
 * another SHA-256, and the plane keys the certificate it expects by that hash.
 */
function canonicalKey(spkiDer: Buffer): KeyObject | undefined {
  try {
    const key = createPublicKey({ key: spkiDer, format: 'der', type: 'spki' });
    // OpenSSL writes an EC point back in the form it was given; through a JWK it comes back uncompressed.
    const written = key.asymmetricKeyType === 'ec' ? createPublicKey({ key: key.export({ format: 'jwk' }), format: 'jwk' }) : key;
    return written.export({ format: 'der', type: 'spki' }).equals(spkiDer) ? key : undefined;
  } catch {
    return undefined;
  }
}

/** The parsed request, from its common shape: the same names, in the same order, as requestedNames reads them with @peculiar/x509. */
function decodedCommon(der: Buffer, common: CommonCsr, verified: { keyDescription: string }): DecodedCsr {
  const names = namesAsked(
    common.dnsNames.map((name) => name.toLowerCase()),
    common.ipAddresses,
    common.commonNames[0]?.toLowerCase(),
  );
  return {
    parsed: Object.freeze({
      pem: x509.PemConverter.encode(der, 'CERTIFICATE REQUEST'),
      der,
      spkiSha256: sha256Hex(common.spkiDer),
      publicKeySpkiDer: Buffer.from(common.spkiDer),
      dnsNames: names.distinct,
      ipAddresses: names.addresses,
      keyDescription: verified.keyDescription,
    }),
    entries: names.entries,
    // The common shape's CNs are plain text (csr-common.ts): one byte a character.
    commonNameBytes: Math.max(0, ...common.commonNames.map((cn) => Buffer.byteLength(cn, 'utf8'))),
    commonNames: common.commonNames.length,
  };
}

/** WebCrypto's hash names as node:crypto takes them. */
const NODE_HASHES: Readonly<Record<string, string>> = { 'SHA-256': 'sha256', 'SHA-384': 'sha384', 'SHA-512': 'sha512' };
/** The node:crypto key type each signature algorithm checked directly needs. */
const KEY_TYPES: Readonly<Record<string, string>> = { ECDSA: 'ec', 'RSASSA-PKCS1-v1_5': 'rsa', Ed25519: 'ed25519' };
/** The curves WebCrypto takes (P-256, P-384, P-521), as OpenSSL and as @peculiar/x509 name them; any other curve, or explicit parameters, goes to WebCrypto, which refuses it. */
const NAMED_CURVES = new Set(['prime256v1', 'secp384r1', 'secp521r1']);
const WEBCRYPTO_CURVES = new Set(['P-256', 'P-384', 'P-521']);
/** The RSA keys checked directly: at most 4096 bits with the exponent every CA key generator uses. A larger modulus or exponent makes verification slow, and goes to WebCrypto's thread pool. */
const DIRECT_RSA_BITS = 4096;
const DIRECT_RSA_EXPONENT = 65537n;

/**
 * Whether the request's signature verifies with its own key. ECDSA on P-256, P-384 and
 * P-521, RSA PKCS#1 v1.5 with a key of at most 4096 bits and exponent 65537, and Ed25519
 * are checked with one node:crypto call over the bytes @peculiar/x509 decoded as the
 * request's info; its verify() imports the key into WebCrypto first and cost a campaign's
 * plane about 0.7 ms per request (2026-12-04). Everything else (RSA-PSS, whose salt and
 * mask live in the algorithm's parameters, other curves, explicit curve parameters, large
 * RSA keys) still goes through @peculiar/x509 and WebCrypto, which refuse what they do not
 * know and run the arithmetic off the event loop.
 */
async function selfSignatureVerifies(csr: x509.Pkcs10CertificateRequest): Promise<boolean> {
  const viaWebCrypto = () => csr.verify(webcrypto as unknown as Parameters<typeof csr.verify>[0]).catch(() => false);
  const algorithm = csr.signatureAlgorithm as { name: string; hash?: { name?: string } };
  const hash = algorithm.name === 'ECDSA' || algorithm.name === 'RSASSA-PKCS1-v1_5' ? NODE_HASHES[algorithm.hash?.name ?? ''] : EDDSA_SIGNATURES.has(algorithm.name) ? null : undefined;
  if (hash === undefined) return viaWebCrypto();
  // The exact bytes the signature covers, as @peculiar/x509 decoded them (its `tbs`, kept
  // private in its types): never found by walking the DER here.
  const tbs = Reflect.get(csr, 'tbs') as unknown;
  const signed = ArrayBuffer.isView(tbs) ? Buffer.from(tbs.buffer, tbs.byteOffset, tbs.byteLength) : tbs instanceof ArrayBuffer ? Buffer.from(tbs) : undefined;
  if (!signed) return viaWebCrypto();
  let key: ReturnType<typeof createPublicKey>;
  try {
    key = createPublicKey({ key: Buffer.from(csr.publicKey.rawData), format: 'der', type: 'spki' });
  } catch {
    return false;
  }
  // The key must be of the kind the algorithm names: node:crypto would check an RSA
  // signature for a request that calls itself ECDSA.
  if (key.asymmetricKeyType !== KEY_TYPES[algorithm.name]) return false;
  const details = key.asymmetricKeyDetails ?? {};
  // OpenSSL names the curve of explicit parameters that spell out a known one; @peculiar/x509
  // names only a curve given by its OID, as WebCrypto requires.
  const curve = (csr.publicKey.algorithm as { namedCurve?: string }).namedCurve;
  if (key.asymmetricKeyType === 'ec' && !(NAMED_CURVES.has(details.namedCurve ?? '') && WEBCRYPTO_CURVES.has(curve ?? ''))) return viaWebCrypto();
  if (key.asymmetricKeyType === 'rsa' && ((details.modulusLength ?? Infinity) > DIRECT_RSA_BITS || details.publicExponent !== DIRECT_RSA_EXPONENT)) return viaWebCrypto();
  try {
    return verifySignature(hash, signed, key, Buffer.from(csr.signature));
  } catch {
    // A signature that is not one (an ECDSA value that is not DER, for example).
    return false;
  }
}

/**
 * The DNS names and IP addresses a request asks for, each once (Sets: linear in the number
 * of entries), and how many entries carried them: duplicates still cost the CA's limit. A
 * subject CN not among them counts as one more name (an address when it is one).
 */
function requestedNames(csr: x509.Pkcs10CertificateRequest, source: string): { distinct: string[]; addresses: string[]; entries: number } {
  let san: x509.SubjectAlternativeNameExtension | undefined;
  try {
    san = csr.extensions.find((e): e is x509.SubjectAlternativeNameExtension => e instanceof x509.SubjectAlternativeNameExtension);
  } catch (cause) {
    throw new CertplaneError(ErrorCode.CSR_INVALID, `${source}: its extension request does not parse (${(cause as Error).message})`, { source }, { cause });
  }
  const items = san ? san.names.items : [];
  const sans = items.filter((n) => n.type === 'dns').map((n) => n.value.toLowerCase());
  const ips = items.filter((n) => n.type === 'ip').map((n) => ipAddress(n.value) ?? n.value);
  return namesAsked(sans, ips, csr.subjectName.getField('CN')[0]?.toLowerCase());
}

/** The DNS names (lowercase) and addresses asked for, each once, the CN counted as one more when it is not among them. */
function namesAsked(sans: readonly string[], ips: readonly string[], cn: string | undefined): { distinct: string[]; addresses: string[]; entries: number } {
  const distinct = new Set(sans);
  const addresses = new Set(ips);
  const entries = sans.length + ips.length;
  const cnAddress = cn === undefined ? undefined : ipAddress(cn);
  if (cnAddress !== undefined) return addresses.has(cnAddress) ? { distinct: [...distinct], addresses: [...addresses], entries } : { distinct: [...distinct], addresses: [cnAddress, ...addresses], entries: entries + 1 };
  if (cn === undefined || distinct.has(cn) || !/^[a-z0-9*._-]+$/.test(cn)) return { distinct: [...distinct], addresses: [...addresses], entries };
  return { distinct: [cn, ...distinct], addresses: [...addresses], entries: entries + 1 };
}

/** Refuses signatures over a broken hash (SHA-1, MD5) and algorithms certplane does not know, before any verification. */
function requireStrongSignature(csr: x509.Pkcs10CertificateRequest, source: string): void {
  let algorithm: { name: string; hash?: { name?: string } };
  try {
    algorithm = csr.signatureAlgorithm as typeof algorithm;
  } catch {
    algorithm = { name: 'unknown' };
  }
  const hash = algorithm.hash?.name;
  if (EDDSA_SIGNATURES.has(algorithm.name) || (HASHED_SIGNATURES.has(algorithm.name) && hash !== undefined && STRONG_HASHES.has(hash))) return;
  const used = hash ? `${algorithm.name} with ${hash}` : algorithm.name;
  throw new CertplaneError(ErrorCode.CSR_WEAK_SIGNATURE, `${source}: signed with ${used}; sign the request with SHA-256, SHA-384 or SHA-512 (RSA, RSA-PSS or ECDSA) or with Ed25519`, {
    source,
    signatureAlgorithm: used,
  });
}

/** An RSA key's size is OpenSSL's count of its modulus's bits: @peculiar/x509 rounds it up to whole bytes (a 2041-bit key would read as RSA 2048). */
function describeKey(algorithm: webcrypto.Algorithm & { namedCurve?: string; modulusLength?: number }, key: KeyObject): string {
  if (algorithm.name === 'ECDSA' || algorithm.name === 'ECDH') return `ECDSA ${algorithm.namedCurve ?? '?'}`;
  if (algorithm.name.startsWith('RSA')) return `RSA ${key.asymmetricKeyDetails?.modulusLength ?? '?'}`;
  return algorithm.name;
}

/**
 * The SPKI SHA-256 of whatever key file the operator gives: a CSR or a PEM public key.
 * Refuses private keys: the tools that check a leaf against its key never need one.
 */
export async function spkiSha256OfKeyFile(pem: string, source = 'key'): Promise<string> {
  const blocks = parsePemBlocks(pem, source);
  if (blocks.some((b) => isPrivateKeyLabel(b.label))) {
    throw new CertplaneError(ErrorCode.KEY_INVALID, `${source}: holds a private key; give the CSR or the public key instead`, { source });
  }
  if (blocks.some((b) => b.label.includes('CERTIFICATE REQUEST'))) return (await parseCsr(pem, source)).spkiSha256;
  if (blocks.some((b) => b.label === 'PUBLIC KEY')) {
    try {
      return spkiSha256OfPublicKeyPem(pem);
    } catch (cause) {
      throw new CertplaneError(ErrorCode.KEY_INVALID, `${source}: the PUBLIC KEY block does not parse`, { source }, { cause });
    }
  }
  throw new CertplaneError(ErrorCode.KEY_INVALID, `${source}: expected a CERTIFICATE REQUEST or PUBLIC KEY block`, { source });
}
