import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { existsSync, readlinkSync, realpathSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { get } from 'node:https';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { PATCHED_PEBBLE, pebbleBinary, portTaken, startPebble, type LocalPebble } from '../../src/devenv/pebble.js';
import { generateKeyPair, issueCertificate } from '../../src/pki/factory.js';
import { CertplaneError, hasCode } from '../../src/errors.js';
import { ErrorCode } from '../../src/error-catalogue.js';

let pebble: LocalPebble;

before(async () => {
  pebble = await startPebble({ alternateRoots: 2 });
});

after(async () => {
  await pebble.stop();
});

function getJson(url: string, caPem: string): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const request = get(url, { ca: caPem, timeout: 5_000 }, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (body += chunk));
      response.on('end', () => {
        try {
          assert.equal(response.statusCode, 200, `GET ${url}`);
          resolve(JSON.parse(body) as Record<string, unknown>);
        } catch (error) {
          reject(error);
        }
      });
    });
    request.on('timeout', () => request.destroy(new Error(`GET ${url} timed out`)));
    request.on('error', reject);
  });
}

/** PIDs of live processes whose command line mentions `marker`; how the test sees what Pebble left running. */
async function pidsMentioning(marker: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const commandLine = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    if (commandLine.split('\0').some((argument) => argument.includes(marker))) pids.push(Number(entry));
  }
  return pids;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test('the directory answers over HTTPS trusting only the generated listener CA', async () => {
  const directory = await getJson(pebble.directoryUrl, pebble.acmeServerCaPem);
  for (const resource of ['newOrder', 'newAccount', 'newNonce']) {
    assert.equal(typeof directory[resource], 'string', `directory has ${resource}`);
  }
  assert.match(pebble.directoryUrl, /^https:\/\/127\.0\.0\.1:\d+\/dir$/);
  assert.equal((await readFile(pebble.acmeServerCaPath, 'utf8')).trim(), pebble.acmeServerCaPem.trim());

  const unrelatedCa = await issueCertificate({ subject: 'CN=unrelated CA', key: await generateKeyPair(), ca: true });
  await assert.rejects(getJson(pebble.directoryUrl, unrelatedCa.pem), /certificate/i, 'trusting another CA must fail, or trust was never tested');
});

test('roots() returns one distinct self-signed root per chain', async () => {
  const roots = (await pebble.roots()).map((pem) => new X509Certificate(pem));
  assert.equal(roots.length, 3);
  assert.equal(new Set(roots.map((root) => root.fingerprint256)).size, 3);
  for (const root of roots) {
    assert.equal(root.subject, root.issuer);
    assert.match(root.subject, /^CN=Pebble Root CA [0-9a-f]{6}$/);
    assert.ok(root.verify(root.publicKey), `${root.subject} signs itself`);
  }
});

test('intermediates() returns the intermediate of each chain, signed by the matching root only', async () => {
  const roots = (await pebble.roots()).map((pem) => new X509Certificate(pem));
  const intermediates = (await pebble.intermediates()).map((pem) => new X509Certificate(pem));
  assert.equal(intermediates.length, 3);
  intermediates.forEach((intermediate, index) => {
    const root = roots[index];
    const otherRoot = roots[(index + 1) % roots.length];
    assert.ok(root && otherRoot);
    assert.equal(intermediate.issuer, root.subject);
    assert.ok(intermediate.verify(root.publicKey), `intermediate ${index} is signed by root ${index}`);
    assert.ok(!intermediate.verify(otherRoot.publicKey), `intermediate ${index} is not signed by another root`);
  });
});

