/**
 * What happens after a certificate settles. Installed: its job is done, its renewal time
 * is set (inside the CA's ARI window when the CA offers one, else two thirds into its
 * lifetime with jitter) and a renewal job is queued for then, in one store statement (the
 * lifecycle decides the time; the store applies each part under its own condition, atomically). Failed: the failure's typed
 * reason decides (lifecycle/reasons.ts): a permanent one fails the job at once, without
 * another order; a passing one is tried again with capped exponential backoff (no sooner
 * than the CA's Retry-After), until too many attempts.
 */
import type { Logger } from 'pino';
import { parseCertificateBundle } from '../chain/index.js';
import type { IssuanceListener } from '../fleet/issuance.js';
import { failureOf } from '../fleet/failures.js';
import { lifetimeRenewalTime, retryDecision, type FailureReason } from '../lifecycle/index.js';
import type { CertificateRecord, JobKind, RenewalPlan, Store } from '../store/index.js';
import { ErrorCode } from '../error-catalogue.js';

/** What the lifecycle needs from the CA's renewal information (acme/issuer.ts implements it). */
export interface RenewalAdvisor {
  /** The CA's suggested renewal time and when to ask again, or undefined when it offers no ARI. */
  advise(leafPem: string, now: Date): Promise<{ renewAt: Date; retryAt: Date } | undefined>;
  /** The ARI certificate identifier for `replaces`, or undefined without ARI. */
  certId(leafPem: string): Promise<string | undefined>;
}

/** How long to wait before asking again when the CA's renewal information did not answer. */
export const ARI_UNAVAILABLE_RETRY_MS = 3_600_000;

/** The reasons a renewal job gives, by the rule that timed it. */
const ARI_REASON = 'ARI suggested window';
const LIFETIME_REASON = 'two thirds of the lifetime';

export class JobLifecycle implements IssuanceListener {
  constructor(
    private readonly deps: {
      store: Store;
      logger: Logger;
      clock: () => Date;
      advisor?: RenewalAdvisor;
      onFailedValidation?: (hostnames: readonly string[]) => Promise<void>;
      random?: () => number;
    },
  ) {}

  /** Its job is done and its renewal queued, in one store statement. */
  async onInstalled(certificate: CertificateRecord): Promise<void> {
    await this.#settle({ jobId: certificate.jobId, waitingOn: certificate.id }, certificate);
  }

  /**
   * Completes a job whose work needs no certificate of its own (a rechain finding the chain
   * already selected, a job whose certificate was replaced since): the instance's open job
   * kept it from queueing a renewal, so the renewal of what is installed now is queued.
   */
  async onDoneWithoutCertificate(job: { id: string; instanceId: string }): Promise<void> {
    const installed = await this.deps.store.certificates.latestInstalled(job.instanceId);
    await this.#settle({ jobId: job.id }, installed);
  }

