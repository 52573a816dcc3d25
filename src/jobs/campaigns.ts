/**
 * On-call reissue: one request names part or all of the fleet (by ids, by cluster, by an
 * intermediate or root their chains pass through, by a broken trust verdict, or everything)
 * and becomes a persistent campaign of jobs that the scheduler works through under the rate
 * limiter. Its mode says what each instance gets: a new order (`reissue`), a stored chain of
 * its certificate with no order at all (`rechain`, ./rechain.ts), or the rechain where one
 * fits and an order elsewhere. A dry run answers with what would be touched, by which path,
 * and how long the limiter predicts the orders take. Every campaign and cancellation is
 * recorded with who asked and why.
 */
import type { Logger } from 'pino';
import { z } from 'zod';
import { CertplaneError } from '../errors.js';
import { normalizeSpkiPin, parseCertificateBundle } from '../chain/index.js';
import type { CampaignCounts, CampaignInstance, CampaignRecord, InstanceRecord, Store } from '../store/index.js';
import type { ReissueMode, SkipReason } from '../lifecycle/index.js';
import { ErrorCode } from '../error-catalogue.js';
import type { PlannedPath, Rechains } from './rechain.js';

/** Which instances a campaign touches. */
export const Selector = z.union([
  z.strictObject({ instanceIds: z.array(z.uuid().transform((id) => id.toLowerCase())).min(1).max(10_000) }),
  z.strictObject({ cluster: z.string().min(1).max(200).regex(/^[^\p{Cc}]*$/u, 'must not contain control characters') }),
  z.strictObject({ chainIncludes: z.string().min(1).max(200).regex(/^[^\p{Cc}]*$/u, 'must not contain control characters').describe('a CN of an intermediate or root, or sha256:SPKI_HASH') }),
  z.strictObject({ trustBroken: z.literal(true).describe('instances whose installed chain the last trust evaluation found broken in a profile') }),
  z.strictObject({ all: z.literal(true) }),
]);
export type Selector = z.infer<typeof Selector>;

/** The refusal of a selector naming instances that do not exist (or, to a cluster-limited caller, that it cannot see: the same answer). */
export function unknownInstances(ids: readonly string[]): CertplaneError {
  return new CertplaneError(ErrorCode.NOT_FOUND, `no instance ${ids.slice(0, 5).join(', ')}${ids.length > 5 ? ` and ${ids.length - 5} more` : ''}`);
}

/** How many instances take each path, and why the skipped ones are skipped. */
export interface PathCounts {
  readonly reissue: number;
  readonly rechain: number;
  readonly skip: number;
  readonly skipReasons: Readonly<Partial<Record<SkipReason, number>>>;
}

export interface DryRun {
  readonly dryRun: true;
  readonly mode: ReissueMode;
  readonly matched: number;
  /** The first thousand matches; `matched` counts them all. */
  readonly instanceIds: readonly string[];
  readonly paths: PathCounts;
  /** The path of each of the first thousand matches. */
  readonly instances: readonly PlannedPath[];
  /** How long the limiter predicts the new orders (the reissue path) take. */
  readonly predictedSeconds: number;
}

export interface CampaignStatus {
  readonly campaign: CampaignRecord;
  readonly counts: CampaignCounts;
  /** The first thousand instances it reports without touching them. */
  readonly skipped: readonly CampaignInstance[];
}

/** What a dry run and a campaign show of each instance. */
const SHOWN = 1000;

const PAGE = 500;

export class Campaigns {
  constructor(
    private readonly deps: {
      store: Store;
      clock: () => Date;
      logger: Logger;
      /** How long `count` first-attempt orders take under the limiter (jobs/ratelimit.ts), in ms. */
      predictDurationMs?: (count: number) => Promise<number>;
      /** Told that jobs due now were queued, so this process's scheduler claims them without waiting for its next tick. */
      onQueued?: () => void;
      /** Plans the rechain paths; without it only `reissue` campaigns start. */
      rechains?: Pick<Rechains, 'plan'>;
    },
  ) {}

