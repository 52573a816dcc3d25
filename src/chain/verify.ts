/**
 * Builds and verifies the path leaf -> intermediates -> trust anchor, and judges it
 * against the policy that matters for a TLS server certificate. Pure: the time of
 * evaluation, the trust anchors and the distrust list are all arguments.
 *
 * Path building is "trusted first" (as OpenSSL 1.1+ and browsers do): at each step a
 * trust anchor that signed the current certificate ends the path before any bundled
 * certificate is tried. Every candidate path is judged, and the first that passes wins;
 * when none passes, the first one's findings are reported, so the report explains the
 * chain the CA actually offered rather than an arbitrary detour.
 */
import { EKU_ANY, EKU_SERVER_AUTH, KeyUsage, isSignedBy, signatureVerifies, type Certificate } from './certificate.js';
import { BundleWarningCode, type ChainProblem } from './problems.js';
import { ErrorCode } from '../error-catalogue.js';
import { ipAddress } from './names.js';

/** No real chain is longer; anything past this is a loop or an attack on the path builder. */
const MAX_PATH_CERTIFICATES = 8;
/** Cross-signs make paths branch; judging more than this many is never useful. */
const MAX_CANDIDATE_PATHS = 32;

export interface VerifyOptions {
  /** The roots a path may end at: the trust store that matters for the clients of this certificate. */
  readonly trustAnchors: readonly Certificate[];
  /** The time at which validity is judged. */
  readonly at: Date;
  /** Names the leaf must cover (usually the CSR's names). */
  readonly hostnames?: readonly string[];
  /** SPKI SHA-256 (hex) of the key the leaf must certify: the CSR's key. */
  readonly expectedSpkiSha256?: string;
  /** SPKI SHA-256 (hex) of keys no path may run through, roots or intermediates. */
  readonly distrustedSpkiSha256?: ReadonlySet<string>;
}

/** The facts about one certificate that a report shows a person. */
export interface CertificateSummary {
  readonly subject: string;
  readonly subjectCN: string;
  readonly issuer: string;
  readonly issuerCN: string;
  readonly serialNumber: string;
  readonly fingerprintSha256: string;
  readonly spkiSha256: string;
  readonly notBefore: string;
  readonly notAfter: string;
  /** Position in the input bundle; absent for trust anchors. */
  readonly bundleIndex?: number;
}

/** Everything the engine found about a bundle, in a form that serialises to JSON as is. */
export interface VerificationReport {
  /** True when a path to a trust anchor exists and no error was found on it. */
  readonly ok: boolean;
  readonly evaluatedAt: string;
  readonly leaf: CertificateSummary | null;
  /** The verified path without its anchor: leaf first. Empty when no path could be built. */
  readonly path: readonly CertificateSummary[];
  readonly anchor: CertificateSummary | null;
  readonly errors: readonly ChainProblem[];
  readonly warnings: readonly ChainProblem[];
  /** The leaf and the intermediates of the path, in order, PEM: what a server should send. */
  readonly servedChainPem: string;
}

interface CandidatePath {
  /** Leaf first, anchor excluded. */
  readonly certificates: readonly Certificate[];
  readonly anchor: Certificate;
}

/** Verifies `bundle` (leaf first, as served) against `options`. Never throws for a bad chain: it reports. */
export function verifyChain(bundle: readonly Certificate[], options: VerifyOptions): VerificationReport {
  const evaluatedAt = options.at.toISOString();
  const judged = judgeBundle(bundle, options);
  if (!judged.chosen) return failedReport(bundle, evaluatedAt, judged.errors, judged.leaf);
  const { leaf, leafIndex, chosen } = judged;
  const indexOf = (c: Certificate): number | undefined => {
    const i = bundle.findIndex((b) => b.fingerprintSha256 === c.fingerprintSha256);
    return i < 0 ? undefined : i;
  };
  return {
    ok: chosen.errors.length === 0,
    evaluatedAt,
    leaf: summarize(leaf, leafIndex),
    path: chosen.path.certificates.map((c) => summarize(c, indexOf(c))),
    anchor: summarize(chosen.path.anchor),
    errors: chosen.errors,
    warnings: bundleWarnings(bundle, chosen.path, options.trustAnchors),
    servedChainPem: chosen.path.certificates.map((c) => c.pem).join(''),
  };
}

/** What verifyChain decides, without the report around it. */
export interface ChainVerdict {
  readonly ok: boolean;
  /** The trust anchor of the path judged (the verified one when ok); null when no path was built. */
  readonly anchor: Certificate | null;
  readonly errors: readonly ChainProblem[];
}

