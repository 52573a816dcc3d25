/** The control plane's view of the fleet: register instances, change them, list and count them, start issuance. */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { IP_ADDRESS_PROFILES, profileIssuesForIpAddresses } from '../../acme/identifiers.js';
import { createEnrollmentToken } from '../../fleet/enrollment.js';
import { DEFAULT_MAX_NAMES_PER_CERTIFICATE, ipAddress } from '../../chain/index.js';
import type { LiveTrust } from '../../config/trust.js';
import { CertplaneError, hasCode } from '../../errors.js';
import type { IssuanceCoordinator } from '../../fleet/issuance.js';
import type { SessionRegistry } from '../../fleet/sessions.js';
import type { HostnameConflict, InstanceRecord, Store } from '../../store/types.js';
import { findInScope, mayActOnCluster, requireCluster, type Caller } from '../auth.js';
import type { PageCursors } from '../cursors.js';
import { decommissioned, type Revocations } from '../../fleet/revocation.js';
import { notFound } from '../errors.js';
import { CreateInstance, DecommissionInstance, DecommissionResult, EnrollmentToken, IdParams, Instance, InstanceListQuery, InstancePage, InstanceSummary, IssueAccepted, Problem, SummaryQuery, UpdateInstance } from '../schemas.js';
import { certificateView, instanceView } from './views.js';
import { ErrorCode } from '../../error-catalogue.js';

/** What the instance routes use. */
export interface InstanceRouteOptions {
  readonly store: Pick<Store, 'instances' | 'certificates' | 'trust' | 'served' | 'audit' | 'enrollmentTokens'>;
  readonly coordinator: Pick<IssuanceCoordinator, 'requestIssue' | 'restartIssuance'>;
  readonly revocations: Pick<Revocations, 'decommission'>;
  /** Whether an instance's agent is connected to this process. */
  readonly sessions: Pick<SessionRegistry, 'get'>;
  /** The trust settings in force: which profiles an instance may list. */
  readonly trust: Pick<LiveTrust, 'current'>;
  readonly cursors: Pick<PageCursors, 'open' | 'seal'>;
  readonly clock: () => Date;
  /** How long an enrollment token stays usable. */
  readonly enrollmentTtlMs: number;
  /** The URL agents are told to use, when it differs from the bind address. */
  readonly publicUrl?: string | undefined;
  /** Distinct hostnames one instance may register (DEFAULT_MAX_NAMES_PER_CERTIFICATE when absent). */
  readonly maxNamesPerCertificate?: number | undefined;
}

