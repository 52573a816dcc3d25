/**
 * "Which instances break if clients lose root X?", answered before anything changes: the
 * fleet's stored chains judged under a trust change that has not been made. Read-only: it
 * touches no state, so a reader may ask, and a cluster-limited caller asks about its own
 * clusters only.
 */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { normalizeSpkiPin, parseCertificateBundle, type TrustChange } from '../../chain/index.js';
import { CertplaneError } from '../../errors.js';
import { ErrorCode } from '../../error-catalogue.js';
import { unknownInstances } from '../../jobs/campaigns.js';
import type { TrustEvaluation, WhatIfRow } from '../../jobs/trust.js';
import type { Store } from '../../store/types.js';
import { mayActOnCluster, requireCluster, type Caller } from '../auth.js';
import type { PageCursors } from '../cursors.js';
import { MAX_PAGE_SIZE, Problem } from '../schemas.js';

/** A trust store replacing a profile can be a whole distribution bundle (ca-certificates is about 220 KiB). */
const WHATIF_BODY_LIMIT_BYTES = 4 * 1024 * 1024;

const ProfileName = z.string().regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, 'must be a trust profile name');
const Pin = z.string().refine((pin) => normalizeSpkiPin(pin) !== undefined, 'must be a SHA-256 SPKI pin (64 hex digits, or sha256/BASE64)');

const WhatIfRequest = z.strictObject({
  change: z
    .strictObject({
      removeRoots: z.array(z.string().trim().min(1).max(200)).max(100).optional().describe('roots to take out, by subject CN or SHA-256 SPKI pin'),
      removeFromProfiles: z.array(ProfileName).min(1).max(100).optional().describe('the profiles to take them out of; all when absent'),
      distrustSpki: z.array(Pin).max(100).optional().describe('keys to add to the distrust list'),
      replaceProfiles: z.record(ProfileName, z.string().min(1)).optional().describe('profile name to the PEM text of the roots that replace it (a new name adds a profile)'),
      at: z.iso.datetime().optional().describe('judge at this time instead of now (expiries to come)'),
    })
    .default({}),
  selector: z
    .union([z.strictObject({ all: z.literal(true) }), z.strictObject({ cluster: z.string().min(1).max(200) }), z.strictObject({ instanceIds: z.array(z.uuid().transform((id) => id.toLowerCase())).min(1).max(10_000) })])
    .default({ all: true }),
  limit: z.number().int().min(1).max(MAX_PAGE_SIZE).default(100),
  cursor: z.string().max(300).optional(),
});

const WhatIfItem = z.object({
  instanceId: z.uuid(),
  name: z.string(),
  cluster: z.string().nullable(),
  certificateId: z.uuid().nullable(),
  outcome: z.enum(['verifies', 'alternate-chain', 'new-certificate', 'no-installed-certificate']).describe('verifies: the installed chain still verifies; alternate-chain: it does not, a stored chain of the same certificate does; new-certificate: neither'),
  brokenProfiles: z.array(z.string()),
  alternateChainIndex: z.number().int().nullable(),
});

const WhatIfAnswer = z
  .object({
    evaluatedAt: z.iso.datetime(),
    counts: z.object({
      instances: z.number().int(),
      verifies: z.number().int(),
      alternateChain: z.number().int(),
      newCertificate: z.number().int(),
      noInstalledCertificate: z.number().int(),
    }),
    items: z.array(WhatIfItem),
    nextCursor: z.string().nullable(),
  })
  .meta({ id: 'WhatIf' });

type WhatIfRequest = z.infer<typeof WhatIfRequest>;

/** What the what-if route uses: the evaluation, the instances a selector names (for the caller's scope), page cursors and the clock. */
export interface WhatIfRouteOptions {
  readonly store: Pick<Store, 'instances'>;
  readonly trustEvaluation: Pick<TrustEvaluation, 'whatIf'>;
  readonly cursors: Pick<PageCursors, 'open' | 'seal'>;
  readonly clock: () => Date;
}

/** Which instances the caller asks about, within what it may see: its clusters, a cluster of its own, or instances of its own. */
async function scopeOf(deps: WhatIfRouteOptions, caller: Caller | undefined, selector: WhatIfRequest['selector']): Promise<{ clusters: readonly string[] | null; instanceIds?: readonly string[] }> {
  const own = caller?.clusters ?? null;
  if ('cluster' in selector) {
    requireCluster(caller, selector.cluster, `cluster ${selector.cluster}`);
    return { clusters: [selector.cluster] };
  }
  if ('instanceIds' in selector) {
    const ids = [...new Set(selector.instanceIds)];
    const found = await Promise.all(ids.map((id) => deps.store.instances.get(id)));
    const unreachable = ids.filter((_, i) => !found[i] || !mayActOnCluster(caller, found[i]!.cluster));
    if (unreachable.length > 0) throw unknownInstances(unreachable);
    return { clusters: own, instanceIds: ids };
  }
  return { clusters: own };
}

function changeOf(change: WhatIfRequest['change']): TrustChange {
  const replaceProfiles = change.replaceProfiles && Object.fromEntries(Object.entries(change.replaceProfiles).map(([name, pem]) => [name, parseCertificateBundle(pem, `replaceProfiles.${name}`)]));
  return {
    ...(change.removeRoots ? { removeRoots: change.removeRoots } : {}),
    ...(change.removeFromProfiles ? { removeFromProfiles: change.removeFromProfiles } : {}),
    ...(change.distrustSpki ? { distrustSpki: change.distrustSpki } : {}),
    ...(replaceProfiles ? { replaceProfiles } : {}),
  };
}

function counts(rows: readonly WhatIfRow[]) {
  const of = (outcome: WhatIfRow['outcome']) => rows.filter((r) => r.outcome === outcome).length;
  return { instances: rows.length, verifies: of('verifies'), alternateChain: of('alternate-chain'), newCertificate: of('new-certificate'), noInstalledCertificate: of('no-installed-certificate') };
}

export const whatIfRoutes: FastifyPluginAsyncZod<WhatIfRouteOptions> = async (app, deps) => {
  app.post(
    '/v1/whatif',
    {
      bodyLimit: WHATIF_BODY_LIMIT_BYTES,
      config: { permission: 'read' },
      schema: {
        summary: 'Which instances a trust change would break, which a stored chain rescues, which need a new certificate; changes nothing',
        tags: ['trust'],
        body: WhatIfRequest,
        response: { 200: WhatIfAnswer, 400: Problem, 401: Problem, 403: Problem, 404: Problem },
      },
    },
    async (request) => {
      const { change, selector, limit, cursor } = request.body;
      const scope = await scopeOf(deps, request.caller, selector);
      const at = change.at ? new Date(change.at) : deps.clock();
      const { evaluatedAt, rows } = await deps.trustEvaluation.whatIf(changeOf(change), scope, at);
      let start = 0;
      if (cursor !== undefined) {
        const after = deps.cursors.open(cursor, request.caller);
        start = rows.findIndex((row) => row.instanceId === after) + 1;
        if (start === 0) throw new CertplaneError(ErrorCode.STORE_INVALID_CURSOR, 'The page cursor names an instance this what-if does not cover; ask with the same selector, or omit the cursor to start from the first page.');
      }
      const items = rows.slice(start, start + limit);
      const last = items.at(-1);
      return {
        evaluatedAt: evaluatedAt.toISOString(),
        counts: counts(rows),
        items: items.map((row) => ({ ...row, brokenProfiles: [...row.brokenProfiles] })),
        nextCursor: start + limit < rows.length && last ? deps.cursors.seal(last.instanceId, request.caller) : null,
      };
    },
  );
};
