/** The README's main job, run as the operator runs it. */
import assert from 'node:assert/strict';
import { readFile, stat } from 'node:fs/promises';
import { after, test } from 'node:test';
import { parseCertificateBundle } from '../../src/chain/index.js';
import { certplane, scratch } from '../support/cli.js';

const dir = await scratch();
after(() => dir.remove());

test('certplane demo: plane, agent and Pebble issue, deliver and install a chain on the preferred alternate root', async () => {
  const r = await certplane(['demo', '--out-dir', dir.dir, '--hostname', 'demo.example.test']);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const preferred = /preferring the alternate "([^"]+)"/.exec(r.stdout)?.[1];
  assert.ok(preferred, r.stdout);
  const view = JSON.parse(/GET \/v1\/instances\/[0-9a-f-]+:\n(\{[\s\S]*?\n\})/.exec(r.stdout)?.[1] ?? 'null');
  assert.equal(view.certificate.status, 'installed');
  assert.equal(view.certificate.anchor, preferred);
  assert.match(r.stdout, /VERIFIED/);
  const chain = parseCertificateBundle(await readFile(dir.path('agent/live/fullchain.pem'), 'utf8'));
  assert.equal(chain.at(-1)?.issuerCN, preferred);
  assert.equal(chain[0]?.fingerprintSha256, view.certificate.fingerprintSha256);
  assert.equal(view.agent.installedFingerprintSha256 ?? view.certificate.fingerprintSha256, view.certificate.fingerprintSha256);
  assert.equal((await stat(dir.path('agent/live/privkey.pem'))).mode & 0o777, 0o600);
});

test('certplane demo refuses a bad --alternate-roots with exit 2', async () => {
  const r = await certplane(['demo', '--alternate-roots', 'lots', '--out-dir', dir.path('bad')]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /CLI_USAGE/);
});
