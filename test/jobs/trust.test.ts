/**
 * A what-if and a reload over a fleet share work between instances (one parse per distinct
 * PEM block, signature verdicts per certificate and signer key), so the fleet's answer is
 * checked against each instance judged alone, with every memo emptied in between, on a
 * fleet whose instances share intermediates and differ in everything that decides a
 * verdict: the chains stored, the chain installed, the profiles used, a leaf's expiry, an
 * impostor intermediate of the same name, a stored chain that does not parse. Correctness
 * only: no timing is asserted here (the figures are in `npm run bench`).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { certificateCacheSize, clearCertificateCache, parseCertificateBundle, type TrustChange } from '../../src/chain/index.js';
import { LiveTrust, trustSettings } from '../../src/config/trust.js';
import { TrustEvaluation, type WhatIfRow } from '../../src/jobs/trust.js';
import { openStore } from '../../src/store/index.js';
import type { Store } from '../../src/store/types.js';
import { EKU, generateKeyPair, issueCertificate } from '../../src/pki/factory.js';
import { crossSign, intermediate, leaf, pem, root } from '../support/hierarchies.js';
import { advance } from '../support/lifecycle.js';

const DAY = 86_400_000;

describe('a fleet-wide what-if and reload give each instance the answer it gets alone', async () => {
  const rootA = await root('Fleet Root A');
  const rootB = await root('Fleet Root B');
  const rootC = await root('Fleet Root C');
  const shared = await intermediate('Fleet Intermediate', rootA);
  const sharedViaB = await crossSign(shared, rootB);
  const other = await intermediate('Other Intermediate', rootC);
  // Same name as the shared intermediate, another key: what it signs does not chain to the real one.
  const impostor = await intermediate('Fleet Intermediate', rootA);
  const [anchorA, anchorB, anchorC] = [rootA, rootB, rootC].map((r) => parseCertificateBundle(r.pem)[0]!);
  const settings = trustSettings({
    profiles: [
      { name: 'default', anchors: [anchorA!, anchorB!, anchorC!] },
      { name: 'legacy', anchors: [anchorB!] },
    ],
    sources: {},
    preferences: ['Fleet Root A'],
    fallback: 'none',
    distrustedSpkiSha256: new Set(),
    unheldPreferences: [],
  });
  const now = new Date();
  let store: Store;
  let evaluation: TrustEvaluation;
  const ids: string[] = [];

  /** Kinds of instance, repeated round-robin over the fleet so every kind shares its intermediates with many others. */
  const kinds = [
    { name: 'both-chains', profiles: ['default'], chains: (l: string) => [pem2(l, shared.pem), pem2(l, shared.pem, sharedViaB.pem)], selected: 0 },
    { name: 'cross-signed-installed', profiles: ['default', 'legacy'], chains: (l: string) => [pem2(l, shared.pem), pem2(l, sharedViaB.pem)], selected: 1 },
    { name: 'one-chain', profiles: ['default'], chains: (l: string) => [pem2(l, shared.pem)], selected: 0 },
    { name: 'other-root', profiles: ['default'], chains: (l: string) => [pem2(l, other.pem)], selected: 0, issuer: other },
    { name: 'legacy-only', profiles: ['legacy'], chains: (l: string) => [pem2(l, shared.pem), pem2(l, sharedViaB.pem)], selected: 0 },
    { name: 'impostor-signed', profiles: ['default'], chains: (l: string) => [pem2(l, shared.pem), pem2(l, sharedViaB.pem)], selected: 0, issuer: impostor },
    { name: 'expires-soon', profiles: ['default'], chains: (l: string) => [pem2(l, shared.pem), pem2(l, sharedViaB.pem)], selected: 0, notAfter: new Date(now.getTime() + 20 * DAY) },
    { name: 'no-stored-chains', profiles: ['default'], chains: (l: string) => [pem2(l, shared.pem)], selected: 0, storeChains: false },
    { name: 'unparsable-alternate', profiles: ['default'], chains: (l: string) => [pem2(l, shared.pem), pem2(l, shared.pem).replace(/(-----BEGIN CERTIFICATE-----\n)[A-Za-z0-9+/]{40}/, '$1')], selected: 0 },
    { name: 'not-installed', profiles: ['default'], chains: () => [], selected: 0 },
  ] as const;
  const pem2 = (...blocks: string[]) => blocks.join('');
  const perKind = 6;

  before(async () => {
    store = await openStore('memory:');
    evaluation = new TrustEvaluation({ store, trust: new LiveTrust(async () => settings, settings), clock: () => now, logger: pino({ level: 'silent' }) });
    for (let n = 0; n < kinds.length * perKind; n += 1) {
      const kind = kinds[n % kinds.length]!;
      const name = `${kind.name}-${n}`;
      const instance = await store.instances.create({ name, hostnames: [`${name}.example.com`], cluster: n % 2 ? 'odd' : 'even', keyAlgorithm: 'ecdsa-p256', trustProfiles: kind.profiles });
      ids.push(instance.id);
      if (kind.name === 'not-installed') continue;
      const issuer = 'issuer' in kind ? kind.issuer : shared;
      const leafPem =
        'notAfter' in kind
          ? (await issueCertificate({ subject: `CN=${name}.example.com`, key: await generateKeyPair(), issuer: issuer.asIssuer, ca: false, dnsNames: [`${name}.example.com`], extendedKeyUsage: [EKU.serverAuth], notBefore: new Date(now.getTime() - DAY), notAfter: kind.notAfter })).pem
          : pem((await leaf(issuer, [`${name}.example.com`])).cert);
      const offered = kind.chains(leafPem);
      const certificate = await store.certificates.create(instance.id);
      await advance(store, certificate.id, 'installed', { fullchainPem: offered[kind.selected], fingerprintSha256: parseCertificateBundle(leafPem)[0]!.fingerprintSha256 });
      if (!('storeChains' in kind)) {
        await store.chains.record(
          certificate.id,
          offered.map((chainPem, index) => ({ index, pem: chainPem, topIssuerCN: 'Fleet', selected: index === kind.selected, verification: {}, evaluatedAt: now, trustFingerprint: 'issuance' })),
        );
      }
    }
  });
  after(async () => {
    await store?.close();
  });

  const alone = async (change: TrustChange, at?: Date): Promise<WhatIfRow[]> => {
    const rows: WhatIfRow[] = [];
    for (const id of ids) {
      clearCertificateCache();
      rows.push(...(await evaluation.whatIf(change, { instanceIds: [id] }, at)).rows);
    }
    return rows;
  };
  /** Rows by instance id: instances created in the same millisecond come back in id order, which need not be the order they were made in. */
  const byInstance = (rows: readonly WhatIfRow[]) => [...rows].sort((a, b) => a.instanceId.localeCompare(b.instanceId));
  /** Each instance's stored verdict and its stored chains' verdicts, in `ids` order. */
  const stored = async () => {
    const out: unknown[] = [];
    for (const id of ids) {
      const verdict = (await store.trust.of([id])).get(id);
      out.push({ verdict, chains: verdict ? (await store.chains.list(verdict.certificateId)).map((c) => [c.index, c.verification, c.evaluatedAt, c.trustFingerprint]) : null });
    }
    return out;
  };
  const changes: [string, TrustChange, Date?][] = [
    ['no change', {}],
    ['clients lose Fleet Root A', { removeRoots: ['Fleet Root A'] }],
    ['Fleet Root B out of the legacy profile only', { removeRoots: ['Fleet Root B'], removeFromProfiles: ['legacy'] }],
    ['the shared intermediate key distrusted', { distrustSpki: [parseCertificateBundle(shared.pem)[0]!.spkiSha256] }],
    ['clients lose Fleet Root A, judged in 30 days', { removeRoots: ['Fleet Root A'] }, new Date(now.getTime() + 30 * DAY)],
  ];

  for (const [label, change, at] of changes) {
    test(`what-if: ${label}`, async () => {
      clearCertificateCache();
      const fleet = (await evaluation.whatIf(change, {}, at)).rows;
      assert.equal(fleet.length, ids.length);
      assert.deepEqual(byInstance(fleet), byInstance(await alone(change, at)));
    });
  }

  test('the fleet is not trivially uniform: every outcome occurs, and each kind gets the outcome its chains deserve', async () => {
    const rows = (await evaluation.whatIf({ removeRoots: ['Fleet Root A'] }, {})).rows;
    const outcomes = Object.fromEntries(kinds.map((kind) => [kind.name, [...new Set(rows.filter((r) => r.name.startsWith(`${kind.name}-`)).map((r) => r.outcome))]]));
    assert.deepEqual(outcomes, {
      'both-chains': ['alternate-chain'],
      'cross-signed-installed': ['verifies'],
      'one-chain': ['new-certificate'],
      'other-root': ['verifies'],
      'legacy-only': ['alternate-chain'],
      'impostor-signed': ['new-certificate'],
      'expires-soon': ['alternate-chain'],
      'no-stored-chains': ['new-certificate'],
      'unparsable-alternate': ['new-certificate'],
      'not-installed': ['no-installed-certificate'],
    });
    const later = (await evaluation.whatIf({}, {}, new Date(now.getTime() + 30 * DAY))).rows;
    assert.deepEqual([...new Set(later.filter((r) => r.name.startsWith('expires-soon-')).map((r) => r.outcome))], ['new-certificate']);
  });

  test('a reload stores for every instance what a reload of that instance alone stores', async () => {
    clearCertificateCache();
    const summary = await evaluation.evaluate();
    assert.equal(summary.evaluated, ids.length - perKind, 'every instance with an installed certificate');
    assert.ok(summary.broken > 0 && summary.ok > 0, JSON.stringify(summary));
    const fleet = await stored();
    for (const id of ids) {
      clearCertificateCache();
      await evaluation.evaluate({ instanceIds: [id] });
    }
    assert.deepEqual(fleet, await stored());
  });

  test("an installation's judgement parses through the plane's memo, and a fleet's through a scope of its own", async () => {
    clearCertificateCache();
    await evaluation.evaluate();
    assert.equal(certificateCacheSize(), 0, 'a reload of the whole fleet leaves the memo as it found it');
    await evaluation.evaluate({ instanceIds: [ids[0]!] });
    // The first kind stores two chains of one leaf: the leaf, the shared intermediate and its cross-sign.
    assert.equal(certificateCacheSize(), 3, "one instance's chains are parsed into the memo the issuer filled");
    await evaluation.evaluate({ instanceIds: ids.slice(0, 17) });
    assert.equal(certificateCacheSize(), 3, 'more than a few instances are judged in a scope of their own');
  });
});
