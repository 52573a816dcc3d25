/** The README's main job, run as the operator runs it. */
import assert from 'node:assert/strict';
import { stat, readFile } from 'node:fs/promises';
import { after, test } from 'node:test';
import { parseCertificateBundle } from '../../src/chain/index.js';
import { certplane, scratch } from '../support/cli.js';

const dir = await scratch();
after(() => dir.remove());

test('certplane demo issues on an alternate root, writes a verified chain and a 0600 key, and stops Pebble', async () => {
  const r = await certplane(['demo', '--out-dir', dir.dir, '--hostname', 'demo.example.test']);
  assert.equal(r.code, 0, r.stderr);
  const preferred = /preferring the alternate "([^"]+)"/.exec(r.stdout)?.[1];
  assert.ok(preferred, r.stdout);
  assert.match(r.stdout, new RegExp(`\\* \\[2\\] alternate 2: top issuer "${preferred}"`));
  assert.match(r.stdout, /VERIFIED/);
  const chain = parseCertificateBundle(await readFile(dir.path('fullchain.pem'), 'utf8'));
  assert.equal(chain.at(-1)?.issuerCN, preferred);
  assert.deepEqual(chain[0]?.dnsNames, ['demo.example.test']);
  assert.equal((await stat(dir.path('privkey.pem'))).mode & 0o777, 0o600);
  const verify = await certplane(['chain', 'verify', dir.path('fullchain.pem'), '--trust', dir.path('trust-store.pem'), '--hostname', 'demo.example.test']);
  assert.equal(verify.code, 0, verify.stdout);
});

test('certplane demo refuses a bad --alternate-roots with exit 2', async () => {
  const r = await certplane(['demo', '--alternate-roots', 'lots', '--out-dir', dir.path('bad')]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /CLI_USAGE/);
});
