/**
 * The agent CA: signs the client certificates agents authenticate with. Its key lives
 * in the secret store (created on first start, shared by every replica), never in the
 * database. Agent certificates name the instance in their CN and are short-lived, so
 * revocation is a list lookup and renewal a routine re-enrollment.
 */
import { X509Certificate, createPrivateKey, createPublicKey, webcrypto, type KeyObject } from 'node:crypto';
import { z } from 'zod';
import { CertplaneError } from '../errors.js';
import { parseCertificateBundle, sha256Hex, type ParsedCsr } from '../chain/index.js';
import { EKU, generateKeyPair, issueCertificate, type KeyPair } from '../pki/factory.js';
import type { SecretStore } from '../secrets/index.js';
import { ErrorCode } from '../error-catalogue.js';

export const AGENT_CA_SECRET = 'agent-ca';
const DAY_MS = 86_400_000;

const stored = z.object({ privateKeyPem: z.string().includes('PRIVATE KEY'), certificatePem: z.string().includes('CERTIFICATE') });

/** An agent certificate as the CA sees it after checking it. */
export interface AgentIdentity {
  readonly instanceId: string;
  readonly fingerprintSha256: string;
  readonly serialNumber: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** The agent's key, parsed once: what the channel's signature check uses (never re-encoded: OpenSSL 3's encoders cost as much as the parse). */
  readonly publicKey: KeyObject;
}

export class AgentCa {
  private constructor(
    private readonly key: KeyPair,
    private readonly subject: string,
    /** PEM of the CA certificate: what agents need to recognise it, never secret. */
    readonly certificatePem: string,
    private readonly certificate: X509Certificate,
  ) {}

