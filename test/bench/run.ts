/**
 * `npm run bench`: throughput figures, each beside a baseline measured in the same run
 * on the same machine, because these machines are shared and noisy and only ratios
 * travel. Every loop is bounded by count and by time.
 *
 * 1. Chain verification: 3-certificate chains (leaf, intermediate, root anchor) per
 *    second through verifyChain, beside the bare node:crypto signature checks the same
 *    chain needs (the floor any verifier pays).
 *    Then verification at 1 and 100 names, and the longest CSR parse the size cap allows.
 * 2. Issuance against local Pebble: certplane's AcmeIssuer (all chains downloaded,
 *    selected, verified) beside a tuned bare acme-client `auto()` loop (fleet.ts's
 *    tunedBareClient: nonces reused, connections kept), both with dns-01 through
 *    pebble-challtestsrv, both polling every 200 ms.
 * 3. Fleet: agents per management-plane process, memory per agent and the reconnect
 *    storm after a restart (agents-scale.ts, BENCH_AGENTS); then (fleet.ts) on each
 *    engine of BENCH_ENGINES (pglite,postgres) end-to-end issuance through agents at
 *    each count of BENCH_E2E_AGENTS (20,100, empty or 0 for none; BENCH_E2E_WAVES waves
 *    each after one warm-up wave, the median ratio reported), and a reissue campaign of
 *    BENCH_CAMPAIGN_INSTANCES (1000, 0 for none; after an untimed warm-up campaign as large
 *    as its concurrency) at BENCH_CAMPAIGN_CONCURRENCY (50) orders at a time,
 *    bounded by BENCH_CAMPAIGN_SECONDS (600); each beside bare acme-client at the same
 *    concurrency (tunedBareClient), and followed by the plane's stage histogram.
 *    BENCH_BARE_NONCES=0 gives the baseline acme-client's own nonces.
 *    `npm run bench:e2e` (e2e.ts) runs only these end-to-end parts. The agents of these
 *    parts share this process, so the npm scripts give it UV_THREADPOOL_SIZE=64: each real
 *    agent has a process (and libuv's 4 threads for its fsyncs and key generation) of its own.
 * 4. Trust (trust.ts): first-sight parse-and-verify beside node:crypto's own
 *    (BENCH_FIRST_SIGHT_LEAVES, 500), and a what-if and a reload over a fleet of
 *    BENCH_WHATIF_INSTANCES (10,000) on each engine of BENCH_ENGINES.
 * 5. Fleet metrics (metrics.ts): one /metrics scrape over BENCH_METRICS_INSTANCES (10,000)
 *    instances on each engine of BENCH_ENGINES, beside a bare read of the instances' ids.
 */
import { cpus, totalmem } from 'node:os';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_MAX_NAMES_PER_CERTIFICATE, MAX_CSR_PEM_BYTES, clearCertificateCache, parseCertificateBundle, parseCsr, verifyChain } from '../../src/chain/index.js';
import { AcmeIssuer } from '../../src/acme/issuer.js';
import { ChalltestsrvDnsProvider } from '../../src/acme/dns/challtestsrv.js';
import { Dns01Solver } from '../../src/acme/solver.js';
import { createCsr, generateKeyPair } from '../../src/pki/factory.js';
import { startPebble } from '../../src/devenv/pebble.js';
import { FileSecretStore } from '../../src/secrets/index.js';
import { createLogger } from '../../src/log/logger.js';
import { intermediate, leaf, root } from '../support/hierarchies.js';
import { BARE_TUNING, barePreferredChain, benchFleetParts, requirePreferredRoot, tunedBareClient, type BenchEngine } from './fleet.js';
import { benchAgentFleetOn } from './agents-scale.js';
import { benchFirstSight, benchWhatIf } from './trust.js';
import { benchFleetMetrics } from './metrics.js';

const VERIFY_SECONDS = Number(process.env.BENCH_VERIFY_SECONDS ?? 3);
const ISSUE_COUNT = Number(process.env.BENCH_ISSUE_COUNT ?? 20);
const ISSUE_SECONDS = Number(process.env.BENCH_ISSUE_SECONDS ?? 60);

/** Runs `fn` repeatedly for about `seconds` (and at most `maxIterations`); returns operations per second. */
async function rate(fn: () => unknown | Promise<unknown>, seconds: number, maxIterations = 10_000_000): Promise<{ perSecond: number; iterations: number }> {
  const deadline = performance.now() + seconds * 1000;
  const started = performance.now();
  let iterations = 0;
  while (performance.now() < deadline && iterations < maxIterations) {
    await fn();
    iterations += 1;
  }
  return { perSecond: iterations / ((performance.now() - started) / 1000), iterations };
}