/**
 * verifyChain's decision alone: the same paths, the same checks, the same errors, without
 * summaries, bundle warnings or the served PEM. A trust reload or a what-if judges every
 * stored chain of a fleet in every profile and keeps only this much.
 */
export function chainVerdict(bundle: readonly Certificate[], options: VerifyOptions): ChainVerdict {
  const judged = judgeBundle(bundle, options);
  if (!judged.chosen) return { ok: false, anchor: null, errors: judged.errors };
  return { ok: judged.chosen.errors.length === 0, anchor: judged.chosen.path.anchor, errors: judged.chosen.errors };
}

type BundleJudgement =
  | { readonly leaf: Certificate | undefined; readonly errors: ChainProblem[]; readonly chosen?: undefined }
  | { readonly leaf: Certificate; readonly leafIndex: number; readonly chosen: { readonly path: CandidatePath; readonly errors: ChainProblem[] } };

/** Builds the candidate paths and judges them until one passes; without a passing one, the first path is the one reported. */
function judgeBundle(bundle: readonly Certificate[], options: VerifyOptions): BundleJudgement {
  const leafIndex = findLeaf(bundle);
  if (leafIndex === undefined) {
    return { leaf: undefined, errors: [{ code: ErrorCode.CHAIN_NO_LEAF, message: 'no end-entity (non-CA) certificate leads the bundle; a served chain starts with the leaf' }] };
  }
  const leaf = bundle[leafIndex] as Certificate;
  const deadEnds: ChainProblem[] = [];
  const candidates = buildPaths(leaf, bundle, options.trustAnchors, deadEnds);
  if (candidates.length === 0) return { leaf, errors: uniqueProblems(deadEnds) };
  let first: { path: CandidatePath; errors: ChainProblem[] } | undefined;
  for (const path of candidates) {
    const judged = { path, errors: judgePath(path, options) };
    if (judged.errors.length === 0) return { leaf, leafIndex, chosen: judged };
    first ??= judged;
  }
  return { leaf, leafIndex, chosen: first as { path: CandidatePath; errors: ChainProblem[] } };
}

/** The leaf is the first certificate, unless that is a CA and exactly one non-CA certificate exists elsewhere. */
function findLeaf(bundle: readonly Certificate[]): number | undefined {
  if (bundle.length === 0) return undefined;
  if ((bundle[0] as Certificate).isCA !== true) return 0;
  const nonCA = bundle.flatMap((c, i) => (c.isCA === true ? [] : [i]));
  return nonCA.length === 1 ? nonCA[0] : undefined;
}

function buildPaths(leaf: Certificate, bundle: readonly Certificate[], anchors: readonly Certificate[], deadEnds: ChainProblem[]): CandidatePath[] {
  const found: CandidatePath[] = [];
  const walk = (current: Certificate, chain: Certificate[]): void => {
    if (found.length >= MAX_CANDIDATE_PATHS) return;
    if (chain.length > MAX_PATH_CERTIFICATES) {
      deadEnds.push(problem(ErrorCode.CHAIN_PATH_TOO_LONG, current, `path exceeds ${MAX_PATH_CERTIFICATES} certificates`));
      return;
    }
    let nameMatches = 0;
    for (const anchor of anchors) {
      if (anchor.subject !== current.issuer) continue;
      nameMatches += 1;
      if (signatureVerifies(current, anchor)) found.push({ certificates: chain, anchor });
      else deadEnds.push(problem(ErrorCode.CHAIN_BAD_SIGNATURE, current, `trust anchor "${anchor.subjectCN}" has the issuer's name but did not sign "${current.subjectCN}"`));
    }
    for (const candidate of bundle) {
      if (candidate.subject !== current.issuer || chain.some((c) => c.fingerprintSha256 === candidate.fingerprintSha256)) continue;
      if (anchors.some((a) => a.fingerprintSha256 === candidate.fingerprintSha256)) continue;
      nameMatches += 1;
      if (!signatureVerifies(current, candidate)) {
        deadEnds.push(problem(ErrorCode.CHAIN_BAD_SIGNATURE, current, `"${candidate.subjectCN}" in the bundle has the issuer's name but did not sign "${current.subjectCN}"`));
        continue;
      }
      if (isSignedBy(candidate, candidate)) {
        deadEnds.push(problem(ErrorCode.CHAIN_UNTRUSTED_ROOT, candidate, `the path ends at root "${candidate.subjectCN}", which is not in the trust store`));
        continue;
      }
      walk(candidate, [...chain, candidate]);
    }
    if (nameMatches === 0) {
      const message = isSignedBy(current, current)
        ? `"${current.subjectCN}" is a self-signed root that is not in the trust store`
        : `no certificate in the bundle or trust store is named "${current.issuerCN}", the issuer of "${current.subjectCN}": an intermediate is missing or the root is not trusted`;
      deadEnds.push(problem(isSignedBy(current, current) ? ErrorCode.CHAIN_UNTRUSTED_ROOT : ErrorCode.CHAIN_MISSING_INTERMEDIATE, current, message));
    }
  };
  walk(leaf, [leaf]);
  return found;
}

