/**
 * The agent's end of the channel. It dials out (instances sit behind NAT), proves its
 * identity by signing the server's nonce, then does what the plane asks: make a key and
 * a CSR, answer http-01, verify and install a chain, acknowledge by fingerprint. The
 * connection is re-dialled with jittered exponential backoff whenever it drops.
 */
import { sign } from 'node:crypto';
import type { Logger } from 'pino';
import WebSocket from 'ws';
import { CertplaneError } from '../errors.js';
import { parseCertificateBundle, spkiSha256OfPublicKeyPem } from '../chain/index.js';
import { createCsr, generateKeyPair, type KeyPair } from '../pki/factory.js';
import { AgentMessage, CHANNEL_PATH, CloseCode, MAX_MESSAGE_BYTES, PROTOCOL_VERSION, ServerMessage, authPayload, decodeMessage, encodeMessage, identityRenewalOpensAt } from '../channel/protocol.js';
import { explainConnectError } from './connect-errors.js';
import type { Http01Responder } from './http01.js';
import type { Installer } from './install.js';
import type { ServedProber } from './probe.js';
import { createPendingKey, discardPendingKey, listPendingCertificateIds } from './keys.js';
import { signRevocation } from './revocation.js';
import { writeIdentity, type AgentIdentity, type AgentState } from './state.js';
import { ErrorCode } from '../error-catalogue.js';

export const AGENT_VERSION = '0.1.0';

/** Past two thirds of its lifetime the agent certificate is renewed (the plane's rule: identityRenewalOpensAt). */
export function identityNeedsRenewal(certificatePem: string, now: Date): boolean {
  return now >= identityRenewalOpensAt(parseCertificateBundle(certificatePem, 'agent certificate')[0]!);
}

export interface AgentClientOptions {
  readonly state: AgentState;
  readonly identity: AgentIdentity;
  readonly installer: Installer;
  readonly http01?: Http01Responder;
  readonly serverCaPem?: string;
  readonly logger: Logger;
  readonly minBackoffMs?: number;
  readonly maxBackoffMs?: number;
  /** Probes the service on the instance (`--probe`) after every installation, on every connection and every `probeIntervalMs`. */
  readonly prober?: ServedProber;
  readonly probeIntervalMs?: number;
}

type AgentMessageWithoutVersion = AgentMessage extends infer M ? (M extends unknown ? Omit<M, 'v'> : never) : never;

export class AgentClient {
  #socket: WebSocket | undefined;
  #stopped = false;
  #attempt = 0;
  #timer: NodeJS.Timeout | undefined;
  /** The identity in use; replaced when the agent certificate is renewed. */
  #identity: AgentIdentity;
  /** The fresh identity key while its certificate is being renewed (memory only: a crash simply asks again). */
  #renewalKey: KeyPair | undefined;
  /** The connection the plane welcomed: where served-chain reports go. */
  #welcomed: WebSocket | undefined;
  #probeTimer: NodeJS.Timeout | undefined;
  /** The probe under way, and whether another was asked for meanwhile (an installation during a periodic probe must be followed by its own). */
  #probing: Promise<void> | undefined;
  #probeAgain = false;

  constructor(private readonly options: AgentClientOptions) {
    this.#identity = options.identity;
  }

  /** Whether the plane has welcomed the connection open now (authenticated on the channel). */
  get authenticated(): boolean {
    return this.#welcomed !== undefined && this.#welcomed === this.#socket && this.#welcomed.readyState === WebSocket.OPEN;
  }

  /** Starts dialling; returns at once. */
  start(): void {
    this.#connect();
    if (this.options.prober) {
      this.#probeTimer = setInterval(() => this.probeSoon(), this.options.probeIntervalMs ?? 300_000);
      this.#probeTimer.unref();
    }
  }

