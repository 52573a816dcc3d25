/**
 * The fleet metrics of /metrics on both engines, read from the database at scrape time:
 * each instance's certificate expiry and renewal timestamps, readiness and trust verdict,
 * and the last trust reload's counts. Two processes on one PostgreSQL database (two store
 * handles) report the same values, and a plane restarted on the same PGlite folder too:
 * nothing is counted in memory, so nothing resets.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { runAdminCommand } from '../../src/admin/index.js';
import { parseCertificateBundle, type TrustProfile } from '../../src/chain/index.js';
import { freshPostgresDatabase } from '../support/postgres.js';
import { advance } from '../support/lifecycle.js';
import { leaf, letsEncrypt2021, pem } from '../support/hierarchies.js';
import { scratch } from '../support/cli.js';
import { startTestPlane, type TestPlane } from '../support/plane.js';
import { instanceSeries, singleValue } from '../support/metrics.js';

/** The fleet part of an exposition, without this process's own timing: what every process must agree on. */
function fleetPart(exposition: string): string {
  return exposition
    .split('\n')
    .filter((line) => /^(# (HELP|TYPE) )?certplane_(certificate|instance|trust_reload)_/.test(line))
    .join('\n');
}

const DAY_MS = 86_400_000;

for (const engine of ['pglite', 'postgres'] as const) {
  describe(`fleet metrics from the database (${engine})`, async () => {
    const le = await letsEncrypt2021();
    const [x1] = parseCertificateBundle(le.isrgX1.pem);
    const [dst] = parseCertificateBundle(le.dst.pem);
    let profiles: TrustProfile[] = [{ name: 'default', anchors: [x1!, dst!] }];
    const dir = await scratch('certplane-fleet-metrics-');
    let database: { url: string; drop: () => Promise<void> } | undefined;
    let storeUrl: string;
    let plane: TestPlane;
    const ids: Record<'ready' | 'expired' | 'none' | 'gone' | 'quoted', string> = { ready: '', expired: '', none: '', gone: '', quoted: '' };
    const notAfter = new Date(Date.now() + 40 * DAY_MS);
    const renewAt = new Date(Date.now() + 25 * DAY_MS);
    const expiredAt = new Date(Date.now() - DAY_MS);

    const start = () => startTestPlane({ trustProfiles: () => profiles, storeUrl });
    const scrape = async (from: TestPlane = plane) => {
      const response = await from.app.inject({ method: 'GET', url: '/metrics' });
      assert.equal(response.statusCode, 200);
      return response.body;
    };
    const register = async (name: string, cluster?: string) => {
      const created = await plane.app.inject({ method: 'POST', url: '/v1/instances', payload: { name, hostnames: [`${name}.example.com`], ...(cluster ? { cluster } : {}) } });
      assert.equal(created.statusCode, 201, created.body);
      return created.json().id as string;
    };
    /** An installed certificate on the chain to ISRG Root X1, with (or without) the long chain through DST Root CA X3 stored beside it. */
    const install = async (instanceId: string, name: string, fields: { notAfter: Date; storeChains: boolean }) => {
      const server = await leaf(le.r3, [`${name}.example.com`]);
      const offered = [pem(server.cert, le.r3), pem(server.cert, le.r3, le.x1ByDst)];
      const certificate = await plane.store.certificates.create(instanceId);
      await advance(plane.store, certificate.id, 'installed', { fullchainPem: offered[0], fingerprintSha256: parseCertificateBundle(offered[0]!)[0]!.fingerprintSha256, notAfter: fields.notAfter });
      if (fields.storeChains) {
        await plane.store.chains.record(
          certificate.id,
          offered.map((chainPem, index) => ({ index, pem: chainPem, topIssuerCN: index === 0 ? 'ISRG Root X1' : 'DST Root CA X3', selected: index === 0, verification: {}, evaluatedAt: new Date(), trustFingerprint: 'issuance' })),
        );
      }
      return certificate.id;
    };

    before(async () => {
      database = engine === 'postgres' ? await freshPostgresDatabase('certplane_metrics') : undefined;
      storeUrl = database?.url ?? `pglite:${dir.path('db')}`;
      plane = await start();
      ids.ready = await register('ready', 'eu-1');
      ids.expired = await register('expired');
      ids.none = await register('none');
      ids.gone = await register('gone');
      ids.quoted = await register('quoted', 'eu "west" \\ 1');
      const readyCertificate = await install(ids.ready, 'ready', { notAfter, storeChains: true });
      await plane.store.certificates.setRenewal(readyCertificate, { renewAt, ariRetryAt: null });
      await install(ids.expired, 'expired', { notAfter: expiredAt, storeChains: false });
      await plane.trustEvaluation.evaluate();
      // Without a certificate it would show as not ready, were it not decommissioned.
      const removed = await plane.app.inject({ method: 'DELETE', url: `/v1/instances/${ids.gone}?certificate=keep` });
      assert.equal(removed.statusCode, 200, removed.body);
    });
    after(async () => {
      await plane?.close();
      await database?.drop();
      await dir.remove();
    });

    test('each live instance: expiry and renewal timestamps, ready only when installed, unexpired and verifying; labels are its id and cluster', async () => {
      const text = await scrape();
      const expiry = instanceSeries(text, 'certplane_certificate_expiry_timestamp_seconds');
      assert.deepEqual(Object.fromEntries(expiry), { [ids.ready]: ['eu-1', notAfter.getTime() / 1000], [ids.expired]: ['', expiredAt.getTime() / 1000] }, 'no series without an installed certificate, none for a decommissioned instance');
      assert.deepEqual(Object.fromEntries(instanceSeries(text, 'certplane_certificate_renewal_timestamp_seconds')), { [ids.ready]: ['eu-1', renewAt.getTime() / 1000] });
      const ready = instanceSeries(text, 'certplane_instance_ready');
      assert.deepEqual(Object.fromEntries(ready), { [ids.ready]: ['eu-1', 1], [ids.expired]: ['', 0], [ids.none]: ['', 0], [ids.quoted]: ['eu \\"west\\" \\\\ 1', 0] }, 'a cluster is escaped as the text format says');
      assert.deepEqual(Object.fromEntries(instanceSeries(text, 'certplane_instance_chain_broken')), { [ids.ready]: ['eu-1', 0], [ids.expired]: ['', 0] });
      assert.equal(singleValue(text, 'certplane_trust_reload_broken_instances'), 0, 'no reload yet');
      assert.equal(singleValue(text, 'certplane_trust_reload_timestamp_seconds'), undefined, 'no reload yet: no time');
      assert.ok(!text.includes('gone.example.com') && !text.includes('ready.example.com'), 'no hostname in any label');
      assert.match(text, /^# TYPE certplane_instance_ready gauge$/m);
    });

    test('served-chain status: 1 on a match, 0 otherwise, 0 once another certificate is installed than the one the probe saw; no series while never probed', async () => {
      const installed = (await plane.store.certificates.latestInstalled(ids.ready))!;
      const record = (status: 'match' | 'wrong-chain' | 'unreachable', instanceId: string, fingerprintSha256: string | null) =>
        plane.store.served.record({ instanceId, certificateId: null, status, checkedAt: new Date(), fingerprintSha256, anchor: null, problems: [] });
      await record('match', ids.ready, installed.fingerprintSha256);
      await record('unreachable', ids.expired, null);
      assert.deepEqual(Object.fromEntries(instanceSeries(await scrape(), 'certplane_instance_served_match')), { [ids.ready]: ['eu-1', 1], [ids.expired]: ['', 0] }, 'never probed: no series');
      await record('match', ids.ready, 'f'.repeat(64));
      assert.equal(instanceSeries(await scrape(), 'certplane_instance_served_match').get(ids.ready)?.[1], 0, 'the probe saw another leaf than the one installed: stale');
      await record('match', ids.ready, installed.fingerprintSha256);
    });

    test('a trust reload that drops the root: the chain shows broken, the instance not ready, and the reload counts what it broke', async () => {
      profiles = [{ name: 'default', anchors: [dst!] }];
      const reload = await runAdminCommand({ command: 'reload-trust', args: { reason: 'clients lost ISRG Root X1 (test)' }, actor: 'on-call' }, plane.adminDeps);
      assert.match(reload.text, /broken: 2 \(1 with a stored alternate chain\)/);
      const text = await scrape();
      assert.deepEqual(Object.fromEntries(instanceSeries(text, 'certplane_instance_chain_broken')), { [ids.ready]: ['eu-1', 1], [ids.expired]: ['', 1] });
      assert.deepEqual(Object.fromEntries(instanceSeries(text, 'certplane_instance_ready')), { [ids.ready]: ['eu-1', 0], [ids.expired]: ['', 0], [ids.none]: ['', 0], [ids.quoted]: ['eu \\"west\\" \\\\ 1', 0] });
      assert.equal(singleValue(text, 'certplane_trust_reload_broken_instances'), 2);
      assert.equal(singleValue(text, 'certplane_trust_reload_alternate_available_instances'), 1);
      const [entry] = await plane.store.audit.list(1);
      assert.equal(singleValue(text, 'certplane_trust_reload_timestamp_seconds'), entry!.at.getTime() / 1000);
    });

    test(engine === 'postgres' ? 'a second process on the same database reports the same fleet values' : 'a plane restarted on the same database reports the same fleet values', async () => {
      const before = fleetPart(await scrape());
      assert.ok(before.split('\n').length > 20, before);
      let other: TestPlane | undefined;
      if (engine === 'postgres') {
        other = await start();
        assert.equal(fleetPart(await scrape(other)), before);
        await other.close();
      } else {
        // PGlite holds its folder for one process at a time: close, then start again on it.
        await plane.close();
        plane = await start();
        assert.equal(fleetPart(await scrape()), before);
      }
    });
  });
}