test('stop() kills pebble and challtestsrv and removes the directory it created', async () => {
  const own = await startPebble({ alternateRoots: 0 });
  const workDir = dirname(own.acmeServerCaPath);
  const challtestsrvAddress = new URL(own.challtestsrvUrl).host;
  const pids = [...(await pidsMentioning(workDir)), ...(await pidsMentioning(challtestsrvAddress))];
  try {
    assert.equal(pids.length, 2, 'one pebble and one pebble-challtestsrv were running');
    assert.ok(pids.every(isAlive));
  } finally {
    await own.stop();
  }
  assert.deepEqual(pids.filter(isAlive), []);
  assert.equal(existsSync(workDir), false);
  await own.stop();
  await assert.rejects(own.roots(), (error) => hasCode(error, ErrorCode.DEVENV_PEBBLE_MANAGEMENT));
});

test('a Pebble that exits while starting gives DEVENV_PEBBLE_START with its output, and leaves nothing running', async () => {
  const workDir = await mkdtemp(join(tmpdir(), 'certplane-pebble-test-'));
  try {
    await assert.rejects(startPebble({ workDir, env: { PEBBLE_CHAIN_LENGTH: '0' } }), (error) => {
      assert.ok(hasCode(error, ErrorCode.DEVENV_PEBBLE_START));
      assert.equal(error.details.process, 'pebble');
      assert.match(error.message, /At least one intermediate must be present/);
      return true;
    });
    assert.deepEqual(await pidsMentioning(workDir), []);
    assert.ok(existsSync(join(workDir, 'pebble-config.json')), 'a caller-given work directory is kept for inspection');
  } finally {
    await rm(workDir, { recursive: true, force: true });
  }
});

test('out-of-range options are refused before anything starts', async () => {
  await assert.rejects(startPebble({ chainLength: 0 }), (error) => hasCode(error, ErrorCode.DEVENV_PEBBLE_OPTIONS));
  await assert.rejects(startPebble({ nonceRejectPercent: 101 }), (error) => hasCode(error, ErrorCode.DEVENV_PEBBLE_OPTIONS));
});

test("the suites' Pebble is infra/pebble/build.sh's build, without the store's deadlock, unless another is named", () => {
  const named = process.env.CERTPLANE_DEVENV_PEBBLE;
  if (!named) assert.ok(existsSync(PATCHED_PEBBLE), `${PATCHED_PEBBLE} is missing: run bash infra/setup.sh (or infra/pebble/build.sh)`);
  const binaries = pebble.pids.map((pid) => readlinkSync(`/proc/${pid}/exe`));
  // A name is looked up on PATH as spawn does, and both sides are compared as real paths.
  const expected = realpathSync(named ? (named.includes('/') ? named : execFileSync('sh', ['-c', 'command -v "$0"', named]).toString().trim()) : PATCHED_PEBBLE);
  assert.ok(binaries.includes(expected), `started: ${binaries.join(', ')}; expected ${expected}`);
  assert.ok(binaries.some((binary) => binary.endsWith('/pebble-challtestsrv')), `challtestsrv is Debian's: ${binaries.join(', ')}`);
  assert.equal(pebbleBinary({ CERTPLANE_DEVENV_PEBBLE: 'pebble' }), 'pebble', "Debian's, by name");
  assert.equal(pebbleBinary({ CERTPLANE_DEVENV_PEBBLE: '' }), PATCHED_PEBBLE);
});

test('a start is tried again only when a program could not bind a port it was given', () => {
  const failed = (output: string[], code: ErrorCode = ErrorCode.DEVENV_PEBBLE_START) => new CertplaneError(code, 'pebble exited (code 1) while starting', { process: 'pebble', exitCode: 1, lastFailure: 'no attempt', output });
  assert.equal(portTaken(failed(['Calling ListenAndServeTLS() for admin interface: listen tcp 127.0.0.1:42003: bind: address already in use'])), true);
  assert.equal(portTaken(failed(['open /nonexistent/listener-cert.pem: no such file or directory'])), false);
  assert.equal(portTaken(failed(['bind: address already in use'], ErrorCode.DEVENV_CHALLTESTSRV)), false);
  assert.equal(portTaken(new Error('bind: address already in use')), false);
});
