/**
 * Secure mode over real TLS: for every route, the outcome with no client certificate, an
 * unknown one, a revoked one, an expired one, and each role; cluster limits; and the agent
 * channel requiring the agent certificate as the TLS client certificate.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { loopbackServerCertificate } from '../../src/pki/factory.js';
import { callPlane, clientCertificate, type ClientIdentity } from '../support/callers.js';
import { startTestPlane, type TestPlane } from '../support/plane.js';
import { ErrorCode } from '../../src/error-catalogue.js';

const DAY = 86_400_000;

describe('client-certificate authentication and roles', async () => {
  let plane: TestPlane;
  let serverCaPem: string;
  const callers: Record<string, ClientIdentity | undefined> = {};
  let euInstance: string;
  let usInstance: string;

  const call = (method: string, path: string, who: string, body?: unknown) => callPlane(plane.url, serverCaPem, callers[who], method, path, body);

  before(async () => {
    const listener = await loopbackServerCertificate('certplane test plane CA');
    serverCaPem = listener.caPem;
    plane = await startTestPlane({ tls: { certPem: listener.certPem, keyPem: listener.keyPem } });
    assert.match(plane.url, /^https:/);
    callers.none = undefined;
    callers.unknown = await clientCertificate('stranger');
    for (const role of ['reader', 'operator', 'admin'] as const) {
      callers[role] = await clientCertificate(role);
      await plane.store.apiClients.register({ fingerprintSha256: callers[role]!.fingerprint, name: role, role, clusters: null, notAfter: null });
    }
    callers.revoked = await clientCertificate('revoked');
    await plane.store.apiClients.register({ fingerprintSha256: callers.revoked.fingerprint, name: 'revoked', role: 'admin', clusters: null, notAfter: null });
    await plane.store.apiClients.revoke(callers.revoked.fingerprint, new Date());
    callers.expired = await clientCertificate('expired', new Date(Date.now() - DAY));
    await plane.store.apiClients.register({ fingerprintSha256: callers.expired.fingerprint, name: 'expired', role: 'admin', clusters: null, notAfter: null });
    callers.euOperator = await clientCertificate('eu-operator');
    await plane.store.apiClients.register({ fingerprintSha256: callers.euOperator.fingerprint, name: 'eu-operator', role: 'operator', clusters: ['eu-1'], notAfter: null });
    euInstance = (await plane.store.instances.create({ name: 'eu', hostnames: ['eu.example.com'], cluster: 'eu-1', keyAlgorithm: 'ecdsa-p256' })).id;
    usInstance = (await plane.store.instances.create({ name: 'us', hostnames: ['us.example.com'], cluster: 'us-1', keyAlgorithm: 'ecdsa-p256' })).id;
  });
  after(() => plane.close());

  const unknownId = '00000000-0000-4000-8000-000000000000';
  let registered = 0;
  const routes: { method: string; path: () => string; needs: 'public' | 'read' | 'operate'; body?: unknown }[] = [
    { method: 'GET', path: () => '/healthz', needs: 'public' },
    { method: 'GET', path: () => '/readyz', needs: 'public' },
    { method: 'POST', path: () => '/v1/agents/enroll', needs: 'public', body: { token: 'cpe_nope', csrPem: 'x' } },
    { method: 'GET', path: () => '/metrics', needs: 'read' },
    { method: 'GET', path: () => '/v1/instances', needs: 'read' },
    { method: 'GET', path: () => `/v1/instances/${usInstance}`, needs: 'read' },
    { method: 'GET', path: () => `/v1/certificates/${unknownId}`, needs: 'read' },
    { method: 'GET', path: () => `/v1/reissues/${unknownId}`, needs: 'read' },
    // A new name each time: a name belongs to one instance.
    { method: 'POST', path: () => '/v1/instances', needs: 'operate', get body() { return { name: 'x', hostnames: [`x${(registered += 1)}.example.com`] }; } },
    { method: 'POST', path: () => `/v1/instances/${usInstance}/enrollment-token`, needs: 'operate' },
    { method: 'POST', path: () => `/v1/instances/${usInstance}/issue`, needs: 'operate' },
    { method: 'POST', path: () => '/v1/reissues', needs: 'operate', body: { selector: { all: true }, reason: 'matrix', dryRun: true } },
    { method: 'POST', path: () => `/v1/reissues/${unknownId}/cancel`, needs: 'operate', body: {} },
  ];
  const allowed: Record<string, readonly string[]> = { reader: ['public', 'read'], operator: ['public', 'read', 'operate'], admin: ['public', 'read', 'operate'] };

  test('every route: no, unknown, revoked and expired certificates get 401; roles get 403 exactly where they lack the permission', async () => {
    for (const route of routes) {
      for (const who of ['none', 'unknown', 'revoked', 'expired', 'reader', 'operator', 'admin']) {
        const { status, body } = await call(route.method, route.path(), who, route.body);
        const label = `${route.method} ${route.path()} as ${who}: ${status} ${JSON.stringify(body)}`;
        if (route.needs === 'public') assert.ok(status !== 403 && !String(body.code).startsWith('AUTH_'), label);
        else if (['none', 'unknown', 'revoked', 'expired'].includes(who)) {
          assert.equal(status, 401, label);
          assert.equal(body.code, { none: ErrorCode.AUTH_CLIENT_CERTIFICATE_REQUIRED, unknown: ErrorCode.AUTH_UNKNOWN_CLIENT, revoked: ErrorCode.AUTH_CLIENT_REVOKED, expired: ErrorCode.AUTH_CLIENT_CERTIFICATE_EXPIRED }[who], label);
        } else if (allowed[who]!.includes(route.needs)) assert.ok(status < 400 || status === 404 || status === 400, label);
        else {
          assert.equal(status, 403, label);
          assert.equal(body.code, ErrorCode.AUTH_FORBIDDEN);
        }
      }
    }
  });

  test('a cluster-limited caller sees and acts on its clusters only', async () => {
    const list = await call('GET', '/v1/instances', 'euOperator');
    assert.deepEqual(list.body.items.map((i: { id: string }) => i.id), [euInstance]);
    assert.equal((await call('GET', `/v1/instances/${usInstance}`, 'euOperator')).status, 404);
    assert.equal((await call('POST', `/v1/instances/${euInstance}/issue`, 'euOperator')).status, 202);
    assert.equal((await call('POST', `/v1/instances/${usInstance}/issue`, 'euOperator')).status, 404);
    assert.equal((await call('POST', '/v1/instances', 'euOperator', { name: 'y', hostnames: ['y.example.com'], cluster: 'us-1' })).status, 403);
    assert.equal((await call('POST', '/v1/reissues', 'euOperator', { selector: { all: true }, reason: 'r', dryRun: true })).status, 403);
    assert.equal((await call('POST', '/v1/reissues', 'euOperator', { selector: { cluster: 'eu-1' }, reason: 'r', dryRun: true })).status, 200);
  });

  test('the caller is who the audit trail and campaigns record', async () => {
    const started = await call('POST', '/v1/reissues', 'operator', { selector: { instanceIds: [usInstance] }, reason: 'audit check' });
    assert.equal(started.status, 201, JSON.stringify(started.body));
    assert.equal(started.body.requestedBy, 'client:operator');
    const audit = await plane.store.audit.list(5);
    assert.ok(audit.some((e) => e.actor === 'client:operator' && e.action === 'reissue.start'));
  });
});
