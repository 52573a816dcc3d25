/**
 * Agents on one management-plane process, at fleet scale, for `npm run bench` (alone:
 * `node dist/test/bench/agents.js`): `count` real agents (agent-swarm.ts, in worker
 * processes, so the plane's process holds the plane alone) enroll, then all start at once
 * and connect over real TLS with their client certificates and real WebSockets
 * (`BENCH_AGENTS_TLS=0`: plain HTTP); the plane is restarted and the time until every agent
 * is authenticated again is measured (the reconnect storm, paced only by the agents' own
 * jittered backoff). "Authenticated" is counted where it happens last, by each agent
 * receiving the plane's welcome on its open connection, and checked against the plane's
 * `certplane_agents_connected` gauge at the end of each phase.
 * Reported: connect rate, the plane's RSS in total and per agent, the plane's event-loop
 * delay over each phase (max and p99, from perf_hooks.monitorEventLoopDelay through
 * prom-client, reset at each scrape: the bench scrapes once before and once after each
 * phase, since a scrape reads the whole fleet), and the restart's times. Every wait is
 * bounded; the bench stops by itself.
 *
 * Enrolling 10,000 agents takes minutes, so BENCH_AGENTS_KEEP=DIR keeps the enrolled fleet
 * between runs: the plane's store (the PGlite directory, or a PostgreSQL database named after
 * DIR), its secrets (the agent CA), the listener's TLS material and port, the bench's client
 * certificate and the agents' state directories all live in DIR. A later run with the same
 * count, engine and TLS setting skips registration and enrollment (and says so): the agents
 * load their identities from their state directories as a restarted agent does, and connect
 * to the real `certplane serve` over real TLS with their real client certificates. Any other
 * run starts the fleet afresh in DIR.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join, resolve as resolvePath } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EKU, generateKeyPair, issueCertificate, loopbackServerCertificate } from '../../src/pki/factory.js';
import { sendHttp } from '../../src/http-client.js';
import { certplane, scratch } from '../support/cli.js';
import { freePort } from '../support/ports.js';
import { freshPostgresDatabase, namedPostgresDatabase } from '../support/postgres.js';
import { eventually, startCertplane, type RunningProcess } from '../support/processes.js';
import type { SwarmCommand, SwarmReply } from './agent-swarm.js';

const line = (label: string, value: string) => process.stdout.write(`${label.padEnd(58)} ${value}\n`);
/** Longest any phase may take before the bench gives up (and says so). */
const PHASE_LIMIT_MS = Number(process.env.BENCH_AGENTS_PHASE_LIMIT_MS ?? 30 * 60_000);
const WORKERS = Number(process.env.BENCH_AGENT_WORKERS ?? 2);
const TLS = process.env.BENCH_AGENTS_TLS !== '0';
/** Instance registrations in flight at once. */
const REGISTER_CONCURRENCY = 16;
const MiB = (kib: number) => `${(kib / 1024).toFixed(0)} MiB`;

/** What a kept fleet (BENCH_AGENTS_KEEP) was enrolled with, in DIR/fleet.json, written once every agent has enrolled. */
interface KeptFleet {
  readonly count: number;
  readonly engine: 'pglite' | 'postgres';
  readonly tls: boolean;
  /** The agents' identities name the plane's URL, so the plane listens on the same port again. */
  readonly port: number;
}
/** Where a kept fleet lives, and the fleet when an earlier run enrolled one that fits this run. */
interface Keep {
  readonly dir: string;
  readonly engine: KeptFleet['engine'];
  readonly kept: KeptFleet | undefined;
}
/** Everything a kept fleet's directory may hold: a new fleet removes these, and nothing else. */
const KEPT_ENTRIES = ['fleet.json', 'db', 'secrets', 'agents', 'listener-ca.pem', 'server.pem', 'server.key', 'bench-client.pem', 'bench-client.key'];

async function rssKiB(pid: number, field: 'VmRSS' | 'VmHWM' = 'VmRSS'): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)?.[1] ?? 0);
}

