/**
 * The registry issue's revocation Done-when, against Pebble: certificates revoked through the
 * API are revoked at the CA (its management interface says so, with the reason), signed by the
 * account key, by the certificate's own key through a connected agent, and by the account key
 * again when that agent is gone. A decommissioned instance's agent is cut off and refused when
 * it dials again, its renewal does not run when the plane's clock moves past it (while another
 * instance's does), and its hostnames can be registered again.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { certplane } from '../support/cli.js';
import { startE2eFleet, type E2eFleet } from '../support/e2e-fleet.js';
import type { SimulatedAgent } from '../support/fleet.js';
import { eventually, logEvents } from '../support/processes.js';
import { ErrorCode } from '../../src/error-catalogue.js';

const NAMES = ['account', 'compromised', 'offline', 'leaving'] as const;
type Name = (typeof NAMES)[number];

describe('revocation and decommissioning against Pebble', () => {
  let fleet: E2eFleet;
  let clockFile: string;
  const agents = {} as Record<Name, SimulatedAgent>;
  /** The installed certificate of each instance after the first issuance. */
  const first = {} as Record<Name, { id: string; fullchainPem: string }>;

  const json = (method: string, path: string, body?: unknown) => fleet.json(method, path, body);
  const atPebble = (fullchainPem: string) => fleet.pebble.certificateStatus(new X509Certificate(fullchainPem).serialNumber);
  const installed = (instanceId: string, notId?: string) =>
    eventually(async () => {
      const { body } = await json('GET', `/v1/instances/${instanceId}`);
      if (body.certificate?.status === 'failed') throw new Error(body.certificate.lastError);
      return body.certificate?.status === 'installed' && body.certificate.id !== notId ? body : undefined;
    }, 120_000, 250, `instance ${instanceId} installed`);

  before(async () => {
    fleet = await startE2eFleet({
      prefix: 'certplane-revocation-',
      alternateRoots: 1,
      env: async ({ dir }) => {
        clockFile = join(dir, 'clock-offset');
        await writeFile(clockFile, '0');
        return { CERTPLANE_CLOCK_OFFSET_FILE: clockFile, CERTPLANE_LOG_LEVEL: 'info' };
      },
    });
    for (const name of NAMES) agents[name] = await fleet.enroll({ name, hostnames: [`${name}.revoke.test`] });
    for (const name of NAMES) assert.equal((await json('POST', `/v1/instances/${agents[name].instanceId}/issue`)).status, 202);
    for (const name of NAMES) {
      const view = await installed(agents[name].instanceId);
      first[name] = { id: view.certificate.id, fullchainPem: (await json('GET', `/v1/certificates/${view.certificate.id}`)).body.fullchainPem };
      assert.equal((await atPebble(first[name].fullchainPem)).status, 'Valid');
    }
  });

  after(() => fleet?.stop());

  test('revoked with the account key: Pebble reports it revoked for the reason given, and the installed certificate is replaced', async () => {
    const instanceId = agents.account.instanceId;
    const revoked = await json('POST', `/v1/certificates/${first.account.id}/revoke`, { reason: 'superseded', comment: 'rotating after an audit' });
    assert.equal(revoked.status, 200, JSON.stringify(revoked.body));
    assert.equal(revoked.body.certificate.status, 'revoked');
    assert.deepEqual(
      { ...revoked.body.certificate.revocation, at: undefined },
      { reason: 'superseded', reasonCode: 4, comment: 'rotating after an audit', requestedBy: 'on-call test', at: undefined, signedBy: 'account-key', certificateKeyUnavailable: null, alreadyRevokedAtCa: false },
    );
    assert.deepEqual(await atPebble(first.account.fullchainPem), { status: 'Revoked', reason: 4 });
    assert.ok(revoked.body.reissue, 'a replacement was ordered');
    const replaced = await installed(instanceId, first.account.id);
    assert.equal(replaced.certificate.id, revoked.body.reissue.certificateId);
    assert.equal((await json('GET', `/v1/certificates/${first.account.id}`)).body.revocation.signedBy, 'account-key', 'the record is shown in the API');
    const again = await json('POST', `/v1/certificates/${first.account.id}/revoke`, { reason: 'superseded' });
    assert.deepEqual([again.status, again.body.code], [409, ErrorCode.CERTIFICATE_ALREADY_REVOKED]);
  });

  test('certplane revoke --reason keyCompromise with the agent connected: signed on the instance with the certificate key, and Pebble revokes it; --no-reissue orders nothing', async () => {
    const cli = await certplane(['revoke', '--server', fleet.api, '--certificate', first.compromised.id, '--reason', 'keyCompromise', '--comment', 'key copied off the host', '--no-reissue', '--actor', 'on-call test'], {}, 60_000);
    assert.equal(cli.code, 0, `${cli.stdout}\n${cli.stderr}`);
    assert.match(cli.stdout, /revoked \(keyCompromise, code 1\), signed by the certificate-key\n/);
    assert.match(cli.stdout, /no replacement requested/);
    const revoked = await json('GET', `/v1/certificates/${first.compromised.id}`);
    assert.deepEqual([revoked.body.revocation.signedBy, revoked.body.revocation.certificateKeyUnavailable, revoked.body.revocation.requestedBy], ['certificate-key', null, 'on-call test']);
    assert.deepEqual(await atPebble(first.compromised.fullchainPem), { status: 'Revoked', reason: 1 });
    const view = await json('GET', `/v1/instances/${agents.compromised.instanceId}`);
    assert.deepEqual([view.body.certificate.id, view.body.certificate.status], [first.compromised.id, 'revoked'], 'no replacement was started');
  });

  test('decommissioned with revoke while its agent is gone: the account key signs the keyCompromise revocation and says why, Pebble revokes it, and its hostname is free again', async () => {
    const instanceId = agents.offline.instanceId;
    await agents.offline.client.stop();
    await eventually(async () => ((await json('GET', `/v1/instances/${instanceId}`)).body.agent.connected ? undefined : true), 30_000, 200, 'the agent to disconnect');
    const done = await json('DELETE', `/v1/instances/${instanceId}?certificate=revoke&reason=keyCompromise&comment=${encodeURIComponent('instance image leaked')}`);
    assert.equal(done.status, 200, JSON.stringify(done.body));
    const revocation = done.body.revokedCertificate.revocation;
    assert.deepEqual([revocation.reason, revocation.signedBy, revocation.certificateKeyUnavailable?.code], ['keyCompromise', 'account-key', ErrorCode.AGENT_OFFLINE]);
    assert.deepEqual(await atPebble(first.offline.fullchainPem), { status: 'Revoked', reason: 1 });
    assert.deepEqual(done.body.hostnamesReleased, ['offline.revoke.test']);
    assert.equal((await json('POST', '/v1/instances', { name: 'offline-successor', hostnames: ['offline.revoke.test'] })).status, 201);
  });

  test('decommissioned with keep: its agent is cut off and refused when it dials again, its renewal does not run when the clock passes it (another instance\'s does), its certificate stays valid at the CA, and its hostname is free again', async () => {
    const leaving = agents.leaving.instanceId;
    const control = agents.account.instanceId;
    const mark = fleet.plane.lines.length;
    const done = await json('DELETE', `/v1/instances/${leaving}?certificate=keep&comment=${encodeURIComponent('customer left')}`);
    assert.equal(done.status, 200, JSON.stringify(done.body));
    assert.deepEqual([done.body.revokedCertificate, done.body.agentCertificatesRevoked, done.body.jobsCancelled], [null, 1, 1]);
    await fleet.plane.waitForLine((line) => line.includes('agent certificate revoked: disconnecting') && line.includes(leaving), 30_000);
    // The agent keeps dialling (every 2 s at most); each attempt is refused at authentication as revoked.
    await eventually(async () => (logEvents(fleet.plane.lines.slice(mark)).some((e) => e.msg === 'closing agent connection' && e.code === ErrorCode.AGENT_REVOKED) ? true : undefined), 30_000, 200, 'a refused reconnection');
    assert.equal((await json('GET', `/v1/instances/${leaving}`)).body.agent.connected, false);
    assert.equal((await json('POST', '/v1/instances', { name: 'leaving-successor', hostnames: ['leaving.revoke.test'] })).status, 201);

    const before = (await json('GET', `/v1/instances/${leaving}`)).body;
    const controlBefore = (await json('GET', `/v1/instances/${control}`)).body;
    const renewAt = Math.max(Date.parse(before.renewal.renewAt), Date.parse(controlBefore.renewal.renewAt));
    await writeFile(clockFile, String(renewAt - Date.now() + 60_000));
    await installed(control, controlBefore.certificate.id);
    // The schedulers run on (every 200 ms): nothing may happen to the decommissioned instance.
    await new Promise((resolve) => setTimeout(resolve, 3000));
    const after = (await json('GET', `/v1/instances/${leaving}`)).body;
    assert.deepEqual([after.certificate.id, after.certificate.status], [first.leaving.id, 'installed'], 'no renewal was started');
    assert.equal((await agents.leaving.installs()).length, 1);
    assert.deepEqual(await atPebble(first.leaving.fullchainPem), { status: 'Valid', reason: null });
  });
});
