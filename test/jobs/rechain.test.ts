/**
 * Rechain jobs under the scheduler, with trust changing between the campaign's plan and the
 * job: the job judges again. An installed chain that became the one selected leaves nothing
 * to do (the job is done); no stored chain that fits any more fails the job for good
 * (RechainUnavailable, no order). Either way the renewal the campaign took over is queued
 * again, since the installed certificate still has to be renewed.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { parseCertificateBundle, type TrustProfile } from '../../src/chain/index.js';
import { JobLifecycle } from '../../src/jobs/lifecycle.js';
import { Scheduler } from '../../src/jobs/scheduler.js';
import { advance } from '../support/lifecycle.js';
import { leaf, letsEncrypt2021, pem } from '../support/hierarchies.js';
import { startTestPlane, type TestPlane } from '../support/plane.js';

describe('rechain jobs judge again when they run', async () => {
  const le = await letsEncrypt2021();
  const [x1] = parseCertificateBundle(le.isrgX1.pem);
  const [dst] = parseCertificateBundle(le.dst.pem);
  let profiles: TrustProfile[] = [
    { name: 'default', anchors: [x1!, dst!] },
    { name: 'b', anchors: [x1!, dst!] },
  ];
  let plane: TestPlane;
  const ids = { a: '', b: '' };

  /** Installed on the long chain (to DST), both chains stored, its renewal queued for later. */
  const installed = async (name: string, trustProfiles: string[]) => {
    const created = await plane.app.inject({ method: 'POST', url: '/v1/instances', payload: { name, hostnames: [`${name}.example.com`], autoIssue: false, trustProfiles } });
    const instanceId = created.json().id as string;
    const server = await leaf(le.r3, [`${name}.example.com`]);
    const offered = [pem(server.cert, le.r3), pem(server.cert, le.r3, le.x1ByDst)];
    const issued = parseCertificateBundle(offered[0]!)[0]!;
    const certificate = await plane.store.certificates.create(instanceId);
    await advance(plane.store, certificate.id, 'installed', { fullchainPem: offered[1], fingerprintSha256: issued.fingerprintSha256, notBefore: issued.notBefore, notAfter: issued.notAfter });
    await plane.store.chains.record(certificate.id, offered.map((chainPem, index) => ({ index, pem: chainPem, topIssuerCN: index === 0 ? 'ISRG Root X1' : 'DST Root CA X3', selected: index === 1, verification: {}, evaluatedAt: new Date(), trustFingerprint: 'issuance' })));
    await plane.store.jobs.enqueue({ kind: 'renewal', instanceId, dueAt: new Date(Date.now() + 30 * 86_400_000), reason: 'two thirds of the lifetime', requestedBy: 'scheduler' });
    return instanceId;
  };

  before(async () => {
    plane = await startTestPlane({ trustProfiles: () => profiles, preferences: ['ISRG Root X1', 'DST Root CA X3'] });
    ids.a = await installed('a', ['default']);
    ids.b = await installed('b', ['b']);
  });
  after(() => plane?.close());

  test('a job finding its chain now current is done; one finding no chain that fits fails for good; both renewals are queued again', async () => {
    const started = await plane.campaigns.start({ selector: { instanceIds: [ids.a, ids.b] }, reason: 'X1 preferred', dryRun: false, mode: 'rechain', actor: 'on-call' });
    assert.ok(!('dryRun' in started));
    if ('dryRun' in started) return;
    assert.deepEqual([started.counts.queued, started.counts.skipped], [2, 0], 'both planned onto the chain to X1');
    assert.deepEqual((await plane.store.jobs.history(ids.a)).map((j) => [j.kind, j.state, j.campaignId]), [['rechain', 'queued', started.campaign.id]], 'the queued renewal was taken over');

    // Before the jobs run, clients lose X1 everywhere, and b's clients lose DST too.
    profiles = [
      { name: 'default', anchors: [dst!] },
      { name: 'b', anchors: [] },
    ];
    await plane.trust.reload();
    const scheduler = new Scheduler({ store: plane.store, coordinator: plane.coordinator, lifecycle: new JobLifecycle({ store: plane.store, logger: plane.logger, clock: plane.clock }), rechains: plane.rechains, logger: plane.logger, clock: plane.clock });
    await scheduler.tick();

    assert.deepEqual((await plane.store.jobs.history(ids.a)).map((j) => [j.kind, j.state]), [['rechain', 'done'], ['renewal', 'queued']]);
    const [failed, renewal] = await plane.store.jobs.history(ids.b);
    assert.deepEqual([failed?.kind, failed?.state, failed?.lastFailure?.reason, renewal?.kind, renewal?.state], ['rechain', 'failed', 'RechainUnavailable', 'renewal', 'queued']);
    for (const id of [ids.a, ids.b]) assert.equal((await plane.store.certificates.open(id)).length, 0, 'nothing was created, nothing ordered');
    const status = await plane.campaigns.status(started.campaign.id);
    assert.deepEqual([status.campaign.state, status.counts.rechained, status.counts.failed, status.counts.failureReasons], ['done', 0, 1, { RechainUnavailable: 1 }]);
  });
});