  /**
   * Probes the service and reports what it serves, once the probe under way (if any) is
   * done: a trigger during a probe is never lost, and probes never overlap. Without a
   * welcomed connection the report is dropped; the next connection probes again.
   */
  probeSoon(): Promise<void> {
    const prober = this.options.prober;
    if (!prober || this.#stopped) return Promise.resolve();
    if (this.#probing) {
      this.#probeAgain = true;
      return this.#probing;
    }
    this.#probing = (async () => {
      do {
        this.#probeAgain = false;
        const probes = await prober.probeAll();
        const socket = this.#welcomed;
        if (!socket || socket.readyState !== WebSocket.OPEN || probes.length === 0) continue;
        const fitted = [...probes];
        // A report too large for one message (many long chains) keeps its first probes.
        while (fitted.length > 1 && Buffer.byteLength(JSON.stringify({ v: PROTOCOL_VERSION, type: 'served', probes: fitted })) > MAX_MESSAGE_BYTES - 1024) fitted.pop();
        this.#send(socket, { type: 'served', probes: fitted });
        const unreachable = fitted.filter((p) => 'unreachable' in p).length;
        this.options.logger[unreachable > 0 ? 'warn' : 'info']({ probes: fitted.length, unreachable }, 'served chain reported');
      } while (this.#probeAgain && !this.#stopped);
    })()
      .catch((error: unknown) => this.options.logger.warn({ err: (error as Error).message }, 'the served-chain probe failed'))
      .finally(() => {
        this.#probing = undefined;
      });
    return this.#probing;
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    clearInterval(this.#probeTimer);
    const socket = this.#socket;
    if (socket && socket.readyState !== WebSocket.CLOSED) {
      await new Promise<void>((resolve) => {
        socket.once('close', () => resolve());
        socket.close(1001, 'agent stopping');
        setTimeout(() => {
          socket.terminate();
          resolve();
        }, 2000).unref();
      });
    }
  }

  #connect(): void {
    const { logger } = this.options;
    const identity = this.#identity;
    const url = new URL(CHANNEL_PATH, identity.server);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    const socket = new WebSocket(url, {
      maxPayload: MAX_MESSAGE_BYTES,
      handshakeTimeout: 15_000,
      // Over TLS the agent certificate is also the TLS client certificate: the plane checks both are the same.
      ...(url.protocol === 'wss:' ? { cert: identity.certificatePem, key: identity.keyPem } : {}),
      ...(this.options.serverCaPem ? { ca: parseCertificateBundle(this.options.serverCaPem, '--server-ca').map((c) => c.pem) } : {}),
    });
    this.#socket = socket;
    let queue = Promise.resolve();
    socket.on('message', (data) => {
      let message: ServerMessage | undefined;
      let refused: unknown;
      try {
        message = decodeMessage(ServerMessage, data as Buffer);
      } catch (error) {
        // A bad frame closes the channel in its turn, after what came before it.
        refused = error;
      }
      // An http-01 answer touches nothing the other messages do: served at once, so the plane's
      // challenge, asked for while this agent makes the key of the CSR request before it, does not
      // wait for that key (the plane places its order while the agent makes the CSR).
      if (message?.type === 'http01_serve' || message?.type === 'http01_withdraw') {
        this.#http01(socket, message);
        return;
      }
      queue = queue.then(() => (message ? this.#handle(socket, message) : Promise.reject(refused))).catch((error: unknown) => {
        const e = error as CertplaneError;
        logger.warn({ code: e.code, err: e.message }, 'closing the channel after a bad message');
        socket.close(4000, `${e.code ?? 'ERROR'}`.slice(0, 120));
      });
    });
    socket.on('open', () => logger.info({ server: url.origin }, 'channel open'));
    socket.on('error', (error) => {
      const explained = explainConnectError(error, url, { serverCaGiven: this.options.serverCaPem !== undefined });
      if (explained) logger.warn({ code: explained.code, err: error.message }, `channel error: ${explained.message}`);
      else logger.warn({ err: error.message }, 'channel error');
    });
    socket.on('close', (code, reason) => {
      if (this.#stopped) return;
      const why = reason.toString();
      // Revoked (4003 while connected, AGENT_REVOKED at authentication): nothing this agent does will help,
      // so say what will, and dial only at the slowest pace in case the operator's decision is undone.
      const revoked = code === CloseCode.REVOKED || why.startsWith(ErrorCode.AGENT_REVOKED);
      const delay = revoked ? (this.options.maxBackoffMs ?? 30_000) : this.#backoff();
      if (revoked) logger.error({ code, reason: why, retryInMs: delay }, 'this agent\'s certificate is revoked: enroll it again with a new token (certplane agent --token ...)');
      else logger.info({ code, reason: why, retryInMs: delay }, 'channel closed, reconnecting');
      this.#timer = setTimeout(() => this.#connect(), delay);
    });
  }

  /** Full jitter over a capped exponential: a fleet cut off together does not return together. */
  #backoff(): number {
    this.#attempt += 1;
    const ceiling = Math.min(this.options.maxBackoffMs ?? 30_000, (this.options.minBackoffMs ?? 500) * 2 ** Math.min(this.#attempt, 16));
    return Math.round(Math.random() * ceiling);
  }

  #send(socket: WebSocket, message: AgentMessageWithoutVersion): void {
    socket.send(encodeMessage(AgentMessage, { v: PROTOCOL_VERSION, ...message } as AgentMessage));
  }

  /** Serves or withdraws an http-01 answer on the agent's responder, at once and in the order asked. */
  #http01(socket: WebSocket, message: Extract<ServerMessage, { type: 'http01_serve' | 'http01_withdraw' }>): void {
    if (message.type === 'http01_withdraw') {
      this.options.http01?.withdraw(message.token);
      return;
    }
    if (!this.options.http01) {
      this.#send(socket, { type: 'error', requestId: message.requestId, code: ErrorCode.AGENT_NO_HTTP01, message: 'this agent runs without --http01-port' });
      return;
    }
    this.options.http01.serve(message.token, message.keyAuthorization);
    this.#send(socket, { type: 'http01_ready', requestId: message.requestId });
  }

