/**
 * Re-chaining through the API on both engines: the dry run says which instances would take
 * which path (a stored chain, a new order, or neither and why), validation errors carry
 * stable codes, a rechain campaign creates rechain records (same leaf, another stored chain,
 * nothing ordered) that supersede the installed certificate once acknowledged, and a trust
 * reload under CERTPLANE_ON_TRUST_CHANGE=rechain starts such a campaign by itself.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { runAdminCommand } from '../../src/admin/index.js';
import { parseCertificateBundle, type TrustProfile } from '../../src/chain/index.js';
import { hasCode } from '../../src/errors.js';
import { JobLifecycle } from '../../src/jobs/lifecycle.js';
import { freshPostgresDatabase } from '../support/postgres.js';
import { advance } from '../support/lifecycle.js';
import { leaf, letsEncrypt2021, pem } from '../support/hierarchies.js';
import { startTestPlane, type TestPlane } from '../support/plane.js';
import { certplane } from '../support/cli.js';
import { ErrorCode } from '../../src/error-catalogue.js';

const PREFERENCES = ['ISRG Root X1', 'DST Root CA X3'];

async function fixtures() {
  const le = await letsEncrypt2021();
  const [x1] = parseCertificateBundle(le.isrgX1.pem);
  const [dst] = parseCertificateBundle(le.dst.pem);
  /** An installed certificate for the instance: its own leaf under R3, offered with the short chain (to X1) and the long one (to DST), `selected` installed. */
  const install = async (plane: TestPlane, instanceId: string, name: string, options: { selected: 0 | 1; storeChains: boolean }) => {
    const server = await leaf(le.r3, [`${name}.example.com`]);
    const offered = [pem(server.cert, le.r3), pem(server.cert, le.r3, le.x1ByDst)];
    const certificate = await plane.store.certificates.create(instanceId);
    const issued = parseCertificateBundle(offered[0]!)[0]!;
    await advance(plane.store, certificate.id, 'installed', { fullchainPem: offered[options.selected], fingerprintSha256: issued.fingerprintSha256, notBefore: issued.notBefore, notAfter: issued.notAfter });
    if (options.storeChains) {
      await plane.store.chains.record(
        certificate.id,
        offered.map((chainPem, index) => ({ index, pem: chainPem, topIssuerCN: index === 0 ? 'ISRG Root X1' : 'DST Root CA X3', selected: index === options.selected, verification: {}, evaluatedAt: new Date(), trustFingerprint: 'issuance' })),
      );
    }
    return { certificateId: certificate.id, offered };
  };
  return { le, x1: x1!, dst: dst!, install };
}

