/**
 * ACME profiles and ARI's "replaces" in newOrder, observed on the wire: a proxy in front
 * of a real Pebble (nonce rejection on) advertises meta.profiles and renewalInfo and
 * records the payload acme-client signed. A second proxy passes Pebble's own directory
 * through unchanged, to see what is sent to a CA that advertises neither.
 */
import assert from 'node:assert/strict';
import { request } from 'node:https';
import { after, before, describe, test } from 'node:test';
import { ariCertId } from '../../src/acme/ari.js';
import { AcmeIssuer } from '../../src/acme/issuer.js';
import { ChalltestsrvDnsProvider } from '../../src/acme/dns/challtestsrv.js';
import { Dns01Solver, Http01Solver } from '../../src/acme/solver.js';
import { parseCertificateBundle } from '../../src/chain/index.js';
import { startPebble, type LocalPebble } from '../../src/devenv/pebble.js';
import { createCsr, generateKeyPair } from '../../src/pki/factory.js';
import { FileSecretStore } from '../../src/secrets/index.js';
import { createLogger } from '../../src/log/logger.js';
import { startAcmeProxy, type AcmeProxy } from '../support/acme-proxy.js';
import { scratch } from '../support/cli.js';
import { ErrorCode } from '../../src/error-catalogue.js';

const PROFILES = { classic: '90-day certificates', tlsserver: '45-day certificates', shortlived: '6-day certificates' };

/** The path of the directory's newOrder URL, read as any client would. */
function newOrderPath(directoryUrl: string, caPem: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const outgoing = request(directoryUrl, { ca: caPem, agent: false, timeout: 5000 }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => resolve(new URL((JSON.parse(Buffer.concat(chunks).toString()) as { newOrder: string }).newOrder).pathname));
      response.on('error', reject);
    });
    outgoing.on('timeout', () => outgoing.destroy(new Error('directory request timed out')));
    outgoing.on('error', reject);
    outgoing.end();
  });
}

const csrFor = async (name: string) => createCsr(await generateKeyPair(), [name]);

