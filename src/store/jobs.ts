/**
 * Work that must survive restarts: renewal and reissue jobs, reissue campaigns, and the
 * audit trail of who asked for what and why. Jobs are claimed with FOR UPDATE SKIP
 * LOCKED and a lease, so several management-plane processes on one PostgreSQL share
 * the queue and never start the same job twice; a process that dies mid-claim loses its
 * lease and the job is claimed again.
 */
import { randomUUID } from 'node:crypto';
import { CERTIFICATE_STATES, isOpen, type FailureReason, type FailureReasonName, type ReissueMode, type SkipReason } from '../lifecycle/index.js';
import type { Database } from './engines.js';

/** `rechain`: deliver a stored chain of the installed certificate (no order); the others order a new certificate. */
export const JOB_KINDS = ['renewal', 'reissue', 'rechain'] as const;
export type JobKind = (typeof JOB_KINDS)[number];

/** Certificate states a job's work has ended in: a running job whose certificate is in one and whose claim lapsed lost its process between the two writes. */
const SETTLED_STATES = CERTIFICATE_STATES.filter((state) => !isOpen(state));
export type JobState = 'queued' | 'running' | 'done' | 'failed' | 'cancelled';

export interface JobRecord {
  readonly id: string;
  readonly kind: JobKind;
  readonly instanceId: string;
  readonly campaignId: string | null;
  readonly state: JobState;
  readonly dueAt: Date;
  readonly attempts: number;
  readonly claimedBy: string | null;
  readonly claimedUntil: Date | null;
  readonly certificateId: string | null;
  readonly lastError: string | null;
  /** The typed reason of the last failed attempt (lifecycle/reasons.ts). */
  readonly lastFailure: FailureReason | null;
  readonly reason: string;
  readonly requestedBy: string;
}

export type CampaignState = 'running' | 'done' | 'cancelled';

export interface CampaignRecord {
  readonly id: string;
  readonly selector: unknown;
  readonly reason: string;
  readonly requestedBy: string;
  readonly rotateKey: boolean;
  /** What the campaign does for each instance it matched (lifecycle/rechain.ts). */
  readonly mode: ReissueMode;
  readonly state: CampaignState;
  readonly matched: number;
  /**
   * The clusters of the instances it matched when it started (null for an instance without
   * a cluster): who may see and cancel it. null for a campaign from before they were
   * recorded whose selector did not say, which only callers without cluster limits reach.
   */
  readonly clusters: readonly (string | null)[] | null;
  readonly createdAt: Date;
  readonly finishedAt: Date | null;
}

/** Where a campaign stands, counted from its jobs and their certificates. */
export interface CampaignCounts {
  readonly matched: number;
  readonly queued: number;
  /** An order was placed (the certificate got past pending). */
  readonly ordered: number;
  readonly installed: number;
  /** Instances whose job failed for good. */
  readonly failed: number;
  /** Failed attempts over all the campaign's jobs, retried ones included. */
  readonly failedAttempts: number;
  /** Instances failed for good, by the reason of their last failure. */
  readonly failureReasons: Readonly<Partial<Record<FailureReasonName, number>>>;
  /** The certificate request waits for an agent that is not connected. */
  readonly waitingForAgent: number;
  readonly cancelled: number;
  /** Instances given a stored chain of their certificate instead of a new order (their rechain record was created). */
  readonly rechained: number;
  /** Instances the campaign reports without touching them (a rechain that cannot happen, or is not needed). */
  readonly skipped: number;
  readonly skippedReasons: Readonly<Partial<Record<SkipReason, number>>>;
}

/** The path a campaign gave one instance it matched. */
export interface CampaignInstance {
  readonly instanceId: string;
  readonly path: 'reissue' | 'rechain' | 'skip';
  readonly skipReason: SkipReason | null;
  /** The stored chain a rechain delivers. */
  readonly chainIndex: number | null;
}

