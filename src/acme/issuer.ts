/**
 * Obtains a certificate for a CSR from an RFC 8555 CA and returns only a chain that
 * the chain engine selected and verified. Nothing here decides which chain is good:
 * that is src/chain's job; this file speaks ACME through acme-client.
 */
import https from 'node:https';
import { rootCertificates } from 'node:tls';
import acme from 'acme-client';
import type { Logger } from 'pino';
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
import type { SecretStore } from '../secrets/index.js';
import { loadOrCreateAccount, rememberAccountUrl } from './account.js';
import { downloadChains, type PostAsGet } from './chains.js';
import { DEFAULT_RETRY, withRetry, type RetryPolicy } from './retry.js';
import type { ChallengeContext, ChallengeSolver } from './solver.js';

export const AcmeErrorCode = {
  /** No configured solver can answer any challenge the CA offered for an identifier. */
  NO_SOLVER: 'ACME_NO_SOLVER',
  /** The CA refused or failed the order; the message carries its problem detail. */
  ORDER_FAILED: 'ACME_ORDER_FAILED',
  /** The CA returned something that is not a certificate chain. */
  BAD_CHAIN: 'ACME_BAD_CHAIN',
} as const;

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

export class AcmeIssuer {
  readonly #options: AcmeIssuerOptions;
  #client: Promise<acme.Client> | undefined;

  constructor(options: AcmeIssuerOptions) {
    this.#options = options;
    if (options.serverCaPem) {
      // acme-client sends every request through one module-wide axios instance; this is
      // the only hook it offers to trust a private CA such as Pebble's. The composition
      // root builds one issuer per process, so the setting is never contested.
      acme.axios.defaults.httpsAgent = new https.Agent({ ca: [...rootCertificates, options.serverCaPem], keepAlive: true });
    }
  }

  /**
   * Orders a certificate for the names in `csrPem`, solves its challenges, and returns the
   * selected, verified chain. `solvers` come first for this order only: the http-01
   * responder of the one agent that asked.
   */
  async issue(csrPem: string, options: { solvers?: readonly ChallengeSolver[] } = {}): Promise<IssuedChain> {
    const csr = await parseCsr(csrPem);
    const log = this.#options.logger.child({ names: csr.dnsNames });
    const client = await this.#accountClient();
    const step = <T>(name: string, fn: () => Promise<T>) =>
      withRetry(fn, this.#options.retry ?? DEFAULT_RETRY, (error, attempt, delayMs) =>
        log.warn({ step: name, attempt, delayMs, err: (error as Error).message }, 'transient ACME failure, retrying'),
      );

    const order = await step('newOrder', () => client.createOrder({ identifiers: csr.dnsNames.map((value) => ({ type: 'dns', value })) })).catch((e) => {
      throw orderFailed('creating the order', e);
    });
    log.info({ order: order.url }, 'order created');
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
      at: (this.#options.clock ?? (() => new Date()))(),
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
      await client.waitForValidStatus(challenge).catch((e) => {
        throw orderFailed(`validating ${solver.type} for ${domain}`, e);
      });
    } finally {
      await solver.cleanUp(context).catch((error) => this.#options.logger.warn({ domain, err: (error as Error).message }, 'challenge clean-up failed'));
    }
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
    if (!account.accountUrl) {
      await withRetry(() => client.createAccount({ termsOfServiceAgreed: true, ...(contactEmail ? { contact: [`mailto:${contactEmail}`] } : {}) }), this.#options.retry ?? DEFAULT_RETRY);
      account = await rememberAccountUrl(secrets, account, client.getAccountUrl());
      this.#options.logger.info({ account: account.accountUrl, directory: directoryUrl }, 'ACME account registered');
    }
    return client;
  }
}

function orderFailed(what: string, cause: unknown): CertplaneError {
  if (cause instanceof CertplaneError) return cause;
  return new CertplaneError(AcmeErrorCode.ORDER_FAILED, `the CA refused ${what}: ${(cause as Error).message}`, {}, { cause });
}