  /** Loads the CA from the secret store, creating it on first use (replicas converge on one CA). */
  static async loadOrCreate(secrets: SecretStore, now: Date = new Date()): Promise<AgentCa> {
    const existing = await secrets.get(AGENT_CA_SECRET);
    const raw = existing ?? (await secrets.createIfMissing(AGENT_CA_SECRET, await AgentCa.#generate(now)));
    const parsed = stored.safeParse(safeJson(raw));
    if (!parsed.success) {
      throw new CertplaneError(ErrorCode.AGENT_CA_CORRUPT, `secret "${AGENT_CA_SECRET}" does not hold an agent CA (JSON with privateKeyPem and certificatePem)`);
    }
    const key = await importEcdsaKeyPair(parsed.data.privateKeyPem);
    const certificate = new X509Certificate(parsed.data.certificatePem);
    return new AgentCa(key, parseCertificateBundle(parsed.data.certificatePem)[0]!.subject, certificate.toString(), certificate);
  }

  static async #generate(now: Date): Promise<string> {
    const key = await generateKeyPair('ecdsa-p256');
    const cert = await issueCertificate({
      subject: `CN=certplane agent CA ${sha256Hex(Buffer.from(key.publicKeyPem)).slice(0, 8)}`,
      key,
      ca: true,
      pathLength: 0,
      notBefore: new Date(now.getTime() - DAY_MS),
      notAfter: new Date(now.getTime() + 10 * 365 * DAY_MS),
    });
    return JSON.stringify({ privateKeyPem: key.privateKeyPem, certificatePem: cert.pem });
  }

  /** Signs an agent certificate for `instanceId` over the key of the agent's identity CSR. */
  async issue(instanceId: string, csr: ParsedCsr, now: Date, validityDays = 90): Promise<{ certificatePem: string; identity: AgentIdentity }> {
    if (csr.keyDescription !== 'ECDSA P-256') {
      throw new CertplaneError(ErrorCode.ENROLLMENT_KEY_UNSUPPORTED, `agent identity keys are ECDSA P-256 (what certplane agent makes); this CSR has ${csr.keyDescription}`);
    }
    const publicKeyPem = publicKeyPemOfCsr(csr);
    const agentKey = { keys: { publicKey: await importPublicKey(publicKeyPem) }, publicKeyPem } as unknown as KeyPair;
    const cert = await issueCertificate({
      subject: `CN=${instanceId}, OU=certplane-agent`,
      key: agentKey,
      issuer: { subject: this.subject, key: this.key },
      ca: false,
      keyUsage: ['digitalSignature'],
      extendedKeyUsage: [EKU.clientAuth],
      notBefore: new Date(now.getTime() - 5 * 60_000),
      notAfter: new Date(now.getTime() + validityDays * DAY_MS),
    });
    return { certificatePem: cert.pem, identity: this.verify(cert.pem, now) };
  }

  /**
   * Checks that `certificatePem` is an unexpired agent certificate signed by this CA; returns who it names.
   * Run for every channel authentication, so a reconnect storm of a whole fleet passes here:
   * node:crypto's one decode and one signature check, and nothing else. The chain engine's
   * parse (its extensions read strictly, memoised by DER) is for chains a CA sent; agent
   * certificates are this CA's own, each seen once per connection, and would only push the
   * chains' intermediates and roots out of that memo.
   */
  verify(certificatePem: string, now: Date): AgentIdentity {
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(certificatePem);
    } catch (error) {
      throw new CertplaneError(ErrorCode.CHAIN_UNPARSABLE_CERTIFICATE, `agent certificate: not a certificate (${(error as Error).message})`);
    }
    if (cert.issuer !== this.certificate.subject || !cert.verify(this.certificate.publicKey)) {
      throw new CertplaneError(ErrorCode.AGENT_CERT_UNKNOWN_ISSUER, 'the agent certificate was not issued by this management plane\'s agent CA');
    }
    const notBefore = new Date(cert.validFrom);
    const notAfter = new Date(cert.validTo);
    if (now < notBefore || now > notAfter) {
      throw new CertplaneError(ErrorCode.AGENT_CERT_EXPIRED, `the agent certificate is not valid now (valid ${notBefore.toISOString()} to ${notAfter.toISOString()}); enroll again`);
    }
    const instanceId = commonNameOf(cert.subject);
    if (!instanceId) throw new CertplaneError(ErrorCode.AGENT_CERT_UNKNOWN_ISSUER, 'the agent certificate names no instance');
    return {
      instanceId,
      fingerprintSha256: cert.fingerprint256.replaceAll(':', '').toLowerCase(),
      serialNumber: derSerialHex(cert.serialNumber),
      notBefore,
      notAfter,
      publicKey: cert.publicKey,
    };
  }
}

/**
 * The serial as the chain engine writes it (the DER INTEGER's content octets in hex, as
 * stored with every agent certificate): node:crypto prints the number, without the leading
 * zero octet DER adds to a positive serial whose high bit is set.
 */
export function derSerialHex(printed: string): string {
  let hex = printed.toLowerCase();
  if (hex.length % 2 === 1) hex = `0${hex}`;
  return Number.parseInt(hex.slice(0, 2), 16) >= 0x80 ? `00${hex}` : hex;
}

/** The CN of a subject as node:crypto prints it (one attribute a line); agent certificates carry exactly one. */
function commonNameOf(subject: string): string | undefined {
  const lines = subject.split('\n').filter((line) => line.startsWith('CN='));
  return lines.length === 1 ? lines[0]!.slice(3) : undefined;
}

function safeJson(raw: string): unknown {
  try {
    return JSON.parse(raw);
  } catch {
    return undefined;
  }
}

function publicKeyPemOfCsr(csr: ParsedCsr): string {
  return createPublicKey({ key: csr.publicKeySpkiDer, format: 'der', type: 'spki' }).export({ type: 'spki', format: 'pem' }).toString();
}

async function importPublicKey(publicKeyPem: string): Promise<webcrypto.CryptoKey> {
  const key = createPublicKey(publicKeyPem);
  const spki = key.export({ type: 'spki', format: 'der' });
  const algorithm = key.asymmetricKeyType === 'ec' ? { name: 'ECDSA', namedCurve: 'P-256' } : { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
  return webcrypto.subtle.importKey('spki', spki, algorithm, true, ['verify']);
}

async function importEcdsaKeyPair(privateKeyPem: string): Promise<KeyPair> {
  const privateKey = createPrivateKey(privateKeyPem);
  const pkcs8 = privateKey.export({ type: 'pkcs8', format: 'der' });
  const publicKeyPem = createPublicKey(privateKey).export({ type: 'spki', format: 'pem' }).toString();
  const algorithm = { name: 'ECDSA', namedCurve: 'P-256' };
  return {
    keys: {
      privateKey: await webcrypto.subtle.importKey('pkcs8', pkcs8, algorithm, true, ['sign']),
      publicKey: await importPublicKey(publicKeyPem),
    },
    privateKeyPem,
    publicKeyPem,
  };
}
