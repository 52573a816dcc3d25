/**
 * Trust profiles through the API on both engines: an instance lists its profiles (checked
 * against the configured ones), a what-if predicts which installed chains a trust change
 * breaks without writing anything, and a reload then marks exactly those instances broken,
 * with a stored alternate chain where one verifies.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { runAdminCommand } from '../../src/admin/index.js';
import { parseCertificateBundle, type TrustProfile } from '../../src/chain/index.js';
import { freshPostgresDatabase } from '../support/postgres.js';
import { advance } from '../support/lifecycle.js';
import { leaf, letsEncrypt2021, pem } from '../support/hierarchies.js';
import { startTestPlane, type TestPlane } from '../support/plane.js';
import { ErrorCode } from '../../src/error-catalogue.js';

for (const engine of ['pglite', 'postgres'] as const) {
  describe(`trust profiles, what-if and reload through the API (${engine})`, async () => {
    const le = await letsEncrypt2021();
    const [x1] = parseCertificateBundle(le.isrgX1.pem);
    const [dst] = parseCertificateBundle(le.dst.pem);
    let profiles: TrustProfile[] = [
      { name: 'default', anchors: [x1!, dst!] },
      { name: 'legacy', anchors: [dst!] },
    ];
    let plane: TestPlane;
    let database: { url: string; drop: () => Promise<void> } | undefined;
    const ids: Record<'rescued' | 'stays' | 'lost' | 'empty', string> = { rescued: '', stays: '', lost: '', empty: '' };

    const json = async (method: 'GET' | 'POST', url: string, payload?: unknown) => {
      const response = await plane.app.inject({ method, url, ...(payload === undefined ? {} : { payload: payload as object }) });
      return { status: response.statusCode, body: response.json() };
    };
    const register = async (name: string, trustProfiles?: string[]) => {
      const created = await json('POST', '/v1/instances', { name, hostnames: [`${name}.example.com`], ...(trustProfiles ? { trustProfiles } : {}) });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      return created.body.id as string;
    };
    /** An installed certificate for the instance: its own leaf under R3, offered with the short and the long chain. */
    const install = async (instanceId: string, name: string, options: { selected: 0 | 1; storeChains: boolean }) => {
      const r3 = le.r3;
      const server = await leaf(r3, [`${name}.example.com`]);
      const offered = [pem(server.cert, r3), pem(server.cert, r3, le.x1ByDst)];
      const certificate = await plane.store.certificates.create(instanceId);
      await advance(plane.store, certificate.id, 'installed', { fullchainPem: offered[options.selected], fingerprintSha256: parseCertificateBundle(offered[0]!)[0]!.fingerprintSha256 });
      if (options.storeChains) {
        await plane.store.chains.record(
          certificate.id,
          offered.map((chainPem, index) => ({ index, pem: chainPem, topIssuerCN: index === 0 ? 'ISRG Root X1' : 'DST Root CA X3', selected: index === options.selected, verification: {}, evaluatedAt: new Date(), trustFingerprint: 'issuance' })),
        );
      }
      return certificate.id;
    };

    before(async () => {
      database = engine === 'postgres' ? await freshPostgresDatabase('certplane_trust') : undefined;
      plane = await startTestPlane({ trustProfiles: () => profiles, ...(database ? { storeUrl: database.url } : {}) });
      ids.rescued = await register('rescued');
      ids.stays = await register('stays', ['default', 'legacy']);
      ids.lost = await register('lost');
      ids.empty = await register('empty');
      await install(ids.rescued, 'rescued', { selected: 0, storeChains: true });
      await install(ids.stays, 'stays', { selected: 1, storeChains: true });
      // Issued before chains were kept: its installed path is the only chain known.
      await install(ids.lost, 'lost', { selected: 0, storeChains: false });
      await plane.trustEvaluation.evaluate();
    });
    after(async () => {
      await plane?.close();
      await database?.drop();
    });

    test('an instance lists configured trust profiles only; the default is ["default"]', async () => {
      const refused = await json('POST', '/v1/instances', { name: 'typo', hostnames: ['typo.example.com'], trustProfiles: ['default', 'legacy-windows'] });
      assert.equal(refused.status, 400);
      assert.equal(refused.body.code, ErrorCode.INSTANCE_UNKNOWN_TRUST_PROFILE);
      assert.match(refused.body.message, /"legacy-windows"/);
      assert.deepEqual((await json('GET', `/v1/instances/${ids.rescued}`)).body.trustProfiles, ['default']);
      assert.deepEqual((await json('GET', `/v1/instances/${ids.stays}`)).body.trustProfiles, ['default', 'legacy']);
    });

    test('before any change every installed chain verifies, and an instance without one is unevaluated', async () => {
      for (const id of [ids.rescued, ids.stays, ids.lost]) {
        const { body } = await json('GET', `/v1/instances/${id}`);
        assert.deepEqual([body.trust.status, body.trust.brokenProfiles, body.atRisk], ['ok', [], false], id);
      }
      assert.equal((await json('GET', `/v1/instances/${ids.empty}`)).body.trust.status, 'unevaluated');
    });

    test('what-if "clients lose ISRG Root X1" predicts per instance, pages with sealed cursors, and writes nothing', async () => {
      const before = await plane.store.query<{ n: string }>('SELECT count(*) AS n FROM instance_trust WHERE status = $1', ['broken']);
      const change = { removeRoots: ['ISRG Root X1'] };
      const answer = await json('POST', '/v1/whatif', { change });
      assert.equal(answer.status, 200, JSON.stringify(answer.body));
      const outcomes = Object.fromEntries(answer.body.items.map((r: { instanceId: string; outcome: string }) => [r.instanceId, r.outcome]));
      assert.deepEqual(outcomes, { [ids.rescued]: 'alternate-chain', [ids.stays]: 'verifies', [ids.lost]: 'new-certificate', [ids.empty]: 'no-installed-certificate' });
      assert.deepEqual(answer.body.counts, { instances: 4, verifies: 1, alternateChain: 1, newCertificate: 1, noInstalledCertificate: 1 });
      assert.equal(answer.body.items.find((r: { instanceId: string }) => r.instanceId === ids.rescued).alternateChainIndex, 1);

      const paged: string[] = [];
      let cursor: string | undefined;
      do {
        const page = await json('POST', '/v1/whatif', { change, limit: 1, ...(cursor ? { cursor } : {}) });
        assert.equal(page.status, 200, JSON.stringify(page.body));
        paged.push(...page.body.items.map((r: { instanceId: string }) => r.instanceId));
        cursor = page.body.nextCursor ?? undefined;
      } while (cursor);
      assert.deepEqual(paged, answer.body.items.map((r: { instanceId: string }) => r.instanceId));
      const first = await json('POST', '/v1/whatif', { change, limit: 1 });
      const forged = await json('POST', '/v1/whatif', { change, limit: 1, cursor: `${ids.lost}.${first.body.nextCursor.split('.').pop()}` });
      assert.deepEqual([forged.status, forged.body.code], [400, ErrorCode.STORE_INVALID_CURSOR]);

      const later = await json('POST', '/v1/whatif', { change: { at: '2100-01-01T00:00:00Z' } });
      assert.equal(later.body.counts.verifies, 0, 'in 2100 every leaf has expired');
      const replaced = await json('POST', '/v1/whatif', { change: { replaceProfiles: { legacy: le.isrgX1.pem } }, selector: { instanceIds: [ids.stays] } });
      assert.deepEqual(replaced.body.items.map((r: { outcome: string; brokenProfiles: string[] }) => [r.outcome, r.brokenProfiles]), [['verifies', []]], 'the long chain also verifies through X1 (trusted first)');

      assert.deepEqual(await plane.store.query('SELECT count(*) AS n FROM instance_trust WHERE status = $1', ['broken']), before);
      assert.equal((await json('GET', `/v1/instances/${ids.rescued}`)).body.trust.status, 'ok', 'a what-if changes nothing');
    });

    test('after the root leaves the profile, a reload marks exactly the predicted instances broken, with the stored alternate where one verifies', async () => {
      const predicted = (await json('POST', '/v1/whatif', { change: { removeRoots: ['ISRG Root X1'] } })).body.items.filter((r: { outcome: string }) => r.outcome === 'alternate-chain' || r.outcome === 'new-certificate');
      profiles = profiles.map((p) => ({ ...p, anchors: p.anchors.filter((a) => a.subjectCN !== 'ISRG Root X1') }));
      const reload = await runAdminCommand({ command: 'reload-trust', args: { reason: 'ca-certificates dropped ISRG Root X1 (test)' }, actor: 'on-call' }, plane.adminDeps);
      assert.match(reload.text, /broken: 2 \(1 with a stored alternate chain\)/);

      const listed = await json('GET', '/v1/instances?limit=500');
      const broken = listed.body.items.filter((i: { trust: { status: string } }) => i.trust.status === 'broken');
      assert.deepEqual(broken.map((i: { id: string }) => i.id).sort(), predicted.map((r: { instanceId: string }) => r.instanceId).sort());
      const rescued = (await json('GET', `/v1/instances/${ids.rescued}`)).body;
      assert.deepEqual([rescued.trust.status, rescued.trust.brokenProfiles, rescued.trust.alternateAvailable, rescued.trust.alternateChainIndex, rescued.atRisk], ['broken', ['default'], true, 1, true]);
      const lost = (await json('GET', `/v1/instances/${ids.lost}`)).body;
      assert.deepEqual([lost.trust.status, lost.trust.alternateAvailable], ['broken', false]);
      assert.equal((await json('GET', `/v1/instances/${ids.stays}`)).body.trust.status, 'ok');

      const certificate = await plane.store.certificates.latestInstalled(ids.rescued);
      const chains = await plane.store.chains.list(certificate!.id);
      assert.deepEqual(chains.map((c) => (c.verification as Record<string, { ok: boolean }>).default?.ok), [false, true], 'each stored chain carries its verdict under the reloaded settings');
      assert.ok(chains.every((c) => c.trustFingerprint === plane.trust.current().fingerprint));
      const [entry] = await plane.store.audit.list(1);
      assert.deepEqual([entry?.action, entry?.actor, (entry?.details as { broken: number }).broken], ['trust.reload', 'on-call', 2]);
    });
  });
}
