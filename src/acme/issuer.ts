/**
 * Obtains a certificate for a CSR from an RFC 8555 CA and returns only a chain that
 * the chain engine selected and verified. Nothing here decides which chain is good:
 * that is src/chain's job; this file speaks ACME through acme-client.
 */
import { X509Certificate } from 'node:crypto';
import https from 'node:https';
import { rootCertificates } from 'node:tls';
import acme from 'acme-client';
import type { Logger } from 'pino';
import { z } from 'zod';
import { CertplaneError } from '../errors.js';
import {
  explainSelection,
  parseCertificateBundle,
  parseCsr,
  requireSelection,
  selectChain,
  type Certificate,
  type FallbackPolicy,
  type SelectionResult,
  type VerificationReport,
} from '../chain/index.js';
import type { RevocationJws } from '../agents/protocol.js';
import type { SecretStore } from '../secrets/index.js';
import { AriErrorCode, ariCertId, parseRenewalInfo, type RenewalInfo } from './ari.js';
import { loadOrCreateAccount, rememberAccountUrl } from './account.js';
import { downloadChains, type PostAsGet } from './chains.js';
import { ACME_UNREACHABLE, AcmeProblemCode, problemError, throwTypedProblems, typedUnsignedFailure } from './problems.js';
import { DEFAULT_RETRY, withRetry, type RetryPolicy } from './retry.js';
import type { ChallengeContext, ChallengeSolver } from './solver.js';

export const AcmeErrorCode = {
  /** No configured solver can answer any challenge the CA offered for an identifier. */
  NO_SOLVER: 'ACME_NO_SOLVER',
  /** The CA refused or failed the order; the message carries its problem detail. */
  ORDER_FAILED: 'ACME_ORDER_FAILED',
  /** The CA returned something that is not a certificate chain. */
  BAD_CHAIN: 'ACME_BAD_CHAIN',
  /** The profile asked for is not one the CA's directory offers (or the CA offers none); nothing was ordered. */
  UNKNOWN_PROFILE: 'ACME_UNKNOWN_PROFILE',
  /** The CA's directory could not be read or is not the RFC 8555 shape. */
  DIRECTORY_UNREADABLE: 'ACME_DIRECTORY_UNREADABLE',
  /** No HTTP answer from the ACME server at all (refused, timed out, TLS failure), after acme-client's own retries. */
  UNREACHABLE: ACME_UNREACHABLE,
} as const;

/**
 * acme-client 5.4 retries a request that got no HTTP answer, then fails reading the
 * missing response with a TypeError that names neither the server nor the cause.
 */
function isNoHttpAnswer(cause: unknown): boolean {
  return cause instanceof TypeError && /reading 'config'/.test(cause.message);
}

/** What chain the issuer must accept: the policy the chain engine applies. */
export interface ChainPolicy {
  readonly preferences: readonly string[];
  readonly fallback: FallbackPolicy;
  readonly trustAnchors: readonly Certificate[];
  readonly distrustedSpkiSha256: ReadonlySet<string>;
}

export interface AcmeIssuerOptions {
  readonly directoryUrl: string;
  /** Extra CAs to trust for the ACME server's own HTTPS listener (Pebble), PEM. */
  readonly serverCaPem?: string;
  readonly contactEmail?: string;
  readonly secrets: SecretStore;
  /** Tried in order for each authorization; the first whose type the CA offers is used. */
  readonly solvers: readonly ChallengeSolver[];
  readonly chainPolicy: ChainPolicy;
  readonly logger: Logger;
  readonly clock?: () => Date;
  readonly retry?: RetryPolicy;
  /** Polling of pending authorizations and orders: first delay and cap, in ms. */
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
  readonly orderUrl: string;
  readonly certificateUrl: string;
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
  /** Told the order's URL as soon as the CA created it, so the lifecycle records that an order exists. */
  readonly onOrderCreated?: (orderUrl: string) => Promise<void>;
}

