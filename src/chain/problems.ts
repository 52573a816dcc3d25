/**
 * The vocabulary of chain verification. Every finding has a stable code so that the
 * CLI, the API and the agent can act on it (and tests can assert it) without parsing
 * prose; the message is for the person reading the report.
 */

/** Findings that make a chain unusable. */
export const ChainErrorCode = {
  /** The input held no certificate at all. */
  EMPTY: 'CHAIN_EMPTY',
  /** Text that is not a PEM certificate block (or a DER blob that does not parse). */
  GARBAGE: 'CHAIN_GARBAGE',
  /** A private key inside a bundle that should carry only public material. */
  PRIVATE_KEY_IN_BUNDLE: 'CHAIN_PRIVATE_KEY_IN_BUNDLE',
  /** A PEM CERTIFICATE block whose contents are not a valid X.509 certificate. */
  UNPARSABLE_CERTIFICATE: 'CHAIN_UNPARSABLE_CERTIFICATE',
  /** No end-entity certificate could be identified in the bundle. */
  NO_LEAF: 'CHAIN_NO_LEAF',
  /** No issuer for some certificate in the bundle or trust store: an intermediate is missing. */
  MISSING_INTERMEDIATE: 'CHAIN_MISSING_INTERMEDIATE',
  /** The path ends at a self-signed root that is not in the trust store. */
  UNTRUSTED_ROOT: 'CHAIN_UNTRUSTED_ROOT',
  /** A certificate's issuer has the right name but did not sign it. */
  BAD_SIGNATURE: 'CHAIN_BAD_SIGNATURE',
  /** A certificate of the path is past its notAfter at the evaluation time. */
  EXPIRED: 'CHAIN_EXPIRED',
  /** A certificate of the path is before its notBefore at the evaluation time. */
  NOT_YET_VALID: 'CHAIN_NOT_YET_VALID',
  /** An issuing certificate is not a CA (basic constraints). */
  NOT_A_CA: 'CHAIN_NOT_A_CA',
  /** A CA's path length constraint is exceeded by the intermediates below it. */
  PATH_LENGTH_EXCEEDED: 'CHAIN_PATH_LENGTH_EXCEEDED',
  /** Key usage forbids what the certificate is used for (certificate signing, TLS). */
  KEY_USAGE: 'CHAIN_KEY_USAGE',
  /** The leaf lacks the serverAuth extended key usage. */
  LEAF_EKU: 'CHAIN_LEAF_EKU',
  /** A CA certificate's extended key usage excludes serverAuth: the May 2026 Generation Y cross-sign fault. */
  EKU_EXCLUDES_SERVER_AUTH: 'CHAIN_EKU_EXCLUDES_SERVER_AUTH',
  /** A requested hostname is not covered by the leaf's subject alternative names. */
  HOSTNAME_MISMATCH: 'CHAIN_HOSTNAME_MISMATCH',
  /** The leaf certifies another key than the one in the CSR. */
  KEY_MISMATCH: 'CHAIN_KEY_MISMATCH',
  /** The path runs through a root or CA whose key is on the distrust list. */
  DISTRUSTED: 'CHAIN_DISTRUSTED',
  /** The path would need more certificates than any real chain has. */
  PATH_TOO_LONG: 'CHAIN_PATH_TOO_LONG',
} as const;
export type ChainErrorCode = (typeof ChainErrorCode)[keyof typeof ChainErrorCode];

/** Findings about how the bundle is put together: reported, but the path may still verify. */
export const BundleWarningCode = {
  /** The certificates are not in leaf-to-root order. */
  WRONG_ORDER: 'BUNDLE_WRONG_ORDER',
  /** The same certificate appears more than once. */
  DUPLICATE: 'BUNDLE_DUPLICATE',
  /** A self-signed root is shipped inside the bundle; clients ignore it and it costs bytes. */
  ROOT_IN_BUNDLE: 'BUNDLE_ROOT_IN_BUNDLE',
  /** A certificate that the verified path does not use (e.g. a cross-sign toward another root). */
  UNUSED_CERTIFICATE: 'BUNDLE_UNUSED_CERTIFICATE',
} as const;
export type BundleWarningCode = (typeof BundleWarningCode)[keyof typeof BundleWarningCode];

/** Why chain selection passed over a chain that may verify perfectly well on its own. */
export const SelectionRejectCode = {
  /** The topmost certificate of the chain is issued by another root than the preference. */
  TOP_ISSUER_MISMATCH: 'SELECT_TOP_ISSUER_MISMATCH',
  /** The trust store has no root with the preferred name. */
  ROOT_NOT_TRUSTED: 'SELECT_ROOT_NOT_IN_TRUST_STORE',
  /** The chain does not verify in one of the trust profiles its instance's clients use. */
  PROFILE_UNSATISFIED: 'SELECT_PROFILE_UNSATISFIED',
} as const;
export type SelectionRejectCode = (typeof SelectionRejectCode)[keyof typeof SelectionRejectCode];

/** One finding, located at a certificate when it is about one. */
export interface ChainProblem {
  readonly code: ChainErrorCode | BundleWarningCode | SelectionRejectCode;
  readonly message: string;
  /** Subject of the certificate concerned, when there is one. */
  readonly subject?: string;
  /** Position of that certificate in the input bundle, when it came from the bundle. */
  readonly bundleIndex?: number;
}
