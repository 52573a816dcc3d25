import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { failureOf } from '../../src/fleet/failures.js';
import {
  applyTrustChange,
  judgeInstalled,
  parseCertificateBundle,
  requireSelection,
  selectChain,
  type TrustProfile,
} from '../../src/chain/index.js';
import { CertplaneError } from '../../src/errors.js';
import { ErrorCode } from '../../src/error-catalogue.js';
import { letsEncrypt2021 } from '../support/hierarchies.js';

const parse = (text: string) => parseCertificateBundle(text);
const DAY = 86_400_000;

describe('trust profiles in the chain engine', async () => {
  const le = await letsEncrypt2021({ crossSignNotAfter: new Date(Date.now() + 30 * DAY) });
  const [x1] = parse(le.isrgX1.pem);
  const [dst] = parse(le.dst.pem);
  const modern: TrustProfile = { name: 'modern', anchors: [x1!] };
  const oldAndroid: TrustProfile = { name: 'old-android', anchors: [dst!] };
  const both: TrustProfile = { name: 'both', anchors: [x1!, dst!] };
  const chains = () => [parse(le.short), parse(le.long)];
  const base = { at: new Date(), distrustedSpkiSha256: new Set<string>(), trustAnchors: [x1!, dst!] };

  test('a chain is chosen only if it verifies in every profile of the instance: the short chain fails the old Android store, the long one passes both', () => {
    const result = selectChain(chains(), { ...base, preferences: ['ISRG Root X1', 'DST Root CA X3'], profiles: [modern, oldAndroid] });
    assert.equal(result.selected, 1);
    assert.equal(result.preference, 'DST Root CA X3');
    assert.ok(result.chains[0]?.errors.some((e) => e.code === ErrorCode.SELECT_PROFILE_UNSATISFIED && e.message.includes('"old-android"')));
    assert.deepEqual(result.profiles?.verdicts.map((v) => [v.modern?.ok, v['old-android']?.ok]), [[true, false], [true, true]]);
    const alone = selectChain(chains(), { ...base, preferences: ['ISRG Root X1', 'DST Root CA X3'], profiles: [modern] });
    assert.equal(alone.selected, 0, 'without the old store the preferred short chain wins');
  });

  test('when no offered chain verifies in every profile, the refusal names the failing profile and is a permanent ChainUnsatisfied', () => {
    const nowhere: TrustProfile = { name: 'java-8', anchors: [] };
    const result = selectChain(chains(), { ...base, preferences: ['ISRG Root X1'], profiles: [modern, nowhere] });
    assert.equal(result.selected, null);
    let refusal: unknown;
    assert.throws(() => requireSelection(result, ['ISRG Root X1']), (error: unknown) => (refusal = error) instanceof CertplaneError);
    const error = refusal as CertplaneError;
    assert.equal(error.code, ErrorCode.CHAIN_PROFILE_UNSATISFIED);
    assert.match(error.message, /"java-8"/);
    assert.deepEqual(error.details.profiles, ['java-8']);
    assert.deepEqual(failureOf(error), { reason: 'ChainUnsatisfied', code: ErrorCode.CHAIN_PROFILE_UNSATISFIED });
  });

  test('the default-chain fallback also has to verify in every profile', () => {
    const result = selectChain(chains(), { ...base, preferences: ['Nobody'], fallback: 'default-chain', profiles: [oldAndroid] });
    assert.equal(result.selected, null, 'the default (short) chain does not verify in old-android');
  });

  test('judgeInstalled: removing ISRG Root X1 breaks the installed short chain and finds the stored long chain of the same certificate', () => {
    const stored = [
      { index: 0, certificates: parse(le.short), installed: true },
      { index: 1, certificates: parse(le.long), installed: false },
    ];
    const now = judgeInstalled(stored, ['both'], [both], base);
    assert.deepEqual([now.status, now.brokenProfiles, now.alternateIndex], ['ok', [], null]);
    const changed = applyTrustChange([both], new Set(), { removeRoots: ['ISRG Root X1'] });
    const after = judgeInstalled(stored, ['both'], changed.profiles, { ...base, distrustedSpkiSha256: changed.distrusted });
    assert.deepEqual([after.status, after.brokenProfiles, after.alternateIndex], ['broken', ['both'], 1]);
    const distrusted = applyTrustChange(changed.profiles, changed.distrusted, { distrustSpki: [dst!.spkiSha256] });
    const none = judgeInstalled(stored, ['both'], distrusted.profiles, { ...base, distrustedSpkiSha256: distrusted.distrusted });
    assert.deepEqual([none.status, none.alternateIndex], ['broken', null], 'no stored chain helps: a new certificate is needed');
  });

  test('judgeInstalled at a future time: the cross-signed alternate expires and no longer rescues', () => {
    const stored = [
      { index: 0, certificates: parse(le.short), installed: true },
      { index: 1, certificates: parse(le.long), installed: false },
    ];
    const changed = applyTrustChange([both], new Set(), { removeRoots: [x1!.spkiSha256] });
    const later = { ...base, at: new Date(Date.now() + 45 * DAY) };
    const judged = judgeInstalled(stored, ['both'], changed.profiles, later);
    assert.deepEqual([judged.status, judged.alternateIndex], ['broken', null]);
    assert.ok(judged.verdicts.get(1)?.both?.errors.some((e) => e.code === ErrorCode.CHAIN_EXPIRED));
  });

  test('an instance profile that is no longer configured counts as broken', () => {
    const judged = judgeInstalled([{ index: 0, certificates: parse(le.short), installed: true }], ['modern', 'gone'], [modern], base);
    assert.deepEqual([judged.status, judged.brokenProfiles], ['broken', ['gone']]);
  });

  test('applyTrustChange removes by CN or SPKI pin, only from the named profiles, and replaces or adds whole profiles', () => {
    const byPin = applyTrustChange([modern, both], new Set(['aa']), { removeRoots: [`sha256:${Buffer.from(x1!.spkiSha256, 'hex').toString('base64')}`], removeFromProfiles: ['both'] });
    assert.deepEqual(byPin.profiles.map((p) => [p.name, p.anchors.map((a) => a.subjectCN)]), [['modern', ['ISRG Root X1']], ['both', ['DST Root CA X3']]]);
    const replaced = applyTrustChange([modern], new Set(), { replaceProfiles: { modern: [dst!], 'java-8': [x1!] }, distrustSpki: [dst!.spkiSha256.toUpperCase()] });
    assert.deepEqual(replaced.profiles.map((p) => [p.name, p.anchors.map((a) => a.subjectCN)]), [['modern', ['DST Root CA X3']], ['java-8', ['ISRG Root X1']]]);
    assert.ok(replaced.distrusted.has(dst!.spkiSha256));
    assert.deepEqual(modern.anchors.map((a) => a.subjectCN), ['ISRG Root X1'], 'the input is left as it was');
  });
});
