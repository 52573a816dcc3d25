/**
 * What trust changes do to the fleet. A reload (or an installation) re-judges installed
 * chains under the settings in use and stores the verdicts, so every process, the API and
 * the CLI show at once which instances a change broke; a what-if judges them under a change
 * not made yet and stores nothing. Both read every instance's stored chains in one snapshot
 * and judge them with the pure chain engine: no CA call, no agent. An installation's
 * judgement costs one read and one write; a stored chain's verdict is rewritten only when it
 * changed, or the settings did (the issuer stored it under the settings in force).
 */
import type { Logger } from 'pino';
import { applyTrustChange, createCertificateScope, judgeInstalled, sharedCertificateScope, type Certificate, type CertificateScope, type StoredChainInput, type TrustChange, type TrustProfile } from '../chain/index.js';
import type { LiveTrust } from '../config/trust.js';
import type { InstalledChainsRecord, InstanceTrustRecord, Store } from '../store/types.js';

/** Which instances: those of some clusters (null: all), or some instances. */
export interface TrustFilter {
  readonly clusters?: readonly string[] | null;
  readonly instanceIds?: readonly string[];
}

/** What a reload's re-evaluation found. */
export interface FleetTrustSummary {
  readonly evaluatedAt: Date;
  readonly trustFingerprint: string;
  /** Instances with an installed certificate, judged. */
  readonly evaluated: number;
  readonly ok: number;
  readonly broken: number;
  /** Broken instances with a stored chain of the same certificate that verifies. */
  readonly alternateAvailable: number;
  /** The broken instances (first 100), for the log and the admin console. */
  readonly brokenInstances: readonly { instanceId: string; brokenProfiles: readonly string[]; alternateChainIndex: number | null }[];
}

/** A what-if's answer for one instance. */
export type WhatIfOutcome = 'verifies' | 'alternate-chain' | 'new-certificate' | 'no-installed-certificate';

export interface WhatIfRow {
  readonly instanceId: string;
  readonly name: string;
  readonly cluster: string | null;
  readonly certificateId: string | null;
  readonly outcome: WhatIfOutcome;
  /** Profiles of the instance the installed chain would fail in. */
  readonly brokenProfiles: readonly string[];
  /** The stored chain that would still verify everywhere, for `alternate-chain`. */
  readonly alternateChainIndex: number | null;
}

const BROKEN_SHOWN = 100;
/** Up to this many instances, an evaluation parses through the plane's memo (sharedCertificateScope) rather than a scope of its own. */
const SHARED_MEMO_MAX_INSTANCES = 16;

export class TrustEvaluation {
  constructor(private readonly deps: { store: Store; trust: LiveTrust; clock: () => Date; logger: Logger }) {}

  /**
   * Re-judges the installed chains of the instances `filter` selects under the settings in
   * use, and stores each instance's verdict and each stored chain's verdict in every profile.
   */
  async evaluate(filter: TrustFilter = {}): Promise<FleetTrustSummary> {
    const settings = this.deps.trust.current();
    const at = this.deps.clock();
    const records = await this.deps.store.trust.installed(filter);
    // An installation's judgement (a few instances) parses through the plane's memo, where
    // the issuer left the same chains; a fleet's, through a scope of its own that it drops.
    const scope = filter.instanceIds && filter.instanceIds.length <= SHARED_MEMO_MAX_INSTANCES ? sharedCertificateScope : createCertificateScope();
    const instances: InstanceTrustRecord[] = [];
    const chains: { certificateId: string; index: number; verification: unknown; evaluatedAt: Date; trustFingerprint: string }[] = [];
    for (const record of records) {
      if (!record.certificateId) continue;
      const stored = storedChains(record, scope);
      const judged = judgeInstalled(stored, record.instance.trustProfiles, settings.profiles, { at, distrustedSpkiSha256: settings.distrustedSpkiSha256 });
      instances.push({
        instanceId: record.instance.id,
        certificateId: record.certificateId,
        status: judged.status,
        brokenProfiles: judged.brokenProfiles,
        alternateChainIndex: judged.alternateIndex,
        evaluatedAt: at,
        trustFingerprint: settings.fingerprint,
      });
      if (record.chains.length > 0) {
        for (const [index, verification] of judged.verdicts) chains.push({ certificateId: record.certificateId, index, verification, evaluatedAt: at, trustFingerprint: settings.fingerprint });
      }
    }
    await this.deps.store.trust.record(instances, chains);
    const broken = instances.filter((i) => i.status === 'broken');
    return {
      evaluatedAt: at,
      trustFingerprint: settings.fingerprint,
      evaluated: instances.length,
      ok: instances.length - broken.length,
      broken: broken.length,
      alternateAvailable: broken.filter((i) => i.alternateChainIndex !== null).length,
      brokenInstances: broken.slice(0, BROKEN_SHOWN).map(({ instanceId, brokenProfiles, alternateChainIndex }) => ({ instanceId, brokenProfiles, alternateChainIndex })),
    };
  }

  /**
   * Judges the instances `filter` selects as if `change` had been made, at `at` (now by
   * default): a row per instance, in creation order. Reads; never writes.
   */
  async whatIf(change: TrustChange, filter: TrustFilter, at: Date = this.deps.clock()): Promise<{ evaluatedAt: Date; rows: WhatIfRow[] }> {
    const settings = this.deps.trust.current();
    const changed = applyTrustChange(settings.profiles, settings.distrustedSpkiSha256, change);
    const records = await this.deps.store.trust.installed(filter);
    const byName = new Map(changed.profiles.map((p) => [p.name, p]));
    const scope = createCertificateScope();
    const rows = records.map((record): WhatIfRow => {
      const base = { instanceId: record.instance.id, name: record.instance.name, cluster: record.instance.cluster, certificateId: record.certificateId };
      if (!record.certificateId) return { ...base, outcome: 'no-installed-certificate', brokenProfiles: [], alternateChainIndex: null };
      const own = record.instance.trustProfiles.flatMap((name) => byName.get(name) ?? []) as TrustProfile[];
      const judged = judgeInstalled(storedChains(record, scope), record.instance.trustProfiles, own, { at, distrustedSpkiSha256: changed.distrusted });
      const outcome: WhatIfOutcome = judged.status === 'ok' ? 'verifies' : judged.alternateIndex !== null ? 'alternate-chain' : 'new-certificate';
      return { ...base, outcome, brokenProfiles: judged.brokenProfiles, alternateChainIndex: judged.alternateIndex };
    });
    return { evaluatedAt: at, rows };
  }
}

/**
 * The stored chains of an installed certificate, parsed in the evaluation's scope, so a
 * fleet's shared intermediates and each certificate's leaf are parsed once per evaluation,
 * whatever the size of the fleet. A certificate from before chains were
 * stored has one known chain: its installed path. A chain that no longer parses is judged
 * as an empty chain, which verifies nowhere.
 */
export function storedChains(record: InstalledChainsRecord, scope: CertificateScope = createCertificateScope()): StoredChainInput[] {
  const parse = (pem: string): Certificate[] => {
    try {
      return scope.bundle(pem, 'stored chain');
    } catch {
      return [];
    }
  };
  if (record.chains.length === 0) return record.fullchainPem ? [{ index: 0, certificates: parse(record.fullchainPem), installed: true }] : [];
  return record.chains.map((chain) => ({ index: chain.index, certificates: parse(chain.pem), installed: chain.selected }));
}
