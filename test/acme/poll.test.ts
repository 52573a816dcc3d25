/**
 * Polling a pending challenge or order: the CA's Retry-After decides when it sends one,
 * otherwise a short steady interval that stretches only once a wait gets long, never
 * acme-client's exponential backoff that held every issuance for seconds.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DEFAULT_POLL, nextPollDelayMs, pollUntilSettled, type PolledItem } from '../../src/acme/poll.js';
import { CertplaneError } from '../../src/errors.js';
import { ErrorCode } from '../../src/error-catalogue.js';

const policy = { intervalMs: 200, maxIntervalMs: 10_000, timeoutMs: 120_000 };

/** A fake clock that sleeping advances, and the answers a CA gives in turn. */
function scripted(answers: PolledItem<{ error?: unknown }>[]) {
  let now = 1_000_000;
  const sleeps: number[] = [];
  let looks = 0;
  return {
    sleeps,
    looks: () => looks,
    look: async () => {
      looks += 1;
      return answers.shift() ?? { data: { status: 'pending' } };
    },
    sleep: async (ms: number) => {
      sleeps.push(ms);
      now += ms;
    },
    clock: () => now,
  };
}

test('without Retry-After a pending item is looked at again every interval, not on a growing backoff', async () => {
  const ca = scripted([{ data: { status: 'pending' } }, { data: { status: 'processing' } }, { data: { status: 'pending' } }, { data: { status: 'valid' } }]);
  const settled = await pollUntilSettled(ca.look, 'the challenge', policy, undefined, ca.sleep, ca.clock);
  assert.equal(settled.status, 'valid');
  assert.deepEqual(ca.sleeps, [200, 200, 200]);
});

test('the CA\'s Retry-After is waited out, and never undercut by the interval', async () => {
  const ca = scripted([{ data: { status: 'processing' }, retryAfter: '3' }, { data: { status: 'processing' }, retryAfter: '0' }, { data: { status: 'valid' } }]);
  await pollUntilSettled(ca.look, 'the order', policy, undefined, ca.sleep, ca.clock);
  assert.deepEqual(ca.sleeps, [3000, 200]);
});

test('an answer the caller already has that is settled costs no look at all', async () => {
  const ca = scripted([]);
  const settled = await pollUntilSettled(ca.look, 'the challenge', policy, { data: { status: 'valid' } }, ca.sleep, ca.clock);
  assert.equal(settled.status, 'valid');
  assert.equal(ca.looks(), 0);
  assert.deepEqual(ca.sleeps, []);
});

test('an answer the caller already has that is still pending is followed by one look at once, then the interval', async () => {
  const done = scripted([{ data: { status: 'valid' } }]);
  assert.equal((await pollUntilSettled(done.look, 'the order', policy, { data: { status: 'processing' } }, done.sleep, done.clock)).status, 'valid');
  assert.equal(done.looks(), 1, 'a CA that finished meanwhile is seen at the first look');
  assert.deepEqual(done.sleeps, [], 'without waiting an interval');
  const slower = scripted([{ data: { status: 'pending' } }, { data: { status: 'valid' } }]);
  await pollUntilSettled(slower.look, 'the challenge', policy, { data: { status: 'pending' } }, slower.sleep, slower.clock);
  assert.deepEqual(slower.sleeps, [200], 'still pending at that look: the interval from there');
});

test('an answer the caller already has that carries Retry-After is waited out before the first look', async () => {
  const ca = scripted([{ data: { status: 'valid' } }]);
  await pollUntilSettled(ca.look, 'the order', policy, { data: { status: 'processing' }, retryAfter: '2' }, ca.sleep, ca.clock);
  assert.deepEqual(ca.sleeps, [2000]);
  assert.equal(ca.looks(), 1);
});

test('invalid ends the wait and is returned for the caller to decide', async () => {
  const ca = scripted([{ data: { status: 'pending' } }, { data: { status: 'invalid', error: { type: 'urn:ietf:params:acme:error:connection' } } }]);
  const settled = await pollUntilSettled(ca.look, 'the challenge', policy, undefined, ca.sleep, ca.clock);
  assert.equal(settled.status, 'invalid');
});

test('a long wait stretches the interval with the time waited, up to the cap', () => {
  const now = new Date();
  assert.equal(nextPollDelayMs(0, undefined, policy, now), 200);
  assert.equal(nextPollDelayMs(9_999, undefined, policy, now), 200);
  assert.equal(nextPollDelayMs(20_000, undefined, policy, now), 5_000);
  assert.equal(nextPollDelayMs(100_000, undefined, policy, now), 10_000);
});

test('an item still pending at the timeout fails with ACME_ORDER_FAILED, which the job retries', async () => {
  const ca = scripted([]);
  await assert.rejects(
    pollUntilSettled(ca.look, 'order https://ca/order/1', { ...DEFAULT_POLL, timeoutMs: 2_000 }, undefined, ca.sleep, ca.clock),
    (error: unknown) => error instanceof CertplaneError && error.code === ErrorCode.ACME_ORDER_FAILED && /still pending/.test(error.message),
  );
  assert.ok(ca.sleeps.reduce((a, b) => a + b, 0) <= 2_000);
});
