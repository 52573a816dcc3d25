import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { CertplaneError } from '../../src/errors.js';
import { EKU } from '../../src/pki/factory.js';
import {
  parseCertificateBundle,
  requireSelection,
  selectChain,
  type SelectOptions,
} from '../../src/chain/index.js';
import { generationY, letsEncrypt2021 } from '../support/hierarchies.js';
import { ErrorCode } from '../../src/error-catalogue.js';

const parse = (text: string) => parseCertificateBundle(text);
const options = (preferences: string[], trust: string[], extra: Partial<SelectOptions> = {}): SelectOptions => ({
  preferences,
  trustAnchors: trust.flatMap((t) => parse(t)),
  at: new Date(),
  ...extra,
});

describe('selectChain', async () => {
  const le = await letsEncrypt2021();

  test('2021 ordering (long default, short alternate): ISRG Root X1 picks the short alternate', () => {
    const result = selectChain([parse(le.long), parse(le.short)], options(['ISRG Root X1'], [le.isrgX1.pem, le.dst.pem]));
    assert.equal(result.selected, 1);
    assert.equal(result.preference, 'ISRG Root X1');
    assert.equal(result.report?.anchor?.subjectCN, 'ISRG Root X1');
    assert.equal(result.chains[0]?.topIssuer, 'DST Root CA X3');
    assert.deepEqual(result.chains[0]?.errors.map((e) => e.code), [ErrorCode.SELECT_TOP_ISSUER_MISMATCH]);
  });

  test('2024 inversion (short default, long alternate): ISRG Root X1 still picks the short chain', () => {
    const result = selectChain([parse(le.short), parse(le.long)], options(['ISRG Root X1'], [le.isrgX1.pem, le.dst.pem]));
    assert.equal(result.selected, 0);
  });

  test('a preferred root absent from the trust store is refused, with every chain explained', () => {
    const result = selectChain([parse(le.long), parse(le.short)], options(['DST Root CA X3'], [le.isrgX1.pem]));
    assert.equal(result.selected, null);
    assert.deepEqual(result.chains[0]?.errors.map((e) => e.code), [ErrorCode.SELECT_ROOT_NOT_IN_TRUST_STORE]);
    assert.deepEqual(result.chains[1]?.errors.map((e) => e.code), [ErrorCode.SELECT_TOP_ISSUER_MISMATCH]);
    assert.throws(
      () => requireSelection(result, ['DST Root CA X3']),
      (e: unknown) => e instanceof CertplaneError && e.code === ErrorCode.CHAIN_NO_PREFERRED_CHAIN && /chain 0/.test(e.message) && /chain 1/.test(e.message),
    );
  });

  test('falls through an ordered list of preferences to the first satisfiable one', () => {
    const result = selectChain([parse(le.long), parse(le.short)], options(['Root YR', 'DST Root CA X3', 'ISRG Root X1'], [le.isrgX1.pem]));
    assert.equal(result.selected, 1);
    assert.equal(result.preference, 'ISRG Root X1');
  });

  test('a distrusted preferred root is refused even when it is trusted and named', () => {
    const dstKey = parse(le.dst.pem)[0]!.spkiSha256;
    const result = selectChain([parse(le.long), parse(le.short)], options(['DST Root CA X3'], [le.dst.pem, le.isrgX1.pem], { distrustedSpkiSha256: new Set([dstKey]) }));
    assert.equal(result.selected, null);
    assert.ok(result.chains[0]?.errors.some((e) => e.code === ErrorCode.CHAIN_DISTRUSTED));
  });

  test('the name alone is not enough: a chain whose top issuer is named right but that does not verify is refused', async () => {
    const other = await letsEncrypt2021();
    const result = selectChain([parse(le.short)], options(['ISRG Root X1'], [other.isrgX1.pem]));
    assert.equal(result.selected, null);
    assert.ok(result.chains[0]?.errors.some((e) => e.code === ErrorCode.CHAIN_BAD_SIGNATURE));
  });

  test('the default-chain fallback is off unless asked for, and flagged when used', () => {
    const chains = [parse(le.long), parse(le.short)];
    assert.equal(selectChain(chains, options(['Nope'], [le.dst.pem])).selected, null);
    const fallback = selectChain(chains, options(['Nope'], [le.dst.pem], { fallback: 'default-chain' }));
    assert.equal(fallback.selected, 0);
    assert.equal(fallback.fallbackUsed, true);
    assert.equal(fallback.preference, null);
  });

  test('Generation Y: ISRG Root X1 picks the cross-signed chain; Root YR is refused while untrusted', async () => {
    const y = await generationY();
    const chains = [parse(y.crossSigned), parse(y.direct)];
    assert.equal(selectChain(chains, options(['ISRG Root X1'], [y.isrgX1.pem])).selected, 0);
    assert.equal(selectChain(chains, options(['Root YR'], [y.isrgX1.pem])).selected, null);
    assert.equal(selectChain(chains, options(['Root YR', 'ISRG Root X1'], [y.isrgX1.pem, y.rootYR.pem])).selected, 1);
  });

  test('Generation Y with the serverAuth-less cross-sign: nothing fits ISRG Root X1', async () => {
    const y = await generationY({ crossSignEku: [EKU.clientAuth] });
    const result = selectChain([parse(y.crossSigned), parse(y.direct)], options(['ISRG Root X1'], [y.isrgX1.pem]));
    assert.equal(result.selected, null);
    assert.ok(result.chains[0]?.errors.some((e) => e.code === ErrorCode.CHAIN_EKU_EXCLUDES_SERVER_AUTH));
  });
});
