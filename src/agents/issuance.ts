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
import { parseCertificateBundle, parseCsr, type VerificationReport } from '../chain/index.js';
import type { IssuedChain } from '../acme/issuer.js';
import { Http01Solver, type ChallengeSolver } from '../acme/solver.js';
import type { CertificateRecord, InstanceRecord, Store } from '../store/types.js';
import { escapeControlCharacters } from '../untrusted-text.js';
import type { AgentMessage, KeyAlgorithm } from './protocol.js';
import { SessionErrorCode, SessionRegistry, type AgentSession, type SessionHandler } from './sessions.js';

export const IssuanceErrorCode = {
  CSR_REJECTED: 'ISSUANCE_CSR_REJECTED',
  UNKNOWN_INSTANCE: 'ISSUANCE_UNKNOWN_INSTANCE',
  UNKNOWN_CERTIFICATE: 'ISSUANCE_UNKNOWN_CERTIFICATE',
} as const;

/** The ACME side, as the coordinator needs it. */
export interface Issuer {
  issue(csrPem: string, options: { solvers?: readonly ChallengeSolver[]; profile?: string; replaces?: string }): Promise<IssuedChain>;
}

/** Paces orders under the CA's limits (jobs/ratelimit.ts); the coordinator asks before every order. */
export interface OrderGate {
  acquire(request: { hostnames: string[]; attempt: 'first' | 'retry' }): Promise<{ granted: true } | { granted: false; retryAt: Date; limitedBy: string }>;
  /** The CA said rateLimited: no process orders again before `until`. */
  blockUntil(until: Date, reason: string): Promise<void>;
}

/** How long to stop ordering after the CA answers rateLimited (acme-client has already waited out its Retry-After). */
const RATE_LIMITED_PAUSE_MS = 15 * 60_000;

/** Told when a certificate settles, so renewal and reissue jobs can follow (jobs/lifecycle.ts). */
export interface IssuanceListener {
  onInstalled(certificate: CertificateRecord): Promise<void>;
  onFailed(certificate: CertificateRecord, error: string): Promise<void>;
  /** The ARI `replaces` value for an order that replaces `certificate`, when the CA supports it. */
  replacesFor?(certificate: CertificateRecord): Promise<string | undefined>;
}

/** How long a prompt (CSR request, delivery) waits for an answer before it is sent again. */
const PROMPT_AGAIN_MS = 30_000;
/** An issuance not touched for this long belongs to a process that died; it is resumed. */
const STALE_ISSUING_MS = 10 * 60_000;

export interface IssuanceMetrics {
  issuance(outcome: 'issued' | 'failed' | 'installed' | 'install_failed'): void;
}

/** What `describeKey` of a CSR must read for each key algorithm an instance may use. */
const KEY_DESCRIPTIONS: Record<KeyAlgorithm, string> = { 'ecdsa-p256': 'ECDSA P-256', 'rsa-2048': 'RSA 2048', 'rsa-3072': 'RSA 3072' };