/** The renewal the lifecycle decided for an installed certificate (jobs/lifecycle.ts). */
export interface RenewalPlan {
  readonly certificateId: string;
  readonly instanceId: string;
  readonly renewAt: Date;
  /** When to ask the CA's renewal information again; null: not before the next installation. */
  readonly ariRetryAt: Date | null;
  readonly reason: string;
  readonly requestedBy: string;
}

export interface JobStore {
  /** Queues a job; when the instance already has an open job, that job is returned unchanged (one open job per instance). */
  enqueue(input: { kind: JobKind; instanceId: string; dueAt: Date; reason: string; requestedBy: string; campaignId?: string }): Promise<{ job: JobRecord; created: boolean }>;
  /**
   * Claims up to `limit` due jobs for `owner` for `leaseMs`: queued ones due by `now` (the
   * caller's clock, which schedules), and running ones whose claim lapsed before they got a
   * certificate or after their certificate settled at least `leaseMs` ago (its process died
   * between settling the certificate and the job; a live one settles the job within
   * moments, and is never raced). Claims start, lapse and are compared on the database's
   * clock, as certificate leases are: processes whose clocks disagree still agree on who
   * holds a job. `kinds`: only jobs of these kinds (all by default).
   */
  claimDue(owner: string, now: Date, leaseMs: number, limit: number, kinds?: readonly JobKind[]): Promise<JobRecord[]>;
  get(id: string): Promise<JobRecord | undefined>;
  /** The open job waiting on `certificateId` (it may have adopted a certificate someone else started). */
  forCertificate(certificateId: string): Promise<JobRecord | undefined>;
  /** Records the certificate request a claimed job started. */
  attachCertificate(id: string, certificateId: string): Promise<void>;
  /**
   * What follows an installation, in one statement, so that no process can die between a
   * job done and its instance's renewal queued. Completes the job `complete` names while it
   * is queued or running (`jobId`, else the open job `waitingOn` the certificate, one that
   * adopted it); given `renewal`, sets that certificate's renewal time (as
   * certificates.setRenewal) and queues the instance's renewal job at it. When the instance
   * has another open job, that one stays (one open job per instance); a queued renewal is
   * moved to the new time, as `reschedule` moves it (never for a replaced certificate).
   */
  settleAndRenew(input: { complete?: { jobId: string | null; waitingOn?: string }; renewal?: RenewalPlan }): Promise<{ completedJobId: string | null; renewal: 'queued' | 'rescheduled' | 'kept' | null }>;
  /** Back in the queue at `dueAt` (not counted as an attempt: used when the rate limiter says wait). */
  postpone(id: string, dueAt: Date): Promise<void>;
  /** A failed attempt, with its typed reason: requeued at `retryAt`, or failed for good when `retryAt` is null. */
  fail(id: string, error: string, retryAt: Date | null, failure: FailureReason): Promise<JobRecord | undefined>;
  /**
   * Moves the instance's queued job to `dueAt` (ARI moved the window of `certificateId`),
   * unless a newer certificate has been installed since: advice about a replaced
   * certificate must never pull its successor's renewal forward.
   */
  reschedule(instanceId: string, dueAt: Date, certificateId: string): Promise<void>;
  /**
   * A campaign's jobs: one of its kind for each instance, due at `dueAt`, in one statement per
   * thousand instances. An instance with an open job (one per instance) keeps that job, made
   * part of the campaign instead: its kind, reason and requester become the campaign's, and
   * a queued one is due by `dueAt`.
   */
  enqueueCampaign(campaignId: string, jobs: readonly { instanceId: string; kind: Exclude<JobKind, 'renewal'> }[], input: { dueAt: Date; reason: string; requestedBy: string }): Promise<void>;
  cancelCampaign(campaignId: string): Promise<number>;
  /** Every job ever queued for an instance, oldest first: what tests and operators audit. */
  history(instanceId: string): Promise<JobRecord[]>;
}

