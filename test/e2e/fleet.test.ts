/**
 * The agents issue's Done-when, with real processes: Pebble (alternate roots on, the
 * preferred root an alternate one, default nonce rejection on), one management plane,
 * three agents answering http-01 themselves, a recording relay on the channel. Runs once
 * on PGlite and once on a real PostgreSQL server.
 */
import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ISSUANCE_STAGES } from '../../src/fleet/issuance.js';
import { parseCertificateBundle, spkiSha256OfPublicKeyPem, verifyChain, type Certificate } from '../../src/chain/index.js';
import { startPebble, type LocalPebble } from '../../src/devenv/pebble.js';
import { openStore } from '../../src/store/index.js';
import { startChannelRecorder, type ChannelRecorder } from '../support/channel-recorder.js';
import { scratch } from '../support/cli.js';
import { freshPostgresDatabase } from '../support/postgres.js';
import { eventually, logEvents, PLANE_START_MS, startCertplane, type RunningProcess } from '../support/processes.js';
import { freePort } from '../support/ports.js';

const AGENTS = 3;

for (const engine of ['pglite', 'postgres'] as const) {
  describe(`fleet end to end on ${engine}`, async () => {
    const ORDERS_BEFORE_CSR = engine === 'pglite';
    const dir = await scratch(`certplane-e2e-${engine}-`);
    let pebble: LocalPebble;
    let preferred: Certificate;
    let plane: RunningProcess;
    let recorder: ChannelRecorder;
    let api: string;
    let databaseUrl: string;
    let dropDatabase = async () => {};
    const agents: RunningProcess[] = [];
    const instances: { id: string; token: string; host: string; address: string; stateDir: string }[] = [];

    const json = async (method: string, path: string, body?: unknown) => {
      const response = await fetch(`${api}${path}`, { method, headers: body ? { 'content-type': 'application/json' } : {}, body: body ? JSON.stringify(body) : undefined });
      return { status: response.status, body: (await response.json()) as Record<string, any> };
    };
    const startAgent = (i: number, extra: string[] = []) =>
      startCertplane(
        [
          'agent',
          '--server', recorder.url,
          '--token', instances[i]!.token,
          '--state-dir', instances[i]!.stateDir,
          '--http01-port', String(pebble.http01Port),
          '--http01-host', instances[i]!.address,
          '--trust', join(dir.dir, 'preferred-root.pem'),
          '--reload-command', `echo reloaded >> ${join(dir.dir, `reloads-${i}.log`)}`,
          ...extra,
        ],
        { CERTPLANE_LOG_LEVEL: 'info' },
      );
    const installedCertificate = (id: string, certificateId?: string) =>
      eventually(async () => {
        const { body } = await json('GET', `/v1/instances/${id}`);
        const certificate = body.certificate;
        if (certificate?.status === 'failed') throw new Error(`certificate failed: ${certificate.lastError}`);
        return certificate?.status === 'installed' && (!certificateId || certificate.id === certificateId) ? body : undefined;
      }, 90_000, 250, `instance ${id} to install its certificate`);

    before(async () => {
      pebble = await startPebble({ alternateRoots: 2 });
      preferred = parseCertificateBundle((await pebble.roots())[1]!)[0]!;
      await dir.write('preferred-root.pem', preferred.pem);
      if (engine === 'postgres') {
        const database = await freshPostgresDatabase('certplane_e2e');
        databaseUrl = database.url;
        dropDatabase = database.drop;
      } else {
        databaseUrl = `pglite:${join(dir.dir, 'db')}`;
      }
      const port = await freePort();
      plane = startCertplane(['serve'], {
        CERTPLANE_INSECURE_HTTP: '1',
        CERTPLANE_LISTEN: `127.0.0.1:${port}`,
        CERTPLANE_DATABASE_URL: databaseUrl,
        CERTPLANE_ACME_DIRECTORY: pebble.directoryUrl,
        CERTPLANE_ACME_CA_CERTS: pebble.acmeServerCaPath,
        CERTPLANE_PREFERRED_CHAINS: JSON.stringify([preferred.subjectCN]),
        CERTPLANE_TRUST_STORE: join(dir.dir, 'preferred-root.pem'),
        CERTPLANE_SECRETS: `file:${join(dir.dir, 'secrets')}`,
        // One engine orders while the agents make their CSRs (off by default), the other only after: both paths end to end.
        CERTPLANE_ORDER_BEFORE_CSR: ORDERS_BEFORE_CSR ? '1' : '0',
        CERTPLANE_LOG_LEVEL: 'info',
      });
      await plane.waitForLine((line) => line.includes('management plane listening'), PLANE_START_MS);
      api = `http://127.0.0.1:${port}`;
      recorder = await startChannelRecorder(api);
      for (let i = 0; i < AGENTS; i += 1) {
        const host = `db${i}.fleet.test`;
        const address = `127.0.0.${i + 2}`;
        await pebble.resolve(host, address);
        const { status, body } = await json('POST', '/v1/instances', { name: `db${i}`, hostnames: [host], cluster: 'fleet', autoIssue: false });
        assert.equal(status, 201, JSON.stringify(body));
        instances.push({ id: body.id, token: body.enrollmentToken, host, address, stateDir: join(dir.dir, `agent-${i}`) });
      }
    });

    after(async () => {
      await Promise.all(agents.map((a) => a.stop()));
      await plane?.stop();
      await recorder?.close();
      await pebble?.stop();
      await dropDatabase();
      await dir.remove();
    });

    test('three agents enroll, answer http-01 and install a chain that verifies to the preferred alternate root', async () => {
      for (let i = 0; i < AGENTS; i += 1) agents.push(startAgent(i));
      await Promise.all(agents.map((agent) => agent.waitForLine((line) => line.includes('"authenticated"'), 30_000)));
      for (const instance of instances) assert.equal((await json('POST', `/v1/instances/${instance.id}/issue`)).status, 202);
      for (const [i, instance] of instances.entries()) {
        const view = await installedCertificate(instance.id);
        assert.equal(view.certificate.anchor, preferred.subjectCN);
        assert.equal(view.agent.connected, true);
        const live = parseCertificateBundle(await readFile(join(instance.stateDir, 'live', 'fullchain.pem'), 'utf8'));
        assert.equal(live[0]!.fingerprintSha256, view.certificate.fingerprintSha256);
        assert.deepEqual(live[0]!.dnsNames, [instance.host]);
        const report = verifyChain(live, { trustAnchors: [preferred], at: new Date(), hostnames: [instance.host] });
        assert.equal(report.ok, true, JSON.stringify(report.errors));
        const keyPem = await readFile(join(instance.stateDir, 'live', 'privkey.pem'), 'utf8');
        assert.equal(spkiSha256OfPublicKeyPem(createPublicKey(createPrivateKey(keyPem)).export({ type: 'spki', format: 'pem' }).toString()), live[0]!.spkiSha256);
        const certificate = await json('GET', `/v1/certificates/${view.certificate.id}`);
        assert.equal(certificate.body.report.ok, true);
        assert.equal(certificate.body.status, 'installed');
        await eventually(async () => ((await json('GET', `/v1/instances/${instance.id}`)).body.agent.installedFingerprintSha256 === live[0]!.fingerprintSha256 ? true : undefined), 10_000, 200, `instance ${i} to report what it installed`);
      }
    });

    test('the stage histogram holds every stage of those issuances, CSR request to installed acknowledgement', async () => {
      const metrics = await (await fetch(`${api}/metrics`)).text();
      const counts = new Map([...metrics.matchAll(/^certplane_issuance_stage_duration_seconds_count\{stage="([a-z_]+)"\} (\d+)$/gm)].map((m) => [m[1]!, Number(m[2])]));
      // Every stage but job_claim (no job: these were asked for through the API) is on the path of each of these issuances;
      // awaiting_csr only on that of an order placed before its CSR.
      for (const stage of ISSUANCE_STAGES.filter((s) => s !== 'job_claim' && (ORDERS_BEFORE_CSR || s !== 'awaiting_csr'))) assert.ok((counts.get(stage) ?? 0) >= AGENTS, `stage ${stage}: ${counts.get(stage)} observations in\n${metrics}`);
      if (!ORDERS_BEFORE_CSR) assert.equal(counts.get('awaiting_csr') ?? 0, 0, 'no order waited for a CSR: none was placed before one');
      assert.deepEqual([...counts.keys()].filter((stage) => !(ISSUANCE_STAGES as readonly string[]).includes(stage)), []);
      const sum = Number(/^certplane_issuance_stage_duration_seconds_sum\{stage="end_to_end"\} ([0-9.e-]+)$/m.exec(metrics)?.[1]);
      assert.ok(sum > 0, 'end_to_end took some time');
    });

    test('an agent killed during delivery and restarted installs the new certificate exactly once', async () => {
      const i = AGENTS - 1;
      const instance = instances[i]!;
      const before = (await json('GET', `/v1/instances/${instance.id}`)).body.certificate;
      const accepted = await json('POST', `/v1/instances/${instance.id}/issue`);
      assert.equal(accepted.status, 202);
      const certificateId = accepted.body.certificateId as string;
      assert.notEqual(certificateId, before.id);
      await plane.waitForLine((line) => line.includes('certificate sent to agent') && line.includes(certificateId), 60_000);
      await agents[i]!.stop('SIGKILL');
      agents[i] = startAgent(i);
      const view = await installedCertificate(instance.id, certificateId);
      assert.notEqual(view.certificate.fingerprintSha256, before.fingerprintSha256);
      const journal = (await readFile(join(instance.stateDir, 'journal.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
      const installs = journal.filter((e) => e.event === 'installed' && e.fingerprintSha256 === view.certificate.fingerprintSha256);
      assert.equal(installs.length, 1, JSON.stringify(journal));
      const live = parseCertificateBundle(await readFile(join(instance.stateDir, 'live', 'fullchain.pem'), 'utf8'));
      assert.equal(live[0]!.fingerprintSha256, view.certificate.fingerprintSha256);
    });

    test('no private key material in the database, the plane\'s logs or any channel message', async () => {
      const keyBodies: string[] = [];
      for (const instance of instances) {
        for (const file of [join(instance.stateDir, 'live', 'privkey.pem'), join(instance.stateDir, 'identity', 'key.pem')]) {
          const pem = await readFile(file, 'utf8');
          keyBodies.push(...pem.split('\n').filter((l) => l.length >= 40 && !l.startsWith('-----')));
        }
      }
      assert.ok(keyBodies.length >= AGENTS * 2);
      await plane.stop();
      const store = await openStore(databaseUrl);
      let dump = '';
      try {
        for (const table of ['instances', 'enrollment_tokens', 'agent_certificates', 'certificates']) dump += JSON.stringify(await store.query(`SELECT * FROM ${table}`));
      } finally {
        await store.close();
      }
      assert.match(dump, /BEGIN CERTIFICATE/);
      const logs = plane.lines.join('\n');
      const channel = recorder.frames.map((f) => f.text).join('\n');
      assert.ok(recorder.frames.some((f) => f.text.includes('"type":"deliver"')));
      assert.ok(recorder.frames.some((f) => f.text.includes('"type":"csr"')));
      for (const [where, text] of [['database', dump], ['plane logs', logs], ['channel', channel]] as const) {
        assert.doesNotMatch(text, /PRIVATE KEY/, `${where} mentions a private key block`);
        for (const body of keyBodies) assert.ok(!text.includes(body), `${where} contains private key material`);
      }
      assert.ok(logEvents(plane.lines).some((e) => e.msg === 'agent installed the certificate'));
    });
  });
}
