/**
 * `node dist/test/bench/pebble-stress.js [orders] [at a time]`: whether a Pebble stalls under
 * the requests that met its store's deadlock. Each worker makes an order and reads its
 * authorizations four times (POST-as-GET), the tuned bare client of the bench doing it
 * (8,000 orders, 100 at a time, by default). Debian's Pebble 2.4.0
 * (`CERTPLANE_DEVENV_PEBBLE=pebble`) hung in two of three runs on 2026-12-04; the build of
 * infra/pebble/build.sh is the default. Prints how many orders finished and how long it took;
 * exits 1 when a request gave up (after 30 s), which is how the deadlock shows.
 */
import { startPebble } from '../../src/devenv/pebble.js';
import { tunedBareClient } from './fleet.js';

const count = Number(process.argv[2] ?? 8000);
const concurrency = Number(process.argv[3] ?? 100);
const pebble = await startPebble({ alternateRoots: 0 });
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
} finally {
  await pebble.stop();
}
const seconds = (performance.now() - started) / 1000;
process.stdout.write(`${process.env.CERTPLANE_DEVENV_PEBBLE || 'the default Pebble'}: ${done} of ${count} orders, ${concurrency} at a time, in ${seconds.toFixed(0)} s${failure ? `; ${failure}` : ''}\n`);
process.exit(failure ? 1 : 0);
