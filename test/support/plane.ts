/**
 * An in-process management plane on real parts (in-memory PGlite, file secrets, the real
 * agent CA, sessions and coordinator) listening on a loopback port, for API and channel
 * tests that do not need a CA: nothing here orders a certificate unless a test drives a
 * CSR through, and then the ACME directory below refuses the connection (or the test's
 * `acmeDirectoryUrl` answers as it likes).
 */
import pino, { type Logger } from 'pino';
import { Registry } from 'prom-client';
import type { AdminDeps } from '../../src/admin/index.js';
import { AgentCa } from '../../src/agents/ca.js';
import { IssuanceCoordinator } from '../../src/agents/issuance.js';
import { SessionRegistry } from '../../src/agents/sessions.js';
import { AcmeIssuer } from '../../src/acme/issuer.js';
import { buildApi } from '../../src/api/app.js';
import { Campaigns } from '../../src/jobs/campaigns.js';
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
  readonly app: Awaited<ReturnType<typeof buildApi>>;
  /** The same parts the admin console is composed from in `certplane serve`. */
  readonly campaigns: Campaigns;
  readonly clock: () => Date;
  readonly logger: Logger;
  /** What `certplane serve` hands its admin console, from this plane's parts (plain HTTP: no listener certificate to reload). */
  readonly adminDeps: AdminDeps;
  close(): Promise<void>;
}

/** `logger`: silent unless a test reads what the plane logs. */
export async function startTestPlane(options: { heartbeatMs?: number; authTimeoutMs?: number; tls?: { certPem: string; keyPem: string }; acmeDirectoryUrl?: string; logger?: Logger } = {}): Promise<TestPlane> {
  const { tls, acmeDirectoryUrl, logger = pino({ level: 'silent' }), ...sessionOptions } = options;
  const dir = await scratch('certplane-plane-');
  const clock = () => new Date();
  const store = await openStore('memory:');
  const secrets = await FileSecretStore.open(dir.path('secrets'));
  const ca = await AgentCa.loadOrCreate(secrets);
  const sessions = new SessionRegistry({ store, ca, logger, clock, ...sessionOptions });
  const issuer = new AcmeIssuer({
    directoryUrl: acmeDirectoryUrl ?? 'https://127.0.0.1:1/directory',
    secrets,
    solvers: [],
    chainPolicy: { preferences: ['ISRG Root X1'], fallback: 'none', trustAnchors: [], distrustedSpkiSha256: new Set() },
    logger,
  });
  const coordinator = new IssuanceCoordinator({ store, issuer, sessions, logger, clock });
  sessions.setHandler(coordinator);
  const campaigns = new Campaigns({ store, clock, logger });
  const app = await buildApi({ store, coordinator, campaigns, sessions, ca, metrics: new Registry(), logger, clock, enrollmentTtlMs: 60_000, ...(tls ? { tls } : {}) });
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  return {
    url,
    store,
    ca,
    sessions,
    app,
    campaigns,
    clock,
    logger,
    adminDeps: { store, sessions, campaigns, clock, logger },
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

export async function enrollTestAgent(plane: TestPlane, name: string, hostnames = [`${name}.example.com`]): Promise<EnrolledAgent> {
  const created = await plane.app.inject({ method: 'POST', url: '/v1/instances', payload: { name, hostnames } });
  if (created.statusCode !== 201) throw new Error(`registering instance ${name}: ${created.statusCode} ${created.body}`);
  const key = await generateKeyPair();
  const enrolled = await plane.app.inject({ method: 'POST', url: '/v1/agents/enroll', payload: { token: created.json().enrollmentToken, csrPem: await createCsr(key, ['certplane-agent']) } });
  if (enrolled.statusCode !== 201) throw new Error(`enrolling the agent of ${name}: ${enrolled.statusCode} ${enrolled.body}`);
  return { instanceId: created.json().id, keyPem: key.privateKeyPem, certificatePem: enrolled.json().certificatePem };
}
