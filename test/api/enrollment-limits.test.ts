/**
 * The failed-enrollment limit over real HTTP, on PGlite and on a real PostgreSQL server:
 * failures are reserved before the token is looked at (so a concurrent flood cannot
 * outrun the burst), a valid token enrolls whatever its address failed before, and a
 * refused CSR leaves the token usable.
 */
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { ENROLLMENT_BURST } from '../../src/api/routes/agents.js';
import { createCsr, generateKeyPair } from '../../src/pki/factory.js';
import { cleanupList, type Defer } from '../support/cleanups.js';
import { startTestPlane, type TestPlane } from '../support/plane.js';
import { freshPostgresDatabase } from '../support/postgres.js';
import { ErrorCode } from '../../src/error-catalogue.js';

const TIMEOUT = { timeout: 120_000 };

const engines: { name: string; open(defer: Defer): Promise<string> }[] = [
  { name: 'PGlite', open: async () => 'memory:' },
  {
    name: 'PostgreSQL',
    open: async (defer) => {
      const database = await freshPostgresDatabase('certplane_enroll');
      defer(database.drop);
      return database.url;
    },
  },
];

/**
 * POSTs over real connections from `from`, a loopback address of its own per test (all of
 * 127.0.0.0/8 reaches the plane's 127.0.0.1), so each test starts with a whole allowance.
 * Every connection is opened and its headers sent first; the bodies then go out in one
 * tick, so the plane sees the requests as one concurrent flood, not a trickle.
 */
async function postAll(plane: TestPlane, from: string, path: string, bodies: readonly unknown[]): Promise<{ status: number; body: any }[]> {
  const opened = bodies.map((body) => {
    const data = JSON.stringify(body);
    const req = request(new URL(path, plane.url), { method: 'POST', localAddress: from, agent: false, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } });
    const answer = new Promise<{ status: number; body: any }>((resolve, reject) => {
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(Buffer.concat(chunks).toString()) }));
        res.on('error', reject);
      });
      req.on('error', reject);
    });
    const connected = new Promise<void>((resolve) => req.on('socket', (socket) => socket.once('connect', () => resolve())));
    req.flushHeaders();
    return { req, data, answer, connected };
  });
  await Promise.all(opened.map((o) => o.connected));
  for (const { req, data } of opened) req.end(data);
  return Promise.all(opened.map((o) => o.answer));
}

async function post(plane: TestPlane, from: string, path: string, body: unknown = {}): Promise<{ status: number; body: any }> {
  return (await postAll(plane, from, path, [body]))[0]!;
}

async function newInstance(plane: TestPlane, name: string): Promise<{ id: string; enrollmentToken: string }> {
  const created = await post(plane, '127.0.0.1', '/v1/instances', { name, hostnames: [`${name}.example.com`] });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  return created.body;
}

const p256Csr = async () => createCsr(await generateKeyPair('ecdsa-p256'), ['certplane-agent']);
const wrongToken = (i: number) => `cpe_${'A'.repeat(40)}${String(i).padStart(3, '0')}`;
const count = (statuses: number[], status: number) => statuses.filter((s) => s === status).length;