const DirectoryShape = z.object({
  renewalInfo: z.url().optional(),
  meta: z.object({ profiles: z.record(z.string(), z.string()).optional() }).optional(),
});

/** The newOrder payload: RFC 8555's fields plus the profiles and ARI extensions, which acme-client passes through. */
type NewOrderPayload = Parameters<acme.Client['createOrder']>[0] & { profile?: string; replaces?: string };

const RENEWAL_INFO_TIMEOUT_MS = 10_000;

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
    installUnsignedFailureInterceptor(() => this.#now());
    if (options.serverCaPem) {
      // acme-client sends every request through one module-wide axios instance; this is
      // the only hook it offers to trust a private CA such as Pebble's. The composition
      // root builds one issuer per process, so the setting is never contested. Each certificate
      // goes in on its own: OpenSSL silently drops the second of two PEM blocks that share a
      // line ("-----END CERTIFICATE----------BEGIN..."), as `cat` makes of files without a final newline.
      const serverCas = parseCertificateBundle(options.serverCaPem, 'the ACME server CA bundle').map((certificate) => certificate.pem);
      acme.axios.defaults.httpsAgent = new https.Agent({ ca: [...rootCertificates, ...serverCas], keepAlive: true });
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
      throw new CertplaneError(AcmeErrorCode.DIRECTORY_UNREADABLE, `could not read the ACME directory ${this.#options.directoryUrl}: ${(cause as Error).message}`, { directoryUrl: this.#options.directoryUrl }, { cause });
    });
    const parsed = DirectoryShape.safeParse(directory);
    if (!parsed.success) {
      throw new CertplaneError(AcmeErrorCode.DIRECTORY_UNREADABLE, `the ACME directory ${this.#options.directoryUrl} is malformed: ${z.prettifyError(parsed.error)}`, {
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
      throw new CertplaneError(AriErrorCode.UNAVAILABLE, `renewal information for ${certId} is unavailable: ${(cause as Error).message}`, { certId }, { cause });
    });
    if (!renewalInfoUrl) return undefined;
    const url = `${renewalInfoUrl.replace(/\/+$/, '')}/${certId}`;
    const response = await acme.axios.get(url, { timeout: RENEWAL_INFO_TIMEOUT_MS, validateStatus: () => true }).catch((cause: unknown) => {
      // Every HTTP status resolves (validateStatus), so this is a connection-level failure; acme-client
      // 5.4 hides the original behind a TypeError once its own retries are spent.
      throw new CertplaneError(AriErrorCode.UNAVAILABLE, `GET ${url} got no HTTP answer (timeout, refused or TLS failure): ${(cause as Error).message}`, { certId, url }, { cause });
    });
    if (response.status !== 200) {
      throw new CertplaneError(AriErrorCode.UNAVAILABLE, `GET ${url} answered HTTP ${response.status}`, { certId, url, status: response.status });
    }
    const retryAfter = response.headers['retry-after'];
    return parseRenewalInfo(response.data, typeof retryAfter === 'string' ? retryAfter : undefined, this.#now());
  }

  /**
   * Orders a certificate for the names in `csrPem`, solves its challenges, and returns the
   * selected, verified chain. A profile is checked against the directory before anything
   * is ordered, so a typo never yields a certificate of the CA's default lifetime.
   */
  async issue(csrPem: string, options: IssueOptions = {}): Promise<IssuedChain> {
    try {
      return await this.#issue(csrPem, options);
    } catch (error) {
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

  /** acme-client's TypeError for a request that got no HTTP answer, as ACME_UNREACHABLE naming the server; anything else unchanged. */
  #unreachableOr(error: unknown): unknown {
    const cause = error instanceof CertplaneError && error.cause !== undefined ? error.cause : error;
    if (!isNoHttpAnswer(cause)) return error;
    return new CertplaneError(AcmeErrorCode.UNREACHABLE, `the ACME server ${this.#options.directoryUrl} gave no HTTP answer (connection refused, timeout or TLS failure)`, { directoryUrl: this.#options.directoryUrl }, { cause });
  }

  async #issue(csrPem: string, options: IssueOptions): Promise<IssuedChain> {
    const csr = await parseCsr(csrPem, 'CSR', { maxNames: this.#options.maxNamesPerCertificate });
    const log = this.#options.logger.child({ names: csr.dnsNames });
    const client = await this.#accountClient();
    const step = <T>(name: string, fn: () => Promise<T>) =>
      withRetry(() => fn().catch((error: unknown) => Promise.reject(this.#unreachableOr(error))), this.#options.retry ?? DEFAULT_RETRY, (error, attempt, delayMs) =>
        log.warn({ step: name, attempt, delayMs, err: (error as Error).message }, 'transient ACME failure, retrying'),
      );

    const payload = await this.#newOrderPayload(csr.dnsNames, options, log);
    const order = await step('newOrder', () => client.createOrder(payload))
      .catch((e: unknown) => {
        // RFC 9773: the certificate named in `replaces` already has a replacement (an earlier
        // attempt of ours, or another client's). The order is still wanted: once more without it.
        if (!(e instanceof CertplaneError && e.code === AcmeProblemCode.ALREADY_REPLACED && payload.replaces)) throw e;
        log.warn({ replaces: payload.replaces }, 'the CA says the replaced certificate is already replaced; ordering without "replaces"');
        const { replaces: _replaced, ...withoutReplaces } = payload;
        return step('newOrder', () => client.createOrder(withoutReplaces));
      })
      .catch((e) => {
        throw orderFailed('creating the order', e);
      });
    log.info({ order: order.url, profile: payload.profile, replaces: payload.replaces }, 'order created');
    await options.onOrderCreated?.(order.url);
    const authorizations = await step('authorizations', () => client.getAuthorizations(order));
    const solvers = [...(options.solvers ?? []), ...this.#options.solvers];
    for (const authorization of authorizations) await this.#solve(client, authorization, solvers, step);

    const finalized = await step('finalize', () => client.finalizeOrder(order, csrPem)).catch((e) => {
      throw orderFailed('finalizing the order', e);
    });
    const valid = finalized.status === 'valid' ? finalized : await client.waitForValidStatus(finalized);
    if (!valid.certificate) throw new CertplaneError(AcmeErrorCode.ORDER_FAILED, `order ${order.url} is valid but has no certificate URL`);
    const api = (client as unknown as { api: PostAsGet }).api;
    const offered = await step('download', () => downloadChains(api, valid.certificate as string));
    log.info({ chains: offered.length }, 'chains downloaded');
    return { ...this.#select(offered, csr.dnsNames, csr.spkiSha256, log), offeredChainsPem: offered, orderUrl: order.url, certificateUrl: valid.certificate };
  }

  /** Adds `profile` and `replaces` to newOrder only as far as the directory says the CA understands them. */
  async #newOrderPayload(names: readonly string[], options: IssueOptions, log: Logger): Promise<NewOrderPayload> {
    const payload: NewOrderPayload = { identifiers: names.map((value) => ({ type: 'dns', value })) };
    if (options.profile === undefined && options.replaces === undefined) return payload;
    const directory = await this.directoryInfo();
    if (options.profile !== undefined) {
      const offered = Object.keys(directory.profiles);
      if (!Object.hasOwn(directory.profiles, options.profile)) {
        throw new CertplaneError(
          AcmeErrorCode.UNKNOWN_PROFILE,
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

  #select(offered: string[], names: readonly string[], spkiSha256: string, log: Logger): Pick<IssuedChain, 'fullchainPem' | 'report' | 'selection'> {
    const policy = this.#options.chainPolicy;
    const chains = offered.map((pem, i) => {
      try {
        return parseCertificateBundle(pem, `chain ${i} from the CA`);
      } catch (cause) {
        throw new CertplaneError(AcmeErrorCode.BAD_CHAIN, `the CA's chain ${i} does not parse: ${(cause as Error).message}`, { index: i }, { cause });
      }
    });
    const selection = selectChain(chains, {
      preferences: policy.preferences,
      fallback: policy.fallback,
      trustAnchors: policy.trustAnchors,
      distrustedSpkiSha256: policy.distrustedSpkiSha256,
      at: this.#now(),
      hostnames: names,
      expectedSpkiSha256: spkiSha256,
    });
    const { report } = requireSelection(selection, policy.preferences);
    if (selection.fallbackUsed) {
      log.warn({ explanation: explainSelection(selection, []) }, 'no offered chain satisfies the preferred roots; delivering the default chain because CERTPLANE_CHAIN_FALLBACK=default-chain');
    }
    log.info({ selected: selection.selected, preference: selection.preference, anchor: report.anchor?.subjectCN }, 'chain selected and verified');
    return { fullchainPem: report.servedChainPem, report, selection };
  }

  async #solve(
    client: acme.Client,
    authorization: acme.Authorization,
    solvers: readonly ChallengeSolver[],
    step: <T>(name: string, fn: () => Promise<T>) => Promise<T>,
  ): Promise<void> {
    if (authorization.status === 'valid') return;
    const domain = authorization.identifier.value;
    const solver = solvers.find((s) => authorization.challenges.some((c) => c.type === s.type));
    const challenge = solver && authorization.challenges.find((c) => c.type === solver.type);
    if (!solver || !challenge) {
      throw new CertplaneError(
        AcmeErrorCode.NO_SOLVER,
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
    await solver.present(context);
    try {
      await step('challenge', () => client.completeChallenge(challenge));
      await client.waitForValidStatus(challenge).catch(async (e: unknown) => {
        throw await this.#validationFailure(client, challenge.url, domain, solver.type, e);
      });
    } finally {
      await solver.cleanUp(context).catch((error) => this.#options.logger.warn({ domain, err: (error as Error).message }, 'challenge clean-up failed'));
    }
  }

  /**
   * Why the CA did not validate a challenge, typed: acme-client reports an invalid
   * challenge by its detail only, so the challenge is read once more for its problem type.
   */
  async #validationFailure(client: acme.Client, challengeUrl: string, domain: string, type: string, cause: unknown): Promise<CertplaneError> {
    if (cause instanceof CertplaneError) return cause;
    const api = (client as unknown as { api: PostAsGet }).api;
    const challenge = await api.apiRequest(challengeUrl, null, [200]).catch(() => undefined);
    const problem = (challenge?.data as { error?: unknown } | undefined)?.error;
    if (!problem) return orderFailed(`validating ${type} for ${domain}`, cause);
    const error = problemError(problem, { names: [domain], now: this.#now(), what: `${type} for ${domain}` });
    // Whatever the CA calls it, a challenge that did not pass is a failed validation of that name.
    return new CertplaneError(AcmeProblemCode.VALIDATION_FAILED, error.message, error.details);
  }

  #accountClient(): Promise<acme.Client> {
    this.#client ??= this.#openAccount().catch((error) => {
      this.#client = undefined;
      throw error;
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
      backoffAttempts: 12,
      backoffMin: this.#options.pollMinMs ?? 500,
      backoffMax: this.#options.pollMaxMs ?? 10_000,
    });
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

let unsignedFailureInterceptor: number | undefined;

/** One interceptor per process on acme-client's module-wide axios instance (./problems.ts says why). */
function installUnsignedFailureInterceptor(clock: () => Date): void {
  if (unsignedFailureInterceptor !== undefined) acme.axios.interceptors.response.eject(unsignedFailureInterceptor);
  unsignedFailureInterceptor = acme.axios.interceptors.response.use((response) => typedUnsignedFailure(response as never, clock) as never);
}

function orderFailed(what: string, cause: unknown): CertplaneError {
  if (cause instanceof CertplaneError) return cause;
  return new CertplaneError(AcmeErrorCode.ORDER_FAILED, `the CA refused ${what}: ${(cause as Error).message}`, {}, { cause });
}
