/**
 * The vocabulary of chain verification. Every finding has a stable code so that the
 * CLI, the API and the agent can act on it (and tests can assert it) without parsing
 * prose; the message is for the person reading the report.
 */
import type { ErrorCode } from '../error-catalogue.js';

/** The catalogue's codes for what verification and selection find wrong with a chain. */
export type ChainFindingCode = Extract<ErrorCode, `CHAIN_${string}` | `SELECT_${string}`>;

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

/** One finding, located at a certificate when it is about one. */
export interface ChainProblem {
  readonly code: ChainFindingCode | BundleWarningCode;
  readonly message: string;
  /** Subject of the certificate concerned, when there is one. */
  readonly subject?: string;
  /** Position of that certificate in the input bundle, when it came from the bundle. */
  readonly bundleIndex?: number;
}
