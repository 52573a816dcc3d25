/**
 * Fleet figures for `npm run bench` (agents connected to one process: agents-scale.ts):
 * - end-to-end issuances per second, CSR from the agent to its installed acknowledgement,
 *   with real agents (in this process) answering http-01 on their own loopback addresses,
 *   and a reissue campaign, each on PGlite and on PostgreSQL, beside a bare acme-client on
 *   the same Pebble in the same run, at the same concurrency, polling every 200 ms, and
 *   followed by the plane's own stage histogram for that part.
 */
import { X509Certificate } from 'node:crypto';
import { readdir, readFile, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import https from 'node:https';
import { createSecureContext } from 'node:tls';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import acme from 'acme-client';
import pg from 'pg';
import pino from 'pino';
import { AgentClient } from '../../src/agent/client.js';
import { enroll } from '../../src/agent/enroll.js';
import { Http01Responder } from '../../src/agent/http01.js';
import { Installer } from '../../src/agent/install.js';
import { openState } from '../../src/agent/state.js';
import { parseCertificateBundle, parsePemBlocks } from '../../src/chain/index.js';
import { startPebble, type LocalPebble } from '../../src/devenv/pebble.js';
import { reuseNonces } from '../../src/acme/nonces.js';
import { parseAccountKeyOnce } from '../../src/acme/signing.js';
import { createCsr, generateKeyPair } from '../../src/pki/factory.js';
import { scratch } from '../support/cli.js';
import { askPebble } from '../support/pebble-deadlock.js';
import { freshPostgresDatabase } from '../support/postgres.js';
import { freePort } from '../support/ports.js';
import { startSimulatedAgent, type SimulatedAgent } from '../support/fleet.js';
import { startJobFloor, type JobFloor } from './floor.js';
import { eventually, startCertplane, type RunningProcess } from '../support/processes.js';

const line = (label: string, value: string) => process.stdout.write(`${label.padEnd(58)} ${value}\n`);

/** The plane's settings a bench run may set in its own environment. */
const PASSED_THROUGH = ['CERTPLANE_ORDER_BEFORE_CSR', 'CERTPLANE_DATABASE_POOL_SIZE'] as const;

async function startPlane(env: Record<string, string>): Promise<{ plane: RunningProcess; url: string }> {
  const port = await freePort();
  // BENCH_PLANE_NODE_OPTIONS profiles the plane, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof" (written when it stops):
  // given as node's own arguments, because NODE_OPTIONS refuses --cpu-prof.
  const nodeArgs = (process.env.BENCH_PLANE_NODE_OPTIONS ?? '').split(' ').filter(Boolean);
  // Settings passed through from the bench's own environment, to compare them run by run.
  const passed = Object.fromEntries(PASSED_THROUGH.flatMap((name) => (process.env[name] === undefined ? [] : [[name, process.env[name]!]])));
  const plane = startCertplane(['serve'], { CERTPLANE_INSECURE_HTTP: '1', CERTPLANE_LISTEN: `127.0.0.1:${port}`, CERTPLANE_LOG_LEVEL: 'warn', ...passed, ...env }, nodeArgs);
  const url = `http://127.0.0.1:${port}`;
  // A plane that exits (a setting it refuses) fails the part at once, with its last words
  // ('close': after its output is read), instead of after the wait.
  const exited = new Promise<never>((_, reject) => plane.child.once('close', (code, signal) => reject(new Error(`the plane exited (${code ?? signal}) before it listened: ${plane.lines.slice(-5).join(' | ')}`))));
  exited.catch(() => undefined);
  await Promise.race([eventually(async () => ((await fetch(`${url}/healthz`)).ok ? true : undefined), 180_000, 200, 'the plane to start'), exited]);
  return { plane, url };
}

const post = async (url: string, body?: unknown) =>
  (await fetch(url, { method: 'POST', headers: body ? { 'content-type': 'application/json' } : {}, body: body ? JSON.stringify(body) : undefined })).json() as Promise<Record<string, any>>;

/** A process's /proc stat fields after its name: [1] is the parent, [11] [12] its own user and system ticks, [13] [14] those of its children that exited. */
async function statOf(pid: number): Promise<string[] | undefined> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  return stat?.slice(stat.lastIndexOf(') ') + 2).split(' ');
}

/** CPU seconds (user + system) a process has used so far, from /proc; 0 for one that is gone. */
async function cpuSecondsOf(pid: number): Promise<number> {
  const fields = await statOf(pid);
  return fields ? (Number(fields[11]) + Number(fields[12])) / 100 : 0;
}

/**
 * CPU seconds so far of the local PostgreSQL server: every live process of it, plus what its
 * exited backends used (the postmaster's children's time), so the sum only grows. The whole
 * server: other databases' work on it is counted too (benches run alone, under one lock).
 */
async function postgresCpuSeconds(): Promise<number> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (/^\d+$/.test(entry) && (await readFile(`/proc/${entry}/comm`, 'utf8').catch(() => '')).trim() === 'postgres') pids.push(Number(entry));
  }
  let total = 0;
  for (const pid of pids) {
    const fields = await statOf(pid);
    if (!fields) continue;
    total += (Number(fields[11]) + Number(fields[12])) / 100;
    // The postmaster (its parent is not the server's): what its exited children used.
    if (!pids.includes(Number(fields[1]))) total += (Number(fields[13]) + Number(fields[14])) / 100;
  }
  return total;
}

/** Where a part's CPU went: the CA (Pebble and challtestsrv), the PostgreSQL server, this process (the agents, or the bare client), the plane. */
interface CpuUse {
  readonly ca: number;
  readonly postgres: number;
  readonly bench: number;
  readonly plane: number;
}

/** The CPU of several runs together. */
const sumCpu = (all: readonly CpuUse[]): CpuUse => all.reduce((a, b) => ({ ca: a.ca + b.ca, postgres: a.postgres + b.postgres, bench: a.bench + b.bench, plane: a.plane + b.plane }));

async function cpuUse(pebble: LocalPebble, plane?: RunningProcess): Promise<CpuUse> {
  const own = process.cpuUsage();
  const [ca, postgres, planeSeconds] = await Promise.all([Promise.all(pebble.pids.map(cpuSecondsOf)), postgresCpuSeconds(), plane?.child.pid ? cpuSecondsOf(plane.child.pid) : 0]);
  return { ca: ca.reduce((a, b) => a + b, 0), postgres, bench: (own.user + own.system) / 1e6, plane: planeSeconds };
}

/**
 * Waits until the plane has been idle (under 5 % of a core) for 250 ms, at most 5 s: a bare
 * run that starts while the plane still finishes its last certificates (its records, its
 * metrics, the agents' acknowledgements in the bench's own process) shares the cores with
 * that tail, and measured slower for it.
 */
async function settle(plane: RunningProcess): Promise<void> {
  const pid = plane.child.pid;
  if (pid === undefined) return;
  for (let waited = 0; waited < 5000; waited += 250) {
    const before = await cpuSecondsOf(pid);
    await new Promise((resolve) => setTimeout(resolve, 250));
    if ((await cpuSecondsOf(pid)) - before < 0.0125) return;
  }
}

