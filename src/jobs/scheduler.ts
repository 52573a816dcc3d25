/**
 * The loop that turns due jobs into certificate requests. Every management-plane process
 * runs one; they share the queue through the database (claims with SKIP LOCKED and a
 * lease), so a renewal is started once however many processes there are, and work
 * survives restarts. Each tick also refreshes due ARI windows and runs the coordinator's
 * fallback pass (work another process created reaches the agents here even when its
 * notification was lost), whose cost follows what changed, not how many agents are here.
 */
import type { Logger } from 'pino';
import { processName } from '../process-name.js';
import type { IssuanceCoordinator, IssuanceMetrics } from '../fleet/issuance.js';
import { JOB_KINDS, type CertificateRecord, type JobKind, type JobRecord, type Store } from '../store/index.js';
import type { JobLifecycle } from './lifecycle.js';
import type { Rechains } from './rechain.js';
import { isOpen } from '../lifecycle/index.js';
import { CertplaneError } from '../errors.js';
import { ErrorCode } from '../error-catalogue.js';

export interface SchedulerOptions {
  readonly store: Store;
  /** `room` (how many more certificates it can take towards an order) paces the claims; without it they are not paced. */
  readonly coordinator: Pick<IssuanceCoordinator, 'requestIssue' | 'reconcileChanged'> & Partial<Pick<IssuanceCoordinator, 'room'>>;
  readonly lifecycle: JobLifecycle;
  readonly logger: Logger;
  readonly clock: () => Date;
  readonly intervalMs?: number;
  readonly batchSize?: number;
  readonly leaseMs?: number;
  /** Carries out rechain jobs; without it they fail as internal errors. */
  readonly rechains?: Pick<Rechains, 'run'>;
  /** Told how long each claimed job waited past its due time (the job_claim stage). */
  readonly metrics?: Pick<IssuanceMetrics, 'stage'>;
}

/** ARI windows asked again per tick (the rest wait for the next one). */
const ARI_BATCH = 20;
/**
 * Claimed jobs started at once, each by a worker that takes the next job as soon as its own
 * is started (no batch waits for its slowest). A start is a few queries, at most two at a
 * time, and a prompt to an agent. 10 started no faster than 6 in the bench's
 * 1,000-instance campaign when the PostgreSQL pool held 20; with 8 kept (store/engines.ts)
 * the campaign measured as fast or faster.
 */
const PARALLEL_STARTS = 6;
/** Jobs that place an order, claimed as the coordinator has room; and the rest. */
const ORDER_KINDS: readonly JobKind[] = JOB_KINDS.filter((kind) => kind !== 'rechain');
const RECHAIN_KINDS: readonly JobKind[] = ['rechain'];

export class Scheduler {
  /** Names this process in job claims, for operators reading the jobs table. */
  readonly owner = processName();
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  readonly #stopping = new AbortController();
  #started = false;
  /** Asked for while a pass was under way: run it right after (a whole tick outranks claims only). */
  #next: 'tick' | 'claims' | undefined;
  /** The last claims stopped because the coordinator had no room, with jobs perhaps still due. */
  #heldBack = false;

  constructor(private readonly options: SchedulerOptions) {}

