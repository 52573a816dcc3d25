/**
 * Obtains a certificate for a CSR from an RFC 8555 CA and returns only a chain that
 * the chain engine selected and verified. Nothing here decides which chain is good:
 * that is src/chain's job; this file speaks ACME through acme-client.
 */
import { X509Certificate } from 'node:crypto';
import https from 'node:https';
import { createRequire } from 'node:module';
import { setTimeout as delay } from 'node:timers/promises';
import { createSecureContext, rootCertificates } from 'node:tls';
import acme from 'acme-client';
import type { Logger } from 'pino';
import { z } from 'zod';
import { CertplaneError, hasCode } from '../errors.js';
import {
  explainSelection,
  normaliseDnsName,
  ORDERED_CSR_LIMITS,
  parseCertificateBundle,
  parseCsr,
  anchorsOfProfiles,
  requireSelection,
  selectChain,
  topmostCertificate,
  verifyInProfiles,
  type Certificate,
  type FallbackPolicy,
  type ProfileVerdicts,
  type SelectionResult,
  type TrustProfile,
  type VerificationReport,
} from '../chain/index.js';
import type { RevocationJws } from '../channel/protocol.js';
import type { SecretStore } from '../secrets/index.js';
import { ariCertId, parseRenewalInfo, type RenewalInfo } from './ari.js';
import { loadOrCreateAccount, rememberAccountUrl } from './account.js';
import { acmeIdentifier } from './identifiers.js';
import { downloadChains, type PostAsGet } from './chains.js';
import { parseAccountKeyOnce } from './signing.js';
import { reuseNonces } from './nonces.js';
import { problemError, throwTypedProblems, typedUnsignedFailure } from './problems.js';
import { DEFAULT_RETRY, withRetry, type RetryPolicy } from './retry.js';
import { DEFAULT_POLL, pollUntilSettled, type PolledItem, type PollPolicy } from './poll.js';
import type { ChallengeContext, ChallengeSolver } from './solver.js';
import { ErrorCode } from '../error-catalogue.js';
import type { OrderStanding } from '../lifecycle/index.js';

/**
 * A request that got no HTTP answer, as the connection said it: refused, reset, timed out,
 * a TLS failure. acme-client 5.4 would turn the transport's error into a TypeError reading
 * the missing response, which names neither the request nor the cause; this error has no
 * `config`, so acme-client's interceptor passes it on unchanged.
 */
class NoHttpAnswer extends Error {
  /** The transport's code (ECONNRESET, ECONNABORTED, ...): what retry.ts decides a passing failure by. */
  readonly code: string | undefined;
  constructor(
    readonly method: string,
    readonly url: string,
    readonly why: string,
    cause: unknown,
  ) {
    super(`${method} ${url} got no HTTP answer: ${why}`, { cause });
    const code = (cause as { code?: unknown }).code;
    this.code = typeof code === 'string' ? code : undefined;
  }
}

/** What a transport error says about the connection: its code (ECONNREFUSED, ECONNRESET, ECONNABORTED for a timeout, a TLS code) and message. */
function transportFailure(error: unknown): string {
  const { code, message } = error as { code?: unknown; message?: unknown };
  const text = typeof message === 'string' && message !== '' ? message : String(error);
  return typeof code === 'string' && !text.includes(code) ? `${code} (${text})` : text;
}

/**
 * acme-client's axios instance sends through this adapter: the default transport, with a
 * failure that has no HTTP response turned into NoHttpAnswer, which keeps the cause.
 */
function installTransport(): void {
  const defaults = acme.axios.defaults as { adapter?: unknown };
  if (typeof defaults.adapter === 'function') return;
  // acme-client's own axios, whose adapters this wraps (certplane sends nothing through axios itself).
  const axios = createRequire(createRequire(import.meta.url).resolve('acme-client'))('axios') as { getAdapter(adapter: unknown): (config: { method?: string; url?: string }) => Promise<unknown> };
  const transport = axios.getAdapter(defaults.adapter ?? 'http');
  defaults.adapter = (config: { method?: string; url?: string }) =>
    transport(config).catch((error: unknown) => {
      if ((error as { response?: unknown }).response !== undefined) throw error;
      throw new NoHttpAnswer((config.method ?? 'get').toUpperCase(), config.url ?? 'an unknown URL', transportFailure(error), error);
    });
}

/** What chain the issuer must accept: the policy the chain engine applies. */
export interface ChainPolicy {
  readonly preferences: readonly string[];
  readonly fallback: FallbackPolicy;
  /** The trust store that decides when an order names no trust profiles (`certplane issue`). */
  readonly trustAnchors: readonly Certificate[];
  readonly distrustedSpkiSha256: ReadonlySet<string>;
  /** Every configured trust profile: orders name theirs, and every offered chain gets a verdict in each. */
  readonly profiles?: readonly TrustProfile[];
  /** Which trust settings this policy is (TrustSettings.fingerprint), stored beside the verdicts. */
  readonly fingerprint?: string;
}