const cpuSince = (before: CpuUse, after: CpuUse): CpuUse => ({ ca: after.ca - before.ca, postgres: after.postgres - before.postgres, bench: after.bench - before.bench, plane: after.plane - before.plane });

/**
 * CPU per certificate of the bare client's run and certplane's, by process, and the ratio
 * the cores would allow if CPU were all that limited both runs (bare CPU per certificate over
 * certplane's). On a small machine the CA, the database, the agents and the plane share the
 * same cores: once both runs are CPU-bound (a campaign of hundreds at 50 at a time), the
 * measured ratio cannot exceed this one. A run held by waits rather than CPU (20 agents) can.
 */
function printCpu(engine: BenchEngine, bare: CpuUse, bareCount: number, plane: CpuUse, planeCount: number): void {
  const ms = (seconds: number, count: number) => Math.round((seconds * 1000) / count);
  const parts = (values: number[]) => `${values.map((v) => `${v} ms`).join(' + ')} = ${values.reduce((a, b) => a + b, 0)} ms`;
  line('  CPU per certificate, bare client: CA + client', parts([ms(bare.ca, bareCount), ms(bare.bench, bareCount)]));
  if (engine === 'postgres') {
    line('  certplane: CA + plane + PostgreSQL + agents and bench', parts([ms(plane.ca, planeCount), ms(plane.plane, planeCount), ms(plane.postgres, planeCount), ms(plane.bench, planeCount)]));
  } else {
    line('  certplane: CA + plane (PGlite inside) + agents and bench', parts([ms(plane.ca, planeCount), ms(plane.plane, planeCount), ms(plane.bench, planeCount)]));
  }
  const bareTotal = bare.ca + bare.bench;
  const planeTotal = plane.ca + plane.plane + plane.bench + (engine === 'postgres' ? plane.postgres : 0);
  line(`  ratio if the ${cpus().length} cores were all that limited both`, `${(bareTotal / bareCount / (planeTotal / planeCount)).toFixed(2)} x`);
}

/** The stores the fleet figures are measured on. */
export type BenchEngine = 'pglite' | 'postgres';

/** A database for one plane: an in-memory PGlite, or a fresh database on the local PostgreSQL server. */
async function databaseFor(engine: BenchEngine): Promise<{ url: string; drop: () => Promise<void> }> {
  return engine === 'postgres' ? freshPostgresDatabase('certplane_bench') : { url: 'memory:', drop: async () => {} };
}

/** Rate limits far above anything a bench run orders, so the figures measure the path, not the limiter's waits. */
const NON_BINDING_RATE_LIMITS = JSON.stringify({ newOrders: { capacity: 100_000, refillPerSecond: 1000 }, certificatesPerDomain: { capacity: 100_000, refillPerSecond: 1000 } });

/**
 * Waves per round size (BENCH_E2E_WAVES), each beside its own bare run, and the median ratio
 * reported: one wave of 20 swung from 0.46 to 0.87 x between consecutive runs at the same
 * load (the bare wave alone from 9.6 to 26/s), and a plane's first wave carries its warm-up
 * (JIT, connections), which later waves do not.
 *
 * The first round on a plane starts with one warm-up wave of each side, printed and left out
 * of the median and the CPU figures (E2E_WARMUP_WAVES). The bare client runs in the bench's
 * own process, warmed by every part before it, where each part starts a fresh plane: in a
 * full run on 2026-12-03 the bare client spent 31 ms of its CPU per certificate in
 * PostgreSQL's 20-agent part, after PGlite's parts, against 38 to 39 in that part run alone,
 * and the plane's first wave was 0.65 x where its later waves were 0.77 and 0.92 x.
 */
const E2E_WARMUP_WAVES = 1;
const E2E_WAVES = Math.max(1, Number(process.env.BENCH_E2E_WAVES ?? 3));

const median = (values: readonly number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
};

/** How long one end-to-end round may take before it reports how far it got (BENCH_E2E_SECONDS). */
const E2E_SECONDS = Number(process.env.BENCH_E2E_SECONDS ?? 300);

/** The bare client's polling: every 200 ms from the first look, for up to a minute (acme-client waits 5 s, then doubles, by default). */
const BARE_POLL = { backoffAttempts: 300, backoffMin: 200, backoffMax: 200 };
/**
 * Each of the bare client's requests gives up after this (as certplane's do). Pebble's
 * deadlock always hangs a newOrder, which acme-client does not retry, so a bare run that
 * meets it ends with an error instead of holding the bench for good (a 1,000-order bare run
 * met it on 2026-12-03 and waited, idle, until killed); its other workers' polls fail on
 * their own afterwards, in the background.
 */
const BARE_REQUEST_TIMEOUT_MS = 30_000;

/**
 * The bare client's connections to `pebble`: one pool kept across its runs on that Pebble,
 * with one TLS context, as the plane keeps its own (src/acme/issuer.ts), where a pool made
 * for each run opened its connections again in every wave. The baseline is the bare client
 * at its best. (Most of the connections it opened came from its nonces: see BARE_NONCES.)
 */
const bareAgents = new WeakMap<LocalPebble, https.Agent>();
function bareConnections(pebble: LocalPebble): https.Agent {
  let agent = bareAgents.get(pebble);
  if (!agent) bareAgents.set(pebble, (agent = new https.Agent({ secureContext: createSecureContext({ ca: pebble.acmeServerCaPem }), keepAlive: true })));
  return agent;
}

/**
 * Whether the bare client reuses the Replay-Nonce of each answer (BENCH_BARE_NONCES, on
 * unless `0`), as certplane's issuer does, with the same function. On its own acme-client
 * sends a HEAD to newNonce before every signed request, and Pebble ends the connection after
 * each: docs/testing.md, "A tuned baseline", has what that cost.
 */
const BARE_NONCES = process.env.BENCH_BARE_NONCES !== '0';
/**
 * Whether the bare client signs with its account key parsed once (BENCH_BARE_KEY, on unless
 * `0`), as certplane's issuer does, with the same function (src/acme/signing.ts). On its own
 * acme-client hands node:crypto the key's PEM for every signed request, which decodes it
 * again each time: about 0.7 ms of CPU per request, most of the bare client's signing
 * (docs/testing.md, "The account key parsed once, for the baseline too").
 */
const BARE_KEY = process.env.BENCH_BARE_KEY !== '0';
/**
 * Whether the bare client matches the preferred chain's issuer name with node:crypto
 * (BENCH_BARE_CHAIN, on unless `0`). acme-client's `preferredChain` parses every certificate
 * of every chain with @peculiar/x509 (about 1.2 ms each, six per order with two alternates)
 * to read issuers' common names; node:crypto's X509Certificate reads them in about 0.14 ms.
 * The rule is acme-client's own: the chain where the name is closest to the root wins, the
 * first chain when none has it.
 */
const BARE_CHAIN = process.env.BENCH_BARE_CHAIN !== '0';
/**
 * Whether the bare client makes each certificate's key and CSR inside its clock
 * (BENCH_BARE_KEYS_TIMED, on unless `0`), with the functions certplane's agents use: the
 * agents make theirs inside certplane's clock, on the same cores, so a baseline whose CSRs
 * were all made before its clock started did less of the job in the time it was measured.
 */