function judgePath(path: CandidatePath, options: VerifyOptions): ChainProblem[] {
  const errors: ChainProblem[] = [];
  const all = [...path.certificates, path.anchor];
  const leaf = all[0] as Certificate;
  const at = options.at.getTime();
  for (const cert of all) {
    if (at > cert.notAfter.getTime()) errors.push(problem(ErrorCode.CHAIN_EXPIRED, cert, `"${cert.subjectCN}" expired at ${cert.notAfter.toISOString()}`));
    if (at < cert.notBefore.getTime()) errors.push(problem(ErrorCode.CHAIN_NOT_YET_VALID, cert, `"${cert.subjectCN}" is not valid before ${cert.notBefore.toISOString()}`));
    if (options.distrustedSpkiSha256?.has(cert.spkiSha256)) {
      errors.push(problem(ErrorCode.CHAIN_DISTRUSTED, cert, `"${cert.subjectCN}" (key sha256:${cert.spkiSha256}) is on the distrust list`));
    }
  }
  if (leaf.keyUsage !== undefined && (leaf.keyUsage & (KeyUsage.digitalSignature | KeyUsage.keyEncipherment)) === 0) {
    errors.push(problem(ErrorCode.CHAIN_KEY_USAGE, leaf, `the leaf's key usage allows neither digitalSignature nor keyEncipherment, so it cannot serve TLS`));
  }
  if (!leaf.extendedKeyUsage?.includes(EKU_SERVER_AUTH)) {
    errors.push(problem(ErrorCode.CHAIN_LEAF_EKU, leaf, `the leaf lacks the serverAuth extended key usage`));
  }
  all.slice(1).forEach((issuer, offset) => {
    const isAnchor = issuer === path.anchor;
    if (isAnchor ? issuer.isCA === false : issuer.isCA !== true) {
      errors.push(problem(ErrorCode.CHAIN_NOT_A_CA, issuer, `"${issuer.subjectCN}" issues certificates but is not a CA (basic constraints)`));
    }
    if (issuer.keyUsage !== undefined && (issuer.keyUsage & KeyUsage.keyCertSign) === 0) {
      errors.push(problem(ErrorCode.CHAIN_KEY_USAGE, issuer, `"${issuer.subjectCN}" issues certificates but its key usage lacks keyCertSign`));
    }
    const eku = issuer.extendedKeyUsage;
    if (eku !== undefined && !eku.includes(EKU_SERVER_AUTH) && !eku.includes(EKU_ANY)) {
      errors.push(problem(ErrorCode.CHAIN_EKU_EXCLUDES_SERVER_AUTH, issuer, `"${issuer.subjectCN}" restricts extended key usage to ${eku.join(', ')}, which excludes serverAuth`));
    }
    const intermediatesBelow = all.slice(1, offset + 1).filter((c) => !c.selfIssued).length;
    if (issuer.pathLength !== undefined && intermediatesBelow > issuer.pathLength) {
      errors.push(problem(ErrorCode.CHAIN_PATH_LENGTH_EXCEEDED, issuer, `"${issuer.subjectCN}" allows ${issuer.pathLength} intermediate(s) below it, the path has ${intermediatesBelow}`));
    }
  });
  const uncovered = (options.hostnames ?? []).filter((name) => !covers(leaf, name));
  if (uncovered.length > 0) {
    errors.push(problem(ErrorCode.CHAIN_HOSTNAME_MISMATCH, leaf, `the leaf does not cover ${uncovered.join(', ')} (it names ${[...leaf.dnsNames, ...leaf.ipAddresses].join(', ') || 'no DNS name'})`));
  }
  if (options.expectedSpkiSha256 !== undefined && options.expectedSpkiSha256.toLowerCase() !== leaf.spkiSha256) {
    errors.push(problem(ErrorCode.CHAIN_KEY_MISMATCH, leaf, `the leaf certifies key sha256:${leaf.spkiSha256}, not the requested key sha256:${options.expectedSpkiSha256}`));
  }
  return errors;
}