for (const engine of ['pglite', 'postgres'] as const) {
  describe(`re-chaining through the API (${engine})`, async () => {
    const { x1, dst, install } = await fixtures();
    const profiles: TrustProfile[] = [
      { name: 'default', anchors: [x1, dst] },
      { name: 'legacy', anchors: [dst] },
    ];
    let plane: TestPlane;
    let database: { url: string; drop: () => Promise<void> } | undefined;
    const ids: Record<'moves' | 'current' | 'empty' | 'stranded', string> = { moves: '', current: '', empty: '', stranded: '' };
    let moves: Awaited<ReturnType<typeof install>>;

    const post = async (payload: unknown) => {
      const response = await plane.app.inject({ method: 'POST', url: '/v1/reissues', payload: payload as object, headers: { 'x-certplane-actor': 'on-call' } });
      return { status: response.statusCode, body: response.json() };
    };
    const register = async (name: string, cluster: string, trustProfiles?: string[]) => {
      const created = await plane.app.inject({ method: 'POST', url: '/v1/instances', payload: { name, hostnames: [`${name}.example.com`], cluster, autoIssue: false, ...(trustProfiles ? { trustProfiles } : {}) } });
      assert.equal(created.statusCode, 201, created.body);
      return created.json().id as string;
    };
    const jobCount = async () => Number((await plane.store.query<{ n: string }>('SELECT count(*) AS n FROM jobs'))[0]!.n);

    before(async () => {
      database = engine === 'postgres' ? await freshPostgresDatabase('certplane_rechain') : undefined;
      plane = await startTestPlane({ trustProfiles: () => profiles, preferences: PREFERENCES, ...(database ? { storeUrl: database.url } : {}) });
      ids.moves = await register('moves', 'eu-1');
      ids.current = await register('current', 'eu-1');
      ids.empty = await register('empty', 'us-1');
      ids.stranded = await register('stranded', 'us-1', ['legacy']);
      // On the long chain to DST while X1 is preferred: a stored chain of the same certificate fits better.
      moves = await install(plane, ids.moves, 'moves', { selected: 1, storeChains: true });
      await install(plane, ids.current, 'current', { selected: 0, storeChains: true });
      // Its clients trust only DST, and the only chain known (from before chains were kept) goes to X1.
      await install(plane, ids.stranded, 'stranded', { selected: 0, storeChains: false });
    });
    after(async () => {
      await plane?.close();
      await database?.drop();
    });

    test('the dry run says which path each instance would take, in every mode, and creates nothing', async () => {
      const rechain = await post({ selector: { all: true }, reason: 'root change', dryRun: true, mode: 'rechain' });
      assert.equal(rechain.status, 200, JSON.stringify(rechain.body));
      assert.equal(rechain.body.mode, 'rechain');
      assert.equal(rechain.body.matched, 4);
      assert.deepEqual(rechain.body.paths, { reissue: 0, rechain: 1, skip: 3, skipReasons: { current: 1, 'no-installed-certificate': 1, 'no-alternate-chain': 1 } });
      const byInstance = Object.fromEntries(rechain.body.instances.map((p: { instanceId: string }) => [p.instanceId, p]));
      assert.deepEqual(byInstance[ids.moves], { instanceId: ids.moves, path: 'rechain', chainIndex: 0 });
      assert.deepEqual(byInstance[ids.current], { instanceId: ids.current, path: 'skip', reason: 'current' });
      assert.deepEqual(byInstance[ids.empty], { instanceId: ids.empty, path: 'skip', reason: 'no-installed-certificate' });
      assert.deepEqual(byInstance[ids.stranded], { instanceId: ids.stranded, path: 'skip', reason: 'no-alternate-chain' });
      assert.equal(rechain.body.predictedSeconds, 0, 'a rechain orders nothing');

      const either = await post({ selector: { all: true }, reason: 'root change', dryRun: true, mode: 'rechain-or-reissue' });
      assert.deepEqual(either.body.paths, { reissue: 2, rechain: 1, skip: 1, skipReasons: { current: 1 } });
      const reissue = await post({ selector: { cluster: 'eu-1' }, reason: 'root change', dryRun: true });
      assert.deepEqual([reissue.body.mode, reissue.body.paths.reissue, reissue.body.paths.rechain], ['reissue', 2, 0], 'reissue stays the default');
      assert.equal(await jobCount(), 0);
      assert.equal(Number((await plane.store.query<{ n: string }>('SELECT count(*) AS n FROM campaigns'))[0]!.n), 0);
    });

    test('certplane reissue --mode rechain --dry-run prints the path of each instance', async () => {
      const dry = await certplane(['reissue', '--server', plane.url, '--all', '--mode', 'rechain', '--reason', 'rehearsal', '--dry-run']);
      assert.equal(dry.code, 0, dry.stderr);
      assert.match(dry.stdout, /^dry run: 4 instance\(s\) match \(mode rechain\): 1 rechain \(a stored chain, no order\), 0 reissue \(a new order\), 3 skipped \(current 1, no-alternate-chain 1, no-installed-certificate 1\)/);
      assert.ok(dry.stdout.includes(`${ids.moves}  rechain chain 0`), dry.stdout);
      assert.ok(dry.stdout.includes(`${ids.stranded}  skip no-alternate-chain`), dry.stdout);
      const bad = await certplane(['reissue', '--server', plane.url, '--all', '--mode', 'rechain-everything', '--reason', 'x', '--dry-run']);
      assert.equal(bad.code, 2);
    });

    test('invalid requests are refused with stable codes', async () => {
      const cases: [unknown, number, string][] = [
        [{ selector: { all: true }, reason: 'x', mode: 'rechain-all' }, 400, ErrorCode.VALIDATION_FAILED],
        [{ selector: { all: true }, reason: 'x', mode: 'rechain', rotateKey: true }, 400, ErrorCode.REISSUE_RECHAIN_KEEPS_KEY],
        [{ selector: { all: true }, reason: 'x', mode: 'rechain-or-reissue', rotateKey: false }, 400, ErrorCode.REISSUE_KEY_REUSE_UNSUPPORTED],
        [{ selector: { trustBroken: false }, reason: 'x', mode: 'rechain' }, 400, ErrorCode.VALIDATION_FAILED],
        [{ selector: { cluster: 'nowhere' }, reason: 'x', mode: 'rechain' }, 400, ErrorCode.REISSUE_NOTHING_MATCHED],
      ];
      for (const [payload, status, code] of cases) {
        const answer = await post(payload);
        assert.deepEqual([answer.status, answer.body.code], [status, code], JSON.stringify(payload));
      }
      assert.equal(await jobCount(), 0);
    });

    test('a rechain campaign re-chains what it can without an order, reports the rest, and is done once the agent acknowledges', async () => {
      const started = await post({ selector: { all: true }, reason: 'X1 preferred again', mode: 'rechain' });
      assert.equal(started.status, 201, JSON.stringify(started.body));
      const campaign = started.body;
      assert.equal(campaign.mode, 'rechain');
      assert.deepEqual([campaign.counts.matched, campaign.counts.queued, campaign.counts.skipped], [4, 1, 3]);
      assert.deepEqual(campaign.counts.skippedReasons, { current: 1, 'no-installed-certificate': 1, 'no-alternate-chain': 1 });
      assert.deepEqual(campaign.skipped.map((s: { instanceId: string; reason: string }) => [s.instanceId, s.reason]).sort(), [
        [ids.current, 'current'],
        [ids.empty, 'no-installed-certificate'],
        [ids.stranded, 'no-alternate-chain'],
      ].sort());
      const jobs = await plane.store.query<{ id: string; kind: string; instance_id: string }>('SELECT id, kind, instance_id FROM jobs WHERE campaign_id = $1', [campaign.id]);
      assert.deepEqual(jobs.map((j) => [j.kind, j.instance_id]), [['rechain', ids.moves]]);

      const job = (await plane.store.jobs.get(jobs[0]!.id))!;
      const record = await plane.rechains.run(job);
      assert.notEqual(record, 'current');
      if (record === 'current') return;
      assert.deepEqual([record.status, record.rechainedFromId, record.jobId, record.orderUrl], ['issued', moves.certificateId, job.id, null]);
      const original = (await plane.store.certificates.get(moves.certificateId))!;
      assert.equal(record.fingerprintSha256, original.fingerprintSha256, 'the same leaf');
      assert.equal(record.csrPem, original.csrPem);
      const fingerprints = (chainPem: string) => parseCertificateBundle(chainPem).map((c) => c.fingerprintSha256);
      assert.deepEqual(fingerprints(record.fullchainPem!), fingerprints(moves.offered[0]!), 'the stored chain to the preferred root, as its verified path');
      assert.equal(record.anchorCN, 'ISRG Root X1');
      assert.deepEqual((await plane.store.chains.list(record.id)).map((c) => [c.index, c.selected]), [[0, true], [1, false]], 'the stored chains come along, the delivered one selected');
      const audit = await plane.store.audit.latest('certificate.rechain', record.id);
      assert.deepEqual([audit?.actor, audit?.reason, (audit?.details as { rechainedFromId: string }).rechainedFromId], ['on-call', 'X1 preferred again', moves.certificateId]);
      await assert.rejects(plane.rechains.run(job), (error) => hasCode(error, ErrorCode.RECHAIN_ISSUANCE_UNDER_WAY), 'one open certificate per instance');

      // What the agent's acknowledgement does (the channel is exercised end to end elsewhere).
      await plane.store.certificates.apply(record.id, 'delivered', { deliveredAt: new Date() });
      const installed = (await plane.store.certificates.apply(record.id, 'installed', { installedAt: new Date() }))!;
      await new JobLifecycle({ store: plane.store, logger: plane.logger, clock: plane.clock }).onInstalled(installed);
      assert.equal((await plane.store.certificates.get(moves.certificateId))?.status, 'superseded');
      const status = (await plane.app.inject({ method: 'GET', url: `/v1/reissues/${campaign.id}` })).json();
      assert.deepEqual([status.state, status.counts.rechained, status.counts.installed, status.counts.ordered], ['done', 1, 1, 0]);
      const renewal = await plane.store.query<{ kind: string; state: string }>("SELECT kind, state FROM jobs WHERE instance_id = $1 AND state = 'queued'", [ids.moves]);
      assert.deepEqual(renewal, [{ kind: 'renewal', state: 'queued' }], 'the renewal of the leaf is queued again');

      const again = await post({ selector: { instanceIds: [ids.moves] }, reason: 'again', dryRun: true, mode: 'rechain' });
      assert.deepEqual(again.body.instances, [{ instanceId: ids.moves, path: 'skip', reason: 'current' }], 'the re-chained certificate is now the one selected');
    });

    test('a rechain job finding no stored chain that fits fails for good (RechainUnavailable) and orders nothing', async () => {
      await assert.rejects(plane.rechains.run({ id: '00000000-0000-4000-8000-000000000001', instanceId: ids.stranded, campaignId: null, reason: 'x', requestedBy: 'test' }), (error) => {
        assert.ok(hasCode(error, ErrorCode.RECHAIN_NO_SATISFYING_CHAIN));
        return true;
      });
      assert.equal((await plane.store.certificates.open(ids.stranded)).length, 0);
    });
  });
}

