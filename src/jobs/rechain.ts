/**
 * Re-chaining: the same certificate and key on another chain the CA offered for it. Every
 * offered chain is kept with its certificate, so when trust changes the chain the trust in
 * force now selects (the issuance rule: preferences, then every trust profile of the
 * instance) can be delivered without the CA: no order, no rate-limit budget, seconds for a
 * fleet. The plan says which path each instance of a campaign takes (lifecycle/rechain.ts
 * decides from the facts gathered here); a rechain job creates the rechain record, which
 * the delivery machinery then sends and the agent acknowledges like any certificate.
 */
import type { Logger } from 'pino';
import { CertplaneError } from '../errors.js';
import { selectChain, anchorsOfProfiles, type TrustProfile, type VerificationReport } from '../chain/index.js';
import type { TrustSettings } from '../config/trust.js';
import { campaignPath, isOpen, type CampaignPath, type ReissueMode, type RechainFacts, type SkipReason } from '../lifecycle/index.js';
import type { CertificateRecord, InstalledChainsRecord, JobRecord, Store } from '../store/index.js';
import { ErrorCode } from '../error-catalogue.js';
import { storedChains } from './trust.js';

/** The chain a rechain would deliver: its stored index and its verified path. */
export interface RechainChoice {
  readonly chainIndex: number;
  readonly fullchainPem: string;
  readonly report: Omit<VerificationReport, 'servedChainPem'>;
  readonly anchorCN: string | null;
}

/** What was found for one instance: the facts the path is decided on, and the chain chosen when there is one to move to. */
interface Judged {
  readonly facts: RechainFacts;
  readonly installedId: string | null;
  readonly choice?: RechainChoice;
}

/** The path of one instance, as a dry run shows it and a campaign records it. */
export type PlannedPath = CampaignPath & { readonly instanceId: string };

const CODE_BY_REASON: Readonly<Record<Exclude<SkipReason, 'current'>, ErrorCode>> = {
  'no-alternate-chain': ErrorCode.RECHAIN_NO_SATISFYING_CHAIN,
  'no-installed-certificate': ErrorCode.RECHAIN_NO_INSTALLED_CERTIFICATE,
  'issuance-under-way': ErrorCode.RECHAIN_ISSUANCE_UNDER_WAY,
};

export class Rechains {
  constructor(
    private readonly deps: {
      store: Store;
      /** The trust settings in force now (config/trust.ts LiveTrust). */
      trust: { current(): TrustSettings };
      clock: () => Date;
      logger: Logger;
      /** Told that a rechain record waits for its agent, so the process holding the channel delivers it at once. */
      onRechained?: (certificate: CertificateRecord) => void;
    },
  ) {}

  /** The path `mode` gives each of `instanceIds`, judged under the trust in force now, in the order given. */
  async plan(mode: ReissueMode, instanceIds: readonly string[]): Promise<PlannedPath[]> {
    if (mode === 'reissue') return instanceIds.map((instanceId) => ({ instanceId, path: 'reissue' }));
    const judged = await this.#judge(instanceIds);
    return instanceIds.map((instanceId) => ({ instanceId, ...campaignPath(mode, judged.get(instanceId)?.facts ?? { installed: undefined, open: [], selection: undefined }) }));
  }

