/** Public chains and their verification reports; never anything private. */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import type { ApiDependencies } from '../app.js';
import { findInScope } from '../auth.js';
import { Certificate, IdParams, Problem } from '../schemas.js';
import { certificateView } from './views.js';

export function certificateRoutes(deps: ApiDependencies): FastifyPluginAsyncZod {
  return async (app) => {
    app.get(
      '/v1/certificates/:id',
      { config: { permission: 'read' }, schema: { summary: 'The public chain of a certificate and its verification report', tags: ['certificates'], params: IdParams, response: { 200: Certificate, 401: Problem, 403: Problem, 404: Problem } } },
      async (request) => {
        const certificate = await findInScope(request.caller, `certificate ${request.params.id}`, await deps.store.certificates.get(request.params.id), async (c) => {
          const instance = await deps.store.instances.get(c.instanceId);
          return instance && [instance.cluster];
        });
        return certificateView(certificate);
      },
    );
  };
}
