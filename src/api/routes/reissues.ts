/**
 * On-call fleet reissue and re-chaining: one request, a persistent campaign, a status to
 * follow, a cancel. Who asked is taken from the X-Certplane-Actor header until client-certificate
 * authentication names callers (roadmap); why is the mandatory `reason`.
 */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { CertplaneError } from '../../errors.js';
import { Selector, unknownInstances, type CampaignStatus, type Campaigns } from '../../jobs/campaigns.js';
import type { Store } from '../../store/types.js';
import { findInScope, mayActOnCluster, requireCluster, type Caller } from '../auth.js';
import { IdParams, Problem, Text } from '../schemas.js';
import { ErrorCode } from '../../error-catalogue.js';
import { REISSUE_MODES, SKIP_REASONS } from '../../lifecycle/index.js';

const Mode = z
  .enum(REISSUE_MODES)
  .describe(
    '`reissue` (a new order for each instance), `rechain` (deliver a stored chain of the installed certificate that the trust in force selects: no order, no rate-limit budget; instances without one are reported as skipped) or `rechain-or-reissue` (a stored chain where one fits, a new order elsewhere)',
  );

const ReissueRequest = z.strictObject({
  selector: Selector,
  reason: Text(1000),
  dryRun: z.boolean().default(false),
  mode: Mode.default('reissue'),
  rotateKey: z.boolean().optional().describe('true unless said; `false` is refused where an order may be placed, `true` with mode `rechain` (which keeps the certificate and its key)'),
});

const SkipReason = z.enum(SKIP_REASONS).describe('`current`: the installed chain is already the one selected; `no-alternate-chain`: no stored chain satisfies the preferences and profiles (a new order is needed); `no-installed-certificate`; `issuance-under-way`');
const PathCounts = z.object({
  reissue: z.number().int(),
  rechain: z.number().int(),
  skip: z.number().int(),
  skipReasons: z.record(z.string(), z.number().int()).describe('skipped instances by reason'),
});
const PlannedPath = z.object({
  instanceId: z.uuid(),
  path: z.enum(['reissue', 'rechain', 'skip']),
  chainIndex: z.number().int().optional().describe('the stored chain a rechain delivers'),
  reason: SkipReason.optional(),
});

const Counts = z.object({
  matched: z.number().int(),
  queued: z.number().int(),
  ordered: z.number().int(),
  installed: z.number().int(),
  failed: z.number().int().describe('instances whose job failed for good'),
  failedAttempts: z.number().int().describe('failed attempts over all instances, retried ones included'),
  failureReasons: z.record(z.string(), z.number().int()).describe('instances failed for good, by failure reason'),
  waitingForAgent: z.number().int(),
  cancelled: z.number().int(),
  rechained: z.number().int().describe('instances given a stored chain of their certificate (no order)'),
  skipped: z.number().int().describe('instances reported without being touched'),
  skippedReasons: z.record(z.string(), z.number().int()).describe('skipped instances by reason'),
});

const Campaign = z
  .object({
    id: z.uuid(),
    mode: Mode,
    state: z.enum(['running', 'done', 'cancelled']),
    reason: z.string(),
    requestedBy: z.string(),
    selector: z.unknown(),
    createdAt: z.iso.datetime(),
    finishedAt: z.iso.datetime().nullable(),
    counts: Counts,
    skipped: z.array(z.object({ instanceId: z.uuid(), reason: SkipReason })).describe('the first 1000 instances reported without being touched, and why'),
  })
  .meta({ id: 'Campaign' });

const DryRunResult = z.object({
  dryRun: z.literal(true),
  mode: Mode,
  matched: z.number().int(),
  instanceIds: z.array(z.uuid()).describe('the first 1000 matches'),
  paths: PathCounts,
  instances: z.array(PlannedPath).describe('the path of each of the first 1000 matches'),
  predictedSeconds: z.number().describe('how long the rate limiter predicts the new orders take'),
});
const CancelRequest = z.strictObject({ reason: Text(1000).default('cancelled') }).nullish();
const ActorHeaders = z.object({ 'x-certplane-actor': z.string().trim().min(1).max(200).optional() });

/** What the reissue routes use: the campaigns, and the instances and campaigns they touch (for the caller's scope). */
export interface ReissueRouteOptions {
  readonly store: Pick<Store, 'instances' | 'campaigns'>;
  readonly campaigns: Pick<Campaigns, 'start' | 'status' | 'cancel'>;
}