export interface CampaignStore {
  /** A running campaign, with the path it gives each instance it matched (`paths`; none for a plain reissue of each). */
  create(input: { selector: unknown; reason: string; requestedBy: string; rotateKey: boolean; mode?: ReissueMode; matched: number; clusters: readonly (string | null)[]; paths?: readonly CampaignInstance[] }): Promise<CampaignRecord>;
  /** The instances the campaign reports without touching, in id order, at most `limit`. */
  skipped(id: string, limit: number): Promise<CampaignInstance[]>;
  get(id: string): Promise<CampaignRecord | undefined>;
  /** Running campaigns, oldest first, at most `limit`. */
  running(limit: number): Promise<CampaignRecord[]>;
  counts(id: string): Promise<CampaignCounts>;
  finish(id: string, state: 'done' | 'cancelled', at: Date): Promise<boolean>;
}

export interface AuditEntry {
  readonly at: Date;
  readonly actor: string;
  readonly action: string;
  readonly target: string | null;
  readonly reason: string | null;
  readonly details: unknown;
}

export interface AuditStore {
  record(entry: Omit<AuditEntry, 'at'>): Promise<void>;
  list(limit: number): Promise<AuditEntry[]>;
  /** The newest entry of `action` about `target`, if any. */
  latest(action: string, target: string): Promise<AuditEntry | undefined>;
}

/** Instances per statement when a campaign queues its jobs. */
const CAMPAIGN_BATCH = 1000;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

interface JobRow {
  id: string;
  kind: JobKind;
  instance_id: string;
  campaign_id: string | null;
  state: JobState;
  due_at: Date;
  attempts: number;
  claimed_by: string | null;
  claimed_until: Date | null;
  certificate_id: string | null;
  last_error: string | null;
  last_failure: FailureReason | null;
  reason: string;
  requested_by: string;
}

const toJob = (r: JobRow): JobRecord => ({
  id: r.id,
  kind: r.kind,
  instanceId: r.instance_id,
  campaignId: r.campaign_id,
  state: r.state,
  dueAt: r.due_at,
  attempts: r.attempts,
  claimedBy: r.claimed_by,
  claimedUntil: r.claimed_until,
  certificateId: r.certificate_id,
  lastError: r.last_error,
  lastFailure: r.last_failure,
  reason: r.reason,
  requestedBy: r.requested_by,
});

export class SqlJobs implements JobStore {
  constructor(private readonly db: Database) {}

  async enqueue(input: Parameters<JobStore['enqueue']>[0]): Promise<{ job: JobRecord; created: boolean }> {
    const [row] = await this.db.query<JobRow>(
      `INSERT INTO jobs (id, kind, instance_id, campaign_id, state, due_at, reason, requested_by)
       VALUES ($1, $2, $3, $4, 'queued', $5::timestamptz, $6, $7)
       ON CONFLICT (instance_id) WHERE state IN ('queued', 'running') DO NOTHING RETURNING *`,
      [randomUUID(), input.kind, input.instanceId, input.campaignId ?? null, input.dueAt, input.reason, input.requestedBy],
    );
    if (row) return { job: toJob(row), created: true };
    const [open] = await this.db.query<JobRow>("SELECT * FROM jobs WHERE instance_id = $1 AND state IN ('queued', 'running')", [input.instanceId]);
    if (!open) return this.enqueue(input);
    return { job: toJob(open), created: false };
  }

  async claimDue(owner: string, now: Date, leaseMs: number, limit: number, kinds?: readonly JobKind[]): Promise<JobRecord[]> {
    const rows = await this.db.query<JobRow>(
      `UPDATE jobs SET state = 'running', claimed_by = $1, claimed_until = now() + ($3 || ' milliseconds')::interval, updated_at = now()
       WHERE id IN (
         SELECT id FROM jobs
         WHERE ((state = 'queued' AND due_at <= $2::timestamptz)
            OR (state = 'running' AND claimed_until < now() AND (certificate_id IS NULL
                OR EXISTS (SELECT 1 FROM certificates c WHERE c.id = jobs.certificate_id AND c.status = ANY($5::text[])
                           AND c.state_changed_at < now() - ($3 || ' milliseconds')::interval))))
           AND kind = ANY($6::text[])
         ORDER BY due_at
         LIMIT $4
         FOR UPDATE SKIP LOCKED
       ) RETURNING *`,
      [owner, now, String(leaseMs), limit, SETTLED_STATES, kinds ?? JOB_KINDS],
    );
    return rows.map(toJob);
  }

