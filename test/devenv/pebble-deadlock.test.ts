/**
 * Reading a Pebble goroutine dump for its store's deadlock (test/support/pebble-deadlock.ts):
 * the three goroutines below are from a real one, a 1,000-instance bench campaign on
 * 2026-12-03 whose every order timed out while Pebble's directory still answered.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { readFile } from 'node:fs/promises';
import { startPebble } from '../../src/devenv/pebble.js';
import { scratch } from '../support/cli.js';
import { askPebble, pebbleStoreDeadlock } from '../support/pebble-deadlock.js';

const DEADLOCKED = `goroutine 26474 [semacquire, 2 minutes]:
runtime.gopark(0x20?, 0x7909a0?, 0x0?, 0xac?, 0xc000ab31a0?)
runtime.goparkunlock(...)
runtime.semacquire1(0xc000186088, 0xa0?, 0x3, 0x0)
sync.runtime_SemacquireMutex(0xc000186080?, 0xf?, 0x3?)
sync.(*RWMutex).Lock(0xc001a350e0?)
github.com/letsencrypt/pebble/db.(*MemoryStore).AddAuthorization(0xc000186080, 0xc001449450)
github.com/letsencrypt/pebble/wfe.(*WebFrontEndImpl).makeAuthorizations(0xc000024190, 0xc0018692c0, 0x0?)
github.com/letsencrypt/pebble/wfe.(*WebFrontEndImpl).NewOrder(0xc000024190, {0xc000126008?, 0xa53f20?}, {0x852f48, 0xc0001cf5e0}, 0xdf8475800?)
github.com/letsencrypt/pebble/wfe.(*WebFrontEndImpl).NewOrder-fm({0x8533a8?, 0xc000a5bb00?}, {0x852f48?, 0xc0001cf5e0?}, 0x2?)

goroutine 26492 [semacquire, 2 minutes]:
runtime.gopark(0xa?, 0x7f54e007792e?, 0xa0?, 0x31?, 0x7f550971a108?)
runtime.goparkunlock(...)
runtime.semacquire1(0xc0019144ec, 0x88?, 0x3, 0x0)
sync.runtime_SemacquireMutex(0xc00066f258?, 0x29?, 0xc000186080?)
sync.(*RWMutex).RLock(...)
github.com/letsencrypt/pebble/db.(*MemoryStore).FindValidAuthorization(0xc000186080?, {0xc00054f120, 0x10}, {{0x7b313b?, 0x40f3c8?}, {0xc001a5e440?, 0x40f20b?}})
github.com/letsencrypt/pebble/wfe.(*WebFrontEndImpl).makeAuthorizations(0xc000024190, 0xc00199d180, 0x0?)
github.com/letsencrypt/pebble/wfe.(*WebFrontEndImpl).NewOrder(0xc000024190, {0xc000126008?, 0xa53f20?}, {0x852f48, 0xc0001cfb20}, 0xdf8475800?)
github.com/letsencrypt/pebble/wfe.(*WebFrontEndImpl).NewOrder-fm({0x8533a8?, 0xc000a5bda0?}, {0x852f48?, 0xc0001cfb20?}, 0x2?)

goroutine 27021 [semacquire, 2 minutes]:
runtime.gopark(0x44a274?, 0xc0008bac00?, 0x40?, 0x7a?, 0xa5ac88?)
runtime.goparkunlock(...)
runtime.semacquire1(0xc00018608c, 0xb0?, 0x3, 0x0)
sync.runtime_SemacquireMutex(0x779c40?, 0xe0?, 0x32?)
sync.(*RWMutex).RLock(...)
github.com/letsencrypt/pebble/db.(*MemoryStore).GetAccountByKey(0xc000186080, {0x779c40?, 0xc00055a7e0?})
github.com/letsencrypt/pebble/wfe.(*WebFrontEndImpl).getAcctByKey(0x6a1ce0?, {0x779c40?, 0xc00055a7e0?})
github.com/letsencrypt/pebble/wfe.(*WebFrontEndImpl).validPOSTAsGET(0xc000186080?, 0xc0004ff0cc?)
github.com/letsencrypt/pebble/wfe.(*WebFrontEndImpl).Authz(0xc000024190, {0xc000126008?, 0xa53f20?}, {0x852f48, 0xc0001cf960}, 0xc0004d5e00)`;

const [writer, finder, authz] = DEADLOCKED.split('\n\n') as [string, string, string];

test('a dump with both halves of the cycle is Pebble deadlocked', () => {
  assert.match(pebbleStoreDeadlock(DEADLOCKED) ?? '', /^Pebble deadlocked/);
  // Without the queued writer in the dump the cycle is still there: the two halves decide.
  assert.match(pebbleStoreDeadlock(`${finder}\n\n${authz}`) ?? '', /^Pebble deadlocked/);
});

test("an order's status read under the store's lock (GetOrderByID, GetOrdersByAccountID) is the same half of the cycle", () => {
  for (const reader of ['GetOrderByID', 'GetOrdersByAccountID']) {
    // Queued for the store's own read lock, and waiting on the order's write lock under it.
    const queued = finder.replace(/db\.\(\*MemoryStore\)\.FindValidAuthorization\([^\n]*/, `db.(*MemoryStore).${reader}(0xc000186080?, {0xc00054f120, 0x10})`);
    const orderReader = queued.replace('sync.(*RWMutex).RLock(...)', 'sync.(*RWMutex).Lock(0xc001a350e0?)');
    assert.match(orderReader, new RegExp(reader));
    assert.match(pebbleStoreDeadlock(`${orderReader}\n\n${authz}`) ?? '', /^Pebble deadlocked/, reader);
    assert.equal(pebbleStoreDeadlock(`${orderReader.replace(reader, 'GetAccountByID')}\n\n${authz}`), undefined, 'a read that waits for nothing but the store is not');
    assert.equal(pebbleStoreDeadlock(`${queued}\n\n${authz}`), undefined, `${reader} queued for the store's own read lock is not`);
    const throughStatus = queued.replace('sync.(*RWMutex).RLock(...)\n', 'sync.(*RWMutex).RLock(...)\ngithub.com/letsencrypt/pebble/core.(*Order).GetStatus(0xc0019144e0)\n');
    assert.match(pebbleStoreDeadlock(`${throughStatus}\n\n${authz}`) ?? '', /^Pebble deadlocked/, `${reader} waiting inside Order.GetStatus is`);
  }
});

test('one half alone, or the same stacks running rather than waiting, is not', () => {
  assert.equal(pebbleStoreDeadlock(`${writer}\n\n${finder}`), undefined);
  assert.equal(pebbleStoreDeadlock(`${writer}\n\n${authz}`), undefined);
  assert.equal(pebbleStoreDeadlock(DEADLOCKED.replaceAll('[semacquire, 2 minutes]', '[running]')), undefined);
  assert.equal(pebbleStoreDeadlock(''), undefined);
});

test('a healthy Pebble asked for its goroutines shows no deadlock, and its log keeps the dump', { timeout: 60_000 }, async () => {
  const dir = await scratch('certplane-pebble-verdict-');
  const logFile = dir.path('pebble.log');
  const pebble = await startPebble({ logFile });
  try {
    const answer = await askPebble(pebble, logFile);
    assert.deepEqual(answer, { deadlock: undefined, verdict: `Pebble shows no store deadlock in its goroutine dump (its log and dump: ${logFile})` });
    const log = await readFile(logFile, 'utf8');
    assert.match(log, /^goroutine \d+ \[/m);
    assert.match(log, /pebble\/wfe|pebble\/va|pebble\/db/);
  } finally {
    await pebble.stop();
    await dir.remove();
  }
});
