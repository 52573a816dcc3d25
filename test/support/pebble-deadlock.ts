/**
 * Pebble 2.4.0 (Debian's package) can deadlock under concurrent orders, a lock-order
 * inversion in its in-memory store:
 * - newOrder's makeAuthorizations calls MemoryStore.FindValidAuthorization, which holds the
 *   store's read lock while it read-locks every authorization in turn; GetOrderByID (new
 *   orders, order polls, finalize) and GetOrdersByAccountID hold it while they read each
 *   authorization's status and lock the order;
 * - the Authz handler (a POST-as-GET of an authorization) holds that authorization's write
 *   lock while it looks the account up (getAcctByKey), which needs the store's read lock;
 * - a second newOrder waiting for the store's write lock (AddOrder, AddAuthorization) makes
 *   Go's RWMutex refuse new readers, so the handler never gets it, the store's reader never
 *   gets the authorization or order, and every request that touches the store waits forever.
 * The directory (no store) still answers. Upstream's wfe.go still takes the locks in this
 * order; the suites' Pebble is built with infra/pebble/store-lock-order.patch, which takes
 * all three reads out of the store's lock. A run that meets it measured Pebble, not the
 * client: this reads a goroutine dump (Pebble's output after SIGQUIT) and says whether it
 * shows that cycle.
 */
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import type { LocalPebble } from '../../src/devenv/pebble.js';

export function pebbleStoreDeadlock(goroutineDump: string): string | undefined {
  const goroutines = goroutineDump.split(/\n\s*\n(?=goroutine \d+ )/);
  const waiting = (g: string) => /^goroutine \d+ \[semacquire/.test(g);
  // The store's reader must be waiting for an object's lock, not for the store's own: an
  // order's status read waits inside Order.GetStatus (an authorization's lock) or on the
  // order's write lock; a wait for the store's read lock alone is a queue, not this cycle.
  const finder = goroutines.some(
    (g) =>
      waiting(g) &&
      (/RWMutex\)\.RLock[\s\S]*MemoryStore\)\.FindValidAuthorization\(/.test(g) ||
        /(?:RWMutex\)\.RLock[\s\S]*\(\*Order\)\.GetStatus|RWMutex\)\.Lock\()[\s\S]*MemoryStore\)\.(?:GetOrderByID|GetOrdersByAccountID)\(/.test(g)),
  );
  const authz = goroutines.some((g) => waiting(g) && /MemoryStore\)\.GetAccountByKey[\s\S]*getAcctByKey[\s\S]*WebFrontEndImpl\)\.Authz\(/.test(g));
  if (!finder || !authz) return undefined;
  return "Pebble deadlocked (its store's lock-order inversion: a read of the store (newOrder's FindValidAuthorization, or an order's status) holds the store's read lock waiting for an authorization that a POST-as-GET of it holds while it waits for the store's read lock behind a queued writer); every request touching its store hangs until it is restarted";
}

/** What a stalled run's Pebble said: the deadlock it shows, if any, and the verdict to print (with where its dump is). */
export interface PebbleAnswer {
  readonly deadlock: string | undefined;
  readonly verdict: string;
}

/**
 * What a stalled run's Pebble says: sends it SIGQUIT (Go then writes every goroutine's stack
 * and exits), waits for the dump in `logFile` (startPebble's option) and returns whether it
 * deadlocked, with the verdict. Pebble is gone afterwards: for a run that has failed already.
 */
export async function askPebble(pebble: LocalPebble, logFile: string): Promise<PebbleAnswer> {
  // pids: challtestsrv's, then Pebble's.
  const pid = pebble.pids[1];
  if (pid === undefined) return { deadlock: undefined, verdict: 'Pebble has no process to ask' };
  try {
    process.kill(pid, 'SIGQUIT');
  } catch (error) {
    return { deadlock: undefined, verdict: `Pebble could not be asked for its goroutines (${(error as Error).message})` };
  }
  let dump = '';
  for (let waited = 0; waited < 5000 && !/^goroutine \d+ /m.test(dump); waited += 250) {
    await sleep(250);
    dump = await readFile(logFile, 'utf8').catch(() => '');
  }
  await sleep(500);
  dump = await readFile(logFile, 'utf8').catch(() => dump);
  const deadlock = pebbleStoreDeadlock(dump);
  const where = ` (its log and dump: ${logFile})`;
  return { deadlock: deadlock && `${deadlock}${where}`, verdict: `${deadlock ?? 'Pebble shows no store deadlock in its goroutine dump'}${where}` };
}

/** askPebble's verdict alone, for a stalled test's report. */
export async function pebbleVerdict(pebble: LocalPebble, logFile: string): Promise<string> {
  return (await askPebble(pebble, logFile)).verdict;
}
