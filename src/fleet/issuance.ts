/**
 * Issuance through the agent, with delivery acknowledged. The plane asks the agent for a
 * CSR, checks it against what the instance may have, orders and verifies through the
 * ACME issuer (http-01 answered by the agent itself), and delivers the chain until the
 * agent acknowledges it with the fingerprint. Every step is a compare-and-set status
 * transition in the store, so a repeated message, a reconnect or a second delivery can
 * never install twice or move a certificate backwards.
 */
import type { Logger } from 'pino';
import { CertplaneError, hasCode } from '../errors.js';
import { KEY_DESCRIPTIONS, ORDERED_CSR_LIMITS, csrPemBytesFor, normaliseDnsName, parseCertificateBundle, parseCsr, type VerificationReport } from '../chain/index.js';
import { ACME_STAGES, sameNames, type IssueOptions, type IssuedChain, type LateCsr } from '../acme/issuer.js';
import { Http01Solver, type ChallengeSolver } from '../acme/solver.js';
import {
  DEFAULT_LEASE_MS,
  ORDERING_STATES,
  afterStop,
  earlyOrderRefusal,
  isPermanent,
  leaseRenewalMs,
  parkedLeaseMs,
  planOrder,
  takeUpRefusal,
  type FailureReason,
  type LifecycleEvent,
  type OrderPlan,
  type OrderStanding,
  type StopCause,
} from '../lifecycle/index.js';
import type { CertificateRecord, CertificateUpdate, InstanceRecord, Store } from '../store/types.js';
import { agentRefused, failureOf } from './failures.js';
import { decommissioned } from './revocation.js';
import { escapeControlCharacters } from '../untrusted-text.js';
import { processName } from '../process-name.js';
import type { AgentMessage } from '../channel/protocol.js';
import { SessionRegistry, type AgentSession, type SessionHandler } from './sessions.js';
import { Slots } from './slots.js';
import { ErrorCode } from '../error-catalogue.js';
import { DEFAULT_ISSUANCE_CONCURRENCY } from '../config/config.js';

/** The ACME side, as the coordinator needs it. */
export interface Issuer {
  /** `csr` is the CSR, or for an order placed before it arrives, the names and a wait for it (awaited before finalization). */
  issue(csr: string | LateCsr, options: Pick<IssueOptions, 'solvers' | 'profile' | 'replaces' | 'onOrderCreated' | 'resumeOrderUrl' | 'signal' | 'onStage' | 'trustProfiles'>): Promise<IssuedChain>;
  /** Where a stored order stands at the CA, so a process taking the work over resumes it when it can. */
  orderStanding(orderUrl: string): Promise<OrderStanding>;
}

/** Paces orders under the CA's limits (jobs/ratelimit.ts); the coordinator asks before every order. */
export interface OrderGate {
  acquire(request: { hostnames: string[]; attempt: 'first' | 'retry' }): Promise<{ granted: true; decidedAt: Date } | { granted: false; retryAt: Date; limitedBy: string }>;
  /** The CA said rateLimited: no process orders again before `until`. */
  blockUntil(until: Date, reason: string): Promise<void>;
}

/** How long to stop ordering after the CA answers rateLimited without a Retry-After. */
const RATE_LIMITED_PAUSE_MS = 15 * 60_000;

/** Told when a certificate settles, so renewal and reissue jobs can follow (jobs/lifecycle.ts). */
export interface IssuanceListener {
  onInstalled(certificate: CertificateRecord): Promise<void>;
  /** `certificate.failure` says why, typed. */
  onFailed(certificate: CertificateRecord): Promise<void>;
  /** The ARI `replaces` value for an order that replaces `certificate`, when the CA supports it. */
  replacesFor?(certificate: CertificateRecord): Promise<string | undefined>;
}

/** How long a prompt (CSR request, delivery) waits for an answer before it is sent again. */
const PROMPT_AGAIN_MS = 30_000;
/** After this many prompt intervals a CSR request is forgotten by room() (it stopped counting after the first). */
const FORGET_ASKED_PROMPTS = 10;
/** After the shutdown grace, how long aborted orders get to stop at a step boundary before their leases are released for them. */
const ABORT_SETTLE_MS = 1_000;
/**
 * How far back each fallback pass looks again past the previous one's read: a change
 * committed late (its transaction began before that read) still has its earlier time.
 */
const CHANGE_OVERLAP_MS = 5_000;

/**
 * Where the time of one issuance goes, in order, for certplane_issuance_stage_duration_seconds:
 * the job waiting to be claimed, the agent making its key and CSR, checking it (and taking the
 * lease with its acceptance when a slot is free), waiting for an issuance slot, the lease
 * otherwise and the rate limiter, the ACME order's own stages (acme/issuer.ts), recording the
 * verified chain, delivery, the agent installing it, recording its acknowledgement, and
 * end_to_end from the CSR request to that acknowledgement. An order placed while the agent
 * makes its CSR runs beside `csr` and `csr_check`, and `awaiting_csr` is its wait for the
 * accepted CSR before finalization (none when the CSR was there first).
 */
export const ISSUANCE_STAGES = [
  'job_claim',
  'csr',
  'csr_check',
  'queued',
  'lease',
  ...(ACME_STAGES.slice(0, ACME_STAGES.indexOf('finalize')) as ['order', 'authorizations', 'challenge', 'validation']),
  'awaiting_csr',
  ...(ACME_STAGES.slice(ACME_STAGES.indexOf('finalize')) as ['finalize', 'download', 'chain']),
  'record',
  'delivery',
  'install',
  'acknowledge',
  'end_to_end',
] as const;
export type IssuanceStage = (typeof ISSUANCE_STAGES)[number];

export interface IssuanceMetrics {
  issuance(outcome: 'issued' | 'failed' | 'installed' | 'install_failed'): void;
  /** An agent here was woken for work: by a notification, or by the fallback pass (a lost notification, a lapsed lease, an unanswered prompt). */
  wakeup(source: 'notification' | 'fallback'): void;
  /** One stage of one issuance ended after `seconds`. */
  stage(stage: IssuanceStage, seconds: number): void;
}


/** An order slot, and the certificate's lease when it was taken together with the CSR's acceptance, for the order that starts under them. */
interface TakenForOrder {
  readonly release: () => void;
  readonly leased?: { readonly certificate: CertificateRecord; readonly jobAttempts: number | null };
}

/**
 * An order placed while the agent makes its CSR (lifecycle/ownership.ts, earlyOrderRefusal):
 * the CSR handler here hands the CSR over once it passed policy and was accepted in the same
 * write that records the order (pending to ordering), and the order waits for that only
 * before finalization.
 */
interface EarlyOrder {
  readonly instanceId: string;
  /** The names the order is for: the instance's, as the CSR request named them. */
  readonly names: readonly string[];
  /** Settles true once the order's URL is recorded under this process's lease, false if the order ended before that (the CSR then takes the usual path). */
  readonly recorded: Deferred<boolean>;
  /** The accepted CSR. */
  readonly csr: Deferred<string>;
  accepted: boolean;
  readonly controller: AbortController;
}

/** An order under way in this process, and how to stop it. */
interface RunningOrder {
  readonly controller: AbortController;
  readonly done: Promise<void>;
}

export class IssuanceCoordinator implements SessionHandler {
  readonly #running = new Map<string, RunningOrder>();
  #shuttingDown = false;
  /** Names this process in certificate leases, for operators reading the certificates table. */
  readonly owner = processName();