const BARE_KEYS_TIMED = process.env.BENCH_BARE_KEYS_TIMED !== '0';
/** How the baseline lines name the bare client's tuning. */
export const BARE_TUNING = `200 ms polls${BARE_NONCES ? ', nonces reused' : ''}${BARE_KEY ? ', key parsed once' : ''}${BARE_CHAIN ? ', chains matched with node:crypto' : ''}${BARE_KEYS_TIMED ? '' : ', CSRs made before its clock'}`;

/** acme-client's util module, whose findCertificateChainForIssuer getCertificate() calls through the module object. */
const acmeUtil = createRequire(import.meta.url)('acme-client/src/util.js') as { findCertificateChainForIssuer: (chains: string[], issuer: string) => string };

/** acme-client's findCertificateChainForIssuer, with the issuers' names read by node:crypto. */
export function fastChainForIssuer(chains: string[], issuer: string): string {
  let best: { chain: string; distance: number } | undefined;
  for (const chain of chains) {
    const issuers = parsePemBlocks(chain).map((block) => /^CN=(.*)$/m.exec(new X509Certificate(block.der).issuer)?.[1]);
    const at = issuers.indexOf(issuer);
    if (at < 0) continue;
    const distance = issuers.length - at;
    if (!best || distance < best.distance) best = { chain, distance };
  }
  return best?.chain ?? chains[0]!;
}
/**
 * The baseline does the plane's job: a certificate whose chain leads to the preferred root,
 * asked for with acme-client's own `preferredChain`. acme-client then downloads every
 * alternate too (as the plane must, to keep every chain the CA offers:
 * docs/concepts/chain-selection.md, "Re-chaining") and picks one by its issuers' names. The end-to-end parts also run it
 * without (`undefined`): the default chain only, whichever root it leads to, which is less
 * work and not the same job, shown for reference (docs/testing.md, "The same job for the baseline").
 */
export const barePreferredChain = (preferredRootCN: string | undefined): { preferredChain?: string } => (preferredRootCN ? { preferredChain: preferredRootCN } : {});

/**
 * After the clock: the baseline did the job asked of it, every chain up to the preferred
 * root (acme-client falls back to the default chain, silently, when no name matches).
 * Throws with how many did not.
 */
export function requirePreferredRoot(chains: readonly string[], preferredRootCN: string | undefined): void {
  if (!preferredRootCN) return;
  const elsewhere = chains.map((chain) => parseCertificateBundle(chain).at(-1)?.issuerCN).filter((root) => root !== preferredRootCN);
  if (elsewhere.length > 0) throw new Error(`${elsewhere.length} of the bare client's ${chains.length} chains end elsewhere than at the preferred root "${preferredRootCN}" (for example at "${elsewhere[0]}")`);
}

/**
 * A bare acme-client at its best on `pebble`, with its account made: polling every 200 ms,
 * one connection pool kept across runs, nonces reused (BARE_NONCES), its account key parsed
 * once (BARE_KEY), chains matched with node:crypto (BARE_CHAIN), each request bounded
 * (BARE_REQUEST_TIMEOUT_MS). Every baseline of the bench is one.
 */
export async function tunedBareClient(pebble: LocalPebble): Promise<acme.Client> {
  acme.axios.defaults.httpsAgent = bareConnections(pebble);
  acme.axios.defaults.timeout = BARE_REQUEST_TIMEOUT_MS;
  const bare = new acme.Client({ directoryUrl: pebble.directoryUrl, accountKey: await acme.crypto.createPrivateEcdsaKey(), ...BARE_POLL });
  if (BARE_NONCES) reuseNonces(bare);
  if (BARE_KEY) parseAccountKeyOnce(bare);
  if (BARE_CHAIN) acmeUtil.findCertificateChainForIssuer = fastChainForIssuer;
  await bare.createAccount({ termsOfServiceAgreed: true });
  return bare;
}

/**
 * Issuances per second of a tuned acme-client `auto()` (tunedBareClient) on `pebble`,
 * `concurrency` at a time: the same-run baseline. http-01 is answered by challtestsrv (names
 * nobody resolved point at it), dns-01 by its TXT records. The account exists before the clock starts;
 * each key and CSR is made inside it (BARE_KEYS_TIMED). With a `floor`, each certificate
 * also goes through the lean reference for the job (floor.ts): its CSR comes from an agent,
 * its state and the chain are recorded and the agent installs it.
 */
async function bareAcmeRate(pebble: LocalPebble, preferredRootCN: string | undefined, count: number, prefix: string, concurrency: number, challenge: 'http-01' | 'dns-01', floor?: JobFloor): Promise<{ rate: number; cpu: CpuUse; eventLoop: number }> {
  const bare = await tunedBareClient(pebble);
  const makeCsr = async (i: number) => (floor ? floor.csr(i, `${prefix}${i}.bench.test`) : createCsr(await generateKeyPair(), [`${prefix}${i}.bench.test`]));
  const madeBefore = BARE_KEYS_TIMED || floor ? [] : await Promise.all(Array.from({ length: count }, (_, i) => makeCsr(i)));
  const challtestsrv = (path: string, body: object) => fetch(`${pebble.challtestsrvUrl}${path}`, { method: 'POST', body: JSON.stringify(body) }).then(() => undefined);
  const cpuBefore = await cpuUse(pebble, floor?.agents);
  const loopBefore = performance.eventLoopUtilization();
  const started = performance.now();
  let next = 0;
  // The first failure ends the run: the other workers take no further certificate (after a
  // deadlock of Pebble's they would go on, against the stopped Pebble, long after the part).
  let failed = false;
  const chains: string[] = [];
  const one = async (i: number) => {
    const csr = BARE_KEYS_TIMED || floor ? await makeCsr(i) : (madeBefore[i] as string);
    let ordered: Promise<void> | undefined;
    const chain = await bare.auto({
      csr,
      termsOfServiceAgreed: true,
      ...barePreferredChain(preferredRootCN),
      challengePriority: [challenge],
      skipChallengeVerification: true,
      challengeCreateFn: (authz, c, keyAuthorization) => {
        // auto() does not show the order; its authorization's URL, as long, stands in for the order's.
        if (floor && !ordered) {
          ordered = floor.ordered(i, (authz as { url: string }).url);
          // Awaited after auto() below; heard now, so a failure while auto() runs (or after it failed) does not end the process.
          ordered.catch(() => undefined);
        }
        return challenge === 'http-01'
          ? challtestsrv('/add-http01', { token: (c as { token: string }).token, content: keyAuthorization })
          : challtestsrv('/set-txt', { host: `_acme-challenge.${authz.identifier.value}.`, value: keyAuthorization });
      },
      challengeRemoveFn: (authz, c) =>
        challenge === 'http-01' ? challtestsrv('/del-http01', { token: (c as { token: string }).token }) : challtestsrv('/clear-txt', { host: `_acme-challenge.${authz.identifier.value}.` }),
    });
    await ordered;
    await floor?.issued(i, chain);
    return chain;
  };
  const worker = async () => {
    while (next < count && !failed) {
      const i = next++;
      try {
        chains.push(await one(i));
      } catch (error) {
        failed = true;
        throw error;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  const rate = count / ((performance.now() - started) / 1000);
  // How busy this process's event loop was: near 1, the bare client's own thread limited the run, not the cores.
  const eventLoop = performance.eventLoopUtilization(loopBefore).utilization;
  const cpu = cpuSince(cpuBefore, await cpuUse(pebble, floor?.agents));
  requirePreferredRoot(chains, preferredRootCN);
  return { rate, cpu, eventLoop };
}

/** The plane's certplane_issuance_stage_duration_seconds, per stage: bucket counts by upper bound, sum and count. */
interface StageHistogram {
  /** The plane's process_cpu_seconds_total, so a part shows how much CPU the plane had to itself. */
  readonly cpuSeconds: number;
  readonly at: number;
  readonly buckets: Map<string, Map<number, number>>;
  readonly sums: Map<string, number>;
  readonly counts: Map<string, number>;
}

async function stageHistogram(url: string): Promise<StageHistogram> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const histogram: StageHistogram = { cpuSeconds: Number(/^process_cpu_seconds_total (\S+)$/m.exec(text)?.[1] ?? 0), at: performance.now(), buckets: new Map(), sums: new Map(), counts: new Map() };
  for (const [, part, labels, value] of text.matchAll(/^certplane_issuance_stage_duration_seconds_(bucket|sum|count)\{([^}]*)\} (\S+)$/gm)) {
    const stage = /stage="([^"]+)"/.exec(labels!)?.[1] as string;
    if (part === 'sum') histogram.sums.set(stage, Number(value));
    else if (part === 'count') histogram.counts.set(stage, Number(value));
    else {
      const le = /le="([^"]+)"/.exec(labels!)?.[1] as string;
      const buckets = histogram.buckets.get(stage) ?? new Map<number, number>();
      buckets.set(le === '+Inf' ? Number.POSITIVE_INFINITY : Number(le), Number(value));
      histogram.buckets.set(stage, buckets);
    }
  }
  return histogram;
}

