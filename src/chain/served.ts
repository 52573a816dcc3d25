/**
 * What an instance's service really serves, judged against what was installed there. In
 * 2021 a second, stale certificate store kept serving the old chain after the files were
 * fixed: "installed" said nothing about "served". The agent connects to its own service and
 * reports the certificates it was handed; this judges them. Pure: the observations, the
 * installed leaf, the profiles and the time are all arguments. Observations come from the
 * agent and are untrusted: certificates arrive as DER bytes and are fingerprinted before
 * anything parses them, and a certificate that does not parse is a finding, never a throw.
 */
import { parseCertificateDer, sha256Hex, type Certificate } from './certificate.js';
import { failedProfiles, verifyInProfiles, type TrustProfile } from './profiles.js';
import type { VerifyOptions } from './verify.js';
import { ErrorCode } from '../error-catalogue.js';

/**
 * `match`: every probe saw the installed leaf on a chain that verifies in every profile of
 * the instance; `stale`: some probe saw another leaf; `wrong-chain`: the installed leaf on a
 * chain that does not verify in some profile; `unreachable`: some probe could not complete a
 * TLS handshake; `unchecked`: no probe report yet.
 */
export const SERVED_STATUSES = ['match', 'stale', 'wrong-chain', 'unreachable', 'unchecked'] as const;
export type ServedStatus = (typeof SERVED_STATUSES)[number];

/** One TLS connection the agent made to its service: the certificates it was handed (leaf first), or why it got none. */
export type ServedObservation =
  | { readonly target: string; readonly sni: string | null; readonly certificates: readonly Buffer[] }
  | { readonly target: string; readonly sni: string | null; readonly unreachable: { readonly code: string; readonly message: string } };

/** A finding about one probe, as stored and shown. */
export interface ServedProblem {
  readonly target: string;
  readonly sni: string | null;
  readonly code: string;
  readonly message: string;
}

export interface ServedJudgement {
  readonly status: Exclude<ServedStatus, 'unchecked'>;
  /** SHA-256 of the served leaf the status is about (the first probe with the worst finding), or null when no probe got one. */
  readonly fingerprintSha256: string | null;
  /** CN of the root the served chain verifies to, in the first profile of the instance where it does; null when it verifies nowhere. */
  readonly anchor: string | null;
  /** One entry per finding, probes in the order given. */
  readonly problems: readonly ServedProblem[];
}

/** Worst first: a wrong certificate is worse than a wrong chain, which is worse than not knowing. */
const SEVERITY: Readonly<Record<ServedJudgement['status'], number>> = { stale: 3, 'wrong-chain': 2, unreachable: 1, match: 0 };

/**
 * Judges what the probes saw against the installed leaf (its SHA-256, null when nothing is
 * installed) for an instance whose clients use `instanceProfiles` (names) out of `profiles`.
 * The status is the worst over all probes: one endpoint still on the old certificate is
 * enough to call the instance stale.
 */
