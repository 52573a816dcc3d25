/** The control plane's view of the fleet: register instances, list them, start issuance. */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { createEnrollmentToken } from '../../agents/enrollment.js';
import type { ApiDependencies } from '../app.js';
import { notFound } from '../errors.js';
import { CreateInstance, EnrollmentToken, IdParams, Instance, InstancePage, IssueAccepted, ListQuery, Problem } from '../schemas.js';
import { instanceView } from './views.js';

export function instanceRoutes(deps: ApiDependencies): FastifyPluginAsyncZod {
  return async (app) => {
    const view = async (id: string) => {
      const instance = await deps.store.instances.get(id);
      if (!instance) throw notFound(`instance ${id}`);
      return instanceView(instance, await deps.store.certificates.latest(id), deps.sessions.get(id) !== undefined, await deps.store.certificates.latestInstalled(id), deps.clock());
    };

    app.post(
      '/v1/instances',
      { schema: { summary: 'Register an instance and get its one-time enrollment token', tags: ['instances'], body: CreateInstance, response: { 201: EnrollmentToken, 400: Problem } } },
      async (request, reply) => {
        const { name, hostnames, cluster, keyAlgorithm, profile } = request.body;
        const instance = await deps.store.instances.create({ name, hostnames: [...new Set(hostnames)], cluster: cluster ?? null, keyAlgorithm, profile: profile ?? null });
        const { token, expiresAt } = await createEnrollmentToken(deps.store, instance.id, deps.clock(), deps.enrollmentTtlMs);
        return reply.status(201).send({ id: instance.id, enrollmentToken: token, enrollmentTokenExpiresAt: expiresAt.toISOString() });
      },
    );

    app.post(
      '/v1/instances/:id/enrollment-token',
      { schema: { summary: 'Mint a new one-time enrollment token (re-install of an agent)', tags: ['instances'], params: IdParams, response: { 201: EnrollmentToken, 404: Problem } } },
      async (request, reply) => {
        const instance = await deps.store.instances.get(request.params.id);
        if (!instance) throw notFound(`instance ${request.params.id}`);
        const { token, expiresAt } = await createEnrollmentToken(deps.store, instance.id, deps.clock(), deps.enrollmentTtlMs);
        return reply.status(201).send({ id: instance.id, enrollmentToken: token, enrollmentTokenExpiresAt: expiresAt.toISOString() });
      },
    );

    app.get(
      '/v1/instances',
      { schema: { summary: 'List instances, one bounded page at a time', tags: ['instances'], querystring: ListQuery, response: { 200: InstancePage, 400: Problem } } },
      async (request) => {
        const page = await deps.store.instances.list({ cursor: request.query.cursor, limit: request.query.limit });
        const items = await Promise.all(
          page.items.map(async (i) => instanceView(i, await deps.store.certificates.latest(i.id), deps.sessions.get(i.id) !== undefined, await deps.store.certificates.latestInstalled(i.id), deps.clock())),
        );
        return { items, nextCursor: page.nextCursor };
      },
    );

    app.get(
      '/v1/instances/:id',
      { schema: { summary: 'One instance: agent connection and current certificate', tags: ['instances'], params: IdParams, response: { 200: Instance, 404: Problem } } },
      async (request) => view(request.params.id),
    );

    app.post(
      '/v1/instances/:id/issue',
      { schema: { summary: 'Start an issuance now (or return the one under way)', tags: ['instances'], params: IdParams, response: { 202: IssueAccepted, 404: Problem } } },
      async (request, reply) => {
        const certificate = await deps.coordinator.requestIssue(request.params.id);
        return reply.status(202).send({ certificateId: certificate.id, status: certificate.status });
      },
    );
  };
}
