/**
 * The served-chain judgement of the chain engine: what an agent saw its service serve,
 * against the installed leaf and the instance's trust profiles. Real hierarchies with real
 * signatures (Let's Encrypt's 2021 shape); observations as DER, the way the plane gets them.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { judgeServed, parseCertificateBundle, servedStandingNow, type ServedObservation, type ServedProblem, type TrustProfile } from '../../src/chain/index.js';
import { ErrorCode } from '../../src/error-catalogue.js';
import { leaf, letsEncrypt2021, pem } from '../support/hierarchies.js';

const ders = (text: string) => parseCertificateBundle(text).map((c) => c.der);

describe('judging what an instance serves', async () => {
  const le = await letsEncrypt2021();
  const other = await leaf(le.r3, ['db1.example.com']);
  const [x1] = parseCertificateBundle(le.isrgX1.pem);
  const [dst] = parseCertificateBundle(le.dst.pem);
  const [installedLeaf] = parseCertificateBundle(le.leaf.cert.pem);
  const modern: TrustProfile = { name: 'modern', anchors: [x1!] };
  const legacy: TrustProfile = { name: 'legacy', anchors: [dst!] };
  const profiles = [modern, legacy];
  const options = { at: new Date(), distrustedSpkiSha256: new Set<string>() };
  const installed = installedLeaf!.fingerprintSha256;
  const probe = (certificates: Buffer[], target = '127.0.0.1:5432', sni: string | null = 'db1.example.com'): ServedObservation => ({ target, sni, certificates });

  test('match: the installed leaf on a chain that verifies in every profile of the instance, with the anchor of the first', () => {
    const judged = judgeServed([probe(ders(le.short))], installed, ['modern'], profiles, options);
    assert.deepEqual([judged.status, judged.fingerprintSha256, judged.anchor, judged.problems], ['match', installed, 'ISRG Root X1', []]);
    const long = judgeServed([probe(ders(le.long))], installed, ['legacy', 'modern'], profiles, options);
    assert.deepEqual([long.status, long.anchor], ['match', 'DST Root CA X3']);
  });

  test('stale: another leaf is served than the one installed, whatever its chain', () => {
    const judged = judgeServed([probe(ders(pem(other.cert, le.r3)))], installed, ['modern'], profiles, options);
    assert.equal(judged.status, 'stale');
    assert.equal(judged.fingerprintSha256, parseCertificateBundle(other.cert.pem)[0]!.fingerprintSha256);
    assert.deepEqual(judged.problems.map((p) => [p.code, p.target, p.sni]), [[ErrorCode.SERVED_STALE, '127.0.0.1:5432', 'db1.example.com']]);
    assert.match(judged.problems[0]!.message, new RegExp(`not the installed ${installed}`));
    const nothingInstalled = judgeServed([probe(ders(le.short))], null, ['modern'], profiles, options);
    assert.equal(nothingInstalled.status, 'stale');
    assert.match(nothingInstalled.problems[0]!.message, /installed none/);
  });

  test('wrong-chain: the installed leaf on a chain that fails a profile of the instance, naming the profile; a missing intermediate too', () => {
    // The short chain ends at ISRG Root X1, which the legacy store does not hold: 2021's failure.
    const judged = judgeServed([probe(ders(le.short))], installed, ['modern', 'legacy'], profiles, options);
    assert.equal(judged.status, 'wrong-chain');
    assert.equal(judged.fingerprintSha256, installed);
    assert.equal(judged.anchor, 'ISRG Root X1', 'it does verify in the modern profile');
    assert.deepEqual(judged.problems.map((p) => p.code), [ErrorCode.SERVED_CHAIN_UNVERIFIED]);
    assert.match(judged.problems[0]!.message, /profile "legacy"/);
    const leafOnly = judgeServed([probe(ders(le.leaf.cert.pem))], installed, ['modern'], profiles, options);
    assert.deepEqual([leafOnly.status, leafOnly.anchor], ['wrong-chain', null]);
    const unknownProfile = judgeServed([probe(ders(le.short))], installed, ['modern', 'removed'], profiles, options);
    assert.equal(unknownProfile.status, 'wrong-chain');
    assert.match(unknownProfile.problems[0]!.message, /"removed": the profile is not configured/);
  });

  test('wrong-chain: a distrusted intermediate on the path fails as it does at issuance', () => {
    const r3 = parseCertificateBundle(le.r3.pem)[0]!;
    const judged = judgeServed([probe(ders(le.short))], installed, ['modern'], profiles, { ...options, distrustedSpkiSha256: new Set([r3.spkiSha256]) });
    assert.equal(judged.status, 'wrong-chain');
  });

  test('unreachable: no handshake, or a handshake without a certificate; the agent\'s reason is kept', () => {
    const judged = judgeServed([{ target: '127.0.0.1:5432', sni: null, unreachable: { code: 'ECONNREFUSED', message: 'connect ECONNREFUSED 127.0.0.1:5432' } }], installed, ['modern'], profiles, options);
    assert.deepEqual([judged.status, judged.fingerprintSha256, judged.anchor], ['unreachable', null, null]);
    assert.deepEqual(judged.problems.map((p) => p.code), [ErrorCode.SERVED_UNREACHABLE]);
    assert.match(judged.problems[0]!.message, /ECONNREFUSED/);
    assert.equal(judgeServed([probe([])], installed, ['modern'], profiles, options).status, 'unreachable');
  });

  test('several probes: the worst wins (stale over wrong-chain over unreachable over match), and every finding is listed in probe order', () => {
    const good = probe(ders(le.long), 'a:1');
    const down: ServedObservation = { target: 'b:2', sni: null, unreachable: { code: 'ETIMEDOUT', message: 'slow' } };
    const wrong = probe(ders(le.leaf.cert.pem), 'c:3');
    const old = probe(ders(pem(other.cert, le.r3)), 'd:4');
    const all = ['modern', 'legacy'];
    assert.equal(judgeServed([good, good], installed, all, profiles, options).status, 'match');
    assert.equal(judgeServed([good, down], installed, all, profiles, options).status, 'unreachable');
    assert.equal(judgeServed([down, wrong, good], installed, all, profiles, options).status, 'wrong-chain');
    const worst = judgeServed([wrong, old, down, good], installed, all, profiles, options);
    assert.equal(worst.status, 'stale');
    assert.deepEqual([...new Set(worst.problems.map((p) => p.target))], ['c:3', 'd:4', 'b:2']);
  });

  test('untrusted bytes: garbage as the leaf is stale (it is not the installed one), garbage after the installed leaf is a wrong chain; nothing throws', () => {
    const garbage = Buffer.from('30820101deadbeef', 'hex');
    assert.equal(judgeServed([probe([garbage])], installed, ['modern'], profiles, options).status, 'stale');
    const afterLeaf = judgeServed([probe([installedLeaf!.der, garbage])], installed, ['modern'], profiles, options);
    assert.equal(afterLeaf.status, 'wrong-chain');
    assert.deepEqual(afterLeaf.problems.map((p) => p.code), [ErrorCode.CHAIN_UNPARSABLE_CERTIFICATE]);
  });

  test('a stored judgement made before another certificate was installed reads as stale until the next probe', () => {
    const stored = { status: 'match' as const, fingerprintSha256: installed, problems: [] as ServedProblem[] };
    assert.equal(servedStandingNow(stored, installed).status, 'match');
    const after = servedStandingNow(stored, 'ab'.repeat(32));
    assert.equal(after.status, 'stale');
    assert.match(after.problems.at(-1)!.message, /the next probe tells/);
    const down = { status: 'unreachable' as const, fingerprintSha256: null, problems: [] };
    assert.equal(servedStandingNow(down, 'ab'.repeat(32)).status, 'unreachable');
  });
});