  /**
   * Starts a campaign, or answers a dry run. `rotateKey` (default: true for the paths that
   * order) must not be false where a new order may be placed, nor true for `rechain`, which
   * keeps the certificate and so its key.
   */
  async start(request: { selector: Selector; reason: string; dryRun: boolean; rotateKey?: boolean | undefined; mode?: ReissueMode | undefined; actor: string }): Promise<DryRun | CampaignStatus> {
    const mode = request.mode ?? 'reissue';
    if (mode === 'rechain' && request.rotateKey === true) {
      throw new CertplaneError(ErrorCode.REISSUE_RECHAIN_KEEPS_KEY, 'mode rechain delivers the same certificate on another stored chain, so its key stays: leave rotateKey out, or use mode rechain-or-reissue (new keys where a new order is placed)');
    }
    if (mode !== 'rechain' && request.rotateKey === false) {
      throw new CertplaneError(ErrorCode.REISSUE_KEY_REUSE_UNSUPPORTED, 'rotateKey=false is not supported: every certificate gets a fresh key made on the instance by its agent');
    }
    if (mode !== 'reissue' && !this.deps.rechains) throw new CertplaneError(ErrorCode.INTERNAL, 'this process plans no rechains');
    const matched = await this.match(request.selector);
    const ids = matched.map((instance) => instance.id);
    const planned = this.deps.rechains ? await this.deps.rechains.plan(mode, ids) : ids.map((instanceId): PlannedPath => ({ instanceId, path: 'reissue' }));
    const paths = countPaths(planned);
    if (request.dryRun) {
      const predicted = (await this.deps.predictDurationMs?.(paths.reissue)) ?? 0;
      return { dryRun: true, mode, matched: ids.length, instanceIds: ids.slice(0, SHOWN), paths, instances: planned.slice(0, SHOWN), predictedSeconds: Math.ceil(predicted / 1000) };
    }
    if (ids.length === 0) throw new CertplaneError(ErrorCode.REISSUE_NOTHING_MATCHED, 'the selector matches no instance; nothing to reissue');
    const campaign = await this.deps.store.campaigns.create({
      selector: request.selector,
      reason: request.reason,
      requestedBy: request.actor,
      rotateKey: mode !== 'rechain',
      mode,
      matched: ids.length,
      clusters: [...new Set(matched.map((instance) => instance.cluster))],
      paths: mode === 'reissue' ? [] : planned.map((p) => ({ instanceId: p.instanceId, path: p.path, skipReason: p.path === 'skip' ? p.reason : null, chainIndex: p.path === 'rechain' ? p.chainIndex : null })),
    });
    const jobs = planned.flatMap((plan) => (plan.path === 'skip' ? [] : [{ instanceId: plan.instanceId, kind: plan.path }]));
    await this.deps.store.jobs.enqueueCampaign(campaign.id, jobs, { dueAt: this.deps.clock(), reason: request.reason, requestedBy: request.actor });
    await this.deps.store.audit.record({ actor: request.actor, action: 'reissue.start', target: campaign.id, reason: request.reason, details: { selector: request.selector, mode, matched: ids.length, paths } });
    this.deps.logger.info({ campaignId: campaign.id, mode, matched: ids.length, paths, actor: request.actor, reason: request.reason }, `${mode} campaign started`);
    const status = await this.status(campaign.id);
    this.deps.onQueued?.();
    return status;
  }

  /** The campaign and its counts; a running campaign with nothing left to do is marked done. */
  async status(id: string): Promise<CampaignStatus> {
    let campaign = await this.deps.store.campaigns.get(id);
    if (!campaign) throw new CertplaneError(ErrorCode.NOT_FOUND, `campaign ${id} not found`);
    const counts = await this.deps.store.campaigns.counts(id);
    if (campaign.state === 'running' && counts.installed + counts.failed + counts.cancelled + counts.skipped >= counts.matched) {
      await this.deps.store.campaigns.finish(id, 'done', this.deps.clock());
      campaign = (await this.deps.store.campaigns.get(id)) ?? campaign;
    }
    return { campaign, counts, skipped: counts.skipped > 0 ? await this.deps.store.campaigns.skipped(id, SHOWN) : [] };
  }

  async cancel(id: string, actor: string, reason: string): Promise<CampaignStatus> {
    const campaign = await this.deps.store.campaigns.get(id);
    if (!campaign) throw new CertplaneError(ErrorCode.NOT_FOUND, `campaign ${id} not found`);
    const cancelled = await this.deps.store.jobs.cancelCampaign(id);
    await this.deps.store.campaigns.finish(id, 'cancelled', this.deps.clock());
    await this.deps.store.audit.record({ actor, action: 'reissue.cancel', target: id, reason, details: { jobsCancelled: cancelled } });
    return this.status(id);
  }

