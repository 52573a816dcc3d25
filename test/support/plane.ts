/**
 * An in-process management plane on real parts, wired by the composition root's own
 * `wirePlane` (src/compose.ts) with test values: in-memory PGlite (or the test's database),
 * file secrets in a scratch directory, the test's clock, and an ACME directory that refuses
 * the connection unless the test gives its own. It listens on a loopback port. Nothing
 * orders a certificate unless a test drives a CSR through, and no scheduler runs: tests run
 * jobs themselves.
 */
import { sign } from 'node:crypto';
import pino, { type Logger } from 'pino';
import WebSocket from 'ws';
import { Registry } from 'prom-client';
import type { AdminDeps } from '../../src/admin/index.js';
import type { AgentCa } from '../../src/fleet/ca.js';
import type { IssuanceCoordinator } from '../../src/fleet/issuance.js';
import { CHANNEL_PATH, PROTOCOL_VERSION, authPayload } from '../../src/channel/protocol.js';
import type { SessionRegistry } from '../../src/fleet/sessions.js';
import type { buildApi } from '../../src/api/app.js';
import type { HandshakeLimits } from '../../src/api/handshakes.js';
import type { Campaigns } from '../../src/jobs/campaigns.js';
import type { Rechains } from '../../src/jobs/rechain.js';
import type { TrustEvaluation } from '../../src/jobs/trust.js';
import type { RateLimitConfig } from '../../src/jobs/ratelimit.js';
import { LiveTrust, trustSettings } from '../../src/config/trust.js';
import type { TrustProfile } from '../../src/chain/index.js';
import { wirePlane } from '../../src/compose.js';
import { StartedResources } from '../../src/started-resources.js';
import { FileSecretStore } from '../../src/secrets/index.js';
import { createCsr, generateKeyPair } from '../../src/pki/factory.js';
import { openStore } from '../../src/store/index.js';
import type { Store } from '../../src/store/types.js';
import { scratch } from './cli.js';

/** An ACME directory nothing listens on: an order that reaches the CA fails as unreachable. */
const REFUSED_DIRECTORY_URL = 'https://127.0.0.1:1/directory';
/** How long in-flight orders may run on when a test plane closes (`certplane serve`: CERTPLANE_SHUTDOWN_GRACE_MS). */
const TEST_SHUTDOWN_GRACE_MS = 1_000;
/**
 * The limiter runs as in `certplane serve`, with buckets no suite empties: Let's Encrypt's
 * 50 certificates per registered domain would stop a suite ordering for its hundreds of
 * instances under example.com. Suites about the limits build their own limiter.
 */
const TEST_RATE_LIMIT = { capacity: 1_000_000, refillPerSecond: 1_000 };
const TEST_RATE_LIMITS: RateLimitConfig = { newOrders: TEST_RATE_LIMIT, certificatesPerDomain: TEST_RATE_LIMIT, failedValidationsPerHostname: TEST_RATE_LIMIT, retryReserve: 0.5 };
/** Enrollment tokens of a test plane (`certplane serve`: CERTPLANE_ENROLLMENT_TTL_SECONDS). */
const TEST_ENROLLMENT_TTL_MS = 60_000;

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
  /** What `certplane serve` hands its admin console, from this plane's parts (no listener certificate to reload). */
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
    /** False: PGlite runs in this thread, where statementsOf (support/statements.ts) counts its statements (default: its own thread, as in `certplane serve`). */
    pgliteThread?: boolean;
    maxNamesPerCertificate?: number;
    /** Silent unless a test reads what the plane logs. */
    logger?: Logger;
    /** The trust profiles configured; a reload reads them again through the function (default: one empty `default` profile). */
    trustProfiles?: () => readonly TrustProfile[];
    /** How long a revocation waits for the agent to sign with the certificate key. */
    signingTimeoutMs?: number;
    /** Served-chain reports an instance may have judged at once (the plane's default otherwise), and an observer of ignored ones. */
    servedBurst?: number;
    servedRejected?: (code: string) => void;
    /** The preferred root CNs (default: ISRG Root X1). */
    preferences?: readonly string[];
    /** CERTPLANE_ON_TRUST_CHANGE for the admin console's reload-trust (default: report). */
    onTrustChange?: 'report' | 'rechain';
    /** False: the plane never hears the database's notifications, as if every one were lost (default: it listens, as `certplane serve` does). */
    wakeups?: boolean;
    /** The listener's TLS handshake limits (the plane's defaults otherwise). */
    handshakes?: HandshakeLimits;
    /** CERTPLANE_ORDER_BEFORE_CSR (default off, as in `certplane serve`). */
    orderBeforeCsr?: boolean;
  } = {},
): Promise<TestPlane> {
  const { tls, acmeDirectoryUrl = REFUSED_DIRECTORY_URL, acmeServerCaPem, clock = () => new Date(), storeUrl = 'memory:', pgliteThread, maxNamesPerCertificate, logger = pino({ level: 'silent' }), trustProfiles = () => [{ name: 'default', anchors: [] }], signingTimeoutMs, servedBurst, servedRejected, preferences = ['ISRG Root X1'], onTrustChange = 'report', wakeups, handshakes, orderBeforeCsr = false, ...channel } = options;
  const settings = async () =>
    trustSettings({ profiles: trustProfiles(), sources: {}, preferences, fallback: 'none', distrustedSpkiSha256: new Set(), unheldPreferences: [] });
  const trust = new LiveTrust(settings, await settings());
  // The same stack `certplane serve` closes: a failed start closes what it had started, and close() stops the plane in order.
  const started = new StartedResources();
  try {
    const dir = await scratch('certplane-plane-');
    started.add('scratch directory', () => dir.remove());
    const store = await openStore(storeUrl, pgliteThread === undefined ? {} : { pgliteThread });
    started.add('store', () => store.close());
    const secrets = await FileSecretStore.open(dir.path('secrets'));
    const plane = await wirePlane(
      { store, secrets, logger, clock, trust, registry: new Registry() },
      {
        acme: { directoryUrl: acmeDirectoryUrl, serverCaPem: acmeServerCaPem, solvers: [], maxNamesPerCertificate },
        rateLimits: TEST_RATE_LIMITS,
        challenge: 'http-01',
        enrollmentTtlMs: TEST_ENROLLMENT_TTL_MS,
        shutdownGraceMs: TEST_SHUTDOWN_GRACE_MS,
        orderBeforeCsr,
        tls,
        onTrustChange,
        tuning: { channel, signingTimeoutMs, servedBurst, onServedRejected: servedRejected, wakeups, handshakes },
      },
      started,
    );
    const url = await plane.app.listen({ host: '127.0.0.1', port: 0 });
    const { app, ca, sessions, coordinator, campaigns, rechains, trustEvaluation, adminDeps } = plane;
    return { url, store, ca, sessions, coordinator, app, campaigns, rechains, trust, trustEvaluation, clock, logger, adminDeps, close: () => started.closeAll() };
  } catch (error) {
    await started.closeAll().catch(() => undefined);
    throw error;
  }
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