  async get(id: string): Promise<JobRecord | undefined> {
    if (!UUID.test(id)) return undefined;
    const [row] = await this.db.query<JobRow>('SELECT * FROM jobs WHERE id = $1', [id]);
    return row && toJob(row);
  }

  async forCertificate(certificateId: string): Promise<JobRecord | undefined> {
    if (!UUID.test(certificateId)) return undefined;
    const [row] = await this.db.query<JobRow>("SELECT * FROM jobs WHERE certificate_id = $1 AND state IN ('queued', 'running')", [certificateId]);
    return row && toJob(row);
  }

  async attachCertificate(id: string, certificateId: string): Promise<void> {
    await this.db.query('UPDATE jobs SET certificate_id = $2, updated_at = now() WHERE id = $1', [id, certificateId]);
  }

  async settleAndRenew(input: Parameters<JobStore['settleAndRenew']>[0]): Promise<{ completedJobId: string | null; renewal: 'queued' | 'rescheduled' | 'kept' | null }> {
    const { complete, renewal } = input;
    // Sub-statements of one statement see the same snapshot and run in no set order, except
    // where one reads another's rows: the renewal's INSERT reads `done`, so the job is done
    // (out of the one-open-job index) before the insert checks that index, and the insert of
    // a renewal for the instance whose only open job was this one goes through.
    const [row] = await this.db.query<{ completed: string | null; queued: string | null; moved: string | null }>(
      `WITH answering AS (
         SELECT COALESCE(
           (SELECT id FROM jobs WHERE id = $1::uuid AND state IN ('queued', 'running')),
           (SELECT id FROM jobs WHERE certificate_id = $2::uuid AND state IN ('queued', 'running') LIMIT 1)) AS id
       ), done AS (
         UPDATE jobs SET state = 'done', claimed_until = NULL, updated_at = now()
         WHERE id = (SELECT id FROM answering) AND state IN ('queued', 'running') RETURNING id
       ), renewal_time AS (
         UPDATE certificates SET renew_at = $5::timestamptz, ari_retry_at = $6::timestamptz, updated_at = now()
         WHERE id = $3::uuid AND status = 'installed' RETURNING id
       ), moved AS (
         UPDATE jobs SET due_at = $5::timestamptz, updated_at = now()
         WHERE instance_id = $4::uuid AND state = 'queued' AND kind = 'renewal' AND id IS DISTINCT FROM (SELECT id FROM answering)
           AND NOT EXISTS (
             SELECT 1 FROM certificates c JOIN certificates n ON n.instance_id = c.instance_id
             WHERE c.id = $3::uuid AND n.status = 'installed' AND n.creation_order > c.creation_order
           )
         RETURNING id
       ), queued AS (
         INSERT INTO jobs (id, kind, instance_id, campaign_id, state, due_at, reason, requested_by)
         SELECT $7::uuid, 'renewal', $4::uuid, NULL, 'queued', $5::timestamptz, $8, $9
         FROM (SELECT count(*) FROM done) AS after_done
         WHERE $4::uuid IS NOT NULL
           AND NOT EXISTS (
             SELECT 1 FROM certificates c JOIN certificates n ON n.instance_id = c.instance_id
             WHERE c.id = $3::uuid AND n.status = 'installed' AND n.creation_order > c.creation_order
           )
         ON CONFLICT (instance_id) WHERE state IN ('queued', 'running') DO NOTHING RETURNING id
       )
       SELECT (SELECT id FROM done) AS completed, (SELECT id FROM queued) AS queued, (SELECT id FROM moved LIMIT 1) AS moved`,
      [
        complete?.jobId ?? null,
        complete?.waitingOn ?? null,
        renewal?.certificateId ?? null,
        renewal?.instanceId ?? null,
        renewal?.renewAt ?? null,
        renewal?.ariRetryAt ?? null,
        randomUUID(),
        renewal?.reason ?? null,
        renewal?.requestedBy ?? null,
      ],
    );
    const outcome = !renewal ? null : row?.queued ? 'queued' : row?.moved ? 'rescheduled' : 'kept';
    return { completedJobId: row?.completed ?? null, renewal: outcome };
  }

