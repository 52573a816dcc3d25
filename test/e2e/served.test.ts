/**
 * Issue 12's Done-when for served-chain checks, on real processes: Pebble with an alternate
 * root, `certplane serve`, a real `certplane agent` with --probe pointing at a real HTTPS
 * service on 127.0.0.1 (test/support/tls-service.ts, its own process) that serves the
 * agent's installed files and loads them again only on SIGHUP. A reload command that does
 * nothing leaves the old certificate served: `stale` within one probe interval. A real
 * reload (the operator's, then the agent's own command on the next installation): `match`.
 * The right leaf with Pebble's other intermediate, whose root the instance's profile does
 * not hold: `wrong-chain`. The service stopped: `unreachable`. `certplane status` shows each.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parseCertificateBundle, type Certificate } from '../../src/chain/index.js';
import { ErrorCode } from '../../src/error-catalogue.js';
import { certplane } from '../support/cli.js';
import { startE2eFleet, type E2eFleet } from '../support/e2e-fleet.js';
import { root as makeRoot } from '../support/hierarchies.js';
import { freePort } from '../support/ports.js';
import { eventually, startCertplane, startNodeScript, type RunningProcess } from '../support/processes.js';

const TLS_SERVICE = fileURLToPath(new URL('../support/tls-service.js', import.meta.url));
const PROBE_INTERVAL_S = 2;
/** One probe interval, plus what a loaded machine adds between the probe, the plane's judgement and the test's next look. */
const WITHIN_INTERVAL_MS = PROBE_INTERVAL_S * 1000 + 4000;

