/**
 * The lifecycle engine on its own: the transition table, what a late or impossible event
 * means, typed failure reasons and the retry decision. No store, no CA, no agent.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { hasCode } from '../../src/errors.js';
import {
  CERTIFICATE_STATES,
  ENTRIES,
  FAILURE_REASONS,
  LIFECYCLE_EVENTS,
  MAX_ATTEMPTS,
  OPEN_STATES,
  REISSUE_MODES,
  TRANSITIONS,
  campaignPath,
  classify,
  composedArc,
  isPermanent,
  next,
  readyCondition,
  rechainRefusal,
  retryDecision,
  type CampaignPath,
  type CertificateState,
  type FailureReasonName,
  type RechainFacts,
  type ReissueMode,
} from '../../src/lifecycle/index.js';
import { ErrorCode } from '../../src/error-catalogue.js';

describe('transition table', () => {
  test('every state is reachable from pending, and only a revoked certificate has no way out', () => {
    const reached = new Set<CertificateState>(['pending']);
    for (let changed = true; changed; ) {
      changed = false;
      for (const { from, to } of Object.values(TRANSITIONS)) {
        if (from.some((state) => reached.has(state)) && !reached.has(to)) {
          reached.add(to);
          changed = true;
        }
      }
    }
    assert.deepEqual([...reached].sort(), [...CERTIFICATE_STATES].sort());
    const withExit = new Set(Object.values(TRANSITIONS).flatMap(({ from }) => from));
    assert.deepEqual(CERTIFICATE_STATES.filter((state) => !withExit.has(state)).sort(), ['revoked']);
  });

  test('a certificate the CA signed can be revoked whatever happened to it since; one never issued cannot', () => {
    for (const state of ['issued', 'delivered', 'installed', 'superseded', 'failed'] as const) assert.equal(next(state, 'revoked'), 'revoked', state);
    for (const state of ['pending', 'csr_accepted', 'ordering'] as const) assert.equal(classify(state, 'revoked'), 'refused', state);
    assert.equal(classify('revoked', 'revoked'), 'stale', 'a second revocation');
    assert.equal(classify('revoked', 'installed'), 'stale', 'an acknowledgement after the revocation');
    assert.equal(readyCondition('revoked', null, null, new Date(0)).status, 'False');
  });

  test('the happy path runs pending to installed, and any open state can fail', () => {
    let state: CertificateState = 'pending';
    for (const event of ['csr_accepted', 'order_created', 'chain_verified', 'delivered', 'installed'] as const) state = next(state, event) ?? assert.fail(`${event} from ${state}`);
    assert.equal(state, 'installed');
    assert.equal(next('installed', 'superseded'), 'superseded');
    for (const open of OPEN_STATES) assert.equal(next(open, 'failed'), 'failed');
  });

  test('an order placed before the CSR keeps the certificate pending, and the CSR\'s acceptance marks it in one composed write', () => {
    assert.equal(next('pending', 'preordered'), 'pending');
    assert.deepEqual(composedArc(['csr_accepted', 'order_created']), { from: ['pending'], to: 'ordering' });
    assert.equal(classify('csr_accepted', 'preordered'), 'stale', 'a late record of an order the certificate is past');
    assert.equal(classify('ordering', 'preordered'), 'stale');
    assert.equal(classify('installed', 'preordered'), 'stale');
  });

  test('an event the certificate is already past is stale; one that skips ahead or follows a settled state never applies', () => {
    assert.equal(classify('delivered', 'csr_accepted'), 'stale', 'a repeated CSR after delivery');
    assert.equal(classify('installed', 'installed'), 'stale', 'a second acknowledgement');
    assert.equal(classify('failed', 'installed'), 'stale', 'an acknowledgement after the certificate failed');
    assert.equal(classify('superseded', 'failed'), 'stale');
    assert.equal(classify('pending', 'installed'), 'refused', 'an acknowledgement of something never delivered');
    assert.equal(classify('csr_accepted', 'chain_verified'), 'refused', 'a chain without an order');
    assert.throws(
      () => next('pending', 'installed'),
      (error: unknown) => hasCode(error, ErrorCode.LIFECYCLE_TRANSITION_REFUSED) && (error.details as { state: string }).state === 'pending',
    );
  });

  test('classify agrees with the table for every state and event', () => {
    for (const state of CERTIFICATE_STATES) {
      for (const event of LIFECYCLE_EVENTS) {
        const verdict = classify(state, event);
        assert.equal(verdict === 'apply', TRANSITIONS[event].from.includes(state), `${state} + ${event} is ${verdict}`);
        if (!OPEN_STATES.includes(state) && verdict !== 'apply') assert.equal(verdict, 'stale', `${state} is settled`);
      }
    }
  });

  test('the Ready condition follows the state, and a failure names its reason', () => {
    const at = new Date('2026-12-01T00:00:00.000Z');
    assert.deepEqual(readyCondition('installed', null, null, at), { type: 'Ready', status: 'True', reason: 'Installed', message: null, lastTransitionTime: at.toISOString() });
    assert.equal(readyCondition('csr_accepted', null, null, at).reason, 'CsrAccepted');
    assert.equal(readyCondition('ordering', null, null, at).status, 'Unknown');
    const failed = readyCondition('failed', 'ChainUnsatisfied', 'no offered chain fits', at);
    assert.equal(failed.status, 'False');
    assert.equal(failed.reason, 'ChainUnsatisfied');
    assert.equal(failed.message, 'no offered chain fits');
  });
});

describe('failure reasons', () => {
  const now = new Date('2026-12-01T00:00:00.000Z');

  test('a permanent reason is never retried, whatever the attempt', () => {
    const permanent = (Object.keys(FAILURE_REASONS) as FailureReasonName[]).filter((reason) => isPermanent({ reason }));
    assert.deepEqual(permanent.sort(), ['AccountRefused', 'ChainUnsatisfied', 'ChallengeUnsupported', 'CsrRejected', 'IdentifierRejected', 'InstanceDecommissioned', 'ProfileUnknown', 'RechainUnavailable']);
    for (const reason of permanent) assert.deepEqual(retryDecision({ reason, code: 'X' }, 1, now), { retry: false, why: 'permanent' });
  });

  test('a passing reason backs off, gives up after the last attempt, and waits at least for the CA\'s Retry-After', () => {
    const first = retryDecision({ reason: 'CaUnreachable', code: ErrorCode.ACME_UNREACHABLE }, 1, now, () => 1);
    assert.ok(first.retry && first.at.getTime() === now.getTime() + 60_000, JSON.stringify(first));
    assert.deepEqual(retryDecision({ reason: 'CaUnreachable', code: ErrorCode.ACME_UNREACHABLE }, MAX_ATTEMPTS, now), { retry: false, why: 'attempts_exhausted' });
    const limited = retryDecision({ reason: 'RateLimited', code: ErrorCode.ACME_RATE_LIMITED, retryAt: '2026-12-01T03:00:00.000Z' }, 1, now, () => 1);
    assert.ok(limited.retry && limited.at.toISOString() === '2026-12-01T03:00:00.000Z', JSON.stringify(limited));
    const soon = retryDecision({ reason: 'RateLimited', code: ErrorCode.ACME_RATE_LIMITED, retryAt: '2026-12-01T00:00:01.000Z' }, 1, now, () => 1);
    assert.ok(soon.retry && soon.at.getTime() === now.getTime() + 60_000, 'the backoff wins over a Retry-After that is sooner');
  });
});

describe('re-chaining', () => {
  test('a rechain enters at issued and then follows the delivery arcs: delivered, installed (superseding the record it re-chains), or failed', () => {
    assert.equal(ENTRIES.rechained, 'issued');
    assert.equal(ENTRIES.requested, 'pending');
    assert.equal(next(ENTRIES.rechained, 'delivered'), 'delivered');
    assert.equal(next('delivered', 'installed'), 'installed');
    assert.equal(next('installed', 'superseded'), 'superseded');
    assert.equal(next(ENTRIES.rechained, 'failed'), 'failed');
    // Nothing is ordered for a rechain: the ordering arcs never apply to it.
    assert.equal(classify(ENTRIES.rechained, 'order_created'), 'stale');
    assert.equal(classify(ENTRIES.rechained, 'chain_verified'), 'stale');
  });

  test('a rechain needs an installed certificate and nothing under way', () => {
    assert.equal(rechainRefusal({ installed: 'installed', open: [] }), undefined);
    assert.equal(rechainRefusal({ installed: undefined, open: [] }), 'no-installed-certificate');
    assert.equal(rechainRefusal({ installed: 'installed', open: ['ordering'] }), 'issuance-under-way');
    assert.equal(rechainRefusal({ installed: 'installed', open: ['issued'] }), 'issuance-under-way');
    // Settled certificates are not work under way.
    assert.equal(rechainRefusal({ installed: 'installed', open: ['failed', 'superseded'] }), undefined);
  });

  const alternate = { installed: 'installed', open: [], selection: { alternateIndex: 1 } } as const;
  const cases: readonly [string, RechainFacts, Record<ReissueMode, CampaignPath>][] = [
    ['a stored alternate fits', alternate, { reissue: { path: 'reissue' }, rechain: { path: 'rechain', chainIndex: 1 }, 'rechain-or-reissue': { path: 'rechain', chainIndex: 1 } }],
    ['no stored chain fits', { ...alternate, selection: 'none' }, { reissue: { path: 'reissue' }, rechain: { path: 'skip', reason: 'no-alternate-chain' }, 'rechain-or-reissue': { path: 'reissue' } }],
    ['the installed chain is already the one selected', { ...alternate, selection: 'current' }, { reissue: { path: 'reissue' }, rechain: { path: 'skip', reason: 'current' }, 'rechain-or-reissue': { path: 'skip', reason: 'current' } }],
    ['nothing installed', { installed: undefined, open: [], selection: undefined }, { reissue: { path: 'reissue' }, rechain: { path: 'skip', reason: 'no-installed-certificate' }, 'rechain-or-reissue': { path: 'reissue' } }],
    ['an order under way', { ...alternate, open: ['ordering'] }, { reissue: { path: 'reissue' }, rechain: { path: 'skip', reason: 'issuance-under-way' }, 'rechain-or-reissue': { path: 'reissue' } }],
  ];
  for (const [situation, facts, expected] of cases) {
    test(`campaign paths when ${situation}`, () => {
      for (const mode of REISSUE_MODES) assert.deepEqual(campaignPath(mode, facts), expected[mode], mode);
    });
  }

  test('a rechain that cannot happen is permanent: only a new order helps, so it is never retried', () => {
    assert.equal(isPermanent({ reason: 'RechainUnavailable' }), true);
    assert.deepEqual(retryDecision({ reason: 'RechainUnavailable', code: ErrorCode.RECHAIN_NO_SATISFYING_CHAIN }, 1, new Date()), { retry: false, why: 'permanent' });
  });
});