export function judgeServed(
  observations: readonly ServedObservation[],
  installedFingerprintSha256: string | null,
  instanceProfiles: readonly string[],
  profiles: readonly TrustProfile[],
  options: Omit<VerifyOptions, 'trustAnchors' | 'hostnames' | 'expectedSpkiSha256'>,
): ServedJudgement {
  const own = instanceProfiles.flatMap((name) => profiles.filter((p) => p.name === name));
  const problems: ServedProblem[] = [];
  let worst: { status: ServedJudgement['status']; fingerprint: string | null; anchor: string | null } | undefined;
  let anchor: string | null = null;
  const note = (status: ServedJudgement['status'], fingerprint: string | null, chainAnchor: string | null) => {
    if (!worst || SEVERITY[status] > SEVERITY[worst.status]) worst = { status, fingerprint, anchor: chainAnchor };
  };
  for (const observation of observations) {
    const where = { target: observation.target, sni: observation.sni };
    if ('unreachable' in observation) {
      problems.push({ ...where, code: ErrorCode.SERVED_UNREACHABLE, message: `no TLS handshake: ${observation.unreachable.code}: ${observation.unreachable.message}` });
      note('unreachable', null, null);
      continue;
    }
    const [leafDer] = observation.certificates;
    if (!leafDer) {
      problems.push({ ...where, code: ErrorCode.SERVED_UNREACHABLE, message: 'the handshake completed without a server certificate' });
      note('unreachable', null, null);
      continue;
    }
    // Fingerprinted from the bytes: a leaf that does not even parse is still not the installed one.
    const fingerprint = sha256Hex(leafDer);
    if (fingerprint !== installedFingerprintSha256) {
      const message = installedFingerprintSha256 === null
        ? `serves certificate ${fingerprint}, while certplane installed none on this instance`
        : `serves certificate ${fingerprint}, not the installed ${installedFingerprintSha256}: the service did not load the installed files (its reload did nothing, or another store serves)`;
      problems.push({ ...where, code: ErrorCode.SERVED_STALE, message });
      note('stale', fingerprint, null);
      continue;
    }
    const chain: Certificate[] = [];
    const unparsable = observation.certificates.findIndex((der) => {
      try {
        chain.push(parseCertificateDer(der));
        return false;
      } catch {
        return true;
      }
    });
    if (unparsable >= 0) {
      problems.push({ ...where, code: ErrorCode.CHAIN_UNPARSABLE_CERTIFICATE, message: `served certificate ${unparsable + 1} is not a valid X.509 certificate` });
      note('wrong-chain', fingerprint, null);
      continue;
    }
    const verdicts = verifyInProfiles(chain, own, options);
    const failed = failedProfiles(verdicts, instanceProfiles);
    const chainAnchor = instanceProfiles.map((name) => verdicts[name]).find((v) => v?.ok)?.anchor ?? null;
    if (failed.length > 0) {
      for (const name of failed) {
        const errors = verdicts[name]?.errors ?? [];
        const detail = errors.length > 0 ? errors.map((e) => `${e.code}: ${e.message}`).join('; ') : 'the profile is not configured';
        problems.push({ ...where, code: ErrorCode.SERVED_CHAIN_UNVERIFIED, message: `the installed certificate is served on a chain that does not verify in profile "${name}": ${detail}` });
      }
      note('wrong-chain', fingerprint, chainAnchor);
      continue;
    }
    anchor ??= chainAnchor;
    note('match', fingerprint, chainAnchor);
  }
  if (!worst) {
    return { status: 'unreachable', fingerprintSha256: null, anchor: null, problems: [{ target: '-', sni: null, code: ErrorCode.SERVED_UNREACHABLE, message: 'the report held no probe' }] };
  }
  const settled = worst as { status: ServedJudgement['status']; fingerprint: string | null; anchor: string | null };
  return { status: settled.status, fingerprintSha256: settled.fingerprint, anchor: settled.status === 'match' ? anchor : settled.anchor, problems };
}

/**
 * A stored judgement as it stands for the certificate installed now. A judgement made
 * before the installed certificate changed is about the previous one: if the leaf it saw is
 * not the one installed now, the service was last seen serving another certificate (stale)
 * until the agent's next probe says otherwise.
 */
export function servedStandingNow<T extends { status: ServedJudgement['status']; fingerprintSha256: string | null; problems: readonly ServedProblem[] }>(
  stored: T,
  installedFingerprintSha256: string | null,
): T | (T & { status: 'stale' }) {
  if (stored.status === 'unreachable' || stored.status === 'stale' || stored.fingerprintSha256 === installedFingerprintSha256) return stored;
  return {
    ...stored,
    status: 'stale',
    problems: [
      ...stored.problems,
      {
        target: '-',
        sni: null,
        code: ErrorCode.SERVED_STALE,
        message: `the last probe saw certificate ${stored.fingerprintSha256}, and ${installedFingerprintSha256 ?? 'no certificate'} is installed since; the next probe tells whether the service loaded it`,
      },
    ],
  };
}
