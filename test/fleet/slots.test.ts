/**
 * The coordinator's order slots: a slot taken at once when one is free (a CSR accepted with
 * its order's lease), never ahead of a task already waiting for one.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Slots } from '../../src/fleet/slots.js';

test('tryAcquire takes a free slot, answers undefined when none is free, and never jumps a waiting task', async () => {
  const slots = new Slots(2);
  const first = slots.tryAcquire();
  const second = await slots.acquire();
  assert.ok(first, 'a free slot is taken at once');
  assert.equal(slots.tryAcquire(), undefined, 'none is free');
  let waiterRan = false;
  const waiting = slots.acquire().then((release) => ((waiterRan = true), release));
  first();
  first();
  const third = await waiting;
  assert.ok(waiterRan, 'the released slot went to the task waiting for it');
  assert.equal(slots.tryAcquire(), undefined, 'not to a later tryAcquire, and a second release of the same slot frees nothing');
  third();
  const fourth = slots.tryAcquire();
  assert.ok(fourth, 'free again once released');
  second();
  fourth();
  assert.ok(slots.tryAcquire() && slots.tryAcquire() && slots.tryAcquire() === undefined, 'both slots free, no more');
});