export class IssuanceCoordinator implements SessionHandler {
  readonly #running = new Set<string>();

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
    },
  ) {}

  readonly #prompted = new Map<string, number>();

  /**
   * Starts an issuance for the instance, or returns the one under way. `jobId` links it to
   * the renewal or reissue job that asked; `replacesCertificateId` to the certificate it replaces.
   */
  async requestIssue(instanceId: string, options: { jobId?: string; replacesCertificateId?: string } = {}): Promise<CertificateRecord> {
    const instance = await this.#instance(instanceId);
    let certificate = await this.#openOrCreate(instance.id);
    if (options.jobId && certificate.status === 'pending' && !certificate.jobId) {
      certificate =
        (await this.deps.store.certificates.transition(certificate.id, ['pending'], 'pending', { jobId: options.jobId, replacesCertificateId: options.replacesCertificateId ?? null })) ?? certificate;
    }
    const session = this.deps.sessions.get(instance.id);
    if (session && certificate.status === 'pending') this.#askForCsr(session, instance, certificate);
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
      else if (certificate.status === 'delivered' && due) this.#deliver(session, certificate);
      else if (certificate.status === 'issuing' && certificate.csrPem && !this.#running.has(certificate.id)) {
        const stale = this.deps.clock().getTime() - certificate.updatedAt.getTime() >= STALE_ISSUING_MS || connecting;
        if (stale) void this.#issue(instance, certificate, certificate.csrPem);
      }
    }
  }

  async onMessage(session: AgentSession, message: Exclude<AgentMessage, { type: 'auth' | 'http01_ready' | 'identity_renewal' }>): Promise<void> {
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
        await this.#fail(session.instanceId, message.certificateId, ['delivered'], `the agent refused to install: ${message.code}: ${message.message}`);
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
      await this.#fail(instance.id, certificate.id, ['pending'], (error as Error).message);
      session.send({ type: 'cancel', certificateId, reason: (error as Error).message });
      return;
    }
    const issuing = await this.deps.store.certificates.transition(certificate.id, ['pending'], 'issuing', { csrPem });
    // Not awaited: the order needs further messages from this same agent (http01_ready),
    // which the session delivers only after this handler returns.
    if (issuing) void this.#issue(instance, issuing, csrPem);
  }

  async #checkCsr(instance: InstanceRecord, csrPem: string): Promise<void> {
    const csr = await parseCsr(csrPem).catch((error: CertplaneError) => {
      throw new CertplaneError(IssuanceErrorCode.CSR_REJECTED, `CSR rejected: ${error.code}: ${error.message}`);
    });
    const allowed = new Set(instance.hostnames.map((h) => h.toLowerCase()));
    const foreign = csr.dnsNames.filter((name) => !allowed.has(name));
    if (csr.dnsNames.length === 0 || foreign.length > 0) {
      throw new CertplaneError(IssuanceErrorCode.CSR_REJECTED, `CSR rejected: it asks for ${foreign.join(', ') || 'no name'}, outside the instance's hostnames ${instance.hostnames.join(', ')}`);
    }
    if (csr.keyDescription !== KEY_DESCRIPTIONS[instance.keyAlgorithm]) {
      throw new CertplaneError(IssuanceErrorCode.CSR_REJECTED, `CSR rejected: key is ${csr.keyDescription}, the instance's policy is ${KEY_DESCRIPTIONS[instance.keyAlgorithm]}`);
    }
  }

  async #issue(instance: InstanceRecord, certificate: CertificateRecord, csrPem: string): Promise<void> {
    const log = this.deps.logger.child({ instanceId: instance.id, certificateId: certificate.id });
    this.#running.add(certificate.id);
    try {
      await this.#waitForOrderBudget(instance, certificate, log);
      const replaced = certificate.replacesCertificateId ? await this.deps.store.certificates.get(certificate.replacesCertificateId) : undefined;
      const replaces = replaced ? await this.deps.listener?.replacesFor?.(replaced) : undefined;
      const issued = await this.deps.issuer.issue(csrPem, {
        solvers: this.#solvers(instance.id),
        ...(instance.profile ? { profile: instance.profile } : {}),
        ...(replaces ? { replaces } : {}),
      });
      const leaf = parseCertificateBundle(issued.fullchainPem)[0]!;
      const delivered = await this.deps.store.certificates.transition(certificate.id, ['issuing'], 'delivered', {
        fullchainPem: issued.fullchainPem,
        fingerprintSha256: leaf.fingerprintSha256,
        notBefore: leaf.notBefore,
        notAfter: leaf.notAfter,
        anchorCN: issued.report.anchor?.subjectCN ?? null,
        report: withoutPem(issued.report),
        deliveredAt: this.deps.clock(),
        lastError: null,
      });
      this.deps.metrics?.issuance('issued');
      log.info({ fingerprint: leaf.fingerprintSha256, anchor: issued.report.anchor?.subjectCN }, 'certificate issued and verified');
      const session = this.deps.sessions.get(instance.id);
      if (delivered && session) this.#deliver(session, delivered);
      else if (delivered) log.info('agent offline; the certificate is delivered when it reconnects');
    } catch (error) {
      const message = error instanceof CertplaneError ? `${error.code}: ${error.message}` : (error as Error).message;
      log.warn({ err: message }, 'issuance failed');
      this.deps.metrics?.issuance('failed');
      if (/rateLimited|too many (new )?(orders|certificates)/i.test(message)) {
        await this.deps.gate?.blockUntil(new Date(this.deps.clock().getTime() + RATE_LIMITED_PAUSE_MS), message.slice(0, 200));
      }
      await this.#fail(instance.id, certificate.id, ['issuing'], message);
      this.deps.sessions.get(instance.id)?.send({ type: 'cancel', certificateId: certificate.id, reason: message.slice(0, 2000) });
    } finally {
      this.#running.delete(certificate.id);
    }
  }

  /** Waits (bounded by the gate's answers) until the rate limiter allows one more order for these names. */
  async #waitForOrderBudget(instance: InstanceRecord, certificate: CertificateRecord, log: Logger): Promise<void> {
    const gate = this.deps.gate;
    if (!gate) return;
    const job = certificate.jobId ? await this.deps.store.jobs.get(certificate.jobId) : undefined;
    const attempt = job && job.attempts > 0 ? 'retry' : 'first';
    for (;;) {
      const answer = await gate.acquire({ hostnames: [...instance.hostnames], attempt });
      if (answer.granted) return;
      const waitMs = Math.max(50, answer.retryAt.getTime() - this.deps.clock().getTime()) + Math.random() * 100;
      log.debug({ limitedBy: answer.limitedBy, waitMs }, 'rate limited; waiting before ordering');
      await this.deps.store.certificates.transition(certificate.id, ['issuing'], 'issuing');
      await new Promise((resolve) => setTimeout(resolve, Math.min(waitMs, 60_000)));
    }
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
    const installed = await this.deps.store.certificates.transition(certificate.id, ['delivered'], 'installed', { installedAt: this.deps.clock() });
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

  #deliver(session: AgentSession, certificate: CertificateRecord): void {
    if (!certificate.fullchainPem || !certificate.fingerprintSha256) return;
    this.#prompted.set(certificate.id, Date.now());
    session.send({ type: 'deliver', certificateId: certificate.id, fullchainPem: certificate.fullchainPem, fingerprintSha256: certificate.fingerprintSha256 });
    this.deps.logger.info({ instanceId: certificate.instanceId, certificateId: certificate.id }, 'certificate sent to agent');
  }

  /**
   * The reason is stored and passed on with its control characters escaped: it quotes text
   * from the agent (a reload command's output) or the CA that may span lines, and it is
   * shown in the API and on one line in tables, where a newline would forge a row.
   */
  async #fail(instanceId: string, certificateId: string, from: CertificateRecord['status'][], reason: string): Promise<void> {
    const lastError = escapeControlCharacters(reason).slice(0, 4000);
    const failed = await this.deps.store.certificates.transition(certificateId, from, 'failed', { lastError });
    this.deps.logger.warn({ instanceId, certificateId, err: lastError }, 'certificate failed');
    this.#prompted.delete(certificateId);
    if (failed) await this.deps.listener?.onFailed(failed, lastError);
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
