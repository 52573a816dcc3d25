/** The control plane's view of the fleet: register instances, list them, start issuance. */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { createEnrollmentToken } from '../../agents/enrollment.js';
import { DEFAULT_MAX_NAMES_PER_CERTIFICATE } from '../../chain/index.js';
import type { ApiDependencies } from '../app.js';
import { CertplaneError, hasCode } from '../../errors.js';
import type { HostnameConflict } from '../../store/types.js';
import { findInScope, mayActOnCluster, requireCluster, type Caller } from '../auth.js';
import { decommissioned } from '../../agents/revocation.js';
import { CreateInstance, DecommissionInstance, DecommissionResult, EnrollmentToken, IdParams, Instance, InstanceListQuery, InstancePage, IssueAccepted, Problem } from '../schemas.js';
import { certificateView, instanceView } from './views.js';

export function instanceRoutes(deps: ApiDependencies): FastifyPluginAsyncZod {
  return async (app) => {
    const view = async (id: string, caller: Caller | undefined) => {
      const instance = await findInScope(caller, `instance ${id}`, await deps.store.instances.get(id), (i) => [i.cluster]);
      return instanceView(instance, await deps.store.certificates.latest(id), deps.sessions.get(id) !== undefined, await deps.store.certificates.latestInstalled(id), deps.clock());
    };

    app.post(
      '/v1/instances',
      {
        config: { permission: 'operate' },
        schema: {
          summary: 'Register an instance and get its one-time enrollment token (409 INSTANCE_HOSTNAME_TAKEN when another instance holds one of its names)',
          tags: ['instances'],
          body: CreateInstance,
          response: { 201: EnrollmentToken, 400: Problem, 401: Problem, 403: Problem, 409: Problem },
        },
      },
      async (request, reply) => {
        const { name, hostnames, cluster, keyAlgorithm, profile } = request.body;
        requireCluster(request.caller, cluster ?? null, `a new instance`);
        const distinct = [...new Set(hostnames)];
        const maxNames = deps.maxNamesPerCertificate ?? DEFAULT_MAX_NAMES_PER_CERTIFICATE;
        if (distinct.length > maxNames) {
          const problem = `body/hostnames: ${distinct.length} distinct names, more than the ${maxNames} one certificate may carry (CERTPLANE_MAX_NAMES_PER_CERTIFICATE)`;
          throw new CertplaneError('VALIDATION_FAILED', problem, { problems: [problem] });
        }
        const instance = await deps.store.instances
          .create({ name, hostnames: distinct, cluster: cluster ?? null, keyAlgorithm, profile: profile ?? null })
          .catch((error: unknown) => {
            throw hasCode(error, 'INSTANCE_HOSTNAME_TAKEN') ? hostnameTaken(error.details.conflicts as HostnameConflict[], request.caller) : error;
          });
        const { token, expiresAt } = await createEnrollmentToken(deps.store, instance.id, deps.clock(), deps.enrollmentTtlMs);
        await deps.store.audit.record({ actor: request.caller?.actor ?? 'unknown', action: 'instance.register', target: instance.id, reason: null, details: { name: instance.name, hostnames: instance.hostnames, cluster: instance.cluster } });
        return reply.status(201).send({ id: instance.id, enrollmentToken: token, enrollmentTokenExpiresAt: expiresAt.toISOString(), ...(deps.publicUrl ? { server: deps.publicUrl } : {}) });
      },
    );

    app.post(
      '/v1/instances/:id/enrollment-token',
      { config: { permission: 'operate' }, schema: { summary: 'Mint a new one-time enrollment token (re-install of an agent)', tags: ['instances'], params: IdParams, response: { 201: EnrollmentToken, 401: Problem, 403: Problem, 404: Problem, 409: Problem } } },
      async (request, reply) => {
        const instance = await findInScope(request.caller, `instance ${request.params.id}`, await deps.store.instances.get(request.params.id), (i) => [i.cluster]);
        if (instance.decommissioned) throw decommissioned(instance);
        const { token, expiresAt } = await createEnrollmentToken(deps.store, instance.id, deps.clock(), deps.enrollmentTtlMs);
        await deps.store.audit.record({ actor: request.caller?.actor ?? 'unknown', action: 'instance.enrollment-token', target: instance.id, reason: null, details: { expiresAt: expiresAt.toISOString() } });
        return reply.status(201).send({ id: instance.id, enrollmentToken: token, enrollmentTokenExpiresAt: expiresAt.toISOString(), ...(deps.publicUrl ? { server: deps.publicUrl } : {}) });
      },
    );

    app.get(
      '/v1/instances',
      { config: { permission: 'read' }, schema: { summary: 'List instances, one bounded page at a time (a cluster-limited caller sees its clusters only; decommissioned ones with include=decommissioned)', tags: ['instances'], querystring: InstanceListQuery, response: { 200: InstancePage, 400: Problem, 401: Problem, 403: Problem } } },
      async (request) => {
        const { cursor, limit, include } = request.query;
        const page = await deps.store.instances.list({ limit, clusters: request.caller?.clusters ?? null, includeDecommissioned: include === 'decommissioned', ...(cursor === undefined ? {} : { cursor: deps.cursors.open(cursor, request.caller) }) });
        const items = await Promise.all(
          page.items.map(async (i) => instanceView(i, await deps.store.certificates.latest(i.id), deps.sessions.get(i.id) !== undefined, await deps.store.certificates.latestInstalled(i.id), deps.clock())),
        );
        return { items, nextCursor: page.nextCursor && deps.cursors.seal(page.nextCursor, request.caller) };
      },
    );

    app.get(
      '/v1/instances/:id',
      { config: { permission: 'read' }, schema: { summary: 'One instance: agent connection and current certificate', tags: ['instances'], params: IdParams, response: { 200: Instance, 401: Problem, 403: Problem, 404: Problem } } },
      async (request) => view(request.params.id, request.caller),
    );

    app.post(
      '/v1/instances/:id/issue',
      { config: { permission: 'operate' }, schema: { summary: 'Start an issuance now (or return the one under way)', tags: ['instances'], params: IdParams, response: { 202: IssueAccepted, 401: Problem, 403: Problem, 404: Problem, 409: Problem } } },
      async (request, reply) => {
        const instance = await findInScope(request.caller, `instance ${request.params.id}`, await deps.store.instances.get(request.params.id), (i) => [i.cluster]);
        await deps.store.audit.record({ actor: request.caller?.actor ?? 'unknown', action: 'instance.issue', target: instance.id, reason: null, details: null });
        const certificate = await deps.coordinator.requestIssue(request.params.id);
        return reply.status(202).send({ certificateId: certificate.id, status: certificate.status });
      },
    );

    app.delete(
      '/v1/instances/:id',
      {
        config: { permission: 'operate' },
        schema: {
          summary:
            'Decommission an instance, saying what happens to its installed certificate (revoke, with an RFC 5280 reason, or keep until it expires): its agent certificates are revoked and its channel closed, its jobs cancelled and its hostnames released; the record stays for the audit trail',
          tags: ['instances'],
          params: IdParams,
          querystring: DecommissionInstance,
          response: { 200: DecommissionResult, 400: Problem, 401: Problem, 403: Problem, 404: Problem, 409: Problem, 502: Problem, 503: Problem },
        },
      },
      async (request) => {
        const instance = await findInScope(request.caller, `instance ${request.params.id}`, await deps.store.instances.get(request.params.id), (i) => [i.cluster]);
        const { certificate, reason, comment } = request.query;
        const result = await deps.revocations.decommission(instance, {
          certificate,
          reason: reason ?? null,
          comment: comment ?? null,
          requestedBy: request.caller?.actor ?? 'unknown',
        });
        return {
          instance: instanceView(result.instance, await deps.store.certificates.latest(instance.id), false, await deps.store.certificates.latestInstalled(instance.id), deps.clock()),
          revokedCertificate: result.revoked && certificateView(result.revoked),
          agentCertificatesRevoked: result.agentCertificates.length,
          jobsCancelled: result.cancelledJobs,
          abandonedCertificates: [...result.abandoned],
          hostnamesReleased: [...result.releasedHostnames],
        };
      },
    );
  };
}

/**
 * The refusal of a name another instance holds, as this caller may see it: the holder's id
 * and the name it holds only when the caller may see the holder's cluster, else nothing
 * about the holder at all (a cluster-limited operator must not learn another cluster's
 * instances or names from a 409).
 */
function hostnameTaken(conflicts: readonly HostnameConflict[], caller: Caller | undefined): CertplaneError {
  const reasons = conflicts.map((c) => {
    if (!mayActOnCluster(caller, c.cluster)) return c.requested === c.held ? `${c.requested} is held by another instance` : `${c.requested} overlaps a name held by another instance`;
    return c.requested === c.held ? `${c.requested} is held by instance ${c.instanceId}` : `${c.requested} overlaps ${c.held}, held by instance ${c.instanceId}`;
  });
  return new CertplaneError(
    'INSTANCE_HOSTNAME_TAKEN',
    `${[...new Set(reasons)].join('; ')}. A hostname (and every name a wildcard covers) belongs to one instance; register the instance without it, or ask whoever runs its holder to release it.`,
  );
}
