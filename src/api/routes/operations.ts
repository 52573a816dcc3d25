/** Liveness, readiness and Prometheus metrics, for the orchestrator and the monitoring. */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { Store } from '../../store/types.js';
import { sendExposition, type MetricsSource } from '../metrics.js';
import { Problem } from '../schemas.js';
import { sendProblem } from '../errors.js';
import { ErrorCode } from '../../error-catalogue.js';

const Health = z.object({ status: z.literal('ok') });

/** What the operations routes use: the database's reachability and the metrics. */
export interface OperationsRouteOptions {
  readonly store: Pick<Store, 'ping'>;
  readonly metrics: MetricsSource;
}

export const operationsRoutes: FastifyPluginAsyncZod<OperationsRouteOptions> = async (app, deps) => {
  app.get('/healthz', { schema: { summary: 'The process is alive', tags: ['operations'], security: [], response: { 200: Health } } }, async () => ({ status: 'ok' as const }));
  app.get('/readyz', { schema: { summary: 'The process can reach its database', tags: ['operations'], security: [], response: { 200: Health, 503: Problem } } }, async (_request, reply) => {
    try {
      await deps.store.ping();
      return { status: 'ok' as const };
    } catch (error) {
      sendProblem(reply, ErrorCode.NOT_READY, `database unreachable: ${(error as Error).message}`);
      return reply;
    }
  });
  app.get('/metrics', { config: { permission: 'read' }, schema: { summary: 'Prometheus metrics: this process\'s, and the fleet\'s from the database (a caller limited to clusters sees its clusters\' instances only)', tags: ['operations'] } }, async (request, reply) => {
    return sendExposition(reply, deps.metrics, request.headers['accept-encoding'], request.caller);
  });
};
