/**
 * `node dist/test/bench/pebble-stress.js [orders] [at a time]`: whether a Pebble stalls under
 * the requests that met its store's deadlock. Each worker makes an order and reads its
 * authorizations four times (POST-as-GET), the tuned bare client of the bench doing it
 * (8,000 orders, 100 at a time, by default). Debian's Pebble 2.4.0
 * (`CERTPLANE_DEVENV_PEBBLE=pebble`) hung in three of four runs on 2026-12-04; the build of
 * infra/pebble/build.sh is the default. Prints how many orders finished and how long it took.
 * When a request gives up (after 30 s) it asks Pebble for its goroutines and says whether
 * they show the store's deadlock (test/support/pebble-deadlock.ts), then exits 1.
 */
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { pebbleBinary, startPebble } from '../../src/devenv/pebble.js';
import { askPebble } from '../support/pebble-deadlock.js';
import { tunedBareClient } from './fleet.js';

const count = Number(process.argv[2] ?? 8000);
const concurrency = Number(process.argv[3] ?? 100);
const logFile = join(await mkdtemp(join(tmpdir(), 'certplane-pebble-stress-')), 'pebble.log');
const pebble = await startPebble({ alternateRoots: 0, logFile });
let next = 0;
let done = 0;
let failure: string | undefined;
const started = performance.now();
try {
  const bare = await tunedBareClient(pebble);
  const worker = async () => {
    while (next < count && !failure) {
      const order = await bare.createOrder({ identifiers: [{ type: 'dns', value: `s${next++}.stress.test` }] });
      for (let read = 0; read < 4; read += 1) await bare.getAuthorizations(order);
      done += 1;
    }
  };
  await Promise.all(
    Array.from({ length: concurrency }, () =>
      worker().catch((error: unknown) => {
        failure ??= `a request gave up after ${done} orders: ${(error as Error).message}`;
      }),
    ),
  );
  if (failure) failure = `${failure}; ${(await askPebble(pebble, logFile)).verdict}`;
} finally {
  await pebble.stop();
}
const seconds = (performance.now() - started) / 1000;
const stamp = (() => {
  try {
    return ` (build ${readFileSync(`${pebbleBinary()}.source-sha256`, 'utf8').trim().slice(0, 12)})`;
  } catch {
    return '';
  }
})();
process.stdout.write(`${pebbleBinary()}${stamp}: ${done} of ${count} orders, ${concurrency} at a time, in ${seconds.toFixed(0)} s${failure ? `; ${failure}` : ''}\n`);
process.exit(failure ? 1 : 0);
