/**
 * Fleet metrics for `npm run bench`: what one scrape of /metrics costs over a fleet of
 * BENCH_METRICS_INSTANCES (10,000) instances, on each engine of BENCH_ENGINES. Each instance
 * has a history (two superseded certificates and the installed one, as renewals leave
 * it), a renewal time and a trust verdict (one in twenty broken), and a trust reload is in
 * the audit trail: the two queries of a scrape, then the whole exposition (queries, gauges,
 * text), beside a bare `SELECT id FROM instances` over the same rows as the floor any
 * per-instance figure pays.
 */
import { pathToFileURL } from 'node:url';
import { Registry } from 'prom-client';
import { FleetMetrics, metricsSource } from '../../src/api/metrics.js';
import { openStore, type Store } from '../../src/store/index.js';
import { freshPostgresDatabase } from '../support/postgres.js';

function line(label: string, value: string): void {
  process.stdout.write(`${label.padEnd(58)} ${value}\n`);
}

/** `instances` instances with three certificates each (the newest installed), a verdict each, and one trust reload in the audit trail. */
export async function seedFleet(store: Store, instances: number): Promise<void> {
  const batch = 2000;
  for (let start = 0; start < instances; start += batch) {
    const end = Math.min(start + batch, instances) - 1;
    await store.query(
      `WITH i AS (
         INSERT INTO instances (id, name, hostnames, cluster, key_algorithm, created_at)
         SELECT gen_random_uuid(), 'm' || n, ARRAY['m' || n || '.bench.example.com'], 'cluster-' || (n % 20), 'ecdsa-p256', now() - interval '90 days' + n * interval '1 ms'
         FROM generate_series($1::int, $2::int) AS n RETURNING id, name
       ), c AS (
         INSERT INTO certificates (id, instance_id, status, not_before, not_after, renew_at, created_at)
         SELECT gen_random_uuid(), i.id, CASE WHEN k = 2 THEN 'installed' ELSE 'superseded' END,
                now() - (3 - k) * interval '30 days', now() + (k * 30 - 15) * interval '1 day', now() + (k * 30 - 45) * interval '1 day', now() - (3 - k) * interval '30 days'
         FROM i CROSS JOIN generate_series(0, 2) AS k RETURNING id, instance_id, status
       )
       INSERT INTO instance_trust (instance_id, certificate_id, status, broken_profiles, alternate_chain_index, evaluated_at, trust_fingerprint)
       SELECT c.instance_id, c.id, CASE WHEN substring(i.name from 2)::int % 20 = 0 THEN 'broken' ELSE 'ok' END, ARRAY[]::text[], NULL, now(), 'bench'
       FROM c JOIN i ON i.id = c.instance_id WHERE c.status = 'installed'`,
      [start, end],
    );
  }
  await store.audit.record({ actor: 'bench', action: 'trust.reload', target: 'bench', reason: 'bench', details: { broken: Math.floor(instances / 20), alternateAvailable: 0 } });
  await store.query('ANALYZE');
}

/** The median of `runs` timings of `fn`, in seconds. */
async function median(runs: number, fn: () => Promise<unknown>): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < runs; i += 1) {
    const started = performance.now();
    await fn();
    times.push((performance.now() - started) / 1000);
  }
  return times.sort((a, b) => a - b)[Math.floor(runs / 2)] as number;
}

export async function benchFleetMetrics(instances: number, engines: readonly ('pglite' | 'postgres')[], runs = 9): Promise<void> {
  for (const engine of engines) {
    const database = engine === 'postgres' ? await freshPostgresDatabase('certplane_bench_metrics') : undefined;
    const store = await openStore(database?.url ?? 'memory:');
    try {
      const seedStarted = performance.now();
      await seedFleet(store, instances);
      const seeded = (performance.now() - seedStarted) / 1000;
      const source = metricsSource(new Registry(), new FleetMetrics({ store, clock: () => new Date() }));
      const exposition = await source.metrics();
      const series = exposition.split('\n').filter((l) => l.startsWith('certplane_')).length;
      const floor = await median(runs, () => store.query('SELECT id FROM instances'));
      const queries = await median(runs, () => Promise.all([store.fleet.instances(), store.fleet.lastTrustReload()]));
      const whole = await median(runs, () => source.metrics());
      process.stdout.write(`\nfleet metrics, one scrape (${instances} instances, 3 certificates each, ${engine}; seeded in ${seeded.toFixed(1)} s; ${series} series, ${(exposition.length / 1024).toFixed(0)} KiB)\n`);
      line('  baseline: SELECT id FROM instances', `${(floor * 1000).toFixed(1)} ms`);
      line('  the two fleet queries', `${(queries * 1000).toFixed(1)} ms  (${(queries / floor).toFixed(1)} x baseline)`);
      line('  the whole /metrics exposition (queries, gauges, text)', `${(whole * 1000).toFixed(1)} ms  (${(whole / floor).toFixed(1)} x baseline)`);
    } finally {
      await store.close();
      await database?.drop();
    }
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  await benchFleetMetrics(Number(process.env.BENCH_METRICS_INSTANCES ?? 10_000), (process.env.BENCH_ENGINES ?? 'pglite,postgres').split(',') as ('pglite' | 'postgres')[]);
}
