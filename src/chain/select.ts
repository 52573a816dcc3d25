/**
 * Chooses among the chains an ACME server offers (RFC 8555 section 7.4.2) by where
 * each one verifies to, never by a name match alone. A chain is chosen for preference
 * P only if its topmost certificate is issued by a root named P AND the chain verifies
 * to a trust anchor named P in the configured store AND nothing on the way is
 * distrusted. When no chain fits any preference the selection fails closed, listing
 * every chain and why it was refused; the `default-chain` fallback exists for operators
 * who knowingly accept the CA's default, and the result says when it was used.
 */
import { CertplaneError } from '../errors.js';
import type { Certificate } from './certificate.js';
import { failedProfiles, verifyInProfiles, type ProfileVerdicts, type TrustProfile } from './profiles.js';
import { type ChainProblem } from './problems.js';
import { verifyChain, type VerificationReport, type VerifyOptions } from './verify.js';
import { ErrorCode } from '../error-catalogue.js';

export type FallbackPolicy = 'none' | 'default-chain';

export interface SelectOptions extends VerifyOptions {
  /** Root subject CNs, most preferred first. */
  readonly preferences: readonly string[];
  /** `none` (the default) fails closed; `default-chain` takes chain 0 if it verifies at all. */
  readonly fallback?: FallbackPolicy;
  /**
   * The trust profiles of the instance's clients: a chain is chosen only if it also verifies
   * in each of them (the fallback too). Absent: the trust store alone decides.
   */
  readonly profiles?: readonly TrustProfile[];
}

/** What the selection thought of one offered chain. */
export interface ChainAssessment {
  readonly index: number;
  /** Subject CN of the topmost (non-root) certificate's issuer: the root this chain points to. */
  readonly topIssuer: string;
  /** CN of the trust anchor the chain verifies to in the whole trust store, or null. */
  readonly anchor: string | null;
  /** Why the chain was not chosen (empty for the chosen one). */
  readonly errors: readonly ChainProblem[];
  /** Verification against the whole trust store. */
  readonly report: VerificationReport;
}

export interface SelectionResult {
  /** Index of the chosen chain, or null. */
  readonly selected: number | null;
  /** The preference it satisfied; null when none did (or the fallback was used). */
  readonly preference: string | null;
  /** True when the chosen chain satisfies no preference and came from the `default-chain` fallback. */
  readonly fallbackUsed: boolean;
  readonly chains: readonly ChainAssessment[];
  /** Verification of the chosen chain against the anchors of its preference; what gets delivered. */
  readonly report: VerificationReport | null;
  /** With `profiles`: their names and each chain's verdicts in them, by chain index. */
  readonly profiles?: { readonly names: readonly string[]; readonly verdicts: readonly ProfileVerdicts[] };
}

/** The topmost certificate a client receives, ignoring a self-signed root shipped in the bundle. */
export function topmostCertificate(chain: readonly Certificate[]): Certificate | undefined {
  const withoutRoots = chain.filter((c, i) => i === 0 || !c.selfIssued);
  return withoutRoots[withoutRoots.length - 1];
}

