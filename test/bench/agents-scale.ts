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
 */
import { fork, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { EKU, generateKeyPair, issueCertificate, loopbackServerCertificate } from '../../src/pki/factory.js';
import { sendHttp } from '../../src/http-client.js';
import { certplane, scratch } from '../support/cli.js';
import { freePort } from '../support/ports.js';
import { freshPostgresDatabase } from '../support/postgres.js';
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

async function rssKiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
}

/** CPU seconds (user + system) a process has used so far, from /proc (clock ticks of 1/100 s). */
async function cpuSeconds(pid: number): Promise<number> {
  const fields = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** One worker process of the load generator, answering each command once. */
function startWorker(): { child: ChildProcess; ask(command: SwarmCommand): Promise<SwarmReply> } {
  const child = fork(fileURLToPath(new URL('./agent-swarm.js', import.meta.url)), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
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
async function untilAuthenticated(plane: RunningProcess, workers: readonly Worker[], call: Call, count: number): Promise<{ peakRssKiB: number; lagMaxMs: number; lagP99Ms: number; planeCounted: number; redials: number }> {
  let peakRssKiB = 0;
  let authenticated = 0;
  let redials = 0;
  await eventually(
    async () => {
      peakRssKiB = Math.max(peakRssKiB, await rssKiB(plane.child.pid as number));
      const replies = await Promise.all(workers.map((worker) => worker.ask({ type: 'count' })));
      authenticated = replies.reduce((sum, reply) => sum + (reply.type === 'counted' ? reply.authenticated : 0), 0);
      redials = replies.reduce((sum, reply) => sum + (reply.type === 'counted' ? reply.redials : 0), 0);
      return authenticated >= count ? true : undefined;
    },
    PHASE_LIMIT_MS,
    250,
    `${count} agents to be authenticated`,
  ).catch((error: unknown) => {
    throw new Error(`${(error as Error).message} (${authenticated} were, the RSS peaked at ${MiB(peakRssKiB)})`);
  });
  const seen = await scrape(call);
  return { peakRssKiB, lagMaxMs: seen.lagMaxMs, lagP99Ms: seen.lagP99Ms, planeCounted: seen.connected, redials };
}

type Worker = ReturnType<typeof startWorker>;

/**
 * `count` agents on one plane process (`databaseUrl`: PGlite in a directory by default),
 * connected, then reconnected after a restart. `label` names the engine in the heading.
 */
export async function benchAgentFleet(count: number, databaseUrl?: string, label = databaseUrl ? 'PostgreSQL' : 'PGlite directory'): Promise<void> {
  const dir = await scratch('certplane-bench-fleet-');
  const port = await freePort();
  const url = `${TLS ? 'https' : 'http'}://127.0.0.1:${port}`;
  const adminSocket = dir.path('admin.sock');
  let serverCaPem: string | undefined;
  let tlsEnv: Record<string, string> = { CERTPLANE_INSECURE_HTTP: '1' };
  let clientTls: { ca: string; cert: string; key: string } | undefined;
  if (TLS) {
    const listener = await loopbackServerCertificate('bench listener CA');
    serverCaPem = listener.caPem;
    tlsEnv = { CERTPLANE_TLS_CERT: await dir.write('server.pem', listener.certPem), CERTPLANE_TLS_KEY: await dir.write('server.key', listener.keyPem, 0o600) };
    const clientKey = await generateKeyPair();
    const client = await issueCertificate({ subject: 'CN=bench', key: clientKey, extendedKeyUsage: [EKU.clientAuth] });
    clientTls = { ca: listener.caPem, cert: client.pem, key: clientKey.privateKeyPem };
    await dir.write('bench-client.pem', client.pem);
  }
  const call: Call = (method, path, body) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    return sendHttp(new URL(path, url), { method, headers: payload ? { 'content-type': 'application/json' } : {}, ...(payload ? { body: payload } : {}), ...(clientTls ? { tls: clientTls } : {}), timeoutMs: 120_000 });
  };
  const env = {
    ...tlsEnv,
    CERTPLANE_LISTEN: `127.0.0.1:${port}`,
    CERTPLANE_LOG_LEVEL: 'warn',
    CERTPLANE_DATABASE_URL: databaseUrl ?? `pglite:${dir.path('db')}`,
    CERTPLANE_SECRETS: `file:${dir.path('secrets')}`,
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
  try {
    if (TLS) {
      const registered = await certplane(['admin', '--socket', adminSocket, 'register-client', '--name', 'bench', '--role', 'operator', '--cert-file', dir.path('bench-client.pem'), '--reason', 'bench']);
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
    await Promise.all(workers.map((worker, w) => worker.ask({ type: 'enroll', server: url, tokens: tokens.filter((_, i) => i % WORKERS === w), dir: dir.path('agents'), ...(serverCaPem ? { serverCaPem } : {}) })));
    // Each figure is printed as soon as it is measured: a run cut short still says what it saw.
    process.stdout.write(`\nagents on one management-plane process (${count} real agents in ${WORKERS} worker processes, ${label}, ${TLS ? 'TLS with client certificates' : 'plain HTTP'})\n`);
    line('  instances registered; agents enrolled', `${count} in ${registeredSeconds.toFixed(0)} s; in ${((performance.now() - enrolling) / 1000).toFixed(0)} s`);
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
    const cpuConnected = await cpu();
    line('  event-loop delay during that storm: max, p99', `${connected.lagMaxMs.toFixed(0)} ms, ${connected.lagP99Ms.toFixed(0)} ms`);
    line('  CPU during that storm: plane; the agents\' workers', `${(cpuConnected.plane - cpuBefore.plane).toFixed(1)} s; ${(cpuConnected.swarm - cpuBefore.swarm).toFixed(1)} s`);
    await new Promise((resolve) => setTimeout(resolve, 5000));
    const loaded = await rssKiB(plane.child.pid as number);
    const idle = await scrape(call);
    line('  plane RSS: enrolled, none connected -> all connected, idle', `${MiB(baseline)} -> ${MiB(loaded)} (peak ${MiB(connected.peakRssKiB)}; ${connected.peakRssKiB < 1024 * 1024 ? 'under' : 'OVER'} 1 GiB)`);
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
    line('  CPU from the restart on: new plane; the agents\' workers', `${(await cpuSeconds(plane.child.pid as number)).toFixed(1)} s; ${((await cpu()).swarm - swarmBefore).toFixed(1)} s`);
    line('  reconnect storm: event-loop delay max, p99; RSS peak', `${reconnected.lagMaxMs.toFixed(0)} ms, ${reconnected.lagP99Ms.toFixed(0)} ms; ${MiB(reconnected.peakRssKiB)} (then ${MiB(after)})`);
  } finally {
    await Promise.all(workers.map((worker) => worker.ask({ type: 'stop' }).catch(() => undefined)));
    for (const worker of workers) worker.child.kill();
    await plane.stop();
    await dir.remove();
  }
}

/** benchAgentFleet on BENCH_AGENTS_DATABASE_URL, else on BENCH_AGENTS_ENGINE (`pglite`, a directory, by default; `postgres`: a fresh database on the local server, dropped after). */
export async function benchAgentFleetOn(count: number): Promise<void> {
  if (process.env.BENCH_AGENTS_DATABASE_URL) return benchAgentFleet(count, process.env.BENCH_AGENTS_DATABASE_URL);
  if (process.env.BENCH_AGENTS_ENGINE !== 'postgres') return benchAgentFleet(count);
  const database = await freshPostgresDatabase('certplane_bench');
  try {
    await benchAgentFleet(count, database.url);
  } finally {
    await database.drop();
  }
}
