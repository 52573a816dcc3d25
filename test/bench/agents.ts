/**
 * The agents-on-one-plane section of `npm run bench` alone (agents-scale.ts):
 * `npx tsc -p . && BENCH_AGENTS=2000 node dist/test/bench/agents.js`. The same settings
 * as in the whole bench (BENCH_AGENTS, default 10,000; BENCH_AGENTS_ENGINE, `pglite` (a
 * directory, the default) or `postgres` (a fresh database on the local server, dropped
 * after); BENCH_AGENTS_DATABASE_URL; BENCH_AGENT_WORKERS; BENCH_AGENTS_PHASE_LIMIT_MS;
 * BENCH_AGENTS_TLS; BENCH_PLANE_NODE_OPTIONS; BENCH_AGENTS_KEEP=DIR keeps the enrolled fleet
 * between runs, so a later run of the same count skips registration and enrollment).
 */
import { benchAgentFleetOn } from './agents-scale.js';

await benchAgentFleetOn(Number(process.env.BENCH_AGENTS ?? 10_000));