  constructor(
    private readonly deps: {
      store: Store;
      issuer: Issuer;
      sessions: SessionRegistry;
      logger: Logger;
      clock: () => Date;
      metrics?: IssuanceMetrics;
      gate?: OrderGate;
      listener?: IssuanceListener;
      /** Leave challenges to the configured DNS provider instead of asking the agent for http-01. */
      preferDns01?: boolean;
      /** Names a CSR may carry, duplicates included (CERTPLANE_MAX_NAMES_PER_CERTIFICATE); the CA's limit by default. */
      maxNamesPerCertificate?: number;
      /** How long a certificate's lease lasts without renewal (CERTPLANE_LEASE_MS): how soon another process takes over from a dead one. */
      leaseMs?: number;
      /** Orders running at once in this process (CERTPLANE_ISSUANCE_CONCURRENCY); DEFAULT_ISSUANCE_CONCURRENCY by default. */
      concurrency?: number;
      /** Order while the agent makes its CSR (CERTPLANE_ORDER_BEFORE_CSR, #orderEarly); false by default. */
      orderBeforeCsr?: boolean;
      /** Judges what an agent reports its instance's service serves (served.ts); without it such reports are ignored. */
      served?: { onReport(instanceId: string, report: Extract<AgentMessage, { type: 'served' }>): Promise<unknown> };
      /** Told when an order here ends and `room()` may have grown: the scheduler claims more jobs then, not at its next tick. */
      onRoom?: () => void;
      /** How long a prompt (CSR request, delivery) waits for its answer before it is sent again, and a CSR request counts against room(); PROMPT_AGAIN_MS by default. */
      promptAgainMs?: number;
    },
  ) {
    this.#slots = new Slots(deps.concurrency ?? DEFAULT_ISSUANCE_CONCURRENCY);
  }

