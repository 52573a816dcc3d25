/**
 * Control-plane callers over real mutual TLS: client certificates as `certplane admin
 * register-client` would register them, and one request function that presents them.
 */
import { request } from 'node:https';
import { parseCertificateBundle } from '../../src/chain/index.js';
import { EKU, generateKeyPair, issueCertificate } from '../../src/pki/factory.js';

export interface ClientIdentity {
  readonly certPem: string;
  readonly keyPem: string;
  readonly fingerprint: string;
}

const DAY = 86_400_000;

/** A self-issued client certificate (the plane trusts thumbprints, not issuers), valid until `notAfter`. */
export async function clientCertificate(name: string, notAfter = new Date(Date.now() + 30 * DAY)): Promise<ClientIdentity> {
  const key = await generateKeyPair();
  const cert = await issueCertificate({ subject: `CN=${name}`, key, extendedKeyUsage: [EKU.clientAuth], notBefore: new Date(notAfter.getTime() - 60 * DAY), notAfter });
  return { certPem: cert.pem, keyPem: key.privateKeyPem, fingerprint: parseCertificateBundle(cert.pem)[0]!.fingerprintSha256 };
}

/** One HTTPS request to the plane at `base` (trusting `caPem`), presenting `identity` when given; JSON bodies parsed, text kept. */
export function callPlane(base: string, caPem: string, identity: ClientIdentity | undefined, method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = request(
      new URL(path, base),
      { method, ca: caPem, ...(identity ? { cert: identity.certPem, key: identity.keyPem } : {}), headers: data ? { 'content-type': 'application/json' } : {} },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString();
          let parsed: unknown = text;
          try {
            parsed = JSON.parse(text);
          } catch {
            /* metrics are text */
          }
          resolve({ status: res.statusCode ?? 0, body: parsed });
        });
      },
    );
    req.on('error', reject);
    req.end(data);
  });
}
