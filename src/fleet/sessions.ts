/**
 * The server side of the agent channel: one authenticated session per connected agent.
 * Every frame is checked by the protocol's zod schemas; anything malformed, oversized,
 * unexpected or carrying a private key closes that one connection with a reason and a
 * log line, and never touches the process or the other agents.
 */
import { randomBytes, randomUUID, verify as verifySignature } from 'node:crypto';
import type { Logger } from 'pino';
import type { WebSocket } from 'ws';
import { CertplaneError } from '../errors.js';
import { parseCsr } from '../chain/index.js';
import type { AgentCertificateRecord, Store } from '../store/types.js';
import type { AgentCa, AgentIdentity } from './ca.js';
import { AgentMessage, CloseCode, PROTOCOL_VERSION, ServerMessage, authPayload, decodeMessage, encodeMessage, identityRenewalOpensAt } from '../channel/protocol.js';
import { ErrorCode, channelCloseOf } from '../error-catalogue.js';
import { Slots } from './slots.js';

/**
 * At most one agent certificate renewal per instance in this time. The lifetime rule allows one
 * renewal per two thirds of a lifetime; this bounds how often an unused successor (lost on its
 * way to the agent) may be replaced, so a stolen key cannot churn through certificates.
 */
export const IDENTITY_RENEWAL_MIN_INTERVAL_MS = 60 * 60_000;

/** Distributes what an authenticated agent says; implemented by the issuance coordinator. */
export interface SessionHandler {
  onConnected(session: AgentSession): Promise<void>;
  /** The instance's agent is no longer connected here (its session closed; a newer connection of it here replaces a session without this): work waiting on it here stops waiting. */
  onDisconnected?(session: AgentSession): void;
  onMessage(session: AgentSession, message: Exclude<AgentMessage, { type: 'auth' | 'http01_ready' | 'identity_renewal' | 'revocation_signed' }>): Promise<void>;
}

/** Counters the composition root wires to Prometheus. */
export interface ChannelMetrics {
  connected(delta: 1 | -1): void;
  rejected(code: string): void;
}

export interface SessionOptions {
  readonly store: Store;
  readonly ca: AgentCa;
  readonly logger: Logger;
  readonly clock: () => Date;
  readonly metrics?: ChannelMetrics;
  readonly authTimeoutMs?: number;
  readonly heartbeatMs?: number;
  readonly requestTimeoutMs?: number;
  /** Defaults to IDENTITY_RENEWAL_MIN_INTERVAL_MS. */
  readonly renewalMinIntervalMs?: number;
  /** Authentications (with the reconciliation that follows) using the store at once; defaults to AUTHENTICATIONS_AT_ONCE. */
  readonly authenticationsAtOnce?: number;
}

/**
 * In a reconnect storm every agent's auth arrives at once: unbounded, their queries queued in
 * the pool past its 10 s wait and the channels closed as STORE_UNAVAILABLE, each a redial
 * that brought the work back (9,528 in one 10,000-agent storm). Bounded, the rest wait here.
 * Chosen when the pool held 20; with 8 kept (store/engines.ts) the 16 queue for them, each
 * query a millisecond or less, and other work takes its turn among them.
 */
export const AUTHENTICATIONS_AT_ONCE = 16;

type ServerMessageWithoutVersion = ServerMessage extends infer M ? (M extends unknown ? Omit<M, 'v'> : never) : never;

/**
 * How stale an instance's `agentLastSeenAt` may be while its agent keeps talking: the
 * authentication writes it with the connection (one write), and the connection's later
 * messages at most once in this time after that.
 */
export const LAST_SEEN_RESOLUTION_MS = 30_000;

/** One authenticated agent connection. */
export class AgentSession {
  readonly #pending = new Map<string, { resolve: (answer: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();

  constructor(
    readonly identity: AgentIdentity,
    private readonly socket: WebSocket,
    private readonly requestTimeoutMs: number,
    /** When it authenticated: the instance's connection time, and when its agent was last seen until it speaks again. */
    readonly connectedAt: Date,
  ) {}

  get instanceId(): string {
    return this.identity.instanceId;
  }

  get open(): boolean {
    return this.socket.readyState === this.socket.OPEN;
  }

  send(message: ServerMessageWithoutVersion): void {
    if (!this.open) throw new CertplaneError(ErrorCode.AGENT_OFFLINE, `agent of instance ${this.instanceId} is not connected`);
    this.socket.send(encodeMessage(ServerMessage, { v: PROTOCOL_VERSION, ...message } as ServerMessage));
  }