  async postpone(id: string, dueAt: Date): Promise<void> {
    await this.db.query("UPDATE jobs SET state = 'queued', due_at = $2::timestamptz, claimed_by = NULL, claimed_until = NULL, certificate_id = NULL, updated_at = now() WHERE id = $1 AND state = 'running'", [id, dueAt]);
  }

  async fail(id: string, error: string, retryAt: Date | null, failure: FailureReason): Promise<JobRecord | undefined> {
    const [row] = await this.db.query<JobRow>(
      `UPDATE jobs SET attempts = attempts + 1, last_error = $2, last_failure = $4::text::jsonb, state = CASE WHEN $3::timestamptz IS NULL THEN 'failed' ELSE 'queued' END,
         due_at = COALESCE($3::timestamptz, due_at), claimed_by = NULL, claimed_until = NULL, certificate_id = NULL, updated_at = now()
       WHERE id = $1 AND state IN ('queued', 'running') RETURNING *`,
      [id, error.slice(0, 4000), retryAt, JSON.stringify(failure)],
    );
    return row && toJob(row);
  }

  async reschedule(instanceId: string, dueAt: Date, certificateId: string): Promise<void> {
    await this.db.query(
      `UPDATE jobs SET due_at = $2::timestamptz, updated_at = now()
       WHERE instance_id = $1 AND state = 'queued'
         AND NOT EXISTS (
           SELECT 1 FROM certificates c JOIN certificates n ON n.instance_id = c.instance_id
           WHERE c.id = $3 AND n.status = 'installed' AND n.creation_order > c.creation_order
         )`,
      [instanceId, dueAt, certificateId],
    );
  }

  async enqueueCampaign(campaignId: string, jobs: Parameters<JobStore['enqueueCampaign']>[1], input: Parameters<JobStore['enqueueCampaign']>[2]): Promise<void> {
    for (let start = 0; start < jobs.length; start += CAMPAIGN_BATCH) {
      const batch = jobs.slice(start, start + CAMPAIGN_BATCH);
      // One row per instance: ON CONFLICT DO UPDATE may not touch a row twice in a statement.
      await this.db.query(
        `INSERT INTO jobs (id, kind, instance_id, campaign_id, state, due_at, reason, requested_by)
         SELECT j.id, j.kind, j.instance_id, $3::uuid, 'queued', $4::timestamptz, $5, $6
         FROM (SELECT DISTINCT ON (instance_id) id, instance_id, kind FROM unnest($7::uuid[], $1::uuid[], $2::text[]) AS u (id, instance_id, kind) ORDER BY instance_id) AS j
         ON CONFLICT (instance_id) WHERE state IN ('queued', 'running') DO UPDATE SET campaign_id = EXCLUDED.campaign_id, kind = EXCLUDED.kind,
           reason = EXCLUDED.reason, requested_by = EXCLUDED.requested_by,
           due_at = CASE WHEN jobs.state = 'queued' THEN LEAST(jobs.due_at, EXCLUDED.due_at) ELSE jobs.due_at END, updated_at = now()`,
        [batch.map((j) => j.instanceId), batch.map((j) => j.kind), campaignId, input.dueAt, input.reason, input.requestedBy, batch.map(() => randomUUID())],
      );
    }
  }

  async cancelCampaign(campaignId: string): Promise<number> {
    const rows = await this.db.query("UPDATE jobs SET state = 'cancelled', updated_at = now() WHERE campaign_id = $1 AND state = 'queued' RETURNING id", [campaignId]);
    return rows.length;
  }

