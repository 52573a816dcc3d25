/**
 * Issue 14's Done-when for enrollment: creating an instance and starting its agent is
 * enough for an installed certificate. Real parts: `certplane serve` as a process, Pebble
 * behind the order-counting proxy, the real agent code; nobody calls issue.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { parseCertificateBundle } from '../../src/chain/index.js';
import { startE2eFleet, type E2eFleet } from '../support/e2e-fleet.js';
import { eventually } from '../support/processes.js';

describe('the first certificate on enrollment', () => {
  let fleet: E2eFleet;
  const json = (method: string, path: string, body?: unknown) => fleet.json(method, path, body);

  before(async () => {
    fleet = await startE2eFleet({ prefix: 'certplane-first-', withoutAri: true });
  });

  after(() => fleet?.stop());

  test('creating the instance and starting its agent installs a certificate for its names, with one order and no issue call', async () => {
    const agent = await fleet.enroll({ name: 'first', hostnames: ['First.Enroll.Test.', 'www.first.enroll.test'] });

    const view = await eventually(
      async () => {
        const current = (await json('GET', `/v1/instances/${agent.instanceId}`)).body;
        if (current.certificate?.status === 'failed') assert.fail(`the first certificate failed: ${current.certificate.lastError}`);
        return current.certificate?.status === 'installed' ? current : undefined;
      },
      120_000,
      250,
      'the first certificate to be installed',
    );
    const installs = await agent.installs();
    assert.deepEqual(installs.map((i) => i.fingerprintSha256), [view.certificate.fingerprintSha256], 'installed once, on the instance');
    const certificate = (await json('GET', `/v1/certificates/${view.certificate.id}`)).body;
    const leaf = parseCertificateBundle(certificate.fullchainPem)[0]!;
    assert.deepEqual([...leaf.dnsNames].sort(), ['first.enroll.test', 'www.first.enroll.test']);
    assert.equal(fleet.proxy!.createdAt('/order-plz'), 1, 'one order at the CA');
  });
});
