/**
 * What /metrics answers. Two kinds of figures, in Prometheus's naming conventions:
 * - the process's own (agents on its channels, the issuance stages it ran, Node's runtime),
 *   counted in memory because they are about this process;
 * - the fleet's (each instance's certificate dates, readiness and trust verdict, the last
 *   trust reload), read from the database at every scrape, so every process of the plane
 *   reports the same values and a restart resets nothing. Alerts on the fleet therefore
 *   work whichever process is scraped, and several scraped processes agree
 *   (infra/monitoring/certplane-alerts.yml takes `max by (instance_id, cluster)`).
 *
 * Labels are bounded: an instance's id and cluster, nothing a caller writes freely
 * (no names, hostnames or messages), so a series count is the fleet's size times a constant.
 */
import { promisify } from 'node:util';
import { gzip } from 'node:zlib';
import type { FastifyReply } from 'fastify';
import type { Registry } from 'prom-client';
import type { FleetInstanceRecord, Store } from '../store/types.js';
import { mayActOnClusters, type Caller } from './auth.js';

/**
 * What the /metrics routes serve (prom-client's Registry has this shape). `caller`: the
 * authenticated caller on the main listener, whose cluster limits apply; undefined on the
 * metrics listener, which serves the whole fleet to the private network it is bound to.
 */
export interface MetricsSource {
  readonly contentType: string;
  metrics(caller?: Caller): Promise<string>;
}

/**
 * One per-instance gauge: its name, help text and value for an instance at `now`
 * (undefined: no series for that instance, e.g. no certificate installed).
 */
interface InstanceGauge {
  readonly name: string;
  readonly help: string;
  value(instance: FleetInstanceRecord, now: Date): number | undefined;
}

const seconds = (date: Date | null) => (date === null ? undefined : date.getTime() / 1000);

/**
 * Whether the instance can serve TLS as it should: a certificate is installed, it has not
 * expired, and the last trust evaluation found its installed chain verifying in every
 * profile the instance lists.
 */
export function isReady(instance: FleetInstanceRecord, now: Date): boolean {
  return instance.notAfter !== null && instance.notAfter.getTime() > now.getTime() && instance.trustStatus === 'ok';
}

/**
 * The per-instance gauges, each from the columns of the one fleet query
 * (Store.fleet.instances), each series labelled `instance_id` and `cluster`.
 */
export const INSTANCE_GAUGES: readonly InstanceGauge[] = [
  {
    name: 'certplane_certificate_expiry_timestamp_seconds',
    help: 'notAfter of the certificate installed on the instance, as a Unix time; no series while none is installed',
    value: (instance) => seconds(instance.notAfter),
  },
  {
    name: 'certplane_certificate_renewal_timestamp_seconds',
    help: "When the installed certificate is due for renewal (inside the CA's ARI window, else at two thirds of its lifetime), as a Unix time; no series while none is installed",
    value: (instance) => seconds(instance.renewAt),
  },
  {
    name: 'certplane_instance_ready',
    help: '1 when the instance has an installed certificate that has not expired and whose installed chain verifies in every trust profile it lists (as last judged), else 0',
    value: (instance, now) => (isReady(instance, now) ? 1 : 0),
  },
  {
    name: 'certplane_instance_chain_broken',
    help: "1 when the installed chain fails in one of the instance's trust profiles as last judged (a trust reload, or the installation), 0 when it verifies in all; no series while nothing installed was judged",
    value: (instance) => (instance.trustStatus === null ? undefined : instance.trustStatus === 'broken' ? 1 : 0),
  },
  {
    name: 'certplane_instance_served_match',
    help: "1 when the instance's service served the installed certificate on a chain that verifies in its trust profiles when its agent last probed it (`--probe`), 0 when it served another certificate (stale), a chain that does not verify (wrong-chain) or could not be reached; no series while never probed",
    value: (instance) => (instance.servedStatus === null ? undefined : instance.servedStatus === 'match' ? 1 : 0),
  },
];