  start(): void {
    if (this.#started) return;
    this.#started = true;
    this.#run('tick');
  }

  /**
   * Work was queued in this process that is due now (a campaign started): tick at once rather
   * than after the interval, or right after the tick under way. Other processes still find it
   * on their own next tick.
   */
  wake(): void {
    this.#run('tick');
  }

  /**
   * The coordinator's room grew (an order here ended): if the last claims stopped for want of
   * room, claim again now rather than at the next tick. Only the claims: the ARI refresh and
   * the fallback pass keep the interval's pace, however often orders end.
   */
  roomFreed(): void {
    if (this.#heldBack) this.#run('claims');
  }

  /** Runs a whole tick or only the claims, now or right after the pass under way; whole ticks follow each other at the interval. */
  #run(kind: 'tick' | 'claims'): void {
    const { signal } = this.#stopping;
    if (signal.aborted || !this.#started) return;
    if (this.#running) {
      if (this.#next !== 'tick') this.#next = kind;
      return;
    }
    if (kind === 'tick') clearTimeout(this.#timer);
    this.#running = (kind === 'tick' ? this.tick(signal) : this.#claimAndStart(signal))
      .catch((error) => this.options.logger.error({ err: (error as Error).message }, 'scheduler tick failed'))
      .finally(() => {
        this.#running = undefined;
        if (signal.aborted) return;
        if (kind === 'tick') this.#timer = setTimeout(() => this.#run('tick'), this.options.intervalMs ?? 1000);
        const next = this.#next;
        this.#next = undefined;
        if (next) this.#run(next);
      });
  }

  /** Stops claiming: the tick under way ends at its next step (jobs it claimed are started first), and no other follows. */
  async stop(): Promise<void> {
    this.#stopping.abort();
    clearTimeout(this.#timer);
    await this.#running;
  }

  /**
   * One pass: claim due jobs and start them, refresh due ARI windows, wake the agents here
   * whose work changed. `signal` ends it between steps; jobs already claimed are still started
   * (starting one only records its certificate request), so a stopping process leaves no claim
   * behind to wait out its lease.
   */
  async tick(signal?: AbortSignal): Promise<void> {
    const { store, clock } = this.options;
    if (signal?.aborted) return;
    const now = clock();
    await this.#claimAndStart(signal);
    for (const certificate of signal?.aborted ? [] : await store.certificates.ariDue(now, ARI_BATCH)) {
      if (signal?.aborted) return;
      await this.options.lifecycle.refreshAdvice(certificate);
    }
    if (signal?.aborted) return;
    await this.options.coordinator.reconcileChanged(signal);
  }

  /**
   * Claims due jobs and starts them, batch after batch while batches come back full (a
   * campaign is not paced by the interval). Jobs that order (renewals, reissues) are claimed
   * no faster than the coordinator has room: the rest stay queued, for this process when an
   * order of its own ends (roomFreed) or for another process with room. Rechain jobs place
   * no order and are claimed first, unpaced.
   */
  async #claimAndStart(signal?: AbortSignal): Promise<void> {
    this.#heldBack = false;
    await this.#claimKinds(signal, RECHAIN_KINDS, () => Number.POSITIVE_INFINITY);
    await this.#claimKinds(signal, ORDER_KINDS, () => this.options.coordinator.room?.() ?? Number.POSITIVE_INFINITY);
  }

  async #claimKinds(signal: AbortSignal | undefined, kinds: readonly JobKind[], room: () => number): Promise<void> {
    const { store, clock } = this.options;
    const batchSize = this.options.batchSize ?? 50;
    while (!signal?.aborted) {
      const limit = Math.min(batchSize, room());
      if (limit <= 0) {
        this.#heldBack = true;
        return;
      }
      const jobs = await store.jobs.claimDue(this.owner, clock(), this.options.leaseMs ?? 60_000, limit, kinds);
      const claimedAt = clock().getTime();
      for (const job of jobs) this.options.metrics?.stage('job_claim', Math.max(0, claimedAt - job.dueAt.getTime()) / 1000);
      // Each job's start is a few queries and a prompt to an agent: independent, so a few at a
      // time, never so many that they take every pooled connection from the API and the channel.
      let next = 0;
      const worker = async () => {
        while (next < jobs.length) await this.#start(jobs[next++] as JobRecord);
      };
      await Promise.all(Array.from({ length: Math.min(PARALLEL_STARTS, jobs.length) }, worker));
      if (jobs.length < limit) return;
    }
  }

  async #start(job: JobRecord): Promise<void> {
    try {
      // A claim taken again after its process died (or lost the database) between starting the
      // certificate and recording it on the job, or between settling the certificate and the
      // job: a settled certificate settles the job as its process would have, it is never a
      // reason to order a second one.
      // Only the certificate the job still points at settles it: a job queued again after a
      // failed attempt has no certificate, and its earlier attempts' certificates are history
      // (an installed one of its own, found without the pointer, means the work was done).
      // What the job points at (or else the newest certificate it started) and what the
      // instance has installed, read in one statement.
      const { certificates } = this.options.store;
      const { found, installed: replaced } = await certificates.ofJob(job);
      const attached = job.certificateId ? found : undefined;
      const started = found ?? (job.certificateId ? await certificates.latestOfJob(job.id) : undefined);
      if (started && ((attached !== undefined && !isOpen(started.status)) || started.status === 'installed')) {
        await this.#settle(job, started);
        return;
      }
      if (job.kind === 'rechain') return await this.#rechain(job, started && isOpen(started.status) ? started : undefined);
      const certificate = await this.options.coordinator.requestIssue(job.instanceId, { jobId: job.id, replacesCertificateId: replaced?.id });
      // A certificate created for this job, or adopted by it, in this call was linked both ways
      // as it was written. One the job had started before (a previous process, or a previous
      // release that linked in two steps) may point at the job without the job pointing back.
      const linkedAsWritten = certificate.jobId === job.id && certificate.id !== started?.id;
      if (!linkedAsWritten && job.certificateId !== certificate.id) await this.options.store.jobs.attachCertificate(job.id, certificate.id);
      this.options.logger.info({ jobId: job.id, kind: job.kind, instanceId: job.instanceId, certificateId: certificate.id, campaignId: job.campaignId }, 'job started');
    } catch (error) {
      await this.options.lifecycle.onFailedJob(job, error);
    }
  }

  /**
   * A rechain job: its rechain record is created (and delivered by the coordinator), unless a
   * claim before this one created it already. An installed chain that is already the one the
   * trust in force selects leaves nothing to do: the job is done, and the renewal it may have
   * taken over is queued again.
   */
  async #rechain(job: JobRecord, started: CertificateRecord | undefined): Promise<void> {
    const { store, lifecycle, logger } = this.options;
    if (!this.options.rechains) throw new Error('this process carries out no rechain jobs');
    const certificate = started ?? (await this.options.rechains.run(job));
    if (certificate === 'current') {
      await lifecycle.onDoneWithoutCertificate(job);
      logger.info({ jobId: job.id, instanceId: job.instanceId, campaignId: job.campaignId }, 'rechain job: the installed chain is already the one selected; nothing to do');
      return;
    }
    await store.jobs.attachCertificate(job.id, certificate.id);
    logger.info({ jobId: job.id, kind: job.kind, instanceId: job.instanceId, certificateId: certificate.id, campaignId: job.campaignId }, 'job started');
  }

  /**
   * Finishes a claimed-again job whose certificate settled without its job (its process died
   * in between, or a revocation overtook the delivery): what the issuance listener would have done.
   */
  async #settle(job: JobRecord, certificate: CertificateRecord): Promise<void> {
    const { lifecycle, logger } = this.options;
    if (certificate.status === 'installed') await lifecycle.onInstalled(certificate);
    else if (certificate.status === 'failed') await lifecycle.onFailed(certificate);
    else if (certificate.installedAt === null) {
      // Revoked before its agent installed it: the instance still needs the certificate.
      await lifecycle.onFailedJob(job, new CertplaneError(ErrorCode.ISSUANCE_REVOKED_BEFORE_INSTALL, `certificate ${certificate.id} was revoked before its agent installed it; a new one is ordered`));
    } else {
      // Installed once and replaced or revoked since: the job's work was done.
      await lifecycle.onDoneWithoutCertificate(job);
    }
    logger.info({ jobId: job.id, instanceId: job.instanceId, certificateId: certificate.id, status: certificate.status }, 'job claimed again found its certificate settled; settled the job the same way');
  }
}