export const instanceRoutes: FastifyPluginAsyncZod<InstanceRouteOptions> = async (app, deps) => {
  /** One instance as the API shows it; `connected` is given when the caller knows better than the session registry (a channel being closed). */
  const viewOf = async (instance: InstanceRecord, connected = deps.sessions.get(instance.id) !== undefined) => {
    const trust = (await deps.store.trust.of([instance.id])).get(instance.id);
    const served = (await deps.store.served.of([instance.id])).get(instance.id);
    return instanceView(instance, await deps.store.certificates.latest(instance.id), connected, await deps.store.certificates.latestInstalled(instance.id), deps.clock(), trust, served);
  };
  const view = async (id: string, caller: Caller | undefined) => viewOf(await findInScope(caller, `instance ${id}`, await deps.store.instances.get(id), (i) => [i.cluster]));

  app.post(
    '/v1/instances',
    {
      config: { permission: 'operate' },
      schema: {
        summary: 'Register an instance and get its one-time enrollment token (409 INSTANCE_HOSTNAME_TAKEN when another instance holds one of its names, 400 INSTANCE_UNKNOWN_TRUST_PROFILE for a trust profile not configured)',
        tags: ['instances'],
        body: CreateInstance,
        response: { 201: EnrollmentToken, 400: Problem, 401: Problem, 403: Problem, 409: Problem },
      },
    },
    async (request, reply) => {
      const { name, hostnames, cluster, keyAlgorithm, profile, autoIssue, trustProfiles } = request.body;
      requireCluster(request.caller, cluster ?? null, `a new instance`);
      const configured = deps.trust.current().profiles.map((p) => p.name);
      const unknownProfiles = trustProfiles.filter((p) => !configured.includes(p));
      if (unknownProfiles.length > 0) {
        throw new CertplaneError(ErrorCode.INSTANCE_UNKNOWN_TRUST_PROFILE, `trust profile(s) ${unknownProfiles.map((p) => `"${p}"`).join(', ')} are not configured; configured: ${configured.join(', ')} (CERTPLANE_TRUST_PROFILES, or the trust file)`, { unknown: unknownProfiles, configured });
      }
      const distinct = distinctNames(hostnames, deps.maxNamesPerCertificate);
      requireIpProfile(distinct, profile ?? null);
      const instance = await deps.store.instances
        .create({ name, hostnames: distinct, cluster: cluster ?? null, keyAlgorithm, profile: profile ?? null, autoIssue, trustProfiles: [...new Set(trustProfiles)] })
        .catch((error: unknown) => {
          throw hasCode(error, ErrorCode.INSTANCE_HOSTNAME_TAKEN) ? hostnameTaken(error.details.conflicts as HostnameConflict[], request.caller) : error;
        });
      const { token, expiresAt } = await createEnrollmentToken(deps.store, instance.id, deps.clock(), deps.enrollmentTtlMs);
      await deps.store.audit.record({ actor: request.caller?.actor ?? 'unknown', action: 'instance.register', target: instance.id, reason: null, details: { name: instance.name, hostnames: instance.hostnames, cluster: instance.cluster, trustProfiles: instance.trustProfiles } });
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

  app.patch(
    '/v1/instances/:id',
    {
      config: { permission: 'operate' },
      schema: {
        summary:
          'Change an instance: name, cluster, hostnames, key algorithm, profile, autoIssue, with a reason for the audit trail. A changed set of names or key algorithm is issued at once; removed names are released (409 INSTANCE_HOSTNAME_TAKEN when another instance holds a new one, 400 INSTANCE_IP_ADDRESS_PROFILE_REQUIRED for an address without an address profile)',
        tags: ['instances'],
        params: IdParams,
        body: UpdateInstance,
        response: { 200: Instance, 400: Problem, 401: Problem, 403: Problem, 404: Problem, 409: Problem },
      },
    },
    async (request) => {
      const { reason, hostnames, ...fields } = request.body;
      const { id } = request.params;
      const caller = request.caller;
      const found = await findInScope(caller, `instance ${id}`, await deps.store.instances.get(id), (i) => [i.cluster]);
      if (fields.cluster !== undefined) requireCluster(caller, fields.cluster, `instance ${id} moved to another cluster`);
      const names = hostnames && distinctNames(hostnames, deps.maxNamesPerCertificate);
      const allowed = (current: InstanceRecord) => {
        // Checked again on the locked row: the instance may have moved or changed since it was read.
        if (!mayActOnCluster(caller, current.cluster)) throw notFound(`instance ${id}`);
        if (current.decommissioned) throw decommissioned(current);
        requireIpProfile(names ?? current.hostnames, fields.profile !== undefined ? fields.profile : current.profile);
      };
      allowed(found);
      const changed = await deps.store.instances.update(id, { ...fields, ...(names ? { hostnames: names } : {}) }, allowed).catch((error: unknown) => {
        throw hasCode(error, ErrorCode.INSTANCE_HOSTNAME_TAKEN) ? hostnameTaken(error.details.conflicts as HostnameConflict[], caller) : error;
      });
      if (!changed) throw notFound(`instance ${id}`);
      const { before, after } = changed;
      const differences = changesBetween(before, after);
      if (Object.keys(differences).length > 0) {
        await deps.store.audit.record({ actor: caller?.actor ?? 'unknown', action: 'instance.update', target: id, reason, details: differences });
      }
      // A certificate carries the names and key the instance had when it was asked for: a
      // new set or algorithm needs a new certificate (unless the control plane issues itself and never has).
      const reissue = differences.hostnames !== undefined || differences.keyAlgorithm !== undefined;
      if (reissue && (after.autoIssue || (await deps.store.certificates.latest(id)) !== undefined)) {
        await deps.coordinator.restartIssuance(id, `instance ${id} changed (${Object.keys(differences).join(', ')}) by ${caller?.actor ?? 'unknown'}: ${reason}`);
      }
      return view(id, caller);
    },
  );

  app.get(
    '/v1/instances/summary',
    {
      config: { permission: 'read' },
      schema: {
        summary: 'Count the fleet by status, at risk and connected, over the caller\'s clusters (one bounded answer, whatever the fleet\'s size)',
        tags: ['instances'],
        querystring: SummaryQuery,
        response: { 200: InstanceSummary, 400: Problem, 401: Problem, 403: Problem },
      },
    },
    async (request) => {
      const { cluster } = request.query;
      if (cluster !== undefined) requireCluster(request.caller, cluster, `the instances of cluster ${cluster}`);
      return deps.store.instances.summary({ clusters: cluster !== undefined ? [cluster] : (request.caller?.clusters ?? null), now: deps.clock() });
    },
  );

  app.get(
    '/v1/instances',
    {
      config: { permission: 'read' },
      schema: {
        summary: 'List instances, one bounded page at a time, filtered by cluster, status, hostname and atRisk (a cluster-limited caller sees its clusters only; decommissioned ones with include=decommissioned)',
        tags: ['instances'],
        querystring: InstanceListQuery,
        response: { 200: InstancePage, 400: Problem, 401: Problem, 403: Problem },
      },
    },
    async (request) => {
      const { cursor, limit, cluster, status, hostname, atRisk, include } = request.query;
      if (cluster !== undefined) requireCluster(request.caller, cluster, `the instances of cluster ${cluster}`);
      const filter = { ...(cluster !== undefined ? { cluster } : {}), ...(status !== undefined ? { status } : {}), ...(hostname !== undefined ? { hostname } : {}), ...(atRisk !== undefined ? { atRisk } : {}) };
      const page = await deps.store.instances.list({
        limit,
        clusters: request.caller?.clusters ?? null,
        filter,
        now: deps.clock(),
        includeDecommissioned: include === 'decommissioned',
        ...(cursor === undefined ? {} : { cursor: deps.cursors.open(cursor, request.caller) }),
      });
      // Two queries for the page's certificates, not two per instance: a page may hold 500.
      const certificates = await deps.store.certificates.latestOf(page.items.map((i) => i.id));
      const now = deps.clock();
      const trust = await deps.store.trust.of(page.items.map((i) => i.id));
      const served = await deps.store.served.of(page.items.map((i) => i.id));
      const items = page.items.map((i) => instanceView(i, certificates.get(i.id)?.latest, deps.sessions.get(i.id) !== undefined, certificates.get(i.id)?.installed, now, trust.get(i.id), served.get(i.id)));
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
      const certificate = await deps.coordinator.requestIssue(instance);
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
        response: { 200: DecommissionResult, 400: Problem, 401: Problem, 403: Problem, 404: Problem, 409: Problem, 429: Problem, 502: Problem, 503: Problem },
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
        instance: await viewOf(result.instance, false),
        revokedCertificate: result.revoked && certificateView(result.revoked),
        agentCertificatesRevoked: result.agentCertificates.length,
        jobsCancelled: result.cancelledJobs,
        abandonedCertificates: [...result.abandoned],
        hostnamesReleased: [...result.releasedHostnames],
      };
    },
  );
};

/** The names once each, no more than one certificate may carry (CERTPLANE_MAX_NAMES_PER_CERTIFICATE). */
function distinctNames(hostnames: readonly string[], configured: number | undefined): string[] {
  const distinct = [...new Set(hostnames)];
  const maxNames = configured ?? DEFAULT_MAX_NAMES_PER_CERTIFICATE;
  if (distinct.length > maxNames) {
    const problem = `body/hostnames: ${distinct.length} distinct names, more than the ${maxNames} one certificate may carry (CERTPLANE_MAX_NAMES_PER_CERTIFICATE)`;
    throw new CertplaneError(ErrorCode.VALIDATION_FAILED, problem, { problems: [problem] });
  }
  return distinct;
}

/** Refuses IP addresses among the names unless the profile issues for them (acme/identifiers.ts). */
function requireIpProfile(hostnames: readonly string[], profile: string | null): void {
  const addresses = hostnames.filter((name) => ipAddress(name) !== undefined);
  if (addresses.length === 0 || profileIssuesForIpAddresses(profile)) return;
  throw new CertplaneError(
    ErrorCode.INSTANCE_IP_ADDRESS_PROFILE_REQUIRED,
    `${addresses.join(', ')}: the CA certifies IP addresses only under the profile ${IP_ADDRESS_PROFILES.join(' or ')}, and this instance's profile is ${profile === null ? 'the CA default' : `"${profile}"`}; set "profile" to ${IP_ADDRESS_PROFILES.join(' or ')}, or list DNS names only.`,
    { addresses, profiles: IP_ADDRESS_PROFILES },
  );
}

/** What a change changed, field by field, for the audit trail (names as added and removed). */
function changesBetween(before: InstanceRecord, after: InstanceRecord): Record<string, unknown> {
  const differences: Record<string, unknown> = {};
  for (const field of ['name', 'cluster', 'keyAlgorithm', 'profile', 'autoIssue'] as const) {
    if (before[field] !== after[field]) differences[field] = { from: before[field], to: after[field] };
  }
  const added = after.hostnames.filter((name) => !before.hostnames.includes(name));
  const removed = before.hostnames.filter((name) => !after.hostnames.includes(name));
  if (added.length > 0 || removed.length > 0) differences.hostnames = { added, removed };
  return differences;
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
    ErrorCode.INSTANCE_HOSTNAME_TAKEN,
    `${[...new Set(reasons)].join('; ')}. A hostname (and every name a wildcard covers) belongs to one instance; register the instance without it, or ask whoever runs its holder to release it.`,
  );
}
