/**
 * The incident rehearsal that used to spend the CA's budget: the preferred root is
 * distrusted but still preferred, so no chain the CA offers can be accepted. A campaign
 * over the fleet must place at most one order per instance (counted at the CA, through a
 * recording proxy in front of Pebble), end with every instance failed for that reason,
 * and `certplane reissue --follow` must exit 1 with the reason instead of waiting.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { certplane } from '../support/cli.js';
import { startE2eFleet, type E2eFleet } from '../support/e2e-fleet.js';
import { ErrorCode } from '../../src/error-catalogue.js';

const INSTANCES = 3;

describe('a campaign whose chains cannot satisfy the preferences', () => {
  let fleet: E2eFleet;
  const json = (method: string, path: string, body?: unknown) => fleet.json(method, path, body);

  before(async () => {
    fleet = await startE2eFleet({
      prefix: 'certplane-permanent-',
      alternateRoots: 1,
      withoutAri: true,
      // The 2021 shape: the root every offered chain could lead to is distrusted, yet still preferred.
      env: ({ preferred }) => ({ CERTPLANE_DISTRUSTED_SPKI: preferred.spkiSha256 }),
    });
    for (let i = 0; i < INSTANCES; i += 1) await fleet.enroll({ name: `p${i}`, hostnames: [`p${i}.permanent.test`], autoIssue: false });
    await fleet.allConnected();
  });

  after(() => fleet?.stop());

  test('one order per instance at most, every instance failed as ChainUnsatisfied, and --follow exits 1 with the reason', async () => {
    const followed = await certplane(['reissue', '--server', fleet.api, '--all', '--reason', 'rehearsal: preferred root distrusted', '--follow', '--poll-ms', '200', '--actor', 'on-call test'], {}, 120_000);
    assert.equal(followed.code, 1, `${followed.stdout}\n${followed.stderr}`);
    assert.match(followed.stdout, new RegExp(`done: 0 installed \\(0 re-chained\\), ${INSTANCES} failed \\(ChainUnsatisfied ${INSTANCES}\\), 0 skipped`), followed.stdout);

    // Orders Pebble created (201), not newOrder POSTs: Pebble rejects some nonces on purpose and
    // acme-client sends those again, which creates nothing.
    const orders = fleet.proxy!.createdAt('/order-plz');
    console.log(`new orders at the CA: ${orders} for ${INSTANCES} instances (${fleet.proxy!.payloadsTo('/order-plz').length} newOrder requests)`);
    assert.ok(orders <= INSTANCES, `${orders} orders for ${INSTANCES} instances`);

    const campaignId = /campaign (\S+) \(reissue\) started/.exec(followed.stdout)?.[1];
    const campaign = (await json('GET', `/v1/reissues/${campaignId}`)).body;
    assert.equal(campaign.state, 'done');
    assert.equal(campaign.counts.failed, INSTANCES);
    assert.deepEqual(campaign.counts.failureReasons, { ChainUnsatisfied: INSTANCES });
    for (const agent of fleet.agents) {
      const { certificate } = (await json('GET', `/v1/instances/${agent.instanceId}`)).body;
      assert.equal(certificate.status, 'failed');
      assert.deepEqual([certificate.failure.reason, certificate.failure.permanent, certificate.condition.status], ['ChainUnsatisfied', true, 'False']);
      // The only root of the instance's `default` trust profile is distrusted, so no offered chain
      // verifies in that profile: the refusal names the profile (chain/select.ts), before preferences.
      assert.equal(certificate.failure.code, ErrorCode.CHAIN_PROFILE_UNSATISFIED);
    }

    // Nothing is retried later: the scheduler leaves failed-for-good jobs alone.
    await new Promise((resolve) => setTimeout(resolve, 1500));
    assert.equal(fleet.proxy!.createdAt('/order-plz'), orders);
  });
});
