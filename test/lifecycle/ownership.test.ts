/** The ownership decisions (lifecycle/ownership.ts) as data: what a takeover does with a stored order, who may take work up, what a stop leaves. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { afterStop, earlyOrderRefusal, leaseRenewalMs, parkedLeaseMs, planOrder, takeUpRefusal, type OrderStanding } from '../../src/lifecycle/index.js';

const URL = 'https://ca.test/order/1';

describe('planOrder', () => {
  test('no order on record, or nothing known about it, means a first order without a reason to record', () => {
    assert.deepEqual(planOrder(null, undefined), { action: 'new' });
    assert.deepEqual(planOrder(null, { status: 'valid' }), { action: 'new' });
  });

  test('every order the CA can still complete is resumed from its own next step', () => {
    const expected = { pending: 'authorize', ready: 'finalize', processing: 'await', valid: 'download' } as const;
    for (const [status, next] of Object.entries(expected)) {
      assert.deepEqual(planOrder(URL, { status } as OrderStanding), { action: 'resume', orderUrl: URL, next }, status);
    }
  });

  test('only an invalid or unknown order is replaced, and the plan says why, naming the old order', () => {
    const invalid = planOrder(URL, { status: 'invalid' });
    assert.equal(invalid.action, 'new');
    assert.equal(invalid.action === 'new' && invalid.replacing?.orderUrl, URL);
    assert.match((invalid.action === 'new' && invalid.replacing?.why) || '', /order\/1 invalid/);
    const unknown = planOrder(URL, { status: 'unknown', detail: 'HTTP 404: no such order' });
    assert.match((unknown.action === 'new' && unknown.replacing?.why) || '', /no longer knows order .*HTTP 404: no such order/);
  });
});

describe('takeUpRefusal', () => {
  const ready = { status: 'ordering', hasCsr: true, runningHere: false, shuttingDown: false, needsChannel: true, hasChannel: true } as const;

  test('a process with the CSR and, for http-01, the agent\'s channel may try for the lease', () => {
    assert.equal(takeUpRefusal(ready), undefined);
    assert.equal(takeUpRefusal({ ...ready, status: 'csr_accepted' }), undefined);
    assert.equal(takeUpRefusal({ ...ready, needsChannel: false, hasChannel: false }), undefined, 'dns-01 needs no channel');
  });

  test('each reason not to try is named', () => {
    assert.equal(takeUpRefusal({ ...ready, status: 'issued' }), 'not_ordering');
    assert.equal(takeUpRefusal({ ...ready, shuttingDown: true }), 'shutting_down');
    assert.equal(takeUpRefusal({ ...ready, hasCsr: false }), 'no_csr');
    assert.equal(takeUpRefusal({ ...ready, runningHere: true }), 'running_here');
    assert.equal(takeUpRefusal({ ...ready, hasChannel: false }), 'no_channel');
  });
});

describe('earlyOrderRefusal', () => {
  const asking = { status: 'pending', hasOrder: false, runningHere: false, shuttingDown: false, hasChannel: true } as const;

  test('the process asking a pending certificate\'s agent for its CSR orders meanwhile', () => {
    assert.equal(earlyOrderRefusal(asking), undefined);
  });

  test('each reason not to is named: past pending, an order on record (whoever accepts the CSR resumes it), already running here, shutting down, no channel', () => {
    assert.equal(earlyOrderRefusal({ ...asking, status: 'csr_accepted' }), 'not_pending');
    assert.equal(earlyOrderRefusal({ ...asking, status: 'ordering' }), 'not_pending');
    assert.equal(earlyOrderRefusal({ ...asking, hasOrder: true }), 'order_on_record');
    assert.equal(earlyOrderRefusal({ ...asking, runningHere: true }), 'running_here');
    assert.equal(earlyOrderRefusal({ ...asking, shuttingDown: true }), 'shutting_down');
    assert.equal(earlyOrderRefusal({ ...asking, hasChannel: false }), 'no_channel');
  });
});

describe('leases', () => {
  test('a stop never fails the certificate; shutdown releases the lease, a lost lease is left to its new holder, an unanswering database to lapse', () => {
    assert.deepEqual(afterStop('shutdown'), { releaseLease: true, failCertificate: false });
    assert.deepEqual(afterStop('lease_lost'), { releaseLease: false, failCertificate: false });
    assert.deepEqual(afterStop('store_unavailable'), { releaseLease: false, failCertificate: false });
    assert.deepEqual(afterStop('no_csr'), { releaseLease: true, failCertificate: false }, 'an order placed before its CSR leaves it on record for whoever accepts the CSR');
  });

  test('the holder renews three times per lease, and parking never asks for a negative lease', () => {
    assert.equal(leaseRenewalMs(60_000), 20_000);
    assert.equal(leaseRenewalMs(1), 1);
    const now = new Date('2026-12-02T00:00:00Z');
    assert.equal(parkedLeaseMs(new Date('2026-12-02T00:01:00Z'), now), 60_000);
    assert.equal(parkedLeaseMs(new Date('2026-12-01T23:59:00Z'), now), 0);
  });
});
