/**
 * The trust judgement of one installation (compose.ts runs it after every install): one
 * read without a transaction and one write, where it was a REPEATABLE READ transaction of
 * two reads and two writes (seven statements with BEGIN, SET TRANSACTION and COMMIT). The
 * chains the issuer stored moments before under the same trust settings keep their verdict;
 * a verdict that changed, or one made under other settings, is rewritten. What it stores
 * for the instance is what a fleet-wide reload stores (test/jobs/trust.test.ts).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { parseCertificateBundle, verifyInProfiles } from '../../src/chain/index.js';
import { LiveTrust, trustSettings, type TrustSettings } from '../../src/config/trust.js';
import { TrustEvaluation } from '../../src/jobs/trust.js';
import { openStore, type Store } from '../../src/store/index.js';
import { intermediate, leaf, pem, root } from '../support/hierarchies.js';
import { advance } from '../support/lifecycle.js';
import { statementsOf } from '../support/statements.js';

describe('judging one installation', () => {
  let store: Store;
  const issuedAt = new Date(Date.now() - 60_000);
  const now = new Date();
  const logger = pino({ level: 'silent' });
  const settingsWith = (anchors: Parameters<typeof trustSettings>[0]['profiles'][number]['anchors']): TrustSettings =>
    trustSettings({ profiles: [{ name: 'default', anchors }], sources: {}, preferences: [], fallback: 'none', distrustedSpkiSha256: new Set(), unheldPreferences: [] });
  const evaluationUnder = (settings: TrustSettings, at = now) => new TrustEvaluation({ store, trust: new LiveTrust(async () => settings, settings), clock: () => at, logger });
  let settings: TrustSettings;
  let other: TrustSettings;
  let instanceId: string;
  let certificateId: string;

  before(async () => {
    store = await openStore('memory:', { pgliteThread: false });
    const rootA = await root('Install Judge Root A');
    const rootB = await root('Install Judge Root B');
    const issuing = await intermediate('Install Judge Intermediate', rootA);
    const [anchorA, anchorB] = [rootA, rootB].map((r) => parseCertificateBundle(r.pem)[0]!);
    settings = settingsWith([anchorA!]);
    other = settingsWith([anchorB!]);
    const instance = await store.instances.create({ name: 'judged', hostnames: ['judged.jobs.test'], cluster: null, keyAlgorithm: 'ecdsa-p256' });
    instanceId = instance.id;
    const issued = await leaf(issuing, ['judged.jobs.test']);
    const chains = [pem(issued.cert, issuing), pem(issued.cert, issuing, rootA)];
    const certificate = await store.certificates.create(instance.id);
    certificateId = certificate.id;
    await advance(store, certificate.id, 'installed', { installedAt: now, fullchainPem: chains[0], fingerprintSha256: parseCertificateBundle(chains[0]!)[0]!.fingerprintSha256 });
    // As the issuer stores them: each chain's verdict in every profile, under the settings in force.
    await store.chains.record(
      certificate.id,
      chains.map((chainPem, index) => ({
        index,
        pem: chainPem,
        topIssuerCN: 'Install Judge',
        selected: index === 0,
        verification: verifyInProfiles(parseCertificateBundle(chainPem), settings.profiles, { at: issuedAt, distrustedSpkiSha256: settings.distrustedSpkiSha256 }),
        evaluatedAt: issuedAt,
        trustFingerprint: settings.fingerprint,
      })),
    );
  });
  after(async () => {
    await store?.close();
  });

  const storedChains = async () => (await store.chains.list(certificateId)).map((c) => ({ index: c.index, verification: c.verification, evaluatedAt: c.evaluatedAt.getTime(), trustFingerprint: c.trustFingerprint }));

  test('costs one read and one write, no transaction, and leaves the verdicts the issuer stored under the same settings', async () => {
    const before = await storedChains();
    const { result, statements } = await statementsOf(() => evaluationUnder(settings).evaluate({ instanceIds: [instanceId] }));
    assert.equal(statements.length, 2, statements.join('\n'));
    assert.ok(!statements.some((s) => /^(BEGIN|SET TRANSACTION)/.test(s)), statements.join('\n'));
    assert.deepEqual({ evaluated: result.evaluated, ok: result.ok, broken: result.broken }, { evaluated: 1, ok: 1, broken: 0 });
    const verdict = (await store.trust.of([instanceId])).get(instanceId);
    assert.deepEqual(
      verdict && { certificateId: verdict.certificateId, status: verdict.status, evaluatedAt: verdict.evaluatedAt.getTime(), trustFingerprint: verdict.trustFingerprint },
      { certificateId, status: 'ok', evaluatedAt: now.getTime(), trustFingerprint: settings.fingerprint },
    );
    assert.deepEqual(await storedChains(), before, 'the same verdicts under the same settings are not written again');
  });

  test('under other settings every chain verdict is rewritten, with their fingerprint', async () => {
    const later = new Date(now.getTime() + 1_000);
    const summary = await evaluationUnder(other, later).evaluate({ instanceIds: [instanceId] });
    assert.equal(summary.broken, 1);
    const chains = await storedChains();
    assert.deepEqual(chains.map((c) => [c.trustFingerprint, c.evaluatedAt]), [[other.fingerprint, later.getTime()], [other.fingerprint, later.getTime()]]);
    assert.ok(chains.every((c) => (c.verification as Record<string, { ok: boolean }>).default?.ok === false), JSON.stringify(chains));
  });

  test('a verdict that changed under the same settings is rewritten (the leaf expired since)', async () => {
    await evaluationUnder(settings).evaluate({ instanceIds: [instanceId] });
    const afterExpiry = new Date(now.getTime() + 3 * 365 * 86_400_000);
    const summary = await evaluationUnder(settings, afterExpiry).evaluate({ instanceIds: [instanceId] });
    assert.equal(summary.broken, 1);
    const chains = await storedChains();
    assert.deepEqual(chains.map((c) => [c.trustFingerprint, c.evaluatedAt]), [[settings.fingerprint, afterExpiry.getTime()], [settings.fingerprint, afterExpiry.getTime()]]);
  });
});
