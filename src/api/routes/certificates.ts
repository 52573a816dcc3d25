/** Public chains and their verification reports; never anything private. */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import type { ApiDependencies } from '../app.js';
import { notFound } from '../errors.js';
import { requireCluster } from '../auth.js';
import { Certificate, IdParams, Problem } from '../schemas.js';
import { certificateView } from './views.js';

export function certificateRoutes(deps: ApiDependencies): FastifyPluginAsyncZod {
  return async (app) => {
    app.get(
      '/v1/certificates/:id',
      { config: { permission: 'read' }, schema: { summary: 'The public chain of a certificate and its verification report', tags: ['certificates'], params: IdParams, response: { 200: Certificate, 401: Problem, 403: Problem, 404: Problem } } },
      async (request) => {
        const certificate = await deps.store.certificates.get(request.params.id);
        if (!certificate) throw notFound(`certificate ${request.params.id}`);
        requireCluster(request.caller, (await deps.store.instances.get(certificate.instanceId))?.cluster ?? null, `certificate ${certificate.id}`);
        return certificateView(certificate);
      },
    );
  };
}
