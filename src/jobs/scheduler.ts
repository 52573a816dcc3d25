/**
 * The loop that turns due jobs into certificate requests. Every management-plane process
 * runs one; they share the queue through the database (claims with SKIP LOCKED and a
 * lease), so a renewal is started once however many processes there are, and work
 * survives restarts. Each tick also refreshes due ARI windows and re-prompts the agents
 * connected to this process (work created by another process reaches them that way).
 */
import type { Logger } from 'pino';
import { processName } from '../process-name.js';
import type { IssuanceCoordinator } from '../agents/issuance.js';
import type { CertificateRecord, JobRecord, Store } from '../store/index.js';
import type { JobLifecycle } from './lifecycle.js';

export interface SchedulerOptions {
  readonly store: Store;
  readonly coordinator: Pick<IssuanceCoordinator, 'requestIssue' | 'reconcileConnected'>;
  readonly lifecycle: JobLifecycle;
  /** Ids of the instances whose agents are connected to this process. */
  readonly connectedInstances: () => readonly string[];
  readonly logger: Logger;
  readonly clock: () => Date;
  readonly intervalMs?: number;
  readonly batchSize?: number;
  readonly leaseMs?: number;
}

export class Scheduler {
  /** Names this process in job claims, for operators reading the jobs table. */
  readonly owner = processName();
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #stopped = false;

  constructor(private readonly options: SchedulerOptions) {}

  start(): void {
    const loop = () => {
      if (this.#stopped) return;
      this.#running = this.tick()
        .catch((error) => this.options.logger.error({ err: (error as Error).message }, 'scheduler tick failed'))
        .finally(() => {
          if (!this.#stopped) this.#timer = setTimeout(loop, this.options.intervalMs ?? 1000);
        });
    };
    loop();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#running;
  }

  /** One pass: claim due jobs and start them, refresh due ARI windows, re-prompt connected agents. */
  async tick(): Promise<void> {
    const { store, clock } = this.options;
    const now = clock();
    const jobs = await store.jobs.claimDue(this.owner, now, this.options.leaseMs ?? 60_000, this.options.batchSize ?? 50);
    for (const job of jobs) await this.#start(job);
    for (const certificate of await this.#ariDue(now)) await this.options.lifecycle.refreshAdvice(certificate);
    await this.options.coordinator.reconcileConnected(this.options.connectedInstances());
  }

  async #start(job: JobRecord): Promise<void> {
    try {
      const replaced = await this.options.store.certificates.latestInstalled(job.instanceId);
      const certificate = await this.options.coordinator.requestIssue(job.instanceId, { jobId: job.id, replacesCertificateId: replaced?.id });
      await this.options.store.jobs.attachCertificate(job.id, certificate.id);
      this.options.logger.info({ jobId: job.id, kind: job.kind, instanceId: job.instanceId, certificateId: certificate.id, campaignId: job.campaignId }, 'job started');
    } catch (error) {
      await this.options.lifecycle.onFailedJob(job, error);
    }
  }

  async #ariDue(now: Date): Promise<CertificateRecord[]> {
    const rows = await this.options.store.query<{ id: string }>(
      // Only the current certificate of each instance: a replaced one's window no longer matters.
      // Nor a decommissioned instance's: it is never renewed.
      `SELECT c.id FROM certificates c JOIN instances i ON i.id = c.instance_id
       WHERE c.status = 'installed' AND c.ari_retry_at IS NOT NULL AND c.ari_retry_at <= $1::timestamptz AND i.decommissioned_at IS NULL
         AND NOT EXISTS (SELECT 1 FROM certificates n WHERE n.instance_id = c.instance_id AND n.status = 'installed' AND n.creation_order > c.creation_order)
       ORDER BY c.ari_retry_at LIMIT 20`,
      [now],
    );
    const certificates = await Promise.all(rows.map((r) => this.options.store.certificates.get(r.id)));
    return certificates.filter((c): c is CertificateRecord => c !== undefined);
  }
}
