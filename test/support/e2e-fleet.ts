/**
 * What most end-to-end suites stand up before their case: a real Pebble (with alternate
 * roots when asked), a development-mode `certplane serve` process preferring Pebble's last
 * (or first) root on PGlite or a PostgreSQL database of its own, with trust profiles and a
 * metrics listener when asked, and simulated agents (the real agent code in this process)
 * registered through the API. Suites add their own environment and keep their case; this
 * keeps the set-up, the JSON calls and the tear-down in one place.
 */
import { join } from 'node:path';
import { parseCertificateBundle, type Certificate } from '../../src/chain/index.js';
import { startPebble, type LocalPebble } from '../../src/devenv/pebble.js';
import { pebbleVerdict } from './pebble-deadlock.js';
import { startAcmeProxy, type AcmeProxy } from './acme-proxy.js';
import { scratch } from './cli.js';
import { startSimulatedAgent, type SimulatedAgent } from './fleet.js';
import { freeLoopbackPorts } from '../../src/devenv/ports.js';
import { freshPostgresDatabase } from './postgres.js';
import { eventually, localPlaneEnv, startCertplane, type RunningProcess } from './processes.js';

export interface E2eFleetOptions {
  /** Prefix of the scratch directory (state, secrets, agents' state). */
  readonly prefix: string;
  /** Pebble's alternate roots; the plane prefers the last root Pebble offers. */
  readonly alternateRoots?: number;
  /** Put an ACME proxy that hides ARI in front of Pebble (renewal times then follow the lifetime rule). */
  readonly withoutAri?: boolean;
  /** A PostgreSQL database of the suite's own instead of PGlite. */
  readonly postgres?: boolean;
  /**
   * The root the plane prefers and its trust store (profile `default`) holds: Pebble's last
   * unless told (its first is the root of Pebble's default chain). Its PEM is at `path('root.pem')`.
   */
  readonly preferredRoot?: 'first' | 'last';
  /**
   * Trust profiles by name, PEM given Pebble's roots: each is written to `trustProfilePath(name)`,
   * where a suite rewrites it before a trust reload; `default` replaces the trust store.
   */
  readonly trustProfiles?: (roots: Certificate[]) => Record<string, string> | Promise<Record<string, string>>;
  /** A plain-HTTP metrics listener (CERTPLANE_METRICS_LISTEN) on a port of its own, scraped at `metricsUrl`. */
  readonly metrics?: boolean;
  /** What the simulated agents trust: the preferred root (the default), or every Pebble root for instances whose chain moves to another root. */
  readonly agentsTrust?: 'preferred' | 'every-root';
  /** Environment added to the plane's, given the scratch directory, Pebble's roots and the preferred one (files it names may be written here). */
  readonly env?: (context: { dir: string; roots: Certificate[]; preferred: Certificate }) => Record<string, string> | Promise<Record<string, string>>;
}

export interface E2eFleet {
  readonly dir: string;
  /** Writes `name` in the scratch directory (with exactly `mode` when given) and returns its path. */
  write(name: string, text: string, mode?: number): Promise<string>;
  /** The path of `name` in the scratch directory. */
  path(name: string): string;
  readonly pebble: LocalPebble;
  /** Pebble's roots, in its order. */
  readonly roots: Certificate[];
  /** The ARI-hiding proxy in front of Pebble, when asked for (`withoutAri`): it counts what reached the CA. */
  readonly proxy: AcmeProxy | undefined;
  readonly preferred: Certificate;
  readonly api: string;
  /** The metrics listener's /metrics, when asked for (`metrics`). */
  readonly metricsUrl: string | undefined;
  /** The file of a trust profile given in `trustProfiles`. */
  trustProfilePath(name: string): string;
  readonly databaseUrl: string | undefined;
  /** The plane process now (a new one after `restartPlane`). */
  readonly plane: RunningProcess;
  /** Every line of every plane process so far, in order. */
  planeLines(): string[];
  readonly agents: SimulatedAgent[];
  /** One API call as the on-call actor; the body is parsed JSON. */
  json(method: string, path: string, body?: unknown): Promise<{ status: number; body: Record<string, any> }>;
  /** Registers an instance (POST /v1/instances, which must answer 201) and starts its agent with the returned token. */
  enroll(instance: Record<string, unknown>): Promise<SimulatedAgent>;
  /** Resolves once the API shows every agent started so far as connected. */
  allConnected(timeoutMs?: number): Promise<void>;
  /** Stops the plane with `signal` and starts another on the same state. */
  restartPlane(signal?: NodeJS.Signals): Promise<void>;
  /** For a stalled run's report: whether Pebble deadlocked (test/support/pebble-deadlock.ts); Pebble is gone afterwards. */
  pebbleVerdict(): Promise<string>;
  stop(): Promise<void>;
}

const LISTENING_TIMEOUT_MS = 120_000;

