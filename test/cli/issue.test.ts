/**
 * `certplane issue` as a real process against a real Pebble, judged by OpenSSL: the
 * Done-when of the issuance core.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, readdir } from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { parseCertificateBundle } from '../../src/chain/index.js';
import { createCsr, generateKeyPair } from '../../src/pki/factory.js';
import { startPebble, type LocalPebble } from '../../src/devenv/pebble.js';
import { certplane, scratch } from '../support/cli.js';

const run = promisify(execFile);

describe('certplane issue against Pebble', async () => {
  let pebble: LocalPebble;
  let rootPems: string[];
  const dir = await scratch();
  let env: Record<string, string>;

  before(async () => {
    pebble = await startPebble({ alternateRoots: 2 });
    rootPems = await pebble.roots();
    env = {
      CERTPLANE_ACME_DIRECTORY: pebble.directoryUrl,
      CERTPLANE_ACME_CA_CERTS: pebble.acmeServerCaPath,
      CERTPLANE_DNS_PROVIDER: 'challtestsrv',
      CERTPLANE_CHALLTESTSRV_URL: pebble.challtestsrvUrl,
      CERTPLANE_SECRETS: `file:${dir.path('secrets')}`,
      CERTPLANE_LOG_LEVEL: 'warn',
    };
  });
  after(async () => {
    await pebble?.stop();
    await dir.remove();
  });

  test('the chain for an alternate preferred root passes openssl verify against that root alone', async () => {
    const preferred = parseCertificateBundle(rootPems[2]!)[0]!;
    const rootFile = await dir.write('preferred-root.pem', rootPems[2]!);
    const csrFile = await dir.write('req.pem', await createCsr(await generateKeyPair(), ['ok.example.test']));
    const out = dir.path('fullchain.pem');
    const r = await certplane(['issue', '--csr', csrFile, '--out', out, '--report', dir.path('report.json')], {
      ...env,
      CERTPLANE_PREFERRED_CHAINS: JSON.stringify(['No Such Root', preferred.subjectCN]),
      CERTPLANE_TRUST_STORE: rootFile,
    });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /VERIFIED/);
    const chain = parseCertificateBundle(await readFile(out, 'utf8'));
    assert.equal(chain.length, 2);
    const leafFile = await dir.write('leaf.pem', chain[0]!.pem);
    const intermediatesFile = await dir.write('intermediates.pem', chain.slice(1).map((c) => c.pem).join(''));
    const { stdout } = await run('openssl', ['verify', '-CAfile', rootFile, '-untrusted', intermediatesFile, leafFile]);
    assert.match(stdout, /: OK/);
    const report = JSON.parse(await readFile(dir.path('report.json'), 'utf8'));
    assert.equal(report.report.anchor.subjectCN, preferred.subjectCN);
    await assert.rejects(run('openssl', ['verify', '-CAfile', await dir.write('other-root.pem', rootPems[0]!), '-untrusted', intermediatesFile, leafFile]));
  });

  test('an unsatisfiable preference exits non-zero and writes no output file', async () => {
    const csrFile = await dir.write('req2.pem', await createCsr(await generateKeyPair(), ['refused.example.test']));
    const out = dir.path('refused-fullchain.pem');
    const r = await certplane(['issue', '--csr', csrFile, '--out', out], {
      ...env,
      CERTPLANE_PREFERRED_CHAINS: 'ISRG Root X1',
      CERTPLANE_TRUST_STORE: await dir.write('all-roots.pem', rootPems.join('')),
    });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /CHAIN_NO_PREFERRED_CHAIN/);
    assert.equal(existsSync(out), false);
    assert.deepEqual((await readdir(dir.dir)).filter((f) => f.includes('refused-fullchain')), []);
  });

  test('bad configuration exits 2 naming the variable, before any ACME request', async () => {
    const csrFile = await dir.write('req3.pem', await createCsr(await generateKeyPair(), ['cfg.example.test']));
    const r = await certplane(['issue', '--csr', csrFile, '--out', dir.path('x.pem')], { ...env, CERTPLANE_DNS_PROVIDER: 'bind9' });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /CERTPLANE_DNS_PROVIDER/);
  });

  test('a CSR that is not a CSR exits 2', async () => {
    const notCsr = await dir.write('not-a-csr.pem', rootPems[0]!);
    const r = await certplane(['issue', '--csr', notCsr, '--out', dir.path('y.pem')], { ...env, CERTPLANE_TRUST_STORE: dir.path('preferred-root.pem') });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /CSR_INVALID/);
  });
});