  async history(instanceId: string): Promise<JobRecord[]> {
    if (!UUID.test(instanceId)) return [];
    return (await this.db.query<JobRow>('SELECT * FROM jobs WHERE instance_id = $1 ORDER BY created_at, id', [instanceId])).map(toJob);
  }
}

interface CampaignRow {
  id: string;
  selector: unknown;
  reason: string;
  requested_by: string;
  rotate_key: boolean;
  mode: ReissueMode;
  state: CampaignState;
  matched: number;
  clusters: (string | null)[] | null;
  created_at: Date;
  finished_at: Date | null;
}

const toCampaign = (r: CampaignRow): CampaignRecord => ({
  id: r.id,
  selector: r.selector,
  reason: r.reason,
  requestedBy: r.requested_by,
  rotateKey: r.rotate_key,
  mode: r.mode,
  state: r.state,
  matched: r.matched,
  clusters: r.clusters,
  createdAt: r.created_at,
  finishedAt: r.finished_at,
});

export class SqlCampaigns implements CampaignStore {
  constructor(private readonly db: Database) {}

  async create(input: Parameters<CampaignStore['create']>[0]): Promise<CampaignRecord> {
    return this.db.transaction(async (tx) => {
      const [row] = await tx.query<CampaignRow>(
        "INSERT INTO campaigns (id, selector, reason, requested_by, rotate_key, mode, state, matched, clusters) VALUES ($1, $2::text::jsonb, $3, $4, $5, $8, 'running', $6, $7::text[]) RETURNING *",
        [randomUUID(), JSON.stringify(input.selector), input.reason, input.requestedBy, input.rotateKey, input.matched, input.clusters, input.mode ?? 'reissue'],
      );
      const campaign = toCampaign(row as CampaignRow);
      const paths = input.paths ?? [];
      if (paths.length > 0) {
        await tx.query(
          `INSERT INTO campaign_instances (campaign_id, instance_id, path, skip_reason, chain_index)
           SELECT $1::uuid, p.instance_id, p.path, p.skip_reason, p.chain_index FROM unnest($2::uuid[], $3::text[], $4::text[], $5::int[]) AS p (instance_id, path, skip_reason, chain_index)`,
          [campaign.id, paths.map((p) => p.instanceId), paths.map((p) => p.path), paths.map((p) => p.skipReason), paths.map((p) => p.chainIndex)],
        );
      }
      return campaign;
    });
  }

  async skipped(id: string, limit: number): Promise<CampaignInstance[]> {
    if (!UUID.test(id)) return [];
    const rows = await this.db.query<{ instance_id: string; path: 'skip'; skip_reason: SkipReason | null; chain_index: number | null }>(
      "SELECT instance_id, path, skip_reason, chain_index FROM campaign_instances WHERE campaign_id = $1 AND path = 'skip' ORDER BY instance_id LIMIT $2",
      [id, limit],
    );
    return rows.map((r) => ({ instanceId: r.instance_id, path: r.path, skipReason: r.skip_reason, chainIndex: r.chain_index }));
  }

  async get(id: string): Promise<CampaignRecord | undefined> {
    if (!UUID.test(id)) return undefined;
    const [row] = await this.db.query<CampaignRow>('SELECT * FROM campaigns WHERE id = $1', [id]);
    return row && toCampaign(row);
  }

  async running(limit: number): Promise<CampaignRecord[]> {
    const rows = await this.db.query<CampaignRow>("SELECT * FROM campaigns WHERE state = 'running' ORDER BY created_at LIMIT $1", [limit]);
    return rows.map(toCampaign);
  }

