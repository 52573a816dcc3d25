/**
 * ACME Renewal Information (RFC 9773): the certID against the RFC's own example and
 * against openssl's reading of certificates Pebble issued, the response parser, the
 * choice of a time inside the window, and the issuer's GET through a proxy that adds
 * renewalInfo to a real Pebble (Pebble 2.4 has none) with its nonce rejection left on.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import * as x509 from '@peculiar/x509';
import { ariCertId, chooseRenewalTime, parseRenewalInfo, DEFAULT_RETRY_MS, MAX_RETRY_MS, MIN_RETRY_MS } from '../../src/acme/ari.js';
import { AcmeIssuer } from '../../src/acme/issuer.js';
import { ChalltestsrvDnsProvider } from '../../src/acme/dns/challtestsrv.js';
import { Dns01Solver } from '../../src/acme/solver.js';
import { parseCertificateBundle } from '../../src/chain/index.js';
import { startPebble, type LocalPebble } from '../../src/devenv/pebble.js';
import { createCsr, generateKeyPair, issueCertificate } from '../../src/pki/factory.js';
import { FileSecretStore } from '../../src/secrets/index.js';
import { createLogger } from '../../src/log/logger.js';
import { startAcmeProxy, type AcmeProxy } from '../support/acme-proxy.js';
import { scratch } from '../support/cli.js';
import { intermediate, leaf, root } from '../support/hierarchies.js';
import { ErrorCode } from '../../src/error-catalogue.js';

const HOUR = 60 * 60 * 1000;

/** RFC 9773's certID computed from openssl's text output, as an operator would by hand. */
function certIdByOpenssl(certificatePem: string): string {
  const text = execFileSync('openssl', ['x509', '-noout', '-ext', 'authorityKeyIdentifier', '-serial'], { input: certificatePem }).toString();
  const keyId = /Authority Key Identifier:\s*\n\s*(?:keyid:)?([0-9A-F:]+)/.exec(text)?.[1]?.replaceAll(':', '');
  let serial = /serial=([0-9A-F]+)/.exec(text)?.[1];
  assert.ok(keyId && serial, `openssl printed neither AKI nor serial:\n${text}`);
  if (serial.length % 2 === 1) serial = `0${serial}`;
  // DER puts a 0x00 before a positive INTEGER whose first byte has the high bit set.
  if (Number.parseInt(serial.slice(0, 2), 16) >= 0x80) serial = `00${serial}`;
  return `${Buffer.from(keyId, 'hex').toString('base64url')}.${Buffer.from(serial, 'hex').toString('base64url')}`;
}

describe('ariCertId', () => {
  test('reproduces the RFC 9773 section 4.1 example, leading 0x00 of the serial included', async () => {
    const key = await generateKeyPair();
    const certificate = await x509.X509CertificateGenerator.create({
      serialNumber: '0087654321',
      subject: 'CN=rfc9773.example',
      issuer: 'CN=Example CA',
      notBefore: new Date(Date.now() - HOUR),
      notAfter: new Date(Date.now() + 90 * 24 * HOUR),
      publicKey: key.keys.publicKey,
      signingKey: key.keys.privateKey,
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
      extensions: [new x509.AuthorityKeyIdentifierExtension('69885B6B87464041E1B37B847BA0AE2CDE01C8D4')],
    });
    const pem = certificate.toString('pem');
    assert.equal(ariCertId(pem), 'aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE');
    assert.equal(certIdByOpenssl(pem), 'aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE');
  });

  test('keeps the serial bytes as encoded and reads the first certificate of a full chain', async () => {
    const ca = await root('ARI Test Root');
    const issuing = await intermediate('ARI Test Intermediate', ca);
    const highBit = await issueCertificate({ subject: 'CN=high.example.test', key: await generateKeyPair(), issuer: issuing.asIssuer, serialNumber: 'ff01' });
    assert.match(ariCertId(highBit.pem), /\.AP8B$/);
    assert.equal(ariCertId(highBit.pem), certIdByOpenssl(highBit.pem));
    const { cert } = await leaf(issuing, ['chain.example.test']);
    assert.equal(ariCertId(`${cert.pem}\n${issuing.pem}\n`), ariCertId(cert.pem));
    assert.equal(ariCertId(cert.pem), certIdByOpenssl(cert.pem));
  });

  test('a certificate without an Authority Key Identifier has no certID', async () => {
    const selfSigned = await issueCertificate({ subject: 'CN=no-aki.example.test', key: await generateKeyPair() });
    assert.throws(() => ariCertId(selfSigned.pem), { code: ErrorCode.ARI_NO_AKI });
  });
});

