/**
 * Reads what a CSR or a public key tells the verifier: which key the issued leaf must
 * certify and which names it asked for. An agent sends only a CSR, so the CSR is the
 * management plane's whole knowledge of the instance's key.
 */
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { CertplaneError } from '../errors.js';
import { sha256Hex, spkiSha256OfPublicKeyPem } from './certificate.js';
import { parsePemBlocks } from './pem.js';

export interface ParsedCsr {
  readonly pem: string;
  readonly der: Buffer;
  readonly spkiSha256: string;
  /** The requested key's SubjectPublicKeyInfo, DER: what an issuer certifies. */
  readonly publicKeySpkiDer: Buffer;
  /** DNS names from the subjectAltName extension request, plus the subject CN if it is not among them. */
  readonly dnsNames: readonly string[];
  /** "ECDSA P-256", "RSA 2048", ...: what the key policy checks. */
  readonly keyDescription: string;
}

/** Error codes of this module. */
export const CsrErrorCode = {
  INVALID: 'CSR_INVALID',
  BAD_SIGNATURE: 'CSR_BAD_SIGNATURE',
  NOT_A_KEY: 'KEY_INVALID',
} as const;

/** Parses a PEM CSR (CERTIFICATE REQUEST or NEW CERTIFICATE REQUEST) and checks its self-signature. */
export async function parseCsr(pem: string, source = 'CSR'): Promise<ParsedCsr> {
  const blocks = parsePemBlocks(pem, source);
  if (blocks.some((b) => b.label.includes('PRIVATE KEY'))) {
    throw new CertplaneError(CsrErrorCode.INVALID, `${source}: holds a private key; send only the CERTIFICATE REQUEST, private keys never leave the instance`, { source });
  }
  const block = blocks.find((b) => b.label === 'CERTIFICATE REQUEST' || b.label === 'NEW CERTIFICATE REQUEST');
  if (!block) {
    throw new CertplaneError(CsrErrorCode.INVALID, `${source}: no "-----BEGIN CERTIFICATE REQUEST-----" block found`, { source });
  }
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(block.der);
  } catch (cause) {
    throw new CertplaneError(CsrErrorCode.INVALID, `${source}: not a valid PKCS#10 request (${(cause as Error).message})`, { source }, { cause });
  }
  const verified = await csr.verify(webcrypto as unknown as Parameters<typeof csr.verify>[0]).catch(() => false);
  if (!verified) {
    throw new CertplaneError(CsrErrorCode.BAD_SIGNATURE, `${source}: the request's signature does not verify with its own key`, { source });
  }
  const san = csr.extensions.find((e): e is x509.SubjectAlternativeNameExtension => e instanceof x509.SubjectAlternativeNameExtension);
  const names = san ? san.names.items.filter((n) => n.type === 'dns').map((n) => n.value.toLowerCase()) : [];
  const cn = csr.subjectName.getField('CN')[0]?.toLowerCase();
  if (cn && !names.includes(cn) && /^[a-z0-9*._-]+$/.test(cn)) names.unshift(cn);
  const spki = Buffer.from(csr.publicKey.rawData);
  return {
    pem: csr.toString('pem'),
    der: block.der,
    spkiSha256: sha256Hex(spki),
    publicKeySpkiDer: spki,
    dnsNames: names,
    keyDescription: describeKey(csr.publicKey.algorithm),
  };
}

function describeKey(algorithm: webcrypto.Algorithm & { namedCurve?: string; modulusLength?: number }): string {
  if (algorithm.name === 'ECDSA' || algorithm.name === 'ECDH') return `ECDSA ${algorithm.namedCurve ?? '?'}`;
  if (algorithm.name.startsWith('RSA')) return `RSA ${algorithm.modulusLength ?? '?'}`;
  return algorithm.name;
}

/**
 * The SPKI SHA-256 of whatever key file the operator gives: a CSR or a PEM public key.
 * Refuses private keys: the tools that check a leaf against its key never need one.
 */
export async function spkiSha256OfKeyFile(pem: string, source = 'key'): Promise<string> {
  const blocks = parsePemBlocks(pem, source);
  if (blocks.some((b) => b.label.includes('PRIVATE KEY'))) {
    throw new CertplaneError(CsrErrorCode.NOT_A_KEY, `${source}: holds a private key; give the CSR or the public key instead`, { source });
  }
  if (blocks.some((b) => b.label.includes('CERTIFICATE REQUEST'))) return (await parseCsr(pem, source)).spkiSha256;
  if (blocks.some((b) => b.label === 'PUBLIC KEY')) {
    try {
      return spkiSha256OfPublicKeyPem(pem);
    } catch (cause) {
      throw new CertplaneError(CsrErrorCode.NOT_A_KEY, `${source}: the PUBLIC KEY block does not parse`, { source }, { cause });
    }
  }
  throw new CertplaneError(CsrErrorCode.NOT_A_KEY, `${source}: expected a CERTIFICATE REQUEST or PUBLIC KEY block`, { source });
}
