import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { generateKeyPair, createCsr } from '../../src/pki/factory.js';
import { certplane, scratch } from '../support/cli.js';
import { letsEncrypt2021, pem } from '../support/hierarchies.js';
import { ErrorCode } from '../../src/error-catalogue.js';

describe('certplane chain select and verify (real processes)', async () => {
  const dir = await scratch();
  const le = await letsEncrypt2021();
  let files: Record<string, string>;

  before(async () => {
    files = {
      long: await dir.write('long.pem', le.long),
      short: await dir.write('short.pem', le.short),
      x1: await dir.write('isrg-x1.pem', le.isrgX1.pem),
      both: await dir.write('both-roots.pem', pem(le.isrgX1, le.dst)),
      garbage: await dir.write('garbage.pem', 'not a certificate\n'),
      csr: await dir.write('req.pem', await createCsr(le.leaf.key, ['db1.example.com'])),
      otherCsr: await dir.write('other.pem', await createCsr(await generateKeyPair(), ['db1.example.com'])),
    };
  });
  after(() => dir.remove());

  test('2021 ordering: picks the short alternate for ISRG Root X1 and prints its file', async () => {
    const r = await certplane(['chain', 'select', '--prefer', 'ISRG Root X1', '--trust', files.both!, files.long!, files.short!]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), files.short);
    assert.match(r.stderr, /\* \[1\]/);
  });

  test('2024 ordering: picks the short default for ISRG Root X1', async () => {
    const r = await certplane(['chain', 'select', '--prefer', 'ISRG Root X1', '--trust', files.both!, files.short!, files.long!]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), files.short);
  });

  test('refuses with exit 1 a preference whose root is not in the trust store, printing nothing selected', async () => {
    const r = await certplane(['chain', 'select', '--prefer', 'DST Root CA X3', '--trust', files.x1!, '--json', files.long!, files.short!]);
    assert.equal(r.code, 1);
    const out = JSON.parse(r.stdout);
    assert.equal(out.selected, null);
    assert.equal(out.chains.length, 2);
    assert.equal(out.chains[0].topIssuer, 'DST Root CA X3');
    assert.equal(out.chains[0].anchor, 'ISRG Root X1');
    assert.ok(out.chains[0].errors.some((e: { code: string }) => e.code === ErrorCode.SELECT_ROOT_NOT_IN_TRUST_STORE));
  });

  test('falls through an ordered list of preferences to the first satisfiable one', async () => {
    const r = await certplane(['chain', 'select', '--prefer', 'Root YR', '--prefer', 'DST Root CA X3', '--prefer', 'ISRG Root X1', '--trust', files.x1!, '--json', files.long!, files.short!]);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.equal(out.selected, 1);
    assert.equal(out.preference, 'ISRG Root X1');
    assert.deepEqual(out.chains[1].errors, []);
  });

  test('bad input and usage exit 2 with a code', async () => {
    const garbage = await certplane(['chain', 'select', '--prefer', 'ISRG Root X1', '--trust', files.x1!, files.garbage!]);
    assert.equal(garbage.code, 2);
    assert.match(garbage.stderr, /CHAIN_GARBAGE/);
    const noPrefer = await certplane(['chain', 'select', files.long!]);
    assert.equal(noPrefer.code, 2);
    assert.match(noPrefer.stderr, /CLI_USAGE/);
    const missing = await certplane(['chain', 'verify', dir.path('absent.pem')]);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /ENOENT/);
    const badTime = await certplane(['chain', 'verify', files.short!, '--at', 'yesterday']);
    assert.equal(badTime.code, 2);
    const unknownFlag = await certplane(['chain', 'verify', files.short!, '--frobnicate']);
    assert.equal(unknownFlag.code, 2);
  });

  test('verify: exit 0 for a good chain with hostname and CSR key, 1 with the reason otherwise', async () => {
    const good = await certplane(['chain', 'verify', files.short!, '--trust', files.x1!, '--hostname', 'db1.example.com', '--key', files.csr!]);
    assert.equal(good.code, 0, good.stdout + good.stderr);
    assert.match(good.stdout, /VERIFIED/);
    const wrongKey = await certplane(['chain', 'verify', files.short!, '--trust', files.x1!, '--key', files.otherCsr!, '--json']);
    assert.equal(wrongKey.code, 1);
    assert.deepEqual(JSON.parse(wrongKey.stdout).errors.map((e: { code: string }) => e.code), [ErrorCode.CHAIN_KEY_MISMATCH]);
  });

  test('verify --at: the same chain fails at a time after it expires', async () => {
    const r = await certplane(['chain', 'verify', files.short!, '--trust', files.x1!, '--at', new Date(Date.now() + 400 * 86_400_000).toISOString(), '--json']);
    assert.equal(r.code, 1);
    assert.ok(JSON.parse(r.stdout).errors.some((e: { code: string }) => e.code === ErrorCode.CHAIN_EXPIRED));
  });

  test('a private key handed in as --key is refused', async () => {
    const keyFile = await dir.write('private.pem', le.leaf.key.privateKeyPem);
    const r = await certplane(['chain', 'verify', files.short!, '--trust', files.x1!, '--key', keyFile]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /KEY_INVALID/);
  });
});
