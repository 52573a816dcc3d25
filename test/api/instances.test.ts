/**
 * The instance registry as a control plane uses it (issue 14), on both storage engines:
 * changing an instance (PATCH) with its audit trail and its names' ownership, the one
 * hostname validator behind registration and change, the first certificate on the agent's
 * connection, and listing and counting a fleet with filters and bounded pages.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createCsr, generateKeyPair } from '../../src/pki/factory.js';
import { cleanupList, type Defer } from '../support/cleanups.js';
import { enrollTestAgent, openAgentChannel, startTestPlane, type AgentChannel, type TestPlane } from '../support/plane.js';
import { freshPostgresDatabase } from '../support/postgres.js';
import { statementsOf } from '../support/statements.js';
import { ErrorCode } from '../../src/error-catalogue.js';

const engines: { name: string; open(defer: Defer): Promise<string> }[] = [
  { name: 'PGlite', open: async () => 'memory:' },
  {
    name: 'PostgreSQL',
    open: async (defer) => {
      const database = await freshPostgresDatabase('certplane_instances');
      defer(database.drop);
      return database.url;
    },
  },
];

const DAY = 86_400_000;

for (const engine of engines) {
  describe(`the instance registry (${engine.name})`, () => {
    const steps = cleanupList();
    let plane: TestPlane;
    before(async () => {
      plane = await startTestPlane({ storeUrl: await engine.open(steps.defer) });
      steps.defer(() => plane.close());
    });
    after(() => steps.run());

    const call = async (method: string, url: string, payload?: unknown, actor = 'control-plane') => {
      const response = await plane.app.inject({ method: method as 'GET', url, headers: { 'x-certplane-actor': actor }, ...(payload === undefined ? {} : { payload: payload as object }) });
      return { status: response.statusCode, body: response.json() as Record<string, any>, text: response.body };
    };
    const create = async (body: Record<string, unknown>) => {
      const created = await call('POST', '/v1/instances', { autoIssue: false, ...body });
      assert.equal(created.status, 201, created.text);
      return created.body.id as string;
    };
    const audit = async (target: string, action: string) => (await plane.store.audit.list(1000)).filter((e) => e.target === target && e.action === action);

    test('PATCH changes name, cluster, profile and autoIssue, and records who changed what and why', async () => {
      const id = await create({ name: 'db1', hostnames: ['db1.patch.example'], cluster: 'eu-1' });
      const patched = await call('PATCH', `/v1/instances/${id}`, { name: 'db1-renamed', cluster: 'eu-2', profile: 'tlsserver', autoIssue: true, reason: 'ticket OPS-12: moved to eu-2' }, 'alice');
      assert.equal(patched.status, 200, patched.text);
      assert.deepEqual([patched.body.name, patched.body.cluster, patched.body.profile, patched.body.autoIssue, patched.body.hostnames], ['db1-renamed', 'eu-2', 'tlsserver', true, ['db1.patch.example']]);
      assert.deepEqual((await call('GET', `/v1/instances/${id}`)).body.cluster, 'eu-2');
      const [entry, ...more] = await audit(id, 'instance.update');
      assert.equal(more.length, 0);
      assert.equal(entry?.actor, 'alice');
      assert.equal(entry?.reason, 'ticket OPS-12: moved to eu-2');
      assert.deepEqual(entry?.details, {
        name: { from: 'db1', to: 'db1-renamed' },
        cluster: { from: 'eu-1', to: 'eu-2' },
        profile: { from: null, to: 'tlsserver' },
        autoIssue: { from: false, to: true },
      });
      // Back to the CA's default profile and out of any cluster: null clears.
      const cleared = await call('PATCH', `/v1/instances/${id}`, { profile: null, cluster: null, reason: 'default profile' });
      assert.deepEqual([cleared.status, cleared.body.profile, cleared.body.cluster], [200, null, null]);
      // A change that changes nothing is answered, and leaves no entry.
      assert.equal((await call('PATCH', `/v1/instances/${id}`, { name: 'db1-renamed', reason: 'again' })).status, 200);
      assert.equal((await audit(id, 'instance.update')).length, 2);
    });

    test('PATCH refuses a body without a reason or without a change, and an unknown instance, with their codes', async () => {
      const id = await create({ name: 'refusals', hostnames: ['refusals.patch.example'] });
      for (const body of [{ name: 'x' }, { reason: 'nothing named' }, { name: 'x', reason: 'r', extra: 1 }, { hostnames: [], reason: 'r' }, { keyAlgorithm: 'dsa', reason: 'r' }, { name: 'x', reason: '' }]) {
        const refused = await call('PATCH', `/v1/instances/${id}`, body);
        assert.deepEqual([refused.status, refused.body.code], [400, ErrorCode.VALIDATION_FAILED], `${JSON.stringify(body)}: ${refused.text}`);
      }
      const unknown = await call('PATCH', '/v1/instances/00000000-0000-4000-8000-000000000000', { name: 'x', reason: 'r' });
      assert.deepEqual([unknown.status, unknown.body.code], [404, ErrorCode.NOT_FOUND]);
      assert.equal((await call('GET', `/v1/instances/${id}`)).body.name, 'refusals');
      assert.equal((await audit(id, 'instance.update')).length, 0);
    });

    test('PATCH hostnames: removed names are free for another instance at once, new ones are claimed, normalised like a registration', async () => {
      const id = await create({ name: 'typo', hostnames: ['db3.eu1.patch.example', 'keep.patch.example'] });
      const patched = await call('PATCH', `/v1/instances/${id}`, { hostnames: ['DB3.EU-1.patch.example.', 'keep.patch.example'], reason: 'typo in the hostname' });
      assert.equal(patched.status, 200, patched.text);
      assert.deepEqual(patched.body.hostnames, ['db3.eu-1.patch.example', 'keep.patch.example']);
      assert.deepEqual(await plane.store.instances.ownedNames(id, ['db3.eu1.patch.example', 'db3.eu-1.patch.example', 'keep.patch.example']), ['db3.eu-1.patch.example', 'keep.patch.example']);
      const [entry] = await audit(id, 'instance.update');
      assert.deepEqual(entry?.details, { hostnames: { added: ['db3.eu-1.patch.example'], removed: ['db3.eu1.patch.example'] } });
      // The released name registers again; the claimed one does not.
      await create({ name: 'other', hostnames: ['db3.eu1.patch.example'] });
      const taken = await call('POST', '/v1/instances', { name: 'late', hostnames: ['db3.eu-1.patch.example'] });
      assert.deepEqual([taken.status, taken.body.code], [409, ErrorCode.INSTANCE_HOSTNAME_TAKEN]);
    });

    test('PATCH hostnames onto a name (or a wildcard over a name) another instance holds is 409 INSTANCE_HOSTNAME_TAKEN and changes nothing', async () => {
      const holder = await create({ name: 'holder', hostnames: ['b.conflict.example'] });
      const id = await create({ name: 'mover', hostnames: ['a.conflict-own.example'] });
      for (const hostnames of [['b.conflict.example'], ['B.Conflict.Example.'], ['a.conflict-own.example', '*.conflict.example']]) {
        const refused = await call('PATCH', `/v1/instances/${id}`, { hostnames, name: 'renamed', reason: 'take it' });
        assert.deepEqual([refused.status, refused.body.code], [409, ErrorCode.INSTANCE_HOSTNAME_TAKEN], refused.text);
        assert.ok(refused.body.message.includes(holder), refused.text);
      }
      const unchanged = (await call('GET', `/v1/instances/${id}`)).body;
      assert.deepEqual([unchanged.name, unchanged.hostnames], ['mover', ['a.conflict-own.example']]);
      assert.deepEqual(await plane.store.instances.ownedNames(id, ['a.conflict-own.example']), ['a.conflict-own.example'], 'its own name is still its own');
      assert.equal((await audit(id, 'instance.update')).length, 0);
      // An instance may widen its own name to a wildcard over it.
      const widened = await call('PATCH', `/v1/instances/${id}`, { hostnames: ['a.conflict-own.example', '*.conflict-own.example'], reason: 'wildcard' });
      assert.equal(widened.status, 200, widened.text);
    });

    test('two instances claiming one name at once: exactly one gets it', async () => {
      const ids = await Promise.all([0, 1, 2, 3].map((i) => create({ name: `racer${i}`, hostnames: [`racer${i}.race.example`] })));
      const answers = await Promise.all(ids.map((id) => call('PATCH', `/v1/instances/${id}`, { hostnames: ['contested.race.example'], reason: 'race' })));
      assert.deepEqual(answers.map((a) => a.status).sort(), [200, 409, 409, 409], answers.map((a) => a.text).join('\n'));
      const rows = await plane.store.query<{ instance_id: string }>("SELECT instance_id FROM instance_hostnames WHERE name = 'contested.race.example'");
      assert.equal(rows.length, 1);
      assert.equal(rows[0]!.instance_id, ids[answers.findIndex((a) => a.status === 200)]);
    });

    test('names are normalised before they are stored: case, trailing dot, internationalised labels to A-labels, IPv6 to its canonical form', async () => {
      const id = await create({ name: 'idna', hostnames: ['Bücher.Normal.Example.', 'BÜCHER.normal.example', 'ａpi.normal.example', '*.Wild.Normal.Example'] });
      assert.deepEqual((await call('GET', `/v1/instances/${id}`)).body.hostnames, ['xn--bcher-kva.normal.example', 'api.normal.example', '*.wild.normal.example']);
      const taken = await call('POST', '/v1/instances', { name: 'again', hostnames: ['xn--BCHER-kva.normal.example'] });
      assert.deepEqual([taken.status, taken.body.code], [409, ErrorCode.INSTANCE_HOSTNAME_TAKEN], 'the A-label and the U-label are one name');
      const v6 = await create({ name: 'v6', hostnames: ['2001:DB8:0:0::1'], profile: 'shortlived' });
      assert.deepEqual((await call('GET', `/v1/instances/${v6}`)).body.hostnames, ['2001:db8::1']);
    });

    test('names the CA would refuse are refused at registration and change (VALIDATION_FAILED, naming the problem)', async () => {
      const id = await create({ name: 'valid', hostnames: ['valid.refuse.example'] });
      const refusals: [string, RegExp][] = [
        ['*.com', /wildcard over a single label/],
        ['a.*.refuse.example', /wildcard that is not the whole leftmost label/],
        ['a*.refuse.example', /wildcard that is not the whole leftmost label/],
        ['*.*.refuse.example', /wildcard that is not the whole leftmost label/],
        ['localhost', /single label/],
        ['a..refuse.example', /empty label/],
        ['-a.refuse.example', /label "-a"/],
        ['a_b.refuse.example', /label "a_b"/],
        [`${'a'.repeat(64)}.refuse.example`, /label "a{64}"/],
        [`${Array.from({ length: 5 }, () => 'a'.repeat(60)).join('.')}.example`, /more than the 253/],
        ['a.refuse.example/x', /character that is not allowed/],
        ['a.refuse.example:443', /character that is not allowed/],
        ['10.0.0.300', /all-numeric label/],
        ['0x7f.1', /all-numeric label/],
        ['xn--abc.refuse.example', /IDNA refuses it/],
        ['fe80::1%eth0', /character that is not allowed/],
      ];
      for (const [name, problem] of refusals) {
        for (const attempt of [call('POST', '/v1/instances', { name: 'bad', hostnames: [name] }), call('PATCH', `/v1/instances/${id}`, { hostnames: [name], reason: 'bad' })]) {
          const refused = await attempt;
          assert.deepEqual([refused.status, refused.body.code], [400, ErrorCode.VALIDATION_FAILED], `${name}: ${refused.text}`);
          assert.match(refused.body.message, problem, name);
        }
      }
      assert.deepEqual((await call('GET', `/v1/instances/${id}`)).body.hostnames, ['valid.refuse.example']);
    });

    test('an IP address needs a profile that issues for addresses: INSTANCE_IP_ADDRESS_PROFILE_REQUIRED otherwise, at registration and change', async () => {
      for (const profile of [undefined, 'tlsserver']) {
        const refused = await call('POST', '/v1/instances', { name: 'ip', hostnames: ['10.0.0.5'], ...(profile ? { profile } : {}) });
        assert.deepEqual([refused.status, refused.body.code], [400, ErrorCode.INSTANCE_IP_ADDRESS_PROFILE_REQUIRED], refused.text);
        assert.match(refused.body.message, /10\.0\.0\.5: the CA certifies IP addresses only under the profile shortlived/);
      }
      const id = await create({ name: 'ip', hostnames: ['10.0.0.5', 'ip.example.net'], profile: 'shortlived' });
      assert.deepEqual((await call('GET', `/v1/instances/${id}`)).body.hostnames, ['10.0.0.5', 'ip.example.net']);
      // Leaving the profile while an address is listed, or adding an address under another profile, is refused the same way.
      const away = await call('PATCH', `/v1/instances/${id}`, { profile: 'tlsserver', reason: 'longer certificates' });
      assert.deepEqual([away.status, away.body.code], [400, ErrorCode.INSTANCE_IP_ADDRESS_PROFILE_REQUIRED], away.text);
      const dns = await create({ name: 'dns', hostnames: ['dns.example.net'] });
      const added = await call('PATCH', `/v1/instances/${dns}`, { hostnames: ['dns.example.net', '10.0.0.6'], reason: 'add an address' });
      assert.deepEqual([added.status, added.body.code], [400, ErrorCode.INSTANCE_IP_ADDRESS_PROFILE_REQUIRED], added.text);
      // Both at once is a consistent change.
      const both = await call('PATCH', `/v1/instances/${dns}`, { hostnames: ['dns.example.net', '10.0.0.6'], profile: 'shortlived', reason: 'add an address' });
      assert.equal(both.status, 200, both.text);
      assert.equal((await call('POST', '/v1/instances', { name: 'dup', hostnames: ['10.0.0.6'], profile: 'shortlived' })).body.code, ErrorCode.INSTANCE_HOSTNAME_TAKEN);
    });

    describe('issuance follows the instance', () => {
      const channels: AgentChannel[] = [];
      after(() => {
        for (const channel of channels) channel.socket.terminate();
      });
      const connect = async (agent: { keyPem: string; certificatePem: string }) => {
        const channel = await openAgentChannel(plane, agent);
        channels.push(channel);
        await channel.next('welcome');
        return channel;
      };
      const prompts = (channel: AgentChannel) => channel.frames.filter((f) => f.type === 'csr_request');
      const eventually = async <T>(what: string, probe: () => Promise<T | undefined> | T | undefined): Promise<T> => {
        for (let i = 0; i < 500; i += 1) {
          const value = await probe();
          if (value !== undefined) return value;
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
        assert.fail(`timed out waiting for ${what}`);
      };

      test('autoIssue (the default): the agent\'s connection alone starts its first certificate', async () => {
        const created = await call('POST', '/v1/instances', { name: 'auto', hostnames: ['auto.issue.example'] });
        assert.equal(created.status, 201);
        assert.equal((await call('GET', `/v1/instances/${created.body.id}`)).body.autoIssue, true);
        const key = await generateKeyPair();
        const enrolled = await call('POST', '/v1/agents/enroll', { token: created.body.enrollmentToken, csrPem: await createCsr(key, ['certplane-agent']) });
        const channel = await connect({ keyPem: key.privateKeyPem, certificatePem: enrolled.body.certificatePem });
        const prompt = await channel.next('csr_request');
        assert.deepEqual(prompt.hostnames, ['auto.issue.example']);
        assert.equal((await plane.store.certificates.latest(created.body.id))?.id, prompt.certificateId);
        assert.equal((await audit(created.body.id, 'instance.issue')).length, 0, 'nobody called issue');
      });

      test('autoIssue false: the connection starts nothing until the control plane asks', async () => {
        const agent = await enrollTestAgent(plane, 'manual', ['manual.issue.example'], { autoIssue: false });
        const channel = await connect(agent);
        // Messages are handled in order after the connection's own work: once this status is stored, that work is done.
        channel.send({ type: 'status', installedFingerprintSha256: 'ab'.repeat(32), pendingCertificateIds: [] });
        await eventually('the status', async () => ((await plane.store.instances.get(agent.instanceId))?.installedFingerprintSha256 ? true : undefined));
        assert.equal(await plane.store.certificates.latest(agent.instanceId), undefined);
        assert.equal(prompts(channel).length, 0);
      });

      test('a reconnecting agent does not start another certificate while one is under way, nor after a failure that needs a person', async () => {
        const agent = await enrollTestAgent(plane, 'recon', ['recon.issue.example'], { autoIssue: true });
        const first = await connect(agent);
        const prompt = await first.next('csr_request');
        first.socket.terminate();
        const second = await connect(agent);
        await eventually('the prompt again', () => (prompts(second).length > 0 ? true : undefined));
        assert.deepEqual(prompts(second).map((p) => p.certificateId), [prompt.certificateId], 'the open certificate is asked for again, no new one');
        // A CSR the policy refuses fails the certificate for good (CsrRejected): reconnecting does not try again.
        second.send({ type: 'csr', certificateId: prompt.certificateId, csrPem: await createCsr(await generateKeyPair(), ['someone-else.example']) });
        await second.next('cancel');
        second.socket.terminate();
        const third = await connect(agent);
        third.send({ type: 'status', installedFingerprintSha256: 'cd'.repeat(32), pendingCertificateIds: [] });
        await eventually('the status', async () => ((await plane.store.instances.get(agent.instanceId))?.installedFingerprintSha256 === 'cd'.repeat(32) ? true : undefined));
        assert.equal(prompts(third).length, 0);
        assert.equal((await plane.store.certificates.latest(agent.instanceId))?.id, prompt.certificateId);
      });

      test('a new set of names fails the certificate under way for the old ones and asks the agent for the new set at once', async () => {
        const agent = await enrollTestAgent(plane, 'rename', ['old.rename.example'], { autoIssue: true });
        const channel = await connect(agent);
        const old = await channel.next('csr_request');
        assert.deepEqual(old.hostnames, ['old.rename.example']);
        const patched = await call('PATCH', `/v1/instances/${agent.instanceId}`, { hostnames: ['new.rename.example', 'www.rename.example'], reason: 'renamed by the customer' });
        assert.equal(patched.status, 200, patched.text);
        const cancel = await channel.next('cancel');
        assert.equal(cancel.certificateId, old.certificateId);
        const renewed = await eventually('a prompt for the new names', () => prompts(channel).find((p) => p.certificateId !== old.certificateId));
        assert.deepEqual(renewed.hostnames, ['new.rename.example', 'www.rename.example']);
        const failed = await plane.store.certificates.get(old.certificateId);
        assert.deepEqual([failed?.status, failed?.failure?.reason, failed?.failure?.code], ['failed', 'InstanceChanged', ErrorCode.ISSUANCE_INSTANCE_CHANGED]);
        // A CSR with a removed name is refused: it is no longer the instance's.
        channel.send({ type: 'csr', certificateId: renewed.certificateId, csrPem: await createCsr(await generateKeyPair(), ['new.rename.example', 'old.rename.example']) });
        const refused = await eventually('the refusal', () => channel.frames.find((f) => f.type === 'cancel' && f.certificateId === renewed.certificateId));
        assert.match(refused.reason, /outside the hostnames this instance owns/);
      });

      test('an instance with an IP address (shortlived) is asked for it, and a CSR carrying it as an IP SAN passes the checks', async () => {
        const agent = await enrollTestAgent(plane, 'addressed', ['addressed.ip.example'], { autoIssue: false });
        const patched = await call('PATCH', `/v1/instances/${agent.instanceId}`, { hostnames: ['addressed.ip.example', '192.0.2.7'], profile: 'shortlived', autoIssue: true, reason: 'addresses' });
        assert.equal(patched.status, 200, patched.text);
        const channel = await connect(agent);
        const prompt = await channel.next('csr_request');
        assert.deepEqual(prompt.hostnames, ['addressed.ip.example', '192.0.2.7']);
        // An address the instance does not own is refused like a foreign DNS name.
        channel.send({ type: 'csr', certificateId: prompt.certificateId, csrPem: await createCsr(await generateKeyPair(), [...prompt.hostnames, '192.0.2.99']) });
        const cancel = await channel.next('cancel');
        assert.match(cancel.reason, /CSR rejected: it asks for 192\.0\.2\.99, outside the hostnames this instance owns/);
        const again = await call('POST', `/v1/instances/${agent.instanceId}/issue`);
        assert.equal(again.status, 202);
        const second = await eventually('a second prompt', () => prompts(channel).find((p) => p.certificateId === again.body.certificateId));
        channel.send({ type: 'csr', certificateId: second.certificateId, csrPem: await createCsr(await generateKeyPair(), second.hostnames) });
        // The test plane's CA is unreachable: the order fails, but only after the CSR was accepted.
        const settled = await eventually('the CSR to be judged', async () => {
          const certificate = await plane.store.certificates.get(second.certificateId);
          return certificate && certificate.status !== 'pending' ? certificate : undefined;
        });
        assert.notEqual(settled.failure?.reason, 'CsrRejected', settled.lastError ?? '');
        assert.ok(settled.csrPem, 'the CSR was accepted');
      });

      test('with autoIssue false and no certificate ever, a change of names leaves issuance to the control plane', async () => {
        const agent = await enrollTestAgent(plane, 'quiet', ['quiet.rename.example'], { autoIssue: false });
        await connect(agent);
        assert.equal((await call('PATCH', `/v1/instances/${agent.instanceId}`, { hostnames: ['quieter.rename.example'], keyAlgorithm: 'rsa-2048', reason: 'quiet' })).status, 200);
        assert.equal(await plane.store.certificates.latest(agent.instanceId), undefined);
      });
    });

    describe('listing and counting a fleet', () => {
      const fleet: Record<string, string> = {};
      const ids = (response: { body: Record<string, any> }) => response.body.items.map((i: { id: string }) => i.id);
      before(async () => {
        for (const [name, cluster] of [['l-a1', 'list-a'], ['l-a2', 'list-a'], ['l-a3', 'list-a'], ['l-b1', 'list-b'], ['l-b2', 'list-b']] as const) {
          fleet[name] = await create({ name, hostnames: [`${name}.list.example`, `www.${name}.list.example`], cluster });
        }
        // l-a2 has a certificate under way; l-a3 one installed and nearly spent; l-b1 one installed and fresh.
        const now = Date.now();
        const installed = async (instanceId: string, notBefore: number, notAfter: number) => {
          const certificate = await plane.store.certificates.create(instanceId);
          await plane.store.query("UPDATE certificates SET status = 'installed', not_before = $2::timestamptz, not_after = $3::timestamptz WHERE id = $1", [certificate.id, new Date(notBefore), new Date(notAfter)]);
        };
        await plane.store.certificates.create(fleet['l-a2']!);
        await installed(fleet['l-a3']!, now - 80 * DAY, now + 10 * DAY);
        await installed(fleet['l-b1']!, now - DAY, now + 89 * DAY);
      });

      test('GET /v1/instances filters by cluster, status, hostname (normalised) and atRisk, each alone and together', async () => {
        assert.deepEqual(ids(await call('GET', '/v1/instances?cluster=list-a&limit=500')), [fleet['l-a1'], fleet['l-a2'], fleet['l-a3']]);
        assert.deepEqual(ids(await call('GET', '/v1/instances?cluster=list-a&status=none')), [fleet['l-a1']]);
        assert.deepEqual(ids(await call('GET', '/v1/instances?cluster=list-a&status=pending')), [fleet['l-a2']]);
        assert.deepEqual(ids(await call('GET', '/v1/instances?status=installed&limit=500')).filter((id: string) => Object.values(fleet).includes(id)), [fleet['l-a3'], fleet['l-b1']]);
        assert.deepEqual(ids(await call('GET', '/v1/instances?hostname=WWW.L-B2.List.Example.')), [fleet['l-b2']]);
        assert.deepEqual(ids(await call('GET', '/v1/instances?atRisk=true&limit=500')).filter((id: string) => Object.values(fleet).includes(id)), [fleet['l-a3']]);
        assert.deepEqual(ids(await call('GET', '/v1/instances?cluster=list-b&atRisk=false')), [fleet['l-b1'], fleet['l-b2']]);
        assert.deepEqual(ids(await call('GET', '/v1/instances?cluster=list-b&status=pending')), []);
        const listed = (await call('GET', `/v1/instances?hostname=l-a3.list.example`)).body.items[0];
        assert.equal(listed.renewal.atRisk, true, 'the filter and the view agree');
        // A page shows each instance as GET /v1/instances/{id} does (its certificates read for the whole page at once).
        for (const item of (await call('GET', '/v1/instances?cluster=list-a')).body.items) assert.deepEqual(item, (await call('GET', `/v1/instances/${item.id}`)).body);
        for (const query of ['status=installing', 'atRisk=yes', 'hostname=a..b', 'cluster=', 'limit=501', 'unknown=1']) {
          const refused = await call('GET', `/v1/instances?${query}`);
          assert.deepEqual([refused.status, refused.body.code], [400, ErrorCode.VALIDATION_FAILED], `${query}: ${refused.text}`);
        }
      });

      test('filtered pages walk every match once, in order, with the cursor of the page before', async () => {
        const seen: string[] = [];
        let cursor: string | null = null;
        for (let guard = 0; guard < 10; guard += 1) {
          const page: { status: number; body: Record<string, any> } = await call('GET', `/v1/instances?cluster=list-a&limit=1${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
          assert.equal(page.status, 200);
          assert.ok(page.body.items.length <= 1);
          seen.push(...ids(page));
          cursor = page.body.nextCursor;
          if (cursor === null) break;
        }
        assert.deepEqual(seen, [fleet['l-a1'], fleet['l-a2'], fleet['l-a3']]);
      });

      test('GET /v1/instances/summary counts by status, at risk and connected, for the whole fleet or one cluster', async () => {
        const a = await call('GET', '/v1/instances/summary?cluster=list-a');
        assert.equal(a.status, 200, a.text);
        assert.deepEqual(a.body, {
          total: 3,
          byStatus: { none: 1, pending: 1, csr_accepted: 0, ordering: 0, issued: 0, delivered: 0, installed: 1, superseded: 0, failed: 0, revoked: 0 },
          atRisk: 1,
          agentsConnected: 0,
        });
        const all = await call('GET', '/v1/instances/summary');
        const everything = (await call('GET', '/v1/instances?limit=500')).body.items;
        assert.equal(all.body.total, everything.length);
        assert.equal(Object.values(all.body.byStatus as Record<string, number>).reduce((sum, n) => sum + n, 0), everything.length);
        assert.equal(all.body.byStatus.none, everything.filter((i: { certificate: unknown }) => i.certificate === null).length);
      });
    });
  });
}

describe('what starting an issuance costs the database', () => {
  test('POST /v1/instances/:id/issue reads the instance once: the route hands the record it read to the coordinator', async () => {
    const plane = await startTestPlane({ pgliteThread: false });
    try {
      const agent = await enrollTestAgent(plane, 'costed', ['costed.cost.example'], { autoIssue: false });
      const { result, statements } = await statementsOf(() => plane.app.inject({ method: 'POST', url: `/v1/instances/${agent.instanceId}/issue`, headers: { 'x-certplane-actor': 'control-plane' } }));
      assert.equal(result.statusCode, 202, result.body);
      const instanceReads = statements.filter((sql) => /^SELECT \* FROM instances WHERE id = \$1/.test(sql));
      assert.equal(instanceReads.length, 1, statements.join('\n'));
      // And it did start one: the certificate it returned is the instance's open one.
      const [open] = await plane.store.certificates.open(agent.instanceId);
      assert.equal(open?.id, (result.json() as { certificateId: string }).certificateId);
    } finally {
      await plane.close();
    }
  });
});
