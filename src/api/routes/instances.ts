/** The control plane's view of the fleet: register instances, list them, start issuance. */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { createEnrollmentToken } from '../../agents/enrollment.js';
import { DEFAULT_MAX_NAMES_PER_CERTIFICATE } from '../../chain/index.js';
import { CertplaneError } from '../../errors.js';
import type { ApiDependencies } from '../app.js';
import { notFound } from '../errors.js';
import { mayActOnCluster, requireCluster, type Caller } from '../auth.js';
import { CreateInstance, EnrollmentToken, IdParams, Instance, InstancePage, IssueAccepted, ListQuery, Problem } from '../schemas.js';
import { instanceView } from './views.js';

export function instanceRoutes(deps: ApiDependencies): FastifyPluginAsyncZod {
  return async (app) => {
    const view = async (id: string, caller: Caller | undefined) => {
      const instance = await deps.store.instances.get(id);
      if (!instance) throw notFound(`instance ${id}`);
      requireCluster(caller, instance.cluster, `instance ${id}`);
      return instanceView(instance, await deps.store.certificates.latest(id), deps.sessions.get(id) !== undefined, await deps.store.certificates.latestInstalled(id), deps.clock());
    };

    app.post(
      '/v1/instances',
      { config: { permission: 'operate' }, schema: { summary: 'Register an instance and get its one-time enrollment token', tags: ['instances'], body: CreateInstance, response: { 201: EnrollmentToken, 400: Problem, 401: Problem, 403: Problem } } },
      async (request, reply) => {
        const { name, hostnames, cluster, keyAlgorithm, profile } = request.body;
        requireCluster(request.caller, cluster ?? null, `a new instance`);
        const distinct = [...new Set(hostnames)];
        const maxNames = deps.maxNamesPerCertificate ?? DEFAULT_MAX_NAMES_PER_CERTIFICATE;
        if (distinct.length > maxNames) {
          const problem = `body/hostnames: ${distinct.length} distinct names, more than the ${maxNames} one certificate may carry (CERTPLANE_MAX_NAMES_PER_CERTIFICATE)`;
          throw new CertplaneError('VALIDATION_FAILED', problem, { problems: [problem] });
        }
        const instance = await deps.store.instances.create({ name, hostnames: distinct, cluster: cluster ?? null, keyAlgorithm, profile: profile ?? null });
        const { token, expiresAt } = await createEnrollmentToken(deps.store, instance.id, deps.clock(), deps.enrollmentTtlMs);
        await deps.store.audit.record({ actor: request.caller?.actor ?? 'unknown', action: 'instance.register', target: instance.id, reason: null, details: { name: instance.name, hostnames: instance.hostnames, cluster: instance.cluster } });
        return reply.status(201).send({ id: instance.id, enrollmentToken: token, enrollmentTokenExpiresAt: expiresAt.toISOString(), ...(deps.publicUrl ? { server: deps.publicUrl } : {}) });
      },
    );

    app.post(
      '/v1/instances/:id/enrollment-token',
      { config: { permission: 'operate' }, schema: { summary: 'Mint a new one-time enrollment token (re-install of an agent)', tags: ['instances'], params: IdParams, response: { 201: EnrollmentToken, 401: Problem, 403: Problem, 404: Problem } } },
      async (request, reply) => {
        const instance = await deps.store.instances.get(request.params.id);
        if (!instance) throw notFound(`instance ${request.params.id}`);
        requireCluster(request.caller, instance.cluster, `instance ${instance.id}`);
        const { token, expiresAt } = await createEnrollmentToken(deps.store, instance.id, deps.clock(), deps.enrollmentTtlMs);
        await deps.store.audit.record({ actor: request.caller?.actor ?? 'unknown', action: 'instance.enrollment-token', target: instance.id, reason: null, details: { expiresAt: expiresAt.toISOString() } });
        return reply.status(201).send({ id: instance.id, enrollmentToken: token, enrollmentTokenExpiresAt: expiresAt.toISOString(), ...(deps.publicUrl ? { server: deps.publicUrl } : {}) });
      },
    );

    app.get(
      '/v1/instances',
      { config: { permission: 'read' }, schema: { summary: 'List instances, one bounded page at a time (a cluster-limited caller sees its clusters only)', tags: ['instances'], querystring: ListQuery, response: { 200: InstancePage, 400: Problem, 401: Problem, 403: Problem } } },
      async (request) => {
        const page = await deps.store.instances.list({ cursor: request.query.cursor, limit: request.query.limit });
        const items = await Promise.all(
          page.items.filter((i) => mayActOnCluster(request.caller, i.cluster)).map(async (i) => instanceView(i, await deps.store.certificates.latest(i.id), deps.sessions.get(i.id) !== undefined, await deps.store.certificates.latestInstalled(i.id), deps.clock())),
        );
        return { items, nextCursor: page.nextCursor };
      },
    );

    app.get(
      '/v1/instances/:id',
      { config: { permission: 'read' }, schema: { summary: 'One instance: agent connection and current certificate', tags: ['instances'], params: IdParams, response: { 200: Instance, 401: Problem, 403: Problem, 404: Problem } } },
      async (request) => view(request.params.id, request.caller),
    );

    app.post(
      '/v1/instances/:id/issue',
      { config: { permission: 'operate' }, schema: { summary: 'Start an issuance now (or return the one under way)', tags: ['instances'], params: IdParams, response: { 202: IssueAccepted, 401: Problem, 403: Problem, 404: Problem } } },
      async (request, reply) => {
        const instance = await deps.store.instances.get(request.params.id);
        if (!instance) throw notFound(`instance ${request.params.id}`);
        requireCluster(request.caller, instance.cluster, `instance ${instance.id}`);
        await deps.store.audit.record({ actor: request.caller?.actor ?? 'unknown', action: 'instance.issue', target: instance.id, reason: null, details: null });
        const certificate = await deps.coordinator.requestIssue(request.params.id);
        return reply.status(202).send({ certificateId: certificate.id, status: certificate.status });
      },
    );
  };
}
