/** Enrollment: the only agent route that is plain HTTP; everything else is on the channel. */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { enrollAgent } from '../../agents/enrollment.js';
import type { ApiDependencies } from '../app.js';
import { EnrollRequest, EnrollResponse, Problem } from '../schemas.js';

export function agentRoutes(deps: ApiDependencies): FastifyPluginAsyncZod {
  return async (app) => {
    app.post(
      '/v1/agents/enroll',
      { schema: { summary: 'Exchange a one-time token and an identity CSR for an agent certificate', tags: ['agents'], body: EnrollRequest, response: { 201: EnrollResponse, 400: Problem, 401: Problem } } },
      async (request, reply) => reply.status(201).send(await enrollAgent(deps, request.body.token, request.body.csrPem, deps.clock())),
    );
  };
}
