/**
 * `npm run bench:e2e`: only the end-to-end parts of `npm run bench` (fleet.ts), so the
 * issuance path can be measured and profiled without the minutes the other parts take.
 * The same switches as run.ts: BENCH_ENGINES (pglite,postgres), BENCH_E2E_AGENTS (20,100;
 * empty or 0 for none), BENCH_CAMPAIGN_INSTANCES (1000; 0 for none), BENCH_CAMPAIGN_CONCURRENCY
 * (50), BENCH_CAMPAIGN_SECONDS (600), BENCH_E2E_WAVES (3), BENCH_BARE_NONCES (0 for
 * acme-client's own nonces in the baseline); CERTPLANE_ORDER_BEFORE_CSR (the
 * planes' own, when set); BENCH_PLANE_NODE_OPTIONS
 * profiles the plane.
 */
import { cpus, loadavg } from 'node:os';
import { benchFleetParts, type BenchEngine } from './fleet.js';

const load = () => loadavg().map((l) => l.toFixed(2)).join(' ');
process.stdout.write(`certplane bench (end to end only): node ${process.version}, ${cpus().length} x ${cpus()[0]?.model ?? 'unknown CPU'}, load average ${load()}\n`);
const engines = (process.env.BENCH_ENGINES ?? 'pglite,postgres').split(',') as BenchEngine[];
await benchFleetParts(engines);
process.stdout.write(`load average at the end: ${load()}\n`);
// The report is complete, and the bench does not wait for what a stopped part may have left
// running: a run on 2026-12-03 whose two campaign parts had met Pebble's deadlock printed its
// report and had not exited 4 minutes later, when it was killed.
process.exit(0);
