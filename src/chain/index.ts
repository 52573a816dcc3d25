/**
 * The chain engine's public face. Pure functions over certificates: every other room
 * depends on this one, and this one depends on nothing but src/errors.ts.
 */
export {
  applyTrustChange,
  failedProfiles,
  judgeInstalled,
  verifyInProfiles,
  type InstalledJudgement,
  type ProfileVerdict,
  type ProfileVerdicts,
  type StoredChainInput,
  type TrustChange,
  type TrustProfile,
} from './profiles.js';
export { judgeServed, servedStandingNow, SERVED_STATUSES, type ServedJudgement, type ServedObservation, type ServedProblem, type ServedStatus } from './served.js';
export { authorityKeyIdentifier, certificateCacheSize, clearCertificateCache, parseCertificateDer, parseCertificateDerUnmemoised, sha256Hex, spkiSha256OfPublicKeyPem, type Certificate } from './certificate.js';
export { createCertificateScope, parseCertificateBundle, parsePemBlocks, sharedCertificateScope, type CertificateScope } from './pem.js';
export { parseCsr, KEY_ALGORITHMS, KEY_DESCRIPTIONS, type KeyAlgorithm, spkiSha256OfKeyFile, csrPemBytesFor, DEFAULT_MAX_NAMES_PER_CERTIFICATE, MAX_COMMON_NAME_BYTES, MAX_CSR_PEM_BYTES, ORDERED_CSR_LIMITS, type CsrLimits, type ParsedCsr } from './csr.js';
export { checkHostname, coveringParent, ipAddress, normaliseDnsName, MAX_DNS_NAME_LENGTH, type CheckedHostname } from './names.js';
export { chainVerdict, verifyChain, summarize, type ChainVerdict, type VerifyOptions, type VerificationReport, type CertificateSummary } from './verify.js';
export {
  selectChain,
  anchorsOfProfiles,
  requireSelection,
  topmostCertificate,
  type SelectOptions,
  type SelectionResult,
  type ChainAssessment,
  type FallbackPolicy,
} from './select.js';
export { explainReport, explainSelection } from './explain.js';
export { DEFAULT_DISTRUSTED_SPKI_SHA256, DST_ROOT_CA_X3_SPKI_SHA256, normalizeSpkiPin } from './distrust.js';
export { BundleWarningCode, type ChainFindingCode, type ChainProblem } from './problems.js';