describe('parseRenewalInfo', () => {
  const now = new Date('2026-05-08T12:00:00Z');
  const body = { suggestedWindow: { start: '2026-05-08T10:00:00Z', end: '2026-05-09T10:00:00+02:00' }, explanationURL: 'https://letsencrypt.org/2026/05/08/incident' };

  test('reads the window, the explanation and Retry-After in seconds', () => {
    const info = parseRenewalInfo(body, '3600', now);
    assert.deepEqual(info, {
      windowStart: new Date('2026-05-08T10:00:00Z'),
      windowEnd: new Date('2026-05-09T08:00:00Z'),
      explanationUrl: 'https://letsencrypt.org/2026/05/08/incident',
      retryAt: new Date(now.getTime() + HOUR),
    });
  });

  test('reads Retry-After as an HTTP date', () => {
    assert.deepEqual(parseRenewalInfo(body, 'Fri, 08 May 2026 14:30:00 GMT', now).retryAt, new Date('2026-05-08T14:30:00Z'));
  });

  test('defaults to six hours without a usable Retry-After, and clamps to a minute and a day', () => {
    const retryIn = (header: string | undefined) => parseRenewalInfo(body, header, now).retryAt.getTime() - now.getTime();
    assert.equal(retryIn(undefined), DEFAULT_RETRY_MS);
    assert.equal(retryIn(''), DEFAULT_RETRY_MS);
    assert.equal(retryIn('soon'), DEFAULT_RETRY_MS);
    assert.equal(retryIn('-5'), DEFAULT_RETRY_MS);
    assert.equal(retryIn('5'), MIN_RETRY_MS);
    assert.equal(retryIn('Thu, 07 May 2026 00:00:00 GMT'), MIN_RETRY_MS);
    assert.equal(retryIn(String(7 * 24 * 3600)), MAX_RETRY_MS);
    assert.equal(DEFAULT_RETRY_MS, 6 * HOUR);
  });

  test('has no explanationUrl when the CA gives none, and keeps the window when the link is malformed', () => {
    assert.equal('explanationUrl' in parseRenewalInfo({ suggestedWindow: body.suggestedWindow }, undefined, now), false);
    const withBadLink = parseRenewalInfo({ ...body, explanationURL: 'see our blog' }, undefined, now);
    assert.equal('explanationUrl' in withBadLink, false);
    assert.deepEqual(withBadLink.windowEnd, new Date('2026-05-09T08:00:00Z'));
  });

  const invalid: [string, unknown][] = [
    ['null', null],
    ['a string', 'window'],
    ['no window', {}],
    ['no end', { suggestedWindow: { start: '2026-05-08T10:00:00Z' } }],
    ['a date without time', { suggestedWindow: { start: '2026-05-08', end: '2026-05-09T10:00:00Z' } }],
    ['epoch numbers', { suggestedWindow: { start: 1778234400, end: 1778320800 } }],
    ['an end equal to the start', { suggestedWindow: { start: '2026-05-08T10:00:00Z', end: '2026-05-08T10:00:00Z' } }],
    ['an end before the start', { suggestedWindow: { start: '2026-05-09T10:00:00Z', end: '2026-05-08T10:00:00Z' } }],
  ];
  for (const [name, json] of invalid) {
    test(`refuses ${name} with ARI_INVALID`, () => {
      assert.throws(() => parseRenewalInfo(json, '60', now), { code: ErrorCode.ARI_INVALID });
    });
  }
});

describe('chooseRenewalTime', () => {
  const now = new Date('2026-05-08T12:00:00Z');
  const at = (offsetMs: number) => new Date(now.getTime() + offsetMs);

  test('draws uniformly inside a future window', () => {
    const window = { windowStart: at(HOUR), windowEnd: at(3 * HOUR) };
    assert.deepEqual(chooseRenewalTime(window, now, () => 0), at(HOUR));
    assert.deepEqual(chooseRenewalTime(window, now, () => 0.5), at(2 * HOUR));
    assert.ok(chooseRenewalTime(window, now, () => 0.999999).getTime() < window.windowEnd.getTime());
  });

  test('a window that has ended means now: the CA asks for immediate replacement', () => {
    assert.deepEqual(chooseRenewalTime({ windowStart: at(-3 * HOUR), windowEnd: at(-HOUR) }, now, () => 0.7), now);
    assert.deepEqual(chooseRenewalTime({ windowStart: at(-3 * HOUR), windowEnd: now }, now, () => 0.7), now);
  });

  test('a window that has begun is drawn between now and its end', () => {
    const window = { windowStart: at(-HOUR), windowEnd: at(HOUR) };
    assert.deepEqual(chooseRenewalTime(window, now, () => 0), now);
    assert.deepEqual(chooseRenewalTime(window, now, () => 0.5), at(HOUR / 2));
  });

  test('a thousand real draws stay inside what is left of the window', () => {
    for (const window of [
      { windowStart: at(HOUR), windowEnd: at(2 * HOUR) },
      { windowStart: at(-HOUR), windowEnd: at(HOUR) },
    ]) {
      const from = Math.max(window.windowStart.getTime(), now.getTime());
      for (let draw = 0; draw < 1000; draw += 1) {
        const chosen = chooseRenewalTime(window, now).getTime();
        assert.ok(chosen >= from && chosen < window.windowEnd.getTime(), `draw ${draw}: ${new Date(chosen).toISOString()} is outside the window`);
      }
    }
  });
});