/** CPU seconds (user + system) a process has used so far, from /proc (clock ticks of 1/100 s). */
async function cpuSeconds(pid: number): Promise<number> {
  const fields = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** One worker process of the load generator, answering each command once. */
function startWorker(): { child: ChildProcess; ask(command: SwarmCommand): Promise<SwarmReply> } {
  // BENCH_SWARM_NODE_OPTIONS profiles the load generator as BENCH_PLANE_NODE_OPTIONS does the plane (profiles named swarm-PID).
  const env = process.env.BENCH_SWARM_NODE_OPTIONS ? { ...process.env, NODE_OPTIONS: process.env.BENCH_SWARM_NODE_OPTIONS, BENCH_CPU_PROFILE_NAME: 'swarm' } : process.env;
  const child = fork(fileURLToPath(new URL('./agent-swarm.js', import.meta.url)), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], env });
  return {
    child,
    ask: (command) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`agent worker did not answer ${command.type} within ${PHASE_LIMIT_MS} ms`)), PHASE_LIMIT_MS);
        child.once('message', (message: SwarmReply) => {
          clearTimeout(timer);
          if (message.type === 'failed') reject(new Error(`agent worker: ${message.message}`));
          else resolve(message);
        });
        child.send(command);
      }),
  };
}

/** HTTP(S) to the plane, with the bench's client certificate under TLS. */
type Call = (method: string, path: string, body?: unknown) => Promise<{ status: number; text: string }>;

/**
 * The plane's view of itself from /metrics: agents connected, and the event-loop delay
 * since the previous scrape (prom-client resets its monitorEventLoopDelay histogram at each).
 */
async function scrape(call: Call): Promise<{ connected: number; lagMaxMs: number; lagP99Ms: number; heapUsedMiB: number; externalMiB: number }> {
  const { text } = await call('GET', '/metrics');
  const value = (name: string) => Number(new RegExp(`^${name} ([0-9.e+-]+)$`, 'm').exec(text)?.[1] ?? 0);
  return { connected: value('certplane_agents_connected'), lagMaxMs: value('nodejs_eventloop_lag_max_seconds') * 1000, lagP99Ms: value('nodejs_eventloop_lag_p99_seconds') * 1000, heapUsedMiB: value('nodejs_heap_size_used_bytes') / 2 ** 20, externalMiB: value('nodejs_external_memory_bytes') / 2 ** 20 };
}

/**
 * Waits until all `count` agents say they are authenticated, asking the workers every
 * 250 ms and sampling the plane's RSS (from /proc, which costs the plane nothing); then one
 * scrape gives the event-loop delay over the whole phase and the plane's own count.
 */
async function untilAuthenticated(plane: RunningProcess, workers: readonly Worker[], call: Call, count: number): Promise<{ peakRssKiB: number; lagMaxMs: number; lagP99Ms: number; planeCounted: number; redials: number; endings: Record<string, number> }> {
  let peakRssKiB = 0;
  let authenticated = 0;
  let redials = 0;
  const endings: Record<string, number> = {};
  await eventually(
    async () => {
      peakRssKiB = Math.max(peakRssKiB, await rssKiB(plane.child.pid as number));
      const replies = await Promise.all(workers.map((worker) => worker.ask({ type: 'count' })));
      authenticated = replies.reduce((sum, reply) => sum + (reply.type === 'counted' ? reply.authenticated : 0), 0);
      redials = replies.reduce((sum, reply) => sum + (reply.type === 'counted' ? reply.redials : 0), 0);
      for (const key of Object.keys(endings)) delete endings[key];
      for (const reply of replies) if (reply.type === 'counted') for (const [kind, n] of Object.entries(reply.endings)) endings[kind] = (endings[kind] ?? 0) + n;
      return authenticated >= count ? true : undefined;
    },
    PHASE_LIMIT_MS,
    250,
    `${count} agents to be authenticated`,
  ).catch((error: unknown) => {
    throw new Error(`${(error as Error).message} (${authenticated} were, the RSS peaked at ${MiB(peakRssKiB)})`);
  });
  const seen = await scrape(call);
  return { peakRssKiB, lagMaxMs: seen.lagMaxMs, lagP99Ms: seen.lagP99Ms, planeCounted: seen.connected, redials, endings };
}