  /** The job a certificate answers: the one that created it, or one that adopted it while it was under way. */
  async #jobOf(certificate: CertificateRecord) {
    const byLink = certificate.jobId ? await this.deps.store.jobs.get(certificate.jobId) : undefined;
    return byLink && (byLink.state === 'queued' || byLink.state === 'running') ? byLink : this.deps.store.jobs.forCertificate(certificate.id);
  }

  /** Sets `renewAt` for an installed certificate and queues its renewal job. */
  async scheduleRenewal(certificate: CertificateRecord): Promise<void> {
    await this.#settle(undefined, certificate);
  }

  /** Completes `job` (when given) and schedules the renewal of `certificate` (when it has a chain) in one store call. */
  async #settle(job: { jobId: string | null; waitingOn?: string } | undefined, certificate: CertificateRecord | undefined): Promise<void> {
    const renewal = certificate && (await this.#renewalOf(certificate));
    const settled = await this.deps.store.jobs.settleAndRenew({ ...(job ? { complete: job } : {}), ...(renewal ? { renewal } : {}) });
    if (renewal) {
      this.deps.logger.info(
        { instanceId: renewal.instanceId, certificateId: renewal.certificateId, renewAt: renewal.renewAt, ari: renewal.reason === ARI_REASON, renewalJob: settled.renewal },
        'renewal scheduled',
      );
    }
  }

  /**
   * When `certificate` renews: inside the CA's ARI window when it offers one, else two thirds
   * into its lifetime with jitter; undefined for a certificate without a chain.
   */
  async #renewalOf(certificate: CertificateRecord): Promise<RenewalPlan | undefined> {
    if (!certificate.fullchainPem || !certificate.notAfter) return undefined;
    const leaf = parseCertificateBundle(certificate.fullchainPem)[0]!;
    const now = this.deps.clock();
    let askAgainAt: Date | null = null;
    const advice = await this.deps.advisor?.advise(certificate.fullchainPem, now).catch((error: Error) => {
      // The CA offers ARI but did not answer for this certificate: use the lifetime rule now and ask again later.
      askAgainAt = new Date(now.getTime() + ARI_UNAVAILABLE_RETRY_MS);
      this.deps.logger.warn({ certificateId: certificate.id, err: error.message }, 'renewal information unavailable; using the lifetime rule for now');
      return undefined;
    });
    const renewAt = advice?.renewAt ?? lifetimeRenewalTime(leaf.notBefore, leaf.notAfter, this.deps.random);
    return { certificateId: certificate.id, instanceId: certificate.instanceId, renewAt, ariRetryAt: advice?.retryAt ?? askAgainAt, reason: advice ? ARI_REASON : LIFETIME_REASON, requestedBy: 'scheduler' };
  }

  /** Asks the CA again where its window is now; a window moved into the past means renew now. */
  async refreshAdvice(certificate: CertificateRecord): Promise<void> {
    if (!this.deps.advisor || !certificate.fullchainPem) return;
    const now = this.deps.clock();
    const advice = await this.deps.advisor.advise(certificate.fullchainPem, now).catch(() => undefined);
    if (!advice) {
      await this.deps.store.certificates.setRenewal(certificate.id, { ariRetryAt: new Date(now.getTime() + ARI_UNAVAILABLE_RETRY_MS) });
      return;
    }
    await this.deps.store.certificates.setRenewal(certificate.id, { renewAt: advice.renewAt, ariRetryAt: advice.retryAt });
    await this.deps.store.jobs.reschedule(certificate.instanceId, advice.renewAt, certificate.id);
  }

  async onFailed(certificate: CertificateRecord): Promise<void> {
    const failure: FailureReason = certificate.failure ?? { reason: 'Internal', code: ErrorCode.INTERNAL };
    if (failure.reason === 'ValidationFailed') {
      const instance = failure.names ? undefined : await this.deps.store.instances.get(certificate.instanceId);
      await this.deps.onFailedValidation?.(failure.names ?? instance?.hostnames ?? []);
    }
    const job = await this.#jobOf(certificate);
    if (job) await this.#failJob(job, failure, certificate.lastError ?? failure.reason);
  }

  /** A job that could not even start (unknown instance, database trouble): decided like a failed issuance. */
  async onFailedJob(job: { id: string; attempts: number; instanceId: string; kind?: JobKind }, error: unknown): Promise<void> {
    await this.#failJob(job, failureOf(error), (error as Error).message);
  }

  async #failJob(job: { id: string; attempts: number; instanceId: string; kind?: JobKind }, failure: FailureReason, message: string): Promise<void> {
    const attempts = job.attempts + 1;
    const decision = retryDecision(failure, attempts, this.deps.clock(), this.deps.random);
    await this.deps.store.jobs.fail(job.id, message, decision.retry ? decision.at : null, failure);
    // A rechain that failed for good leaves the installed certificate as it was; the renewal
    // job its campaign may have taken over must be queued again, or nothing would renew it.
    if (job.kind === 'rechain' && !decision.retry) {
      const installed = await this.deps.store.certificates.latestInstalled(job.instanceId);
      if (installed) await this.scheduleRenewal(installed);
    }
    this.deps.logger.warn(
      { instanceId: job.instanceId, jobId: job.id, attempts, reason: failure.reason, retryAt: decision.retry ? decision.at : null },
      decision.retry ? 'job failed; retrying later' : decision.why === 'permanent' ? 'job failed for a reason a retry cannot fix' : 'job failed for good after too many attempts',
    );
  }

  async replacesFor(certificate: CertificateRecord): Promise<string | undefined> {
    return certificate.fullchainPem ? this.deps.advisor?.certId(certificate.fullchainPem) : undefined;
  }
}
