/**
 * Trust profiles: the stores of the clients that connect to an instance (a current
 * browser, an older Windows server, a Java 8 client), each a named set of roots. A chain
 * is good for an instance only if it verifies in every profile its clients use, because
 * in 2021 the server's own store said "fine" while the clients' stores no longer held the
 * root. Pure: profiles, the distrust list and the evaluation time are all arguments, so the
 * same functions answer "what is" (a reload) and "what if" (a change not made yet).
 */
import type { Certificate } from './certificate.js';
import { normalizeSpkiPin } from './distrust.js';
import type { ChainProblem } from './problems.js';
import { chainVerdict, type VerifyOptions } from './verify.js';

/** One client trust store, by name. */
export interface TrustProfile {
  readonly name: string;
  readonly anchors: readonly Certificate[];
}

/** What one chain came to in one profile; serialises to JSON as is (stored per chain). */
export interface ProfileVerdict {
  readonly ok: boolean;
  /** CN of the root the chain verifies to in this profile, or null. */
  readonly anchor: string | null;
  /** Why it does not verify there (empty when ok). */
  readonly errors: readonly Pick<ChainProblem, 'code' | 'message'>[];
}

/** Verdicts of one chain, by profile name. */
export type ProfileVerdicts = Readonly<Record<string, ProfileVerdict>>;

/** Verifies `chain` (leaf first) in each profile. Never throws for a bad chain. */
export function verifyInProfiles(chain: readonly Certificate[], profiles: readonly TrustProfile[], options: Omit<VerifyOptions, 'trustAnchors'>): ProfileVerdicts {
  const verdicts: Record<string, ProfileVerdict> = {};
  for (const profile of profiles) {
    const verdict = chainVerdict(chain, { ...options, trustAnchors: profile.anchors });
    verdicts[profile.name] = { ok: verdict.ok, anchor: verdict.anchor?.subjectCN ?? null, errors: verdict.errors.map(({ code, message }) => ({ code, message })) };
  }
  return verdicts;
}

/** The names, in the order given, of the profiles `verdicts` does not pass; a profile without a verdict fails. */
export function failedProfiles(verdicts: ProfileVerdicts, names: readonly string[]): string[] {
  return names.filter((name) => verdicts[name]?.ok !== true);
}

/** One stored chain of a certificate: the chain the CA offered at `index`, and whether it is the one installed. */
export interface StoredChainInput {
  readonly index: number;
  readonly certificates: readonly Certificate[];
  readonly installed: boolean;
}

/** What a trust situation means for one installed certificate. */
export interface InstalledJudgement {
  /** `ok`: the installed chain verifies in every profile; `broken` otherwise. */
  readonly status: 'ok' | 'broken';
  /** Profiles the installed chain fails in, in the instance's order. */
  readonly brokenProfiles: readonly string[];
  /** A stored chain of the same certificate (same leaf, same key) that verifies in every profile, when the installed one does not; null when none does. */
  readonly alternateIndex: number | null;
  /** Every stored chain's verdicts in the profiles judged. */
  readonly verdicts: ReadonlyMap<number, ProfileVerdicts>;
}

/**
 * Judges an installed certificate's stored chains for an instance whose clients use
 * `instanceProfiles`: does the installed chain still verify in all of them, and if not, does
 * another stored chain of the same certificate. Verdicts are made in every one of `profiles`
 * (pass only the instance's when the others' are not wanted). A profile name the instance
 * lists that `profiles` lacks (removed from the configuration) counts as broken: nothing can
 * be known to verify there.
 */
export function judgeInstalled(chains: readonly StoredChainInput[], instanceProfiles: readonly string[], profiles: readonly TrustProfile[], options: Omit<VerifyOptions, 'trustAnchors'>): InstalledJudgement {
  const verdicts = new Map(chains.map((chain) => [chain.index, verifyInProfiles(chain.certificates, profiles, options)] as const));
  const installed = chains.find((chain) => chain.installed) ?? chains[0];
  const broken = installed ? failedProfiles(verdicts.get(installed.index) ?? {}, instanceProfiles) : [...instanceProfiles];
  if (broken.length === 0) return { status: 'ok', brokenProfiles: [], alternateIndex: null, verdicts };
  const leaf = installed?.certificates[0]?.fingerprintSha256;
  const alternate = chains.find(
    (chain) => chain !== installed && chain.certificates[0]?.fingerprintSha256 === leaf && failedProfiles(verdicts.get(chain.index) ?? {}, instanceProfiles).length === 0,
  );
  return { status: 'broken', brokenProfiles: broken, alternateIndex: alternate?.index ?? null, verdicts };
}

/** A change to trust that has not happened (yet): what a what-if evaluates. */
export interface TrustChange {
  /** Roots to take out, by subject CN or SHA-256 SPKI pin. */
  readonly removeRoots?: readonly string[];
  /** Profiles to take them out of; every profile when absent. */
  readonly removeFromProfiles?: readonly string[];
  /** Keys to add to the distrust list (SHA-256 SPKI pins). */
  readonly distrustSpki?: readonly string[];
  /** Profiles whose roots are replaced whole (a new ca-certificates release, a client's exported store); a new name adds a profile. */
  readonly replaceProfiles?: Readonly<Record<string, readonly Certificate[]>>;
}

/** The profiles and distrust list after `change`; the inputs are left as they are. */
export function applyTrustChange(
  profiles: readonly TrustProfile[],
  distrusted: ReadonlySet<string>,
  change: TrustChange,
): { profiles: TrustProfile[]; distrusted: ReadonlySet<string> } {
  const removals = (change.removeRoots ?? []).map((root) => ({ root, pin: normalizeSpkiPin(root) }));
  const removes = (anchor: Certificate) => removals.some(({ root, pin }) => anchor.subjectCN === root || (pin !== undefined && anchor.spkiSha256 === pin));
  const replaced = change.replaceProfiles ?? {};
  const names = [...profiles.map((p) => p.name), ...Object.keys(replaced).filter((name) => !profiles.some((p) => p.name === name))];
  const next = names.map((name): TrustProfile => {
    const anchors = Object.hasOwn(replaced, name) ? (replaced[name] as readonly Certificate[]) : (profiles.find((p) => p.name === name)?.anchors ?? []);
    const touched = change.removeFromProfiles === undefined || change.removeFromProfiles.includes(name);
    return { name, anchors: touched ? anchors.filter((anchor) => !removes(anchor)) : anchors };
  });
  const pins = (change.distrustSpki ?? []).map((pin) => normalizeSpkiPin(pin) ?? pin);
  return { profiles: next, distrusted: new Set([...distrusted, ...pins]) };
}