describe('renewal information from a CA: Pebble behind a proxy that adds renewalInfo', async () => {
  let pebble: LocalPebble;
  let proxy: AcmeProxy;
  let viaProxy: AcmeIssuer;
  let direct: AcmeIssuer;
  let leafPem: string;
  const dir = await scratch();

  before(async () => {
    pebble = await startPebble({ alternateRoots: 1 });
    proxy = await startAcmeProxy({ upstreamDirectoryUrl: pebble.directoryUrl, upstreamCaPem: pebble.acmeServerCaPem, profiles: { classic: '90-day certificates' } });
    const roots = (await pebble.roots()).flatMap((pem) => parseCertificateBundle(pem));
    const issuerFor = async (directoryUrl: string, name: string) =>
      new AcmeIssuer({
        directoryUrl,
        // acme-client's trust is module-wide: every issuer in this process trusts both listeners. The
        // two PEMs are glued without a newline between them, as `cat` does: the issuer must split them.
        serverCaPem: pebble.acmeServerCaPem + proxy.caPem,
        secrets: await FileSecretStore.open(dir.path(name)),
        solvers: [new Dns01Solver(new ChalltestsrvDnsProvider(pebble.challtestsrvUrl))],
        chainPolicy: { preferences: [roots[0]!.subjectCN], fallback: 'none', trustAnchors: roots, distrustedSpkiSha256: new Set() },
        logger: createLogger('silent'),
        pollMinMs: 100,
        pollMaxMs: 1000,
      });
    viaProxy = await issuerFor(proxy.directoryUrl, 'via-proxy');
    direct = await issuerFor(pebble.directoryUrl, 'direct');
    leafPem = (await viaProxy.issue(await createCsr(await generateKeyPair(), ['ari.example.test']))).fullchainPem;
  });
  after(async () => {
    await proxy?.close();
    await pebble?.stop();
    await dir.remove();
  });

  test('the certID of a certificate Pebble issued is the one openssl reads', () => {
    assert.equal(ariCertId(leafPem), certIdByOpenssl(leafPem));
  });

  test('directoryInfo shows the renewalInfo URL and the profiles the directory advertises', async () => {
    assert.deepEqual(await viaProxy.directoryInfo(), { renewalInfoUrl: proxy.renewalInfoUrl, profiles: { classic: '90-day certificates' } });
  });

  test('renewalInfo GETs {renewalInfo}/{certID} and returns the window the CA set', async () => {
    const certId = ariCertId(leafPem);
    const window = { start: new Date(Date.now() - HOUR), end: new Date(Date.now() + 24 * HOUR), retryAfter: '120', explanationUrl: 'https://example.test/incident' };
    proxy.setRenewalWindow(certId, window);
    const before = Date.now();
    const info = await viaProxy.renewalInfo(leafPem);
    assert.ok(info);
    assert.deepEqual([info.windowStart, info.windowEnd, info.explanationUrl], [window.start, window.end, window.explanationUrl]);
    assert.ok(info.retryAt.getTime() >= before + 120_000 && info.retryAt.getTime() <= Date.now() + 120_000, `retryAt ${info.retryAt.toISOString()}`);
    assert.equal(proxy.renewalInfoRequests.at(-1), certId);
  });

  test('a window that ends before it starts is ARI_INVALID', async () => {
    const certId = ariCertId(leafPem);
    proxy.setRenewalWindow(certId, { start: new Date(Date.now() + HOUR), end: new Date(Date.now() - HOUR) });
    await assert.rejects(viaProxy.renewalInfo(leafPem), { code: ErrorCode.ARI_INVALID });
  });

  test('a certificate the CA has no renewal information for is ARI_UNAVAILABLE', async () => {
    const ca = await root('Not Pebble');
    const { cert } = await leaf(ca, ['elsewhere.example.test']);
    await assert.rejects(viaProxy.renewalInfo(cert.pem), (error: unknown) => {
      assert.equal((error as { code?: string }).code, ErrorCode.ARI_UNAVAILABLE);
      assert.equal((error as { details: { status?: number } }).details.status, 404);
      return true;
    });
    assert.equal(proxy.renewalInfoRequests.at(-1), ariCertId(cert.pem));
  });

  test('against Pebble itself there is no renewalInfo: undefined, and no request is made', async () => {
    const asked = proxy.renewalInfoRequests.length;
    assert.deepEqual(await direct.directoryInfo(), { profiles: {} });
    assert.equal(await direct.renewalInfo(leafPem), undefined);
    assert.equal(proxy.renewalInfoRequests.length, asked);
  });
});
