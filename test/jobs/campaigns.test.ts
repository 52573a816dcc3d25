/**
 * A campaign queues its jobs in one statement per thousand instances (it was one INSERT per
 * instance, and a SELECT and an adopting UPDATE per instance with an open job: a 1,000-
 * instance campaign paid 1,000 statements and more before any work started). The results
 * are those of the statements it replaces: a new queued job where the instance had none,
 * and the instance's open job (one per instance) made part of the campaign otherwise.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { Campaigns, type CampaignStatus } from '../../src/jobs/campaigns.js';
import { openStore, type Store } from '../../src/store/index.js';
import { statementsOf } from '../support/statements.js';

describe('starting a campaign', () => {
  let store: Store;
  const now = new Date();
  before(async () => {
    store = await openStore('memory:', { pgliteThread: false });
  });
  after(async () => {
    await store?.close();
  });

  test('queues every job in one statement; an open job is taken into the campaign, not doubled', async () => {
    const instances = [];
    for (const name of ['fresh-a', 'fresh-b', 'fresh-c', 'renewal-queued', 'reissue-running']) {
      instances.push(await store.instances.create({ name, hostnames: [`${name}.campaign.test`], cluster: null, keyAlgorithm: 'ecdsa-p256' }));
    }
    const [freshA, freshB, freshC, renewing, running] = instances;
    const farAway = new Date(now.getTime() + 30 * 86_400_000);
    const { job: queuedRenewal } = await store.jobs.enqueue({ kind: 'renewal', instanceId: renewing!.id, dueAt: farAway, reason: 'two thirds of the lifetime', requestedBy: 'scheduler' });
    const earlier = new Date(now.getTime() - 60_000);
    const { job: runningReissue } = await store.jobs.enqueue({ kind: 'reissue', instanceId: running!.id, dueAt: earlier, reason: 'by hand', requestedBy: 'someone' });
    assert.deepEqual((await store.jobs.claimDue('campaign-test', now, 60_000, 10, ['reissue'])).map((j) => j.id), [runningReissue.id]);

    const campaigns = new Campaigns({ store, clock: () => now, logger: pino({ level: 'silent' }) });
    const { result, statements } = await statementsOf(() => campaigns.start({ selector: { all: true }, reason: 'key compromise drill', dryRun: false, actor: 'oncall' }));
    const status = result as CampaignStatus;
    const jobWrites = statements.filter((s) => /^(INSERT INTO jobs|UPDATE jobs|SELECT \* FROM jobs)/.test(s));
    assert.equal(jobWrites.length, 1, jobWrites.join('\n'));

    const open = async (instanceId: string) => (await store.jobs.history(instanceId)).filter((j) => j.state === 'queued' || j.state === 'running');
    for (const fresh of [freshA!, freshB!, freshC!]) {
      const jobs = await open(fresh.id);
      assert.deepEqual(
        jobs.map((j) => [j.kind, j.state, j.campaignId, j.dueAt.getTime(), j.reason, j.requestedBy]),
        [['reissue', 'queued', status.campaign.id, now.getTime(), 'key compromise drill', 'oncall']],
      );
    }
    const [adoptedRenewal, ...moreRenewals] = await open(renewing!.id);
    assert.deepEqual(moreRenewals, []);
    assert.deepEqual(
      [adoptedRenewal?.id, adoptedRenewal?.kind, adoptedRenewal?.state, adoptedRenewal?.campaignId, adoptedRenewal?.dueAt.getTime(), adoptedRenewal?.reason, adoptedRenewal?.requestedBy],
      [queuedRenewal.id, 'reissue', 'queued', status.campaign.id, now.getTime(), 'key compromise drill', 'oncall'],
      'the queued renewal became the campaign\'s reissue, due now',
    );
    const [adoptedRunning, ...moreRunning] = await open(running!.id);
    assert.deepEqual(moreRunning, []);
    assert.deepEqual(
      [adoptedRunning?.id, adoptedRunning?.state, adoptedRunning?.campaignId, adoptedRunning?.dueAt.getTime()],
      [runningReissue.id, 'running', status.campaign.id, earlier.getTime()],
      'the running job joined the campaign as it was',
    );
    assert.equal(status.counts.matched, 5);
    assert.equal(status.counts.queued, 4);
  });
});
