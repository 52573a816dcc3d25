/**
 * A small certificate factory over @peculiar/x509 and WebCrypto (its requests are written by
 * request.ts, over node:crypto alone). The agent CA issues agent certificates with it; the
 * local development environment (Pebble's HTTPS listener) and the test suites make real
 * hierarchies (roots, cross-signs, intermediates, leaves) with it instead of shipping key
 * material in the repository.
 */
import { KeyObject, webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { parsePemBlocks } from '../chain/pem.js';
import { createRequest, type SigningKey } from './request.js';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

type CryptoKeyPair = webcrypto.CryptoKeyPair;
type SignAlgorithm = webcrypto.Algorithm | webcrypto.EcdsaParams;

/** OIDs of the extended key usages the chain engine cares about. */
export const EKU = {
  serverAuth: '1.3.6.1.5.5.7.3.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
  codeSigning: '1.3.6.1.5.5.7.3.3',
  any: '2.5.29.37.0',
} as const;

import type { KeyAlgorithm } from '../chain/csr.js';
export type { KeyAlgorithm };

/** A key pair in both WebCrypto form (to sign) and PEM form (to hand to files and other tools). */
export interface KeyPair {
  readonly keys: CryptoKeyPair;
  readonly privateKeyPem: string;
  readonly publicKeyPem: string;
}

const algorithms: Record<KeyAlgorithm, { gen: webcrypto.RsaHashedKeyGenParams | webcrypto.EcKeyGenParams; sign: SignAlgorithm }> = {
  'ecdsa-p256': { gen: { name: 'ECDSA', namedCurve: 'P-256' }, sign: { name: 'ECDSA', hash: 'SHA-256' } as webcrypto.EcdsaParams },
  'rsa-2048': {
    gen: { name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' },
    sign: { name: 'RSASSA-PKCS1-v1_5' },
  },
  'rsa-3072': {
    gen: { name: 'RSASSA-PKCS1-v1_5', modulusLength: 3072, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' },
    sign: { name: 'RSASSA-PKCS1-v1_5' },
  },
};

/** Generates an extractable key pair; ECDSA P-256 by default because it is what the agent uses. */
export async function generateKeyPair(algorithm: KeyAlgorithm = 'ecdsa-p256'): Promise<KeyPair> {
  const keys = (await webcrypto.subtle.generateKey(algorithms[algorithm].gen, true, ['sign', 'verify'])) as CryptoKeyPair;
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
  const spki = await webcrypto.subtle.exportKey('spki', keys.publicKey);
  return {
    keys,
    privateKeyPem: x509.PemConverter.encode(pkcs8, 'PRIVATE KEY'),
    publicKeyPem: x509.PemConverter.encode(spki, 'PUBLIC KEY'),
  };
}

/** The issuer side of a signature: its name and the key that signs. */
export interface Issuer {
  readonly subject: string;
  readonly key: KeyPair;
}

export interface CertificateSpec {
  /** Distinguished name, e.g. "CN=ISRG Root X1, O=Internet Security Research Group". */
  readonly subject: string;
  /** The key certified; its public half goes in the certificate. */
  readonly key: KeyPair;
  /** Omit for a self-signed certificate. */
  readonly issuer?: Issuer;
  readonly notBefore?: Date;
  readonly notAfter?: Date;
  /** Marks a CA certificate; adds keyCertSign and cRLSign key usage unless `keyUsage` is given. */
  readonly ca?: boolean;
  readonly pathLength?: number;
  /** Key usage flags; omit for the conventional set, or pass [] to leave the extension out. */
  readonly keyUsage?: readonly (keyof typeof x509.KeyUsageFlags)[];
  /** Extended key usage OIDs; omit to leave the extension out. */
  readonly extendedKeyUsage?: readonly string[];
  /** DNS subject alternative names. */
  readonly dnsNames?: readonly string[];
  /** IP subject alternative names. */
  readonly ipAddresses?: readonly string[];
  /** Hexadecimal serial; random when omitted. */
  readonly serialNumber?: string;
  /** Extensions added as given (OID and DER value in hex), after the others: for tests of hostile or unusual encodings. */
  readonly rawExtensions?: readonly { readonly oid: string; readonly critical?: boolean; readonly valueHex: string }[];
}

/** A certificate with the key that goes with it. */
export interface IssuedCertificate {
  readonly pem: string;
  readonly subject: string;
  readonly key: KeyPair;
  /** This certificate as the issuer of the next one. */
  readonly asIssuer: Issuer;
}

const DAY_MS = 24 * 60 * 60 * 1000;

/**
 * 16 random bytes read as a positive DER INTEGER that is already minimal: the first byte is
 * 0x01 to 0x7f, so the encoding needs no 0x00 in front and has none to drop. (Masking only the
 * high bit left 1 serial in 128 starting 0x00, which parsers then print two ways.)
 */
function randomSerial(): string {
  const bytes = webcrypto.getRandomValues(new Uint8Array(16));
  bytes[0] = ((bytes[0] ?? 0) & 0x7f) || 0x01;
  return Buffer.from(bytes).toString('hex');
}

/** Issues one certificate from `spec`, signed by `spec.issuer` or by its own key. */
export async function issueCertificate(spec: CertificateSpec): Promise<IssuedCertificate> {
  const signer = spec.issuer ?? { subject: spec.subject, key: spec.key };
  const extensions: x509.Extension[] = [];
  if (spec.ca !== undefined) {
    extensions.push(new x509.BasicConstraintsExtension(spec.ca, spec.pathLength, true));
  }
  const usageNames = spec.keyUsage ?? (spec.ca ? ['keyCertSign', 'cRLSign', 'digitalSignature'] : ['digitalSignature']);
  if (usageNames.length > 0) {
    const flags = usageNames.reduce((acc, name) => acc | x509.KeyUsageFlags[name], 0);
    extensions.push(new x509.KeyUsagesExtension(flags, true));
  }
  if (spec.extendedKeyUsage) {
    extensions.push(new x509.ExtendedKeyUsageExtension([...spec.extendedKeyUsage], false));
  }
  const names = [
    ...(spec.dnsNames ?? []).map((value) => ({ type: 'dns' as const, value })),
    ...(spec.ipAddresses ?? []).map((value) => ({ type: 'ip' as const, value })),
  ];
  if (names.length > 0) {
    extensions.push(new x509.SubjectAlternativeNameExtension(names, false));
  }
  extensions.push(await x509.SubjectKeyIdentifierExtension.create(spec.key.keys.publicKey));
  if (spec.issuer) {
    extensions.push(await x509.AuthorityKeyIdentifierExtension.create(spec.issuer.key.keys.publicKey));
  }
  for (const raw of spec.rawExtensions ?? []) extensions.push(new x509.Extension(raw.oid, raw.critical ?? false, Buffer.from(raw.valueHex, 'hex')));
  const notBefore = spec.notBefore ?? new Date(Date.now() - DAY_MS);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: spec.serialNumber ?? randomSerial(),
    subject: spec.subject,
    issuer: signer.subject,
    notBefore,
    notAfter: spec.notAfter ?? new Date(notBefore.getTime() + 90 * DAY_MS),
    publicKey: spec.key.keys.publicKey,
    signingKey: signer.key.keys.privateKey,
    signingAlgorithm: algorithms[algorithmOf(signer.key)].sign,
    extensions,
  });
  const pem = cert.toString('pem');
  return { pem, subject: spec.subject, key: spec.key, asIssuer: { subject: spec.subject, key: spec.key } };
}

function algorithmOf(key: KeyPair): KeyAlgorithm {
  return key.keys.privateKey.algorithm.name === 'ECDSA' ? 'ecdsa-p256' : 'rsa-2048';
}

/**
 * A PKCS#10 request for `names`, signed by `key` (request.ts writes it): what an agent sends
 * instead of its key.
 */
export async function createCsr(key: KeyPair | SigningKey, names: readonly string[]): Promise<string> {
  if ('spkiDer' in key) return createRequest(key, names);
  const spkiDer = parsePemBlocks(key.publicKeyPem, 'the public key')[0]!.der;
  return createRequest({ privateKey: KeyObject.from(key.keys.privateKey), spkiDer }, names);
}

/**
 * A throwaway CA and a server certificate for "localhost" and 127.0.0.1: what a local
 * HTTPS listener (Pebble, a test proxy) needs, so no key material ships in the repository.
 */
export async function loopbackServerCertificate(caName: string): Promise<{ caPem: string; certPem: string; keyPem: string }> {
  const ca = await issueCertificate({ subject: `CN=${caName}`, key: await generateKeyPair(), ca: true, pathLength: 0 });
  const server = await issueCertificate({
    subject: 'CN=localhost',
    key: await generateKeyPair(),
    issuer: ca.asIssuer,
    dnsNames: ['localhost'],
    ipAddresses: ['127.0.0.1'],
    extendedKeyUsage: [EKU.serverAuth],
  });
  return { caPem: ca.pem, certPem: server.pem, keyPem: server.key.privateKeyPem };
}