  /** The instances `selector` names, each once, in listing order. */
  async match(selector: Selector): Promise<InstanceRecord[]> {
    if ('instanceIds' in selector) {
      const ids = [...new Set(selector.instanceIds)];
      const found = await Promise.all(ids.map((id) => this.deps.store.instances.get(id)));
      const missing = ids.filter((_, i) => !found[i]);
      if (missing.length > 0) throw unknownInstances(missing);
      return found as InstanceRecord[];
    }
    const matches: InstanceRecord[] = [];
    const test = 'chainIncludes' in selector ? await this.#chainMatcher(selector.chainIncludes) : undefined;
    let cursor: string | undefined;
    do {
      const page = await this.deps.store.instances.list({ cursor, limit: PAGE });
      const broken = 'trustBroken' in selector ? await this.deps.store.trust.of(page.items.map((i) => i.id)) : undefined;
      for (const instance of page.items) {
        if (broken ? broken.get(instance.id)?.status === 'broken' : await this.#matches(selector, instance, test)) matches.push(instance);
      }
      cursor = page.nextCursor ?? undefined;
    } while (cursor);
    return matches;
  }

  async #matches(selector: Selector, instance: InstanceRecord, chainTest?: (instanceId: string) => Promise<boolean>): Promise<boolean> {
    if ('all' in selector) return true;
    if ('cluster' in selector) return instance.cluster === selector.cluster;
    return chainTest ? chainTest(instance.id) : false;
  }

  /** Matches an instance whose current certificate's chain passes through a CA named `value`, or whose key is `sha256:HASH`. */
  async #chainMatcher(value: string): Promise<(instanceId: string) => Promise<boolean>> {
    const pin = value.toLowerCase().startsWith('sha256:') ? normalizeSpkiPin(value.slice(7)) : undefined;
    if (value.toLowerCase().startsWith('sha256:') && !pin) throw new CertplaneError(ErrorCode.VALIDATION_FAILED, `chainIncludes: "${value}" is not sha256: followed by a SPKI SHA-256 (hex or base64)`);
    return async (instanceId) => {
      const current = await this.deps.store.certificates.latestInstalled(instanceId);
      if (!current?.fullchainPem) return false;
      const chain = parseCertificateBundle(current.fullchainPem);
      const anchor = (current.report as { anchor?: { subjectCN?: string; spkiSha256?: string } } | null)?.anchor;
      if (pin) return chain.slice(1).some((c) => c.spkiSha256 === pin) || anchor?.spkiSha256 === pin;
      return chain.slice(1).some((c) => c.subjectCN === value) || chain.some((c) => c.issuerCN === value) || anchor?.subjectCN === value;
    };
  }
}

function countPaths(planned: readonly PlannedPath[]): PathCounts {
  const skipReasons: Partial<Record<SkipReason, number>> = {};
  const counts = { reissue: 0, rechain: 0, skip: 0 };
  for (const plan of planned) {
    counts[plan.path] += 1;
    if (plan.path === 'skip') skipReasons[plan.reason] = (skipReasons[plan.reason] ?? 0) + 1;
  }
  return { ...counts, skipReasons };
}

/**
 * A dry run for people: what matched and how long the limiter predicts, then per path the
 * counts and one line per instance. A plain reissue reads as it always did.
 */
export function describeDryRun(result: Pick<DryRun, 'mode' | 'matched' | 'predictedSeconds' | 'paths' | 'instances'>): string[] {
  if (result.mode === 'reissue') return [`dry run: ${result.matched} instance(s) match; the rate limiter predicts about ${result.predictedSeconds} s`, ...result.instances.map((p) => p.instanceId)];
  const { paths } = result;
  const reasons = Object.entries(paths.skipReasons).sort(([a], [b]) => a.localeCompare(b)).map(([reason, count]) => `${reason} ${count}`);
  return [
    `dry run: ${result.matched} instance(s) match (mode ${result.mode}): ${paths.rechain} rechain (a stored chain, no order), ${paths.reissue} reissue (a new order), ${paths.skip} skipped${reasons.length > 0 ? ` (${reasons.join(', ')})` : ''}; the rate limiter predicts about ${result.predictedSeconds} s for the new orders`,
    ...result.instances.map((p) => `${p.instanceId}  ${p.path}${p.path === 'rechain' ? ` chain ${p.chainIndex}` : p.path === 'skip' ? ` ${p.reason}` : ''}`),
  ];
}
