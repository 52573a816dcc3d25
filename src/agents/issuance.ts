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
import { csrPemBytesFor, normaliseDnsName, parseCertificateBundle, parseCsr, type VerificationReport } from '../chain/index.js';
import type { IssueOptions, IssuedChain } from '../acme/issuer.js';
import { Http01Solver, type ChallengeSolver } from '../acme/solver.js';
import { ORDERING_STATES, type FailureReason } from '../lifecycle/index.js';
import type { CertificateRecord, InstanceRecord, Store } from '../store/types.js';
import { IssuanceErrorCode, agentRefused, failureOf } from './failures.js';
import { decommissioned } from './revocation.js';
import { escapeControlCharacters } from '../untrusted-text.js';
import { processName } from '../process-name.js';
import type { AgentMessage, KeyAlgorithm } from './protocol.js';
import { SessionErrorCode, SessionRegistry, type AgentSession, type SessionHandler } from './sessions.js';

export { IssuanceErrorCode } from './failures.js';

/** The ACME side, as the coordinator needs it. */
export interface Issuer {
  issue(csrPem: string, options: Pick<IssueOptions, 'solvers' | 'profile' | 'replaces' | 'onOrderCreated'>): Promise<IssuedChain>;
}

/** Paces orders under the CA's limits (jobs/ratelimit.ts); the coordinator asks before every order. */
export interface OrderGate {
  acquire(request: { hostnames: string[]; attempt: 'first' | 'retry' }): Promise<{ granted: true } | { granted: false; retryAt: Date; limitedBy: string }>;
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
/** How long an ordering lease lasts without renewal: a process that dies mid-order holds its certificate no longer. */
const LEASE_MS = 60_000;

export interface IssuanceMetrics {
  issuance(outcome: 'issued' | 'failed' | 'installed' | 'install_failed'): void;
}

/** What `describeKey` of a CSR must read for each key algorithm an instance may use. */
const KEY_DESCRIPTIONS: Record<KeyAlgorithm, string> = { 'ecdsa-p256': 'ECDSA P-256', 'rsa-2048': 'RSA 2048', 'rsa-3072': 'RSA 3072' };

export class IssuanceCoordinator implements SessionHandler {
  readonly #running = new Set<string>();
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
    },
  ) {}

  readonly #prompted = new Map<string, number>();

  /**
   * Starts an issuance for the instance, or returns the one under way. `jobId` links it to
   * the renewal or reissue job that asked; `replacesCertificateId` to the certificate it replaces.
   */
  async requestIssue(instanceId: string, options: { jobId?: string; replacesCertificateId?: string } = {}): Promise<CertificateRecord> {
    const instance = await this.#instance(instanceId);
    if (instance.decommissioned) throw decommissioned(instance);
    let certificate = await this.#openOrCreate(instance.id);
    if (options.jobId && certificate.status === 'pending' && !certificate.jobId) {
      certificate = (await this.deps.store.certificates.attachJob(certificate.id, options.jobId, options.replacesCertificateId ?? null)) ?? certificate;
    }
    const session = this.deps.sessions.get(instance.id);
    if (session && certificate.status === 'pending') this.#askForCsr(session, instance, certificate);
    else if (ORDERING_STATES.includes(certificate.status)) await this.#resume(instance, certificate);
    return certificate;
  }

  /** The instance's open certificate, or a new one; a replica that wins the race to create it wins for both. */
  async #openOrCreate(instanceId: string): Promise<CertificateRecord> {
    const [open] = await this.deps.store.certificates.open(instanceId);
    if (open) return open;
    try {
      return await this.deps.store.certificates.create(instanceId);
    } catch (error) {
      const [raced] = await this.deps.store.certificates.open(instanceId);
      if (hasCode(error, 'STORE_CONFLICT') && raced) return raced;
      throw error;
    }
  }

  /** Reconciles on every (re)connection: resumes whatever the instance's open certificates need. */
  async onConnected(session: AgentSession): Promise<void> {
    await this.#reconcile(session, true);
  }

  /**
   * Periodic pass over the agents connected to this process: prompts for work that another
   * process created (a job claimed elsewhere, a delivery issued elsewhere) and re-prompts
   * anything unanswered. This is what lets several processes share one database.
   */
  async reconcileConnected(ids: readonly string[]): Promise<void> {
    for (const id of ids) {
      const session = this.deps.sessions.get(id);
      if (session) await this.#reconcile(session, false).catch((error) => this.deps.logger.warn({ instanceId: id, err: (error as Error).message }, 'reconcile failed'));
    }
  }

  async #reconcile(session: AgentSession, connecting: boolean): Promise<void> {
    const instance = await this.#instance(session.instanceId);
    const now = Date.now();
    for (const certificate of await this.deps.store.certificates.open(instance.id)) {
      const due = connecting || now - (this.#prompted.get(certificate.id) ?? 0) >= PROMPT_AGAIN_MS;
      if (certificate.status === 'pending' && due) this.#askForCsr(session, instance, certificate);
      else if ((certificate.status === 'issued' || certificate.status === 'delivered') && due) await this.#deliver(session, certificate);
      else if (ORDERING_STATES.includes(certificate.status)) await this.#resume(instance, certificate);
    }
  }

  /**
   * Takes up an order whose lease is free or lapsed (its process died, or the rate limiter's
   * wait is over). A live lease held elsewhere means another process is ordering: nothing to do.
   */
  async #resume(instance: InstanceRecord, certificate: CertificateRecord): Promise<void> {
    if (!certificate.csrPem || this.#running.has(certificate.id)) return;
    if (certificate.leaseUntil && certificate.leaseUntil > this.deps.clock()) return;
    // http-01 needs the agent's channel, which only the process holding it can use.
    if (!this.deps.preferDns01 && !this.deps.sessions.get(instance.id)) return;
    this.#start(instance, certificate, certificate.csrPem);
  }

  /** Runs an order in the background; whatever escapes it is logged, never an unhandled rejection. */
  #start(instance: InstanceRecord, certificate: CertificateRecord, csrPem: string): void {
    this.#issue(instance, certificate, csrPem).catch((error: unknown) =>
      this.deps.logger.error({ instanceId: instance.id, certificateId: certificate.id, err: (error as Error).message }, 'issuance stopped unexpectedly'),
    );
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
    }
  }

  async #onCsr(session: AgentSession, certificateId: string, csrPem: string): Promise<void> {
    const certificate = await this.#certificateOf(session.instanceId, certificateId);
    if (certificate.status !== 'pending') return;
    const instance = await this.#instance(session.instanceId);
    try {
      await this.#checkCsr(instance, csrPem);
    } catch (error) {
      await this.#fail(instance.id, certificate.id, failureOf(error), (error as Error).message);
      session.send({ type: 'cancel', certificateId, reason: (error as Error).message });
      return;
    }
    const issuing = await this.deps.store.certificates.apply(certificate.id, 'csr_accepted', { csrPem });
    // Not awaited: the order needs further messages from this same agent (http01_ready),
    // which the session delivers only after this handler returns.
    if (issuing) this.#start(instance, issuing, csrPem);
  }

  async #checkCsr(instance: InstanceRecord, csrPem: string): Promise<void> {
    const limits = { maxNames: this.deps.maxNamesPerCertificate, maxPemBytes: csrPemBytesFor(instance.hostnames) };
    const csr = await parseCsr(csrPem, 'CSR', limits).catch((error: CertplaneError) => {
      throw new CertplaneError(IssuanceErrorCode.CSR_REJECTED, `CSR rejected: ${error.code}: ${error.message}`, { reason: error.code });
    });
    // Owned, not merely listed: the CA reuses any valid authorization of the shared account,
    // so a name listed by two instances would let either obtain it without a challenge.
    const requested = [...new Set(csr.dnsNames.map(normaliseDnsName))];
    const owned = new Set(await this.deps.store.instances.ownedNames(instance.id, [...new Set([...requested, ...instance.hostnames])]));
    const foreign = requested.filter((name) => !owned.has(name));
    if (requested.length === 0 || foreign.length > 0) {
      const own = instance.hostnames.filter((name) => owned.has(name));
      throw new CertplaneError(IssuanceErrorCode.CSR_REJECTED, `CSR rejected: it asks for ${foreign.join(', ') || 'no name'}, outside the hostnames this instance owns (${own.join(', ') || 'none'}); a name belongs to the one instance that registered it first`);
    }
    if (csr.keyDescription !== KEY_DESCRIPTIONS[instance.keyAlgorithm]) {
      throw new CertplaneError(IssuanceErrorCode.CSR_REJECTED, `CSR rejected: key is ${csr.keyDescription}, the instance's policy is ${KEY_DESCRIPTIONS[instance.keyAlgorithm]}`);
    }
  }

  /**
   * Orders, verifies and delivers, under the certificate's lease. The lease is taken first
   * (another process holding it is ordering already) and renewed while the order runs. A
   * refusal by the rate limiter parks the certificate: the lease is held until the limiter's
   * time, so no process picks it up before then, and the scheduler's next pass after that
   * time resumes it. Nothing sleeps here.
   */
  async #issue(instance: InstanceRecord, certificate: CertificateRecord, csrPem: string): Promise<void> {
    const log = this.deps.logger.child({ instanceId: instance.id, certificateId: certificate.id });
    const { store, clock } = this.deps;
    if (this.#running.has(certificate.id)) return;
    this.#running.add(certificate.id);
    let renewLease: NodeJS.Timeout | undefined;
    let parked = false;
    let verified: CertificateRecord | undefined;
    const owned = { leaseOwner: this.owner };
    try {
      if (!(await store.certificates.lease(certificate.id, this.owner, clock(), new Date(clock().getTime() + LEASE_MS)))) {
        log.debug('another process holds the lease; it is ordering');
        return;
      }
      const refusal = await this.#orderBudget(instance, certificate);
      if (refusal) {
        parked = await store.certificates.lease(certificate.id, this.owner, clock(), refusal.retryAt);
        log.info({ limitedBy: refusal.limitedBy, retryAt: refusal.retryAt }, 'rate limited; the order waits for the limiter');
        return;
      }
      renewLease = setInterval(() => {
        void store.certificates.lease(certificate.id, this.owner, clock(), new Date(clock().getTime() + LEASE_MS)).catch(() => undefined);
      }, LEASE_MS / 3);
      renewLease.unref();
      const replaced = certificate.replacesCertificateId ? await store.certificates.get(certificate.replacesCertificateId) : undefined;
      const replaces = replaced ? await this.deps.listener?.replacesFor?.(replaced) : undefined;
      const issued = await this.deps.issuer.issue(csrPem, {
        solvers: this.#solvers(instance.id),
        ...(instance.profile ? { profile: instance.profile } : {}),
        ...(replaces ? { replaces } : {}),
        onOrderCreated: async (orderUrl) => {
          await store.certificates.apply(certificate.id, 'order_created', { orderUrl }, owned);
        },
      });
      const leaf = parseCertificateBundle(issued.fullchainPem)[0]!;
      verified = await store.certificates.apply(
        certificate.id,
        'chain_verified',
        {
        fullchainPem: issued.fullchainPem,
        fingerprintSha256: leaf.fingerprintSha256,
        notBefore: leaf.notBefore,
        notAfter: leaf.notAfter,
        anchorCN: issued.report.anchor?.subjectCN ?? null,
        report: withoutPem(issued.report),
        lastError: null,
        },
        owned,
      );
      this.deps.metrics?.issuance('issued');
      log.info({ fingerprint: leaf.fingerprintSha256, anchor: issued.report.anchor?.subjectCN, kept: Boolean(verified) }, 'certificate issued and verified');
    } catch (error) {
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
      clearInterval(renewLease);
      this.#running.delete(certificate.id);
      if (!parked) await store.certificates.release(certificate.id, this.owner).catch(() => undefined);
    }
    // Outside the order's failure handling: a delivery that does not reach the agent now is
    // sent again when it reconnects; it must never fail a certificate already issued.
    const session = this.deps.sessions.get(instance.id);
    if (verified && session) await this.#deliver(session, verified).catch((error: unknown) => log.warn({ err: (error as Error).message }, 'delivery did not reach the agent; it is sent again when it reconnects'));
    else if (verified) log.info('agent offline; the certificate is delivered when it reconnects');
  }

  /** Asks the rate limiter for one more order for these names: undefined when granted, else until when to wait. */
  async #orderBudget(instance: InstanceRecord, certificate: CertificateRecord): Promise<{ retryAt: Date; limitedBy: string } | undefined> {
    const gate = this.deps.gate;
    if (!gate) return undefined;
    const job = certificate.jobId ? await this.deps.store.jobs.get(certificate.jobId) : undefined;
    const answer = await gate.acquire({ hostnames: [...instance.hostnames], attempt: job && job.attempts > 0 ? 'retry' : 'first' });
    return answer.granted ? undefined : { retryAt: answer.retryAt, limitedBy: answer.limitedBy };
  }

  #solvers(instanceId: string): ChallengeSolver[] {
    return this.deps.preferDns01 ? [] : [this.#http01For(instanceId)];
  }

  #http01For(instanceId: string): Http01Solver {
    const sessionOf = () => {
      const session = this.deps.sessions.get(instanceId);
      if (!session) throw new CertplaneError(SessionErrorCode.OFFLINE, `the agent of instance ${instanceId} is offline and cannot answer http-01`);
      return session;
    };
    return new Http01Solver({
      serve: (_domain, token, keyAuthorization) => sessionOf().request({ type: 'http01_serve', requestId: SessionRegistry.requestId(), token, keyAuthorization }),
      withdraw: async (_domain, token) => {
        this.deps.sessions.get(instanceId)?.send({ type: 'http01_withdraw', requestId: SessionRegistry.requestId(), token });
      },
    });
  }

  async #onInstalled(session: AgentSession, certificateId: string, fingerprintSha256: string): Promise<void> {
    const certificate = await this.#certificateOf(session.instanceId, certificateId);
    if (certificate.fingerprintSha256 !== fingerprintSha256) {
      this.deps.logger.warn({ instanceId: session.instanceId, certificateId, reported: fingerprintSha256, expected: certificate.fingerprintSha256 }, 'agent acknowledged another fingerprint');
      return;
    }
    const installed = await this.deps.store.certificates.apply(certificate.id, 'installed', { installedAt: this.deps.clock() });
    await this.deps.store.instances.setInstalledFingerprint(session.instanceId, fingerprintSha256);
    if (installed) {
      this.#prompted.delete(certificate.id);
      this.deps.metrics?.issuance('installed');
      await this.deps.listener?.onInstalled(installed);
      this.deps.logger.info({ instanceId: session.instanceId, certificateId, fingerprint: fingerprintSha256 }, 'agent installed the certificate');
    }
  }

  #askForCsr(session: AgentSession, instance: InstanceRecord, certificate: CertificateRecord): void {
    this.#prompted.set(certificate.id, Date.now());
    session.send({ type: 'csr_request', certificateId: certificate.id, hostnames: [...instance.hostnames], keyAlgorithm: instance.keyAlgorithm });
  }

  /** Sends the chain (again, after a reconnect or an unanswered delivery); an issued certificate becomes delivered first. */
  async #deliver(session: AgentSession, issued: CertificateRecord): Promise<void> {
    const certificate = issued.status === 'issued' ? await this.deps.store.certificates.apply(issued.id, 'delivered', { deliveredAt: this.deps.clock() }) : issued;
    if (!certificate?.fullchainPem || !certificate.fingerprintSha256) return;
    this.#prompted.set(certificate.id, Date.now());
    session.send({ type: 'deliver', certificateId: certificate.id, fullchainPem: certificate.fullchainPem, fingerprintSha256: certificate.fingerprintSha256 });
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
    this.deps.logger.warn({ instanceId, certificateId, reason: failure.reason, err: lastError }, 'certificate failed');
    this.#prompted.delete(certificateId);
    if (failed) await this.deps.listener?.onFailed(failed);
  }

  async #instance(id: string): Promise<InstanceRecord> {
    const instance = await this.deps.store.instances.get(id);
    if (!instance) throw new CertplaneError(IssuanceErrorCode.UNKNOWN_INSTANCE, `no instance ${id}`);
    return instance;
  }

  async #certificateOf(instanceId: string, certificateId: string): Promise<CertificateRecord> {
    const certificate = await this.deps.store.certificates.get(certificateId);
    if (!certificate || certificate.instanceId !== instanceId) {
      throw new CertplaneError(IssuanceErrorCode.UNKNOWN_CERTIFICATE, `certificate ${certificateId} does not belong to this agent's instance`);
    }
    return certificate;
  }
}

/** The report without the served PEM: the chain is stored once, in fullchain_pem. */
function withoutPem(report: VerificationReport): Omit<VerificationReport, 'servedChainPem'> {
  const { servedChainPem: _chain, ...rest } = report;
  return rest;
}
