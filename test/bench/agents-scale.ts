/**
 * Agents on one management-plane process, at fleet scale, for `npm run bench`: `count`
 * real agents (agent-swarm.ts, in worker processes) enroll, then all start at once and
 * connect; the plane is restarted and the time until every agent is authenticated again
 * is measured (the reconnect storm, paced only by the agents' own jittered backoff).
 * Reported: connect rate, the plane's RSS in total and per agent, the longest event-loop
 * stall the plane saw (prom-client's nodejs_eventloop_lag_max_seconds), and the
 * restart's times. Every wait is bounded; the bench stops by itself.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { scratch } from '../support/cli.js';
import { freePort } from '../support/ports.js';
import { eventually, startCertplane, type RunningProcess } from '../support/processes.js';
import type { SwarmCommand, SwarmReply } from './agent-swarm.js';

const line = (label: string, value: string) => process.stdout.write(`${label.padEnd(58)} ${value}\n`);
/** Longest any phase may take before the bench gives up (and says so). */
const PHASE_LIMIT_MS = Number(process.env.BENCH_AGENTS_PHASE_LIMIT_MS ?? 30 * 60_000);
const WORKERS = Number(process.env.BENCH_AGENT_WORKERS ?? 2);
/** Instance registrations in flight at once. */
const REGISTER_CONCURRENCY = 8;

async function rssKiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
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

/** The plane's view of itself from /metrics: agents connected, and the longest event-loop stall since the previous scrape. */
async function scrape(url: string): Promise<{ connected: number; lagMaxSeconds: number }> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const value = (name: string) => Number(new RegExp(`^${name} ([0-9.e+-]+)$`, 'm').exec(text)?.[1] ?? 0);
  return { connected: value('certplane_agents_connected'), lagMaxSeconds: value('nodejs_eventloop_lag_max_seconds') };
}

/**
 * Waits until `count` agents are connected, scraping every `intervalMs`; returns the
 * longest stall seen and the highest RSS sampled meanwhile.
 */
async function untilConnected(plane: RunningProcess, url: string, count: number): Promise<{ lagMaxSeconds: number; peakRssKiB: number }> {
  let lagMaxSeconds = 0;
  let peakRssKiB = 0;
  await eventually(
    async () => {
      peakRssKiB = Math.max(peakRssKiB, await rssKiB(plane.child.pid as number));
      const seen = await scrape(url);
      lagMaxSeconds = Math.max(lagMaxSeconds, seen.lagMaxSeconds);
      return seen.connected >= count ? true : undefined;
    },
    PHASE_LIMIT_MS,
    500,
    `${count} agents to be connected`,
  );
  return { lagMaxSeconds, peakRssKiB };
}

/** `count` agents on one plane process (`databaseUrl`: PGlite in a directory by default), connected, then reconnected after a restart. */
export async function benchAgentFleet(count: number, databaseUrl?: string): Promise<void> {
  const dir = await scratch('certplane-bench-fleet-');
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const env = {
    CERTPLANE_INSECURE_HTTP: '1',
    CERTPLANE_LISTEN: `127.0.0.1:${port}`,
    CERTPLANE_LOG_LEVEL: 'warn',
    CERTPLANE_DATABASE_URL: databaseUrl ?? `pglite:${dir.path('db')}`,
    CERTPLANE_SECRETS: `file:${dir.path('secrets')}`,
  };
  const start = async () => {
    const started = performance.now();
    const plane = startCertplane(['serve'], env);
    await eventually(async () => ((await fetch(`${url}/healthz`)).ok ? true : undefined), PHASE_LIMIT_MS, 200, 'the plane to start');
    return { plane, seconds: (performance.now() - started) / 1000 };
  };
  let { plane } = await start();
  const workers = Array.from({ length: WORKERS }, startWorker);
  try {
    const registering = performance.now();
    const tokens: string[] = [];
    let next = 0;
    await Promise.all(
      Array.from({ length: REGISTER_CONCURRENCY }, async () => {
        while (next < count) {
          const i = next++;
          const response = await fetch(`${url}/v1/instances`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: `fleet${i}`, hostnames: [`fleet${i}.bench.test`], autoIssue: false }) });
          if (response.status !== 201) throw new Error(`registering instance ${i}: HTTP ${response.status} ${await response.text()}`);
          tokens[i] = ((await response.json()) as { enrollmentToken: string }).enrollmentToken;
        }
      }),
    );
    await Promise.all(workers.map((worker, w) => worker.ask({ type: 'enroll', server: url, tokens: tokens.filter((_, i) => i % WORKERS === w), dir: dir.path('agents') })));
    // Each figure is printed as soon as it is measured: a run cut short still says what it saw.
    process.stdout.write(`\nagents on one management-plane process (${count} real agents in ${WORKERS} worker processes, ${databaseUrl ? 'PostgreSQL' : 'PGlite'}, plain HTTP)\n`);
    line('  instances registered and agents enrolled', `${count} in ${((performance.now() - registering) / 1000).toFixed(0)} s`);
    await new Promise((resolve) => setTimeout(resolve, 2000));
    const baseline = await rssKiB(plane.child.pid as number);
    await scrape(url);

    const connecting = performance.now();
    await Promise.all(workers.map((worker) => worker.ask({ type: 'start' })));
    const connected = await untilConnected(plane, url, count);
    const connectSeconds = (performance.now() - connecting) / 1000;
    line('  all started at once: every agent authenticated', `${connectSeconds.toFixed(1)} s (${(count / connectSeconds).toFixed(0)} /s), longest event-loop stall ${(connected.lagMaxSeconds * 1000).toFixed(0)} ms`);
    await new Promise((resolve) => setTimeout(resolve, 5000));
    const loaded = await rssKiB(plane.child.pid as number);
    const idle = await scrape(url);
    line('  plane RSS: enrolled, none connected -> all connected, idle', `${(baseline / 1024).toFixed(0)} MiB -> ${(loaded / 1024).toFixed(0)} MiB (peak ${(connected.peakRssKiB / 1024).toFixed(0)} MiB)`);
    line('  RSS per connected agent', `${((loaded - baseline) / count).toFixed(1)} KiB`);
    line('  longest event-loop stall, all connected and idle for 5 s', `${(idle.lagMaxSeconds * 1000).toFixed(0)} ms`);

    const stopping = performance.now();
    await plane.stop();
    const restarted = await start();
    plane = restarted.plane;
    line('  restart: plane stopped -> serving again', `${restarted.seconds.toFixed(1)} s`);
    const reconnected = await untilConnected(plane, url, count);
    const reconnectSeconds = (performance.now() - stopping) / 1000;
    const after = await rssKiB(plane.child.pid as number);
    line('  restart: plane stopped -> every agent authenticated again', `${reconnectSeconds.toFixed(1)} s (RSS then ${(after / 1024).toFixed(0)} MiB, longest stall ${(reconnected.lagMaxSeconds * 1000).toFixed(0)} ms)`);
  } finally {
    await Promise.all(workers.map((worker) => worker.ask({ type: 'stop' }).catch(() => undefined)));
    for (const worker of workers) worker.child.kill();
    await plane.stop();
    await dir.remove();
  }
}
