/**
 * The management plane's HTTP surface: Fastify with zod schemas through the type
 * provider, one plugin per concern (instances, certificates, agents, operations), and
 * the agent channel's WebSocket upgrade. This is the only room where HTTP lives; the
 * rooms behind it receive plain values and a WebSocket.
 */
import fastifySwagger from '@fastify/swagger';
import Fastify, { type FastifyInstance } from 'fastify';
import { jsonSchemaTransform, jsonSchemaTransformObject, serializerCompiler, validatorCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod';
import type { Logger } from 'pino';
import type { Server as TlsServer } from 'node:tls';
import { WebSocketServer } from 'ws';
import type { AgentCa } from '../fleet/ca.js';
import type { IssuanceCoordinator } from '../fleet/issuance.js';
import type { Revocations } from '../fleet/revocation.js';
import type { Campaigns } from '../jobs/campaigns.js';
import type { LiveTrust } from '../config/trust.js';
import type { TrustEvaluation } from '../jobs/trust.js';
import { CHANNEL_PATH, MAX_MESSAGE_BYTES } from '../channel/protocol.js';
import type { SessionRegistry } from '../fleet/sessions.js';
import type { Store } from '../store/types.js';
import { refusePrivateKey } from '../untrusted-text.js';
import { authenticate, peerFingerprint } from './auth.js';
import { DEFAULT_HANDSHAKE_LIMITS, limitHandshakes, type HandshakeLimits } from './handshakes.js';
import type { PageCursors } from './cursors.js';
import { errorHandler, frameworkErrorHandler, sendProblem } from './errors.js';
import { agentRoutes } from './routes/agents.js';
import { certificateRoutes } from './routes/certificates.js';
import { instanceRoutes } from './routes/instances.js';
import { operationsRoutes } from './routes/operations.js';
import { reissueRoutes } from './routes/reissues.js';
import { ErrorCode } from '../error-catalogue.js';
import { whatIfRoutes } from './routes/whatif.js';
import type { MetricsSource } from './metrics.js';

export interface ApiDependencies {
  readonly store: Store;
  readonly coordinator: Pick<IssuanceCoordinator, 'requestIssue' | 'restartIssuance'>;
  /** Revokes certificates at the CA and decommissions instances. */
  readonly revocations: Pick<Revocations, 'revoke' | 'decommission'>;
  readonly campaigns: Campaigns;
  /** Seals and opens the listing's page cursors (HMAC key from the secret store). */
  readonly cursors: PageCursors;
  readonly sessions: Pick<SessionRegistry, 'accept' | 'get'>;
  readonly ca: AgentCa;
  /** The trust settings in force: which profiles an instance may list. */
  readonly trust: Pick<LiveTrust, 'current'>;
  /** What-if over the fleet's stored chains. */
  readonly trustEvaluation: Pick<TrustEvaluation, 'whatIf'>;
  /** The process's and the fleet's metrics (./metrics.ts), for /metrics. */
  readonly metrics: MetricsSource;
  readonly logger: Logger;
  readonly clock: () => Date;
  /** How long an enrollment token stays usable. */
  readonly enrollmentTtlMs: number;
  /** Server certificate and key (PEM) for HTTPS; plain HTTP when absent (development mode only). */
  readonly tls?: { readonly certPem: string; readonly keyPem: string };
  /** The URL agents and clients are told to use (CERTPLANE_PUBLIC_URL), which may differ from the bind address. */
  readonly publicUrl?: string;
  /** Distinct hostnames one instance may register: every certificate carries them all (CERTPLANE_MAX_NAMES_PER_CERTIFICATE). */
  readonly maxNamesPerCertificate?: number;
  /** How many TLS handshakes are served at once and how long a connection may wait for its turn (./handshakes.ts); the defaults otherwise. */
  readonly handshakes?: HandshakeLimits;
}

export const API_VERSION = '0.1.0';
/** Requests larger than this are refused before parsing; the largest legitimate body is an enrollment CSR. */
export const BODY_LIMIT_BYTES = 64 * 1024;

export async function buildApi(deps: ApiDependencies) {
  const handshakes = deps.handshakes ?? DEFAULT_HANDSHAKE_LIMITS;
  const app = Fastify({
    loggerInstance: deps.logger,
    bodyLimit: BODY_LIMIT_BYTES,
    frameworkErrors: frameworkErrorHandler,
    // Any client certificate passes the handshake; the auth hook answers 401/403 in HTTP.
    // Accepted connections stay unread until the handshake queue hands them to TLS.
    ...(deps.tls ? { https: { cert: deps.tls.certPem, key: deps.tls.keyPem, requestCert: true, rejectUnauthorized: false, pauseOnConnect: true, handshakeTimeout: handshakes.timeoutMs } } : {}),
  }).withTypeProvider<ZodTypeProvider>();
  const handshakeQueue = deps.tls ? limitHandshakes(app.server as unknown as TlsServer, handshakes) : undefined;
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  app.setErrorHandler(errorHandler);
  // Every body is JSON: without this, Fastify's built-in text/plain parser hands a string to
  // the route's schema, which answers 400 where a wrong media type deserves 415.
  app.removeContentTypeParser('text/plain');
  app.addHook('onRequest', authenticate({ store: deps.store, clock: deps.clock, secure: deps.tls !== undefined }));
  // Once for every route, on the parsed values and before any schema: a schema's refusal
  // could echo a field, and a route could store one (a reason goes to campaigns, jobs and the audit trail).
  app.addHook('preValidation', async (request) => refusePrivateKey({ body: request.body, query: request.query, actor: request.headers['x-certplane-actor'] }, 'request'));
  app.setNotFoundHandler((request, reply) => sendProblem(reply, ErrorCode.NOT_FOUND, `no route ${request.method} ${request.url.split('?')[0]}`));
  await app.register(fastifySwagger, {
    openapi: {
      openapi: '3.1.0',
      info: { title: 'certplane management plane', version: API_VERSION, description: 'Certificates on an explicitly chosen, verified chain, delivered to agents on customer instances.' },
      // OpenAPI 3.1's mutualTLS scheme; @fastify/swagger's types predate it.
      components: { securitySchemes: { clientCertificate: { type: 'mutualTLS', description: 'a client certificate registered with a role through the admin console' } as unknown as { type: 'openIdConnect'; openIdConnectUrl: string } } },
      security: [{ clientCertificate: [] }],
    },
    transform: jsonSchemaTransform,
    transformObject: jsonSchemaTransformObject,
  });
  // Each route plugin is given, as its Fastify options, only what it declares it uses.
  const { store, clock, publicUrl } = deps;
  await app.register(instanceRoutes, {
    store,
    coordinator: deps.coordinator,
    revocations: deps.revocations,
    sessions: deps.sessions,
    trust: deps.trust,
    cursors: deps.cursors,
    clock,
    enrollmentTtlMs: deps.enrollmentTtlMs,
    publicUrl,
    maxNamesPerCertificate: deps.maxNamesPerCertificate,
  });
  await app.register(certificateRoutes, { store, revocations: deps.revocations });
  await app.register(agentRoutes, { store, ca: deps.ca, clock, publicUrl });
  await app.register(reissueRoutes, { store, campaigns: deps.campaigns });
  await app.register(whatIfRoutes, { store, trustEvaluation: deps.trustEvaluation, cursors: deps.cursors, clock });
  await app.register(operationsRoutes, { store, metrics: deps.metrics });
  const channel = attachChannel(app.server, deps);
  app.addHook('onClose', async () => {
    handshakeQueue?.close();
    for (const client of channel.clients) client.terminate();
    channel.close();
  });
  return app;
}

/** Hands WebSocket upgrades on the channel path to the agents room; refuses every other upgrade. */
function attachChannel(server: FastifyInstance['server'], deps: ApiDependencies): WebSocketServer {
  const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_MESSAGE_BYTES });
  server.on('upgrade', (request, socket, head) => {
    const path = (request.url ?? '').split('?')[0];
    if (path !== CHANNEL_PATH) {
      socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n');
      return;
    }
    const peer = peerFingerprint(request.socket);
    if (deps.tls && !peer) {
      socket.end('HTTP/1.1 401 Unauthorized\r\nConnection: close\r\n\r\n');
      return;
    }
    wss.handleUpgrade(request, socket, head, (ws) => deps.sessions.accept(ws, request.socket.remoteAddress ?? 'unknown', peer?.fingerprintSha256));
  });
  return wss;
}
