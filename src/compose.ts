/**
 * The composition root: the one place that reads configuration, opens files, builds SDK
 * clients and wires the rooms together. Every room receives what it needs as arguments
 * and never reaches for a global. The wiring itself (`wirePlane`) takes opened resources,
 * so the test harness (test/support/plane.ts) runs the same graph on its own store,
 * secrets and clock instead of a copy of it.
 */
import type { Server as HttpsServer } from 'node:https';
import { hostname, userInfo } from 'node:os';
import { Route53Client } from '@aws-sdk/client-route-53';
import { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import type { Logger } from 'pino';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { AgentCa } from './fleet/ca.js';
import { ISSUANCE_STAGES, IssuanceCoordinator, type IssuanceMetrics } from './fleet/issuance.js';
import { Revocations } from './fleet/revocation.js';
import { ServedChecks } from './fleet/served.js';
import { SessionRegistry, type ChannelMetrics, type SessionOptions } from './fleet/sessions.js';
import { buildApi } from './api/app.js';
import type { HandshakeLimits } from './api/handshakes.js';
import { FleetMetrics, metricsSource } from './api/metrics.js';
import { isWildcardHost, startMetricsListener } from './api/metrics-listener.js';
import { PageCursors } from './api/cursors.js';
import { checkServerCertificate, serverCertificate, type TlsPair } from './api/tls.js';
import { CertplaneError } from './errors.js';
import { startAdminSocket, type AdminDeps } from './admin/index.js';
import { offsetFileClock, systemClock, type Clock } from './config/clock.js';
import { Campaigns } from './jobs/campaigns.js';
import { Rechains } from './jobs/rechain.js';
import { JobLifecycle, type RenewalAdvisor } from './jobs/lifecycle.js';
import { Scheduler } from './jobs/scheduler.js';
import { RateLimiter, parseRateLimits, type RateLimitConfig } from './jobs/ratelimit.js';
import { openStore, type Store } from './store/index.js';
import { AcmeIssuer } from './acme/issuer.js';
import { ariCertId, chooseRenewalTime } from './acme/ari.js';
import { ChalltestsrvDnsProvider } from './acme/dns/challtestsrv.js';
import type { DnsProvider } from './acme/dns/provider.js';
import { Route53DnsProvider } from './acme/dns/route53.js';
import { Dns01Solver, type ChallengeSolver } from './acme/solver.js';
import type { Config } from './config/config.js';
import { auditConfiguration } from './config/changes.js';
import { LiveTrust, chainPolicyOf, readText } from './config/trust.js';
import { TrustEvaluation } from './jobs/trust.js';
import { openSecretStore, readPrivateFile, type SecretStore } from './secrets/index.js';
import { StartedResources } from './started-resources.js';
import { ErrorCode } from './error-catalogue.js';

/** Builds the DNS provider CERTPLANE_DNS_PROVIDER names, or none. */
export function dnsProviderFor(config: Config): DnsProvider | undefined {
  switch (config.dns.provider) {
    case 'challtestsrv':
      return new ChalltestsrvDnsProvider(config.dns.challtestsrvUrl as string);
    case 'route53':
      return new Route53DnsProvider({ client: new Route53Client({}), hostedZoneId: config.dns.route53HostedZoneId });
    case 'none':
      return undefined;
  }
}

/** What the plane orders with: its CA, how challenges are answered, and the CA's limits. */
export interface AcmeSettings {
  readonly directoryUrl: string;
  /** Extra CAs trusted for the ACME server's own HTTPS listener (Pebble's), PEM. */
  readonly serverCaPem?: string;
  readonly contactEmail?: string;
  readonly solvers: readonly ChallengeSolver[];
  /** CERTPLANE_MAX_NAMES_PER_CERTIFICATE: caps an instance's hostnames and every CSR; the CA's limit when absent. */
  readonly maxNamesPerCertificate?: number;
  /** CERTPLANE_ACME_POLL_INTERVAL_MS; the issuer's default (200 ms) when absent. */
  readonly pollIntervalMs?: number;
}

/** The ACME settings configuration gives: the CA file read, the configured DNS provider as a dns-01 solver after `extraSolvers`. */
export async function acmeSettingsOf(config: Config, extraSolvers: readonly ChallengeSolver[] = []): Promise<AcmeSettings> {
  const dns = dnsProviderFor(config);
  return {
    directoryUrl: config.acme.directoryUrl,
    serverCaPem: config.acme.serverCaCertsPath ? await readText(config.acme.serverCaCertsPath, 'CERTPLANE_ACME_CA_CERTS') : undefined,
    contactEmail: config.acme.contactEmail,
    solvers: [...(dns ? [new Dns01Solver(dns)] : []), ...extraSolvers],
    maxNamesPerCertificate: config.acme.maxNamesPerCertificate,
    pollIntervalMs: config.acme.pollIntervalMs,
  };
}

/** An issuer on `acme`'s CA choosing chains under the trust settings in force at each order (`trust` is read again every time). */
function acmeIssuer(acme: AcmeSettings, secrets: SecretStore, trust: LiveTrust, logger: Logger): AcmeIssuer {
  logger.debug({ profiles: trust.current().sources }, 'trust profiles loaded');
  return new AcmeIssuer({
    directoryUrl: acme.directoryUrl,
    serverCaPem: acme.serverCaPem,
    contactEmail: acme.contactEmail,
    secrets,
    solvers: acme.solvers,
    chainPolicy: () => chainPolicyOf(trust.current()),
    logger,
    maxNamesPerCertificate: acme.maxNamesPerCertificate,
    pollMinMs: acme.pollIntervalMs,
  });
}

/** Everything a one-shot issuance (`certplane issue`) needs, built from configuration. */
export async function composeIssuer(config: Config, logger: Logger, extraSolvers: readonly ChallengeSolver[] = []): Promise<AcmeIssuer> {
  const trust = await LiveTrust.load(config.chain, { requireHeldPreference: false });
  const secrets = await openSecretStore(config.secrets, { secretsManagerClient: () => new SecretsManagerClient({}) });
  return acmeIssuer(await acmeSettingsOf(config, extraSolvers), secrets, trust, logger);
}

/** The running management plane: its HTTP server and what must be closed on shutdown. */
export interface ManagementPlane {
  readonly app: Awaited<ReturnType<typeof buildApi>>;
  readonly store: Store;
  readonly sessions: SessionRegistry;
  /** The address it listens on, e.g. http://127.0.0.1:8443. */
  readonly url: string;
  /** What the admin console needs, for the stdin console of an interactive `certplane serve`. */
  readonly adminDeps: AdminDeps;
  close(): Promise<void>;
}

/** The CA's renewal information (RFC 9773) through the issuer: a time inside its window, and when to ask again. */
function renewalAdvisor(issuer: AcmeIssuer): RenewalAdvisor {
  return {
    advise: async (leafPem, now) => {
      const info = await issuer.renewalInfo(leafPem);
      return info && { renewAt: chooseRenewalTime(info, now), retryAt: info.retryAt };
    },
    certId: async (leafPem) => ((await issuer.directoryInfo()).renewalInfoUrl ? ariCertId(leafPem) : undefined),
  };
}

/** Prometheus metrics of the plane, implementing the counters the agents room reports to. */
function planeMetrics(registry: Registry): ChannelMetrics & IssuanceMetrics {
  const agents = new Gauge({ name: 'certplane_agents_connected', help: 'Agent channels open on this process', registers: [registry] });
  const rejected = new Counter({ name: 'certplane_channel_rejected_total', help: 'Agent connections closed for a protocol or authentication error, and served-chain reports ignored as too frequent (code CHANNEL_SERVED_REPORT_TOO_FREQUENT)', labelNames: ['code'], registers: [registry] });
  const issuances = new Counter({ name: 'certplane_issuance_events_total', help: 'Issuance outcomes: issued, failed, installed, install_failed', labelNames: ['outcome'], registers: [registry] });
  const wakeups = new Counter({ name: 'certplane_agent_wakeups_total', help: 'Agents on this process woken for waiting work, by a database notification or by the fallback pass', labelNames: ['source'], registers: [registry] });
  const stages = new Histogram({
    name: 'certplane_issuance_stage_duration_seconds',
    help: `Time spent in each stage of an issuance on this process, CSR request to installed acknowledgement: ${ISSUANCE_STAGES.join(', ')}`,
    labelNames: ['stage'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
    registers: [registry],
  });
  return {
    connected: (delta) => agents.inc(delta),
    rejected: (code) => rejected.inc({ code }),
    issuance: (outcome) => issuances.inc({ outcome }),
    wakeup: (source) => wakeups.inc({ source }),
    stage: (stage, seconds) => stages.observe({ stage }, seconds),
  };
}

/** How to read the listener's certificate and key, at start and again on every reload; undefined when the plane serves plain HTTP. */
function tlsFiles(server: Config['server']): (() => Promise<TlsPair>) | undefined {
  const { insecureHttp, tlsCertPath, tlsKeyPath } = server;
  if (insecureHttp || !tlsCertPath || !tlsKeyPath) return undefined;
  return async () => ({ certPem: await readText(tlsCertPath, 'CERTPLANE_TLS_CERT'), keyPem: await readTlsKey(tlsKeyPath) });
}

/** The listener's key is a secret like the ones in the secret store, and refused the same way when group or others may read it. */
async function readTlsKey(path: string): Promise<string> {
  const keyPem = await readPrivateFile(path);
  if (keyPem === undefined) throw new CertplaneError(ErrorCode.TRUST_STORE_UNREADABLE, `cannot read the CERTPLANE_TLS_KEY file ${path}: ENOENT`, { path, role: 'CERTPLANE_TLS_KEY' });
  return keyPem;
}

/** Listens on the configured address; a refusal (the port taken, an address not on this host) becomes an error that names CERTPLANE_LISTEN. */
async function listenOn(app: ManagementPlane['app'], listen: Config['server']['listen']): Promise<string> {
  try {
    return await app.listen({ host: listen.host, port: listen.port });
  } catch (cause) {
    const errno = (cause as NodeJS.ErrnoException).code ?? (cause as Error).message;
    const hint = errno === 'EADDRINUSE' ? 'another process holds the port: stop it or choose another CERTPLANE_LISTEN' : 'check CERTPLANE_LISTEN';
    throw new CertplaneError(ErrorCode.SERVER_LISTEN_FAILED, `cannot listen on ${listen.host}:${listen.port} (${errno}): ${hint}`, { host: listen.host, port: listen.port, errno }, { cause });
  }
}

/** How many unowned hostnames the start-up warning lists. */
const UNOWNED_SHOWN = 20;

/** What the plane is wired from: resources its caller opened, and closes after the plane. */
export interface PlaneResources {
  readonly store: Store;
  readonly secrets: SecretStore;
  readonly logger: Logger;
  /** The only source of time for every room (a test moves it instead of waiting). */
  readonly clock: Clock;
  readonly trust: LiveTrust;
  /** Where the plane's own metrics are registered; `certplane serve` adds the process's default metrics to it. */
  readonly registry: Registry;
}

/** The values configuration gives the plane (`certplane serve` maps them from Config; the test harness passes its own). */
export interface PlaneSettings {
  readonly acme: AcmeSettings;
  /** The rate-limit buckets of the ACME account (CERTPLANE_RATE_LIMITS over the defaults). */
  readonly rateLimits: RateLimitConfig;
  /** CERTPLANE_CHALLENGE: with dns-01 the configured DNS provider answers instead of the agent. */
  readonly challenge: Config['server']['challenge'];
  readonly enrollmentTtlMs: number;
  /** CERTPLANE_LEASE_MS, CERTPLANE_ISSUANCE_CONCURRENCY, CERTPLANE_SCHEDULER_INTERVAL_MS: the rooms' defaults when absent. */
  readonly leaseMs?: number;
  readonly issuanceConcurrency?: number;
  readonly schedulerIntervalMs?: number;
  /** CERTPLANE_ORDER_BEFORE_CSR: order while the agent makes its CSR; off when absent. */
  readonly orderBeforeCsr?: boolean;
  /** CERTPLANE_SHUTDOWN_GRACE_MS: how long in-flight orders may run on when the plane closes. */
  readonly shutdownGraceMs: number;
  /** The listener's certificate and key; plain HTTP without them. */
  readonly tls?: TlsPair;
  readonly publicUrl?: string;
  /** CERTPLANE_ON_TRUST_CHANGE, for the admin console's reload-trust. */
  readonly onTrustChange: Config['chain']['onTrustChange'];
  /**
   * Seams for tests, never set by `certplane serve` (the rooms' defaults hold there): the
   * channel's timings, how long a revocation waits for the agent's signature, the burst of
   * served-chain reports judged at once, an observer of ignored reports (counted in the
   * channel's rejection metric either way), `wakeups: false` for a process whose
   * database notifications never arrive, so a test sees what the fallback pass alone does,
   * and the listener's handshake limits.
   */
  readonly tuning?: {
    readonly wakeups?: boolean;
    readonly channel?: Pick<SessionOptions, 'authTimeoutMs' | 'heartbeatMs' | 'renewalMinIntervalMs'>;
    readonly signingTimeoutMs?: number;
    readonly servedBurst?: number;
    readonly onServedRejected?: (code: string) => void;
    readonly handshakes?: HandshakeLimits;
  };
}

/** The plane's parts, wired and not yet listening; the scheduler is not started. */
export interface WiredPlane {
  readonly app: Awaited<ReturnType<typeof buildApi>>;
  readonly ca: AgentCa;
  readonly sessions: SessionRegistry;
  readonly coordinator: IssuanceCoordinator;
  readonly revocations: Revocations;
  readonly lifecycle: JobLifecycle;
  readonly campaigns: Campaigns;
  readonly rechains: Rechains;
  readonly trustEvaluation: TrustEvaluation;
  /** Built, not started: `certplane serve` starts it once it listens; tests run jobs themselves. */
  readonly scheduler: Scheduler;
  /** The process's and the fleet's metrics, as /metrics serves them. */
  readonly metrics: ReturnType<typeof metricsSource>;
  /** What the admin console is composed from (without a listener certificate to reload: the caller adds it). */
  readonly adminDeps: AdminDeps;
}

/**
 * Wires the plane's rooms from opened resources: the one wiring `certplane serve` and the
 * test harness (test/support/plane.ts) share, so tests run the plane that ships. What it
 * starts (the notification listener, the agent revocation watch) and what must stop before
 * the store closes (in-flight orders, the listener and agent channels) is added to
 * `started`, after whatever the caller added there (the store first), so one `closeAll`
 * stops it all in order. Installed chains are judged under the trust settings before it
 * returns: a trust change made while the plane was down shows as soon as it is back.
 */
export async function wirePlane(resources: PlaneResources, settings: PlaneSettings, started: StartedResources): Promise<WiredPlane> {
  const { store, secrets, logger, clock, trust, registry } = resources;
  const { acme, tuning = {} } = settings;
  const ca = await AgentCa.loadOrCreate(secrets, clock());
  const cursors = await PageCursors.loadOrCreate(secrets);
  const issuer = acmeIssuer(acme, secrets, trust, logger.child({ room: 'acme' }));
  const trustEvaluation = new TrustEvaluation({ store, trust, clock, logger: logger.child({ room: 'jobs' }) });
  const judged = await trustEvaluation.evaluate();
  logger[judged.broken > 0 ? 'warn' : 'info']({ evaluated: judged.evaluated, broken: judged.broken, alternateAvailable: judged.alternateAvailable }, 'installed chains judged in the trust profiles');
  const metrics = planeMetrics(registry);
  const sessions = new SessionRegistry({ store, ca, logger: logger.child({ room: 'agents' }), clock, metrics, ...tuning.channel });
  const limiter = new RateLimiter({ store, config: settings.rateLimits, clock, account: acme.directoryUrl });
  const lifecycle = new JobLifecycle({
    store,
    logger: logger.child({ room: 'jobs' }),
    clock,
    advisor: renewalAdvisor(issuer),
    onFailedValidation: async (hostnames) => {
      for (const hostname of hostnames) await limiter.recordFailedValidation(hostname);
    },
  });
  const servedRejected = (code: string) => {
    metrics.rejected(code);
    tuning.onServedRejected?.(code);
  };
  const coordinator = new IssuanceCoordinator({
    store,
    issuer,
    sessions,
    logger: logger.child({ room: 'issuance' }),
    clock,
    metrics,
    listener: {
      // A new installation is judged at once, so its trust standing is never missing.
      onInstalled: async (certificate) => {
        await lifecycle.onInstalled(certificate);
        await trustEvaluation.evaluate({ instanceIds: [certificate.instanceId] }).catch((error: unknown) => logger.warn({ instanceId: certificate.instanceId, err: (error as Error).message }, 'the installed chain could not be judged in the trust profiles'));
      },
      onFailed: (certificate) => lifecycle.onFailed(certificate),
      replacesFor: (certificate) => lifecycle.replacesFor(certificate),
    },
    gate: limiter,
    preferDns01: settings.challenge === 'dns-01',
    maxNamesPerCertificate: acme.maxNamesPerCertificate,
    leaseMs: settings.leaseMs,
    concurrency: settings.issuanceConcurrency,
    ...(settings.orderBeforeCsr === undefined ? {} : { orderBeforeCsr: settings.orderBeforeCsr }),
    // The scheduler is made below; an order ends only after start(), when it exists.
    onRoom: () => scheduler.roomFreed(),
    served: new ServedChecks({ store, trust, clock, logger: logger.child({ room: 'agents' }), rejected: servedRejected, ...(tuning.servedBurst === undefined ? {} : { burst: tuning.servedBurst }) }),
  });
  sessions.setHandler(coordinator);
  const revocations = new Revocations({ store, revoker: issuer, sessions, coordinator, logger: logger.child({ room: 'revocation' }), clock, ...(tuning.signingTimeoutMs === undefined ? {} : { signingTimeoutMs: tuning.signingTimeoutMs }) });
  // Notifications make several processes as quick as one; the scheduler's fallback pass covers any lost.
  if (tuning.wakeups !== false) {
    started.add(
      'wake-ups',
      await store.wakeups.listen(
        (work) => coordinator.wake(work),
        () => void coordinator.reconcileChanged().catch((error: unknown) => logger.warn({ err: (error as Error).message }, 'catching up after the notification listener reconnected failed')),
      ),
    );
  }
  // A rechain record waits for its agent from the moment it exists: the process holding the channel delivers it (here at once, elsewhere on its notification).
  const rechains = new Rechains({ store, trust, clock, logger: logger.child({ room: 'jobs' }), onRechained: (certificate) => coordinator.wake({ instanceId: certificate.instanceId, id: certificate.id, status: certificate.status }) });
  const campaigns = new Campaigns({ store, clock, logger: logger.child({ room: 'jobs' }), predictDurationMs: (count) => limiter.predictDuration(count), onQueued: () => scheduler.wake(), rechains });
  const scheduler = new Scheduler({ store, coordinator, lifecycle, rechains, logger: logger.child({ room: 'jobs' }), clock, intervalMs: settings.schedulerIntervalMs, metrics });
  started.add('revocation watch', sessions.watchRevocations());
  // Per process (agents, stages) and per fleet (read from the database at every scrape: the same on every process).
  const metricsServed = metricsSource(registry, new FleetMetrics({ store, clock }));
  const app = await buildApi({ store, coordinator, revocations, campaigns, cursors, sessions, ca, trust, trustEvaluation, metrics: metricsServed, logger, clock, enrollmentTtlMs: settings.enrollmentTtlMs, tls: settings.tls, publicUrl: settings.publicUrl, maxNamesPerCertificate: acme.maxNamesPerCertificate, handshakes: tuning.handshakes });
  started.add('listener and agent channels', async () => {
    sessions.closeAll('management plane shutting down');
    await app.close();
  });
  // Closed before the channels (http-01 orders need them to finish) and after the scheduler stops claiming.
  started.add('in-flight orders', () => coordinator.stop(settings.shutdownGraceMs));
  const adminDeps: AdminDeps = { store, sessions, campaigns, clock, logger: logger.child({ room: 'admin' }), trust: { live: trust, evaluation: trustEvaluation, onChange: settings.onTrustChange } };
  return { app, ca, sessions, coordinator, revocations, lifecycle, campaigns, rechains, trustEvaluation, scheduler, metrics: metricsServed, adminDeps };
}

/** Builds and starts `certplane serve` from configuration. */
export async function composeServer(config: Config, logger: Logger, clock: Clock = config.server.clockOffsetFile ? offsetFileClock(config.server.clockOffsetFile) : systemClock): Promise<ManagementPlane> {
  const readTls = tlsFiles(config.server);
  const tls = readTls && (await readTls());
  if (!config.server.insecureHttp && !tls) {
    throw new CertplaneError(ErrorCode.CONFIG_INVALID, 'invalid configuration:\n  CERTPLANE_TLS_CERT: the management plane serves HTTPS; set CERTPLANE_TLS_CERT and CERTPLANE_TLS_KEY, or CERTPLANE_INSECURE_HTTP=1 on a loopback CERTPLANE_LISTEN for development');
  }
  if (config.server.insecureHttp) logger.warn({ listen: config.server.listen }, 'CERTPLANE_INSECURE_HTTP=1: plain HTTP without client authentication, for development on this machine only');
  const served = tls && checkServerCertificate(tls, clock(), false);
  if (served && !served.validNow) {
    logger.error({ subject: served.identity.subject, notAfter: served.identity.notAfter }, 'the server certificate is not valid now: clients will refuse the listener; replace the files and run `certplane admin reload-tls` (or send SIGHUP)');
  }
  // Everything opened below is added here the moment it exists: a failed start closes it all and shutdown uses the same stack.
  const started = new StartedResources();
  try {
    // Before anything opens: preferences no profile holds stop the start here, saying so.
    const trust = await LiveTrust.load(config.chain);
    for (const preference of trust.current().unheldPreferences) logger.warn({ preference, profiles: trust.current().sources }, 'no trust profile holds this preferred root; chains to it are never chosen');
    const store = await openStore(config.server.databaseUrl, { poolSize: config.server.databasePoolSize });
    started.add('store', () => store.close());
    const node = `${hostname()} ${config.server.listen.host}:${config.server.listen.port}`;
    const changed = await auditConfiguration(store.audit, config, { node, actor: `service:${userInfo().username}` });
    if (changed) logger.info({ node, changed }, 'configuration change recorded in the audit trail');
    const unowned = await store.instances.unownedHostnames(UNOWNED_SHOWN);
    if (unowned.length > 0) {
      // Only a database from before hostname ownership (migration 8) can hold these: said at every start until resolved, never silently.
      logger.warn({ unowned }, 'instances list hostnames an older instance owns; certificates asking for them are refused (audit trail: instance.hostname-conflict)');
    }
    const secrets = await openSecretStore(config.secrets, { secretsManagerClient: () => new SecretsManagerClient({}) });
    const registry = new Registry();
    collectDefaultMetrics({ register: registry });
    const plane = await wirePlane(
      { store, secrets, logger, clock, trust, registry },
      {
        acme: await acmeSettingsOf(config),
        rateLimits: parseRateLimits(config.server.rateLimitsJson),
        challenge: config.server.challenge,
        enrollmentTtlMs: config.server.enrollmentTtlMs,
        leaseMs: config.server.leaseMs,
        issuanceConcurrency: config.server.issuanceConcurrency,
        orderBeforeCsr: config.server.orderBeforeCsr,
        schedulerIntervalMs: config.server.schedulerIntervalMs,
        shutdownGraceMs: config.server.shutdownGraceMs,
        tls,
        publicUrl: config.server.publicUrl,
        onTrustChange: config.chain.onTrustChange,
      },
      started,
    );
    const { app, sessions, scheduler } = plane;
    // The listener's certificate is re-read from its files on `reload-tls` (admin console) or SIGHUP.
    const serverTls = served && readTls ? serverCertificate(app.server as HttpsServer, served.identity, readTls, clock) : undefined;
    const adminDeps: AdminDeps = { ...plane.adminDeps, serverTls };
    const adminSocket = await startAdminSocket({ path: config.server.adminSocket, deps: adminDeps });
    started.add('admin socket', () => adminSocket.close());
    if (config.server.metricsListen) {
      const listen = config.server.metricsListen;
      if (isWildcardHost(listen.host)) logger.warn({ metricsListen: listen }, 'CERTPLANE_METRICS_LISTEN binds every interface and asks no client certificate: let only the scraper\'s network reach this port');
      const metricsListener = await startMetricsListener({ listen, source: plane.metrics, logger });
      started.add('metrics listener', () => metricsListener.close());
      logger.info({ url: metricsListener.url }, 'metrics listening (plain HTTP, GET /metrics only)');
    }
    const url = await listenOn(app, config.server.listen);
    logger.info({ url, database: store.engine, scheduler: scheduler.owner, adminSocket: adminSocket.path }, 'management plane listening');
    if (tls && !(await store.apiClients.list()).some((client) => client.revokedAt === null)) {
      // First start in secure mode: nobody can call the API until a client certificate is registered locally.
      logger.warn({ adminSocket: adminSocket.path }, 'no control-plane client is registered: on this host run `certplane admin register-client --name NAME --role admin --cert-file CLIENT.pem`');
    }
    scheduler.start();
    started.add('scheduler', () => scheduler.stop());
    return { app, store, sessions, url, adminDeps, close: () => started.closeAll() };
  } catch (error) {
    await started.closeAll().catch((closeError: unknown) => logger.error({ err: (closeError as Error).message }, 'start-up failed and not everything it had started could be closed'));
    throw error;
  }
}