/** Assesses every chain and picks one; never throws (see `requireSelection`). */
export function selectChain(chains: readonly (readonly Certificate[])[], options: SelectOptions): SelectionResult {
  const reasons = chains.map(() => [] as ChainProblem[]);
  const fullReports = chains.map((chain) => verifyChain(chain, options));
  const names = options.profiles?.map((p) => p.name) ?? [];
  const verdicts = options.profiles ? chains.map((chain) => verifyInProfiles(chain, options.profiles as readonly TrustProfile[], options)) : [];
  const profiles = options.profiles ? { profiles: { names, verdicts } } : {};
  const profileProblems = (index: number): ChainProblem[] =>
    failedProfiles(verdicts[index] ?? {}, names).map((name) => ({
      code: ErrorCode.SELECT_PROFILE_UNSATISFIED,
      message: `does not verify in trust profile "${name}": ${verdicts[index]?.[name]?.errors.map((e) => e.message).join('; ') || 'no such profile'}`,
    }));
  const assess = (errorsOf: (i: number) => readonly ChainProblem[]): ChainAssessment[] =>
    chains.map((chain, index) => ({
      index,
      topIssuer: topmostCertificate(chain)?.issuerCN ?? '',
      anchor: fullReports[index]?.anchor?.subjectCN ?? null,
      errors: errorsOf(index),
      report: fullReports[index] as VerificationReport,
    }));

  for (const preference of options.preferences) {
    const anchors = options.trustAnchors.filter((a) => a.subjectCN === preference);
    for (const [index, chain] of chains.entries()) {
      const top = topmostCertificate(chain);
      const rejections = reasons[index] as ChainProblem[];
      if (!top || top.issuerCN !== preference) {
        rejections.push({
          code: ErrorCode.SELECT_TOP_ISSUER_MISMATCH,
          message: `for "${preference}": the topmost certificate "${top?.subjectCN ?? '?'}" is issued by "${top?.issuerCN ?? '?'}"`,
        });
        continue;
      }
      if (anchors.length === 0) {
        rejections.push({ code: ErrorCode.SELECT_ROOT_NOT_IN_TRUST_STORE, message: `for "${preference}": no root of that name is in the trust store` });
        continue;
      }
      const report = verifyChain(chain, { ...options, trustAnchors: anchors });
      const unsatisfied = profileProblems(index);
      if (report.ok && unsatisfied.length === 0) {
        return { selected: index, preference, fallbackUsed: false, chains: assess((i) => (i === index ? [] : (reasons[i] as ChainProblem[]))), report, ...profiles };
      }
      rejections.push(...[...report.errors, ...unsatisfied].map((e) => ({ ...e, message: `for "${preference}": ${e.message}` })));
    }
  }

  if (options.fallback === 'default-chain' && chains.length > 0 && fullReports[0]?.ok && profileProblems(0).length === 0) {
    return { selected: 0, preference: null, fallbackUsed: true, chains: assess((i) => (i === 0 ? [] : (reasons[i] as ChainProblem[]))), report: fullReports[0], ...profiles };
  }
  return { selected: null, preference: null, fallbackUsed: false, chains: assess((i) => reasons[i] as ChainProblem[]), report: null, ...profiles };
}

/**
 * The anchors a preference may be satisfied by for an instance whose clients use `profiles`:
 * any of their roots (each profile must still verify the chain, see SelectOptions.profiles),
 * once each. The same rule at issuance and when a stored chain is chosen again later.
 */
export function anchorsOfProfiles(profiles: readonly TrustProfile[]): Certificate[] {
  return [...new Map(profiles.flatMap((p) => p.anchors).map((a) => [a.fingerprintSha256, a])).values()];
}

/** Turns a failed selection into the error that stops issuance, listing every offered chain and why it was refused. */
export function requireSelection(result: SelectionResult, preferences: readonly string[]): { index: number; report: VerificationReport } {
  if (result.selected !== null && result.report) return { index: result.selected, report: result.report };
  if (result.profiles && result.profiles.verdicts.every((verdicts) => failedProfiles(verdicts, result.profiles?.names ?? []).length > 0)) throw profilesUnsatisfied(result.profiles);
  const lines = result.chains.map(
    (c) => `chain ${c.index} (top issuer "${c.topIssuer}", verifies to ${c.anchor ? `"${c.anchor}"` : 'nothing trusted'}): ${c.errors.map((e) => e.message).join('; ') || 'no reason recorded'}`,
  );
  throw new CertplaneError(
    ErrorCode.CHAIN_NO_PREFERRED_CHAIN,
    `no offered chain satisfies the preferred roots ${preferences.map((p) => `"${p}"`).join(', ')}; refusing to fall back to the default chain.\n${lines.join('\n')}`,
    { preferences, chains: result.chains.map(({ index, topIssuer, anchor, errors }) => ({ index, topIssuer, anchor, errors })) },
  );
}

/**
 * No offered chain verifies in every profile: a refusal that names, for each chain, the
 * profiles it fails in, since that is what an operator changes (the profile, or the CA's
 * chains are simply not trusted by those clients) and another order would get the same chains.
 */
function profilesUnsatisfied({ names, verdicts }: NonNullable<SelectionResult['profiles']>): CertplaneError {
  const chains = verdicts.map((v, index) => ({ index, failedProfiles: failedProfiles(v, names) }));
  const failing = [...new Set(chains.flatMap((c) => c.failedProfiles))];
  const lines = chains.map(({ index, failedProfiles: failed }) => `chain ${index} fails in ${failed.map((name) => `"${name}" (${verdicts[index]?.[name]?.errors.map((e) => e.message).join('; ') || 'no such profile'})`).join(', ')}`);
  return new CertplaneError(
    ErrorCode.CHAIN_PROFILE_UNSATISFIED,
    `no offered chain verifies in every trust profile of the instance (${names.map((n) => `"${n}"`).join(', ')}); failing: ${failing.map((n) => `"${n}"`).join(', ')}. Refusing to deliver a chain these clients reject.\n${lines.join('\n')}`,
    { profiles: failing, chains },
  );
}