/**
 * A cluster-limited caller may only reissue its clusters: by cluster, or by ids of instances
 * in them. Ids of other clusters' instances get the answer unknown ids get.
 */
async function requireSelectorWithin(deps: ReissueRouteOptions, caller: Caller | undefined, selector: Selector): Promise<void> {
  if (!caller || caller.clusters === null) return;
  if ('cluster' in selector) return requireCluster(caller, selector.cluster, `cluster ${selector.cluster}`);
  if ('instanceIds' in selector) {
    const unreachable: string[] = [];
    for (const id of new Set(selector.instanceIds)) if (!mayActOnCluster(caller, (await deps.store.instances.get(id))?.cluster ?? null)) unreachable.push(id);
    if (unreachable.length > 0) throw unknownInstances(unreachable);
    return;
  }
  throw new CertplaneError(ErrorCode.AUTH_FORBIDDEN, `${caller.actor} is limited to clusters ${caller.clusters.join(', ')}: select by cluster or by instance ids`);
}

function campaignView({ campaign, counts, skipped }: CampaignStatus) {
  return {
    id: campaign.id,
    mode: campaign.mode,
    state: campaign.state,
    reason: campaign.reason,
    requestedBy: campaign.requestedBy,
    selector: campaign.selector,
    createdAt: campaign.createdAt.toISOString(),
    finishedAt: campaign.finishedAt ? campaign.finishedAt.toISOString() : null,
    counts,
    skipped: skipped.map((s) => ({ instanceId: s.instanceId, reason: s.skipReason ?? 'no-alternate-chain' })),
  };
}

export const reissueRoutes: FastifyPluginAsyncZod<ReissueRouteOptions> = async (app, deps) => {
  /** Throws NOT_FOUND unless the campaign exists and every cluster it touches is the caller's. */
  const requireCampaignInScope = async (caller: Caller | undefined, id: string) => {
    await findInScope(caller, `campaign ${id}`, await deps.store.campaigns.get(id), (campaign) => campaign.clusters ?? undefined);
  };
  app.post(
    '/v1/reissues',
    {
      config: { permission: 'operate' },
      schema: {
        summary: 'Reissue or re-chain part or all of the fleet: a dry run, or a persistent campaign (new orders go through the rate limiter; rechains order nothing)',
        tags: ['reissues'],
        headers: ActorHeaders,
        body: ReissueRequest,
        response: { 200: DryRunResult, 201: Campaign, 400: Problem, 401: Problem, 403: Problem, 404: Problem },
      },
    },
    async (request, reply) => {
      await requireSelectorWithin(deps, request.caller, request.body.selector);
      const result = await deps.campaigns.start({ ...request.body, actor: request.caller?.actor ?? 'unknown' });
      if ('dryRun' in result) {
        const instances = result.instances.map((p) => ({ instanceId: p.instanceId, path: p.path, ...(p.path === 'rechain' ? { chainIndex: p.chainIndex } : {}), ...(p.path === 'skip' ? { reason: p.reason } : {}) }));
        return reply.status(200).send({ ...result, instanceIds: [...result.instanceIds], instances });
      }
      return reply.status(201).send(campaignView(result));
    },
  );
  app.get(
    '/v1/reissues/:id',
    { config: { permission: 'read' }, schema: { summary: 'State and counts of a reissue campaign', tags: ['reissues'], params: IdParams, response: { 200: Campaign, 401: Problem, 403: Problem, 404: Problem } } },
    async (request) => {
      await requireCampaignInScope(request.caller, request.params.id);
      return campaignView(await deps.campaigns.status(request.params.id));
    },
  );
  app.post(
    '/v1/reissues/:id/cancel',
    { config: { permission: 'operate' }, schema: { summary: 'Cancel a campaign: queued jobs are dropped, orders under way finish', tags: ['reissues'], headers: ActorHeaders, params: IdParams, body: CancelRequest, response: { 200: Campaign, 401: Problem, 403: Problem, 404: Problem } } },
    async (request) => {
      await requireCampaignInScope(request.caller, request.params.id);
      return campaignView(await deps.campaigns.cancel(request.params.id, request.caller?.actor ?? 'unknown', request.body?.reason ?? 'cancelled'));
    },
  );
};