  async #handle(socket: WebSocket, message: ServerMessage): Promise<void> {
    const { installer, logger, state } = this.options;
    const identity = this.#identity;
    switch (message.type) {
      case 'hello': {
        const signature = sign('sha256', authPayload(message.nonce), identity.keyPem).toString('base64');
        this.#send(socket, { type: 'auth', certificatePem: identity.certificatePem, signature, agentVersion: AGENT_VERSION });
        return;
      }
      case 'welcome':
        this.#attempt = 0;
        this.#welcomed = socket;
        logger.info({ instanceId: message.instanceId }, 'authenticated');
        this.#send(socket, { type: 'status', installedFingerprintSha256: await installer.installedFingerprint(), pendingCertificateIds: (await listPendingCertificateIds(state)).slice(0, 16) });
        if (identityNeedsRenewal(this.#identity.certificatePem, new Date())) {
          this.#renewalKey = await generateKeyPair('ecdsa-p256');
          this.#send(socket, { type: 'identity_renewal', csrPem: await createCsr(this.#renewalKey, ['certplane-agent']) });
          logger.info('agent certificate past two thirds of its lifetime: renewal asked');
        }
        void this.probeSoon();
        return;
      case 'identity_renewed': {
        const key = this.#renewalKey;
        const certificate = parseCertificateBundle(message.certificatePem, 'renewed agent certificate')[0]!;
        if (!key || certificate.spkiSha256 !== spkiSha256OfPublicKeyPem(key.publicKeyPem)) {
          throw new CertplaneError(ErrorCode.AGENT_IDENTITY_MISMATCH, 'the renewed agent certificate is not for the key this agent asked for');
        }
        this.#identity = { ...this.#identity, keyPem: key.privateKeyPem, certificatePem: message.certificatePem };
        await writeIdentity(state, this.#identity);
        this.#renewalKey = undefined;
        logger.info({ notAfter: certificate.notAfter }, 'agent certificate renewed; used from the next connection');
        return;
      }
      case 'identity_renewal_refused':
        // The key is dropped: the next connection asks again with a fresh one.
        this.#renewalKey = undefined;
        logger.warn({ code: message.code, reason: message.message, retryAt: message.retryAt }, 'the plane refused to renew the agent certificate now; asked again on a later connection');
        return;
      case 'csr_request': {
        const { csrPem } = await createPendingKey(state, message.certificateId, message.keyAlgorithm, message.hostnames);
        this.#send(socket, { type: 'csr', certificateId: message.certificateId, csrPem });
        logger.info({ certificateId: message.certificateId, hostnames: message.hostnames }, 'key generated on the instance, CSR sent');
        return;
      }
      case 'http01_serve':
      case 'http01_withdraw':
        this.#http01(socket, message);
        return;
      case 'deliver':
        try {
          const result = await installer.install(message.certificateId, message.fullchainPem, message.fingerprintSha256);
          logger.info({ certificateId: message.certificateId, fingerprint: result.fingerprintSha256, alreadyInstalled: result.alreadyInstalled }, 'certificate installed');
          this.#send(socket, { type: 'installed', certificateId: message.certificateId, fingerprintSha256: result.fingerprintSha256 });
        } catch (error) {
          const e = error instanceof CertplaneError ? error : new CertplaneError(ErrorCode.AGENT_INSTALL_FAILED, (error as Error).message);
          logger.warn({ certificateId: message.certificateId, code: e.code, err: e.message }, 'installation refused or failed');
          this.#send(socket, { type: 'install_failed', certificateId: message.certificateId, code: e.code.slice(0, 64), message: e.message.slice(0, 2000) });
        }
        // Installed and reloaded (or rolled back and reloaded): whether the service took it is the probe's question.
        void this.probeSoon();
        return;
      case 'revocation_sign':
        try {
          const jws = await signRevocation(message, (spkiSha256, certificateId) => installer.keyFor(spkiSha256, certificateId));
          this.#send(socket, { type: 'revocation_signed', requestId: message.requestId, jws });
          logger.warn({ certificateId: message.certificateId, reason: message.reason }, 'revocation request signed with the certificate key');
        } catch (error) {
          const e = error instanceof CertplaneError ? error : new CertplaneError(ErrorCode.AGENT_REVOCATION_FAILED, (error as Error).message);
          logger.warn({ certificateId: message.certificateId, code: e.code, err: e.message }, 'could not sign the revocation request');
          this.#send(socket, { type: 'error', requestId: message.requestId, code: e.code.slice(0, 64), message: e.message.slice(0, 2000) });
        }
        return;
      case 'cancel':
        await discardPendingKey(state, message.certificateId);
        logger.warn({ certificateId: message.certificateId, reason: message.reason }, 'the plane cancelled the certificate; pending key discarded');
        return;
    }
  }
}
