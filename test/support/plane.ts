/**
 * An in-process management plane on real parts (in-memory PGlite, file secrets, the real
 * agent CA, sessions and coordinator) listening on a loopback port, for API and channel
 * tests that do not need a CA: nothing here orders a certificate unless a test drives a
 * CSR through, and then the ACME directory below refuses the connection (or the test's
 * `acmeDirectoryUrl` answers as it likes).
 */
import { sign } from 'node:crypto';
import pino, { type Logger } from 'pino';
import WebSocket from 'ws';
import { Registry } from 'prom-client';
import type { AdminDeps } from '../../src/admin/index.js';
import { AgentCa } from '../../src/fleet/ca.js';
import { IssuanceCoordinator } from '../../src/fleet/issuance.js';
import { Revocations } from '../../src/fleet/revocation.js';
import { ServedChecks } from '../../src/fleet/served.js';
import { CHANNEL_PATH, PROTOCOL_VERSION, authPayload } from '../../src/channel/protocol.js';
import { SessionRegistry } from '../../src/fleet/sessions.js';
import { AcmeIssuer } from '../../src/acme/issuer.js';
import { buildApi } from '../../src/api/app.js';
import { FleetMetrics, metricsSource } from '../../src/api/metrics.js';
import { PageCursors } from '../../src/api/cursors.js';
import { Campaigns } from '../../src/jobs/campaigns.js';
import { Rechains } from '../../src/jobs/rechain.js';
import { TrustEvaluation } from '../../src/jobs/trust.js';
import { LiveTrust, chainPolicyOf, trustSettings } from '../../src/config/trust.js';
import type { TrustProfile } from '../../src/chain/index.js';
import { FileSecretStore } from '../../src/secrets/index.js';
import { createCsr, generateKeyPair } from '../../src/pki/factory.js';
import { openStore } from '../../src/store/index.js';
import type { Store } from '../../src/store/types.js';
import { scratch } from './cli.js';

export interface TestPlane {
  readonly url: string;
  readonly store: Store;
  readonly ca: AgentCa;
  readonly sessions: SessionRegistry;
  readonly coordinator: IssuanceCoordinator;
  readonly app: Awaited<ReturnType<typeof buildApi>>;
  /** The same parts the admin console is composed from in `certplane serve`. */
  readonly campaigns: Campaigns;
  /** Plans campaigns' paths and carries out rechain jobs (no scheduler runs here: tests run them). */
  readonly rechains: Rechains;
  readonly trust: LiveTrust;
  readonly trustEvaluation: TrustEvaluation;
  readonly clock: () => Date;
  readonly logger: Logger;
  /** What `certplane serve` hands its admin console, from this plane's parts (plain HTTP: no listener certificate to reload). */
  readonly adminDeps: AdminDeps;
  close(): Promise<void>;
}

export async function startTestPlane(
  options: {
    heartbeatMs?: number;
    authTimeoutMs?: number;
    renewalMinIntervalMs?: number;
    tls?: { certPem: string; keyPem: string };
    acmeDirectoryUrl?: string;
    /** The CA of the ACME server's own HTTPS listener (Pebble's), when `acmeDirectoryUrl` needs one. */
    acmeServerCaPem?: string;
    /** The plane's clock (default: the system's), for tests that move time forward. */
    clock?: () => Date;
    /** Default memory: (PGlite); a postgres:// URL where concurrency matters. */
    storeUrl?: string;
    maxNamesPerCertificate?: number;
    /** Silent unless a test reads what the plane logs. */
    logger?: Logger;
    /** The trust profiles configured; a reload reads them again through the function (default: one empty `default` profile). */
    trustProfiles?: () => readonly TrustProfile[];
    /** How long a revocation waits for the agent to sign with the certificate key. */
    signingTimeoutMs?: number;
    /** Served-chain reports an instance may have judged at once (the plane's default otherwise), and served.ts's counter of ignored ones. */
    servedBurst?: number;
    servedRejected?: (code: string) => void;
    /** The preferred root CNs (default: ISRG Root X1). */
    preferences?: readonly string[];
    /** CERTPLANE_ON_TRUST_CHANGE for the admin console's reload-trust (default: report). */
    onTrustChange?: 'report' | 'rechain';
  } = {},
): Promise<TestPlane> {
  const { tls, acmeDirectoryUrl, acmeServerCaPem, clock = () => new Date(), storeUrl = 'memory:', maxNamesPerCertificate, logger = pino({ level: 'silent' }), trustProfiles = () => [{ name: 'default', anchors: [] }], signingTimeoutMs, servedBurst, servedRejected, preferences = ['ISRG Root X1'], onTrustChange = 'report', ...sessionOptions } = options;
  const settings = async () =>
    trustSettings({ profiles: trustProfiles(), sources: {}, preferences, fallback: 'none', distrustedSpkiSha256: new Set(), unheldPreferences: [] });
  const trust = new LiveTrust(settings, await settings());
  const limits = maxNamesPerCertificate === undefined ? {} : { maxNamesPerCertificate };
  const dir = await scratch('certplane-plane-');
  const store = await openStore(storeUrl);
  const secrets = await FileSecretStore.open(dir.path('secrets'));
  const ca = await AgentCa.loadOrCreate(secrets);
  const sessions = new SessionRegistry({ store, ca, logger, clock, ...sessionOptions });
  const issuer = new AcmeIssuer({
    directoryUrl: acmeDirectoryUrl ?? 'https://127.0.0.1:1/directory',
    ...(acmeServerCaPem ? { serverCaPem: acmeServerCaPem } : {}),
    secrets,
    solvers: [],
    chainPolicy: () => chainPolicyOf(trust.current()),
    logger,
  });
  const served = new ServedChecks({ store, trust, clock, logger, ...(servedBurst === undefined ? {} : { burst: servedBurst }), ...(servedRejected ? { rejected: servedRejected } : {}) });
  const coordinator = new IssuanceCoordinator({ store, issuer, sessions, logger, clock, served, ...limits });
  sessions.setHandler(coordinator);
  const revocations = new Revocations({ store, revoker: issuer, sessions, coordinator, logger, clock, ...(signingTimeoutMs === undefined ? {} : { signingTimeoutMs }) });
  const rechains = new Rechains({ store, trust, clock, logger, onRechained: (certificate) => coordinator.wake({ instanceId: certificate.instanceId, id: certificate.id, status: certificate.status }) });
  const campaigns = new Campaigns({ store, clock, logger, rechains });
  const cursors = await PageCursors.loadOrCreate(secrets);
  const trustEvaluation = new TrustEvaluation({ store, trust, clock, logger });
  const app = await buildApi({ store, coordinator, revocations, campaigns, cursors, sessions, ca, trust, trustEvaluation, metrics: metricsSource(new Registry(), new FleetMetrics({ store, clock })), logger, clock, enrollmentTtlMs: 60_000, ...(tls ? { tls } : {}), ...limits });
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  return {
    url,
    store,
    ca,
    sessions,
    coordinator,
    app,
    campaigns,
    rechains,
    trust,
    trustEvaluation,
    clock,
    logger,
    adminDeps: { store, sessions, campaigns, clock, logger, trust: { live: trust, evaluation: trustEvaluation, onChange: onTrustChange } },
    async close() {
      sessions.closeAll('test over');
      await app.close();
      await store.close();
      await dir.remove();
    },
  };
}