export async function startE2eFleet(options: E2eFleetOptions): Promise<E2eFleet> {
  const dir = await scratch(options.prefix);
  const pebble = await startPebble({ ...(options.alternateRoots ? { alternateRoots: options.alternateRoots } : {}), logFile: dir.path('pebble.log') });
  let proxy: AcmeProxy | undefined;
  let database: { url: string; drop: () => Promise<void> } | undefined;
  let plane: RunningProcess | undefined;
  const earlierLines: string[] = [];
  const agents: SimulatedAgent[] = [];
  const stop = async () => {
    await Promise.all(agents.map((agent) => agent.client.stop()));
    await plane?.stop();
    await proxy?.close();
    await pebble.stop();
    await database?.drop();
    await dir.remove();
  };
  try {
    const roots = (await pebble.roots()).map((text) => parseCertificateBundle(text)[0]!);
    const preferred = options.preferredRoot === 'first' ? roots[0]! : roots[roots.length - 1]!;
    await dir.write('root.pem', preferred.pem);
    const trustProfilePath = (name: string) => dir.path(`trust-${name}.pem`);
    const profiles = Object.entries((await options.trustProfiles?.(roots)) ?? {});
    for (const [name, pem] of profiles) await dir.write(`trust-${name}.pem`, pem);
    const furtherProfiles = profiles.filter(([name]) => name !== 'default').map(([name]) => [name, trustProfilePath(name)]);
    if (options.withoutAri) {
      proxy = await startAcmeProxy({ upstreamDirectoryUrl: pebble.directoryUrl, upstreamCaPem: pebble.acmeServerCaPem, renewalInfo: false });
      await dir.write('proxy-ca.pem', proxy.caPem);
    }
    if (options.postgres) database = await freshPostgresDatabase(`certplane_${options.prefix.replace(/[^a-z]/g, '')}`);
    const [port, metricsPort] = (await freeLoopbackPorts(options.metrics ? 2 : 1)) as [number, number?];
    const api = `http://127.0.0.1:${port}`;
    const env = {
      ...localPlaneEnv({
        port,
        dir: dir.dir,
        ...(database ? { databaseUrl: database.url } : {}),
        directoryUrl: proxy?.directoryUrl ?? pebble.directoryUrl,
        acmeCaPath: proxy ? join(dir.dir, 'proxy-ca.pem') : pebble.acmeServerCaPath,
        preferredRootCN: preferred.subjectCN,
        trustStorePath: profiles.some(([name]) => name === 'default') ? trustProfilePath('default') : join(dir.dir, 'root.pem'),
        challtestsrvUrl: pebble.challtestsrvUrl,
      }),
      ...(furtherProfiles.length > 0 ? { CERTPLANE_TRUST_PROFILES: JSON.stringify(Object.fromEntries(furtherProfiles)) } : {}),
      ...(metricsPort ? { CERTPLANE_METRICS_LISTEN: `127.0.0.1:${metricsPort}` } : {}),
      ...(await options.env?.({ dir: dir.dir, roots, preferred })),
    };
    const startPlane = async () => {
      plane = startCertplane(['serve'], env);
      await plane.waitForLine((line) => line.includes('management plane listening'), LISTENING_TIMEOUT_MS);
    };
    await startPlane();
    const json = async (method: string, path: string, body?: unknown) => {
      const response = await fetch(`${api}${path}`, {
        method,
        headers: { ...(body ? { 'content-type': 'application/json' } : {}), 'x-certplane-actor': 'on-call test' },
        body: body ? JSON.stringify(body) : undefined,
      });
      return { status: response.status, body: (await response.json()) as Record<string, any> };
    };
    return {
      dir: dir.dir,
      write: dir.write,
      path: dir.path,
      pebble,
      pebbleVerdict: () => pebbleVerdict(pebble, dir.path('pebble.log')),
      roots,
      proxy,
      preferred,
      api,
      metricsUrl: metricsPort ? `http://127.0.0.1:${metricsPort}/metrics` : undefined,
      trustProfilePath,
      databaseUrl: database?.url,
      get plane() {
        return plane!;
      },
      planeLines: () => [...earlierLines, ...plane!.lines],
      agents,
      json,
      async enroll(instance) {
        const created = await json('POST', '/v1/instances', instance);
        if (created.status !== 201) throw new Error(`POST /v1/instances answered ${created.status}: ${JSON.stringify(created.body)}`);
        const agent = await startSimulatedAgent({ server: api, token: created.body.enrollmentToken, stateDir: join(dir.dir, `agent-${agents.length}`), trustAnchors: options.agentsTrust === 'every-root' ? roots : [preferred] });
        agents.push(agent);
        return agent;
      },
      async allConnected(timeoutMs = 60_000) {
        await eventually(async () => {
          const connected = await Promise.all(agents.map(async (agent) => (await json('GET', `/v1/instances/${agent.instanceId}`)).body.agent.connected));
          return connected.every(Boolean) ? true : undefined;
        }, timeoutMs, 250, 'every agent to connect');
      },
      async restartPlane(signal = 'SIGTERM') {
        // Stopped first: lines still in the pipe when it dies are kept.
        await plane!.stop(signal);
        earlierLines.push(...plane!.lines);
        await startPlane();
      },
      stop,
    };
  } catch (error) {
    await stop().catch(() => undefined);
    throw error;
  }
}
