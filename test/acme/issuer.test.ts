/**
 * ACME issuance against a real Pebble: alternate roots on, Pebble's default nonce
 * rejection left on, the preferred root one of the alternates and the trust store
 * holding only that root.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import acme from 'acme-client';
import { ACME_STAGES, AcmeIssuer, type ChainPolicy } from '../../src/acme/issuer.js';
import { accountSecretName } from '../../src/acme/account.js';
import { ChalltestsrvDnsProvider } from '../../src/acme/dns/challtestsrv.js';
import { Dns01Solver, type ChallengeSolver } from '../../src/acme/solver.js';
import { parseCertificateBundle, spkiSha256OfKeyFile, type Certificate } from '../../src/chain/index.js';
import { createCsr, generateKeyPair } from '../../src/pki/factory.js';
import { startPebble, type LocalPebble } from '../../src/devenv/pebble.js';
import { CertplaneError } from '../../src/errors.js';
import { FileSecretStore } from '../../src/secrets/index.js';
import { createLogger } from '../../src/log/logger.js';
import { scratch } from '../support/cli.js';
import { root } from '../support/hierarchies.js';
import { ErrorCode } from '../../src/error-catalogue.js';

describe('AcmeIssuer against Pebble', async () => {
  let pebble: LocalPebble;
  let roots: Certificate[];
  const dir = await scratch();
  const logger = createLogger('silent');

  before(async () => {
    pebble = await startPebble({ alternateRoots: 2 });
    roots = (await pebble.roots()).flatMap((pem) => parseCertificateBundle(pem));
  });
  after(async () => {
    await pebble?.stop();
    await dir.remove();
  });

  const issuerWith = async (policy: Partial<ChainPolicy>, secretsDir = dir.path('secrets'), directoryUrl = pebble.directoryUrl) =>
    new AcmeIssuer({
      directoryUrl,
      serverCaPem: pebble.acmeServerCaPem,
      secrets: await FileSecretStore.open(secretsDir),
      solvers: [new Dns01Solver(new ChalltestsrvDnsProvider(pebble.challtestsrvUrl))],
      chainPolicy: { preferences: [], fallback: 'none', trustAnchors: [], distrustedSpkiSha256: new Set(), ...policy },
      logger,
      pollMinMs: 100,
      pollMaxMs: 1000,
    });

  test('Pebble offers three chains, one per root, sharing one intermediate name', async () => {
    assert.equal(roots.length, 3);
    const issuer = await issuerWith({ preferences: [roots[2]!.subjectCN], trustAnchors: [roots[2]!] });
    const result = await issuer.issue(await createCsr(await generateKeyPair(), ['chains.example.test']));
    assert.equal(result.offeredChainsPem.length, 3);
    const topIssuers = result.offeredChainsPem.map((pem) => parseCertificateBundle(pem).at(-1)!.issuerCN);
    assert.deepEqual([...topIssuers].sort(), roots.map((r) => r.subjectCN).sort());
  });

  test('an order reports each of its stages once, in order, as it ends', async () => {
    const issuer = await issuerWith({ preferences: [roots[2]!.subjectCN], trustAnchors: [roots[2]!] });
    const stages: [string, number][] = [];
    await issuer.issue(await createCsr(await generateKeyPair(), ['stages.example.test']), { onStage: (stage, seconds) => stages.push([stage, seconds]) });
    assert.deepEqual(stages.map(([stage]) => stage), [...ACME_STAGES]);
    assert.ok(stages.every(([, seconds]) => seconds >= 0 && Number.isFinite(seconds)));
  });

  test('a new order\'s authorizations are read while its URL is recorded, and nothing is presented before the record is written', async () => {
    const issuer = await issuerWith({ preferences: [roots[2]!.subjectCN], trustAnchors: [roots[2]!] });
    const events: string[] = [];
    let sawAuthorizationRead: () => void = () => undefined;
    const authorizationRead = new Promise<void>((resolve) => (sawAuthorizationRead = resolve));
    const interceptor = acme.axios.interceptors.request.use((config) => {
      if (/\/authZ\//i.test(config.url ?? '')) {
        events.push('authorization read');
        sawAuthorizationRead();
      }
      return config;
    });
    const inner = new Dns01Solver(new ChalltestsrvDnsProvider(pebble.challtestsrvUrl));
    const solver: ChallengeSolver = {
      type: 'dns-01',
      present: async (context) => (events.push('present'), inner.present(context)),
      cleanUp: (context) => inner.cleanUp(context),
    };
    try {
      await issuer.issue(await createCsr(await generateKeyPair(), ['overlap.example.test']), {
        solvers: [solver],
        // Held until an authorization is read: an issuer that read them only after the record would never get there.
        onOrderCreated: async () => {
          events.push('record started');
          const waited = await Promise.race([authorizationRead.then(() => true), new Promise<false>((resolve) => setTimeout(() => resolve(false), 10_000).unref())]);
          assert.ok(waited, 'no authorization was read while the order URL was being recorded');
          events.push('record written');
        },
      });
    } finally {
      acme.axios.interceptors.request.eject(interceptor);
    }
    assert.deepEqual(events.slice(0, 2), ['record started', 'authorization read']);
    assert.ok(events.indexOf('present') > events.indexOf('record written'), `presented before the record was written: ${events.join(', ')}`);
  });

  /** A dns-01 solver over pebble-challtestsrv that records what it presented and cleaned up, and can fail or stall after publishing. */
  const recordingSolver = (after: 'fail' | 'stall') => {
    const inner = new Dns01Solver(new ChalltestsrvDnsProvider(pebble.challtestsrvUrl));
    const log: string[] = [];
    const solver: ChallengeSolver = {
      type: 'dns-01',
      async present(context, signal) {
        await inner.present(context);
        log.push(`present ${context.domain}`);
        if (after === 'fail') throw new Error('the DNS service never reported the change in sync');
        await new Promise((_, reject) => signal?.addEventListener('abort', () => reject(signal.reason), { once: true }));
      },
      async cleanUp(context) {
        await inner.cleanUp(context);
        log.push(`cleanUp ${context.domain}`);
      },
    };
    return { solver, log };
  };

  test('a challenge whose present fails after publishing is cleaned up, not left behind', async () => {
    const issuer = await issuerWith({ preferences: [roots[2]!.subjectCN], trustAnchors: [roots[2]!] });
    const { solver, log } = recordingSolver('fail');
    await assert.rejects(issuer.issue(await createCsr(await generateKeyPair(), ['present-fails.example.test']), { solvers: [solver] }));
    assert.deepEqual(log, ['present present-fails.example.test', 'cleanUp present-fails.example.test']);
  });

  test('an order stopped for another process to resume leaves its challenges for that process; any other abort cleans them up', async () => {
    const issuer = await issuerWith({ preferences: [roots[2]!.subjectCN], trustAnchors: [roots[2]!] });
    for (const [reason, expected] of [
      [new CertplaneError(ErrorCode.ISSUANCE_STOPPED, 'shutting down', { cause: 'shutdown' }), ['present stopped.example.test']],
      [new Error('cancelled by the operator'), ['present stopped.example.test', 'cleanUp stopped.example.test']],
    ] as const) {
      const { solver, log } = recordingSolver('stall');
      const stop = new AbortController();
      const issuing = issuer.issue(await createCsr(await generateKeyPair(), ['stopped.example.test']), { solvers: [solver], signal: stop.signal });
      while (log.length === 0) await new Promise((resolve) => setTimeout(resolve, 20));
      stop.abort(reason);
      await assert.rejects(issuing);
      assert.deepEqual(log, expected, String(reason));
    }
  });

  test('the preferred alternate root is selected and the chain verifies to it, for the CSR\'s key and names', async () => {
    const preferred = roots[1]!;
    const key = await generateKeyPair();
    const csr = await createCsr(key, ['db1.example.test', 'db1-replica.example.test']);
    const issuer = await issuerWith({ preferences: [preferred.subjectCN], trustAnchors: [preferred] });
    const result = await issuer.issue(csr);
    assert.equal(result.report.ok, true);
    assert.equal(result.report.anchor?.fingerprintSha256, preferred.fingerprintSha256);
    assert.equal(result.selection.preference, preferred.subjectCN);
    assert.notEqual(result.selection.selected, null);
    const served = parseCertificateBundle(result.fullchainPem);
    assert.equal(served[0]!.spkiSha256, await spkiSha256OfKeyFile(key.publicKeyPem));
    assert.deepEqual([...served[0]!.dnsNames].sort(), ['db1-replica.example.test', 'db1.example.test']);
    assert.equal(served.at(-1)!.issuerCN, preferred.subjectCN);
  });

  test('an unsatisfiable preference fails closed and explains every offered chain', async () => {
    const issuer = await issuerWith({ preferences: ['ISRG Root X1'], trustAnchors: roots });
    await assert.rejects(issuer.issue(await createCsr(await generateKeyPair(), ['nope.example.test'])), (e: unknown) => {
      assert.ok(e instanceof CertplaneError);
      assert.equal(e.code, ErrorCode.CHAIN_NO_PREFERRED_CHAIN);
      assert.equal((e.details.chains as unknown[]).length, 3);
      return true;
    });
  });

  test('a preferred root that is trusted under that name but is another key is refused', async () => {
    const impostor = parseCertificateBundle((await root(roots[1]!.subjectCN, 'Impostor')).pem)[0]!;
    const issuer = await issuerWith({ preferences: [roots[1]!.subjectCN], trustAnchors: [impostor] });
    await assert.rejects(issuer.issue(await createCsr(await generateKeyPair(), ['impostor.example.test'])), { code: ErrorCode.CHAIN_NO_PREFERRED_CHAIN });
  });

  test('the account key is created once and reused, with its URL, by a later process', async () => {
    const secretsDir = dir.path('account-reuse');
    const first = await issuerWith({ preferences: [roots[0]!.subjectCN], trustAnchors: [roots[0]!] }, secretsDir);
    await first.issue(await createCsr(await generateKeyPair(), ['reuse1.example.test']));
    const store = await FileSecretStore.open(secretsDir);
    const stored = JSON.parse((await store.get(accountSecretName(pebble.directoryUrl)))!);
    assert.match(stored.accountUrl, /^https:\/\/127\.0\.0\.1:\d+\/my-account\//);
    const second = await issuerWith({ preferences: [roots[0]!.subjectCN], trustAnchors: [roots[0]!] }, secretsDir);
    await second.issue(await createCsr(await generateKeyPair(), ['reuse2.example.test']));
    assert.deepEqual(JSON.parse((await store.get(accountSecretName(pebble.directoryUrl)))!), stored);
  });

  test('a 503 with Retry-After from the CA is waited out and retried', async () => {
    const arrivals: number[] = [];
    const server = createServer((req, res) => {
      arrivals.push(Date.now());
      if (arrivals.length === 1) {
        res.writeHead(503, { 'retry-after': '1', 'content-type': 'application/problem+json' });
        res.end(JSON.stringify({ type: 'urn:ietf:params:acme:error:serverInternal', detail: 'try later' }));
        return;
      }
      res.writeHead(307, { location: pebble.directoryUrl });
      res.end();
    });
    server.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    try {
      const flakyDirectory = `http://127.0.0.1:${(server.address() as AddressInfo).port}/dir`;
      const issuer = await issuerWith({ preferences: [roots[0]!.subjectCN], trustAnchors: [roots[0]!] }, dir.path('flaky'), flakyDirectory);
      const result = await issuer.issue(await createCsr(await generateKeyPair(), ['flaky.example.test']));
      assert.equal(result.report.ok, true);
      assert.equal(arrivals.length, 2);
      assert.ok(arrivals[1]! - arrivals[0]! >= 900, `retried after ${arrivals[1]! - arrivals[0]!} ms, Retry-After asked for 1 s`);
    } finally {
      server.close();
    }
  });
});

