/**
 * Who may call the management plane. In secure mode (the default) every route but
 * /healthz, /readyz and agent enrollment needs a TLS client certificate registered by its
 * SHA-256 thumbprint (through the admin console) with a role: readers read, operators
 * also create instances, issue and reissue, admins may do everything. A caller may be
 * limited to clusters. Unknown, expired or revoked certificates get 401, a known caller
 * without the permission 403. The TLS layer accepts any certificate so that these answers
 * are HTTP answers a person can read, not handshake failures.
 */
import { createHash } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { CertplaneError } from '../errors.js';
import type { ApiClientRecord, ApiRole, Store } from '../store/types.js';

export type Permission = 'read' | 'operate' | 'admin';

export const AuthErrorCode = {
  CERTIFICATE_REQUIRED: 'AUTH_CLIENT_CERTIFICATE_REQUIRED',
  UNKNOWN: 'AUTH_UNKNOWN_CLIENT',
  EXPIRED: 'AUTH_CLIENT_CERTIFICATE_EXPIRED',
  REVOKED: 'AUTH_CLIENT_REVOKED',
  FORBIDDEN: 'AUTH_FORBIDDEN',
} as const;

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

/** True when `caller` may act on an instance of `cluster`. */
export function mayActOnCluster(caller: Caller | undefined, cluster: string | null): boolean {
  if (!caller || caller.clusters === null) return true;
  return cluster !== null && caller.clusters.includes(cluster);
}

/** Throws 403 unless the caller may act on that cluster. */
export function requireCluster(caller: Caller | undefined, cluster: string | null, what: string): void {
  if (!mayActOnCluster(caller, cluster)) throw new CertplaneError(AuthErrorCode.FORBIDDEN, `${caller?.actor ?? 'caller'} may not act on ${what} (cluster ${cluster ?? 'none'})`);
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
    if (!peer) return deny(reply, 401, AuthErrorCode.CERTIFICATE_REQUIRED, 'a registered client certificate is required');
    const client: ApiClientRecord | undefined = await deps.store.apiClients.get(peer.fingerprintSha256);
    if (!client) return deny(reply, 401, AuthErrorCode.UNKNOWN, `client certificate sha256:${peer.fingerprintSha256} is not registered; register it with "certplane admin register-client"`);
    if (client.revokedAt) return deny(reply, 401, AuthErrorCode.REVOKED, `client "${client.name}" was revoked at ${client.revokedAt.toISOString()}`);
    const now = deps.clock();
    if (now > peer.notAfter || now < peer.notBefore || (client.notAfter && now > client.notAfter)) {
      return deny(reply, 401, AuthErrorCode.EXPIRED, `client certificate of "${client.name}" is not valid now (valid until ${peer.notAfter.toISOString()})`);
    }
    if (!GRANTS[client.role].includes(permission)) {
      return deny(reply, 403, AuthErrorCode.FORBIDDEN, `role ${client.role} of "${client.name}" does not allow this (${permission} needed)`);
    }
    request.caller = { actor: `client:${client.name}`, role: client.role, clusters: client.clusters };
  };
}

function deny(reply: FastifyReply, status: number, code: string, message: string): void {
  void reply.status(status).send({ code, message });
}