type Worker = ReturnType<typeof startWorker>;

/**
 * `count` agents on one plane process (`databaseUrl`: PGlite in a directory by default),
 * connected, then reconnected after a restart. `label` names the engine in the heading.
 */
export async function benchAgentFleet(count: number, databaseUrl?: string, label = databaseUrl ? 'PostgreSQL' : 'PGlite directory', keep?: Keep): Promise<void> {
  const dir = await scratch('certplane-bench-fleet-');
  /** The plane's store, secrets and TLS material and the agents' state: kept in BENCH_AGENTS_KEEP, else in the scratch directory. */
  const home = keep?.dir ?? dir.dir;
  const at = (name: string) => join(home, name);
  const write = async (name: string, text: string, mode = 0o644) => {
    await writeFile(at(name), text, { mode });
    return at(name);
  };
  const kept = keep?.kept;
  const port = kept?.port ?? (await freePort());
  if (kept && !(await portIsFree(port))) throw new Error(`the kept fleet in ${home} was enrolled against port ${port}, which is in use now; free it or start a new fleet`);
  const url = `${TLS ? 'https' : 'http'}://127.0.0.1:${port}`;
  const adminSocket = dir.path('admin.sock');
  const agentDirs = Array.from({ length: count }, (_, i) => join(at('agents'), `agent-${i}`));
  let serverCaPem: string | undefined;
  let tlsEnv: Record<string, string> = { CERTPLANE_INSECURE_HTTP: '1' };
  let clientTls: { ca: string; cert: string; key: string } | undefined;
  if (TLS && kept) {
    serverCaPem = await readFile(at('listener-ca.pem'), 'utf8');
    tlsEnv = { CERTPLANE_TLS_CERT: at('server.pem'), CERTPLANE_TLS_KEY: at('server.key') };
    clientTls = { ca: serverCaPem, cert: await readFile(at('bench-client.pem'), 'utf8'), key: await readFile(at('bench-client.key'), 'utf8') };
  } else if (TLS) {
    const listener = await loopbackServerCertificate('bench listener CA');
    serverCaPem = listener.caPem;
    await write('listener-ca.pem', listener.caPem);
    tlsEnv = { CERTPLANE_TLS_CERT: await write('server.pem', listener.certPem), CERTPLANE_TLS_KEY: await write('server.key', listener.keyPem, 0o600) };
    const clientKey = await generateKeyPair();
    const client = await issueCertificate({ subject: 'CN=bench', key: clientKey, extendedKeyUsage: [EKU.clientAuth] });
    clientTls = { ca: listener.caPem, cert: client.pem, key: clientKey.privateKeyPem };
    await write('bench-client.pem', client.pem);
    await write('bench-client.key', clientKey.privateKeyPem, 0o600);
  }
  const call: Call = (method, path, body) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    return sendHttp(new URL(path, url), { method, headers: payload ? { 'content-type': 'application/json' } : {}, ...(payload ? { body: payload } : {}), ...(clientTls ? { tls: clientTls } : {}), timeoutMs: 120_000 });
  };
  const env = {
    ...tlsEnv,
    CERTPLANE_LISTEN: `127.0.0.1:${port}`,
    CERTPLANE_LOG_LEVEL: 'warn',
    CERTPLANE_DATABASE_URL: databaseUrl ?? `pglite:${at('db')}`,
    CERTPLANE_SECRETS: `file:${at('secrets')}`,
    CERTPLANE_ADMIN_SOCKET: adminSocket,
    // BENCH_PLANE_NODE_OPTIONS profiles the plane, e.g. "--heap-prof --heap-prof-dir=/tmp/prof" (written when it stops).
    ...(process.env.BENCH_PLANE_NODE_OPTIONS ? { NODE_OPTIONS: process.env.BENCH_PLANE_NODE_OPTIONS } : {}),
    ...(process.env.BENCH_CPU_PROFILE_DIR ? { BENCH_CPU_PROFILE_DIR: process.env.BENCH_CPU_PROFILE_DIR } : {}),
  };
  const start = async () => {
    const started = performance.now();
    const plane = startCertplane(['serve'], env);
    await eventually(async () => ((await call('GET', '/healthz').catch(() => ({ status: 0 }))).status === 200 ? true : undefined), PHASE_LIMIT_MS, 200, 'the plane to start');
    return { plane, seconds: (performance.now() - started) / 1000 };
  };
  let { plane } = await start();
  const workers = Array.from({ length: WORKERS }, startWorker);
  const ofWorker = <T>(items: readonly T[], w: number) => items.filter((_, i) => i % WORKERS === w);
  try {
    if (kept) {
      const loading = performance.now();
      await Promise.all(workers.map((worker, w) => worker.ask({ type: 'load', dirs: ofWorker(agentDirs, w), ...(serverCaPem ? { serverCaPem } : {}) })));
      process.stdout.write(`\nagents on one management-plane process (${count} real agents in ${WORKERS} worker processes, ${label}, ${TLS ? 'TLS with client certificates' : 'plain HTTP'})\n`);
      line('  kept fleet (BENCH_AGENTS_KEEP): registration, enrollment', `skipped: ${count} enrolled by an earlier run in ${home}; identities loaded in ${((performance.now() - loading) / 1000).toFixed(1)} s`);
    } else {
      await registerAndEnroll();
    }
    await measure();
  } finally {
    await Promise.all(workers.map((worker) => worker.ask({ type: 'stop' }).catch(() => undefined)));
    for (const worker of workers) worker.child.kill();
    await plane.stop();
    await dir.remove();
  }

  async function registerAndEnroll(): Promise<void> {
    if (TLS) {
      const registered = await certplane(['admin', '--socket', adminSocket, 'register-client', '--name', 'bench', '--role', 'operator', '--cert-file', at('bench-client.pem'), '--reason', 'bench']);
      if (registered.code !== 0) throw new Error(`registering the bench's client certificate: ${registered.stderr}`);
    }
    const registering = performance.now();
    const tokens: string[] = [];
    let next = 0;
    await Promise.all(
      Array.from({ length: REGISTER_CONCURRENCY }, async () => {
        while (next < count) {
          const i = next++;
          const response = await call('POST', '/v1/instances', { name: `fleet${i}`, hostnames: [`fleet${i}.bench.test`], autoIssue: false });
          if (response.status !== 201) throw new Error(`registering instance ${i}: HTTP ${response.status} ${response.text}`);
          tokens[i] = (JSON.parse(response.text) as { enrollmentToken: string }).enrollmentToken;
        }
      }),
    );
    const registeredSeconds = (performance.now() - registering) / 1000;
    const enrolling = performance.now();
    await Promise.all(workers.map((worker, w) => worker.ask({ type: 'enroll', server: url, tokens: ofWorker(tokens, w), dirs: ofWorker(agentDirs, w), ...(serverCaPem ? { serverCaPem } : {}) })));
    // Each figure is printed as soon as it is measured: a run cut short still says what it saw.
    process.stdout.write(`\nagents on one management-plane process (${count} real agents in ${WORKERS} worker processes, ${label}, ${TLS ? 'TLS with client certificates' : 'plain HTTP'})\n`);
    line('  instances registered; agents enrolled', `${count} in ${registeredSeconds.toFixed(0)} s; in ${((performance.now() - enrolling) / 1000).toFixed(0)} s`);
    if (keep) await writeFile(at('fleet.json'), `${JSON.stringify({ count, engine: keep.engine, tls: TLS, port } satisfies KeptFleet)}\n`);
  }

  async function measure(): Promise<void> {
    await new Promise((resolve) => setTimeout(resolve, 2000));
    const baseline = await rssKiB(plane.child.pid as number);
    await scrape(call);

    const cpu = async () => ({ plane: await cpuSeconds(plane.child.pid as number), swarm: (await Promise.all(workers.map((worker) => cpuSeconds(worker.child.pid as number)))).reduce((a, b) => a + b, 0) });
    const cpuBefore = await cpu();
    const connecting = performance.now();
    await Promise.all(workers.map((worker) => worker.ask({ type: 'start' })));
    const connected = await untilAuthenticated(plane, workers, call, count);
    const connectSeconds = (performance.now() - connecting) / 1000;
    line('  all started at once: every agent authenticated', `${connectSeconds.toFixed(1)} s (${(count / connectSeconds).toFixed(0)} /s; the plane counts ${connected.planeCounted}; ${connected.redials} dials failed and were retried)`);
    endingsLine(connected.endings, {});
    const cpuConnected = await cpu();
    line('  event-loop delay during that storm: max, p99', `${connected.lagMaxMs.toFixed(0)} ms, ${connected.lagP99Ms.toFixed(0)} ms`);
    line('  CPU during that storm: plane; the agents\' workers', `${(cpuConnected.plane - cpuBefore.plane).toFixed(1)} s; ${(cpuConnected.swarm - cpuBefore.swarm).toFixed(1)} s`);
    await new Promise((resolve) => setTimeout(resolve, 5000));
    const loaded = await rssKiB(plane.child.pid as number);
    const idle = await scrape(call);
    // The kernel's high-water mark also catches what the samples miss (the scrapes, which read the whole fleet).
    const highWater = await rssKiB(plane.child.pid as number, 'VmHWM');
    line('  plane RSS: enrolled, none connected -> all connected, idle', `${MiB(baseline)} -> ${MiB(loaded)} (peak sampled ${MiB(connected.peakRssKiB)}, high-water mark ${MiB(highWater)}: ${highWater < 1024 * 1024 ? 'under' : 'OVER'} 1 GiB)`);
    line('  RSS per connected agent; JS heap used, external (idle)', `${((loaded - baseline) / count).toFixed(1)} KiB; ${idle.heapUsedMiB.toFixed(0)} MiB, ${idle.externalMiB.toFixed(0)} MiB`);
    line('  event-loop delay, all connected and idle for 5 s: max, p99', `${idle.lagMaxMs.toFixed(0)} ms, ${idle.lagP99Ms.toFixed(0)} ms`);

    const swarmBefore = (await cpu()).swarm;
    const redialsBefore = connected.redials;
    const stopping = performance.now();
    await plane.stop();
    const stoppedSeconds = (performance.now() - stopping) / 1000;
    const restarted = await start();
    plane = restarted.plane;
    line('  restart: SIGTERM -> exited; start -> serving', `${stoppedSeconds.toFixed(1)} s; ${restarted.seconds.toFixed(1)} s`);
    await scrape(call);
    const reconnected = await untilAuthenticated(plane, workers, call, count);
    const reconnectSeconds = (performance.now() - stopping) / 1000;
    const after = await rssKiB(plane.child.pid as number);
    line('  restart: SIGTERM -> every agent authenticated again', `${reconnectSeconds.toFixed(1)} s (${(reconnectSeconds - stoppedSeconds - restarted.seconds).toFixed(1)} s after serving; the plane counts ${reconnected.planeCounted}; ${reconnected.redials - redialsBefore} dials ended and were retried, the plane's downtime included)`);
    endingsLine(reconnected.endings, connected.endings);
    line('  CPU from the restart on: new plane; the agents\' workers', `${(await cpuSeconds(plane.child.pid as number)).toFixed(1)} s; ${((await cpu()).swarm - swarmBefore).toFixed(1)} s`);
    const afterHighWater = await rssKiB(plane.child.pid as number, 'VmHWM');
    line('  reconnect storm: event-loop delay max, p99; RSS peak', `${reconnected.lagMaxMs.toFixed(0)} ms, ${reconnected.lagP99Ms.toFixed(0)} ms; ${MiB(reconnected.peakRssKiB)} sampled, high-water mark ${MiB(afterHighWater)} (${afterHighWater < 1024 * 1024 ? 'under' : 'OVER'} 1 GiB; then ${MiB(after)})`);
  }
}