export interface AcmeIssuerOptions {
  readonly directoryUrl: string;
  /** Extra CAs to trust for the ACME server's own HTTPS listener (Pebble), PEM. */
  readonly serverCaPem?: string;
  readonly contactEmail?: string;
  readonly secrets: SecretStore;
  /** Tried in order for each authorization; the first whose type the CA offers is used. */
  readonly solvers: readonly ChallengeSolver[];
  /** A fixed policy, or where to read the one in force now (trust settings reload without a restart). */
  readonly chainPolicy: ChainPolicy | (() => ChainPolicy);
  readonly logger: Logger;
  readonly clock?: () => Date;
  readonly retry?: RetryPolicy;
  /**
   * Polling of pending challenges and orders (./poll.ts): the interval and floor, 200 ms by
   * default (CERTPLANE_ACME_POLL_INTERVAL_MS), and the longest pause once a wait gets long.
   * The CA's Retry-After wins over both.
   */
  readonly pollMinMs?: number;
  readonly pollMaxMs?: number;
  /** Names a CSR may carry (CERTPLANE_MAX_NAMES_PER_CERTIFICATE); the chain engine's default, the CA's limit, otherwise. */
  readonly maxNamesPerCertificate?: number;
}

export interface IssuedChain {
  /** Leaf and intermediates of the selected, verified chain, in order: what gets installed. */
  readonly fullchainPem: string;
  readonly report: VerificationReport;
  readonly selection: SelectionResult;
  /** Every chain the CA offered, default first, as downloaded. */
  readonly offeredChainsPem: readonly string[];
  /** The same chains with what a later decision needs without the CA: the root each points to and its verdict in every profile. */
  readonly offered: readonly OfferedChain[];
  /** The trust settings the verdicts were made under. */
  readonly trustFingerprint: string;
  readonly orderUrl: string;
  readonly certificateUrl: string;
}

/** One chain the CA offered, judged. */
export interface OfferedChain {
  readonly index: number;
  readonly pem: string;
  readonly topIssuerCN: string;
  readonly selected: boolean;
  /** Verdicts in every configured profile, at issuance, on trust alone (names and key are the selection's checks). */
  readonly verification: ProfileVerdicts;
}

/** What the CA's directory says about the extensions certplane uses; read before relying on either. */
export interface DirectoryInfo {
  /** RFC 9773 renewalInfo base URL; absent when the CA does not speak ARI. */
  readonly renewalInfoUrl?: string;
  /** draft-ietf-acme-profiles meta.profiles: profile name to the CA's description of it; empty when none. */
  readonly profiles: Readonly<Record<string, string>>;
}

/** Per-order choices beyond the CSR. */
export interface IssueOptions {
  /** Tried before the issuer's own solvers, for this order only: the http-01 responder of the one agent that asked. */
  readonly solvers?: readonly ChallengeSolver[];
  /** A profile from the directory's meta.profiles (e.g. tlsserver for 45-day certificates); refused when not offered. */
  readonly profile?: string;
  /** The ARI certID of the certificate this one replaces; sent only to a CA that advertises renewalInfo. */
  readonly replaces?: string;
  /**
   * Told the order's URL as soon as the CA created it, so the lifecycle records that an order
   * exists; awaited before any challenge is presented (its authorizations are read meanwhile).
   */
  readonly onOrderCreated?: (orderUrl: string) => Promise<void>;
  /**
   * An order placed earlier for this same CSR (by a process that died or shut down), to be
   * continued from where it stands instead of placing a new one: a pending order has its
   * authorizations answered, a ready one is finalized, a valid one downloaded. Whether to
   * resume is the caller's decision (lifecycle/ownership.ts, after `orderStanding`).
   */
  readonly resumeOrderUrl?: string;
  /** Stops the work at the next step or wait with the signal's reason: shutdown, or a lost lease. */
  readonly signal?: AbortSignal;
  /** Told how long each step of the order took, as it ends (certplane_issuance_stage_duration_seconds). */
  readonly onStage?: (stage: AcmeStage, seconds: number) => void;
  /** The trust profiles the instance's clients use: the chain must verify in each. Absent: the policy's trust store alone. */
  readonly trustProfiles?: readonly string[];
}

/**
 * A CSR that comes after the order is placed: the order is for `names` (the instance's, as
 * its agent is asked to put in the CSR), and `csr()` is awaited only before finalization.
 * The CSR it yields must name exactly these (the coordinator checks; the issuer checks again,
 * as the CA would refuse the finalization otherwise).
 */
export interface LateCsr {
  readonly names: readonly string[];
  readonly csr: () => Promise<string>;
}

/**
 * The steps of one order, in order: newOrder, reading its authorizations, presenting and
 * answering the challenges, the CA's validation (polling), finalization with the wait for
 * the certificate, downloading every offered chain, and selecting and verifying one.
 */
export const ACME_STAGES = ['order', 'authorizations', 'challenge', 'validation', 'finalize', 'download', 'chain'] as const;
export type AcmeStage = (typeof ACME_STAGES)[number];