for (const engine of engines) {
  describe(`enrollment limits (${engine.name})`, () => {
    const steps = cleanupList();
    let p: TestPlane;
    before(async () => {
      // Time stands still, so no allowance refills however slowly a loaded machine runs the test.
      const now = new Date();
      p = await startTestPlane({ storeUrl: await engine.open(steps.defer), clock: () => now });
      steps.defer(() => p.close());
    });
    after(() => steps.run());

    test('100 concurrent wrong tokens from one address: only the burst is answered 401, the rest 429, and a valid token in the flood enrolls', TIMEOUT, async () => {
      const from = '127.0.0.11';
      const { id, enrollmentToken } = await newInstance(p, 'flooded');
      const csrPem = await p256Csr();
      const bodies = Array.from({ length: 100 }, (_, i) => ({ token: wrongToken(i), csrPem }));
      bodies.splice(50, 0, { token: enrollmentToken, csrPem });
      const answers = await postAll(p, from, '/v1/agents/enroll', bodies);
      const valid = answers.splice(50, 1)[0]!;
      const statuses = answers.map((a) => a.status);
      assert.equal(count(statuses, 401), ENROLLMENT_BURST, `wrong tokens evaluated as failures: ${count(statuses, 401)} of 100 (burst ${ENROLLMENT_BURST})`);
      assert.equal(count(statuses, 429), 100 - ENROLLMENT_BURST);
      assert.equal(valid.status, 201, JSON.stringify(valid.body));
      assert.equal(valid.body.instanceId, id);
      for (const answer of answers) assert.equal(answer.body.code, answer.status === 401 ? ErrorCode.ENROLLMENT_TOKEN_INVALID : ErrorCode.ENROLLMENT_RATE_LIMITED);
      assert.equal((await post(p, from, '/v1/agents/enroll', { token: wrongToken(999), csrPem })).status, 429, 'the allowance stays spent after the flood');
    });

    test('a valid token from an address over the failure limit still enrolls (a correct token is not a guess)', TIMEOUT, async () => {
      const from = '127.0.0.12';
      const csrPem = await p256Csr();
      const statuses: number[] = [];
      for (let i = 0; i < ENROLLMENT_BURST + 2; i += 1) statuses.push((await post(p, from, '/v1/agents/enroll', { token: wrongToken(i), csrPem })).status);
      assert.deepEqual(statuses, [...Array(ENROLLMENT_BURST).fill(401), 429, 429]);
      for (const name of ['late1', 'late2', 'late3']) {
        const { id, enrollmentToken } = await newInstance(p, name);
        const enrolled = await post(p, from, '/v1/agents/enroll', { token: enrollmentToken, csrPem: await p256Csr() });
        assert.equal(enrolled.status, 201, JSON.stringify(enrolled.body));
        assert.equal(enrolled.body.instanceId, id);
        const replayed = await post(p, from, '/v1/agents/enroll', { token: enrollmentToken, csrPem });
        assert.equal(replayed.status, 429, 'a spent token over the limit is a failure like any wrong token');
      }
      assert.equal((await post(p, from, '/v1/agents/enroll', { token: wrongToken(99), csrPem })).status, 429, 'successes do not refill the allowance of failures');
    });

    test('a refused CSR does not spend the token: an RSA CSR is 400, then the same token enrolls with a P-256 CSR', TIMEOUT, async () => {
      const from = '127.0.0.13';
      const { id, enrollmentToken } = await newInstance(p, 'rsa-first');
      const rsaCsr = await createCsr(await generateKeyPair('rsa-2048'), ['certplane-agent']);
      for (let i = 0; i < ENROLLMENT_BURST + 2; i += 1) {
        const refused = await post(p, from, '/v1/agents/enroll', { token: enrollmentToken, csrPem: rsaCsr });
        assert.equal(refused.status, 400, JSON.stringify(refused.body));
        assert.equal(refused.body.code, ErrorCode.ENROLLMENT_KEY_UNSUPPORTED);
      }
      assert.equal((await post(p, from, '/v1/agents/enroll', { token: enrollmentToken, csrPem: 'garbage' })).status, 400);
      assert.equal((await p.store.agentCertificates.list(100)).filter((c) => c.instanceId === id).length, 0, 'nothing recorded for a refused CSR');
      const enrolled = await post(p, from, '/v1/agents/enroll', { token: enrollmentToken, csrPem: await p256Csr() });
      assert.equal(enrolled.status, 201, JSON.stringify(enrolled.body));
      assert.equal(enrolled.body.instanceId, id);
      const again = await post(p, from, '/v1/agents/enroll', { token: enrollmentToken, csrPem: await p256Csr() });
      assert.equal(again.status, 401, 'refused CSRs with a valid token are not failures: the allowance is whole');
      assert.equal(again.body.code, ErrorCode.ENROLLMENT_TOKEN_INVALID);
    });

    test('20 concurrent enrollments with one token: one certificate is issued and recorded, every other answer refuses', TIMEOUT, async () => {
      const from = '127.0.0.14';
      const { id, enrollmentToken } = await newInstance(p, 'raced');
      const csrs = await Promise.all(Array.from({ length: 20 }, p256Csr));
      const answers = await postAll(p, from, '/v1/agents/enroll', csrs.map((csrPem) => ({ token: enrollmentToken, csrPem })));
      const statuses = answers.map((a) => a.status);
      assert.equal(count(statuses, 201), 1, `statuses: ${statuses.join(',')}`);
      assert.equal(count(statuses, 401) + count(statuses, 429), 19, `statuses: ${statuses.join(',')}`);
      const recorded = (await p.store.agentCertificates.list(100)).filter((c) => c.instanceId === id);
      assert.equal(recorded.length, 1);
      const winner = answers.find((a) => a.status === 201)!;
      assert.match(winner.body.certificatePem, /BEGIN CERTIFICATE/);
    });
  });
}