  /**
   * Runs a rechain job: judges the instance again (trust may have changed since the campaign
   * started) and creates its rechain record, audited; `current` when its installed chain is
   * already the one selected (nothing to do). A rechain that cannot happen throws a RECHAIN_
   * error, whose failure reason (RechainUnavailable) is permanent.
   */
  async run(job: Pick<JobRecord, 'id' | 'instanceId' | 'campaignId' | 'reason' | 'requestedBy'>): Promise<CertificateRecord | 'current'> {
    const judged = (await this.#judge([job.instanceId])).get(job.instanceId);
    const path = campaignPath('rechain', judged?.facts ?? { installed: undefined, open: [], selection: undefined });
    if (path.path === 'skip' && path.reason === 'current') return 'current';
    if (path.path !== 'rechain' || !judged?.choice || !judged.installedId) {
      const reason = path.path === 'skip' ? path.reason : 'no-alternate-chain';
      throw new CertplaneError(CODE_BY_REASON[reason as Exclude<SkipReason, 'current'>], rechainRefusalMessage(reason, job.instanceId), { instanceId: job.instanceId, reason });
    }
    const { choice } = judged;
    const certificate = await this.deps.store.certificates.createRechain({
      instanceId: job.instanceId,
      rechainedFromId: judged.installedId,
      chainIndex: choice.chainIndex,
      fullchainPem: choice.fullchainPem,
      anchorCN: choice.anchorCN,
      report: choice.report,
      jobId: job.id,
    });
    await this.deps.store.audit.record({
      actor: job.requestedBy,
      action: 'certificate.rechain',
      target: certificate.id,
      reason: job.reason,
      details: { instanceId: job.instanceId, rechainedFromId: judged.installedId, chainIndex: choice.chainIndex, anchor: choice.anchorCN, campaignId: job.campaignId, trustFingerprint: this.deps.trust.current().fingerprint },
    });
    this.deps.logger.info({ instanceId: job.instanceId, certificateId: certificate.id, rechainedFromId: judged.installedId, chainIndex: choice.chainIndex, anchor: choice.anchorCN }, 'certificate re-chained; delivering the stored chain (no order)');
    this.deps.onRechained?.(certificate);
    return certificate;
  }

  /** The facts about each instance, from two queries whatever their number, and the stored chain the trust in force selects. */
  async #judge(instanceIds: readonly string[]): Promise<Map<string, Judged>> {
    const settings = this.deps.trust.current();
    const at = this.deps.clock();
    const judged = new Map<string, Judged>();
    if (instanceIds.length === 0) return judged;
    const [records, latest] = await Promise.all([this.deps.store.trust.installed({ instanceIds }), this.deps.store.certificates.latestOf(instanceIds)]);
    for (const record of records) {
      const newest = latest.get(record.instance.id)?.latest;
      const open = newest && isOpen(newest.status) ? [newest.status] : [];
      if (!record.certificateId) {
        judged.set(record.instance.id, { facts: { installed: undefined, open, selection: undefined }, installedId: null });
        continue;
      }
      const { selection, choice } = select(record, settings, at);
      judged.set(record.instance.id, { facts: { installed: 'installed', open, selection }, installedId: record.certificateId, ...(choice ? { choice } : {}) });
    }
    return judged;
  }
}

/**
 * Which stored chain of an installed certificate the trust in force selects for its
 * instance, by the rule of issuance: `current` when it is the installed one, `none` when no
 * stored chain satisfies the preferences and every profile of the instance (a profile the
 * configuration no longer has satisfies nothing).
 */
function select(record: InstalledChainsRecord, settings: TrustSettings, at: Date): { selection: RechainFacts['selection']; choice?: RechainChoice } {
  const chains = storedChains(record);
  const profiles = record.instance.trustProfiles.map((name) => settings.profiles.find((p) => p.name === name));
  if (chains.length === 0 || profiles.some((p) => p === undefined)) return { selection: 'none' };
  const own = profiles as TrustProfile[];
  const result = selectChain(
    chains.map((chain) => chain.certificates),
    { preferences: settings.preferences, fallback: settings.fallback, trustAnchors: anchorsOfProfiles(own), distrustedSpkiSha256: settings.distrustedSpkiSha256, at, profiles: own },
  );
  const chosen = result.selected === null ? undefined : chains[result.selected];
  if (!chosen || !result.report) return { selection: 'none' };
  if (chosen.installed) return { selection: 'current' };
  const { servedChainPem, ...report } = result.report;
  return { selection: { alternateIndex: chosen.index }, choice: { chainIndex: chosen.index, fullchainPem: servedChainPem, report, anchorCN: result.report.anchor?.subjectCN ?? null } };
}

function rechainRefusalMessage(reason: SkipReason, instanceId: string): string {
  switch (reason) {
    case 'no-installed-certificate':
      return `instance ${instanceId} has no installed certificate to re-chain; reissue it`;
    case 'issuance-under-way':
      return `a certificate is under way for instance ${instanceId}; its chain is chosen under the trust in force, so there is nothing to re-chain`;
    default:
      return `no stored chain of the installed certificate of instance ${instanceId} satisfies the preferred roots and every trust profile of the instance now; only a new order helps (mode rechain-or-reissue, or reissue)`;
  }
}
