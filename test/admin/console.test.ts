/**
 * The stdin console fed a scripted session through a stream, as an operator typing into
 * `certplane serve` would: answers in order, errors as `error CODE: message`, the
 * shell-like word splitting, and the audit trail naming the console's user.
 */
import assert from 'node:assert/strict';
import { userInfo } from 'node:os';
import { PassThrough } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { splitWords, startStdinConsole, type AdminDeps } from '../../src/admin/index.js';
import { parseCertificateBundle } from '../../src/chain/index.js';
import { EKU, generateKeyPair, issueCertificate } from '../../src/pki/factory.js';
import { scratch } from '../support/cli.js';
import { root } from '../support/hierarchies.js';
import { startTestPlane, type TestPlane } from '../support/plane.js';

/** Feeds `lines` to a fresh console and returns everything it wrote once the input ends. */
async function session(deps: AdminDeps, lines: string[]): Promise<string> {
  const input = new PassThrough();
  const output = new PassThrough();
  let written = '';
  output.on('data', (chunk: Buffer) => (written += chunk.toString()));
  const adminConsole = startStdinConsole({ input, output, deps });
  input.end(`${lines.join('\n')}\n`);
  const timer = setTimeout(() => adminConsole.close(), 10_000);
  await adminConsole.closed;
  clearTimeout(timer);
  return written;
}

describe('stdin admin console', () => {
  let plane: TestPlane;
  let dir: Awaited<ReturnType<typeof scratch>>;
  let deps: AdminDeps;

  before(async () => {
    plane = await startTestPlane();
    dir = await scratch('certplane-admin-console-');
    deps = { store: plane.store, sessions: plane.sessions, campaigns: plane.campaigns, clock: plane.clock, logger: plane.logger };
  });
  after(async () => {
    await plane.close();
    await dir.remove();
  });

  test('a scripted session: register, list, a bad command, a dry-run reissue', async () => {
    const ca = await root('Console Client CA');
    const cert = await issueCertificate({ subject: 'CN=ops', key: await generateKeyPair(), issuer: ca.asIssuer, ca: false, extendedKeyUsage: [EKU.clientAuth], notBefore: new Date(Date.now() - 60_000), notAfter: new Date(Date.now() + 86_400_000) });
    const certFile = await dir.write('ops client.pem', cert.pem);
    const thumbprint = parseCertificateBundle(cert.pem)[0]!.fingerprintSha256;
    const eu = await plane.app.inject({ method: 'POST', url: '/v1/instances', payload: { name: 'db-eu', hostnames: ['db-eu.example.com'], cluster: 'eu-1' } });
    await plane.app.inject({ method: 'POST', url: '/v1/instances', payload: { name: 'db-us', hostnames: ['db-us.example.com'], cluster: 'us-1' } });

    const output = await session(deps, [
      `register-client --name ops --role admin --cert-file "${certFile}" --reason 'first admin, from the console'`,
      '',
      '# comments and blank lines are skipped',
      'list-clients',
      'launch-missiles --now',
      'reissue --dry-run --selector \'{"cluster": "eu-1"}\' --reason "R3 drill"',
      'revoke-client --thumbprint "unterminated',
    ]);
    const notAfter = parseCertificateBundle(cert.pem)[0]!.notAfter.toISOString();
    assert.deepEqual(output.split('\n'), [
      `registered client "ops" (admin, all clusters) sha256:${thumbprint}, valid until ${notAfter}`,
      `sha256:${thumbprint}  ops  admin  all clusters  until ${notAfter}  active`,
      'error ADMIN_UNKNOWN_COMMAND: unknown admin command "launch-missiles"; commands: register-client, list-clients, revoke-client, list-agents, revoke-agent, status, reissue, reload-tls, reload-trust, audit, help',
      'dry run: 1 instance(s) match; the rate limiter predicts about 0 s',
      eu.json().id,
      'error ADMIN_BAD_ARGUMENTS: unterminated " quote',
      '',
    ]);
    const [entry] = await plane.store.audit.list(1);
    assert.deepEqual([entry?.actor, entry?.action, entry?.reason, entry?.target], [`stdin-console:${userInfo().username}`, 'client.register', 'first admin, from the console', thumbprint]);
    // A dry run changes nothing and records nothing.
    assert.equal((await plane.store.query("SELECT count(*)::int AS n FROM campaigns"))[0]?.n, 0);
  });

  test('help lists the commands; a terminal gets a prompt, a pipe does not', async () => {
    const help = await session(deps, ['help']);
    assert.match(help, /^commands:\n {2}register-client --name NAME --role admin\|operator\|reader/);
    assert.match(help, /\n {2}revoke-agent \(--thumbprint SHA256 \| --instance ID\) --reason TEXT\n/);
    assert.doesNotMatch(help, /certplane> /);

    const input = new PassThrough();
    const output = Object.assign(new PassThrough(), { isTTY: true });
    let written = '';
    output.on('data', (chunk: Buffer) => (written += chunk.toString()));
    const interactive = startStdinConsole({ input, output, deps });
    input.end('status\n');
    await interactive.closed;
    assert.match(written, /^certplane> instances: \d+\n[^]*\ncertplane> $/);
  });

  test('close() stops a console whose input stays open', async () => {
    const input = new PassThrough();
    const adminConsole = startStdinConsole({ input, output: new PassThrough(), deps });
    adminConsole.close();
    const settled = await Promise.race([adminConsole.closed.then(() => 'closed'), new Promise((resolve) => setTimeout(() => resolve('still open'), 2000))]);
    assert.equal(settled, 'closed');
    input.destroy();
  });

  test('words split like a shell for the simple cases', () => {
    assert.deepEqual(splitWords(`a "b c" 'd "e"' f\\ g "h\\"i" '' x`), ['a', 'b c', 'd "e"', 'f g', 'h"i', '', 'x']);
    assert.deepEqual(splitWords('   '), []);
    assert.throws(() => splitWords("it's"), /ADMIN_BAD_ARGUMENTS|unterminated/);
  });
});