const DirectoryShape = z.object({
  renewalInfo: z.url().optional(),
  meta: z.object({ profiles: z.record(z.string(), z.string()).optional() }).optional(),
});

/** The newOrder payload: RFC 8555's fields plus the profiles and ARI extensions, which acme-client passes through. */
type NewOrderPayload = Parameters<acme.Client['createOrder']>[0] & { profile?: string; replaces?: string };

const RENEWAL_INFO_TIMEOUT_MS = 10_000;

/**
 * The longest any one request to the CA may take. Without it a CA that accepts the
 * connection and never answers would hold the step, and the certificate's lease with it,
 * for as long as the socket lives; with it the step fails as ACME_UNREACHABLE and is retried.
 */
export const ACME_REQUEST_TIMEOUT_MS = 30_000;

/** HTTP statuses with which a CA says an order URL names nothing (any more). */
const ORDER_GONE_STATUSES = new Set([404, 410]);

/**
 * What a revocation signed by the certificate's own key needs from whoever holds that key:
 * the revokeCert URL, a fresh nonce, the certificate (base64url DER) and the RFC 5280 reason
 * code, answered with the flattened JWS to post (RFC 8555 §7.6, with a `jwk` header).
 */
export type CertificateKeySigner = (request: { url: string; nonce: string; certificate: string; reason: number }) => Promise<RevocationJws>;

/** How often a revocation signed elsewhere is signed again over a fresh nonce after badNonce (Pebble rejects some on purpose). */
const REVOCATION_NONCE_ATTEMPTS = 4;

/** The parts of acme-client's HTTP client a revocation signed elsewhere goes through: its directory, nonces and transport, not its signing. */
interface AcmeHttp {
  getResourceUrl(resource: 'revokeCert'): Promise<string>;
  getNonce(): Promise<string>;
  request(url: string, method: 'post', options: { data: RevocationJws }): Promise<{ status: number; headers: Record<string, string | undefined>; data: unknown }>;
}

export class AcmeIssuer {
  readonly #options: AcmeIssuerOptions;
  #client: Promise<acme.Client> | undefined;

