import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createCsr, generateKeyPair } from '../../src/pki/factory.js';
import { startTestPlane, type TestPlane } from '../support/plane.js';
import { ErrorCode } from '../../src/error-catalogue.js';

describe('REST API', async () => {
  let plane: TestPlane;
  before(async () => {
    plane = await startTestPlane();
  });
  after(() => plane.close());

  const call = async (method: string, path: string, body?: unknown) => {
    const response = await plane.app.inject({ method: method as 'GET', url: path, ...(body === undefined ? {} : { payload: body as object }) });
    return { status: response.statusCode, body: response.json() as Record<string, any> };
  };
  const createInstance = async (name: string, hostnames = [`${name}.example.com`]) => (await call('POST', '/v1/instances', { name, hostnames })).body;

  test('POST /v1/instances registers and returns a one-time token; names are normalised', async () => {
    const { status, body } = await call('POST', '/v1/instances', { name: 'db1', hostnames: ['DB1.Example.com', 'db1.example.com'], cluster: 'c1' });
    assert.equal(status, 201);
    assert.match(body.enrollmentToken, /^cpe_/);
    const view = await call('GET', `/v1/instances/${body.id}`);
    assert.deepEqual(view.body.hostnames, ['db1.example.com']);
    assert.equal(view.body.cluster, 'c1');
    assert.equal(view.body.keyAlgorithm, 'ecdsa-p256');
    assert.equal(view.body.certificate, null);
    assert.equal(view.body.agent.connected, false);
  });

  test('bad bodies get 400 with a code, never 5xx', async () => {
    for (const body of [{}, { name: 'x' }, { name: 'x', hostnames: [] }, { name: 'x', hostnames: ['not a name'] }, { name: 'x', hostnames: ['a.example.com'], extra: 1 }, { name: 'x', hostnames: ['a.example.com'], keyAlgorithm: 'dsa' }]) {
      const response = await call('POST', '/v1/instances', body);
      assert.equal(response.status, 400, JSON.stringify(body));
      assert.equal(response.body.code, ErrorCode.VALIDATION_FAILED);
    }
    const raw = await plane.app.inject({ method: 'POST', url: '/v1/instances', payload: '{"name":', headers: { 'content-type': 'application/json' } });
    assert.deepEqual([raw.statusCode, raw.json().code], [400, ErrorCode.REQUEST_BODY_INVALID_JSON]);
    const huge = await plane.app.inject({ method: 'POST', url: '/v1/instances', payload: JSON.stringify({ name: 'x'.repeat(100_000), hostnames: ['a.example.com'] }), headers: { 'content-type': 'application/json' } });
    assert.deepEqual([huge.statusCode, huge.json().code], [413, ErrorCode.REQUEST_BODY_TOO_LARGE]);
  });

  test('refusals made before any route runs speak certplane codes, not the framework\'s', async () => {
    const cases: { request: { method: 'GET' | 'POST'; url: string; payload?: string; headers?: Record<string, string> }; status: number; code: string }[] = [
      { request: { method: 'POST', url: '/v1/instances', payload: 'name=x', headers: { 'content-type': 'application/x-www-form-urlencoded' } }, status: 415, code: ErrorCode.REQUEST_MEDIA_TYPE_UNSUPPORTED },
      // Fastify parses text/plain by default; the README promises 415 for every body that is not JSON.
      { request: { method: 'POST', url: '/v1/instances', payload: '{"name":"x","hostnames":["x.example.com"]}', headers: { 'content-type': 'text/plain' } }, status: 415, code: ErrorCode.REQUEST_MEDIA_TYPE_UNSUPPORTED },
      { request: { method: 'POST', url: '/v1/reissues', payload: 'reissue everything', headers: { 'content-type': 'text/plain; charset=utf-8' } }, status: 415, code: ErrorCode.REQUEST_MEDIA_TYPE_UNSUPPORTED },
      { request: { method: 'POST', url: '/v1/agents/enroll', payload: 'token', headers: { 'content-type': 'text/plain' } }, status: 415, code: ErrorCode.REQUEST_MEDIA_TYPE_UNSUPPORTED },
      { request: { method: 'POST', url: '/v1/instances', payload: '{"name":"x","__proto__":{"admin":true}}', headers: { 'content-type': 'application/json' } }, status: 400, code: ErrorCode.REQUEST_BODY_INVALID_JSON },
      { request: { method: 'GET', url: `/v1/instances/${'a'.repeat(150)}` }, status: 414, code: ErrorCode.REQUEST_URL_PARAMETER_TOO_LONG },
      { request: { method: 'GET', url: '/v1/instances/%zz' }, status: 400, code: ErrorCode.REQUEST_URL_INVALID },
    ];
    for (const { request, status, code } of cases) {
      const response = await plane.app.inject(request);
      assert.deepEqual([response.statusCode, response.json().code], [status, code], `${request.method} ${request.url}: ${response.body}`);
      assert.equal(typeof response.json().message, 'string');
    }
  });

  test('listing is paged with a hard upper bound and a stable cursor', async () => {
    for (let i = 0; i < 7; i += 1) await createInstance(`page${i}`);
    const seen = new Set<string>();
    let cursor: string | null = null;
    let pages = 0;
    do {
      const response = await call('GET', `/v1/instances?limit=3${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
      assert.equal(response.status, 200);
      assert.ok(response.body.items.length <= 3);
      for (const item of response.body.items) {
        assert.ok(!seen.has(item.id));
        seen.add(item.id);
      }
      cursor = response.body.nextCursor;
      pages += 1;
    } while (cursor && pages < 20);
    assert.ok(seen.size >= 7);
    assert.equal((await call('GET', '/v1/instances?limit=501')).status, 400);
    assert.equal((await call('GET', '/v1/instances?limit=0')).status, 400);
    const garbage = await call('GET', '/v1/instances?cursor=%%%garbage');
    assert.equal(garbage.status, 400);
  });

  test('unknown and malformed ids', async () => {
    assert.equal((await call('GET', '/v1/instances/00000000-0000-4000-8000-000000000000')).status, 404);
    assert.equal((await call('GET', '/v1/instances/not-a-uuid')).status, 400);
    assert.equal((await call('POST', '/v1/instances/00000000-0000-4000-8000-000000000000/issue')).status, 404);
    assert.equal((await call('GET', '/v1/certificates/00000000-0000-4000-8000-000000000000')).status, 404);
    assert.equal((await call('GET', '/v1/nothing-here')).body.code, ErrorCode.NOT_FOUND);
  });

  test('issue returns 202 and the same open certificate until it is done', async () => {
    const { id } = await createInstance('issue1');
    const first = await call('POST', `/v1/instances/${id}/issue`);
    assert.equal(first.status, 202);
    assert.equal(first.body.status, 'pending');
    const second = await call('POST', `/v1/instances/${id}/issue`);
    assert.equal(second.body.certificateId, first.body.certificateId);
    const view = await call('GET', `/v1/instances/${id}`);
    assert.equal(view.body.certificate.status, 'pending');
    const certificate = await call('GET', `/v1/certificates/${first.body.certificateId}`);
    assert.equal(certificate.body.fullchainPem, null);
  });

  test('enrollment: a token works once, with a CSR; garbage CSRs are 400', async () => {
    const { id, enrollmentToken } = await createInstance('enroll1');
    const csrPem = await createCsr(await generateKeyPair(), ['certplane-agent']);
    assert.equal((await call('POST', '/v1/agents/enroll', { token: enrollmentToken, csrPem: 'garbage' })).status, 400);
    const enrolled = await call('POST', '/v1/agents/enroll', { token: enrollmentToken, csrPem });
    assert.equal(enrolled.status, 201, JSON.stringify(enrolled.body));
    assert.equal(enrolled.body.instanceId, id);
    assert.match(enrolled.body.certificatePem, /BEGIN CERTIFICATE/);
    const again = await call('POST', '/v1/agents/enroll', { token: enrollmentToken, csrPem });
    assert.equal(again.status, 401);
    assert.equal(again.body.code, ErrorCode.ENROLLMENT_TOKEN_INVALID);
    const fresh = await call('POST', `/v1/instances/${id}/enrollment-token`);
    assert.equal(fresh.status, 201);
    assert.equal((await call('POST', '/v1/agents/enroll', { token: fresh.body.enrollmentToken, csrPem })).status, 201);

    // Registration, token minting and each enrollment are in the audit trail, newest first; no token in it.
    const trail = (await plane.store.audit.list(50)).filter((e) => e.target === id);
    assert.deepEqual(trail.map((e) => e.action), ['agent.enroll', 'instance.enrollment-token', 'agent.enroll', 'instance.register']);
    assert.equal(trail[3]!.actor, 'unauthenticated (development mode)');
    assert.deepEqual((trail[3]!.details as any).hostnames, ['enroll1.example.com']);
    assert.match(trail[0]!.actor, /^agent enrollment from /);
    assert.match((trail[0]!.details as any).fingerprintSha256, /^[0-9a-f]{64}$/);
    assert.ok(!JSON.stringify(trail).includes(enrollmentToken) && !JSON.stringify(trail).includes(fresh.body.enrollmentToken));
    assert.equal(enrolled.body.fingerprintSha256, undefined, 'the enrollment answer is unchanged');
  });

  test('health, readiness and metrics', async () => {
    assert.deepEqual((await call('GET', '/healthz')).body, { status: 'ok' });
    assert.deepEqual((await call('GET', '/readyz')).body, { status: 'ok' });
    const metrics = await plane.app.inject({ method: 'GET', url: '/metrics' });
    assert.equal(metrics.statusCode, 200);
    assert.match(metrics.headers['content-type'] as string, /text\/plain/);
  });
});

describe('enrollment failures are rate-limited per address, successes are not', async () => {
  let plane: TestPlane;
  before(async () => {
    plane = await startTestPlane();
  });
  after(() => plane.close());

  test('after a burst of bad tokens the address gets 429 for bad tokens, while a good token still enrolls; many good enrollments pass', async () => {
    const csrPem = await createCsr(await generateKeyPair(), ['certplane-agent']);
    for (let i = 0; i < 15; i += 1) {
      const created = (await plane.app.inject({ method: 'POST', url: '/v1/instances', payload: { name: `ok${i}`, hostnames: [`ok${i}.example.com`] } })).json();
      assert.equal((await plane.app.inject({ method: 'POST', url: '/v1/agents/enroll', payload: { token: created.enrollmentToken, csrPem } })).statusCode, 201);
    }
    const statuses: number[] = [];
    for (let i = 0; i < 12; i += 1) statuses.push((await plane.app.inject({ method: 'POST', url: '/v1/agents/enroll', payload: { token: `cpe_guess${i}`, csrPem } })).statusCode);
    assert.deepEqual(statuses.slice(0, 10), Array(10).fill(401));
    assert.deepEqual(statuses.slice(10), [429, 429]);
    const created = (await plane.app.inject({ method: 'POST', url: '/v1/instances', payload: { name: 'late', hostnames: ['late.example.com'] } })).json();
    const late = await plane.app.inject({ method: 'POST', url: '/v1/agents/enroll', payload: { token: created.enrollmentToken, csrPem } });
    assert.equal(late.statusCode, 201, late.body);
    const guess = await plane.app.inject({ method: 'POST', url: '/v1/agents/enroll', payload: { token: 'cpe_guess', csrPem } });
    assert.equal(guess.statusCode, 429);
    assert.equal(guess.json().code, ErrorCode.ENROLLMENT_RATE_LIMITED);
  });
});
