import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { generateKeyPair } from '../../src/pki/factory.js';
import { startTestPlane, type TestPlane } from '../support/plane.js';
import { certplane } from '../support/cli.js';
import { ErrorCode } from '../../src/error-catalogue.js';

describe('reissue API and CLI', async () => {
  let plane: TestPlane;
  const ids: string[] = [];
  before(async () => {
    plane = await startTestPlane();
    for (let i = 0; i < 5; i += 1) {
      const response = await plane.app.inject({ method: 'POST', url: '/v1/instances', payload: { name: `r${i}`, hostnames: [`r${i}.example.com`], cluster: i < 2 ? 'eu-1' : 'us-1' } });
      ids.push(response.json().id);
    }
  });
  after(() => plane.close());

  const post = (payload: unknown, actor?: string) =>
    plane.app.inject({ method: 'POST', url: '/v1/reissues', payload: payload as object, headers: actor ? { 'x-certplane-actor': actor } : {} });

  test('dry runs match by ids, cluster and all, without creating anything', async () => {
    assert.equal((await post({ selector: { cluster: 'eu-1' }, reason: 'test', dryRun: true })).json().matched, 2);
    assert.equal((await post({ selector: { all: true }, reason: 'test', dryRun: true })).json().matched, 5);
    const byIds = (await post({ selector: { instanceIds: [ids[4]] }, reason: 'test', dryRun: true })).json();
    assert.deepEqual(byIds.instanceIds, [ids[4]]);
    assert.equal(byIds.predictedSeconds, 0);
    assert.equal((await post({ selector: { chainIncludes: 'ISRG Root X1' }, reason: 'test', dryRun: true })).json().matched, 0, 'no installed chain yet');
    assert.deepEqual(await plane.store.campaigns.get('00000000-0000-4000-8000-000000000000'), undefined);
    assert.equal((await plane.store.query("SELECT count(*)::int AS n FROM jobs"))[0]?.n, 0);
  });

  test('a campaign records who and why, queues one job per instance, and can be cancelled', async () => {
    const created = await post({ selector: { cluster: 'us-1' }, reason: 'intermediate revoked' }, 'alice');
    assert.equal(created.statusCode, 201, created.body);
    const campaign = created.json();
    assert.equal(campaign.state, 'running');
    assert.equal(campaign.requestedBy, 'alice');
    assert.equal(campaign.counts.matched, 3);
    assert.equal(campaign.counts.queued, 3);
    const status = await plane.app.inject({ method: 'GET', url: `/v1/reissues/${campaign.id}` });
    assert.equal(status.json().reason, 'intermediate revoked');
    const cancelled = await plane.app.inject({ method: 'POST', url: `/v1/reissues/${campaign.id}/cancel`, payload: { reason: 'wrong cluster' }, headers: { 'x-certplane-actor': 'bob' } });
    assert.equal(cancelled.json().state, 'cancelled');
    assert.equal(cancelled.json().counts.cancelled, 3);
    const audit = await plane.store.audit.list(10);
    assert.deepEqual(audit.slice(0, 2).map((e) => [e.action, e.actor, e.reason]), [['reissue.cancel', 'bob', 'wrong cluster'], ['reissue.start', 'alice', 'intermediate revoked']]);
  });

  test("cancel's body is optional: none, {} and the JSON null are {}; another JSON scalar is 400", async () => {
    const campaign = (await post({ selector: { cluster: 'eu-1' }, reason: 'cancel bodies' }, 'carol')).json();
    const cancel = (payload?: string) =>
      plane.app.inject({ method: 'POST', url: `/v1/reissues/${campaign.id}/cancel`, ...(payload === undefined ? {} : { payload, headers: { 'content-type': 'application/json' } }) });
    for (const payload of ['1', '"stop"', '[]', 'true']) {
      const refused = await cancel(payload);
      assert.equal(refused.statusCode, 400, `${payload}: ${refused.body}`);
      assert.equal(refused.json().code, ErrorCode.VALIDATION_FAILED);
    }
    assert.equal((await plane.store.campaigns.get(campaign.id))?.state, 'running', 'a refused cancel leaves the campaign running');
    for (const payload of ['null', ' null ', '{}', undefined]) {
      const accepted = await cancel(payload);
      assert.equal(accepted.statusCode, 200, `${payload}: ${accepted.body}`);
      assert.equal(accepted.json().state, 'cancelled');
    }
  });

  test('bad requests are 400/404 with codes', async () => {
    assert.equal((await post({ selector: { cluster: 'eu-1' } })).statusCode, 400);
    assert.equal((await post({ selector: { nope: 1 }, reason: 'x' })).statusCode, 400);
    assert.equal((await post({ selector: { all: false }, reason: 'x' })).statusCode, 400);
    const rotate = await post({ selector: { all: true }, reason: 'x', rotateKey: false });
    assert.equal(rotate.statusCode, 400);
    assert.equal(rotate.json().code, ErrorCode.REISSUE_KEY_REUSE_UNSUPPORTED);
    assert.equal((await post({ selector: { cluster: 'nowhere' }, reason: 'x' })).json().code, ErrorCode.REISSUE_NOTHING_MATCHED);
    assert.equal((await post({ selector: { instanceIds: ['00000000-0000-4000-8000-000000000000'] }, reason: 'x' })).statusCode, 404);
    assert.equal((await post({ selector: { chainIncludes: 'sha256:zz' }, reason: 'x', dryRun: true })).statusCode, 400);
    assert.equal((await plane.app.inject({ method: 'GET', url: '/v1/reissues/00000000-0000-4000-8000-000000000000' })).statusCode, 404);
  });

  test('a one-line PEM private key in a reissue reason (or any field, header or escape) is refused with 400 and stored nowhere', async () => {
    const { privateKeyPem } = await generateKeyPair();
    const body = privateKeyPem.split('\n').filter((l) => l && !l.startsWith('-----')).join('');
    const oneLine = `-----BEGIN PRIVATE KEY----- ${body} -----END PRIVATE KEY-----`;
    const counts = async () => (await plane.store.query<{ n: number }>('SELECT ((SELECT count(*) FROM campaigns) + (SELECT count(*) FROM jobs) + (SELECT count(*) FROM audit_log) + (SELECT count(*) FROM instances))::int AS n'))[0]?.n;
    const before = await counts();
    const campaign = (await post({ selector: { cluster: 'eu-1' }, reason: 'to cancel' })).json();
    const after = await counts();
    const json = (payload: string) => ({ payload, headers: { 'content-type': 'application/json' } });
    const requests = [
      { method: 'POST', url: '/v1/reissues', payload: { selector: { cluster: 'eu-1' }, reason: oneLine } },
      { method: 'POST', url: '/v1/reissues', payload: { selector: { cluster: 'eu-1' }, reason: oneLine, dryRun: true } },
      { method: 'POST', url: '/v1/reissues', payload: { selector: { cluster: oneLine }, reason: 'x' } },
      { method: 'POST', url: '/v1/reissues', payload: { selector: { cluster: 'eu-1' }, reason: 'x', [oneLine]: true } },
      { method: 'POST', url: '/v1/reissues', payload: { selector: { cluster: 'eu-1' }, reason: 'x' }, headers: { 'x-certplane-actor': oneLine } },
      { method: 'POST', url: '/v1/reissues', ...json(JSON.stringify({ selector: { cluster: 'eu-1' }, reason: oneLine }).replaceAll('-', '\\u002d')) },
      { method: 'POST', url: `/v1/reissues/${campaign.id}/cancel`, payload: { reason: oneLine } },
      { method: 'POST', url: '/v1/instances', payload: { name: oneLine, hostnames: ['key.example.com'] } },
      { method: 'GET', url: `/v1/instances?cursor=${encodeURIComponent(oneLine)}` },
    ];
    for (const request of requests) {
      const reply = await plane.app.inject(request as { method: 'GET' | 'POST'; url: string });
      assert.deepEqual([reply.statusCode, reply.json().code], [400, ErrorCode.PRIVATE_KEY_REFUSED], `${request.method} ${request.url}: ${reply.body.slice(0, 200)}`);
      assert.ok(!reply.body.includes(body.slice(40, 80)), `the answer echoes the key: ${reply.body}`);
    }
    assert.equal(await counts(), after, 'nothing was stored');
    assert.ok(after! > before!);
    assert.equal((await plane.store.campaigns.get(campaign.id))?.state, 'running');
  });

  test('certplane reissue --dry-run and certplane status talk to the API', async () => {
    const dry = await certplane(['reissue', '--server', plane.url, '--cluster', 'eu-1', '--reason', 'rehearsal', '--dry-run']);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, /2 instance\(s\) match/);
    const status = await certplane(['status', '--server', plane.url]);
    assert.equal(status.code, 0, status.stderr);
    assert.equal(status.stdout.trim().split('\n').length, 5);
    assert.match(status.stdout, /agent offline/);
    const usage = await certplane(['reissue', '--server', plane.url, '--reason', 'x']);
    assert.equal(usage.code, 2);
    const unreachable = await certplane(['status', '--server', 'http://127.0.0.1:1']);
    assert.equal(unreachable.code, 1);
    assert.match(unreachable.stderr, /CLI_SERVER_UNREACHABLE/);
  });
});