/** Prints what happened between two snapshots: per stage, observations, mean, and the bucket bound under which 50% and 95% fell. */
function printStages(before: StageHistogram, after: StageHistogram): void {
  const order = ['job_claim', 'csr', 'csr_check', 'queued', 'lease', 'order', 'authorizations', 'challenge', 'validation', 'awaiting_csr', 'finalize', 'download', 'chain', 'record', 'delivery', 'install', 'acknowledge', 'end_to_end'];
  const stages = [...after.counts.keys()].sort((a, b) => order.indexOf(a) - order.indexOf(b));
  const ms = (seconds: number) => (seconds === Number.POSITIVE_INFINITY ? 'inf' : `${Math.round(seconds * 1000)} ms`);
  const cpu = after.cpuSeconds - before.cpuSeconds;
  line('  plane CPU during this part', `${cpu.toFixed(1)} s in ${((after.at - before.at) / 1000).toFixed(1)} s (${((100 * cpu * 1000) / (after.at - before.at)).toFixed(0)}% of one core)`);
  line('  stage histogram of this part (plane /metrics)', 'count    mean     p50 <=    p95 <=');
  for (const stage of stages) {
    const count = (after.counts.get(stage) ?? 0) - (before.counts.get(stage) ?? 0);
    if (count <= 0) continue;
    const sum = (after.sums.get(stage) ?? 0) - (before.sums.get(stage) ?? 0);
    const bounds = [...(after.buckets.get(stage)?.keys() ?? [])].sort((a, b) => a - b);
    const quantile = (q: number) => bounds.find((le) => (after.buckets.get(stage)?.get(le) ?? 0) - (before.buckets.get(stage)?.get(le) ?? 0) >= q * count) ?? Number.POSITIVE_INFINITY;
    line(`    ${stage}`, `${String(count).padStart(5)} ${ms(sum / count).padStart(9)} ${ms(quantile(0.5)).padStart(9)} ${ms(quantile(0.95)).padStart(9)}`);
  }
}

/**
 * The end-to-end parts as both bench programs run them (run.ts, e2e.ts): on each engine, each
 * agent count of BENCH_E2E_AGENTS (20,100; empty or 0 for none), then on each engine a
 * campaign of BENCH_CAMPAIGN_INSTANCES (1000; 0 for none) at BENCH_CAMPAIGN_CONCURRENCY (50),
 * bounded by BENCH_CAMPAIGN_SECONDS (600).
 */
export async function benchFleetParts(engines: readonly BenchEngine[]): Promise<void> {
  const rounds = (process.env.BENCH_E2E_AGENTS ?? '20,100').split(',').map(Number).filter((n) => n > 0);
  if (rounds.length > 0) for (const engine of engines) await benchEndToEnd(rounds, engine);
  const campaign = Number(process.env.BENCH_CAMPAIGN_INSTANCES ?? 1000);
  if (campaign > 0) {
    for (const engine of engines) await benchCampaign(campaign, engine, Number(process.env.BENCH_CAMPAIGN_CONCURRENCY ?? 50), Number(process.env.BENCH_CAMPAIGN_SECONDS ?? 600));
    if (engines.includes('postgres') && process.env.BENCH_FLOOR !== '0') await benchFloor(campaign, Number(process.env.BENCH_CAMPAIGN_CONCURRENCY ?? 50));
  }
}

/**
 * The lean reference for the job (floor.ts) beside the bare client, at the campaign's size
 * and concurrency, on a Pebble of its own and PostgreSQL (BENCH_FLOOR=0 leaves it out): how
 * much of certplane's CPU per certificate the job's mandatory parts, done leanly, explain.
 * Run between two bare runs and compared with their mean, as the campaign is.
 */