/** A label value or help text in the text exposition format: backslash, newline (and in label values, the double quote) escaped. */
const escapeHelp = (text: string) => text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
const escapeLabel = (text: string) => escapeHelp(text).replace(/"/g, '\\"');

/** One gauge in the text exposition format (version 0.0.4), `series` its label sets and values. */
function gaugeText(name: string, help: string, series: Iterable<readonly [labels: string, value: number]>): string {
  const lines = [`# HELP ${name} ${escapeHelp(help)}`, `# TYPE ${name} gauge`];
  for (const [labels, value] of series) lines.push(`${name}${labels} ${value}`);
  return `${lines.join('\n')}\n`;
}

/**
 * The fleet's gauges, computed from the database at scrape time. Written as exposition
 * text directly rather than through prom-client's Gauge: a 10,000-instance fleet is 40,000
 * series per scrape, and building them as prom-client label sets cost several times the
 * database reads (measured with test/bench/metrics.ts), all of it on the event loop that
 * also serves the agents' channels.
 */
export class FleetMetrics {
  constructor(private readonly deps: { store: Pick<Store, 'fleet'>; clock: () => Date }) {}

  /**
   * This scrape's fleet gauges as exposition text: computed anew each time, so an instance
   * that went away leaves no stale series. A caller limited to clusters sees the instances
   * of its clusters only, and not the reload's counts, which are about the whole fleet.
   */
  async exposition(caller?: Caller): Promise<string> {
    const started = performance.now();
    const [everything, fleetReload] = await Promise.all([this.deps.store.fleet.instances(), this.deps.store.fleet.lastTrustReload()]);
    const queried = (performance.now() - started) / 1000;
    const limited = caller !== undefined && caller.clusters !== null;
    const instances = limited ? everything.filter((instance) => mayActOnClusters(caller, [instance.cluster])) : everything;
    const now = this.deps.clock();
    const labels = instances.map((i) => `{instance_id="${escapeLabel(i.instanceId)}",cluster="${escapeLabel(i.cluster ?? '')}"}`);
    const parts = INSTANCE_GAUGES.map((spec) =>
      gaugeText(
        spec.name,
        spec.help,
        instances.flatMap((instance, index) => {
          const value = spec.value(instance, now);
          return value === undefined ? [] : [[labels[index] as string, value] as const];
        }),
      ),
    );
    const single = (name: string, help: string, value: number) => parts.push(gaugeText(name, help, [['', value]]));
    if (!limited) {
      // Before the first reload there is no time to show; nothing was broken by one either.
      if (fleetReload) single('certplane_trust_reload_timestamp_seconds', 'When the last trust reload (SIGHUP or `certplane admin reload-trust`, by any process) re-judged the installed chains, as a Unix time; no series before the first', fleetReload.at.getTime() / 1000);
      single('certplane_trust_reload_broken_instances', 'Instances whose installed chain the last trust reload found broken in one of their trust profiles', fleetReload?.broken ?? 0);
      single('certplane_trust_reload_alternate_available_instances', 'Of the instances the last trust reload found broken, those with a stored chain of the same certificate that verifies in all their profiles (a rechain mends them without a new order)', fleetReload?.alternateAvailable ?? 0);
    }
    single('certplane_fleet_metrics_query_duration_seconds', "How long this scrape's database reads for the fleet metrics took, in this process", queried);
    return parts.join('');
  }
}

/** The process's registry (prom-client) and the fleet's gauges, served as one exposition. */
export function metricsSource(processRegistry: Registry, fleet: FleetMetrics): MetricsSource {
  return {
    contentType: processRegistry.contentType,
    metrics: async (caller) => {
      const [own, fleetText] = await Promise.all([processRegistry.metrics(), fleet.exposition(caller)]);
      return `${own.trim() === '' ? '' : own.endsWith('\n') ? own : `${own}\n`}${fleetText}`;
    },
  };
}

const gzipAsync = promisify(gzip);

/** Whether an Accept-Encoding header accepts gzip: `gzip` (or `x-gzip`) listed with a weight above zero. */
export function acceptsGzip(header: string | readonly string[] | undefined): boolean {
  const entries = (typeof header === 'string' ? header : (header ?? []).join(',')).split(',');
  return entries.some((entry) => {
    const [coding, ...parameters] = entry.split(';').map((part) => part.trim().toLowerCase());
    if (coding !== 'gzip' && coding !== 'x-gzip') return false;
    const weight = parameters.find((parameter) => parameter.startsWith('q='));
    return weight === undefined || Number(weight.slice(2)) > 0;
  });
}

/**
 * Sends one scrape: gzip-compressed when the scraper's Accept-Encoding allows it (Prometheus
 * sends `gzip`), since a 10,000-instance fleet is 4.8 MB of text and about 1 MB gzipped;
 * plain text otherwise. zlib compresses on libuv's thread pool, not on the event loop that
 * also serves the agents' channels. Both /metrics routes (main listener, metrics listener)
 * answer through this.
 */
export async function sendExposition(reply: FastifyReply, source: MetricsSource, acceptEncoding: string | readonly string[] | undefined, caller?: Caller): Promise<FastifyReply> {
  const text = await source.metrics(caller);
  reply.type(source.contentType).header('vary', 'Accept-Encoding');
  if (!acceptsGzip(acceptEncoding)) return reply.send(text);
  return reply.header('content-encoding', 'gzip').send(await gzipAsync(text));
}
