/**
 * Decommissioning and revocation through the API, on both storage engines: what a
 * decommissioned instance loses (its listing, its hostnames, its jobs, its tokens, its
 * certificate under way, its agent's channel) and what it keeps (its record and the audit
 * trail), and the refusals with their codes. The CA here refuses connections: the revocations
 * Pebble accepts are in test/e2e/revocation.test.ts; this suite proves that nothing is
 * recorded or changed when the CA did not accept one.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { CloseCode } from '../../src/channel/protocol.js';
import { createCsr, generateKeyPair } from '../../src/pki/factory.js';
import { cleanupList, type Defer } from '../support/cleanups.js';
import { leaf, root } from '../support/hierarchies.js';
import { advance } from '../support/lifecycle.js';
import { enrollTestAgent, openAgentChannel, startTestPlane, type TestPlane } from '../support/plane.js';
import { freshPostgresDatabase } from '../support/postgres.js';
import { ErrorCode } from '../../src/error-catalogue.js';

const TIMEOUT = { timeout: 120_000 };

const engines: { name: string; open(defer: Defer): Promise<string> }[] = [
  { name: 'PGlite', open: async () => 'memory:' },
  {
    name: 'PostgreSQL',
    open: async (defer) => {
      const database = await freshPostgresDatabase('certplane_revoke');
      defer(database.drop);
      return database.url;
    },
  },
];

for (const engine of engines) {
  describe(`decommission and revocation (${engine.name})`, () => {
    const steps = cleanupList();
    let plane: TestPlane;
    const call = async (method: 'GET' | 'POST' | 'DELETE', url: string, payload?: unknown, actor = 'ops-alice') => {
      const response = await plane.app.inject({ method, url, headers: { 'x-certplane-actor': actor }, ...(payload === undefined ? {} : { payload: payload as object }) });
      return { status: response.statusCode, body: response.json() as Record<string, any> };
    };
    /** An instance whose certificate is installed, with a real (test CA) chain the CA side can parse. */
    const installed = async (name: string) => {
      const agent = await enrollTestAgent(plane, name);
      const certificate = await plane.store.certificates.create(agent.instanceId);
      const issued = await leaf(await root(`${name} test root`), [`${name}.example.com`]);
      await advance(plane.store, certificate.id, 'installed', { fullchainPem: issued.cert.pem });
      return { ...agent, certificateId: certificate.id };
    };

    before(async () => {
      plane = await startTestPlane({ storeUrl: await engine.open(steps.defer), signingTimeoutMs: 1000 });
      steps.defer(() => plane.close());
    });
    after(() => steps.run());

    test('decommissioning with keep hides the instance from listings, frees its hostnames, cancels its jobs, spends its tokens and fails its certificate under way; its record and audit entry stay', TIMEOUT, async () => {
      const agent = await enrollTestAgent(plane, 'leaving', ['leaving.example.com', 'www.leaving.example.com']);
      const { body: spare } = await call('POST', `/v1/instances/${agent.instanceId}/enrollment-token`);
      const { job } = await plane.store.jobs.enqueue({ kind: 'renewal', instanceId: agent.instanceId, dueAt: new Date(Date.now() + 86_400_000), reason: 'two thirds of the lifetime', requestedBy: 'scheduler' });
      const underWay = await call('POST', `/v1/instances/${agent.instanceId}/issue`);
      assert.equal(underWay.status, 202);

      const done = await call('DELETE', `/v1/instances/${agent.instanceId}?certificate=keep&comment=${encodeURIComponent('customer left')}`);
      assert.equal(done.status, 200, JSON.stringify(done.body));
      assert.deepEqual(
        { ...done.body.instance.decommissioned, at: undefined },
        { at: undefined, requestedBy: 'ops-alice', comment: 'customer left', certificate: 'keep', revocationReason: null },
      );
      assert.equal(done.body.revokedCertificate, null);
      assert.equal(done.body.jobsCancelled, 1);
      assert.equal(done.body.agentCertificatesRevoked, 1);
      assert.deepEqual(done.body.abandonedCertificates, [underWay.body.certificateId]);
      assert.deepEqual(done.body.hostnamesReleased, ['leaving.example.com', 'www.leaving.example.com']);

      const listed = await call('GET', '/v1/instances?limit=500');
      assert.ok(!listed.body.items.some((i: { id: string }) => i.id === agent.instanceId), 'left out of the listing');
      const all = await call('GET', '/v1/instances?limit=500&include=decommissioned');
      assert.equal(all.body.items.find((i: { id: string }) => i.id === agent.instanceId)?.decommissioned?.certificate, 'keep', 'listed when asked for');
      const one = await call('GET', `/v1/instances/${agent.instanceId}`);
      assert.equal(one.status, 200, 'the record stays');
      assert.equal(one.body.decommissioned.requestedBy, 'ops-alice');
      const withoutChannel = (view: Record<string, any>) => ({ ...view, agent: { ...view.agent, connected: undefined } });
      assert.deepEqual(withoutChannel(done.body.instance), withoutChannel(one.body), 'the answer shows the instance as GET does');

      assert.equal((await plane.store.jobs.get(job.id))?.state, 'cancelled');
      const abandoned = await call('GET', `/v1/certificates/${underWay.body.certificateId}`);
      assert.deepEqual([abandoned.body.status, abandoned.body.failure.reason, abandoned.body.failure.permanent], ['failed', 'InstanceDecommissioned', true]);
      const enrolled = await call('POST', '/v1/agents/enroll', { token: spare.enrollmentToken, csrPem: await createCsr(await generateKeyPair(), ['certplane-agent']) });
      assert.equal(enrolled.body.code, ErrorCode.ENROLLMENT_TOKEN_INVALID, 'a token minted before the decommission enrolls nothing');

      const again = await call('POST', '/v1/instances', { name: 'successor', hostnames: ['leaving.example.com', 'www.leaving.example.com'] });
      assert.equal(again.status, 201, JSON.stringify(again.body));

      for (const [method, url] of [
        ['POST', `/v1/instances/${agent.instanceId}/issue`],
        ['POST', `/v1/instances/${agent.instanceId}/enrollment-token`],
        ['DELETE', `/v1/instances/${agent.instanceId}?certificate=keep`],
      ] as const) {
        const refused = await call(method, url);
        assert.deepEqual([refused.status, refused.body.code], [409, ErrorCode.INSTANCE_DECOMMISSIONED], `${method} ${url}`);
      }
      const [entry] = await plane.store.query<{ actor: string; reason: string; details: { certificate: string; jobsCancelled: number } }>(
        "SELECT actor, reason, details FROM audit_log WHERE action = 'instance.decommission' AND target = $1",
        [agent.instanceId],
      );
      assert.deepEqual([entry?.actor, entry?.reason, entry?.details.certificate, entry?.details.jobsCancelled], ['ops-alice', 'customer left', 'keep', 1]);
    });

    test('the agent of a decommissioned instance is cut off at once and cannot connect again', TIMEOUT, async () => {
      const agent = await enrollTestAgent(plane, 'cutoff');
      const channel = await openAgentChannel(plane, agent);
      await channel.next('welcome');
      assert.equal((await call('DELETE', `/v1/instances/${agent.instanceId}?certificate=keep`)).status, 200);
      assert.equal((await channel.closed).code, CloseCode.REVOKED);
      const retry = await openAgentChannel(plane, agent);
      const refused = await retry.closed;
      assert.equal(refused.code, CloseCode.AUTH_FAILED);
      assert.ok(refused.reason.startsWith(ErrorCode.AGENT_REVOKED), refused.reason);
      assert.ok(!retry.frames.some((f) => f.type === 'welcome'));
      assert.equal((await call('GET', `/v1/instances/${agent.instanceId}`)).body.agent.connected, false);
    });

    test('revoke needs an RFC 5280 reason a subscriber may give, and keep takes none', TIMEOUT, async () => {
      const agent = await enrollTestAgent(plane, 'undecided');
      for (const query of ['', '?certificate=revoke', '?certificate=keep&reason=superseded', '?certificate=revoke&reason=cACompromise', '?certificate=burn']) {
        const refused = await call('DELETE', `/v1/instances/${agent.instanceId}${query}`);
        assert.deepEqual([refused.status, refused.body.code], [400, ErrorCode.VALIDATION_FAILED], `${query}: ${JSON.stringify(refused.body)}`);
      }
      assert.equal((await plane.store.instances.get(agent.instanceId))?.decommissioned, null, 'still in service');
    });

    test('decommissioning with revoke while the CA cannot be reached changes nothing: the instance, its names and its certificate stay as they were', TIMEOUT, async () => {
      const instance = await installed('unreachable');
      const refused = await call('DELETE', `/v1/instances/${instance.instanceId}?certificate=revoke&reason=cessationOfOperation`);
      assert.deepEqual([refused.status, refused.body.code], [503, ErrorCode.ACME_UNREACHABLE], JSON.stringify(refused.body));
      assert.equal((await plane.store.instances.get(instance.instanceId))?.decommissioned, null);
      assert.deepEqual(await plane.store.instances.ownedNames(instance.instanceId, ['unreachable.example.com']), ['unreachable.example.com']);
      const certificate = await call('GET', `/v1/certificates/${instance.certificateId}`);
      assert.deepEqual([certificate.body.status, certificate.body.revocation], ['installed', null]);
      assert.equal((await plane.store.agentCertificates.list(100)).filter((c) => c.instanceId === instance.instanceId && c.revokedAt).length, 0);
    });

    test('keyCompromise with the agent offline goes to the account key, and a CA that did not answer leaves the certificate unrevoked and unrecorded', TIMEOUT, async () => {
      const instance = await installed('offline');
      const refused = await call('POST', `/v1/certificates/${instance.certificateId}/revoke`, { reason: 'keyCompromise', comment: 'key found in a pastebin' });
      assert.deepEqual([refused.status, refused.body.code], [503, ErrorCode.ACME_UNREACHABLE], JSON.stringify(refused.body));
      const certificate = await call('GET', `/v1/certificates/${instance.certificateId}`);
      assert.deepEqual([certificate.body.status, certificate.body.revocation], ['installed', null]);
      assert.equal((await plane.store.query("SELECT 1 FROM audit_log WHERE action = 'certificate.revoke'")).length, 0);
    });

    test('a certificate the CA never issued cannot be revoked, and only the reasons a subscriber may give are taken', TIMEOUT, async () => {
      const agent = await enrollTestAgent(plane, 'pending');
      const { body: pending } = await call('POST', `/v1/instances/${agent.instanceId}/issue`);
      const notIssued = await call('POST', `/v1/certificates/${pending.certificateId}/revoke`, { reason: 'superseded' });
      assert.deepEqual([notIssued.status, notIssued.body.code], [409, ErrorCode.CERTIFICATE_NOT_REVOCABLE]);
      for (const body of [{ reason: 'cACompromise' }, { reason: 'privilegeWithdrawn' }, { reason: 4 }, {}, { reason: 'superseded', extra: true }]) {
        const refused = await call('POST', `/v1/certificates/${pending.certificateId}/revoke`, body);
        assert.deepEqual([refused.status, refused.body.code], [400, ErrorCode.VALIDATION_FAILED], JSON.stringify(body));
      }
      const unknown = await call('POST', '/v1/certificates/00000000-0000-4000-8000-000000000000/revoke', { reason: 'superseded' });
      assert.deepEqual([unknown.status, unknown.body.code], [404, ErrorCode.NOT_FOUND]);
    });
  });
}