export async function benchFloor(count: number, concurrency: number): Promise<void> {
  const dir = await scratch('certplane-bench-floor-');
  const pebbleLog = join(tmpdir(), `certplane-bench-${process.pid}-floor-${Date.now()}-pebble.log`);
  let keepPebbleLog = false;
  const pebble = await startPebble({ alternateRoots: 1, logFile: pebbleLog });
  const database = await databaseFor('postgres');
  const floor = await startJobFloor({ databaseUrl: database.url, agents: concurrency, dir: dir.path('agents') });
  try {
    const preferred = parseCertificateBundle((await pebble.roots())[1]!)[0]!.subjectCN;
    const run = async (runCount: number, prefix: string, withFloor?: JobFloor) => {
      try {
        return await bareAcmeRate(pebble, preferred, runCount, prefix, concurrency, 'dns-01', withFloor);
      } catch (error) {
        keepPebbleLog = (await deadlocked(pebble, pebbleLog, `lean reference for the job: a run stopped (${(error as Error).message})`)) !== undefined;
        throw error;
      }
    };
    const warm = Math.min(concurrency, count);
    const bareWarmup = await run(warm, 'floor-bare-warm-up');
    const floorWarmup = await run(warm, 'floor-warm-up', floor);
    const bareBefore = await run(count, 'floor-bare');
    const measured = await run(count, 'floor', floor);
    const bareAfter = await run(count, 'floor-bare-after');
    const bareRate = (bareBefore.rate + bareAfter.rate) / 2;
    const ms = (seconds: number) => Math.round((seconds * 1000) / count);
    process.stdout.write(`\nlean reference for the job on postgres, ${count} certificates, ${concurrency} at a time: the bare client with the job's channel and durable writes done leanly around it (test/bench/floor.ts; load average ${loadavg()[0]!.toFixed(2)})\n`);
    line(`  warm-up, not counted: bare ${warm} / reference ${warm}`, `${bareWarmup.rate.toFixed(2)} /s / ${floorWarmup.rate.toFixed(2)} /s  (${(floorWarmup.rate / bareWarmup.rate).toFixed(2)} x)`);
    line(`  baseline: bare acme-client auto(), ${BARE_TUNING}, preferred chain, mean of the runs before and after`, `${bareRate.toFixed(2)} /s  (${bareBefore.rate.toFixed(2)} and ${bareAfter.rate.toFixed(2)} /s)`);
    line('  reference: CSR from an agent over TLS, 4 commits, links verified, installed durably', `${measured.rate.toFixed(2)} /s  (${(measured.rate / bareRate).toFixed(2)} x baseline)`);
    const bare = sumCpu([bareBefore.cpu, bareAfter.cpu]);
    line('  CPU per certificate, bare client: CA + client', `${Math.round((bare.ca * 1000) / (2 * count))} ms + ${Math.round((bare.bench * 1000) / (2 * count))} ms`);
    line('  reference: CA + client and plane side + agents + PostgreSQL', `${ms(measured.cpu.ca)} ms + ${ms(measured.cpu.bench)} ms + ${ms(measured.cpu.plane)} ms + ${ms(measured.cpu.postgres)} ms`);
    const bareTotal = (bare.ca + bare.bench) / (2 * count);
    const floorTotal = (measured.cpu.ca + measured.cpu.bench + measured.cpu.plane + measured.cpu.postgres) / count;
    line(`  ratio if the ${cpus().length} cores were all that limited both`, `${(bareTotal / floorTotal).toFixed(2)} x`);
    line('  the bench\'s event loop busy: bare before, reference, bare after', [bareBefore, measured, bareAfter].map((run) => `${Math.round(run.eventLoop * 100)}%`).join(', '));
  } finally {
    await floor.close();
    await pebble.stop();
    await database.drop();
    await dir.remove();
    if (!keepPebbleLog) await rm(pebbleLog, { force: true });
  }
}

/**
 * A reissue campaign over `count` instances (simulated agents running the real agent code,
 * dns-01 through challtestsrv) with limits too high to bind, beside the bare client at the
 * plane's issuance concurrency. Bounded: past `seconds` it reports what it reached, as such.
 */
export async function benchCampaign(count: number, engine: BenchEngine, concurrency: number, seconds: number): Promise<void> {
  // A run whose CA deadlocked measured Pebble, not certplane: said so, and run once more on a fresh Pebble.
  const deadlock = await campaignOnce(count, engine, concurrency, seconds);
  if (!deadlock) return;
  process.stdout.write(`  ${deadlock}. The part is run again on a fresh Pebble:\n`);
  const again = await campaignOnce(count, engine, concurrency, seconds);
  if (again) process.stdout.write(`  ${again} again.\n`);
}

