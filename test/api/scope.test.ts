/**
 * Cluster limits on every route, walked from openapi.yaml: a caller limited to eu-1 gets
 * nothing of us-1, of instances without a cluster, or of campaigns that span a cluster it
 * does not have. Objects it cannot reach answer exactly as ids that do not exist (404
 * NOT_FOUND), so it cannot even learn they are there. A route added to the API without an
 * expectation here fails the walk: scoping is decided per route, never forgotten.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { createCsr, generateKeyPair, loopbackServerCertificate } from '../../src/pki/factory.js';
import type { ApiRole } from '../../src/store/types.js';
import { callPlane, clientCertificate, type ClientIdentity } from '../support/callers.js';
import { startTestPlane, type TestPlane } from '../support/plane.js';
import { ErrorCode } from '../../src/error-catalogue.js';

const OPENAPI = fileURLToPath(new URL('../../../openapi.yaml', import.meta.url));

type Who = 'admin' | 'euReader' | 'euOperator' | 'euUsReader';

describe('cluster limits on every route', async () => {
  let plane: TestPlane;
  let serverCaPem: string;
  const callers = {} as Record<Who, ClientIdentity>;
  const ids = { eu: '', us: '', bare: '', euCertificate: '', usCertificate: '', usCampaign: '', spanningCampaign: '', bareCampaign: '', euCampaign: '' };

  const call = (who: Who, method: string, path: string, body?: unknown) => callPlane(plane.url, serverCaPem, callers[who], method, path, body);
  const created = async (who: Who, method: string, path: string, body: unknown, status: number) => {
    const response = await call(who, method, path, body);
    assert.equal(response.status, status, `${method} ${path} as ${who}: ${JSON.stringify(response.body)}`);
    return response.body;
  };

  /** The refusal of `id` is word for word what an id that does not exist gets (the id aside). */
  const assertHidden = async (who: Who, method: string, template: string, id: string, body?: unknown) => {
    const ghost = randomUUID();
    const real = await call(who, method, template.replace('{id}', id), body);
    const unknown = await call(who, method, template.replace('{id}', ghost), body);
    const label = `${method} ${template} as ${who} on ${id}: ${real.status} ${JSON.stringify(real.body)}`;
    assert.equal(real.status, 404, label);
    assert.equal(real.body.code, ErrorCode.NOT_FOUND, label);
    assert.equal(unknown.status, 404, `${method} ${template} with an unknown id`);
    assert.deepEqual({ ...real.body, message: real.body.message.replaceAll(id, ':id') }, { ...unknown.body, message: unknown.body.message.replaceAll(ghost, ':id') }, label);
  };
  const assertForbidden = async (who: Who, method: string, path: string, body: unknown) => {
    const response = await call(who, method, path, body);
    assert.deepEqual([response.status, response.body.code], [403, ErrorCode.AUTH_FORBIDDEN], `${method} ${path} ${JSON.stringify(body)} as ${who}: ${JSON.stringify(response.body)}`);
  };
  const campaignState = async (id: string) => (await plane.store.campaigns.get(id))?.state;
  const countRows = async (sql: string, params: unknown[] = []) => Number((await plane.store.query<{ n: string }>(sql, params))[0]!.n);

  before(async () => {
    const listener = await loopbackServerCertificate('certplane test plane CA');
    serverCaPem = listener.caPem;
    plane = await startTestPlane({ tls: { certPem: listener.certPem, keyPem: listener.keyPem } });
    const register = async (who: Who, role: ApiRole, clusters: string[] | null) => {
      callers[who] = await clientCertificate(who);
      await plane.store.apiClients.register({ fingerprintSha256: callers[who].fingerprint, name: who, role, clusters, notAfter: null });
    };
    await register('admin', 'admin', null);
    await register('euReader', 'reader', ['eu-1']);
    await register('euOperator', 'operator', ['eu-1']);
    await register('euUsReader', 'reader', ['eu-1', 'us-1']);
    ids.eu = (await created('admin', 'POST', '/v1/instances', { name: 'eu', hostnames: ['eu.example.com'], cluster: 'eu-1' }, 201)).id;
    ids.us = (await created('admin', 'POST', '/v1/instances', { name: 'us', hostnames: ['us.example.com'], cluster: 'us-1' }, 201)).id;
    ids.bare = (await created('admin', 'POST', '/v1/instances', { name: 'bare', hostnames: ['bare.example.com'] }, 201)).id;
    ids.euCertificate = (await created('admin', 'POST', `/v1/instances/${ids.eu}/issue`, undefined, 202)).certificateId;
    ids.usCertificate = (await created('admin', 'POST', `/v1/instances/${ids.us}/issue`, undefined, 202)).certificateId;
    ids.spanningCampaign = (await created('admin', 'POST', '/v1/reissues', { selector: { instanceIds: [ids.eu, ids.us] }, reason: 'spans eu-1 and us-1' }, 201)).id;
    ids.usCampaign = (await created('admin', 'POST', '/v1/reissues', { selector: { cluster: 'us-1' }, reason: 'us-1 only' }, 201)).id;
    ids.bareCampaign = (await created('admin', 'POST', '/v1/reissues', { selector: { instanceIds: [ids.bare] }, reason: 'no cluster' }, 201)).id;
    ids.euCampaign = (await created('euOperator', 'POST', '/v1/reissues', { selector: { cluster: 'eu-1' }, reason: 'eu-1 only' }, 201)).id;
  });
  after(() => plane.close());

  const outOfReachInstances = () => [ids.us, ids.bare];
  const outOfReachCampaigns = () => [ids.usCampaign, ids.spanningCampaign, ids.bareCampaign];

  /** What each route must do for a caller limited to eu-1; `operation` is the route's openapi.yaml entry. */
  const expectations: Record<string, (operation: { security?: unknown[] }) => Promise<void>> = {
    'GET /healthz': async (operation) => {
      assert.deepEqual(operation.security, [], 'public, and carries nothing of any cluster');
      assert.deepEqual((await call('euReader', 'GET', '/healthz')).body, { status: 'ok' });
    },
    'GET /readyz': async (operation) => {
      assert.deepEqual(operation.security, [], 'public, and carries nothing of any cluster');
      assert.deepEqual((await call('euReader', 'GET', '/readyz')).body, { status: 'ok' });
    },
    'POST /v1/agents/enroll': async (operation) => {
      // The one-time token is the credential and names its instance; only scoped routes mint it.
      assert.deepEqual(operation.security, []);
      const refused = await call('euOperator', 'POST', '/v1/agents/enroll', { token: 'cpe_guess', csrPem: await createCsr(await generateKeyPair(), ['certplane-agent']) });
      assert.equal(refused.body.code, ErrorCode.ENROLLMENT_TOKEN_INVALID);
    },
    'GET /metrics': async () => {
      // Process-wide counters without instance or cluster labels, and the fleet series of the caller's clusters only.
      const metrics = await call('euReader', 'GET', '/metrics');
      assert.equal(metrics.status, 200);
      for (const secret of ['us-1', ids.us, ids.bare, 'certplane_trust_reload_broken_instances']) assert.ok(!String(metrics.body).includes(secret), `metrics mention ${secret}`);
      assert.match(String(metrics.body), new RegExp(`^certplane_instance_ready\\{instance_id="${ids.eu}",cluster="eu-1"\\} 0$`, 'm'));
    },
    'GET /v1/instances': async () => {
      for (const who of ['euReader', 'euOperator'] as const) {
        const listed = await call(who, 'GET', '/v1/instances?limit=500');
        assert.equal(listed.status, 200);
        assert.deepEqual(listed.body.items.map((i: { id: string }) => i.id), [ids.eu], who);
      }
      // Filters narrow within the caller's clusters; naming another cluster is refused, never answered empty or full.
      assert.deepEqual((await call('euReader', 'GET', '/v1/instances?hostname=us.example.com')).body.items, []);
      assert.deepEqual((await call('euReader', 'GET', '/v1/instances?status=pending')).body.items.map((i: { id: string }) => i.id), [ids.eu]);
      await assertForbidden('euReader', 'GET', '/v1/instances?cluster=us-1', undefined);
    },
    'POST /v1/instances': async () => {
      await assertForbidden('euOperator', 'POST', '/v1/instances', { name: 'intruder', hostnames: ['intruder.example.com'], cluster: 'us-1' });
      await assertForbidden('euOperator', 'POST', '/v1/instances', { name: 'intruder', hostnames: ['intruder.example.com'] });
      assert.equal(await countRows("SELECT count(*) AS n FROM instances WHERE name = 'intruder'"), 0);
    },
    'PATCH /v1/instances/{id}': async () => {
      for (const id of outOfReachInstances()) await assertHidden('euOperator', 'PATCH', '/v1/instances/{id}', id, { name: 'taken over', reason: 'probe' });
      // Its own instance it may change, but not move out of its clusters (nor out of every cluster).
      for (const cluster of ['us-1', null]) await assertForbidden('euOperator', 'PATCH', `/v1/instances/${ids.eu}`, { cluster, reason: 'probe' });
      assert.equal(await countRows("SELECT count(*) AS n FROM instances WHERE name = 'taken over' OR (id = $1 AND cluster IS DISTINCT FROM 'eu-1')", [ids.eu]), 0);
      assert.equal(await countRows("SELECT count(*) AS n FROM audit_log WHERE action = 'instance.update' AND actor = 'client:euOperator'"), 0);
      const own = await call('euOperator', 'PATCH', `/v1/instances/${ids.eu}`, { name: 'eu (renamed)', reason: 'mine' });
      assert.deepEqual([own.status, own.body.name, own.body.cluster], [200, 'eu (renamed)', 'eu-1']);
      assert.equal((await call('euReader', 'PATCH', `/v1/instances/${ids.eu}`, { name: 'reader', reason: 'probe' })).status, 403, 'a reader changes nothing');
    },
    'GET /v1/instances/summary': async () => {
      const own = await call('euReader', 'GET', '/v1/instances/summary');
      assert.equal(own.status, 200);
      assert.equal(own.body.total, 1, 'eu-1 only');
      assert.equal(own.body.byStatus.pending, 1);
      assert.equal((await call('euReader', 'GET', '/v1/instances/summary?cluster=eu-1')).body.total, 1);
      assert.equal((await call('euReader', 'GET', '/v1/instances/summary?cluster=us-1')).status, 403);
      assert.equal((await call('admin', 'GET', '/v1/instances/summary')).body.total, 3);
    },
    'GET /v1/instances/{id}': async () => {
      for (const who of ['euReader', 'euOperator'] as const) for (const id of outOfReachInstances()) await assertHidden(who, 'GET', '/v1/instances/{id}', id);
      assert.equal((await call('euReader', 'GET', `/v1/instances/${ids.eu}`)).status, 200);
    },
    'POST /v1/instances/{id}/enrollment-token': async () => {
      for (const id of outOfReachInstances()) await assertHidden('euOperator', 'POST', '/v1/instances/{id}/enrollment-token', id);
      assert.equal(await countRows("SELECT count(*) AS n FROM enrollment_tokens WHERE instance_id = ANY($1::uuid[])", [outOfReachInstances()]), 2, 'only the tokens of registration');
    },
    'POST /v1/instances/{id}/issue': async () => {
      for (const id of outOfReachInstances()) await assertHidden('euOperator', 'POST', '/v1/instances/{id}/issue', id);
      assert.equal(await countRows("SELECT count(*) AS n FROM audit_log WHERE action = 'instance.issue' AND actor = 'client:euOperator'"), 0);
    },
    'DELETE /v1/instances/{id}': async () => {
      for (const id of outOfReachInstances()) {
        await assertHidden('euOperator', 'DELETE', '/v1/instances/{id}?certificate=keep&comment=not%20mine', id);
        assert.equal((await plane.store.instances.get(id))?.decommissioned, null, 'still in service');
      }
      assert.equal(await countRows("SELECT count(*) AS n FROM audit_log WHERE action = 'instance.decommission'"), 0);
    },
    'POST /v1/certificates/{id}/revoke': async () => {
      await assertHidden('euOperator', 'POST', '/v1/certificates/{id}/revoke', ids.usCertificate, { reason: 'keyCompromise' });
      assert.equal((await plane.store.certificates.get(ids.usCertificate))?.revocation, null);
      assert.equal(await countRows("SELECT count(*) AS n FROM audit_log WHERE action = 'certificate.revoke'"), 0);
    },
    'GET /v1/certificates/{id}': async () => {
      for (const who of ['euReader', 'euOperator'] as const) await assertHidden(who, 'GET', '/v1/certificates/{id}', ids.usCertificate);
      assert.equal((await call('euReader', 'GET', `/v1/certificates/${ids.euCertificate}`)).status, 200);
    },
    'POST /v1/reissues': async () => {
      const before = await countRows('SELECT count(*) AS n FROM campaigns');
      for (const mode of ['reissue', 'rechain', 'rechain-or-reissue']) {
        for (const dryRun of [true, false]) {
          for (const selector of [{ cluster: 'us-1' }, { all: true }, { chainIncludes: 'ISRG Root X1' }, { trustBroken: true }]) await assertForbidden('euOperator', 'POST', '/v1/reissues', { selector, reason: 'probe', dryRun, mode });
          for (const theirs of outOfReachInstances()) {
            const ghost = randomUUID();
            const real = await call('euOperator', 'POST', '/v1/reissues', { selector: { instanceIds: [ids.eu, theirs] }, reason: 'probe', dryRun, mode });
            const unknown = await call('euOperator', 'POST', '/v1/reissues', { selector: { instanceIds: [ids.eu, ghost] }, reason: 'probe', dryRun, mode });
            assert.equal(real.status, 404, JSON.stringify(real.body));
            assert.deepEqual({ ...real.body, message: real.body.message.replace(theirs, ':id') }, { ...unknown.body, message: unknown.body.message.replace(ghost, ':id') });
          }
        }
      }
      assert.equal(await countRows('SELECT count(*) AS n FROM campaigns'), before, 'no campaign was started');
      const own = await call('euOperator', 'POST', '/v1/reissues', { selector: { cluster: 'eu-1' }, reason: 'own cluster', dryRun: true, mode: 'rechain' });
      assert.deepEqual([own.status, own.body.instances.map((p: { instanceId: string }) => p.instanceId)], [200, [ids.eu]], 'its own cluster it may re-chain');
      assert.equal(await countRows("SELECT count(*) AS n FROM jobs WHERE kind = 'rechain'"), 0, 'nothing of us-1 was ever queued for a rechain');
    },
    'POST /v1/whatif': async () => {
      const all = await call('euReader', 'POST', '/v1/whatif', { change: { removeRoots: ['ISRG Root X1'] } });
      assert.equal(all.status, 200, JSON.stringify(all.body));
      assert.deepEqual(all.body.items.map((i: { instanceId: string }) => i.instanceId), [ids.eu], 'the whole fleet means the caller\'s clusters');
      assert.equal(all.body.counts.instances, 1);
      await assertForbidden('euReader', 'POST', '/v1/whatif', { selector: { cluster: 'us-1' } });
      for (const theirs of outOfReachInstances()) {
        const ghost = randomUUID();
        const real = await call('euReader', 'POST', '/v1/whatif', { selector: { instanceIds: [ids.eu, theirs] } });
        const unknown = await call('euReader', 'POST', '/v1/whatif', { selector: { instanceIds: [ids.eu, ghost] } });
        assert.equal(real.status, 404, JSON.stringify(real.body));
        assert.deepEqual({ ...real.body, message: real.body.message.replace(theirs, ':id') }, { ...unknown.body, message: unknown.body.message.replace(ghost, ':id') });
      }
    },
    'GET /v1/reissues/{id}': async () => {
      for (const who of ['euReader', 'euOperator'] as const) for (const id of outOfReachCampaigns()) await assertHidden(who, 'GET', '/v1/reissues/{id}', id);
      // The same rule lets through what is the caller's: its own cluster's campaign, and a spanning one to a caller with both clusters.
      assert.equal((await call('euReader', 'GET', `/v1/reissues/${ids.euCampaign}`)).status, 200);
      assert.equal((await call('euUsReader', 'GET', `/v1/reissues/${ids.spanningCampaign}`)).status, 200);
      assert.equal((await call('euUsReader', 'GET', `/v1/reissues/${ids.bareCampaign}`)).status, 404);
    },
    'POST /v1/reissues/{id}/cancel': async () => {
      for (const id of outOfReachCampaigns()) {
        const before = await campaignState(id);
        await assertHidden('euOperator', 'POST', '/v1/reissues/{id}/cancel', id, { reason: 'not mine' });
        assert.equal(await campaignState(id), before);
        assert.notEqual(before, 'cancelled');
      }
      assert.equal(await countRows("SELECT count(*) AS n FROM audit_log WHERE action = 'reissue.cancel'"), 0);
      const own = await call('euOperator', 'POST', `/v1/reissues/${ids.euCampaign}/cancel`, { reason: 'mine' });
      assert.deepEqual([own.status, own.body.state], [200, 'cancelled']);
    },
  };

  test('every route in openapi.yaml refuses a caller limited to eu-1 everything outside eu-1', async (t) => {
    const document = parse(await readFile(OPENAPI, 'utf8')) as { paths: Record<string, Record<string, { security?: unknown[] }>> };
    const routes = Object.entries(document.paths).flatMap(([path, operations]) => Object.keys(operations).map((method) => ({ key: `${method.toUpperCase()} ${path}`, operation: operations[method]! })));
    assert.deepEqual(
      routes.map((r) => r.key).filter((key) => !(key in expectations)),
      [],
      'a route without a cluster-limit expectation: scope it (findInScope in src/api/auth.ts) and say here what a limited caller gets',
    );
    assert.deepEqual(Object.keys(expectations).filter((key) => !routes.some((r) => r.key === key)), [], 'an expectation for a route openapi.yaml no longer has');
    for (const { key, operation } of routes) await t.test(key, () => expectations[key]!(operation));
  });

  test('a campaign records the clusters it matched when it started', async () => {
    assert.deepEqual((await plane.store.campaigns.get(ids.spanningCampaign))?.clusters?.toSorted(), ['eu-1', 'us-1']);
    assert.deepEqual((await plane.store.campaigns.get(ids.usCampaign))?.clusters, ['us-1']);
    assert.deepEqual((await plane.store.campaigns.get(ids.bareCampaign))?.clusters, [null]);
  });
});