  /**
   * Sends a message that the agent answers with the same requestId (http01_ready,
   * revocation_signed), resolving with what the answer carries; an error frame with that
   * requestId rejects it with the agent's code, and no answer within `timeoutMs` with AGENT_TIMEOUT.
   * `signal` stops the wait at once with its reason (shutdown, a lost lease); a late answer is dropped.
   */
  request<T = void>(message: Extract<ServerMessageWithoutVersion, { requestId: string }>, timeoutMs = this.requestTimeoutMs, signal?: AbortSignal): Promise<T> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise<T>((resolve, reject) => {
      const settle = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        this.#pending.delete(message.requestId);
      };
      const onAbort = () => {
        settle();
        reject(signal?.reason);
      };
      const timer = setTimeout(() => {
        settle();
        reject(new CertplaneError(ErrorCode.AGENT_TIMEOUT, `agent of instance ${this.instanceId} did not answer ${message.type} within ${timeoutMs} ms`));
      }, timeoutMs);
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#pending.set(message.requestId, {
        resolve: (answer) => (settle(), resolve(answer as T)),
        reject: (error) => (settle(), reject(error)),
        timer,
      });
      try {
        this.send(message);
      } catch (error) {
        settle();
        reject(error as Error);
      }
    });
  }

  /** Resolves the request the agent answered, with what its answer carries. */
  acknowledge(requestId: string, answer?: unknown): void {
    const pending = this.#pending.get(requestId);
    if (!pending) return;
    clearTimeout(pending.timer);
    this.#pending.delete(requestId);
    pending.resolve(answer);
  }

  /** Rejects the request the agent refused (an error frame naming it), with the agent's code; false when no such request waits. */
  refuse(requestId: string, code: string, message: string): boolean {
    const pending = this.#pending.get(requestId);
    if (!pending) return false;
    clearTimeout(pending.timer);
    this.#pending.delete(requestId);
    pending.reject(new CertplaneError(ErrorCode.AGENT_REQUEST_REFUSED, `the agent of instance ${this.instanceId} refused: ${code}: ${message}`, { agentCode: code }));
    return true;
  }

  close(code: number, reason: string): void {
    for (const [id, pending] of this.#pending) {
      clearTimeout(pending.timer);
      pending.reject(new CertplaneError(ErrorCode.AGENT_OFFLINE, `agent of instance ${this.instanceId} disconnected: ${reason}`));
      this.#pending.delete(id);
    }
    if (this.socket.readyState === this.socket.OPEN || this.socket.readyState === this.socket.CONNECTING) this.socket.close(code, truncateReason(reason));
  }
}

/** Accepts agent connections, authenticates them and keeps the one live session per instance. */
export class SessionRegistry {
  readonly #sessions = new Map<string, AgentSession>();
  /** Until when a session's renewal requests are refused without work: one renewal per connection, and refusals are not re-examined early. */
  readonly #renewalHeldUntil = new WeakMap<AgentSession, Date>();
  #handler: SessionHandler | undefined;
  readonly #authentications: Slots;

  constructor(private readonly options: SessionOptions) {
    this.#authentications = new Slots(options.authenticationsAtOnce ?? AUTHENTICATIONS_AT_ONCE);
  }

  /** Set once by the composition root: the coordinator and the registry know each other. */
  setHandler(handler: SessionHandler): void {
    this.#handler = handler;
  }

  get(instanceId: string): AgentSession | undefined {
    const session = this.#sessions.get(instanceId);
    return session?.open ? session : undefined;
  }