/** One campaign part; returns why Pebble stopped answering when it deadlocked (see test/support/pebble-deadlock.ts). */
async function campaignOnce(count: number, engine: BenchEngine, concurrency: number, seconds: number): Promise<string | undefined> {
  const dir = await scratch('certplane-bench-campaign-');
  // Outside the scratch directory: kept when the part stalls, for its goroutine dump.
  const pebbleLog = join(tmpdir(), `certplane-bench-${process.pid}-${engine}-${Date.now()}-pebble.log`);
  let keepPebbleLog = false;
  const pebble = await startPebble({ alternateRoots: 1, logFile: pebbleLog });
  const database = await databaseFor(engine);
  const preferred = parseCertificateBundle((await pebble.roots())[1]!)[0]!;
  const trustPath = await dir.write('root.pem', preferred.pem);
  const { plane, url } = await startPlane({
    CERTPLANE_DATABASE_URL: database.url,
    CERTPLANE_SECRETS: `file:${dir.path('secrets')}`,
    CERTPLANE_ACME_DIRECTORY: pebble.directoryUrl,
    CERTPLANE_ACME_CA_CERTS: pebble.acmeServerCaPath,
    CERTPLANE_PREFERRED_CHAINS: JSON.stringify([preferred.subjectCN]),
    CERTPLANE_TRUST_STORE: trustPath,
    CERTPLANE_DNS_PROVIDER: 'challtestsrv',
    CERTPLANE_CHALLTESTSRV_URL: pebble.challtestsrvUrl,
    CERTPLANE_CHALLENGE: 'dns-01',
    CERTPLANE_ISSUANCE_CONCURRENCY: String(concurrency),
    CERTPLANE_RATE_LIMITS: NON_BINDING_RATE_LIMITS,
  });
  const agents: SimulatedAgent[] = [];
  const warm = Math.min(concurrency, count);
  try {
    const enrolling = performance.now();
    // The counted instances in one cluster, the warm-up campaign's in another.
    for (let i = 0; i < count + warm; i += 1) {
      const [name, cluster] = i < count ? [`k${i}`, 'bench'] : [`w${i - count}`, 'warm-up'];
      const instance = await post(`${url}/v1/instances`, { name, cluster, hostnames: [`${name}.bench.test`], autoIssue: false });
      agents.push(await startSimulatedAgent({ server: url, token: instance.enrollmentToken, stateDir: dir.path(`agent-${i}`), trustAnchors: [preferred] }));
    }
    await eventually(async () => {
      for (const agent of agents) if (!((await (await fetch(`${url}/v1/instances/${agent.instanceId}`)).json()) as any).agent.connected) return undefined;
      return true;
    }, 120_000, 200, 'agents to connect');
    const enrolledSeconds = (performance.now() - enrolling) / 1000;
    // A campaign that failed (or, put to Pebble, stalled): run again when Pebble deadlocked,
    // which a stall is asked about and failures only when every one looks like it; else the
    // bench fails.
    const failedBy = async (what: string, stalled: boolean): Promise<string> => {
      const why = await whyFailed(url);
      const text = `reissue campaign on ${engine}: ${what}: ${why.text}`;
      const deadlock = stalled || why.allUnreachable ? await deadlocked(pebble, pebbleLog, text) : undefined;
      if (!deadlock) throw new Error(text);
      keepPebbleLog = true;
      return deadlock;
    };
    // Both sides warm before the clock starts: an untimed campaign of `warm` instances, and an
    // untimed bare run as large. A warm-up that does not finish leaves nothing to measure
    // after it, so it ends the part (a counted campaign that stalls is reported, INCOMPLETE).
    const warmup = await runCampaign(url, { cluster: 'warm-up' }, performance.now() + seconds * 1000);
    if (warmup.state !== 'done' || warmup.counts.failed > 0) {
      return await failedBy(warmup.unfinished ? `the warm-up campaign did not finish (${warmup.counts.installed} installed when ${warmup.unfinished})` : `the warm-up campaign had ${warmup.counts.failed} failed`, Boolean(warmup.unfinished));
    }
    // A bare run, or the deadlock of Pebble's that stopped it (the part is then run again like a stalled campaign).
    const bareRun = async (runCount: number, prefix: string) => {
      const outcome = await bareRunOnIdlePlane({ pebble, plane, pebbleLog, part: `reissue campaign on ${engine}` }, preferred.subjectCN, runCount, prefix, concurrency, 'dns-01');
      if ('deadlock' in outcome) keepPebbleLog = true;
      return outcome;
    };
    const bareWarmup = await bareRun(warm, 'campaign-bare-warm-up');
    if ('deadlock' in bareWarmup) return bareWarmup.deadlock;
    const bareBefore = await bareRun(count, 'campaign-bare');
    if ('deadlock' in bareBefore) return bareBefore.deadlock;
    const before = await stageHistogram(url);
    const cpuBefore = await cpuUse(pebble, plane);
    const started = performance.now();
    const status = await runCampaign(url, { cluster: 'bench' }, started + seconds * 1000);
    if (status.counts.failed > 0) return await failedBy(`${status.counts.failed} failed`, false);
    const cpu = cpuSince(cpuBefore, await cpuUse(pebble, plane));
    const after = await stageHistogram(url);
    const { installed } = status.counts;
    const { rate } = status;
    // The campaign between two bare runs of the same size: Pebble's store grows with every
    // order (its newOrder scans every authorization), so whichever runs later meets a slower
    // CA; the baseline is the mean of the run before and the run after.
    const bareAfter = status.state === 'done' ? await bareRun(count, 'campaign-bare-after') : undefined;
    if (bareAfter && 'deadlock' in bareAfter) return bareAfter.deadlock;
    const bareRuns = bareAfter ? [bareBefore.run, bareAfter.run] : [bareBefore.run];
    const bareRate = bareRuns.reduce((total, run) => total + run.rate, 0) / bareRuns.length;
    const bareCpu = sumCpu(bareRuns.map((run) => run.cpu));
    process.stdout.write(`\nreissue campaign on ${engine}, ${count} instances, limits not binding (simulated agents, dns-01, ${concurrency} orders at a time; ${count + warm} agents (${warm} for the warm-up) enrolled and connected in ${enrolledSeconds.toFixed(0)} s; load average ${loadavg()[0]!.toFixed(2)})\n`);
    line(`  warm-up, not counted: bare ${warm} / certplane campaign of ${warm}`, `${bareWarmup.run.rate.toFixed(2)} /s / ${warmup.rate.toFixed(2)} /s  (${(warmup.rate / bareWarmup.run.rate).toFixed(2)} x)`);
    line(
      `  baseline: bare acme-client auto(), ${Math.min(concurrency, count)} at a time, ${BARE_TUNING}, preferred chain, ${bareRuns.length === 2 ? 'mean of the runs before and after' : 'the run before'}`,
      `${bareRate.toFixed(2)} /s${bareRuns.length === 2 ? `  (${bareRuns.map((run) => run.rate.toFixed(2)).join(' and ')} /s)` : ''}`,
    );
    line(
      `  certplane campaign: request to every agent's acknowledgement`,
      `${rate.toFixed(2)} /s  (${(rate / bareRate).toFixed(2)} x baseline)${status.state === 'done' ? '' : `  INCOMPLETE: ${installed} of ${count} installed when ${status.unfinished}`}`,
    );
    printCpu(engine, bareCpu, count * bareRuns.length, cpu, Math.max(1, installed));
    printStages(before, after);
    if (status.state === 'done') return undefined;
    keepPebbleLog = true;
    return await stallReport(status, plane, pebble, pebbleLog, engine === 'postgres' ? database.url : undefined);
  } finally {
    await Promise.all(agents.map((a) => a.client.stop()));
    await plane.stop();
    await pebble.stop();
    await database.drop();
    await dir.remove();
    if (!keepPebbleLog) await rm(pebbleLog, { force: true });
  }
}

/**
 * How long a campaign may install nothing before the bench stops following it and reports a
 * stall: Pebble's deadlock (see stallReport) stops every order at once, and the part then
 * sat idle until its bound (BENCH_CAMPAIGN_SECONDS) before it was run again anyway. A campaign on
 * a working Pebble installs something every second.
 */
const CAMPAIGN_STALL_MS = 60_000;

/**
 * Starts a campaign over `selector` and follows it until it is done, one of its instances
 * failed, it installed nothing for CAMPAIGN_STALL_MS, or `deadline` (performance.now())
 * passes; returns its last status, its rate (installed per second since it was requested)
 * and why it was left unfinished, if it was.
 */
