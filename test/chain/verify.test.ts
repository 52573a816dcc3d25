import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { CertplaneError } from '../../src/errors.js';
import {
  BundleWarningCode,
  DST_ROOT_CA_X3_SPKI_SHA256,
  parseCertificateBundle,
  spkiSha256OfKeyFile,
  verifyChain,
  type Certificate,
  type VerifyOptions,
} from '../../src/chain/index.js';
import { EKU, createCsr, generateKeyPair, issueCertificate } from '../../src/pki/factory.js';
import { crossSign, generationY, intermediate, leaf, letsEncrypt2021, pem, root } from '../support/hierarchies.js';
import { ErrorCode } from '../../src/error-catalogue.js';

const DAY = 86_400_000;
const anchors = (...texts: string[]) => texts.flatMap((t) => parseCertificateBundle(t, 'trust'));
const codes = (problems: readonly { code: string }[]) => problems.map((p) => p.code);
const verify = (bundle: string, options: Omit<VerifyOptions, 'at'> & { at?: Date }) =>
  verifyChain(parseCertificateBundle(bundle), { at: new Date(), ...options });

describe('verifyChain on the 2021 Let\'s Encrypt layout', async () => {
  const le = await letsEncrypt2021();

  test('the short chain verifies to ISRG Root X1 with a clean bundle', () => {
    const report = verify(le.short, { trustAnchors: anchors(le.isrgX1.pem), hostnames: ['db1.example.com'] });
    assert.equal(report.ok, true, JSON.stringify(report.errors));
    assert.equal(report.anchor?.subjectCN, 'ISRG Root X1');
    assert.deepEqual(report.path.map((c) => c.subjectCN), ['db1.example.com', 'R3']);
    assert.deepEqual(report.warnings, []);
  });

  test('the long chain verifies to DST Root CA X3 when that is the only anchor', () => {
    const report = verify(le.long, { trustAnchors: anchors(le.dst.pem) });
    assert.equal(report.ok, true, JSON.stringify(report.errors));
    assert.equal(report.anchor?.subjectCN, 'DST Root CA X3');
    assert.equal(report.path.length, 3);
  });

  test('trusted-first: with ISRG Root X1 trusted, the long chain stops there and reports the cross-sign as unused', () => {
    const report = verify(le.long, { trustAnchors: anchors(le.isrgX1.pem, le.dst.pem) });
    assert.equal(report.ok, true);
    assert.equal(report.anchor?.subjectCN, 'ISRG Root X1');
    assert.deepEqual(codes(report.warnings), [BundleWarningCode.UNUSED_CERTIFICATE]);
    assert.equal(report.warnings[0]?.bundleIndex, 2);
  });

  test('a distrusted root is refused even though the trust store holds it', () => {
    const dstKey = parseCertificateBundle(le.dst.pem)[0]!.spkiSha256;
    const report = verify(le.long, { trustAnchors: anchors(le.dst.pem), distrustedSpkiSha256: new Set([dstKey, DST_ROOT_CA_X3_SPKI_SHA256]) });
    assert.equal(report.ok, false);
    assert.deepEqual(codes(report.errors), [ErrorCode.CHAIN_DISTRUSTED]);
    assert.match(report.errors[0]!.message, /DST Root CA X3/);
  });

  test('an expired cross-sign makes the long chain fail toward DST Root CA X3', async () => {
    const expired = await letsEncrypt2021({ crossSignNotAfter: new Date(Date.now() - DAY) });
    const report = verify(expired.long, { trustAnchors: anchors(expired.dst.pem) });
    assert.equal(report.ok, false);
    assert.deepEqual(codes(report.errors), [ErrorCode.CHAIN_EXPIRED]);
    assert.match(report.errors[0]!.subject ?? '', /ISRG Root X1/);
  });

  test('the evaluation time is an argument: the same chain is expired a year from now', () => {
    const report = verify(le.short, { trustAnchors: anchors(le.isrgX1.pem), at: new Date(Date.now() + 365 * DAY) });
    assert.equal(report.ok, false);
    assert.ok(codes(report.errors).includes(ErrorCode.CHAIN_EXPIRED));
    assert.equal(report.evaluatedAt.slice(0, 4), String(new Date(Date.now() + 365 * DAY).getUTCFullYear()));
  });

  test('a root missing from the trust store is named as untrusted, not as a missing intermediate', () => {
    const report = verify(le.long, { trustAnchors: [] });
    assert.equal(report.ok, false);
    assert.ok(codes(report.errors).includes(ErrorCode.CHAIN_MISSING_INTERMEDIATE));
    assert.match(report.errors.map((e) => e.message).join('\n'), /DST Root CA X3/);
  });

  test('a missing intermediate is reported with the issuer it needed', () => {
    const report = verify(pem(le.leaf.cert), { trustAnchors: anchors(le.isrgX1.pem) });
    assert.equal(report.ok, false);
    assert.deepEqual(codes(report.errors), [ErrorCode.CHAIN_MISSING_INTERMEDIATE]);
    assert.match(report.errors[0]!.message, /"R3"/);
  });

  test('a shuffled bundle still verifies, with the order reported', () => {
    const report = verify(pem(le.r3, le.leaf.cert), { trustAnchors: anchors(le.isrgX1.pem) });
    assert.equal(report.ok, true);
    assert.equal(report.leaf?.subjectCN, 'db1.example.com');
    assert.deepEqual(codes(report.warnings), [BundleWarningCode.WRONG_ORDER]);
    assert.equal(report.servedChainPem, parseCertificateBundle(le.short).map((c) => c.pem).join(''));
  });

  test('duplicates and a root inside the bundle are reported', () => {
    const report = verify(pem(le.leaf.cert, le.r3, le.r3, le.isrgX1), { trustAnchors: anchors(le.isrgX1.pem) });
    assert.equal(report.ok, true);
    assert.deepEqual(codes(report.warnings).sort(), [BundleWarningCode.DUPLICATE, BundleWarningCode.ROOT_IN_BUNDLE].sort());
  });

  test('hostnames are matched against the leaf\'s SANs', () => {
    const report = verify(le.short, { trustAnchors: anchors(le.isrgX1.pem), hostnames: ['db1.example.com', 'db2.example.com'] });
    assert.equal(report.ok, false);
    assert.deepEqual(codes(report.errors), [ErrorCode.CHAIN_HOSTNAME_MISMATCH]);
    assert.match(report.errors[0]!.message, /db2\.example\.com/);
  });

  test('an IP address is covered only by the same address among the leaf\'s IP SANs, never by a DNS name that spells it', async () => {
    const key = await generateKeyPair();
    const ipLeaf = await issueCertificate({ subject: 'CN=addresses', key, issuer: le.r3.asIssuer, ca: false, dnsNames: ['10.0.0.6'], ipAddresses: ['10.0.0.5', '2001:db8::1'], extendedKeyUsage: [EKU.serverAuth], notBefore: new Date(Date.now() - DAY), notAfter: new Date(Date.now() + 6 * DAY) });
    const bundle = pem(ipLeaf, le.r3);
    assert.equal(verify(bundle, { trustAnchors: anchors(le.isrgX1.pem), hostnames: ['10.0.0.5', '2001:DB8::1'] }).ok, true);
    const refused = verify(bundle, { trustAnchors: anchors(le.isrgX1.pem), hostnames: ['10.0.0.6'] });
    assert.deepEqual(codes(refused.errors), [ErrorCode.CHAIN_HOSTNAME_MISMATCH]);
    assert.match(refused.errors[0]!.message, /does not cover 10\.0\.0\.6 \(it names 10\.0\.0\.6, 10\.0\.0\.5, 2001:db8::1\)/);
  });

  test('the leaf must certify the CSR\'s key', async () => {
    const csrOfOtherKey = await createCsr(await generateKeyPair(), ['db1.example.com']);
    const mismatch = verify(le.short, { trustAnchors: anchors(le.isrgX1.pem), expectedSpkiSha256: await spkiSha256OfKeyFile(csrOfOtherKey) });
    assert.deepEqual(codes(mismatch.errors), [ErrorCode.CHAIN_KEY_MISMATCH]);
    const match = verify(le.short, { trustAnchors: anchors(le.isrgX1.pem), expectedSpkiSha256: await spkiSha256OfKeyFile(le.leaf.key.publicKeyPem) });
    assert.equal(match.ok, true);
  });
});