describe('CERTPLANE_ON_TRUST_CHANGE', async () => {
  const { x1, dst, install } = await fixtures();
  let profiles: TrustProfile[] = [{ name: 'default', anchors: [x1, dst] }];
  const planes: TestPlane[] = [];
  after(() => Promise.all(planes.map((p) => p.close())));

  const brokenFleet = async (onTrustChange: 'report' | 'rechain') => {
    profiles = [{ name: 'default', anchors: [x1, dst] }];
    const plane = await startTestPlane({ trustProfiles: () => profiles, preferences: PREFERENCES, onTrustChange });
    planes.push(plane);
    const created = await plane.app.inject({ method: 'POST', url: '/v1/instances', payload: { name: 'fleet', hostnames: ['fleet.example.com'], autoIssue: false } });
    const instanceId = created.json().id as string;
    await install(plane, instanceId, 'fleet', { selected: 0, storeChains: true });
    await plane.trustEvaluation.evaluate();
    profiles = [{ name: 'default', anchors: [dst] }];
    const reload = await runAdminCommand({ command: 'reload-trust', args: { reason: 'clients lose ISRG Root X1' }, actor: 'on-call' }, plane.adminDeps);
    return { plane, instanceId, reload };
  };

  test('report (the default): a reload that breaks installed chains starts nothing', async () => {
    const { plane, reload } = await brokenFleet('report');
    assert.match(reload.text, /broken: 1 \(1 with a stored alternate chain\)/);
    assert.doesNotMatch(reload.text, /rechain campaign/);
    assert.equal(Number((await plane.store.query<{ n: string }>('SELECT count(*) AS n FROM campaigns'))[0]!.n), 0);
  });

  test('rechain: the reload starts a rechain campaign for the broken instances by itself, audited as a service', async () => {
    const { plane, instanceId, reload } = await brokenFleet('rechain');
    assert.match(reload.text, /rechain campaign [0-9a-f-]+ started \(CERTPLANE_ON_TRUST_CHANGE=rechain\): 1 to re-chain, 0 reported/);
    const [campaign] = await plane.store.query<{ id: string; mode: string; requested_by: string; reason: string; selector: unknown }>('SELECT id, mode, requested_by, reason, selector FROM campaigns');
    assert.equal(campaign?.mode, 'rechain');
    assert.match(campaign!.requested_by, /^service:/);
    assert.match(campaign!.reason, /^trust reload by on-call: clients lose ISRG Root X1/);
    assert.deepEqual(campaign!.selector, { trustBroken: true });
    const audit = await plane.store.audit.latest('reissue.start', campaign!.id);
    assert.equal(audit?.actor, campaign!.requested_by);
    const jobs = await plane.store.query<{ kind: string; instance_id: string }>('SELECT kind, instance_id FROM jobs WHERE campaign_id = $1', [campaign!.id]);
    assert.deepEqual(jobs, [{ kind: 'rechain', instance_id: instanceId }]);
  });
});