/**
 * Whether the leaf covers `name`, in one or two Set lookups. A wildcard request is covered
 * only by the same wildcard; a plain name by itself or by a wildcard standing for its whole
 * first label, over at least two further labels (RFC 6125 6.4.3 as OpenSSL applies it).
 * An IP address is covered only by the same address among the IP SANs (RFC 8738).
 * Partial-label wildcards (`db*.example.com`) cover nothing: the Baseline Requirements
 * forbid them. node's checkHost decodes every SAN on each call, so asking it about each of
 * N names of an N-name leaf costs N squared: 3,000 names took seconds of the event loop.
 */
function covers(leaf: Certificate, name: string): boolean {
  const address = ipAddress(name);
  if (address !== undefined) return leaf.ipAddresses.includes(address);
  const wanted = name.toLowerCase().replace(/\.$/, '');
  if (leaf.dnsNameSet.has(wanted)) return true;
  if (wanted.startsWith('*.')) return false;
  const dot = wanted.indexOf('.');
  const parent = wanted.slice(dot + 1);
  return dot > 0 && parent.includes('.') && leaf.dnsNameSet.has(`*.${parent}`);
}

function bundleWarnings(bundle: readonly Certificate[], path: CandidatePath, anchors: readonly Certificate[]): ChainProblem[] {
  const warnings: ChainProblem[] = [];
  const seen = new Set<string>();
  const used = new Set(path.certificates.map((c) => c.fingerprintSha256));
  bundle.forEach((cert, index) => {
    if (seen.has(cert.fingerprintSha256)) {
      warnings.push(problem(BundleWarningCode.DUPLICATE, cert, `"${cert.subjectCN}" appears more than once`, index));
      return;
    }
    seen.add(cert.fingerprintSha256);
    if (index > 0 && isSignedBy(cert, cert)) {
      const trusted = anchors.some((a) => a.fingerprintSha256 === cert.fingerprintSha256);
      warnings.push(problem(BundleWarningCode.ROOT_IN_BUNDLE, cert, `root "${cert.subjectCN}" is inside the bundle${trusted ? '' : ' and is not in the trust store'}; clients use their own roots`, index));
    } else if (!used.has(cert.fingerprintSha256)) {
      warnings.push(problem(BundleWarningCode.UNUSED_CERTIFICATE, cert, `"${cert.subjectCN}" is not on the verified path to "${path.anchor.subjectCN}"`, index));
    }
  });
  const positions = path.certificates.map((c) => bundle.findIndex((b) => b.fingerprintSha256 === c.fingerprintSha256));
  if (positions.some((position, i) => position !== i)) {
    warnings.push({ code: BundleWarningCode.WRONG_ORDER, message: `the bundle is not in leaf-to-root order (path uses bundle positions ${positions.join(', ')})` });
  }
  return warnings;
}

function failedReport(bundle: readonly Certificate[], evaluatedAt: string, errors: ChainProblem[], leaf?: Certificate): VerificationReport {
  return {
    ok: false,
    evaluatedAt,
    leaf: leaf ? summarize(leaf, bundle.indexOf(leaf)) : null,
    path: [],
    anchor: null,
    errors,
    warnings: [],
    servedChainPem: bundle.map((c) => c.pem).join(''),
  };
}

function uniqueProblems(problems: readonly ChainProblem[]): ChainProblem[] {
  const keys = new Set<string>();
  return problems.filter((p) => {
    const key = `${p.code}|${p.message}`;
    if (keys.has(key)) return false;
    keys.add(key);
    return true;
  });
}

function problem(code: ChainProblem['code'], cert: Certificate, message: string, bundleIndex?: number): ChainProblem {
  return bundleIndex === undefined ? { code, message, subject: cert.subject } : { code, message, subject: cert.subject, bundleIndex };
}

/** The JSON-friendly view of a certificate used by reports, the CLI and the API. */
export function summarize(cert: Certificate, bundleIndex?: number): CertificateSummary {
  const summary = {
    subject: cert.subject,
    subjectCN: cert.subjectCN,
    issuer: cert.issuer,
    issuerCN: cert.issuerCN,
    serialNumber: cert.serialNumber,
    fingerprintSha256: cert.fingerprintSha256,
    spkiSha256: cert.spkiSha256,
    notBefore: cert.notBefore.toISOString(),
    notAfter: cert.notAfter.toISOString(),
  };
  return bundleIndex === undefined ? summary : { ...summary, bundleIndex };
}