/** An agent of a new instance, enrolled with a fresh token: its key and certificate, as `certplane agent` holds them. */
export interface EnrolledAgent {
  readonly instanceId: string;
  readonly keyPem: string;
  readonly certificatePem: string;
}

/** Issuance is the test's to start unless `autoIssue` (the agent's connection then starts it, as the API's default does). */
export async function enrollTestAgent(plane: TestPlane, name: string, hostnames = [`${name}.example.com`], options: { autoIssue?: boolean } = {}): Promise<EnrolledAgent> {
  const created = await plane.app.inject({ method: 'POST', url: '/v1/instances', payload: { name, hostnames, autoIssue: options.autoIssue ?? false } });
  if (created.statusCode !== 201) throw new Error(`registering instance ${name}: ${created.statusCode} ${created.body}`);
  const key = await generateKeyPair();
  const enrolled = await plane.app.inject({ method: 'POST', url: '/v1/agents/enroll', payload: { token: created.json().enrollmentToken, csrPem: await createCsr(key, ['certplane-agent']) } });
  if (enrolled.statusCode !== 201) throw new Error(`enrolling the agent of ${name}: ${enrolled.statusCode} ${enrolled.body}`);
  return { instanceId: created.json().id, keyPem: key.privateKeyPem, certificatePem: enrolled.json().certificatePem };
}

/** An agent channel spoken by hand (no AgentClient), authenticated with `agent`'s certificate, recording every frame. */
export interface AgentChannel {
  readonly socket: WebSocket;
  readonly frames: Record<string, any>[];
  readonly closed: Promise<{ code: number; reason: string }>;
  /** The first frame of `type` (or one of the types), received already or to come; rejects when the channel closes first or after `ms`. */
  next(type: string | readonly string[], ms?: number): Promise<Record<string, any>>;
  /** Sends one agent message (the protocol version is added). */
  send(message: Record<string, unknown>): void;
}

export async function openAgentChannel(plane: { url: string }, agent: { keyPem: string; certificatePem: string }): Promise<AgentChannel> {
  const socket = new WebSocket(`${plane.url.replace('http', 'ws')}${CHANNEL_PATH}`);
  const frames: Record<string, any>[] = [];
  let ended = false;
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    socket.on('close', (code, reason) => {
      ended = true;
      resolve({ code, reason: reason.toString() });
    }),
  );
  const send = (message: Record<string, unknown>) => socket.send(JSON.stringify({ v: PROTOCOL_VERSION, ...message }));
  socket.on('message', (data) => {
    const frame = JSON.parse(data.toString());
    frames.push(frame);
    if (frame.type === 'hello') send({ type: 'auth', certificatePem: agent.certificatePem, signature: sign('sha256', authPayload(frame.nonce), agent.keyPem).toString('base64'), agentVersion: 'test' });
  });
  socket.on('error', () => undefined);
  const next = (type: string | readonly string[], ms = 10_000) =>
    new Promise<Record<string, any>>((resolve, reject) => {
      const types = typeof type === 'string' ? [type] : type;
      const timer = setTimeout(() => finish(new Error(`no ${types.join(' or ')} frame within ${ms} ms`)), ms);
      const finish = (error?: Error) => {
        clearTimeout(timer);
        socket.off('message', check);
        socket.off('close', check);
        const found = frames.find((f) => types.includes(f.type));
        if (found) resolve(found);
        else reject(error ?? new Error(`the channel closed before a ${types.join(' or ')} frame`));
      };
      const check = () => {
        if (frames.some((f) => types.includes(f.type)) || ended) finish();
      };
      socket.on('message', check);
      socket.on('close', check);
      check();
    });
  return { socket, frames, closed, next, send };
}