describe('verifyChain on the 2026 Generation Y layout', async () => {
  test('YR1 verifies to ISRG Root X1 through the Root YR cross-sign', async () => {
    const y = await generationY();
    const report = verify(y.crossSigned, { trustAnchors: anchors(y.isrgX1.pem) });
    assert.equal(report.ok, true, JSON.stringify(report.errors));
    assert.equal(report.anchor?.subjectCN, 'ISRG Root X1');
  });

  test('a cross-sign whose EKU lacks serverAuth breaks the chain (the May 2026 fault)', async () => {
    const y = await generationY({ crossSignEku: [EKU.clientAuth] });
    const report = verify(y.crossSigned, { trustAnchors: anchors(y.isrgX1.pem) });
    assert.equal(report.ok, false);
    assert.deepEqual(codes(report.errors), [ErrorCode.CHAIN_EKU_EXCLUDES_SERVER_AUTH]);
    assert.match(report.errors[0]!.message, /Root YR/);
  });

  test('the direct chain leads to Root YR, which no trust store has yet', async () => {
    const y = await generationY();
    const report = verify(y.direct, { trustAnchors: anchors(y.isrgX1.pem) });
    assert.equal(report.ok, false);
    assert.deepEqual(codes(report.errors), [ErrorCode.CHAIN_MISSING_INTERMEDIATE]);
  });
});