  get #leaseMs(): number {
    return this.deps.leaseMs ?? DEFAULT_LEASE_MS;
  }

  get #promptAgainMs(): number {
    return this.deps.promptAgainMs ?? PROMPT_AGAIN_MS;
  }

  /**
   * How many more certificates this process can take on towards an order without piling them
   * up: twice its order slots, less the orders under way or waiting for a slot and the CSRs
   * asked for here and not answered yet. A CSR request counts from the first time it is sent,
   * for one prompt interval (30 s) at most: an agent that never answers, however often it is
   * asked again or reconnects, holds no room for ever. The scheduler claims no more jobs than
   * this, and a CSR request waits here for room (#askForCsr), so a campaign of thousands keeps
   * about one slot's worth of CSRs ready behind the running orders instead of asking every
   * agent at once: on a single-connection store (PGlite) that flood of CSR checks queued in
   * front of the orders' own writes. The process holding an agent's channel asks for its CSR,
   * so the pace holds wherever the job was claimed.
   */
  room(): number {
    const now = Date.now();
    let asked = 0;
    for (const [id, first] of this.#asked) {
      const age = now - first;
      // Long past counting: forgotten, so a certificate settled by another process leaves nothing behind.
      if (age >= FORGET_ASKED_PROMPTS * this.#promptAgainMs) this.#asked.delete(id);
      else if (age < this.#promptAgainMs && !this.#running.has(id)) asked += 1;
    }
    return Math.max(0, 2 * this.#slots.limit - this.#running.size - asked);
  }

  /** Asks the agents whose CSR requests waited for room, as far as the room now goes. */
  #askDeferred(): void {
    let room = this.#deferred.size > 0 ? this.room() : 0;
    for (const instanceId of this.#deferred) {
      if (room <= 0) break;
      this.#deferred.delete(instanceId);
      if (!this.deps.sessions.get(instanceId)) continue;
      this.#woken.add(instanceId);
      room -= 1;
    }
    void this.#drain();
  }


  /**
   * What this process last asked each instance's agent for (an instance has one open
   * certificate at a time), and when: sent again only when unanswered for PROMPT_AGAIN_MS
   * or when the certificate moved on.
   */
  readonly #prompted = new Map<string, { readonly certificateId: string; readonly status: CertificateRecord['status']; readonly at: number }>();
  /** Instances to reconcile (woken by a notification, the fallback pass or an unanswered prompt), one at a time. */
  readonly #woken = new Set<string>();
  #draining: Promise<void> | undefined;
  /** Where the next fallback pass starts (the database's clock), and the changes it has handled since then, by certificate. */
  #since: Date | undefined;
  readonly #seen = new Map<string, number>();
  #passing: Promise<void> | undefined;
  readonly #slots: Slots;
  /** CSRs asked for here and not answered yet, by certificate, with when first (Date.now()): counted by room(). */
  readonly #asked = new Map<string, number>();
  /** Instances whose agent is here and whose CSR request waits for room (#askForCsr), in the order they came. */
  readonly #deferred = new Set<string>();
  /** Certificates whose CSR is being accepted here together with their order's lease (#acceptWithLease): not started by anything else meanwhile, and awaited by shutdown. */
  readonly #accepting = new Map<string, Promise<boolean>>();
  /** Orders placed here before their CSR arrived, by certificate, until the order ends. */
  readonly #early = new Map<string, EarlyOrder>();
  /** Per certificate being worked on here: when its CSR was asked for (if here) and when its last stage ended, in performance.now() ms. */
  readonly #marks = new Map<string, { started?: number; last: number }>();

  /**
   * Ends `stage` of a certificate's issuance now, or only starts the next one when `stage` is
   * undefined (a prompt sent again); the first stage seen for a certificate taken over midway
   * is not reported, only marked.
   */
  #stageEnded(certificateId: string, stage: IssuanceStage | undefined, now = performance.now()): void {
    const marks = this.#marks.get(certificateId);
    if (marks && stage) this.deps.metrics?.stage(stage, (now - marks.last) / 1000);
    this.#marks.set(certificateId, { ...(marks?.started === undefined ? {} : { started: marks.started }), last: now });
  }

  /**
   * Starts an issuance for the instance, or returns the one under way. `jobId` links it to
   * the renewal or reissue job that asked; `replacesCertificateId` to the certificate it replaces.
   * A caller that read the instance one step before (the API's route) passes the record, and
   * it is not read again; one that read it earlier passes the id.
   */
  async requestIssue(target: string | InstanceRecord, options: { jobId?: string; replacesCertificateId?: string } = {}): Promise<CertificateRecord> {
    const instanceId = typeof target === 'string' ? target : target.id;
    // Read side by side: a job's start is a few round trips, and a campaign's pace is theirs.
    const [instance, [open]] = await Promise.all([typeof target === 'string' ? this.#instance(instanceId) : target, this.deps.store.certificates.open(instanceId)]);
    if (instance.decommissioned) throw decommissioned(instance);
    let certificate: CertificateRecord;
    // The new certificate's notification can arrive before the write returns: asked for just
    // below, it needs no reconciliation of its own.
    this.#requesting.add(instance.id);
    try {
      certificate = open ?? (await this.#create(instance.id, options));
      if (options.jobId && certificate.status === 'pending' && !certificate.jobId) {
        certificate = (await this.deps.store.certificates.attachJob(certificate.id, options.jobId, options.replacesCertificateId ?? null)) ?? certificate;
      }
      const session = this.deps.sessions.get(instance.id);
      if (session && certificate.status === 'pending') this.#askForCsr(session, instance, certificate);
    } finally {
      this.#requesting.delete(instance.id);
    }
    if (ORDERING_STATES.includes(certificate.status)) await this.#resume(instance, certificate);
    return certificate;
  }

  /** Instances whose requestIssue is between reading them and asking their agent: a wake-up for their pending certificate is that call's. */
  readonly #requesting = new Set<string>();

  /** A new certificate for an instance that had no open one; a replica that wins the race to create it wins for both. */
  async #create(instanceId: string, link: { jobId?: string; replacesCertificateId?: string }): Promise<CertificateRecord> {
    try {
      // Its agent here is asked by requestIssue itself: no other process needs to hear of it.
      return await this.deps.store.certificates.create(instanceId, { ...link, notify: !this.deps.sessions.get(instanceId) });
    } catch (error) {
      const [raced] = await this.deps.store.certificates.open(instanceId);
      if (hasCode(error, ErrorCode.STORE_CONFLICT) && raced) return raced;
      throw error;
    }
  }

  /**
   * Reconciles on every (re)connection: resumes whatever the instance's open certificates
   * need, and starts the first certificate of an instance that wants one (autoIssue).
   */
  async onConnected(session: AgentSession): Promise<void> {
    // The instance and its open certificates as the reconciliation read them: a reconnect storm pays one read of each per agent, not two.
    const { instance, open } = await this.#reconcile(session, true);
    if (instance.autoIssue && open.length === 0 && (await this.#wantsFirstCertificate(instance))) {
      this.deps.logger.info({ instanceId: instance.id }, 'the agent connected without a valid certificate; issuing one (autoIssue)');
      // By id: the record read at reconciliation is a few round trips old by now, and a PATCH or a decommission may have come between.
      await this.requestIssue(instance.id);
    }
  }

  /**
   * For an instance with nothing under way: true when nothing valid is installed, and the last attempt
   * (if any) can be tried again by itself: a permanent failure waits for a person to change
   * the instance, and a failure of a job waits for the job's own retry, so a reconnecting
   * agent never spends the CA's budget faster than the retry policy would.
   */
  async #wantsFirstCertificate(instance: InstanceRecord): Promise<boolean> {
    const { store, clock } = this.deps;
    const installed = await store.certificates.latestInstalled(instance.id);
    if (installed?.notAfter && installed.notAfter > clock()) return false;
    const latest = await store.certificates.latest(instance.id);
    return !(latest?.status === 'failed' && (latest.jobId !== null || (latest.failure !== null && isPermanent(latest.failure))));
  }

  /**
   * After the instance's names or key algorithm changed: a certificate under way for the old
   * ones fails (InstanceChanged; its order, if any, is never delivered, since every later step
   * is a compare-and-set on its state) and a new one starts for the instance as it is now. The
   * job that waited on the old certificate, if any, waits on the new one.
   */
  async restartIssuance(instanceId: string, why: string): Promise<CertificateRecord> {
    let jobId: string | undefined;
    for (const open of await this.deps.store.certificates.open(instanceId)) {
      await this.#fail(instanceId, open.id, { reason: 'InstanceChanged', code: ErrorCode.ISSUANCE_INSTANCE_CHANGED }, why);
      this.deps.sessions.get(instanceId)?.send({ type: 'cancel', certificateId: open.id, reason: why.slice(0, 2000) });
      jobId ??= open.jobId ?? undefined;
    }
    const replaced = await this.deps.store.certificates.latestInstalled(instanceId);
    return this.requestIssue(instanceId, { ...(jobId ? { jobId } : {}), ...(replaced ? { replacesCertificateId: replaced.id } : {}) });
  }

  /**
   * Something waits for an instance's agent (a notification, or the fallback pass found it):
   * reconciled here if its channel is here. Skipped without a query when this process asked
   * for exactly that already, or is ordering the certificate itself and delivers next, or
   * is asking for its CSR right now (requestIssue), or its CSR request waits for room here
   * (it is asked when room frees, from what the store holds then).
   */
  wake(work: { instanceId: string; id?: string; status?: CertificateRecord['status'] }, source: 'notification' | 'fallback' = 'notification'): void {
    if (!this.deps.sessions.get(work.instanceId)) return;
    if (work.status === 'pending' && (this.#requesting.has(work.instanceId) || (this.#deferred.has(work.instanceId) && this.room() <= 0))) return;
    const prompt = this.#prompted.get(work.instanceId);
    if (work.id !== undefined && (this.#running.has(work.id) || (prompt?.certificateId === work.id && prompt.status === work.status))) return;
    this.#woken.add(work.instanceId);
    this.deps.metrics?.wakeup(source);
    void this.#drain();
  }

  /**
   * The fallback pass, every scheduler tick: wakes the agents here whose certificates changed
   * since the previous pass (another process's work, when its notification was lost or the
   * engine has none) or whose order's lease lapsed, and re-prompts what stayed unanswered.
   * One query, whose answer grows with what changed; the agents connected cost nothing.
   */
  reconcileChanged(signal?: AbortSignal): Promise<void> {
    if (signal?.aborted || this.#shuttingDown) return Promise.resolve();
    this.#passing ??= this.#pass().finally(() => {
      this.#passing = undefined;
    });
    return this.#passing;
  }

  async #pass(): Promise<void> {
    const { changes, readAt } = await this.deps.store.certificates.changedSince(this.#since ?? new Date(this.deps.clock().getTime() - CHANGE_OVERLAP_MS));
    this.#since = new Date(readAt.getTime() - CHANGE_OVERLAP_MS);
    for (const [id, changedAt] of this.#seen) if (changedAt <= this.#since.getTime()) this.#seen.delete(id);
    for (const change of changes) {
      if (this.#seen.get(change.id) === change.changedAt.getTime()) continue;
      this.#seen.set(change.id, change.changedAt.getTime());
      // A lapsed lease is no notification's business: it is woken whatever was prompted,
      // unless the order runs here (then the lease is this process's own).
      this.wake(ORDERING_STATES.includes(change.status) ? { instanceId: change.instanceId, id: change.id } : change, 'fallback');
    }
    const now = Date.now();
    for (const [instanceId, prompt] of this.#prompted) {
      // An order running here answered its prompt: nothing to ask again while it runs.
      if (now - prompt.at < this.#promptAgainMs || this.#running.has(prompt.certificateId)) continue;
      // Gone from here: its next connection, wherever, prompts again.
      if (!this.deps.sessions.get(instanceId)) {
        this.#prompted.delete(instanceId);
      } else if (!this.#woken.has(instanceId)) {
        this.#woken.add(instanceId);
        this.deps.metrics?.wakeup('fallback');
      }
    }
    this.#askDeferred();
    await this.#drain();
  }

  #drain(): Promise<void> {
    if (!this.#draining && this.#woken.size > 0) {
      this.#draining = this.#drainWoken().finally(() => {
        this.#draining = undefined;
      });
    }
    return this.#draining ?? Promise.resolve();
  }

  async #drainWoken(): Promise<void> {
    // A Set visits what is added while it is walked: wake-ups arriving meanwhile join this run.
    for (const id of this.#woken) {
      this.#woken.delete(id);
      if (this.#shuttingDown) return;
      const session = this.deps.sessions.get(id);
      if (session) await this.#reconcile(session, false).catch((error) => this.deps.logger.warn({ instanceId: id, err: (error as Error).message }, 'reconcile failed'));
    }
  }

  /** Returns the instance and its open certificates as it read them, for a caller that needs them too. */
  async #reconcile(session: AgentSession, connecting: boolean): Promise<{ instance: InstanceRecord; open: CertificateRecord[] }> {
    const [instance, open] = await Promise.all([this.#instance(session.instanceId), this.deps.store.certificates.open(session.instanceId)]);
    const now = Date.now();
    const prompt = this.#prompted.get(instance.id);
    if (prompt && !open.some((certificate) => certificate.id === prompt.certificateId)) this.#prompted.delete(instance.id);
    for (const certificate of open) {
      const due = connecting || prompt?.certificateId !== certificate.id || prompt.status !== certificate.status || now - prompt.at >= this.#promptAgainMs;
      if (certificate.status === 'pending' && due) this.#askForCsr(session, instance, certificate);
      else if ((certificate.status === 'issued' || certificate.status === 'delivered') && due) await this.#deliver(session, certificate);
      else if (ORDERING_STATES.includes(certificate.status)) await this.#resume(instance, certificate);
    }
    return { instance, open };
  }

  /**
   * Tries to take up an order (its process died or shut down, or the rate limiter's wait is
   * over). Whether this process may try is decided in lifecycle/ownership.ts; whether it gets
   * the work is decided by the lease in the database: a live lease held elsewhere means
   * another process is ordering, and nothing happens here.
   */
  async #resume(instance: InstanceRecord, certificate: CertificateRecord): Promise<void> {
    const refusal = takeUpRefusal({
      status: certificate.status,
      hasCsr: Boolean(certificate.csrPem),
      runningHere: this.#running.has(certificate.id),
      shuttingDown: this.#shuttingDown,
      needsChannel: !this.deps.preferDns01,
      hasChannel: this.deps.sessions.get(instance.id) !== undefined,
    });
    if (!refusal && certificate.csrPem) this.#start(instance, certificate, certificate.csrPem);
  }

  /**
   * Runs an order in the background, stoppable through its controller; whatever escapes it is
   * logged, never an unhandled rejection. `csr` is the accepted CSR, or an early order's
   * (#orderEarly) wait for it.
   */
  #start(instance: InstanceRecord, certificate: CertificateRecord, csr: string | EarlyOrder, taken?: TakenForOrder): void {
    // An early order here stopping without its CSR (the agent left and came back, or it did not
    // answer in time) while that CSR was accepted: its order starts once the early one has
    // given its lease back, rather than waiting for a wake-up that may find it still running.
    const stopping = typeof csr === 'string' && !taken ? this.#early.get(certificate.id) : undefined;
    if (stopping && !stopping.accepted && stopping.controller.signal.aborted && !this.#shuttingDown) {
      void this.#running.get(certificate.id)?.done.then(() => this.#start(instance, certificate, csr));
      return;
    }
    if (this.#shuttingDown || this.#running.has(certificate.id) || (!taken?.leased && this.#accepting.has(certificate.id))) {
      // A slot and lease taken for this start are given back: nothing runs under them.
      if (taken) {
        taken.release();
        if (taken.leased) void this.deps.store.certificates.release(certificate.id, this.owner).catch(() => undefined);
      }
      return;
    }
    const early = typeof csr === 'string' ? undefined : csr;
    const controller = early?.controller ?? new AbortController();
    if (early) this.#early.set(certificate.id, early);
    const done = this.#issue(instance, certificate, csr, controller, taken)
      .catch((error: unknown) => this.deps.logger.error({ instanceId: instance.id, certificateId: certificate.id, err: (error as Error).message }, 'issuance stopped unexpectedly'))
      .finally(() => {
        this.#running.delete(certificate.id);
        if (early) {
          this.#early.delete(certificate.id);
          // Ended without recording an order (the limiter, another process's lease, the CA): a CSR waiting on it takes the usual path.
          early.recorded.resolve(false);
        }
        this.#askDeferred();
        this.deps.onRoom?.();
      });
    this.#asked.delete(certificate.id);
    this.#running.set(certificate.id, { controller, done });
  }

  /**
   * Stops ordering, for shutdown: nothing new starts from here on; orders under way get
   * `graceMs` to finish, then are aborted at their next step or wait and release their
   * leases, so another process resumes the same ACME orders at once rather than after the
   * leases lapse. An order still inside a request to the CA a moment later has its lease
   * released for it; whatever it writes afterwards needs the lease and is refused. Returns
   * once nothing of this process holds a lease, so the store can close.
   */
  async stop(graceMs: number): Promise<void> {
    this.#shuttingDown = true;
    const log = this.deps.logger;
    // An order placed before its CSR and still waiting for it stops now, its lease released: whoever accepts the CSR resumes the order.
    for (const early of this.#early.values()) if (!early.accepted) early.controller.abort(stopped('shutdown'));
    // A CSR being accepted with its lease either started its order (awaited below) or gives the lease back before this returns.
    await Promise.allSettled([...this.#accepting.values()]);
    if (this.#running.size === 0) return;
    log.info({ inFlight: this.#running.size, graceMs }, 'shutdown: waiting for in-flight orders');
    await settledWithin([...this.#running.values()].map((order) => order.done), graceMs);
    if (this.#running.size === 0) return;
    log.warn({ inFlight: this.#running.size }, 'shutdown: stopping in-flight orders; their leases are released and another process resumes them');
    for (const order of this.#running.values()) order.controller.abort(stopped('shutdown'));
    await settledWithin([...this.#running.values()].map((order) => order.done), ABORT_SETTLE_MS);
    for (const id of this.#running.keys()) {
      await this.deps.store.certificates.release(id, this.owner).catch((error: unknown) => log.error({ certificateId: id, err: (error as Error).message }, 'shutdown: could not release the lease; it lapses by itself'));
    }
  }

  /** The agent left this process: an order placed here before its CSR stops waiting for it (its lease released, the order on record for whoever accepts the CSR). */
  onDisconnected(session: AgentSession): void {
    for (const early of this.#early.values()) {
      if (early.instanceId === session.instanceId && !early.accepted) early.controller.abort(stopped('no_csr'));
    }
  }

  async onMessage(session: AgentSession, message: Exclude<AgentMessage, { type: 'auth' | 'http01_ready' | 'identity_renewal' | 'revocation_signed' }>): Promise<void> {
    switch (message.type) {
      case 'status':
        await this.deps.store.instances.setInstalledFingerprint(session.instanceId, message.installedFingerprintSha256);
        return;
      case 'csr':
        return this.#onCsr(session, message.certificateId, message.csrPem);
      case 'installed':
        return this.#onInstalled(session, message.certificateId, message.fingerprintSha256);
      case 'install_failed':
        // Only the instance's own certificate: an agent must not fail another instance's delivery.
        await this.#certificateOf(session.instanceId, message.certificateId);
        await this.#fail(session.instanceId, message.certificateId, agentRefused(message.code), `the agent refused to install: ${message.code}: ${message.message}`);
        this.deps.metrics?.issuance('install_failed');
        return;
      case 'error':
        this.deps.logger.warn({ instanceId: session.instanceId, code: message.code, err: message.message }, 'agent reported an error');
        return;
      case 'served':
        // The session says whose report it is: an agent speaks for its own instance only.
        await this.deps.served?.onReport(session.instanceId, message);
        return;
    }
  }

  /**
   * The agent's CSR: checked against its instance's policy, then accepted in one write that
   * applies only to a pending certificate of this agent's own instance. The certificate is
   * read only when that write moves nothing (another instance's certificate is refused; a
   * repeated or late CSR is ignored) or the CSR is refused (only this agent's own pending
   * certificate is failed for it).
   */
  async #onCsr(session: AgentSession, certificateId: string, csrPem: string): Promise<void> {
    const arrived = performance.now();
    // The CSR decoded first, then one read: the instance and which of the CSR's names it owns.
    // A CSR that does not decode reads the instance alone, and is refused by the check below.
    const decoding = parseCsr(csrPem, 'CSR', { maxNames: this.deps.maxNamesPerCertificate }).then(requestedNames);
    const reading = decoding.then(
      (requested) => this.#instanceOwning(session.instanceId, requested),
      () => this.#instanceOwning(session.instanceId, []),
    );
    const checking = reading.then(({ instance, owned }) => this.#checkCsr(instance, owned, decoding, csrPem));
    checking.catch(() => undefined);
    // A failed read (the store) fails here, as it is, not as a rejected CSR: the certificate
    // stays pending and its CSR is asked for again.
    const { instance } = await reading;
    // An order placed here for this certificate while the agent made the CSR: only this agent's own.
    const early = this.#early.get(certificateId);
    const ours = early?.instanceId === session.instanceId ? early : undefined;
    try {
      const requested = await checking;
      if (ours && !sameNames(requested, ours.names)) {
        throw new CertplaneError(ErrorCode.ISSUANCE_CSR_REJECTED, `CSR rejected: it names ${requested.join(', ')}, and the order placed for this certificate is for ${ours.names.join(', ')}, the names the CSR request gave`);
      }
    } catch (error) {
      const certificate = await this.#certificateOf(session.instanceId, certificateId);
      if (certificate.status !== 'pending') return;
      await this.#fail(session.instanceId, certificate.id, failureOf(error), (error as Error).message);
      // Its order, placed before the CSR, is never finalized; the refusal is permanent, so there is no second one.
      ours?.controller.abort(stopped('no_csr'));
      session.send({ type: 'cancel', certificateId, reason: (error as Error).message });
      return;
    }
    if (ours && (await this.#handOver(instance, ours, certificateId, csrPem, arrived))) return;
    // With an order slot free here now, accepting the CSR also takes the order's lease (one
    // write where there were two) and the order starts under them. Otherwise, or when that
    // does not apply (a repeated CSR, a lease held elsewhere), the CSR is accepted on its own.
    if (await this.#acceptWithLease(instance, certificateId, csrPem, session.instanceId, arrived)) return;
    const issuing = await this.deps.store.certificates.apply(certificateId, 'csr_accepted', { csrPem }, { instanceId: session.instanceId });
    if (!issuing) {
      await this.#certificateOf(session.instanceId, certificateId);
      return;
    }
    // `csr` is the agent's part (its key and CSR, and the way back); `csr_check` the plane's (policy and the write).
    this.#stageEnded(issuing.id, 'csr', arrived);
    this.#stageEnded(issuing.id, 'csr_check');
    // Not awaited: the order needs further messages from this same agent (http01_ready),
    // which the session delivers only after this handler returns.
    this.#start(instance, issuing, csrPem);
  }

  /**
   * Accepts the CSR and takes the order's lease in one write when an order slot is free now,
   * and starts the order under them: true when done so. While the write is in flight nothing
   * else here starts the certificate, and shutdown waits for it; a process that began shutting
   * down meanwhile gives the lease back at once.
   */
  async #acceptWithLease(instance: InstanceRecord, certificateId: string, csrPem: string, instanceId: string, arrived: number): Promise<boolean> {
    const slot = this.#shuttingDown || this.#running.has(certificateId) || this.#accepting.has(certificateId) ? undefined : this.#slots.tryAcquire();
    if (!slot) return false;
    const accepting = (async () => {
      let leased: Awaited<ReturnType<Store['certificates']['acceptCsrForOrder']>>;
      try {
        leased = await this.deps.store.certificates.acceptCsrForOrder(certificateId, csrPem, instanceId, this.owner, this.#leaseMs);
      } catch (error) {
        slot();
        throw error;
      }
      if (!leased) {
        slot();
        return false;
      }
      this.#stageEnded(leased.certificate.id, 'csr', arrived);
      this.#stageEnded(leased.certificate.id, 'csr_check');
      if (this.#shuttingDown) {
        slot();
        await this.deps.store.certificates.release(certificateId, this.owner).catch(() => undefined);
        return true;
      }
      this.#start(instance, leased.certificate, csrPem, { release: slot, leased });
      return true;
    })();
    this.#accepting.set(certificateId, accepting);
    try {
      return await accepting;
    } finally {
      this.#accepting.delete(certificateId);
    }
  }

  /**
   * Checks an agent's CSR against its instance's policy: its size bound (applied to the
   * request parseCsr decoded and kept), names the instance owns, and the key its policy asks
   * for. `owned` are the CSR's names the instance owns, read with the instance; `decoding`
   * the CSR's names, normalised. Returns those names.
   */
  async #checkCsr(instance: InstanceRecord, owned: ReadonlySet<string>, decoding: Promise<string[]>, csrPem: string): Promise<string[]> {
    const rejected = (error: CertplaneError): never => {
      throw new CertplaneError(ErrorCode.ISSUANCE_CSR_REJECTED, `CSR rejected: ${error.code}: ${error.message}`, { reason: error.code });
    };
    const csr = await parseCsr(csrPem, 'CSR', { maxNames: this.deps.maxNamesPerCertificate, maxPemBytes: csrPemBytesFor(instance.hostnames), ...ORDERED_CSR_LIMITS }).catch(rejected);
    const requested = await decoding;
    // Owned, not merely listed: the CA reuses any valid authorization of the shared account,
    // so a name listed by two instances would let either obtain it without a challenge.
    const foreign = requested.filter((name) => !owned.has(name));
    if (requested.length === 0 || foreign.length > 0) {
      const ownHere = new Set(await this.deps.store.instances.ownedNames(instance.id, instance.hostnames));
      const own = instance.hostnames.filter((name) => ownHere.has(name));
      throw new CertplaneError(ErrorCode.ISSUANCE_CSR_REJECTED, `CSR rejected: it asks for ${foreign.join(', ') || 'no name'}, outside the hostnames this instance owns (${own.join(', ') || 'none'}); a name belongs to the one instance that registered it first`);
    }
    if (csr.keyDescription !== KEY_DESCRIPTIONS[instance.keyAlgorithm]) {
      throw new CertplaneError(ErrorCode.ISSUANCE_CSR_REJECTED, `CSR rejected: key is ${csr.keyDescription}, the instance's policy is ${KEY_DESCRIPTIONS[instance.keyAlgorithm]}`);
    }
    return requested;
  }

  /**
   * Hands a CSR that passed policy to the order placed for it before it came: once that order
   * is on record under this process's lease, one write accepts the CSR and marks the order
   * (pending to ordering), and the order goes on to finalization. False when that order ended
   * without recording one, or no longer holds the certificate: the CSR then takes the usual
   * path, which resumes an order on record.
   */
  async #handOver(instance: InstanceRecord, early: EarlyOrder, certificateId: string, csrPem: string, arrived: number): Promise<boolean> {
    // A repeated CSR (the first one was accepted with this order): ignored, as on the usual path.
    if (early.accepted) return true;
    // Stopped meanwhile (the agent left, the process is stopping): the usual path resumes its order once its lease is given back.
    if (!(await early.recorded.promise) || early.controller.signal.aborted) return false;
    const moved = await this.deps.store.certificates.apply(certificateId, ['csr_accepted', 'order_created'], { csrPem }, { leaseOwner: this.owner, instanceId: early.instanceId });
    if (!moved) {
      // Not the order's to stop when a CSR handled meanwhile (another session of this agent's) was accepted with it.
      if (!early.accepted) early.controller.abort(stopped('no_csr'));
      return early.accepted;
    }
    early.accepted = true;
    if (early.controller.signal.aborted) {
      // The order stopped while this write was in flight (its wait for the CSR ran out, the agent
      // left, a shutdown): the CSR is accepted and the order on record, so it is resumed here once
      // the stopped one has given its lease back (the release's notification, if any, may find it still running here).
      void (this.#running.get(certificateId)?.done ?? Promise.resolve()).then(() => this.#resume(instance, moved));
      return true;
    }
    // The agent's part and the plane's, as on the usual path; the order's own stages run beside them.
    const started = this.#marks.get(certificateId)?.started;
    if (started !== undefined) this.deps.metrics?.stage('csr', (arrived - started) / 1000);
    this.deps.metrics?.stage('csr_check', (performance.now() - arrived) / 1000);
    early.csr.resolve(csrPem);
    return true;
  }

  /**
   * Orders the certificate while its agent makes the CSR, when the lifecycle allows it here
   * (lifecycle/ownership.ts, earlyOrderRefusal) and an order slot is free now: the order is
   * placed and its challenges answered meanwhile, and it waits for the accepted CSR only
   * before finalization (#awaitCsr). Otherwise the certificate waits for its CSR as before.
   */
  #orderEarly(instance: InstanceRecord, certificate: CertificateRecord): void {
    if (!this.deps.orderBeforeCsr) return;
    const refusal = earlyOrderRefusal({
      status: certificate.status,
      hasOrder: certificate.orderUrl !== null,
      runningHere: this.#running.has(certificate.id) || this.#accepting.has(certificate.id),
      shuttingDown: this.#shuttingDown,
      hasChannel: this.deps.sessions.get(instance.id) !== undefined,
    });
    if (refusal) return;
    const slot = this.#slots.tryAcquire();
    if (!slot) return;
    this.#start(instance, certificate, { instanceId: instance.id, names: [...instance.hostnames], recorded: deferred(), csr: deferred(), accepted: false, controller: new AbortController() }, { release: slot });
  }

  /**
   * An early order's wait for its CSR, before finalization: as long as a prompt waits for its
   * answer (PROMPT_AGAIN_MS) at most, then the order stops (its lease released, the order on
   * record) and whoever accepts the CSR later resumes it.
   */
  async #awaitCsr(certificateId: string, early: EarlyOrder, signal: AbortSignal): Promise<string> {
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    try {
      return await new Promise<string>((resolve, reject) => {
        onAbort = () => reject(signal.reason);
        if (signal.aborted) return onAbort();
        signal.addEventListener('abort', onAbort, { once: true });
        timer = setTimeout(() => early.controller.abort(stopped('no_csr')), this.#promptAgainMs);
        void early.csr.promise.then(resolve);
      });
    } finally {
      clearTimeout(timer);
      if (onAbort) signal.removeEventListener('abort', onAbort);
      if (!signal.aborted) this.#stageEnded(certificateId, 'awaiting_csr');
    }
  }

  /**
   * Orders, verifies and delivers, under the certificate's lease. The lease is taken first
   * (another process holding it is ordering already) and renewed while the order runs; a
   * renewal that finds it taken aborts the work. An order stored by a previous holder is
   * resumed at the CA rather than placed again (lifecycle/ownership.ts decides, with the
   * reason recorded when it cannot be). A refusal by the rate limiter parks the certificate:
   * the lease is held until the limiter's time, so no process picks it up before then, and
   * the scheduler's next pass after that time resumes it. Nothing sleeps here, and an abort
   * (shutdown, lost lease) leaves the certificate as it is for the next holder.
   */
  async #issue(instance: InstanceRecord, certificate: CertificateRecord, csr: string | EarlyOrder, controller: AbortController, taken?: TakenForOrder): Promise<void> {
    const log = this.deps.logger.child({ instanceId: instance.id, certificateId: certificate.id });
    const { store, clock } = this.deps;
    const { signal } = controller;
    const early = typeof csr === 'string' ? undefined : csr;
    let renewal: NodeJS.Timeout | undefined;
    // A lease taken with the CSR's acceptance is held from the start.
    let holding = taken?.leased !== undefined;
    let parked = false;
    let verified: CertificateRecord | undefined;
    let keeping: Promise<void> = Promise.resolve();
    const owned = { leaseOwner: this.owner };
    /** Applies an event of this order; one that no longer applies means the order is no longer this process's to write. */
    const record = async (event: LifecycleEvent | readonly [LifecycleEvent, ...LifecycleEvent[]], fields: CertificateUpdate, releaseLease = false) => {
      const moved = await store.certificates.apply(certificate.id, event, fields, releaseLease ? { ...owned, releaseLease } : owned);
      if (!moved && !signal.aborted) controller.abort(stopped('lease_lost'));
      signal.throwIfAborted();
      return moved;
    };
    // Taken before the lease: a certificate waiting for a slot holds nothing another process could want.
    const release = taken?.release ?? (await this.#slots.acquire());
    this.#stageEnded(certificate.id, 'queued');
    try {
      signal.throwIfAborted();
      // The lease comes back with the record as it is under it (the record in hand may predate
      // the previous holder's last step) and its job's failed attempts (first attempt or retry,
      // for the limiter), in one statement; or came so with the CSR's acceptance.
      const leased = taken?.leased ?? (await store.certificates.leaseForOrder(certificate.id, this.owner, this.#leaseMs));
      if (!leased) {
        log.debug('another process holds the lease; it is ordering');
        return;
      }
      // Held from here on, so the finally below releases it whatever fails next.
      holding = true;
      renewal = setInterval(() => void this.#renewLease(certificate.id, controller, log), leaseRenewalMs(this.#leaseMs));
      renewal.unref();
      const { certificate: current, jobAttempts } = leased;
      // An early order is for a pending certificate without one on record (ownership.ts); under the lease, that is checked again.
      if (early ? current.status !== 'pending' || current.orderUrl !== null : !ORDERING_STATES.includes(current.status)) return;
      // An order on record while the CSR is only accepted was placed before the CSR (preordered),
      // for the instance's names: a CSR accepted later naming others cannot finalize it (the CA
      // answers badCSR), so a new order is placed for the CSR's names instead.
      const preorderedFor = current.status === 'csr_accepted' && current.orderUrl && current.csrPem ? await parseCsr(current.csrPem, 'CSR').catch(() => undefined) : undefined;
      const otherNames = preorderedFor !== undefined && !sameNames([...preorderedFor.dnsNames, ...preorderedFor.ipAddresses], instance.hostnames);
      const standing = current.orderUrl && !otherNames ? await this.deps.issuer.orderStanding(current.orderUrl) : undefined;
      signal.throwIfAborted();
      const plan: OrderPlan =
        otherNames && current.orderUrl
          ? { action: 'new', replacing: { orderUrl: current.orderUrl, why: `order ${current.orderUrl} was placed before the CSR for ${instance.hostnames.join(', ')}; the CSR names ${[...preorderedFor!.dnsNames, ...preorderedFor!.ipAddresses].join(', ')}` } }
          : planOrder(current.orderUrl, standing);
      // What the order replaces (ARI) is looked up while the limiter decides: both are needed before the order.
      const replacing = plan.action === 'new' ? this.#replacesFor(current) : Promise.resolve(undefined);
      replacing.catch(() => undefined);
      if (plan.action === 'new') {
        const refusal = await this.#orderBudget(instance, jobAttempts);
        if (refusal && early) {
          // Nothing parks before its CSR: the CSR takes the usual path, and is parked there.
          log.debug({ limitedBy: refusal.limitedBy, retryAt: refusal.retryAt }, 'rate limited; no order before the CSR');
          return;
        }
        if (refusal) {
          parked = await store.certificates.renewLease(certificate.id, this.owner, parkedLeaseMs(refusal.retryAt, clock()));
          log.info({ limitedBy: refusal.limitedBy, retryAt: refusal.retryAt }, 'rate limited; the order waits for the limiter');
          return;
        }
        if (plan.replacing) log.warn({ previousOrder: plan.replacing.orderUrl, why: plan.replacing.why }, 'the stored order cannot be resumed; placing a new order');
      } else {
        log.info({ order: plan.orderUrl, next: plan.next }, 'resuming the stored ACME order');
        // An order placed before its CSR, stopped before the CSR was accepted with it: the CSR is accepted now, and the order on record is this certificate's.
        if (current.status === 'csr_accepted') await record('order_created', {});
      }
      const replaces = await replacing;
      this.#stageEnded(certificate.id, 'lease');
      const issued = await this.deps.issuer.issue(early ? { names: early.names, csr: () => this.#awaitCsr(certificate.id, early, signal) } : (csr as string), {
        solvers: this.#solvers(instance.id),
        ...(instance.profile ? { profile: instance.profile } : {}),
        ...(replaces ? { replaces } : {}),
        ...(plan.action === 'resume' ? { resumeOrderUrl: plan.orderUrl } : {}),
        signal,
        trustProfiles: instance.trustProfiles,
        onOrderCreated: async (orderUrl) => {
          if (early) {
            // Refused when the certificate moved on meanwhile (its CSR accepted by a process the
            // agent reached, which found this lease live; or failed): the lease is still this
            // process's and is given back, so that the CSR's order starts at once, not after it lapses.
            const preordered = await store.certificates.apply(certificate.id, 'preordered', { orderUrl }, owned);
            if (!preordered && !signal.aborted) controller.abort(stopped('no_csr'));
            signal.throwIfAborted();
            early.recorded.resolve(true);
          } else if (plan.action === 'new' && plan.replacing) {
            await record(current.status === 'ordering' ? 'order_replaced' : 'order_created', { orderUrl, lastError: plan.replacing.why });
            await store.audit.record({ actor: `service:${this.owner}`, action: 'certificate.order-replaced', target: certificate.id, reason: plan.replacing.why, details: { previousOrderUrl: plan.replacing.orderUrl, orderUrl } });
          } else {
            await record('order_created', { orderUrl });
          }
        },
        onStage: (stage) => this.#stageEnded(certificate.id, stage),
      });
      const leaf = parseCertificateBundle(issued.fullchainPem)[0]!;
      // The order's last write gives its lease up; with the agent connected here, the chain is
      // also marked delivered in it, and sent right after (one write where there were three).
      const here = this.deps.sessions.get(instance.id) !== undefined;
      verified = await record(
        here ? ['chain_verified', 'delivered'] : 'chain_verified',
        {
          fullchainPem: issued.fullchainPem,
          fingerprintSha256: leaf.fingerprintSha256,
          notBefore: leaf.notBefore,
          notAfter: leaf.notAfter,
          anchorCN: issued.report.anchor?.subjectCN ?? null,
          report: withoutPem(issued.report),
          lastError: null,
          ...(here ? { deliveredAt: clock() } : {}),
        },
        true,
      );
      holding = false;
      // Every offered chain is kept (public, and what a trust change needs later without the CA).
      // A failure to keep them is logged, never a failure of the certificate just issued. Kept
      // while the chain is delivered (nothing on the way to the agent reads them), and awaited
      // before this order ends.
      if (verified) {
        const evaluatedAt = clock();
        keeping = store.chains
          .record(certificate.id, issued.offered.map((chain) => ({ ...chain, evaluatedAt, trustFingerprint: issued.trustFingerprint })))
          .catch((error: unknown) => log.error({ err: (error as Error).message }, 'the offered chains could not be stored; trust changes will only know the installed chain'));
      }
      this.#stageEnded(certificate.id, 'record');
      this.deps.metrics?.issuance('issued');
      log.info({ fingerprint: leaf.fingerprintSha256, anchor: issued.report.anchor?.subjectCN, kept: Boolean(verified), chains: issued.offered.length }, 'certificate issued and verified');
    } catch (error) {
      if (signal.aborted || hasCode(error, ErrorCode.STORE_UNAVAILABLE)) {
        const cause = signal.aborted ? stopCauseOf(signal.reason) : 'store_unavailable';
        holding &&= afterStop(cause).releaseLease;
        log.info({ cause }, 'order stopped before it settled; the next holder of the lease resumes it');
        return;
      }
      const failure = failureOf(error);
      const message = error instanceof CertplaneError ? `${error.code}: ${error.message}` : (error as Error).message;
      log.warn({ err: message, reason: failure.reason }, 'issuance failed');
      this.deps.metrics?.issuance('failed');
      if (failure.reason === 'RateLimited') {
        const until = failure.retryAt ? new Date(failure.retryAt) : new Date(clock().getTime() + RATE_LIMITED_PAUSE_MS);
        await this.deps.gate?.blockUntil(until, message.slice(0, 200));
      }
      await this.#fail(instance.id, certificate.id, failure, message, owned);
      this.deps.sessions.get(instance.id)?.send({ type: 'cancel', certificateId: certificate.id, reason: message.slice(0, 2000) });
    } finally {
      release();
      clearInterval(renewal);
      if (holding && !parked) await store.certificates.release(certificate.id, this.owner).catch(() => undefined);
    }
    // Outside the order's failure handling: a delivery that does not reach the agent now is
    // sent again when it reconnects; it must never fail a certificate already issued.
    const session = this.deps.sessions.get(instance.id);
    if (verified && session) await this.#deliver(session, verified, true).catch((error: unknown) => log.warn({ err: (error as Error).message }, 'delivery did not reach the agent; it is sent again when it reconnects'));
    else if (verified) log.info('agent offline; the certificate is delivered when it reconnects');
    await keeping;
  }

  /** Extends the lease of a running order; finding it held by another process stops the order (this one stalled past its lease). */
  async #renewLease(certificateId: string, controller: AbortController, log: Logger): Promise<void> {
    // A failed query is not a lost lease: the next renewal tries again, and writes need the lease anyway.
    const kept = await this.deps.store.certificates.renewLease(certificateId, this.owner, this.#leaseMs).catch(() => true);
    if (kept || controller.signal.aborted) return;
    log.warn('the lease was taken over by another process; stopping this order');
    controller.abort(stopped('lease_lost'));
  }

  /** The ARI `replaces` value of a new order for `certificate`, when it replaces one and the CA offers ARI. */
  async #replacesFor(certificate: CertificateRecord): Promise<string | undefined> {
    const replaced = certificate.replacesCertificateId ? await this.deps.store.certificates.get(certificate.replacesCertificateId) : undefined;
    return replaced ? this.deps.listener?.replacesFor?.(replaced) : undefined;
  }

  /** Asks the rate limiter for one more order for these names (a retry when its job has failed before): undefined when granted, else until when to wait. */
  async #orderBudget(instance: InstanceRecord, jobAttempts: number | null): Promise<{ retryAt: Date; limitedBy: string } | undefined> {
    const gate = this.deps.gate;
    if (!gate) return undefined;
    const answer = await gate.acquire({ hostnames: [...instance.hostnames], attempt: jobAttempts !== null && jobAttempts > 0 ? 'retry' : 'first' });
    if (answer.granted) {
      this.deps.logger.debug({ instanceId: instance.id, names: [...instance.hostnames], decidedAt: answer.decidedAt.getTime() }, 'order granted by the rate limiter');
      return undefined;
    }
    return { retryAt: answer.retryAt, limitedBy: answer.limitedBy };
  }

  #solvers(instanceId: string): ChallengeSolver[] {
    return this.deps.preferDns01 ? [] : [this.#http01For(instanceId)];
  }

  #http01For(instanceId: string): Http01Solver {
    const sessionOf = () => {
      const session = this.deps.sessions.get(instanceId);
      if (!session) throw new CertplaneError(ErrorCode.AGENT_OFFLINE, `the agent of instance ${instanceId} is offline and cannot answer http-01`);
      return session;
    };
    return new Http01Solver({
      serve: (_domain, token, keyAuthorization, signal) => sessionOf().request({ type: 'http01_serve', requestId: SessionRegistry.requestId(), token, keyAuthorization }, undefined, signal),
      withdraw: async (_domain, token) => {
        this.deps.sessions.get(instanceId)?.send({ type: 'http01_withdraw', requestId: SessionRegistry.requestId(), token });
      },
    });
  }

  /**
   * The agent says it installed the certificate: one write when it is true (this instance's
   * certificate, with this fingerprint, delivered), which also supersedes the one installed
   * before and records the fingerprint as the instance's. Only when that write moves nothing
   * is the certificate read, to tell a foreign one (refused), another fingerprint (logged) and a
   * repeated acknowledgement (the fingerprint is still what the agent has) apart.
   */
  async #onInstalled(session: AgentSession, certificateId: string, fingerprintSha256: string): Promise<void> {
    const arrived = performance.now();
    const installed = await this.deps.store.certificates.apply(certificateId, 'installed', { installedAt: this.deps.clock() }, { instanceId: session.instanceId, fingerprintSha256 });
    if (!installed) {
      const certificate = await this.#certificateOf(session.instanceId, certificateId);
      if (certificate.fingerprintSha256 !== fingerprintSha256) {
        this.deps.logger.warn({ instanceId: session.instanceId, certificateId, reported: fingerprintSha256, expected: certificate.fingerprintSha256 }, 'agent acknowledged another fingerprint');
        return;
      }
      await this.deps.store.instances.setInstalledFingerprint(session.instanceId, fingerprintSha256);
      return;
    }
    this.#stageEnded(installed.id, 'install', arrived);
    this.#answered(session.instanceId, installed.id);
    this.#stageEnded(installed.id, 'acknowledge');
    const started = this.#marks.get(installed.id)?.started;
    if (started !== undefined) this.deps.metrics?.stage('end_to_end', (performance.now() - started) / 1000);
    this.#marks.delete(installed.id);
    this.deps.metrics?.issuance('installed');
    await this.deps.listener?.onInstalled(installed);
    this.deps.logger.info({ instanceId: session.instanceId, certificateId, fingerprint: fingerprintSha256 }, 'agent installed the certificate');
  }

  /** The certificate settled: nothing left to prompt for. */
  #answered(instanceId: string, certificateId: string): void {
    if (this.#prompted.get(instanceId)?.certificateId === certificateId) this.#prompted.delete(instanceId);
  }

  /**
   * Asks the agent for the certificate's CSR, unless this process has no room (room()): then
   * the request waits, and is sent when an order here ends or at the next fallback pass with
   * room. A certificate asked for before is asked again whatever the room (it was counted).
   */
  #askForCsr(session: AgentSession, instance: InstanceRecord, certificate: CertificateRecord): void {
    if (!this.#asked.has(certificate.id) && this.room() <= 0) {
      this.#deferred.add(instance.id);
      return;
    }
    this.#deferred.delete(instance.id);
    this.#prompted.set(instance.id, { certificateId: certificate.id, status: certificate.status, at: Date.now() });
    if (!this.#asked.has(certificate.id)) this.#asked.set(certificate.id, Date.now());
    const now = performance.now();
    this.#marks.set(certificate.id, { started: now, last: now });
    session.send({ type: 'csr_request', certificateId: certificate.id, hostnames: [...instance.hostnames], keyAlgorithm: instance.keyAlgorithm });
    this.#orderEarly(instance, certificate);
  }

  /** Sends the chain (again, after a reconnect or an unanswered delivery); an issued certificate becomes delivered first. */
  async #deliver(session: AgentSession, issued: CertificateRecord, fresh = issued.status === 'issued'): Promise<void> {
    const certificate = issued.status === 'issued' ? await this.deps.store.certificates.apply(issued.id, 'delivered', { deliveredAt: this.deps.clock() }) : issued;
    if (!certificate?.fullchainPem || !certificate.fingerprintSha256) return;
    this.#prompted.set(certificate.instanceId, { certificateId: certificate.id, status: certificate.status, at: Date.now() });
    session.send({ type: 'deliver', certificateId: certificate.id, fullchainPem: certificate.fullchainPem, fingerprintSha256: certificate.fingerprintSha256 });
    this.#stageEnded(certificate.id, fresh ? 'delivery' : undefined);
    this.deps.logger.info({ instanceId: certificate.instanceId, certificateId: certificate.id }, 'certificate sent to agent');
  }

  /**
   * The reason is stored and passed on with its control characters escaped: it quotes text
   * from the agent (a reload command's output) or the CA that may span lines, and it is
   * shown in the API and on one line in tables, where a newline would forge a row.
   */
  async #fail(instanceId: string, certificateId: string, failure: FailureReason, reason: string, lease?: { leaseOwner: string }): Promise<void> {
    const lastError = escapeControlCharacters(reason).slice(0, 4000);
    const failed = await this.deps.store.certificates.apply(certificateId, 'failed', { failure, lastError }, lease);
    // An order placed here before the CSR of a certificate that failed (its instance changed) waits for no CSR now: its slot and lease are given back.
    const early = failed ? this.#early.get(certificateId) : undefined;
    if (early && !early.accepted && !early.controller.signal.aborted) early.controller.abort(stopped('no_csr'));
    this.deps.logger.warn({ instanceId, certificateId, reason: failure.reason, err: lastError }, 'certificate failed');
    this.#answered(instanceId, certificateId);
    this.#asked.delete(certificateId);
    this.#marks.delete(certificateId);
    if (failed) await this.deps.listener?.onFailed(failed);
  }

  /** The instance and which of `names` it owns, in one read. */
  async #instanceOwning(id: string, names: readonly string[]): Promise<{ instance: InstanceRecord; owned: ReadonlySet<string> }> {
    const found = await this.deps.store.instances.withOwnedNames(id, names);
    if (!found) throw new CertplaneError(ErrorCode.ISSUANCE_UNKNOWN_INSTANCE, `no instance ${id}`);
    return { instance: found.instance, owned: new Set(found.owned) };
  }

  async #instance(id: string): Promise<InstanceRecord> {
    const instance = await this.deps.store.instances.get(id);
    if (!instance) throw new CertplaneError(ErrorCode.ISSUANCE_UNKNOWN_INSTANCE, `no instance ${id}`);
    return instance;
  }

  async #certificateOf(instanceId: string, certificateId: string): Promise<CertificateRecord> {
    const certificate = await this.deps.store.certificates.get(certificateId);
    if (!certificate || certificate.instanceId !== instanceId) {
      throw new CertplaneError(ErrorCode.ISSUANCE_UNKNOWN_CERTIFICATE, `certificate ${certificateId} does not belong to this agent's instance`);
    }
    return certificate;
  }
}

/** The report without the served PEM: the chain is stored once, in fullchain_pem. */
function withoutPem(report: VerificationReport): Omit<VerificationReport, 'servedChainPem'> {
  const { servedChainPem: _chain, ...rest } = report;
  return rest;
}

/** The abort reason of an order stopped before it settled. */
function stopped(cause: StopCause): CertplaneError {
  const message =
    cause === 'shutdown'
      ? 'the management plane is shutting down; another process resumes the order'
      : cause === 'no_csr'
        ? 'the order placed before the CSR stops without it (the agent left this process, did not answer in time, or its CSR was refused); whoever accepts the CSR resumes the order'
        : 'another process took the lease over (this one stalled past it); that process resumes the order';
  return new CertplaneError(ErrorCode.ISSUANCE_STOPPED, message, { cause });
}

function stopCauseOf(reason: unknown): StopCause {
  const cause = reason instanceof CertplaneError ? reason.details.cause : undefined;
  return cause === 'lease_lost' || cause === 'no_csr' ? cause : 'shutdown';
}

/** A promise and its resolver, for a value another handler supplies later. */
interface Deferred<T> {
  readonly promise: Promise<T>;
  resolve(value: T): void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((settle) => (resolve = settle));
  return { promise, resolve };
}

/** Resolves when every promise settled or `ms` passed, whichever is first. */
async function settledWithin(promises: readonly Promise<unknown>[], ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([Promise.allSettled(promises), new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}

/** A decoded CSR's names (DNS names and addresses), normalised, each once. */
function requestedNames(decoded: { readonly dnsNames: readonly string[]; readonly ipAddresses: readonly string[] }): string[] {
  return [...new Set([...decoded.dnsNames, ...decoded.ipAddresses].map(normaliseDnsName))];
}