  async counts(id: string): Promise<CampaignCounts> {
    const [row] = await this.db.query<Record<string, string | number>>(
      `SELECT
         count(*) AS matched,
         count(*) FILTER (WHERE j.state = 'queued') AS queued,
         count(*) FILTER (WHERE EXISTS (SELECT 1 FROM certificates o WHERE o.job_id = j.id AND o.order_url IS NOT NULL)) AS ordered,
         count(*) FILTER (WHERE j.state = 'done') AS installed,
         count(*) FILTER (WHERE j.state = 'failed') AS failed,
         count(*) FILTER (WHERE j.state = 'running' AND c.status = 'pending' AND i.agent_connected_at IS NULL) AS waiting_for_agent,
         count(*) FILTER (WHERE j.state = 'cancelled') AS cancelled,
         count(*) FILTER (WHERE EXISTS (SELECT 1 FROM certificates r WHERE r.job_id = j.id AND r.rechained_from_id IS NOT NULL)) AS rechained,
         COALESCE(sum(j.attempts), 0) AS failed_attempts
       FROM jobs j
       JOIN instances i ON i.id = j.instance_id
       LEFT JOIN certificates c ON c.id = j.certificate_id
       WHERE j.campaign_id = $1`,
      [id],
    );
    const reasons = await this.db.query<{ reason: FailureReasonName; count: string | number }>(
      "SELECT last_failure->>'reason' AS reason, count(*) AS count FROM jobs WHERE campaign_id = $1 AND state = 'failed' AND last_failure IS NOT NULL GROUP BY 1 ORDER BY 1",
      [id],
    );
    const skips = await this.db.query<{ reason: SkipReason; count: string | number }>(
      "SELECT skip_reason AS reason, count(*) AS count FROM campaign_instances WHERE campaign_id = $1 AND path = 'skip' GROUP BY 1 ORDER BY 1",
      [id],
    );
    const n = (key: string) => Number(row?.[key] ?? 0);
    const skipped = skips.reduce((total, r) => total + Number(r.count), 0);
    return {
      matched: n('matched') + skipped,
      queued: n('queued'),
      ordered: n('ordered'),
      installed: n('installed'),
      failed: n('failed'),
      failedAttempts: n('failed_attempts'),
      failureReasons: Object.fromEntries(reasons.map((r) => [r.reason, Number(r.count)])),
      waitingForAgent: n('waiting_for_agent'),
      cancelled: n('cancelled'),
      rechained: n('rechained'),
      skipped,
      skippedReasons: Object.fromEntries(skips.map((r) => [r.reason, Number(r.count)])),
    };
  }

  async finish(id: string, state: 'done' | 'cancelled', at: Date): Promise<boolean> {
    const rows = await this.db.query("UPDATE campaigns SET state = $2, finished_at = $3::timestamptz WHERE id = $1 AND state = 'running' RETURNING id", [id, state, at]);
    return rows.length > 0;
  }
}

export class SqlAudit implements AuditStore {
  constructor(private readonly db: Database) {}

  async record(entry: Omit<AuditEntry, 'at'>): Promise<void> {
    await this.db.query('INSERT INTO audit_log (actor, action, target, reason, details) VALUES ($1, $2, $3, $4, $5::text::jsonb)', [
      entry.actor,
      entry.action,
      entry.target,
      entry.reason,
      entry.details === undefined ? null : JSON.stringify(entry.details),
    ]);
  }

  async list(limit: number): Promise<AuditEntry[]> {
    const rows = await this.db.query<AuditRow>(
      'SELECT at, actor, action, target, reason, details FROM audit_log ORDER BY id DESC LIMIT $1',
      [limit],
    );
    return rows.map(auditEntry);
  }

  async latest(action: string, target: string): Promise<AuditEntry | undefined> {
    const rows = await this.db.query<AuditRow>('SELECT at, actor, action, target, reason, details FROM audit_log WHERE action = $1 AND target = $2 ORDER BY id DESC LIMIT 1', [action, target]);
    return rows[0] ? auditEntry(rows[0]) : undefined;
  }
}

interface AuditRow {
  at: Date;
  actor: string;
  action: string;
  target: string | null;
  reason: string | null;
  details: unknown;
}

function auditEntry(r: AuditRow): AuditEntry {
  return { at: r.at, actor: r.actor, action: r.action, target: r.target, reason: r.reason, details: r.details };
}