/** The commonest reasons dials ended in a phase (the agents' counts now, less those before it). */
function endingsLine(now: Record<string, number>, before: Record<string, number>): void {
  const phase = Object.entries(now)
    .map(([kind, n]) => [kind, n - (before[kind] ?? 0)] as const)
    .filter(([, n]) => n > 0)
    .sort((a, b) => b[1] - a[1]);
  if (phase.length > 0) line('    dials ended, commonest reasons', phase.slice(0, 4).map(([kind, n]) => `${n} ${kind}`).join('; '));
}

function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/**
 * benchAgentFleet on BENCH_AGENTS_DATABASE_URL, else on BENCH_AGENTS_ENGINE (`pglite`, a
 * directory, by default; `postgres`: a fresh database on the local server, dropped after),
 * with the fleet kept in BENCH_AGENTS_KEEP when set.
 */
export async function benchAgentFleetOn(count: number): Promise<void> {
  const keepDir = process.env.BENCH_AGENTS_KEEP && resolvePath(process.env.BENCH_AGENTS_KEEP);
  if (process.env.BENCH_AGENTS_DATABASE_URL) {
    if (keepDir) throw new Error('BENCH_AGENTS_KEEP keeps a PGlite directory or a database on the local PostgreSQL (BENCH_AGENTS_ENGINE), not BENCH_AGENTS_DATABASE_URL');
    return benchAgentFleet(count, process.env.BENCH_AGENTS_DATABASE_URL);
  }
  const engine = process.env.BENCH_AGENTS_ENGINE === 'postgres' ? 'postgres' : 'pglite';
  if (keepDir) return benchKeptFleet(count, keepDir, engine);
  if (engine !== 'postgres') return benchAgentFleet(count);
  const database = await freshPostgresDatabase('certplane_bench');
  try {
    await benchAgentFleet(count, database.url);
  } finally {
    await database.drop();
  }
}

