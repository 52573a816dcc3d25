/**
 * The plane as a systemd service on a plain Linux host: infra/plane/certplane.service, installed
 * the way docs/deploy.md says (node's path put in), passes systemd-analyze verify without a
 * warning and carries the same hardening as the agent's unit; the example settings file with the
 * unit's own defaults is a configuration `certplane serve` accepts, on a port that needs no
 * capability.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, test } from 'node:test';
import { promisify } from 'node:util';
import { loadConfig } from '../../src/config/config.js';
import { scratch } from '../support/cli.js';

const run = promisify(execFile);
const repository = fileURLToPath(new URL('../../../', import.meta.url));
const template = await readFile(path.join(repository, 'infra/plane/certplane.service'), 'utf8');
const unit = template.replaceAll('@NODE@', process.execPath);
const dir = await scratch('certplane-plane-unit-');

after(() => dir.remove());

/** `Key=value` lines of the [Service] section, in order (a key may repeat, e.g. Environment). */
const directives = (text: string, key: string) => [...text.matchAll(new RegExp(`^${key}=(.*)$`, 'gm'))].map((match) => match[1]!);

test('the plane unit, installed with node\'s path, passes systemd-analyze verify without a warning', async () => {
  const installed = dir.path('system/certplane.service');
  await run('mkdir', ['-p', path.dirname(installed)]);
  await writeFile(installed, unit);
  const verified = await run('systemd-analyze', ['verify', installed]);
  assert.equal(verified.stderr, '', 'no unknown key or bad value');
  // The check can fail both ways: a misspelt directive is a warning, a missing program an error.
  const misspelt = dir.path('misspelt/certplane.service');
  await run('mkdir', ['-p', path.dirname(misspelt)]);
  await writeFile(misspelt, unit.replace(/^ProtectSystem=strict$/m, 'ProtectSystm=strict'));
  assert.match((await run('systemd-analyze', ['verify', misspelt])).stderr, /Unknown key 'ProtectSystm'/);
  const broken = dir.path('broken/certplane.service');
  await run('mkdir', ['-p', path.dirname(broken)]);
  await writeFile(broken, unit.replace(/^ExecStart=\S+/m, 'ExecStart=/nonexistent/node'));
  await assert.rejects(run('systemd-analyze', ['verify', broken]));
});

test('the plane unit is hardened: its own user, read-only system, writable state only, no capabilities, restarted on failure', () => {
  for (const directive of [
    'User=certplane',
    'Group=certplane',
    'NoNewPrivileges=yes',
    'ProtectSystem=strict',
    'ProtectHome=yes',
    'PrivateTmp=yes',
    'PrivateDevices=yes',
    'ProtectKernelTunables=yes',
    'ProtectKernelModules=yes',
    'ProtectControlGroups=yes',
    'ReadWritePaths=/var/lib/certplane',
    'StateDirectory=certplane',
    'StateDirectoryMode=0700',
    'RuntimeDirectory=certplane',
    'RuntimeDirectoryMode=0700',
    'UMask=0077',
    'CapabilityBoundingSet=',
    'AmbientCapabilities=',
    'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6',
    'RestrictSUIDSGID=yes',
    'SystemCallFilter=@system-service',
    'EnvironmentFile=/etc/certplane/certplane.env',
    'Restart=on-failure',
  ]) {
    assert.match(unit, new RegExp(`^${directive.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`, 'm'), directive);
  }
  assert.deepEqual(directives(unit, 'CapabilityBoundingSet'), [''], 'one empty capability set, nothing added back');
  assert.deepEqual(directives(unit, 'AmbientCapabilities'), ['']);
  assert.deepEqual(directives(unit, 'ReadWritePaths'), ['/var/lib/certplane'], 'the state directory is the only writable path named');
  assert.doesNotMatch(unit, /^(User=root|PrivateTmp=no|NoNewPrivileges=no|ProtectSystem=(no|yes|full))$/m);
  // The EnvironmentFile comes after the unit's defaults, so the settings file overrides them.
  assert.ok(unit.indexOf('EnvironmentFile=') > unit.lastIndexOf('Environment=CERTPLANE_'));
});

test('the unit starts the program the build produces, and its defaults with the example settings are a configuration serve accepts', async () => {
  const [program, entry, ...args] = directives(unit, 'ExecStart')[0]!.split(' ');
  assert.equal(program, process.execPath);
  assert.deepEqual(args, ['serve']);
  assert.match(entry!, /^\/opt\/certplane\//);
  assert.ok(existsSync(path.join(repository, entry!.slice('/opt/certplane/'.length))), `${entry} is what tsc builds from this repository`);

  const env: Record<string, string> = {};
  for (const assignment of directives(unit, 'Environment')) {
    const [key, ...value] = assignment.split('=');
    env[key!] = value.join('=');
  }
  const example = await readFile(path.join(repository, 'infra/plane/certplane.env.example'), 'utf8');
  const settings = example.split('\n').filter((line) => line !== '' && !line.startsWith('#'));
  const tableRows = (await readFile(path.join(repository, 'docs', 'reference', 'configuration.md'), 'utf8')).split('\n').filter((row) => row.startsWith('| `CERTPLANE_'));
  for (const line of settings) {
    const [key, ...value] = line.split('=');
    assert.ok(tableRows.some((row) => row.split('|')[1]!.includes(`\`${key}\``)), `${key} is in the configuration reference (docs/reference/configuration.md), not a typo`);
    env[key!] = value.join('=');
  }
  const config = loadConfig(env);
  assert.equal(config.secrets, 'file:/var/lib/certplane/secrets', 'file secrets live in the writable state directory');
  assert.equal(config.server.adminSocket, '/run/certplane/admin.sock', 'the admin socket is in the RuntimeDirectory');
  assert.ok(config.server.listen.port >= 1024, 'the default port needs no CAP_NET_BIND_SERVICE');
  assert.equal(config.server.tlsCertPath, '/etc/certplane/tls/plane.crt');
});