async function runCampaign(url: string, selector: object, deadline: number): Promise<{ state: string; counts: { installed: number; failed: number }; rate: number; unfinished?: string }> {
  const started = performance.now();
  const campaign = await post(`${url}/v1/reissues`, { selector, reason: 'bench' });
  let progress = { installed: 0, at: started };
  for (;;) {
    const status = (await (await fetch(`${url}/v1/reissues/${campaign.id}`)).json()) as any;
    const now = performance.now();
    if (status.counts.installed !== progress.installed) progress = { installed: status.counts.installed, at: now };
    const unfinished =
      status.counts.failed > 0 || status.state === 'done' ? undefined : now > deadline ? `the ${Math.round((deadline - started) / 1000)} s bound ran out` : now - progress.at > CAMPAIGN_STALL_MS ? `nothing was installed for ${CAMPAIGN_STALL_MS / 1000} s` : null;
    if (unfinished !== null) return { ...status, rate: status.counts.installed / ((now - started) / 1000), ...(unfinished ? { unfinished } : {}) };
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/**
 * What an unfinished campaign leaves to read: its status (counts and failure reasons), the
 * plane's last warnings, and on PostgreSQL where its certificates and jobs stand and what
 * the database's sessions are doing.
 */
async function stallReport(status: unknown, plane: RunningProcess, pebble: LocalPebble, pebbleLog: string, databaseUrl: string | undefined): Promise<string | undefined> {
  process.stdout.write(`  campaign status: ${JSON.stringify(status).slice(0, 4000)}\n`);
  const states = await Promise.all(pebble.pids.map(async (pid) => `${pid} ${(await statOf(pid))?.[0] ?? 'gone'}`));
  const directory = await new Promise<string>((resolve) => {
    const request = https.get(pebble.directoryUrl, { ca: pebble.acmeServerCaPem, timeout: 5000 }, (response) => (response.resume(), resolve(`HTTP ${response.statusCode}`)));
    request.on('timeout', () => request.destroy(new Error('no answer in 5 s')));
    request.on('error', (error) => resolve(error.message));
  });
  process.stdout.write(`  Pebble and challtestsrv (pid, state): ${states.join(', ')}; GET ${pebble.directoryUrl} now: ${directory}\n`);
  const deadlock = await deadlocked(pebble, pebbleLog, '  the campaign did not finish');
  process.stdout.write(`  plane's last log lines:\n${plane.lines.slice(-30).map((l) => `    ${l.slice(0, 600)}`).join('\n')}\n`);
  if (!databaseUrl) return deadlock;
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    const show = async (title: string, sql: string) => {
      const rows = (await client.query(sql)).rows;
      process.stdout.write(`  ${title}:\n${rows.map((r) => `    ${JSON.stringify(r)}`).join('\n')}\n`);
    };
    await show('certificates', "SELECT status, lease_owner IS NOT NULL AS leased, lease_until > now() AS lease_live, order_url IS NOT NULL AS has_order, count(*) FROM certificates GROUP BY 1, 2, 3, 4 ORDER BY 1");
    await show('jobs', "SELECT state, attempts, claimed_until > now() AS claim_live, due_at > now() AS later, left(last_error, 200) AS last_error, count(*) FROM jobs GROUP BY 1, 2, 3, 4, 5 ORDER BY 6 DESC LIMIT 20");
    await show('sessions', "SELECT state, wait_event_type, wait_event, left(query, 200) AS query, count(*) FROM pg_stat_activity WHERE datname = current_database() GROUP BY 1, 2, 3, 4");
  } finally {
    await client.end();
  }
  return deadlock;
}

/**
 * A bare run (bareAcmeRate) once the plane is idle (settle), or the deadlock of Pebble's that
 * stopped it, said so; any other failure is thrown.
 */
async function bareRunOnIdlePlane(
  at: { pebble: LocalPebble; plane: RunningProcess; pebbleLog: string; part: string },
  ...run: Parameters<typeof bareAcmeRate> extends [LocalPebble, ...infer Rest] ? Rest : never
): Promise<{ run: Awaited<ReturnType<typeof bareAcmeRate>> } | { deadlock: string }> {
  try {
    await settle(at.plane);
    return { run: await bareAcmeRate(at.pebble, ...run) };
  } catch (error) {
    const deadlock = await deadlocked(at.pebble, at.pebbleLog, `${at.part}: the bare client's run stopped (${(error as Error).message})`);
    if (!deadlock) throw error;
    return { deadlock };
  }
}

/** Asks Pebble whether it deadlocked (askPebble, which stops it), prints `what` with the answer, and returns the deadlock if it did. */
async function deadlocked(pebble: LocalPebble, pebbleLog: string, what: string): Promise<string | undefined> {
  const { deadlock, verdict } = await askPebble(pebble, pebbleLog);
  process.stdout.write(`\n${what}; ${verdict}\n`);
  return deadlock;
}

/** The failed certificates (up to 50): whether every one failed for a CA that did not answer (what Pebble's deadlock looks like), and their typed failures and messages. */
async function whyFailed(url: string): Promise<{ allUnreachable: boolean; text: string }> {
  const page = (await (await fetch(`${url}/v1/instances?status=failed&limit=50`)).json()) as any;
  const items: any[] = page.items ?? [];
  return {
    allUnreachable: items.length > 0 && items.every((item) => item.certificate?.failure?.code === 'ACME_UNREACHABLE'),
    text: items.slice(0, 5).map((item) => `${item.name}: ${JSON.stringify(item.certificate?.failure)} ${item.certificate?.lastError}`).join('; ') || JSON.stringify(page).slice(0, 500),
  };
}

/**
 * End-to-end issuance through real agents (http-01 answered by each agent on its own
 * loopback address) against local Pebble, for each of `rounds` (agent counts, the largest
 * decides how many agents start), beside bare acme-client at the same concurrency on the
 * same Pebble with http-01. One plane per engine serves every round.
 */
export async function benchEndToEnd(rounds: readonly number[], engine: BenchEngine): Promise<void> {
  // As for the campaign: a round whose CA deadlocked measured Pebble, not certplane; it and
  // the rounds after it are run once more on a fresh Pebble and plane.
  const stopped = await endToEndOnce(rounds, engine);
  if (!stopped) return;
  process.stdout.write(`  ${stopped.deadlock}. The rounds from ${stopped.remaining[0]} agents on are run again on a fresh Pebble:\n`);
  const again = await endToEndOnce(stopped.remaining, engine);
  if (again) throw new Error(`${again.deadlock} again`);
}

/** The rounds on one Pebble and plane; when Pebble deadlocks, why and the rounds not measured. */
async function endToEndOnce(rounds: readonly number[], engine: BenchEngine): Promise<{ deadlock: string; remaining: readonly number[] } | undefined> {
  const agentCount = Math.max(...rounds);
  const dir = await scratch('certplane-bench-e2e-');
  // Outside the scratch directory: kept when Pebble deadlocks, for its goroutine dump.
  const pebbleLog = join(tmpdir(), `certplane-bench-${process.pid}-${engine}-${Date.now()}-e2e-pebble.log`);
  let keepPebbleLog = false;
  const pebble: LocalPebble = await startPebble({ alternateRoots: 2, logFile: pebbleLog });
  const database = await databaseFor(engine);
  const preferred = parseCertificateBundle((await pebble.roots())[1]!)[0]!;
  const trustPath = await dir.write('root.pem', preferred.pem);
  const { plane, url } = await startPlane({
    CERTPLANE_DATABASE_URL: database.url,
    CERTPLANE_SECRETS: `file:${dir.path('secrets')}`,
    CERTPLANE_ACME_DIRECTORY: pebble.directoryUrl,
    CERTPLANE_ACME_CA_CERTS: pebble.acmeServerCaPath,
    CERTPLANE_PREFERRED_CHAINS: JSON.stringify([preferred.subjectCN]),
    CERTPLANE_TRUST_STORE: trustPath,
    CERTPLANE_ISSUANCE_CONCURRENCY: String(agentCount),
    // Not binding, as for the campaign: every name is under bench.test, and the default
    // certificates-per-domain bucket (50, like Let's Encrypt's) parked the 100-agent round
    // after its 49th order (the round then never finished).
    CERTPLANE_RATE_LIMITS: NON_BINDING_RATE_LIMITS,
  });
  const logger = pino({ level: 'silent' });
  const running: { client: AgentClient; http01: Http01Responder }[] = [];
  try {
    const instanceIds: string[] = [];
    for (let i = 0; i < agentCount; i += 1) {
      const host = `e2e${i}.bench.test`;
      const address = `127.0.${1 + Math.floor(i / 250)}.${(i % 250) + 1}`;
      await pebble.resolve(host, address);
      const instance = await post(`${url}/v1/instances`, { name: host, hostnames: [host], autoIssue: false });
      const state = await openState(dir.path(`agent-${i}`));
      const identity = await enroll(state, url, instance.enrollmentToken);
      const http01 = new Http01Responder({ host: address, port: pebble.http01Port });
      await http01.start();
      const client = new AgentClient({ state, identity, installer: new Installer({ state, trustAnchors: [preferred], logger }), http01, logger });
      client.start();
      running.push({ client, http01 });
      instanceIds.push(instance.id);
    }
    await eventually(async () => {
      for (const id of instanceIds) if (!((await (await fetch(`${url}/v1/instances/${id}`)).json()) as any).agent.connected) return undefined;
      return true;
    }, 60_000, 100, 'agents to connect');
    const installedAll = async (ids: readonly string[], previous: Map<string, string | undefined>) =>
      eventually(async () => {
        for (const id of ids) {
          const view = (await (await fetch(`${url}/v1/instances/${id}`)).json()) as any;
          if (view.certificate?.status === 'failed') throw new Error(view.certificate.lastError);
          if (view.certificate?.status !== 'installed' || view.certificate.id === previous.get(id)) return undefined;
        }
        return true;
      }, 300_000, 50, 'every agent to install');
    const currentCertificates = async (ids: readonly string[]) =>
      new Map(await Promise.all(ids.map(async (id) => [id, (((await (await fetch(`${url}/v1/instances/${id}`)).json()) as any).certificate?.id as string | undefined)] as const)));
    // Warm-up, untimed, as the bare client's account exists before its clock starts: the plane's ACME account and first order.
    await post(`${url}/v1/instances/${instanceIds[0]}/issue`);
    await installedAll([instanceIds[0]!], new Map());

    for (const [round, count] of rounds.entries()) {
      const ids = instanceIds.slice(0, count);
      let before = await stageHistogram(url);
      const warmupWaves = round === 0 ? E2E_WARMUP_WAVES : 0;
      const warmups: { bare: number; certplane: number }[] = [];
      const defaultChainOnly: number[] = [];
      const bareCpu: CpuUse[] = [];
      const planeCpu: CpuUse[] = [];
      const waves: { bare: number; certplane: number; load: number }[] = [];
      let stopped: string | undefined;
      let installed = 0;
      // A bare run, or the deadlock of Pebble's that stopped it.
      const bareRun = async (preferredRootCN: string | undefined, prefix: string) => {
        const outcome = await bareRunOnIdlePlane({ pebble, plane, pebbleLog, part: `end-to-end issuance on ${engine}, ${count} agents` }, preferredRootCN, count, prefix, count, 'http-01');
        if ('deadlock' in outcome) keepPebbleLog = true;
        return outcome;
      };
      for (let wave = -warmupWaves; wave < E2E_WAVES && !stopped; wave += 1) {
        const baseline = await bareRun(preferred.subjectCN, `bare${count}-`);
        if ('deadlock' in baseline) return { deadlock: baseline.deadlock, remaining: rounds.slice(round) };
        const bare = baseline.run;
        const previous = await currentCertificates(ids);
        const cpuBefore = await cpuUse(pebble, plane);
        const started = performance.now();
        await Promise.all(ids.map((id) => post(`${url}/v1/instances/${id}/issue`)));
        // Timed by one summary query per probe (the latest certificate of each instance is the
        // new one from here on): walking every instance per probe would load the plane it measures.
        // Bounded: past BENCH_E2E_SECONDS the round reports how far it got and where the rest stand.
        const deadline = started + E2E_SECONDS * 1000;
        let summary: any;
        for (;;) {
          summary = (await (await fetch(`${url}/v1/instances/summary`)).json()) as any;
          if (summary.byStatus.failed > 0) {
            // Only ACME_UNREACHABLE can be Pebble's deadlock; any other failure is certplane's own.
            const why = await whyFailed(url);
            const deadlock = why.allUnreachable ? await deadlocked(pebble, pebbleLog, `end-to-end issuance on ${engine}, ${count} agents: ${summary.byStatus.failed} failed (${why.text})`) : undefined;
            if (!deadlock) throw new Error(`${summary.byStatus.failed} failed: ${why.text}`);
            keepPebbleLog = true;
            return { deadlock, remaining: rounds.slice(round) };
          }
          if (summary.byStatus.installed >= count || performance.now() > deadline) break;
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
        const complete = summary.byStatus.installed >= count;
        const done = complete ? count : summary.byStatus.installed;
        const rate = done / ((performance.now() - started) / 1000);
        if (wave < 0) {
          // Warm-up: shown, not counted; the stage histogram starts after it.
          warmups.push({ bare: bare.rate, certplane: rate });
        } else {
          installed += done;
          waves.push({ bare: bare.rate, certplane: rate, load: loadavg()[0]! });
          bareCpu.push(bare.cpu);
          planeCpu.push(cpuSince(cpuBefore, await cpuUse(pebble, plane)));
        }
        if (complete) await installedAll(ids, previous);
        else stopped = `INCOMPLETE after ${E2E_SECONDS} s, instances by status: ${JSON.stringify(summary.byStatus)}`;
        if (wave >= 0 && complete) {
          // The reference line's run comes after certplane's wave, so each wave sits right beside its own same-job baseline.
          const reference = await bareRun(undefined, `bare${count}-default-`);
          if ('deadlock' in reference) return { deadlock: reference.deadlock, remaining: rounds.slice(round) };
          defaultChainOnly.push(reference.run.rate);
        }
        if (wave < 0) before = await stageHistogram(url);
      }
      // A warm-up wave that did not finish measured nothing: the bench fails rather than report a round it did not run.
      if (waves.length === 0) throw new Error(`end-to-end issuance on ${engine}, ${count} agents: the warm-up wave did not finish (${stopped})`);
      const ratios = waves.map((w) => w.certplane / w.bare);
      process.stdout.write(
        `\nend-to-end issuance on ${engine}: CSR from the agent to its installed acknowledgement (${count} agents at once, http-01 by the agents; ${waves.length} waves, each beside its own bare run; load average ${waves.map((w) => w.load.toFixed(1)).join(', ')})\n`,
      );
      for (const w of warmups) line(`  warm-up wave, not counted: bare / certplane`, `${w.bare.toFixed(2)} /s / ${w.certplane.toFixed(2)} /s  (${(w.certplane / w.bare).toFixed(2)} x)`);
      waves.forEach((w, i) => line(`  wave ${i + 1}: bare acme-client auto(), ${count} at a time, ${BARE_TUNING}, preferred chain / certplane`, `${w.bare.toFixed(2)} /s / ${w.certplane.toFixed(2)} /s  (${ratios[i]!.toFixed(2)} x)`));
      line(`  certplane, median of the waves`, `${median(ratios).toFixed(2)} x baseline${stopped ? `  ${stopped}` : ''}`);
      // For reference, not the same job: the bare client that takes the default chain, whichever root it leads to.
      const referenceRatios = defaultChainOnly.map((rate, i) => waves[i]!.certplane / rate);
      line(`  reference, not the same job: bare, default chain only`, `${defaultChainOnly.map((r) => r.toFixed(2)).join(', ')} /s; certplane median ${median(referenceRatios).toFixed(2)} x`);
      printCpu(engine, sumCpu(bareCpu), count * bareCpu.length, sumCpu(planeCpu), Math.max(1, installed));
      printStages(before, await stageHistogram(url));
      if (stopped) break;
    }
    return undefined;
  } finally {
    for (const { client, http01 } of running) {
      await client.stop();
      await http01.stop();
    }
    await plane.stop();
    await pebble.stop();
    await database.drop();
    await dir.remove();
    if (!keepPebbleLog) await rm(pebbleLog, { force: true });
  }
}
