import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AT_RISK_FRACTION, atRisk, lifetimeRenewalTime } from '../../src/lifecycle/renewal.js';
import { retryDelayMs } from '../../src/lifecycle/index.js';

const DAY = 86_400_000;
const notBefore = new Date('2026-05-13T00:00:00Z');
const notAfter = new Date(notBefore.getTime() + 45 * DAY);

test('the lifetime rule renews two thirds in, within the jitter band, and a fleet spreads out', () => {
  const middle = lifetimeRenewalTime(notBefore, notAfter, () => 0.5);
  assert.equal(middle.getTime(), notBefore.getTime() + 30 * DAY);
  const earliest = lifetimeRenewalTime(notBefore, notAfter, () => 0).getTime();
  const latest = lifetimeRenewalTime(notBefore, notAfter, () => 0.999999).getTime();
  assert.equal(earliest, notBefore.getTime() + 30 * DAY - 1.5 * DAY);
  assert.ok(latest <= notBefore.getTime() + 30 * DAY + 1.5 * DAY && latest > middle.getTime());
  const fleet = new Set(Array.from({ length: 100 }, () => lifetimeRenewalTime(notBefore, notAfter).getTime()));
  assert.ok(fleet.size > 90, 'a fleet issued together does not renew together');
});

test('at risk past five sixths of the lifetime', () => {
  assert.equal(atRisk(notBefore, notAfter, new Date(notBefore.getTime() + 30 * DAY)), false);
  assert.equal(atRisk(notBefore, notAfter, new Date(notBefore.getTime() + AT_RISK_FRACTION * 45 * DAY)), true);
  assert.equal(atRisk(notBefore, notAfter, new Date(notAfter.getTime() + DAY)), true);
});

test('retry delays grow exponentially, are capped, and jitter within half to full', () => {
  assert.equal(retryDelayMs(1, 60_000, 3_600_000, () => 0), 30_000);
  assert.equal(retryDelayMs(3, 60_000, 3_600_000, () => 1), 240_000);
  assert.equal(retryDelayMs(30, 60_000, 3_600_000, () => 1), 3_600_000);
  assert.ok(retryDelayMs(30, 60_000, 3_600_000, () => 0) >= 1_800_000);
});