function line(label: string, value: string): void {
  process.stdout.write(`${label.padEnd(58)} ${value}\n`);
}

async function benchVerification(): Promise<void> {
  const anchor = await root('Bench Root');
  const issuing = await intermediate('Bench Intermediate', anchor);
  const server = await leaf(issuing, ['bench.example.com']);
  const bundleText = server.cert.pem + issuing.pem;
  const bundle = parseCertificateBundle(bundleText);
  const anchors = parseCertificateBundle(anchor.pem);
  const [leafCert, intermediateCert] = bundle as [(typeof bundle)[0], (typeof bundle)[0]];
  const at = new Date();
  const options = { trustAnchors: anchors, at, hostnames: ['bench.example.com'] };
  if (!verifyChain(bundle, options).ok) throw new Error('bench chain does not verify');

  const baseline = await rate(() => leafCert.native.verify(intermediateCert.publicKey) && intermediateCert.native.verify(anchors[0]!.publicKey), VERIFY_SECONDS);
  const engine = await rate(() => verifyChain(bundle, options), VERIFY_SECONDS);
  const fromPem = await rate(() => verifyChain(parseCertificateBundle(bundleText), options), VERIFY_SECONDS);
  const firstSight = await rate(() => {
    clearCertificateCache();
    return verifyChain(parseCertificateBundle(bundleText), options);
  }, VERIFY_SECONDS);
  process.stdout.write('\nchain verification (ECDSA P-256, leaf + intermediate + root anchor, one core)\n');
  line('  baseline: bare node:crypto signature checks', `${baseline.perSecond.toFixed(0)} /s`);
  line('  verifyChain on parsed certificates', `${engine.perSecond.toFixed(0)} /s  (${(engine.perSecond / baseline.perSecond).toFixed(2)} x baseline)`);
  line('  parse PEM + verifyChain, chain seen before (memoised parse)', `${fromPem.perSecond.toFixed(0)} /s  (${(fromPem.perSecond / baseline.perSecond).toFixed(2)} x baseline)`);
  line('  parse PEM + verifyChain, first sight (memo cleared)', `${firstSight.perSecond.toFixed(0)} /s  (${(firstSight.perSecond / baseline.perSecond).toFixed(2)} x baseline)`);
}

/**
 * What one agent's CSR can cost the event loop now that names and size are capped: leaf
 * verification at 1 and 100 names (linear: Set lookups), and parseCsr on the worst request
 * the size cap lets through (as many one-letter SAN entries as fit), which bounds one request.
 */
async function benchNames(): Promise<void> {
  const anchor = await root('Bench Names Root');
  const issuing = await intermediate('Bench Names Intermediate', anchor);
  const anchors = parseCertificateBundle(anchor.pem);
  const at = new Date();
  process.stdout.write('\nnames per certificate (parsed leaf, every name requested; CSR parse includes its signature check)\n');
  const perName: number[] = [];
  for (const count of [1, DEFAULT_MAX_NAMES_PER_CERTIFICATE]) {
    const names = Array.from({ length: count }, (_, i) => `db${i}.bench.example.com`);
    const bundle = parseCertificateBundle((await leaf(issuing, names)).cert.pem + issuing.pem);
    const options = { trustAnchors: anchors, at, hostnames: names };
    if (!verifyChain(bundle, options).ok) throw new Error(`bench chain with ${count} names does not verify`);
    const verified = await rate(() => verifyChain(bundle, options), VERIFY_SECONDS);
    perName.push(verified.perSecond);
    line(`  verifyChain, leaf with ${count} name${count === 1 ? '' : 's'}`, `${verified.perSecond.toFixed(0)} /s${perName.length > 1 ? `  (${(verified.perSecond / perName[0]!).toFixed(2)} x the 1-name rate)` : ''}`);
  }
  const key = await generateKeyPair();
  let entries = Math.floor(MAX_CSR_PEM_BYTES / 4);
  let worst = await createCsr(key, Array(entries).fill('a'));
  while (Buffer.byteLength(worst) > MAX_CSR_PEM_BYTES) {
    entries = Math.floor(entries * 0.97);
    worst = await createCsr(key, Array(entries).fill('a'));
  }
  const typical = await createCsr(key, Array.from({ length: DEFAULT_MAX_NAMES_PER_CERTIFICATE }, (_, i) => `db${i}.bench.example.com`));
  const parseTime = async (pem: string) => {
    const started = performance.now();
    await parseCsr(pem).catch(() => undefined);
    return performance.now() - started;
  };
  for (const [label, pem] of [[`${DEFAULT_MAX_NAMES_PER_CERTIFICATE} names`, typical], [`${entries} one-letter entries in ${Buffer.byteLength(worst)} bytes (refused: too many)`, worst]] as const) {
    const times: number[] = [];
    for (let i = 0; i < 5; i += 1) times.push(await parseTime(pem));
    line(`  parseCsr, ${label}`, `${Math.min(...times).toFixed(1)} ms best, ${Math.max(...times).toFixed(1)} ms worst of 5`);
  }
}