/**
 * The fleet kept in `dir`: reused when an earlier run enrolled one of this count, engine and
 * TLS setting, else started afresh there (the earlier fleet's files and database removed).
 * The PostgreSQL database is named after the directory, so two kept fleets never share one.
 */
async function benchKeptFleet(count: number, dir: string, engine: Keep['engine']): Promise<void> {
  await mkdir(dir, { recursive: true });
  const strangers = (await readdir(dir)).filter((name) => !KEPT_ENTRIES.includes(name));
  if (strangers.length > 0) throw new Error(`BENCH_AGENTS_KEEP=${dir} holds files no kept fleet writes (${strangers.slice(0, 3).join(', ')}); give an empty or new directory`);
  const earlier = await readFile(join(dir, 'fleet.json'), 'utf8').then((text) => JSON.parse(text) as KeptFleet, () => undefined);
  const kept = earlier?.count === count && earlier.engine === engine && earlier.tls === TLS ? earlier : undefined;
  if (!kept) await Promise.all(KEPT_ENTRIES.map((name) => rm(join(dir, name), { recursive: true, force: true })));
  if (engine !== 'postgres') return benchAgentFleet(count, undefined, undefined, { dir, engine, kept });
  const name = `certplane_bench_kept_${createHash('sha256').update(dir).digest('hex').slice(0, 12)}`;
  let database = await namedPostgresDatabase(name);
  if (!kept && !database.created) {
    await database.drop();
    database = await namedPostgresDatabase(name);
  }
  if (kept && database.created) {
    await database.drop();
    throw new Error(`the kept fleet in ${dir} lives in PostgreSQL database ${name}, which is gone; remove ${join(dir, 'fleet.json')} to start afresh`);
  }
  await benchAgentFleet(count, database.url, 'PostgreSQL', { dir, engine, kept });
}
