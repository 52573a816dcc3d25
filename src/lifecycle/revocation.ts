/**
 * Why a certificate is revoked, as RFC 5280 §5.3.1 CRLReason codes under their names. People
 * and programs say the name; the CA receives the code (RFC 8555 §7.6). Only the reasons a
 * subscriber may give are here: Let's Encrypt refuses cACompromise, certificateHold,
 * removeFromCRL, privilegeWithdrawn and aACompromise from subscribers, and so does certplane,
 * before anything reaches the CA. Pure: no I/O.
 */

export const REVOCATION_REASONS = {
  /** None of the others applies (Let's Encrypt asks subscribers to send no other reason then). */
  unspecified: 0,
  /** The private key is, or may be, known to someone else. */
  keyCompromise: 1,
  /** The names or the organisation changed (a customer left, a hostname was given up). */
  affiliationChanged: 3,
  /** A new certificate replaces it (a rotation, a fix of its names). */
  superseded: 4,
  /** The service behind the names is gone (the instance was decommissioned). */
  cessationOfOperation: 5,
} as const satisfies Record<string, number>;

export type RevocationReasonName = keyof typeof REVOCATION_REASONS;

export const REVOCATION_REASON_NAMES = Object.keys(REVOCATION_REASONS) as [RevocationReasonName, ...RevocationReasonName[]];

/**
 * Which key signed the revocation request. Let's Encrypt takes only `certificate-key` as proof
 * that the key is compromised (it then blocks the key and revokes every certificate sharing
 * it); `account-key` is honoured for the account's own certificates, whatever the reason.
 */
export type RevocationSigner = 'certificate-key' | 'account-key';

/** A revocation as recorded on the certificate and shown in the API: who, why, when, and which key signed. */
export interface RevocationRecord {
  readonly reason: RevocationReasonName;
  /** The RFC 5280 code the CA received. */
  readonly reasonCode: number;
  /** What the person who asked wrote, if anything. */
  readonly comment: string | null;
  readonly requestedBy: string;
  readonly at: string;
  readonly signedBy: RevocationSigner;
  /**
   * Why the certificate's key did not sign a keyCompromise revocation (the agent was not
   * connected, did not answer in time, or no longer holds the key): the code and message. Null otherwise.
   */
  readonly certificateKeyUnavailable: { readonly code: string; readonly message: string } | null;
  /** The CA said the certificate was already revoked (an earlier attempt got there before its record was written). */
  readonly alreadyRevokedAtCa: boolean;
}

/** The reason a subscriber gives for `reason`, and whether the certificate's own key should sign it. */
export function revocationReason(reason: RevocationReasonName): { readonly code: number; readonly wantsCertificateKey: boolean } {
  return { code: REVOCATION_REASONS[reason], wantsCertificateKey: reason === 'keyCompromise' };
}
