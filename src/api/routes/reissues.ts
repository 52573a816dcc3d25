/**
 * On-call fleet reissue: one request, a persistent campaign, a status to follow, a
 * cancel. Who asked is taken from the X-Certplane-Actor header until client-certificate
 * authentication names callers (roadmap); why is the mandatory `reason`.
 */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { CertplaneError } from '../../errors.js';
import { Selector, unknownInstances, type CampaignStatus } from '../../jobs/campaigns.js';
import { findInScope, mayActOnCluster, requireCluster, type Caller } from '../auth.js';
import type { ApiDependencies } from '../app.js';
import { IdParams, Problem, Text } from '../schemas.js';
import { ErrorCode } from '../../error-catalogue.js';

const ReissueRequest = z.strictObject({
  selector: Selector,
  reason: Text(1000),
  dryRun: z.boolean().default(false),
  rotateKey: z.boolean().default(true),
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
});

const Campaign = z
  .object({
    id: z.uuid(),
    state: z.enum(['running', 'done', 'cancelled']),
    reason: z.string(),
    requestedBy: z.string(),
    selector: z.unknown(),
    createdAt: z.iso.datetime(),
    finishedAt: z.iso.datetime().nullable(),
    counts: Counts,
  })
  .meta({ id: 'Campaign' });

const DryRunResult = z.object({ dryRun: z.literal(true), matched: z.number().int(), instanceIds: z.array(z.uuid()), predictedSeconds: z.number() });
const CancelRequest = z.strictObject({ reason: Text(1000).default('cancelled') }).nullish();
const ActorHeaders = z.object({ 'x-certplane-actor': z.string().trim().min(1).max(200).optional() });

/**
 * A cluster-limited caller may only reissue its clusters: by cluster, or by ids of instances
 * in them. Ids of other clusters' instances get the answer unknown ids get.
 */
async function requireSelectorWithin(deps: ApiDependencies, caller: Caller | undefined, selector: Selector): Promise<void> {
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

function campaignView({ campaign, counts }: CampaignStatus) {
  return {
    id: campaign.id,
    state: campaign.state,
    reason: campaign.reason,
    requestedBy: campaign.requestedBy,
    selector: campaign.selector,
    createdAt: campaign.createdAt.toISOString(),
    finishedAt: campaign.finishedAt ? campaign.finishedAt.toISOString() : null,
    counts,
  };
}

export function reissueRoutes(deps: ApiDependencies): FastifyPluginAsyncZod {
  /** Throws NOT_FOUND unless the campaign exists and every cluster it touches is the caller's. */
  const requireCampaignInScope = async (caller: Caller | undefined, id: string) => {
    await findInScope(caller, `campaign ${id}`, await deps.store.campaigns.get(id), (campaign) => campaign.clusters ?? undefined);
  };
  return async (app) => {
    app.post(
      '/v1/reissues',
      {
        config: { permission: 'operate' },
        schema: {
          summary: 'Reissue part or all of the fleet: a dry run, or a persistent, rate-limited campaign',
          tags: ['reissues'],
          headers: ActorHeaders,
          body: ReissueRequest,
          response: { 200: DryRunResult, 201: Campaign, 400: Problem, 401: Problem, 403: Problem, 404: Problem },
        },
      },
      async (request, reply) => {
        await requireSelectorWithin(deps, request.caller, request.body.selector);
        const result = await deps.campaigns.start({ ...request.body, actor: request.caller?.actor ?? 'unknown' });
        if ('dryRun' in result) return reply.status(200).send({ ...result, instanceIds: [...result.instanceIds] });
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
}
