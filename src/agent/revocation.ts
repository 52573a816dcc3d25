/**
 * The agent's part in a revocation for key compromise: only the instance holds the
 * certificate's private key, and Let's Encrypt takes only a request signed by that key as
 * proof that it is compromised. The plane fetches the nonce and posts the request; the
 * agent signs. It builds the payload itself from the certificate and the reason, and signs
 * only for a certificate whose key it holds, so the plane can make it sign nothing but
 * "revoke this certificate of mine". The JWS comes from acme-client's own signing (the one
 * every ACME request of the plane goes through), with the key's JWK in the header as RFC
 * 8555 §7.6 asks for a request signed by the certificate key.
 */
import { X509Certificate } from 'node:crypto';
import acme from 'acme-client';
import type { RevocationJws, ServerMessage } from '../channel/protocol.js';
import { sha256Hex } from '../chain/index.js';
import { CertplaneError } from '../errors.js';
import { ErrorCode } from '../error-catalogue.js';

/** acme-client's JWS signer, on the client it builds for a key. */
interface JwsSigner {
  createSignedBody(url: string, payload: object, options: { nonce: string }): RevocationJws;
}

/**
 * Signs the revocation request the plane asked for with the certificate's own key, found by
 * `keyFor` (the SPKI SHA-256 of the certificate's public key, and the certificate's id).
 */
export async function signRevocation(
  request: Extract<ServerMessage, { type: 'revocation_sign' }>,
  keyFor: (spkiSha256: string, certificateId: string) => Promise<string | null>,
): Promise<RevocationJws> {
  let spkiSha256: string;
  try {
    spkiSha256 = sha256Hex(new X509Certificate(Buffer.from(request.certificate, 'base64url')).publicKey.export({ type: 'spki', format: 'der' }));
  } catch (cause) {
    throw new CertplaneError(ErrorCode.AGENT_REVOCATION_CERTIFICATE_INVALID, `the certificate to revoke does not parse: ${(cause as Error).message}`, {}, { cause });
  }
  const keyPem = await keyFor(spkiSha256, request.certificateId);
  if (keyPem === null) {
    throw new CertplaneError(ErrorCode.AGENT_REVOCATION_KEY_UNKNOWN, `this agent holds no key for certificate ${request.certificateId} (key sha256:${spkiSha256}): it was replaced or never installed here`, { certificateId: request.certificateId });
  }
  // A client object only for its signer: nothing here talks to the CA.
  const signer = (new acme.Client({ directoryUrl: request.url, accountKey: keyPem }) as unknown as { http: JwsSigner }).http;
  return signer.createSignedBody(request.url, { certificate: request.certificate, reason: request.reason }, { nonce: request.nonce });
}
