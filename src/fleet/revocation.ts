/**
 * Revoking certificates and decommissioning instances: the two ways a certificate leaves
 * service before it expires. A revocation asks the CA (RFC 8555 §7.6) with an RFC 5280 reason
 * and records who asked, why, when and which key signed. For keyCompromise the certificate's
 * own key signs, on the instance, through the agent (Let's Encrypt blocks a key only on that
 * proof); only when the agent cannot sign in a bounded time does the account key sign
 * instead, and the record says so. Decommissioning revokes the live certificate first when
 * asked (while the agent can still sign), then cuts the instance off in one store transaction.
 */
import type { Logger } from 'pino';
import type { CertificateKeySigner } from '../acme/issuer.js';
import { CertplaneError, hasCode } from '../errors.js';
import { REVOCABLE_STATES, isOpen, revocationReason, type RevocationReasonName, type RevocationRecord, type RevocationSigner } from '../lifecycle/index.js';
import type { CertificateRecord, DecommissionOutcome, InstanceRecord, Store } from '../store/types.js';
import type { IssuanceCoordinator } from './issuance.js';
import type { RevocationJws } from '../channel/protocol.js';
import { SessionRegistry } from './sessions.js';
import { ErrorCode } from '../error-catalogue.js';

/** How long the plane waits for the agent to sign with the certificate's key before the account key signs instead. */
export const CERTIFICATE_KEY_SIGNING_TIMEOUT_MS = 15_000;

/** The CA side of a revocation (acme/issuer.ts). */
export interface Revoker {
  revoke(certificatePem: string, reason: number, signWithCertificateKey?: CertificateKeySigner): Promise<void>;
}

export interface RevocationRequest {
  readonly reason: RevocationReasonName;
  readonly comment: string | null;
  readonly requestedBy: string;
  /** Order a replacement when the revoked certificate was the installed one and the instance is still in service. */
  readonly reissue: boolean;
}

export interface RevocationOutcome {
  readonly certificate: CertificateRecord;
  /** The replacement under way, when one was asked for. */
  readonly reissue: CertificateRecord | null;
}

export interface DecommissionRequest {
  readonly certificate: 'revoke' | 'keep';
  /** With `revoke`: the RFC 5280 reason. */
  readonly reason: RevocationReasonName | null;
  readonly comment: string | null;
  readonly requestedBy: string;
}

export interface DecommissionResult extends DecommissionOutcome {
  /** The live certificate, revoked first when asked; null with `keep` or when none was installed. */
  readonly revoked: CertificateRecord | null;
  /** Certificates that were under way, failed as InstanceDecommissioned. */
  readonly abandoned: readonly string[];
}

export class Revocations {
  constructor(
    private readonly deps: {
      store: Store;
      revoker: Revoker;
      sessions: Pick<SessionRegistry, 'get' | 'disconnectRevoked'>;
      coordinator: Pick<IssuanceCoordinator, 'requestIssue'>;
      logger: Logger;
      clock: () => Date;
      signingTimeoutMs?: number;
    },
  ) {}

  /**
   * Revokes `certificate` at the CA, then records it through the lifecycle (`revoked`). The
   * CA is asked first: a record is only written for a revocation the CA accepted (or had
   * already made, which is how a retry after a failed write settles).
   */
  async revoke(certificate: CertificateRecord, request: RevocationRequest): Promise<RevocationOutcome> {
    const log = this.deps.logger.child({ instanceId: certificate.instanceId, certificateId: certificate.id });
    if (certificate.status === 'revoked') {
      throw new CertplaneError(ErrorCode.CERTIFICATE_ALREADY_REVOKED, `certificate ${certificate.id} was already revoked at ${certificate.revocation?.at ?? 'an earlier time'} (${certificate.revocation?.reason ?? 'reason unknown'}); see its revocation record`, {
        revocation: certificate.revocation,
      });
    }
    if (!certificate.fullchainPem || !REVOCABLE_STATES.includes(certificate.status)) {
      throw new CertplaneError(ErrorCode.CERTIFICATE_NOT_REVOCABLE, `certificate ${certificate.id} is ${certificate.status} and was never issued by the CA, so there is nothing to revoke; a request under way is stopped by decommissioning its instance`, {
        status: certificate.status,
      });
    }
    const { code, wantsCertificateKey } = revocationReason(request.reason);
    let signedBy: RevocationSigner = 'account-key';
    let certificateKeyUnavailable: RevocationRecord['certificateKeyUnavailable'] = null;
    let alreadyRevokedAtCa = false;
    const settle = async (attempt: () => Promise<void>): Promise<void> => {
      try {
        await attempt();
      } catch (error) {
        if (!hasCode(error, ErrorCode.ACME_ALREADY_REVOKED)) throw error;
        alreadyRevokedAtCa = true;
      }
    };
    if (wantsCertificateKey) {
      const agent = this.#agentSigner(certificate);
      if ('unavailable' in agent) certificateKeyUnavailable = agent.unavailable;
      else {
        try {
          await settle(() => this.deps.revoker.revoke(certificate.fullchainPem as string, code, agent.sign));
          signedBy = 'certificate-key';
        } catch (error) {
          const unavailable = agent.failure();
          if (!unavailable) throw error;
          certificateKeyUnavailable = unavailable;
        }
      }
      if (certificateKeyUnavailable) log.warn({ ...certificateKeyUnavailable }, 'the certificate key could not sign the keyCompromise revocation; the account key signs it instead');
    }
    if (signedBy === 'account-key') await settle(() => this.deps.revoker.revoke(certificate.fullchainPem as string, code));
    const revocation: RevocationRecord = {
      reason: request.reason,
      reasonCode: code,
      comment: request.comment,
      requestedBy: request.requestedBy,
      at: this.deps.clock().toISOString(),
      signedBy,
      certificateKeyUnavailable,
      alreadyRevokedAtCa,
    };
    const revoked = await this.deps.store.certificates.apply(certificate.id, 'revoked', { revocation });
    // Stale: another request recorded its revocation first; that record stands.
    const current = revoked ?? (await this.deps.store.certificates.get(certificate.id)) ?? certificate;
    await this.deps.store.audit.record({ actor: request.requestedBy, action: 'certificate.revoke', target: certificate.id, reason: request.comment, details: { instanceId: certificate.instanceId, ...revocation } });
    log.warn({ reason: request.reason, signedBy, alreadyRevokedAtCa }, 'certificate revoked');
    if (revoked && isOpen(certificate.status)) this.deps.sessions.get(certificate.instanceId)?.send({ type: 'cancel', certificateId: certificate.id, reason: `revoked: ${request.reason}` });
    const instance = await this.deps.store.instances.get(certificate.instanceId);
    const replace = Boolean(revoked) && request.reissue && certificate.status === 'installed' && instance !== undefined && instance.decommissioned === null;
    const reissue = replace ? await this.deps.coordinator.requestIssue(instance) : null;
    if (reissue) log.info({ replacement: reissue.id }, 'replacement of the revoked certificate requested');
    return { certificate: current, reissue };
  }