/**
 * The leaf with every way of looking at its names counted: an element read of its name
 * list, a lookup in any Set it carries, and a node:crypto checkHost call, which costs one
 * operation per name on the leaf because OpenSSL decodes and walks every SAN on each call.
 */
function countingNames(certificate: Certificate): { certificate: Certificate; operations: () => number } {
  let operations = 0;
  const size = certificate.dnsNames.length;
  const dnsNames = new Proxy([...certificate.dnsNames], {
    get(target, property, receiver) {
      if (typeof property === 'string' && /^\d+$/.test(property)) operations += 1;
      return Reflect.get(target, property, receiver);
    },
  });
  const native = new Proxy(certificate.native, {
    get(target, property) {
      const value = Reflect.get(target, property, target) as unknown;
      if (property === 'checkHost') {
        return (...args: Parameters<typeof target.checkHost>) => {
          operations += size;
          return target.checkHost(...args);
        };
      }
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
  const sets = Object.entries(certificate).filter(([, value]) => value instanceof Set).map(([key, value]) => {
    const set = value as Set<string>;
    const has = (item: string) => {
      operations += 1;
      return set.has(item);
    };
    return [key, Object.assign(new Set(set), { has })] as const;
  });
  return { certificate: { ...certificate, ...Object.fromEntries(sets), dnsNames, native }, operations: () => operations };
}

describe('verifyChain policy checks', async () => {
  const ca = await root('Policy Root');

  test('a bad signature is detected even when every name matches', async () => {
    const r3 = await intermediate('R3', ca);
    const impostor = await intermediate('R3', ca);
    const signedByImpostor = await leaf(impostor);
    const report = verify(pem(signedByImpostor.cert, r3), { trustAnchors: anchors(ca.pem) });
    assert.equal(report.ok, false);
    assert.deepEqual(codes(report.errors), [ErrorCode.CHAIN_BAD_SIGNATURE]);
  });

  test('an intermediate that is not a CA cannot issue', async () => {
    const notCA = await intermediate('Not A CA', ca, { ca: false });
    const report = verify(pem((await leaf(notCA)).cert, notCA), { trustAnchors: anchors(ca.pem) });
    assert.ok(codes(report.errors).includes(ErrorCode.CHAIN_NOT_A_CA));
  });

  test('path length constraints are enforced', async () => {
    const upper = await intermediate('Upper', ca, { pathLength: 0 });
    const lower = await intermediate('Lower', upper);
    const report = verify(pem((await leaf(lower)).cert, lower, upper), { trustAnchors: anchors(ca.pem) });
    assert.deepEqual(codes(report.errors), [ErrorCode.CHAIN_PATH_LENGTH_EXCEEDED]);
    assert.match(report.errors[0]!.message, /Upper/);
  });

  test('the leaf needs serverAuth', async () => {
    const issuing = await intermediate('Issuing', ca);
    const clientOnly = await leaf(issuing, ['db1.example.com'], { extendedKeyUsage: [EKU.clientAuth] });
    assert.deepEqual(codes(verify(pem(clientOnly.cert, issuing), { trustAnchors: anchors(ca.pem) }).errors), [ErrorCode.CHAIN_LEAF_EKU]);
  });

  test('a CA certificate in first place is not taken for the leaf: the lone non-CA certificate is', async () => {
    const issuing = await intermediate('Issuing', ca);
    const server = await leaf(issuing);
    const report = verify(pem(issuing, server.cert), { trustAnchors: anchors(ca.pem) });
    assert.equal(report.ok, true);
    assert.equal(report.leaf?.subjectCN, 'db1.example.com');
    assert.equal(report.leaf?.bundleIndex, 1);
  });

  test('an intermediate limited to code signing excludes serverAuth', async () => {
    const codeSigning = await intermediate('Code Signing CA', ca, { extendedKeyUsage: [EKU.codeSigning] });
    const report = verify(pem((await leaf(codeSigning)).cert, codeSigning), { trustAnchors: anchors(ca.pem) });
    assert.deepEqual(codes(report.errors), [ErrorCode.CHAIN_EKU_EXCLUDES_SERVER_AUTH]);
  });

  test('a wildcard name is covered only by the wildcard SAN', async () => {
    const issuing = await intermediate('Issuing', ca);
    const wildcard = await leaf(issuing, ['*.example.com']);
    const bundle = pem(wildcard.cert, issuing);
    assert.equal(verify(bundle, { trustAnchors: anchors(ca.pem), hostnames: ['*.example.com', 'db7.example.com'] }).ok, true);
    assert.equal(verify(bundle, { trustAnchors: anchors(ca.pem), hostnames: ['a.b.example.com'] }).ok, false);
  });

  test('verifying a leaf with N names for N requested names costs O(N) name operations, not N squared (3,000 names stalled the plane for seconds)', async () => {
    const issuing = await intermediate('Issuing', ca);
    const trust = anchors(ca.pem);
    const operations = async (n: number) => {
      const names = Array.from({ length: n }, (_, i) => `db${i}.example.com`);
      const [leafCert, ...rest] = parseCertificateBundle(pem((await leaf(issuing, names)).cert, issuing));
      const counted = countingNames(leafCert!);
      const report = verifyChain([counted.certificate, ...rest], { trustAnchors: trust, at: new Date(), hostnames: names });
      assert.equal(report.ok, true, JSON.stringify(report.errors));
      return counted.operations();
    };
    const costs = new Map<number, number>();
    for (const n of [10, 100, 1000]) costs.set(n, await operations(n));
    for (const [n, cost] of costs) assert.ok(cost <= 4 * n, `${cost} name operations for ${n} names (${JSON.stringify([...costs])})`);
  });

  test('a bundle of CA certificates only has no leaf', async () => {
    const issuing = await intermediate('Issuing', ca);
    const report = verify(pem(issuing), { trustAnchors: anchors(ca.pem) });
    assert.deepEqual(codes(report.errors), [ErrorCode.CHAIN_NO_LEAF]);
  });

  test('a cross-sign loop is bounded', async () => {
    const a = await root('Loop A');
    const b = await root('Loop B');
    const aByB = await crossSign(a, b);
    const bByA = await crossSign(b, a);
    const issuing = await intermediate('Issuing', a);
    const report = verify(pem((await leaf(issuing)).cert, issuing, aByB, bByA), { trustAnchors: [] });
    assert.equal(report.ok, false);
    assert.ok(report.errors.length > 0);
  });
});

describe('parseCertificateBundle refuses bad input with stable codes', async () => {
  const le = await letsEncrypt2021();
  const refuses = (text: string, code: string) =>
    assert.throws(() => parseCertificateBundle(text, 'bundle.pem'), (e: unknown) => e instanceof CertplaneError && e.code === code);

  test('empty input', () => refuses('', ErrorCode.CHAIN_EMPTY));
  test('whitespace and comments only', () => refuses('# nothing here\n\n', ErrorCode.CHAIN_EMPTY));
  test('prose', () => refuses('hello, this is not a certificate', ErrorCode.CHAIN_GARBAGE));
  test('garbage between blocks', () => refuses(`${le.short}\nrandom text\n`, ErrorCode.CHAIN_GARBAGE));
  test('a truncated block', () => refuses(le.short.slice(0, le.short.length - 30), ErrorCode.CHAIN_GARBAGE));
  test('a private key block', async () => refuses(`${le.short}${(await generateKeyPair()).privateKeyPem}`, ErrorCode.CHAIN_PRIVATE_KEY_IN_BUNDLE));
  test('a certificate block that is not DER', () =>
    refuses('-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n', ErrorCode.CHAIN_UNPARSABLE_CERTIFICATE));
  test('a non-certificate block', async () => refuses(await createCsr(await generateKeyPair(), ['a.example']), ErrorCode.CHAIN_GARBAGE));
  test('CRLF line endings and comment lines are accepted', () => {
    const crlf = `# chain\r\n${le.short.replace(/\n/g, '\r\n')}`;
    assert.equal(parseCertificateBundle(crlf).length, 2);
  });
});

describe('parsed certificates are memoised by DER', async () => {
  const le = await letsEncrypt2021();
  test('the same DER gives the same immutable object; another certificate does not', async () => {
    const [a] = parseCertificateBundle(le.short);
    const [b] = parseCertificateBundle(le.short);
    assert.equal(a, b);
    assert.ok(Object.isFrozen(a));
    assert.notEqual(parseCertificateBundle(le.long)[2], a);
    const { clearCertificateCache } = await import('../../src/chain/index.js');
    clearCertificateCache();
    const [c] = parseCertificateBundle(le.short);
    assert.notEqual(c, a);
    assert.equal(c!.fingerprintSha256, a!.fingerprintSha256);
  });
});
