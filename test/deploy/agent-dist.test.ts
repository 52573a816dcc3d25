/**
 * The agent as a customer instance gets it: the distribution built by infra/agent/build-dist.sh,
 * unpacked and installed by its install.sh into a fresh directory tree, the installed unit
 * checked by systemd-analyze verify, and the installed single-file agent run from a
 * directory with no node_modules anywhere against a `certplane serve` process and Pebble:
 * it enrolls, holds its channel and gets a certificate installed. The plane answers the
 * challenge with dns-01 through challtestsrv, so no port is bound on the agent's side.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import { parseCertificateBundle } from '../../src/chain/index.js';
import { startPebble, type LocalPebble } from '../../src/devenv/pebble.js';
import { scratch } from '../support/cli.js';
import { freePort } from '../support/ports.js';
import { eventually, localPlaneEnv, startCertplane, type RunningProcess } from '../support/processes.js';

const run = promisify(execFile);
const repository = fileURLToPath(new URL('../../../', import.meta.url));
const dir = await scratch('certplane-agent-dist-');
let pebble: LocalPebble;
let plane: RunningProcess;
let api: string;
let unpacked: string;
const root = dir.path('root');

const json = async (method: string, route: string, body?: unknown) => {
  const response = await fetch(`${api}${route}`, { method, headers: { ...(body ? { 'content-type': 'application/json' } : {}), 'x-certplane-actor': 'agent-dist test' }, body: body ? JSON.stringify(body) : undefined, signal: AbortSignal.timeout(10_000) });
  return { status: response.status, body: (await response.json()) as Record<string, any> };
};

before(async () => {
  pebble = await startPebble({ alternateRoots: 1 });
  const preferred = parseCertificateBundle((await pebble.roots())[1]!)[0]!;
  await dir.write('root.pem', preferred.pem);
  const port = await freePort();
  api = `http://127.0.0.1:${port}`;
  plane = startCertplane(
    ['serve'],
    localPlaneEnv({
      port,
      dir: dir.dir,
      directoryUrl: pebble.directoryUrl,
      acmeCaPath: pebble.acmeServerCaPath,
      preferredRootCN: preferred.subjectCN,
      trustStorePath: dir.path('root.pem'),
      challtestsrvUrl: pebble.challtestsrvUrl,
    }),
  );
  await plane.waitForLine((line) => line.includes('management plane listening'), 60_000);
  const { stdout } = await run('bash', [path.join(repository, 'infra/agent/build-dist.sh'), dir.path('out')]);
  const tarball = stdout.trim().split('\n').at(-1)!;
  await run('mkdir', ['-p', dir.path('unpacked'), root]);
  await run('tar', ['-xzf', tarball, '-C', dir.path('unpacked')]);
  unpacked = path.join(dir.path('unpacked'), (await readdir(dir.path('unpacked')))[0]!);
});

after(async () => {
  await plane?.stop();
  await pebble?.stop();
  await dir.remove();
});

const unitPath = () => path.join(root, 'etc/systemd/system/certplane-agent.service');

test('the distribution is one bundled script, the unit and the install script: no node_modules', async () => {
  assert.deepEqual((await readdir(unpacked)).sort(), ['certplane-agent.cjs', 'certplane-agent.service', 'install.sh']);
  const size = (await stat(path.join(unpacked, 'certplane-agent.cjs'))).size;
  assert.ok(size < 5_000_000, `the bundle is ${size} bytes`);
  const { stdout } = await run(process.execPath, [path.join(unpacked, 'certplane-agent.cjs'), '--help'], { cwd: dir.path('unpacked'), env: { PATH: '/usr/bin:/bin' } });
  assert.match(stdout, /^usage: certplane-agent --server URL --state-dir DIR/);
});

test('install.sh installs into a fresh tree: program, settings, private state, the spent-once token, and the unit with node\'s path', async () => {
  const token = await dir.write('token', 'placeholder\n');
  const ca = await dir.write('ca.pem', 'not used by this test\n');
  await run('bash', [path.join(unpacked, 'install.sh'), '--root', root, '--server', api, '--token-file', token, '--server-ca', ca, '--group', 'postgres', '--http01-port', '80']);
  assert.ok(existsSync(path.join(root, 'opt/certplane-agent/certplane-agent.cjs')));
  assert.equal(existsSync(token), false, 'the token given is moved, not copied');
  const state = path.join(root, 'var/lib/certplane-agent');
  assert.equal((await stat(state)).mode & 0o777, 0o700);
  assert.equal((await stat(path.join(state, 'enrollment-token'))).mode & 0o777, 0o600);
  assert.equal(
    await readFile(path.join(root, 'etc/certplane-agent/agent.env'), 'utf8'),
    `# certplane agent settings, read by certplane-agent.service (systemctl restart certplane-agent after a change).\nCERTPLANE_SERVER=${api}\nCERTPLANE_AGENT_OPTIONS=--server-ca /etc/certplane-agent/server-ca.pem --group postgres --http01-port 80\n`,
  );
  const unit = await readFile(unitPath(), 'utf8');
  assert.match(unit, new RegExp(`^ExecStart=${process.execPath.replace(/\//g, '\\/')} /opt/certplane-agent/certplane-agent.cjs `, 'm'));
  assert.doesNotMatch(unit, /placeholder|--token /, 'no token in the unit');
  assert.equal(await readFile(`${unitPath()}.d/http01-port.conf`, 'utf8'), '[Service]\nCapabilityBoundingSet=CAP_NET_BIND_SERVICE\nAmbientCapabilities=CAP_NET_BIND_SERVICE\n', 'port 80 is the only reason for a capability');
});

test('the installed unit is hardened and passes systemd-analyze verify without a warning', async () => {
  const unit = await readFile(unitPath(), 'utf8');
  for (const directive of [
    'User=certplane-agent',
    'NoNewPrivileges=yes',
    'ProtectSystem=strict',
    'ProtectHome=yes',
    'PrivateTmp=yes',
    'PrivateDevices=yes',
    'ReadWritePaths=/var/lib/certplane-agent',
    'StateDirectoryMode=0700',
    'CapabilityBoundingSet=',
    'AmbientCapabilities=',
    'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6',
    'SystemCallFilter=@system-service',
    'UMask=0077',
  ]) {
    assert.match(unit, new RegExp(`^${directive.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`, 'm'), directive);
  }
  const verified = await run('systemd-analyze', ['verify', unitPath()]);
  assert.equal(verified.stderr, '', 'no unknown key or bad value');
  // The check can fail: a unit whose program is missing does not verify.
  const broken = dir.path('broken/certplane-agent.service');
  await run('mkdir', ['-p', path.dirname(broken)]);
  await writeFile(broken, unit.replace(/^ExecStart=\S+/m, 'ExecStart=/nonexistent/node'));
  await assert.rejects(run('systemd-analyze', ['verify', broken]));
});

test('the installed agent, run from a directory without node_modules, enrolls with the token file and gets a certificate from Pebble installed', async () => {
  const created = await json('POST', '/v1/instances', { name: 'dist', hostnames: ['dist.agent-dist.test'] });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const instanceId: string = created.body.id;
  const state = path.join(root, 'var/lib/certplane-agent');
  await writeFile(path.join(state, 'enrollment-token'), `${created.body.enrollmentToken}\n`, { mode: 0o600 });
  const cwd = dir.path('empty');
  await run('mkdir', ['-p', cwd]);
  const agent = spawn(
    process.execPath,
    [path.join(root, 'opt/certplane-agent/certplane-agent.cjs'), '--server', api, '--state-dir', state, '--token-file', path.join(state, 'enrollment-token'), '--trust', dir.path('root.pem')],
    { cwd, env: { PATH: '/usr/bin:/bin' }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const exited = once(agent, 'exit');
  let output = '';
  agent.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  agent.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  try {
    await eventually(async () => (output.includes('channel open') || agent.exitCode !== null ? true : undefined), 60_000, 100, 'the agent to open its channel');
    assert.match(output, /"msg":"enrolled"/, output);
    assert.match(output, /channel open/, output);
    assert.equal(existsSync(path.join(state, 'enrollment-token')), false, 'the spent token is gone');
    assert.equal(JSON.parse(await readFile(path.join(state, 'identity/instance.json'), 'utf8')).instanceId, instanceId);

    const issued = await json('POST', `/v1/instances/${instanceId}/issue`);
    assert.equal(issued.status, 202, JSON.stringify(issued.body));
    const certificate = await eventually(
      async () => {
        const { body } = await json('GET', `/v1/instances/${instanceId}`);
        return ['installed', 'failed'].includes(body.certificate?.status) ? body.certificate : undefined;
      },
      90_000,
      250,
      'the plane to report the certificate installed',
    ).catch((error: Error) => assert.fail(`${error.message}\nagent:\n${output}\nplane:\n${plane.lines.slice(-15).join('\n')}`));
    assert.equal(certificate.status, 'installed', `${JSON.stringify(certificate)}\nagent:\n${output}`);
    const fullchain = path.join(state, 'live/fullchain.pem');
    assert.ok(existsSync(fullchain), 'live/fullchain.pem is written');
    const live = parseCertificateBundle(await readFile(fullchain, 'utf8'));
    assert.deepEqual(live[0]!.dnsNames, ['dist.agent-dist.test']);
    assert.equal(certificate.fingerprintSha256, live[0]!.fingerprintSha256, 'the plane reports the certificate the agent installed');
    // openssl, not certplane's own chain code, decides: the leaf chains to Pebble's root through the intermediates beside it.
    const verified = await run('openssl', ['verify', '-CAfile', dir.path('root.pem'), '-untrusted', fullchain, fullchain]);
    assert.equal(verified.stdout.trim(), `${fullchain}: OK`);
  } finally {
    if (agent.exitCode === null && agent.signalCode === null) {
      agent.kill('SIGTERM');
      const timer = setTimeout(() => agent.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    }
  }
});

test('--upgrade replaces the program and keeps settings and state; --uninstall keeps state, --purge removes it', async () => {
  const settings = await readFile(path.join(root, 'etc/certplane-agent/agent.env'), 'utf8');
  await run('bash', [path.join(unpacked, 'install.sh'), '--root', root, '--upgrade']);
  assert.equal(await readFile(path.join(root, 'etc/certplane-agent/agent.env'), 'utf8'), settings);
  assert.ok(existsSync(path.join(root, 'var/lib/certplane-agent/identity/instance.json')));
  await run('bash', [path.join(unpacked, 'install.sh'), '--root', root, '--uninstall']);
  assert.equal(existsSync(path.join(root, 'opt/certplane-agent')), false);
  assert.equal(existsSync(unitPath()), false);
  assert.ok(existsSync(path.join(root, 'var/lib/certplane-agent/identity/instance.json')), 'keys survive a plain uninstall');
  await run('bash', [path.join(unpacked, 'install.sh'), '--root', root, '--uninstall', '--purge']);
  assert.equal(existsSync(path.join(root, 'var/lib/certplane-agent')), false);
  assert.equal(existsSync(path.join(root, 'etc/certplane-agent')), false);
});