  /**
   * Takes the instance out of service. With `revoke`, its installed certificate is revoked
   * first, while its agent can still sign for keyCompromise; a refusal by the CA stops
   * everything here, with nothing changed. Then, in one transaction, the instance is marked,
   * its hostnames released, its jobs cancelled and its agent certificates revoked; its
   * unfinished certificates fail, and its agent's channel is closed.
   */
  async decommission(instance: InstanceRecord, request: DecommissionRequest): Promise<DecommissionResult> {
    if (instance.decommissioned) throw decommissioned(instance);
    let revoked: CertificateRecord | null = null;
    if (request.certificate === 'revoke') {
      const live = await this.deps.store.certificates.latestInstalled(instance.id);
      if (live) revoked = (await this.revoke(live, { reason: request.reason ?? 'cessationOfOperation', comment: request.comment, requestedBy: request.requestedBy, reissue: false })).certificate;
    }
    const outcome = await this.deps.store.instances.decommission(instance.id, {
      at: this.deps.clock(),
      requestedBy: request.requestedBy,
      comment: request.comment,
      certificate: request.certificate,
      revocationReason: request.certificate === 'revoke' ? (request.reason ?? 'cessationOfOperation') : null,
    });
    const abandoned: string[] = [];
    for (const open of await this.deps.store.certificates.open(instance.id)) {
      const failed = await this.deps.store.certificates.apply(open.id, 'failed', {
        failure: { reason: 'InstanceDecommissioned', code: ErrorCode.INSTANCE_DECOMMISSIONED },
        lastError: `the instance was decommissioned by ${request.requestedBy}`,
      });
      if (failed) abandoned.push(failed.id);
    }
    // Sessions here close now; those on other processes when their revocation watch sees the store.
    for (const fingerprint of outcome.agentCertificates) this.deps.sessions.disconnectRevoked(fingerprint);
    await this.deps.store.audit.record({
      actor: request.requestedBy,
      action: 'instance.decommission',
      target: instance.id,
      reason: request.comment,
      details: {
        certificate: request.certificate,
        revocationReason: outcome.instance.decommissioned?.revocationReason ?? null,
        revokedCertificate: revoked?.id ?? null,
        agentCertificatesRevoked: outcome.agentCertificates,
        jobsCancelled: outcome.cancelledJobs,
        hostnamesReleased: outcome.releasedHostnames,
        abandonedCertificates: abandoned,
      },
    });
    this.deps.logger.warn({ instanceId: instance.id, certificate: request.certificate, revoked: revoked?.id, hostnames: outcome.releasedHostnames }, 'instance decommissioned');
    return { ...outcome, revoked, abandoned };
  }

  /**
   * The agent as the signer of a revocation with the certificate's key, when it is connected
   * to this process; `failure()` then tells whether a failed revocation failed on the agent's
   * side (offline, no answer in time, no such key), which is when the account key signs instead.
   */
  #agentSigner(certificate: CertificateRecord): { unavailable: { code: string; message: string } } | { sign: CertificateKeySigner; failure: () => { code: string; message: string } | undefined } {
    const session = this.deps.sessions.get(certificate.instanceId);
    if (!session) return { unavailable: { code: ErrorCode.AGENT_OFFLINE, message: `the agent of instance ${certificate.instanceId} is not connected to this management-plane process` } };
    let failure: { code: string; message: string } | undefined;
    const sign: CertificateKeySigner = async (request) => {
      try {
        return await session.request<RevocationJws>({ type: 'revocation_sign', requestId: SessionRegistry.requestId(), certificateId: certificate.id, ...request }, this.deps.signingTimeoutMs ?? CERTIFICATE_KEY_SIGNING_TIMEOUT_MS);
      } catch (error) {
        failure = { code: error instanceof CertplaneError ? error.code : ErrorCode.INTERNAL, message: (error as Error).message };
        throw error;
      }
    };
    return { sign, failure: () => failure };
  }
}

export function decommissioned(instance: InstanceRecord): CertplaneError {
  return new CertplaneError(
    ErrorCode.INSTANCE_DECOMMISSIONED,
    `instance ${instance.id} was decommissioned at ${instance.decommissioned?.at.toISOString()} by ${instance.decommissioned?.requestedBy}; it takes no further change. Register a new instance for the same hostnames instead.`,
    { instanceId: instance.id },
  );
}