describe('what the service on an instance really serves, probed by its agent', () => {
  let fleet: E2eFleet;
  let roots: Certificate[];
  let intermediates: Certificate[];
  let agent: RunningProcess;
  let service: RunningProcess;
  let api: string;
  let servicePort: number;
  let instanceId: string;
  let placeholder: Certificate;
  const stateDir = () => fleet.path('agent');
  const measured: string[] = [];

  const json = (method: string, path: string, body?: unknown) => fleet.json(method, path, body);
  const view = async () => (await json('GET', `/v1/instances/${instanceId}`)).body;
  /** The instance once its served status is `status` from a check made after `since`; with the time that took. */
  const servedAfter = async (status: string, since: number, what: string) => {
    const found = await eventually(async () => {
      const current = await view();
      return current.served.status === status && Date.parse(current.served.checkedAt) >= since ? current : undefined;
    }, 60_000, 100, what);
    const elapsed = Date.now() - since;
    measured.push(`${what}: ${elapsed} ms`);
    return { current: found, elapsed };
  };
  const startService = () => startNodeScript(TLS_SERVICE, [join(stateDir(), 'live'), fleet.path('placeholder.pem'), fleet.path('placeholder.key'), fleet.path('override.pem'), String(servicePort)]);
  const reloadedLines = () => service.lines.filter((line) => line.includes('"reloaded"')).length;

  before(async () => {
    // The instance's clients (profile `default`, the plane's trust store) trust Pebble's first root only.
    fleet = await startE2eFleet({ prefix: 'certplane-served-', alternateRoots: 1, preferredRoot: 'first', env: () => ({ CERTPLANE_LOG_LEVEL: 'info' }) });
    roots = fleet.roots;
    api = fleet.api;
    intermediates = (await fleet.pebble.intermediates()).map((text) => parseCertificateBundle(text)[0]!);
    const self = await makeRoot('probe.served.test placeholder');
    placeholder = parseCertificateBundle(self.pem)[0]!;
    await fleet.write('placeholder.pem', self.pem);
    await fleet.write('placeholder.key', self.key.privateKeyPem, 0o600);
    servicePort = await freePort();
    service = startService();
    await service.waitForLine((line) => line.includes('"listening"'), 30_000);
    const created = await json('POST', '/v1/instances', { name: 'probed', hostnames: ['probe.served.test'] });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    instanceId = created.body.id;
    // Reloads the service only once the test allows it: until then the reload "succeeds" and does nothing.
    const reloadCommand = `if [ -e ${fleet.path('reload-works')} ]; then kill -HUP ${service.child.pid}; fi`;
    agent = startCertplane(
      ['agent', '--server', api, '--token', created.body.enrollmentToken, '--state-dir', stateDir(), '--trust', fleet.path('root.pem'), '--reload-command', reloadCommand, '--probe', `127.0.0.1:${servicePort}`, '--probe-interval', String(PROBE_INTERVAL_S)],
      { CERTPLANE_LOG_LEVEL: 'info' },
    );
  });

  after(async () => {
    await agent?.stop();
    await service?.stop();
    await fleet?.stop();
  });

  test('a reload that does nothing is stale within one probe interval; a real reload is match; the right leaf on the wrong intermediate is wrong-chain; a stopped service is unreachable', async (t) => {
    // The agent's connection alone issues the first certificate (autoIssue); its reload command does nothing yet.
    const installed = await eventually(async () => {
      const current = await view();
      if (current.certificate?.status === 'failed') assert.fail(`the certificate failed: ${current.certificate.lastError}`);
      return current.certificate?.status === 'installed' ? current : undefined;
    }, 180_000, 250, 'the first certificate to be installed');
    const installedAt = Date.parse((await json('GET', `/v1/certificates/${installed.certificate.id}`)).body.installedAt);
    const stale = await servedAfter('stale', installedAt, 'stale after an installation whose reload did nothing');
    assert.ok(stale.elapsed <= WITHIN_INTERVAL_MS, `stale after ${stale.elapsed} ms, more than one probe interval`);
    assert.equal(stale.current.served.fingerprintSha256, placeholder.fingerprintSha256, 'the service still serves what it loaded before the installation');
    assert.deepEqual(stale.current.served.problems.map((p: any) => [p.code, p.target, p.sni]), [[ErrorCode.SERVED_STALE, `127.0.0.1:${servicePort}`, 'probe.served.test']]);
    assert.equal(stale.current.agent.installedFingerprintSha256, installed.certificate.fingerprintSha256, 'installed, as the agent says, is not served');
    assert.equal(reloadedLines(), 0);
    const staleStatus = await certplane(['status', '--server', api, '--instance', instanceId]);
    assert.match(staleStatus.stdout, new RegExp(`SERVED STALE at 127\\.0\\.0\\.1:${servicePort} \\(probe\\.served\\.test\\)`));

    // The operator reloads the service by hand: the next periodic probe sees the installed chain.
    let since = Date.now();
    service.child.kill('SIGHUP');
    await service.waitForLine((line) => line.includes('"reloaded"') && line.includes('"live"'), 10_000);
    const matched = await servedAfter('match', since, 'match after the operator reloaded the service');
    assert.ok(matched.elapsed <= WITHIN_INTERVAL_MS, `match after ${matched.elapsed} ms`);
    assert.deepEqual([matched.current.served.fingerprintSha256, matched.current.served.anchor, matched.current.served.problems], [installed.certificate.fingerprintSha256, roots[0]!.subjectCN, []]);
    assert.match((await certplane(['status', '--server', api, '--instance', instanceId])).stdout, /served: match/);

    // A new certificate, installed with a reload command that now works: match on the new leaf, right after the installation.
    await fleet.write('reload-works', '');
    const issued = await json('POST', `/v1/instances/${instanceId}/issue`);
    assert.equal(issued.status, 202, JSON.stringify(issued.body));
    const renewed = await eventually(async () => {
      const current = await view();
      return current.certificate?.id === issued.body.certificateId && current.certificate.status === 'installed' ? current : undefined;
    }, 180_000, 250, 'the second certificate to be installed');
    assert.notEqual(renewed.certificate.fingerprintSha256, installed.certificate.fingerprintSha256);
    since = Date.parse((await json('GET', `/v1/certificates/${renewed.certificate.id}`)).body.installedAt);
    const reloaded = await servedAfter('match', since, 'match after an installation whose reload command reloads');
    assert.equal(reloaded.current.served.fingerprintSha256, renewed.certificate.fingerprintSha256);
    assert.ok(reloadedLines() >= 2, 'the agent\'s reload command reloaded the service');

    // The right leaf with Pebble's other intermediate: its root is not in the instance's profile.
    const live = parseCertificateBundle(await readFile(join(stateDir(), 'live', 'fullchain.pem'), 'utf8'));
    assert.equal(live[0]!.fingerprintSha256, renewed.certificate.fingerprintSha256);
    const other = intermediates.find((i) => i.issuer !== live[1]!.issuer && i.subject === live[1]!.subject);
    assert.ok(other, 'Pebble offers the same intermediate under its other root');
    await fleet.write('override.pem', live[0]!.pem + other.pem);
    since = Date.now();
    service.child.kill('SIGHUP');
    await service.waitForLine((line) => line.includes('"override"'), 10_000);
    const wrong = await servedAfter('wrong-chain', since, 'wrong-chain after the service took another intermediate');
    assert.ok(wrong.elapsed <= WITHIN_INTERVAL_MS, `wrong-chain after ${wrong.elapsed} ms`);
    assert.equal(wrong.current.served.fingerprintSha256, renewed.certificate.fingerprintSha256, 'the right leaf');
    assert.deepEqual(wrong.current.served.problems.map((p: any) => p.code), [ErrorCode.SERVED_CHAIN_UNVERIFIED]);
    assert.match(wrong.current.served.problems[0].message, /profile "default"/);
    assert.match((await certplane(['status', '--server', api, '--instance', instanceId])).stdout, /SERVED WRONG-CHAIN/);

    await rm(fleet.path('override.pem'));
    await service.stop();
    assert.ok(!existsSync(fleet.path('override.pem')));
    since = Date.now();
    const down = await servedAfter('unreachable', since, 'unreachable after the service stopped');
    assert.ok(down.elapsed <= WITHIN_INTERVAL_MS, `unreachable after ${down.elapsed} ms`);
    assert.match(down.current.served.problems[0].message, /ECONNREFUSED/);
    const listed = (await json('GET', '/v1/instances?limit=10')).body.items.find((i: any) => i.id === instanceId);
    assert.equal(listed.served.status, 'unreachable');
    t.diagnostic(measured.join('; '));
  });
});