async function benchIssuance(): Promise<void> {
  const pebble = await startPebble({ alternateRoots: 2 });
  const work = await mkdtemp(join(tmpdir(), 'certplane-bench-'));
  try {
    const roots = (await pebble.roots()).flatMap((pem) => parseCertificateBundle(pem));
    const preferred = roots[2]!;
    const issuer = new AcmeIssuer({
      directoryUrl: pebble.directoryUrl,
      serverCaPem: pebble.acmeServerCaPem,
      secrets: await FileSecretStore.open(join(work, 'secrets')),
      solvers: [new Dns01Solver(new ChalltestsrvDnsProvider(pebble.challtestsrvUrl))],
      chainPolicy: { preferences: [preferred.subjectCN], fallback: 'none', trustAnchors: [preferred], distrustedSpkiSha256: new Set() },
      logger: createLogger('silent'),
      pollMinMs: 200,
    });
    // acme-client's axios settings are module-wide: from here both clients share the bare
    // client's connection pool, and the bare client runs under the issuer's settings (no
    // retries inside acme-client, certplane's unanswered-request interceptor), as the
    // end-to-end parts' bare client does after this part in `npm run bench`.
    const bare = await tunedBareClient(pebble);
    const txt = (path: string, body: object) => fetch(`${pebble.challtestsrvUrl}${path}`, { method: 'POST', body: JSON.stringify(body) });
    const csrs = async (prefix: string) => Promise.all(Array.from({ length: ISSUE_COUNT }, async (_, i) => createCsr(await generateKeyPair(), [`${prefix}${i}.bench.test`])));

    const bareCsrs = await csrs('bare');
    let next = 0;
    const bareChains: string[] = [];
    const baseline = await rate(
      async () =>
        void bareChains.push(await bare.auto({
          csr: bareCsrs[next++] as string,
          termsOfServiceAgreed: true,
          ...barePreferredChain(preferred.subjectCN),
          challengePriority: ['dns-01'],
          skipChallengeVerification: true,
          challengeCreateFn: async (authz, _challenge, keyAuthorization) => void (await txt('/set-txt', { host: `_acme-challenge.${authz.identifier.value}.`, value: keyAuthorization })),
          challengeRemoveFn: async (authz) => void (await txt('/clear-txt', { host: `_acme-challenge.${authz.identifier.value}.` })),
        })),
      ISSUE_SECONDS,
      ISSUE_COUNT,
    );
    requirePreferredRoot(bareChains, preferred.subjectCN);
    const ourCsrs = await csrs('certplane');
    next = 0;
    const ours = await rate(() => issuer.issue(ourCsrs[next++] as string), ISSUE_SECONDS, ISSUE_COUNT);
    process.stdout.write(`\nissuance against local Pebble (sequential, dns-01 via challtestsrv, ${pebble.directoryUrl})\n`);
    line(`  baseline: bare acme-client auto(), ${BARE_TUNING}, preferred chain, ${baseline.iterations} certificates`, `${baseline.perSecond.toFixed(2)} /s`);
    line(`  certplane AcmeIssuer (3 chains fetched, selected, verified), ${ours.iterations}`, `${ours.perSecond.toFixed(2)} /s  (${(ours.perSecond / baseline.perSecond).toFixed(2)} x baseline)`);
  } finally {
    await pebble.stop();
    await rm(work, { recursive: true, force: true });
  }
}

process.stdout.write(`certplane bench: node ${process.version}, ${cpus().length} x ${cpus()[0]?.model ?? 'unknown CPU'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB\n`);
await benchVerification();
await benchFirstSight(Number(process.env.BENCH_FIRST_SIGHT_LEAVES ?? 500));
const engines = (process.env.BENCH_ENGINES ?? 'pglite,postgres').split(',') as BenchEngine[];
await benchWhatIf(Number(process.env.BENCH_WHATIF_INSTANCES ?? 10_000), engines);
await benchFleetMetrics(Number(process.env.BENCH_METRICS_INSTANCES ?? 10_000), engines);
await benchNames();
await benchIssuance();
await benchAgentFleetOn(Number(process.env.BENCH_AGENTS ?? 10_000));
await benchFleetParts(engines);
// The report is complete: as in e2e.ts, what a stopped part left running does not hold the bench.
process.exit(0);
