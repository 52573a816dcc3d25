/**
 * Who may call the management plane. In secure mode (the default) every route but
 * /healthz, /readyz and agent enrollment needs a TLS client certificate registered by its
 * SHA-256 thumbprint (through the admin console) with a role: readers read, operators
 * also create instances, issue and reissue, admins may do everything. A caller may be
 * limited to clusters. Unknown, expired or revoked certificates get 401, a known caller
 * without the permission 403, and a cluster-limited caller 404 for an object outside its
 * clusters. The TLS layer accepts any certificate so that these answers
 * are HTTP answers a person can read, not handshake failures.
 */
import { createHash } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { CertplaneError } from '../errors.js';
import { notFound, sendProblem } from './errors.js';
import type { ApiClientRecord, ApiRole, Store } from '../store/types.js';
import { ErrorCode } from '../error-catalogue.js';

export type Permission = 'read' | 'operate' | 'admin';

const GRANTS: Record<ApiRole, readonly Permission[]> = {
  reader: ['read'],
  operator: ['read', 'operate'],
  admin: ['read', 'operate', 'admin'],
};

/** The authenticated caller of a request, or the development-mode stand-in. */
export interface Caller {
  /** Recorded as who asked, in the audit trail and campaigns. */
  readonly actor: string;
  readonly role: ApiRole;
  /** Clusters it may act on; null for all. */
  readonly clusters: readonly string[] | null;
}

declare module 'fastify' {
  interface FastifyRequest {
    caller?: Caller;
  }
  interface FastifyContextConfig {
    /** What the route needs; routes without it are public (health, readiness, enrollment). */
    permission?: Permission;
  }
}

/** The fingerprint of the certificate the TLS peer presented, or undefined. */
export function peerFingerprint(socket: unknown): { fingerprintSha256: string; notAfter: Date; notBefore: Date } | undefined {
  const tls = socket as Partial<TLSSocket>;
  if (typeof tls.getPeerCertificate !== 'function') return undefined;
  const peer = tls.getPeerCertificate();
  if (!peer || !peer.raw || peer.raw.length === 0) return undefined;
  return { fingerprintSha256: createHash('sha256').update(peer.raw).digest('hex'), notAfter: new Date(peer.valid_to), notBefore: new Date(peer.valid_from) };
}

/**
 * The clusters an object belongs to: those of the instances it is about. An instance, its
 * certificates and its jobs belong to the instance's cluster; a campaign to the clusters of
 * every instance it matched when it started. null stands for an instance without a
 * cluster; `undefined` for an object whose clusters were never recorded.
 */
export type Clusters = readonly (string | null)[];

/**
 * The one rule of cluster limits: a limited caller may see and act on an object only when
 * every cluster the object belongs to is one of its own. An object spanning a cluster the
 * caller does not have (or no cluster, or unknown clusters) stays out of its reach: its
 * reason, selector and requester are another team's to read and its jobs another team's
 * to cancel.
 */
export function mayActOnClusters(caller: Caller | undefined, clusters: Clusters | undefined): boolean {
  if (!caller || caller.clusters === null) return true;
  const own = caller.clusters;
  return clusters !== undefined && clusters.length > 0 && clusters.every((cluster) => cluster !== null && own.includes(cluster));
}

/** True when `caller` may act on an instance of `cluster`. */
export function mayActOnCluster(caller: Caller | undefined, cluster: string | null): boolean {
  return mayActOnClusters(caller, [cluster]);
}

/**
 * What every route that reads or acts on an existing object (instance, certificate,
 * campaign) calls with what its lookup found: the object when the caller may reach it,
 * else NOT_FOUND with the very answer an unknown id gets, so a cluster-limited caller
 * cannot tell another cluster's objects from ids that do not exist.
 */
export async function findInScope<T>(caller: Caller | undefined, what: string, found: T | undefined, clustersOf: (found: T) => Clusters | undefined | Promise<Clusters | undefined>): Promise<T> {
  if (found === undefined || !mayActOnClusters(caller, await clustersOf(found))) throw notFound(what);
  return found;
}

/**
 * Throws 403 unless the caller may act on that cluster: for requests that name a cluster to
 * create something in or select by, where the cluster's existence is no secret.
 */
export function requireCluster(caller: Caller | undefined, cluster: string | null, what: string): void {
  if (!mayActOnCluster(caller, cluster)) throw new CertplaneError(ErrorCode.AUTH_FORBIDDEN, `${caller?.actor ?? 'caller'} may not act on ${what} (cluster ${cluster ?? 'none'})`);
}

/** The onRequest hook: authenticates secure-mode callers and checks the route's permission. */
export function authenticate(deps: { store: Store; clock: () => Date; secure: boolean }) {
  return async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const permission = request.routeOptions.config?.permission;
    if (!deps.secure) {
      const header = request.headers['x-certplane-actor'];
      request.caller = { actor: typeof header === 'string' && header.trim() ? header.trim().slice(0, 200) : 'unauthenticated (development mode)', role: 'admin', clusters: null };
      return;
    }
    if (!permission) return;
    const peer = peerFingerprint(request.raw.socket);
    if (!peer) return sendProblem(reply, ErrorCode.AUTH_CLIENT_CERTIFICATE_REQUIRED, 'a registered client certificate is required');
    const client: ApiClientRecord | undefined = await deps.store.apiClients.get(peer.fingerprintSha256);
    if (!client) return sendProblem(reply, ErrorCode.AUTH_UNKNOWN_CLIENT, `client certificate sha256:${peer.fingerprintSha256} is not registered; register it with "certplane admin register-client"`);
    if (client.revokedAt) return sendProblem(reply, ErrorCode.AUTH_CLIENT_REVOKED, `client "${client.name}" was revoked at ${client.revokedAt.toISOString()}`);
    const now = deps.clock();
    if (now > peer.notAfter || now < peer.notBefore || (client.notAfter && now > client.notAfter)) {
      return sendProblem(reply, ErrorCode.AUTH_CLIENT_CERTIFICATE_EXPIRED, `client certificate of "${client.name}" is not valid now (valid until ${peer.notAfter.toISOString()})`);
    }
    if (!GRANTS[client.role].includes(permission)) {
      return sendProblem(reply, ErrorCode.AUTH_FORBIDDEN, `role ${client.role} of "${client.name}" does not allow this (${permission} needed)`);
    }
    request.caller = { actor: `client:${client.name}`, role: client.role, clusters: client.clusters };
  };
}