  constructor(options: AcmeIssuerOptions) {
    this.#options = options;
    // acme-client would otherwise sleep inside the request for a 429's Retry-After (hours,
    // under Let's Encrypt's limits) and for 5xx, five times over. certplane retries a step
    // that failed for a passing reason itself (./retry.ts) and postpones the job for a rate
    // limit (lifecycle/reasons.ts), so nothing waits inside work. Module-wide, like the agent below.
    (acme.axios.defaults as unknown as { acmeSettings: { retryMaxAttempts: number } }).acmeSettings.retryMaxAttempts = 0;
    acme.axios.defaults.timeout = ACME_REQUEST_TIMEOUT_MS;
    installTransport();
    installUnsignedFailureInterceptor(() => this.#now());
    if (options.serverCaPem) {
      // acme-client sends every request through one module-wide axios instance; this is
      // the only hook it offers to trust a private CA such as Pebble's. The composition
      // root builds one issuer per process, so the setting is never contested. Each certificate
      // goes in on its own: OpenSSL silently drops the second of two PEM blocks that share a
      // line ("-----END CERTIFICATE----------BEGIN..."), as `cat` makes of files without a final newline.
      // One secure context for every connection: given `ca` instead, Node builds a new context
      // from the ~150 public roots for each TLS connection, tens of milliseconds of CPU apiece.
      const serverCas = parseCertificateBundle(options.serverCaPem, 'the ACME server CA bundle').map((certificate) => certificate.pem);
      const secureContext = createSecureContext({ ca: [...rootCertificates, ...serverCas] });
      acme.axios.defaults.httpsAgent = new https.Agent({ secureContext, keepAlive: true });
    }
  }

  /**
   * Reads what the CA's directory advertises, through the account's own client (opening
   * the account first if this process has not yet), so the answer is the directory
   * acme-client orders against, from the same 24-hour cache.
   */
  async directoryInfo(): Promise<DirectoryInfo> {
    const client = await this.#accountClient();
    const directory = await (client as unknown as { http: { getDirectory(): Promise<unknown> } }).http.getDirectory().catch((cause: unknown) => {
      throw new CertplaneError(ErrorCode.ACME_DIRECTORY_UNREADABLE, `could not read the ACME directory ${this.#options.directoryUrl}: ${(cause as Error).message}`, { directoryUrl: this.#options.directoryUrl }, { cause });
    });
    const parsed = DirectoryShape.safeParse(directory);
    if (!parsed.success) {
      throw new CertplaneError(ErrorCode.ACME_DIRECTORY_UNREADABLE, `the ACME directory ${this.#options.directoryUrl} is malformed: ${z.prettifyError(parsed.error)}`, {
        directoryUrl: this.#options.directoryUrl,
      });
    }
    const { renewalInfo, meta } = parsed.data;
    return { ...(renewalInfo ? { renewalInfoUrl: renewalInfo } : {}), profiles: meta?.profiles ?? {} };
  }

  /**
   * The CA's suggested renewal window for `leafPem` (RFC 9773), or undefined when the CA
   * does not speak ARI. An unauthenticated GET through acme-client's axios instance, so it
   * trusts exactly what the ACME requests trust. Failures to fetch are ARI_UNAVAILABLE; like
   * ARI_INVALID and ARI_NO_AKI they tell the caller to fall back to the lifetime rule.
   */
  async renewalInfo(leafPem: string): Promise<RenewalInfo | undefined> {
    const certId = ariCertId(leafPem);
    const { renewalInfoUrl } = await this.directoryInfo().catch((cause: unknown) => {
      throw new CertplaneError(ErrorCode.ARI_UNAVAILABLE, `renewal information for ${certId} is unavailable: ${(cause as Error).message}`, { certId }, { cause });
    });
    if (!renewalInfoUrl) return undefined;
    const url = `${renewalInfoUrl.replace(/\/+$/, '')}/${certId}`;
    const response = await acme.axios.get(url, { timeout: RENEWAL_INFO_TIMEOUT_MS, validateStatus: () => true }).catch((cause: unknown) => {
      // Every HTTP status resolves (validateStatus), so this is a connection-level failure (NoHttpAnswer, from the transport).
      const why = cause instanceof NoHttpAnswer ? cause.why : (cause as Error).message;
      throw new CertplaneError(ErrorCode.ARI_UNAVAILABLE, `GET ${url} got no HTTP answer: ${why}`, { certId, url }, { cause });
    });
    if (response.status !== 200) {
      throw new CertplaneError(ErrorCode.ARI_UNAVAILABLE, `GET ${url} answered HTTP ${response.status}`, { certId, url, status: response.status });
    }
    const retryAfter = response.headers['retry-after'];
    return parseRenewalInfo(response.data, typeof retryAfter === 'string' ? retryAfter : undefined, this.#now());
  }

  /**
   * Orders a certificate for the names in `csrPem`, solves its challenges, and returns the
   * selected, verified chain. A profile is checked against the directory before anything
   * is ordered, so a typo never yields a certificate of the CA's default lifetime.
   */
  async issue(csr: string | LateCsr, options: IssueOptions = {}): Promise<IssuedChain> {
    try {
      return await this.#issue(csr, options);
    } catch (error) {
      throw this.#unreachableOr(error);
    }
  }

  /**
   * Where an order placed earlier stands at the CA, for deciding whether to resume it
   * (lifecycle/ownership.ts). An order the CA no longer knows is `unknown`; a CA that does
   * not answer is an error (ACME_UNREACHABLE), not a reason to order again.
   */
  async orderStanding(orderUrl: string): Promise<OrderStanding> {
    try {
      const client = await this.#accountClient();
      const order = await withRetry(() => client.getOrder({ url: orderUrl } as acme.Order), this.#options.retry ?? DEFAULT_RETRY);
      const status = order.status as string;
      if (status === 'pending' || status === 'ready' || status === 'processing' || status === 'valid' || status === 'invalid') return { status };
      return { status: 'unknown', detail: `the CA reports the status "${status}"` };
    } catch (error) {
      const status = error instanceof CertplaneError ? error.details.status : undefined;
      if (typeof status === 'number' && ORDER_GONE_STATUSES.has(status)) return { status: 'unknown', detail: (error as Error).message };
      throw this.#unreachableOr(error);
    }
  }

  /**
   * Asks the CA to revoke the leaf of `certificatePem` with an RFC 5280 reason code (RFC 8555
   * §7.6). Signed by the ACME account's key, or, with `signWithCertificateKey`, by the
   * certificate's own key wherever it lives: this side fetches the nonce, posts what the
   * signer returns and reads the answer, so only the signature happens elsewhere. The CA's
   * refusal comes back typed (ACME_ALREADY_REVOKED, ACME_BAD_REVOCATION_REASON, ...).
   */
  async revoke(certificatePem: string, reason: number, signWithCertificateKey?: CertificateKeySigner): Promise<void> {
    const leafPem = parseCertificateBundle(certificatePem, 'the certificate to revoke')[0]!.pem;
    try {
      const client = await this.#accountClient();
      if (!signWithCertificateKey) {
        await client.revokeCertificate(leafPem, { reason });
        return;
      }
      await this.#revokeSignedElsewhere(client, leafPem, reason, signWithCertificateKey);
    } catch (error) {
      throw this.#unreachableOr(error);
    }
  }

  async #revokeSignedElsewhere(client: acme.Client, leafPem: string, reason: number, sign: CertificateKeySigner): Promise<void> {
    const http = (client as unknown as { http: AcmeHttp }).http;
    const url = await http.getResourceUrl('revokeCert');
    const certificate = new X509Certificate(leafPem).raw.toString('base64url');
    let nonce = await http.getNonce();
    for (let attempt = 1; ; attempt += 1) {
      const response = await http.request(url, 'post', { data: await sign({ url, nonce, certificate, reason }) });
      if (response.status === 200) return;
      const problem = response.data as { type?: unknown } | undefined;
      const fresh = response.headers['replay-nonce'];
      if (problem?.type === 'urn:ietf:params:acme:error:badNonce' && fresh && attempt < REVOCATION_NONCE_ATTEMPTS) {
        nonce = fresh;
        continue;
      }
      throw problemError(problem ?? { type: 'unknown', detail: `HTTP ${response.status}` }, { status: response.status, retryAfter: response.headers['retry-after'], now: this.#now(), what: 'the revocation signed by the certificate key' });
    }
  }

  /** A request that got no HTTP answer, as ACME_UNREACHABLE naming the server, the request and what the connection said; anything else unchanged. */
  #unreachableOr(error: unknown): unknown {
    const cause = error instanceof CertplaneError && error.cause !== undefined ? error.cause : error;
    if (!(cause instanceof NoHttpAnswer)) return error;
    return new CertplaneError(
      ErrorCode.ACME_UNREACHABLE,
      `the ACME server ${this.#options.directoryUrl} gave no HTTP answer to ${cause.method} ${cause.url}: ${cause.why}`,
      { directoryUrl: this.#options.directoryUrl, url: cause.url, transport: cause.why },
      { cause },
    );
  }

  async #issue(request: string | LateCsr, options: IssueOptions): Promise<IssuedChain> {
    const parse = (pem: string) => parseCsr(pem, 'CSR', { maxNames: this.#options.maxNamesPerCertificate, ...ORDERED_CSR_LIMITS });
    const given = typeof request === 'string' ? await parse(request) : undefined;
    // The names an order asks for: DNS names and, under a profile that issues for them, IP addresses.
    const names = given ? [...given.dnsNames, ...given.ipAddresses] : [...(request as LateCsr).names];
    const log = this.#options.logger.child({ names });
    const client = await this.#accountClient();
    const { signal } = options;
    const step = <T>(name: string, fn: () => Promise<T>) =>
      withRetry(
        () => fn().catch((error: unknown) => Promise.reject(this.#unreachableOr(error))),
        this.#options.retry ?? DEFAULT_RETRY,
        (error, attempt, delayMs) => log.warn({ step: name, attempt, delayMs, err: (error as Error).message }, 'transient ACME failure, retrying'),
        signal,
      );

    let mark = performance.now();
    /** Reports the time since the previous stage ended as `stage`. */
    const ended = (stage: AcmeStage) => {
      const now = performance.now();
      options.onStage?.(stage, (now - mark) / 1000);
      mark = now;
    };
    // Every wait between polls ends when the signal does (shutdown, or a lease lost).
    const sleep = (ms: number) => delay(ms, undefined, signal ? { signal } : {}).catch((error: unknown) => Promise.reject(signal?.aborted ? signal.reason : error));
    const api = (client as unknown as { api: PostAsGet }).api;
    const order = options.resumeOrderUrl ? await step('order', () => client.getOrder({ url: options.resumeOrderUrl } as acme.Order)) : await this.#newOrder(client, names, options, step, log);
    if (options.resumeOrderUrl) log.info({ order: order.url, status: order.status }, 'resuming the order');
    // The authorizations are read while the new order's URL is recorded: reading changes
    // nothing at the CA, and nothing is presented or answered before the record is written
    // (a failed record stops the order here; a failed read waits for the record to settle).
    const authorizing = order.status === 'pending' ? step('authorizations', () => client.getAuthorizations(order)) : undefined;
    authorizing?.catch(() => undefined);
    if (!options.resumeOrderUrl) await options.onOrderCreated?.(order.url);
    ended('order');
    if (authorizing) {
      const authorizations = await authorizing;
      ended('authorizations');
      const solvers = [...(options.solvers ?? []), ...this.#options.solvers];
      // Every authorization is presented and answered before any is waited for, as the CA
      // validates them in parallel; the validation stage is the wait for the slowest.
      const presented: Presented[] = [];
      try {
        for (const authorization of authorizations) await this.#answer(client, authorization, solvers, step, presented, signal);
        ended('challenge');
        await Promise.all(presented.map((p) => this.#awaitValidation(client, p, step, sleep, signal)));
      } finally {
        // Stopped for another process to resume this order (shutdown, a lease taken over): it
        // presents the same values and cleans them up when it is done; removing them here could
        // pull a record out from under its validation. Anything else ends this order's challenges.
        if (signal?.aborted && hasCode(signal.reason, ErrorCode.ISSUANCE_STOPPED)) log.info({ challenges: presented.length }, 'challenges left in place for the process that resumes the order');
        else await Promise.all(presented.map((p) => p.solver.cleanUp(p.context).catch((error) => this.#options.logger.warn({ domain: p.context.domain, err: (error as Error).message }, 'challenge clean-up failed'))));
      }
      ended('validation');
    }
    // A CSR that comes after the order is awaited only now, when finalization needs it.
    const csrPem = typeof request === 'string' ? request : await request.csr();
    const csr = given ?? (await parse(csrPem));
    if (!given && !sameNames([...csr.dnsNames, ...csr.ipAddresses], names)) {
      throw new CertplaneError(ErrorCode.ISSUANCE_CSR_REJECTED, `CSR rejected: it names ${[...csr.dnsNames, ...csr.ipAddresses].join(', ')}, the order is for ${names.join(', ')}`);
    }
    // A resumed order may be ready (finalized here), processing (only awaited) or valid already.
    const current: PolledItem<{ status?: unknown }> =
      order.status === 'pending' || order.status === 'ready'
        ? await step('finalize', () => this.#signed(api, order.finalize, { csr: acme.crypto.getPemBodyAsB64u(csrPem) })).catch((e) => {
            throw orderFailed('finalizing the order', e);
          })
        : { data: order as { status?: unknown } };
    const valid = await pollUntilSettled(() => step('poll', () => this.#signed(api, order.url)), `order ${order.url}`, this.#poll(), current, sleep).catch((e) => {
      if (signal?.aborted) throw e;
      throw orderFailed('waiting for the order to be valid', e);
    });
    if (valid.status !== 'valid') throw this.#invalid(valid, `order ${order.url}`, names);
    const certificateUrl = (valid as { certificate?: unknown }).certificate;
    if (typeof certificateUrl !== 'string') throw new CertplaneError(ErrorCode.ACME_ORDER_FAILED, `order ${order.url} is valid but has no certificate URL`);
    ended('finalize');
    const offered = await step('download', () => downloadChains(api, certificateUrl));
    log.info({ chains: offered.length }, 'chains downloaded');
    ended('download');
    const selected = this.#select(offered, names, csr.spkiSha256, options.trustProfiles, log);
    ended('chain');
    return { ...selected, offeredChainsPem: offered, orderUrl: order.url, certificateUrl };
  }

  /** Places the order (with `replaces` while the CA accepts it); the caller records its URL before any challenge is answered. */
  async #newOrder(client: acme.Client, names: readonly string[], options: IssueOptions, step: <T>(name: string, fn: () => Promise<T>) => Promise<T>, log: Logger): Promise<acme.Order> {
    const payload = await this.#newOrderPayload(names, options, log);
    const order = await step('newOrder', () => client.createOrder(payload))
      .catch((e: unknown) => {
        // RFC 9773: the certificate named in `replaces` already has a replacement (an earlier
        // attempt of ours, or another client's). The order is still wanted: once more without it.
        if (!(e instanceof CertplaneError && e.code === ErrorCode.ACME_ALREADY_REPLACED && payload.replaces)) throw e;
        log.warn({ replaces: payload.replaces }, 'the CA says the replaced certificate is already replaced; ordering without "replaces"');
        const { replaces: _replaced, ...withoutReplaces } = payload;
        return step('newOrder', () => client.createOrder(withoutReplaces));
      })
      .catch((e) => {
        throw orderFailed('creating the order', e);
      });
    log.info({ order: order.url, profile: payload.profile, replaces: payload.replaces }, 'order created');
    return order;
  }

  #poll(): PollPolicy {
    return { ...DEFAULT_POLL, intervalMs: this.#options.pollMinMs ?? DEFAULT_POLL.intervalMs, maxIntervalMs: this.#options.pollMaxMs ?? DEFAULT_POLL.maxIntervalMs };
  }

  /** A signed POST (POST-as-GET without a payload) through acme-client's API layer, with the response's Retry-After. */
  async #signed(api: PostAsGet, url: string, payload: object | null = null): Promise<PolledItem<{ status?: unknown }>> {
    const response = await api.apiRequest(url, payload, [200]);
    const retryAfter = response.headers?.['retry-after'];
    return { data: response.data as { status?: unknown }, ...(typeof retryAfter === 'string' ? { retryAfter } : {}) };
  }

  /** The error for an item the CA settled as invalid (or anything but valid): its problem, typed, when it carries one. */
  #invalid(item: { status?: unknown; error?: unknown }, what: string, names: readonly string[]): CertplaneError {
    if (item.error) return problemError(item.error, { names, now: this.#now(), what });
    return new CertplaneError(ErrorCode.ACME_ORDER_FAILED, `${what} is ${String(item.status)}`, { status: String(item.status) });
  }

  /** Adds `profile` and `replaces` to newOrder only as far as the directory says the CA understands them. */
  async #newOrderPayload(names: readonly string[], options: IssueOptions, log: Logger): Promise<NewOrderPayload> {
    const payload: NewOrderPayload = { identifiers: names.map(acmeIdentifier) };
    if (options.profile === undefined && options.replaces === undefined) return payload;
    const directory = await this.directoryInfo();
    if (options.profile !== undefined) {
      const offered = Object.keys(directory.profiles);
      if (!Object.hasOwn(directory.profiles, options.profile)) {
        throw new CertplaneError(
          ErrorCode.ACME_UNKNOWN_PROFILE,
          offered.length > 0
            ? `the CA does not offer the profile "${options.profile}"; it offers: ${offered.join(', ')}`
            : `the CA offers no profiles (its directory has no meta.profiles), so the profile "${options.profile}" cannot be asked for`,
          { profile: options.profile, offered },
        );
      }
      payload.profile = options.profile;
    }
    if (options.replaces !== undefined) {
      if (directory.renewalInfoUrl) payload.replaces = options.replaces;
      else log.info({ replaces: options.replaces }, 'the CA does not advertise renewalInfo; ordering without "replaces"');
    }
    return payload;
  }

  #now(): Date {
    return (this.#options.clock ?? (() => new Date()))();
  }

  #policy(): ChainPolicy {
    const policy = this.#options.chainPolicy;
    return typeof policy === 'function' ? policy() : policy;
  }

  /** The instance's profiles by name; a name the configuration lacks refuses the order's chain (permanent: a person must fix one or the other). */
  #profiles(policy: ChainPolicy, names: readonly string[]): TrustProfile[] {
    const configured = policy.profiles ?? [];
    const unknown = names.filter((name) => !configured.some((p) => p.name === name));
    if (unknown.length > 0) {
      throw new CertplaneError(
        ErrorCode.CHAIN_UNKNOWN_TRUST_PROFILE,
        `the instance lists trust profile(s) ${unknown.map((n) => `"${n}"`).join(', ')} that this plane does not configure (configured: ${configured.map((p) => p.name).join(', ') || 'none'}); add them to CERTPLANE_TRUST_PROFILES or the trust file and reload`,
        { profiles: unknown },
      );
    }
    return names.map((name) => configured.find((p) => p.name === name) as TrustProfile);
  }

  #select(
    offered: string[],
    names: readonly string[],
    spkiSha256: string,
    trustProfiles: readonly string[] | undefined,
    log: Logger,
  ): Pick<IssuedChain, 'fullchainPem' | 'report' | 'selection' | 'offered' | 'trustFingerprint'> {
    const policy = this.#policy();
    const profiles = trustProfiles && this.#profiles(policy, trustProfiles);
    const chains = offered.map((pem, i) => {
      try {
        return parseCertificateBundle(pem, `chain ${i} from the CA`);
      } catch (cause) {
        throw new CertplaneError(ErrorCode.ACME_BAD_CHAIN, `the CA's chain ${i} does not parse: ${(cause as Error).message}`, { index: i }, { cause });
      }
    });
    const at = this.#now();
    const selection = selectChain(chains, {
      preferences: policy.preferences,
      fallback: policy.fallback,
      // With profiles, a preferred root may be held by any of them; each must still verify the chain.
      trustAnchors: profiles ? anchorsOfProfiles(profiles) : policy.trustAnchors,
      distrustedSpkiSha256: policy.distrustedSpkiSha256,
      at,
      hostnames: names,
      expectedSpkiSha256: spkiSha256,
      ...(profiles ? { profiles } : {}),
    });
    const { report } = requireSelection(selection, policy.preferences);
    if (selection.fallbackUsed) {
      log.warn({ explanation: explainSelection(selection, []) }, 'no offered chain satisfies the preferred roots; delivering the default chain because CERTPLANE_CHAIN_FALLBACK=default-chain');
    }
    log.info({ selected: selection.selected, preference: selection.preference, anchor: report.anchor?.subjectCN, trustProfiles }, 'chain selected and verified');
    const everyProfile = policy.profiles ?? [{ name: 'default', anchors: policy.trustAnchors }];
    const judged = chains.map((chain, index) => ({
      index,
      pem: offered[index] as string,
      topIssuerCN: topmostCertificate(chain)?.issuerCN ?? '',
      selected: index === selection.selected,
      verification: verifyInProfiles(chain, everyProfile, { at, distrustedSpkiSha256: policy.distrustedSpkiSha256 }),
    }));
    return { fullchainPem: report.servedChainPem, report, selection, offered: judged, trustFingerprint: policy.fingerprint ?? '' };
  }

  /**
   * Presents the answer to one authorization, adds it to `presented` (whose clean-up the
   * caller owes) and tells the CA it is ready; nothing when the authorization is valid
   * already (the CA reuses an earlier validation).
   */
  async #answer(
    client: acme.Client,
    authorization: acme.Authorization,
    solvers: readonly ChallengeSolver[],
    step: <T>(name: string, fn: () => Promise<T>) => Promise<T>,
    presented: Presented[],
    signal: AbortSignal | undefined,
  ): Promise<void> {
    signal?.throwIfAborted();
    if (authorization.status === 'valid') return;
    const domain = authorization.identifier.value;
    const solver = solvers.find((s) => authorization.challenges.some((c) => c.type === s.type));
    const challenge = solver && authorization.challenges.find((c) => c.type === solver.type);
    if (!solver || !challenge) {
      throw new CertplaneError(
        ErrorCode.ACME_NO_SOLVER,
        `no configured solver for ${authorization.wildcard ? '*.' : ''}${domain}: the CA offers ${authorization.challenges.map((c) => c.type).join(', ')}, certplane has ${solvers.map((s) => s.type).join(', ') || 'none (set CERTPLANE_DNS_PROVIDER)'}`,
        { domain },
      );
    }
    const context: ChallengeContext = {
      domain,
      wildcard: authorization.wildcard === true,
      token: (challenge as { token: string }).token,
      keyAuthorization: await client.getChallengeKeyAuthorization(challenge),
    };
    // Listed before it is presented: a present that fails or is stopped half-way (the record
    // written, the wait for it cut short) is cleaned up like any other.
    const answer: Presented = { solver, context, challengeUrl: challenge.url, type: solver.type };
    presented.push(answer);
    await solver.present(context, signal);
    // A resumed order's challenge may already be under validation: answered once, it is only awaited.
    if (challenge.status !== 'pending') {
      answer.answered = { data: challenge as { status?: unknown } };
      return;
    }
    const api = (client as unknown as { api: PostAsGet }).api;
    answer.answered = await step('challenge', () => this.#signed(api, challenge.url, {}));
  }

  /** Waits until the CA validated an answered challenge; a challenge it found invalid fails with its problem, typed. */
  async #awaitValidation(
    client: acme.Client,
    presented: Presented,
    step: <T>(name: string, fn: () => Promise<T>) => Promise<T>,
    sleep: (ms: number) => Promise<void>,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const api = (client as unknown as { api: PostAsGet }).api;
    const { context, challengeUrl, type } = presented;
    const what = `${type} for ${context.domain}`;
    const settled = await pollUntilSettled(() => step('poll', () => this.#signed(api, challengeUrl)), `the ${what} challenge`, this.#poll(), presented.answered, sleep).catch((e: unknown) => {
      if (signal?.aborted) throw e;
      throw orderFailed(`validating ${what}`, e);
    });
    if (settled.status === 'valid') return;
    const problem = (settled as { error?: unknown }).error;
    if (!problem) throw orderFailed(`validating ${what}`, new Error(`the challenge is ${String(settled.status)}`));
    const error = problemError(problem, { names: [context.domain], now: this.#now(), what });
    // Whatever the CA calls it, a challenge that did not pass is a failed validation of that name.
    throw new CertplaneError(ErrorCode.ACME_VALIDATION_FAILED, error.message, error.details);
  }

  #accountClient(): Promise<acme.Client> {
    this.#client ??= this.#openAccount().catch((error) => {
      this.#client = undefined;
      throw this.#unreachableOr(error);
    });
    return this.#client;
  }

  async #openAccount(): Promise<acme.Client> {
    const { directoryUrl, secrets, contactEmail } = this.#options;
    let account = await loadOrCreateAccount(secrets, directoryUrl);
    const client = new acme.Client({
      directoryUrl,
      accountKey: account.privateKeyPem,
      ...(account.accountUrl ? { accountUrl: account.accountUrl } : {}),
    });
    reuseNonces(client);
    parseAccountKeyOnce(client);
    throwTypedProblems(client, () => this.#now());
    if (!account.accountUrl) {
      // newAccount through acme-client's API layer: its createAccount() follows an existing
      // account (HTTP 200, another replica registered it first) with an update that CAs
      // refuse as empty; the account URL comes from the Location header either way.
      const api = (client as unknown as { api: { createAccount(data: object): Promise<unknown> } }).api;
      await withRetry(() => api.createAccount({ termsOfServiceAgreed: true, ...(contactEmail ? { contact: [`mailto:${contactEmail}`] } : {}) }), this.#options.retry ?? DEFAULT_RETRY);
      account = await rememberAccountUrl(secrets, account, client.getAccountUrl());
      this.#options.logger.info({ account: account.accountUrl, directory: directoryUrl }, 'ACME account registered');
    }
    return client;
  }
}

/** A challenge whose answer is in place and announced to the CA, and what cleans it up. */
interface Presented {
  readonly solver: ChallengeSolver;
  readonly context: ChallengeContext;
  readonly challengeUrl: string;
  readonly type: string;
  /** The CA's answer to "ready": often still pending, sometimes settled already. */
  answered?: PolledItem<{ status?: unknown }>;
}

let unsignedFailureInterceptor: number | undefined;

/** One interceptor per process on acme-client's module-wide axios instance (./problems.ts says why). */
function installUnsignedFailureInterceptor(clock: () => Date): void {
  if (unsignedFailureInterceptor !== undefined) acme.axios.interceptors.response.eject(unsignedFailureInterceptor);
  unsignedFailureInterceptor = acme.axios.interceptors.response.use((response) => typedUnsignedFailure(response as never, clock) as never);
}

function orderFailed(what: string, cause: unknown): CertplaneError {
  if (cause instanceof CertplaneError) return cause;
  return new CertplaneError(ErrorCode.ACME_ORDER_FAILED, `the CA refused ${what}: ${(cause as Error).message}`, {}, { cause });
}

/** Whether two lists name the same set of names, compared as the CA compares them (case, trailing dot, IDN and IP forms). */
export function sameNames(a: readonly string[], b: readonly string[]): boolean {
  const left = new Set(a.map(normaliseDnsName));
  const right = new Set(b.map(normaliseDnsName));
  return left.size === right.size && [...left].every((name) => right.has(name));
}
