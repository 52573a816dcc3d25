import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { promises as dns } from 'node:dns';
import { freeLoopbackPorts } from '../../../src/devenv/ports.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { ChalltestsrvDnsProvider } from '../../../src/acme/dns/challtestsrv.js';
import { hasCode } from '../../../src/errors.js';
import { ErrorCode } from '../../../src/error-catalogue.js';

let challtestsrv: ChildProcess;
let managementUrl: string;
let resolver: dns.Resolver;

async function txtAt(name: string): Promise<string[]> {
  try {
    return (await resolver.resolveTxt(name)).map((chunks) => chunks.join('')).sort();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENODATA' || (error as NodeJS.ErrnoException).code === 'ENOTFOUND') return [];
    throw error;
  }
}

before(async () => {
  const [managementPort, dnsPort] = await freeLoopbackPorts(2);
  managementUrl = `http://127.0.0.1:${managementPort}`;
  challtestsrv = spawn(
    'pebble-challtestsrv',
    ['-management', `127.0.0.1:${managementPort}`, '-dns01', `127.0.0.1:${dnsPort}`, '-http01', '', '-https01', '', '-tlsalpn01', ''],
    { stdio: 'ignore' },
  );
  resolver = new dns.Resolver({ timeout: 2_000, tries: 2 });
  resolver.setServers([`127.0.0.1:${dnsPort}`]);
  for (let attempt = 0; ; attempt++) {
    assert.equal(challtestsrv.exitCode, null, 'pebble-challtestsrv exited during start-up');
    const answered = await fetch(managementUrl, { signal: AbortSignal.timeout(1_000) }).then(
      async (response) => (await response.body?.cancel(), true),
      () => false,
    );
    if (answered) break;
    assert.ok(attempt < 100, 'pebble-challtestsrv did not answer within 5 s');
    await sleep(50);
  }
});

after(async () => {
  if (challtestsrv.exitCode === null && challtestsrv.signalCode === null) {
    challtestsrv.kill('SIGKILL');
    await once(challtestsrv, 'exit');
  }
});

test('a presented value is served by the DNS port, and cleanUp withdraws it', async () => {
  const provider = new ChalltestsrvDnsProvider(managementUrl);
  await provider.present('_acme-challenge.served.example.test', 'token-one');
  assert.deepEqual(await txtAt('_acme-challenge.served.example.test'), ['token-one']);

  await provider.cleanUp('_acme-challenge.served.example.test', 'token-one');
  assert.deepEqual(await txtAt('_acme-challenge.served.example.test'), []);
});

test('two values at one name coexist, and cleanUp of one leaves the other served', async () => {
  const provider = new ChalltestsrvDnsProvider(`${managementUrl}/`);
  await Promise.all([
    provider.present('_acme-challenge.pair.example.test', 'wildcard-token'),
    provider.present('_acme-challenge.pair.example.test', 'base-token'),
  ]);
  assert.deepEqual(await txtAt('_acme-challenge.pair.example.test'), ['base-token', 'wildcard-token']);

  await provider.cleanUp('_acme-challenge.pair.example.test', 'wildcard-token');
  assert.deepEqual(await txtAt('_acme-challenge.pair.example.test'), ['base-token']);
  await provider.cleanUp('_acme-challenge.pair.example.test', 'base-token');
  assert.deepEqual(await txtAt('_acme-challenge.pair.example.test'), []);
});

test('presenting a value twice serves it once, and cleanUp of a value already gone succeeds', async () => {
  const provider = new ChalltestsrvDnsProvider(managementUrl);
  await provider.present('_acme-challenge.twice.example.test', 'token-one');
  await provider.present('_acme-challenge.twice.example.test', 'token-one');
  assert.deepEqual(await txtAt('_acme-challenge.twice.example.test'), ['token-one']);

  await provider.cleanUp('_acme-challenge.twice.example.test', 'token-one');
  await provider.cleanUp('_acme-challenge.twice.example.test', 'token-one');
  assert.deepEqual(await txtAt('_acme-challenge.twice.example.test'), []);
});

test('a value challtestsrv rejects gives DNS_CHALLTESTSRV with its status', async () => {
  const provider = new ChalltestsrvDnsProvider(managementUrl);
  await assert.rejects(provider.present('_acme-challenge.empty.example.test', ''), (error) => {
    assert.ok(hasCode(error, ErrorCode.DNS_CHALLTESTSRV));
    assert.equal(error.details.status, 400);
    assert.equal(error.details.url, `${managementUrl}/set-txt`);
    return true;
  });
});

test('a management URL that refuses connections gives DNS_CHALLTESTSRV naming the URL', async () => {
  const [closedPort] = await freeLoopbackPorts(1);
  const provider = new ChalltestsrvDnsProvider(`http://127.0.0.1:${closedPort}`);
  await assert.rejects(provider.present('_acme-challenge.refused.example.test', 'token-one'), (error) => {
    assert.ok(hasCode(error, ErrorCode.DNS_CHALLTESTSRV));
    assert.equal(error.details.url, `http://127.0.0.1:${closedPort}/set-txt`);
    assert.match(error.message, /ECONNREFUSED/);
    return true;
  });
});