describe('AcmeIssuer under heavy nonce rejection', async () => {
  test('issues although Pebble rejects half of all valid nonces', async () => {
    const pebble = await startPebble({ alternateRoots: 1, nonceRejectPercent: 50 });
    const dir = await scratch();
    try {
      const roots = (await pebble.roots()).flatMap((pem) => parseCertificateBundle(pem));
      const issuer = new AcmeIssuer({
        directoryUrl: pebble.directoryUrl,
        serverCaPem: pebble.acmeServerCaPem,
        secrets: await FileSecretStore.open(dir.path('secrets')),
        solvers: [new Dns01Solver(new ChalltestsrvDnsProvider(pebble.challtestsrvUrl))],
        chainPolicy: { preferences: [roots[1]!.subjectCN], fallback: 'none', trustAnchors: [roots[1]!], distrustedSpkiSha256: new Set() },
        logger: createLogger('silent'),
        pollMinMs: 100,
        pollMaxMs: 1000,
      });
      for (const name of ['n1.example.test', 'n2.example.test', 'n3.example.test']) {
        const result = await issuer.issue(await createCsr(await generateKeyPair(), [name]));
        assert.equal(result.report.anchor?.subjectCN, roots[1]!.subjectCN);
      }
    } finally {
      await pebble.stop();
      await dir.remove();
    }
  });
});