  /** Instances whose agents are connected to this process. */
  instanceIds(): string[] {
    return [...this.#sessions.entries()].filter(([, session]) => session.open).map(([id]) => id);
  }

  get size(): number {
    return this.#sessions.size;
  }

  /** Takes over an upgraded WebSocket: hello, authentication, then message dispatch until it closes. */
  accept(socket: WebSocket, remoteAddress: string, tlsPeerFingerprint?: string): void {
    const log = this.options.logger.child({ remote: remoteAddress });
    const nonce = randomBytes(32).toString('base64url');
    let session: AgentSession | undefined;
    let alive = true;
    /** Closes the connection with the close code the error catalogue gives the error's code. */
    const fail = (error: unknown) => {
      const e = error instanceof CertplaneError ? error : new CertplaneError(ErrorCode.CHANNEL_INTERNAL, (error as Error).message);
      const code = channelCloseOf(e.code);
      this.options.metrics?.rejected(e.code);
      log.warn({ instanceId: session?.instanceId, code: e.code, err: e.message }, 'closing agent connection');
      if (session) session.close(code, `${e.code}: ${e.message}`);
      else socket.close(code, truncateReason(`${e.code}: ${e.message}`));
    };
    /** Whether any frame has arrived: from then on the agent has done its part, and the timeout is not its to answer for. */
    let spoke = false;
    const authTimer = setTimeout(() => {
      // After a stall of this process's event loop, expired timers run before the sockets are read again: an auth
      // that arrived during the stall is still unread here (a 10,000-agent storm cut thousands that way). One turn
      // of the loop reads it; only an agent that has still said nothing then is timed out.
      setImmediate(() => {
        if (!spoke && socket.readyState === socket.OPEN) fail(new CertplaneError(ErrorCode.AGENT_AUTH_FAILED, 'no authentication within the time allowed'));
      });
    }, this.options.authTimeoutMs ?? 10_000);
    const heartbeat = setInterval(() => {
      if (!alive) {
        log.warn({ instanceId: session?.instanceId }, 'agent missed its heartbeat, terminating the connection');
        socket.terminate();
        return;
      }
      alive = false;
      socket.ping();
    }, this.options.heartbeatMs ?? 15_000);
    socket.on('pong', () => {
      alive = true;
    });
    socket.on('error', (error) => log.warn({ err: error.message }, 'agent socket error'));
    let queue = Promise.resolve();
    /** When this connection last wrote the instance's last-seen time (its authentication, then at most every LAST_SEEN_RESOLUTION_MS; a write per message would be one per CSR, per acknowledgement). */
    let seenWrittenAt = Number.NEGATIVE_INFINITY;
    socket.on('message', (data, isBinary) => {
      spoke = true;
      queue = queue.then(async () => {
        try {
          if (isBinary) throw new CertplaneError(ErrorCode.CHANNEL_MESSAGE_INVALID, 'binary frames are not part of the protocol');
          const message = decodeMessage(AgentMessage, data as Buffer);
          if (!session) {
            if (message.type !== 'auth') throw new CertplaneError(ErrorCode.CHANNEL_MESSAGE_UNEXPECTED, `expected auth, got ${message.type}`);
            // The agent has done its part: in a reconnect storm the plane's own queue must not time it out.
            clearTimeout(authTimer);
            await this.#authentications.run(async () => {
              // Gone while it waited its turn: nothing to check.
              if (socket.readyState !== socket.OPEN) return;
              const authenticated = await this.#authenticate(message, nonce, socket, tlsPeerFingerprint);
              if (!authenticated.open) {
                // Gone while its authentication was under way: the close found no session to release.
                release(authenticated, 'closed during authentication');
                return;
              }
              session = authenticated;
              seenWrittenAt = authenticated.connectedAt.getTime();
              log.info({ instanceId: session.instanceId, agentVersion: message.agentVersion }, 'agent connected');
              await this.#handler?.onConnected(session);
            });
            return;
          }
          if (message.type === 'auth') throw new CertplaneError(ErrorCode.CHANNEL_MESSAGE_UNEXPECTED, 'already authenticated');
          const now = this.options.clock();
          if (now.getTime() - seenWrittenAt >= LAST_SEEN_RESOLUTION_MS) {
            seenWrittenAt = now.getTime();
            // Not awaited: an answer the plane waits on (http01_ready) is not held behind a bookkeeping write.
            const instanceId = session.instanceId;
            void this.options.store.instances.touchAgent(instanceId, now).catch((error: unknown) => log.warn({ instanceId, err: (error as Error).message }, 'could not record when the agent was last seen'));
          }
          if (message.type === 'http01_ready') {
            session.acknowledge(message.requestId);
            return;
          }
          if (message.type === 'revocation_signed') {
            session.acknowledge(message.requestId, message.jws);
            return;
          }
          // An error naming a request the plane waits on answers that request; any other goes to the handler's log.
          if (message.type === 'error' && message.requestId !== undefined && session.refuse(message.requestId, message.code, message.message)) return;
          if (message.type === 'identity_renewal') {
            await this.#renewIdentity(session, message.csrPem);
            return;
          }
          await this.#handler?.onMessage(session, message);
        } catch (error) {
          fail(error);
        }
      });
    });
    const release = (ended: AgentSession, reason: string) => {
      ended.close(CloseCode.PROTOCOL_ERROR, reason);
      if (this.#sessions.get(ended.instanceId) === ended) {
        this.#sessions.delete(ended.instanceId);
        this.#handler?.onDisconnected?.(ended);
        this.options.metrics?.connected(-1);
        void this.options.store.instances.setAgentConnected(ended.instanceId, null).catch((error) => log.warn({ err: (error as Error).message }, 'could not record the disconnection'));
      }
    };
    socket.on('close', (code, reason) => {
      clearTimeout(authTimer);
      clearInterval(heartbeat);
      if (!session) return;
      log.info({ instanceId: session.instanceId, code, reason: reason.toString() }, 'agent disconnected');
      release(session, 'closed');
    });
    socket.send(encodeMessage(ServerMessage, { v: PROTOCOL_VERSION, type: 'hello', nonce }));
  }

  /**
   * Signs a new agent certificate for the same instance over the agent's fresh identity key,
   * only inside the renewal window of the certificate the session authenticated with, once per
   * connection and at most once per instance in the minimum interval. The store decides and
   * records atomically with respect to revocation; a refusal mints nothing and leaves the
   * connection open, with the time from which asking again can succeed.
   */
  async #renewIdentity(session: AgentSession, csrPem: string): Promise<void> {
    const now = this.options.clock();
    const log = this.options.logger.child({ instanceId: session.instanceId, fingerprint: session.identity.fingerprintSha256 });
    const refuse = (code: string, message: string, retryAt: Date) => {
      this.#renewalHeldUntil.set(session, retryAt);
      log.warn({ code, retryAt }, `agent certificate renewal refused: ${message}`);
      session.send({ type: 'identity_renewal_refused', code, message, retryAt: retryAt.toISOString() });
    };
    const heldUntil = this.#renewalHeldUntil.get(session);
    if (heldUntil && now < heldUntil) {
      refuse(ErrorCode.AGENT_RENEWAL_RATE_LIMITED, 'this connection already asked; a renewed certificate is used from the next connection', heldUntil);
      return;
    }
    // A malformed CSR is a protocol error whenever it comes, as every other bad frame is.
    const csr = await parseCsr(csrPem, 'identity CSR');
    const opensAt = identityRenewalOpensAt(session.identity);
    if (now < opensAt) {
      refuse(ErrorCode.AGENT_RENEWAL_TOO_EARLY, `the agent certificate may be renewed from ${opensAt.toISOString()}, two thirds into its lifetime`, opensAt);
      return;
    }
    const result = await this.options.store.agentCertificates.renew(
      { instanceId: session.instanceId, predecessor: session.identity.fingerprintSha256, at: now, minIntervalMs: this.options.renewalMinIntervalMs ?? IDENTITY_RENEWAL_MIN_INTERVAL_MS },
      async () => {
        const { certificatePem, identity } = await this.options.ca.issue(session.instanceId, csr, now);
        return { certificatePem, fingerprintSha256: identity.fingerprintSha256, serialNumber: identity.serialNumber, notAfter: identity.notAfter, opensAt: identityRenewalOpensAt(identity) };
      },
    );
    if (result.outcome === 'refused') throw new CertplaneError(ErrorCode.AGENT_REVOKED, 'the agent certificate of this connection was revoked or superseded; nothing was renewed');
    if (result.outcome === 'rate_limited') {
      refuse(ErrorCode.AGENT_RENEWAL_RATE_LIMITED, 'the agent certificate of this instance was renewed a short while ago', result.retryAt);
      return;
    }
    const { minted } = result;
    this.#renewalHeldUntil.set(session, minted.opensAt);
    await this.options.store.audit.record({
      actor: `agent:${session.instanceId}`,
      action: 'agent.identity.renew',
      target: minted.fingerprintSha256,
      reason: 'agent certificate past two thirds of its lifetime',
      details: { previous: session.identity.fingerprintSha256, replacedUnused: result.replaced },
    });
    session.send({ type: 'identity_renewed', certificatePem: minted.certificatePem });
    log.info({ renewed: minted.fingerprintSha256, notAfter: minted.notAfter, replacedUnused: result.replaced }, 'agent certificate renewed');
  }

  async #authenticate(message: Extract<AgentMessage, { type: 'auth' }>, nonce: string, socket: WebSocket, tlsPeerFingerprint: string | undefined): Promise<AgentSession> {
    const now = this.options.clock();
    let identity: AgentIdentity;
    try {
      identity = this.options.ca.verify(message.certificatePem, now);
    } catch (error) {
      throw new CertplaneError(ErrorCode.AGENT_AUTH_FAILED, (error as Error).message);
    }
    if (tlsPeerFingerprint !== undefined && tlsPeerFingerprint !== identity.fingerprintSha256) {
      throw new CertplaneError(ErrorCode.AGENT_AUTH_FAILED, 'the TLS client certificate is not the agent certificate presented on the channel');
    }
    const record = await this.options.store.agentCertificates.get(identity.fingerprintSha256);
    if (!record || record.instanceId !== identity.instanceId) throw new CertplaneError(ErrorCode.AGENT_AUTH_FAILED, 'unknown agent certificate');
    assertUsable(record);
    const signed = verifySignature('sha256', authPayload(nonce), identity.publicKey, Buffer.from(message.signature, 'base64'));
    if (!signed) throw new CertplaneError(ErrorCode.AGENT_AUTH_FAILED, 'the signature over the nonce does not verify with the agent certificate\'s key');
    const session = new AgentSession(identity, socket, this.options.requestTimeoutMs ?? 15_000, now);
    const previous = this.#sessions.get(identity.instanceId);
    this.#sessions.set(identity.instanceId, session);
    // Checked again, under the instance's lock, only once the session is registered: a
    // revocation committed before this shows here, one committed after finds the session to cut.
    const { record: current, superseded } = await this.options.store.agentCertificates.use(identity.fingerprintSha256, now);
    try {
      if (!current) throw new CertplaneError(ErrorCode.AGENT_AUTH_FAILED, 'unknown agent certificate');
      assertUsable(current);
    } catch (error) {
      if (this.#sessions.get(identity.instanceId) === session) {
        if (previous) this.#sessions.set(identity.instanceId, previous);
        else this.#sessions.delete(identity.instanceId);
      }
      throw error;
    }
    if (previous) previous.close(CloseCode.REPLACED, 'replaced by a newer connection of the same agent');
    else this.options.metrics?.connected(1);
    if (superseded) this.options.logger.info({ instanceId: identity.instanceId, fingerprint: identity.fingerprintSha256, superseded }, 'renewed agent certificate in use: its predecessor no longer authenticates');
    await this.options.store.instances.setAgentConnected(identity.instanceId, now);
    if (session.open) session.send({ type: 'welcome', instanceId: identity.instanceId });
    return session;
  }

  /**
   * Cuts off the session authenticated with a revoked agent certificate, at once; the
   * revocation is in the store, so its reconnection is refused. Returns whether one was open.
   */
  disconnectRevoked(fingerprintSha256: string): boolean {
    for (const session of this.#sessions.values()) {
      if (session.identity.fingerprintSha256 === fingerprintSha256) {
        this.options.logger.warn({ instanceId: session.instanceId, fingerprint: fingerprintSha256 }, 'agent certificate revoked: disconnecting');
        session.close(CloseCode.REVOKED, `${ErrorCode.AGENT_REVOKED}: the agent certificate was revoked`);
        return true;
      }
    }
    return false;
  }

  /**
   * Watches the store for agent certificates revoked by any process (the admin console may
   * run on another replica) and cuts their sessions here, every `intervalMs`.
   */
  watchRevocations(intervalMs = 500): () => void {
    let since = this.options.clock();
    let busy = false;
    const timer = setInterval(() => {
      if (busy) return;
      busy = true;
      const checkFrom = new Date(since.getTime() - 5_000);
      since = this.options.clock();
      void this.options.store.agentCertificates
        .revokedSince(checkFrom)
        .then((fingerprints) => fingerprints.forEach((fingerprint) => this.disconnectRevoked(fingerprint)))
        .catch((error) => this.options.logger.warn({ err: (error as Error).message }, 'revocation check failed'))
        .finally(() => {
          busy = false;
        });
    }, intervalMs);
    return () => clearInterval(timer);
  }

  /** Closes every session, for shutdown. */
  closeAll(reason: string): void {
    for (const session of this.#sessions.values()) session.close(CloseCode.SHUTDOWN, reason);
  }

  /** A fresh request id for http-01 requests. */
  static requestId(): string {
    return randomUUID();
  }
}

/** Refuses a certificate revoked, or superseded by its renewal having authenticated. */
function assertUsable(record: AgentCertificateRecord): void {
  if (record.revokedAt) throw new CertplaneError(ErrorCode.AGENT_REVOKED, `agent certificate revoked at ${record.revokedAt.toISOString()}`);
  if (record.supersededAt) throw new CertplaneError(ErrorCode.AGENT_REVOKED, `agent certificate superseded at ${record.supersededAt.toISOString()} by its renewal, which the agent has used since`);
}

/** WebSocket close reasons are limited to 123 bytes of UTF-8; cut on a character boundary (a cut inside one becomes a 3-byte U+FFFD, and ws throws). */
function truncateReason(reason: string): string {
  if (Buffer.byteLength(reason) <= 123) return reason;
  let kept = '';
  let bytes = 0;
  for (const char of reason) {
    const size = Buffer.byteLength(char);
    if (bytes + size > 120) break;
    kept += char;
    bytes += size;
  }
  return `${kept}...`;
}