describe('newOrder with profile and replaces, against Pebble', async () => {
  let pebble: LocalPebble;
  let extended: AcmeProxy;
  let plain: AcmeProxy;
  let viaExtended: AcmeIssuer;
  let viaPlain: AcmeIssuer;
  let direct: AcmeIssuer;
  let newOrder: string;
  const dir = await scratch();

  before(async () => {
    pebble = await startPebble({ alternateRoots: 1 });
    const upstream = { upstreamDirectoryUrl: pebble.directoryUrl, upstreamCaPem: pebble.acmeServerCaPem };
    extended = await startAcmeProxy({ ...upstream, profiles: PROFILES });
    plain = await startAcmeProxy({ ...upstream, renewalInfo: false });
    const roots = (await pebble.roots()).flatMap((pem) => parseCertificateBundle(pem));
    const issuerFor = async (directoryUrl: string, name: string) =>
      new AcmeIssuer({
        directoryUrl,
        // acme-client's trust is module-wide: every issuer in this process trusts all three listeners.
        serverCaPem: [pebble.acmeServerCaPem, extended.caPem, plain.caPem].join('\n'),
        secrets: await FileSecretStore.open(dir.path(name)),
        solvers: [new Dns01Solver(new ChalltestsrvDnsProvider(pebble.challtestsrvUrl))],
        chainPolicy: { preferences: [roots[0]!.subjectCN], fallback: 'none', trustAnchors: roots, distrustedSpkiSha256: new Set() },
        logger: createLogger('silent'),
        pollMinMs: 100,
        pollMaxMs: 1000,
      });
    viaExtended = await issuerFor(extended.directoryUrl, 'extended');
    viaPlain = await issuerFor(plain.directoryUrl, 'plain');
    direct = await issuerFor(pebble.directoryUrl, 'direct');
    newOrder = await newOrderPath(extended.directoryUrl, extended.caPem);
  });
  after(async () => {
    await extended?.close();
    await plain?.close();
    await pebble?.stop();
    await dir.remove();
  });

  test('profile and replaces are sent in newOrder when the directory advertises them', async () => {
    const first = await viaExtended.issue(await csrFor('profile.example.test'));
    const replaces = ariCertId(first.fullchainPem);
    const sentBefore = extended.payloadsTo(newOrder).length;
    const second = await viaExtended.issue(await csrFor('profile.example.test'), { profile: 'tlsserver', replaces });
    assert.equal(second.report.ok, true);
    const sent = extended.payloadsTo(newOrder).slice(sentBefore);
    // acme-client re-signs a newOrder Pebble refused for its nonce: every attempt carries the same payload.
    assert.ok(sent.length >= 1);
    for (const payload of sent) {
      assert.deepEqual(payload, { identifiers: [{ type: 'dns', value: 'profile.example.test' }], profile: 'tlsserver', replaces });
    }
  });

  test('an order without options sends neither field', async () => {
    const sentBefore = extended.payloadsTo(newOrder).length;
    await viaExtended.issue(await csrFor('plain-order.example.test'));
    for (const payload of extended.payloadsTo(newOrder).slice(sentBefore)) {
      assert.deepEqual(payload, { identifiers: [{ type: 'dns', value: 'plain-order.example.test' }] });
    }
  });

  test('a profile the directory does not offer is refused before anything is ordered', async () => {
    const sentBefore = extended.payloadsTo(newOrder).length;
    await assert.rejects(viaExtended.issue(await csrFor('typo.example.test'), { profile: 'tls-server' }), (error: unknown) => {
      const e = error as { code?: string; message: string; details: { offered?: string[] } };
      assert.equal(e.code, ErrorCode.ACME_UNKNOWN_PROFILE);
      assert.deepEqual(e.details.offered, Object.keys(PROFILES));
      assert.match(e.message, /classic, tlsserver, shortlived/);
      return true;
    });
    assert.equal(extended.payloadsTo(newOrder).length, sentBefore);
  });

  test('to a CA without renewalInfo, replaces is not sent and the order still succeeds', async () => {
    const earlier = await viaPlain.issue(await csrFor('no-ari.example.test'));
    const sentBefore = plain.payloadsTo(newOrder).length;
    const result = await viaPlain.issue(await csrFor('no-ari.example.test'), { replaces: ariCertId(earlier.fullchainPem) });
    assert.equal(result.report.ok, true);
    const sent = plain.payloadsTo(newOrder).slice(sentBefore);
    assert.ok(sent.length >= 1);
    for (const payload of sent) assert.deepEqual(payload, { identifiers: [{ type: 'dns', value: 'no-ari.example.test' }] });
    assert.deepEqual(plain.renewalInfoRequests, []);
  });

  test('an IP address under shortlived is ordered as an ip identifier (RFC 8738), validated by http-01 and certified as an IP SAN', async () => {
    // pebble-challtestsrv serves http-01 on the port Pebble's VA connects to, for any address.
    const challtestsrv = (path: string, body: Record<string, string>) => fetch(`${pebble.challtestsrvUrl}${path}`, { method: 'POST', body: JSON.stringify(body) }).then(() => undefined);
    const http01 = new Http01Solver({ serve: (_domain, token, content) => challtestsrv('/add-http01', { token, content }), withdraw: (_domain, token) => challtestsrv('/del-http01', { token }) });
    const sentBefore = extended.payloadsTo(newOrder).length;
    const issued = await viaExtended.issue(await createCsr(await generateKeyPair(), ['127.0.0.1', 'ip-and-name.example.test']), { profile: 'shortlived', solvers: [http01] });
    assert.equal(issued.report.ok, true);
    for (const payload of extended.payloadsTo(newOrder).slice(sentBefore)) {
      assert.deepEqual(payload, { identifiers: [{ type: 'dns', value: 'ip-and-name.example.test' }, { type: 'ip', value: '127.0.0.1' }], profile: 'shortlived' });
    }
    const leaf = parseCertificateBundle(issued.fullchainPem)[0]!;
    assert.deepEqual([leaf.ipAddresses, leaf.dnsNames], [['127.0.0.1'], ['ip-and-name.example.test']]);
  });

  test('against Pebble directly: an order given replaces succeeds, renewalInfo is undefined, any profile is ACME_UNKNOWN_PROFILE', async () => {
    const result = await direct.issue(await csrFor('direct.example.test'), { replaces: 'aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE' });
    assert.equal(result.report.ok, true);
    assert.equal(await direct.renewalInfo(result.fullchainPem), undefined);
    await assert.rejects(direct.issue(await csrFor('direct.example.test'), { profile: 'classic' }), (error: unknown) => {
      const e = error as { code?: string; message: string; details: { offered?: string[] } };
      assert.equal(e.code, ErrorCode.ACME_UNKNOWN_PROFILE);
      assert.deepEqual(e.details.offered, []);
      assert.match(e.message, /offers no profiles/);
      return true;
    });
  });
});
