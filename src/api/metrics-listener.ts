/**
 * /metrics on a listener of its own (CERTPLANE_METRICS_LISTEN): plain HTTP, no client
 * certificate, for a Prometheus scraper on a private network, as Prometheus deployments
 * expect. The main listener keeps requiring client certificates for everything else; this
 * one answers GET /metrics and nothing more, so what it exposes is only what the metrics
 * already say (instance ids, clusters, dates and verdicts), never an API.
 */
import Fastify from 'fastify';
import type { Logger } from 'pino';
import { CertplaneError } from '../errors.js';
import { ErrorCode } from '../error-catalogue.js';
import { errorHandler, frameworkErrorHandler, sendProblem } from './errors.js';
import { sendExposition, type MetricsSource } from './metrics.js';

/** A started metrics listener. */
export interface MetricsListener {
  /** Where it listens, e.g. http://10.0.0.5:9464. */
  readonly url: string;
  close(): Promise<void>;
}

/** Hosts that mean "every interface": worth a warning, since nothing here authenticates. */
const WILDCARD_HOSTS = new Set(['0.0.0.0', '::', '']);

export function isWildcardHost(host: string): boolean {
  return WILDCARD_HOSTS.has(host);
}

/** Starts the listener on `listen`; a refusal (the port taken, an address not on this host) is METRICS_LISTEN_FAILED naming CERTPLANE_METRICS_LISTEN. */
export async function startMetricsListener(options: { listen: { host: string; port: number }; source: MetricsSource; logger: Logger }): Promise<MetricsListener> {
  const { listen, source, logger } = options;
  const app = Fastify({ loggerInstance: logger.child({ listener: 'metrics' }), disableRequestLogging: true, frameworkErrors: frameworkErrorHandler });
  app.setErrorHandler(errorHandler);
  app.get('/metrics', async (request, reply) => sendExposition(reply, source, request.headers['accept-encoding']));
  app.setNotFoundHandler((request, reply) => sendProblem(reply, ErrorCode.NOT_FOUND, `no route ${request.method} ${request.url.split('?')[0]} on the metrics listener: it serves GET /metrics only`));
  try {
    const url = await app.listen({ host: listen.host, port: listen.port });
    return { url, close: () => app.close() };
  } catch (cause) {
    await app.close().catch(() => undefined);
    const errno = (cause as NodeJS.ErrnoException).code ?? (cause as Error).message;
    const hint = errno === 'EADDRINUSE' ? 'another process holds the port: stop it or choose another CERTPLANE_METRICS_LISTEN' : 'check CERTPLANE_METRICS_LISTEN';
    throw new CertplaneError(ErrorCode.METRICS_LISTEN_FAILED, `cannot listen for metrics on ${listen.host}:${listen.port} (${errno}): ${hint}`, { host: listen.host, port: listen.port, errno }, { cause });
  }
}
