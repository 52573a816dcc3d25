/**
 * Certificate hierarchies shaped like the real incidents, made fresh for every run with
 * real keys and signatures (ECDSA P-256 keeps generation fast). Names match the real
 * CAs so that name-based mistakes would show; keys never match the real ones.
 */
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { EKU, generateKeyPair, issueCertificate, type IssuedCertificate, type KeyPair } from '../../src/pki/factory.js';
import type { IssuedChain } from '../../src/acme/issuer.js';
import { parseCertificateBundle, requireSelection, selectChain } from '../../src/chain/index.js';

const DAY = 24 * 60 * 60 * 1000;

export interface Leaf {
  readonly cert: IssuedCertificate;
  readonly key: KeyPair;
}

export async function root(cn: string, o = 'Test Trust Services', options: { notAfter?: Date } = {}): Promise<IssuedCertificate> {
  return issueCertificate({ subject: `CN=${cn}, O=${o}`, key: await generateKeyPair(), ca: true, notBefore: new Date(Date.now() - 400 * DAY), notAfter: options.notAfter ?? new Date(Date.now() + 3650 * DAY) });
}

/** A CA certificate for `subjectOf`'s name and key, signed by `issuer`: a cross-sign when `subjectOf` is a root. */
export async function crossSign(
  subjectOf: IssuedCertificate,
  issuer: IssuedCertificate,
  options: { notAfter?: Date; extendedKeyUsage?: string[]; pathLength?: number } = {},
): Promise<IssuedCertificate> {
  return issueCertificate({
    subject: subjectOf.subject,
    key: subjectOf.key,
    issuer: issuer.asIssuer,
    ca: true,
    notBefore: new Date(Date.now() - 300 * DAY),
    notAfter: options.notAfter ?? new Date(Date.now() + 1000 * DAY),
    extendedKeyUsage: options.extendedKeyUsage,
    pathLength: options.pathLength,
  });
}

export async function intermediate(cn: string, issuer: IssuedCertificate, options: { extendedKeyUsage?: string[]; pathLength?: number; ca?: boolean } = {}): Promise<IssuedCertificate> {
  return issueCertificate({
    subject: `CN=${cn}, O=Test Trust Services`,
    key: await generateKeyPair(),
    issuer: issuer.asIssuer,
    ca: options.ca ?? true,
    pathLength: options.pathLength ?? 0,
    notBefore: new Date(Date.now() - 200 * DAY),
    notAfter: new Date(Date.now() + 900 * DAY),
    extendedKeyUsage: options.extendedKeyUsage ?? [EKU.serverAuth, EKU.clientAuth],
  });
}

export async function leaf(issuer: IssuedCertificate, dnsNames: string[] = ['db1.example.com'], options: { key?: KeyPair; extendedKeyUsage?: string[] } = {}): Promise<Leaf> {
  const key = options.key ?? (await generateKeyPair());
  const cert = await issueCertificate({
    subject: `CN=${dnsNames[0]}`,
    key,
    issuer: issuer.asIssuer,
    ca: false,
    dnsNames,
    extendedKeyUsage: options.extendedKeyUsage ?? [EKU.serverAuth, EKU.clientAuth],
    notBefore: new Date(Date.now() - DAY),
    notAfter: new Date(Date.now() + 89 * DAY),
  });
  return { cert, key };
}

export const pem = (...certs: IssuedCertificate[]): string => certs.map((c) => c.pem).join('');

/**
 * A leaf for the key in `csrPem`, issued as a CA does: from the CSR's public key alone, so
 * a test of the agent never needs the instance's private key, just as production never has it.
 */
export async function leafForCsr(issuer: IssuedCertificate, csrPem: string, options: { dnsNames?: string[] } = {}): Promise<IssuedCertificate> {
  const csr = new x509.Pkcs10CertificateRequest(csrPem);
  const dnsNames = options.dnsNames ?? csr.extensions.find((e): e is x509.SubjectAlternativeNameExtension => e instanceof x509.SubjectAlternativeNameExtension)?.names.items.map((name) => name.value) ?? [];
  const publicKey = await csr.publicKey.export(webcrypto as unknown as Parameters<typeof csr.publicKey.export>[0]);
  // issueCertificate reads only the public half of a subject it does not self-sign; the CA never holds the private half.
  const subjectKey = { keys: { publicKey }, privateKeyPem: '', publicKeyPem: csr.publicKey.toString('pem') } as unknown as KeyPair;
  return issueCertificate({
    subject: `CN=${dnsNames[0]}`,
    key: subjectKey,
    issuer: issuer.asIssuer,
    ca: false,
    dnsNames,
    extendedKeyUsage: [EKU.serverAuth, EKU.clientAuth],
    notBefore: new Date(Date.now() - DAY),
    notAfter: new Date(Date.now() + 44 * DAY),
  });
}

/**
 * Let's Encrypt in 2021: R3 under ISRG Root X1, and ISRG Root X1 cross-signed by
 * DST Root CA X3. The long chain leads to DST Root CA X3; the short one to ISRG Root X1.
 */
export async function letsEncrypt2021(options: { crossSignNotAfter?: Date } = {}) {
  const dst = await root('DST Root CA X3', 'Digital Signature Trust Co.');
  const isrgX1 = await root('ISRG Root X1', 'Internet Security Research Group');
  const x1ByDst = await crossSign(isrgX1, dst, { notAfter: options.crossSignNotAfter });
  const r3 = await intermediate('R3', isrgX1);
  const server = await leaf(r3);
  return { dst, isrgX1, x1ByDst, r3, leaf: server, long: pem(server.cert, r3, x1ByDst), short: pem(server.cert, r3) };
}

/**
 * Let's Encrypt in 2026: Generation Y intermediate YR1 under "Root YR", and "Root YR"
 * cross-signed by ISRG Root X1. Root YR is in no trust store yet; the cross-signed chain
 * leads to ISRG Root X1. `crossSignEku` reproduces the May 2026 fault (no serverAuth).
 */
export async function generationY(options: { crossSignEku?: string[] } = {}) {
  const isrgX1 = await root('ISRG Root X1', 'Internet Security Research Group');
  const rootYR = await root('Root YR', 'ISRG');
  const yrByX1 = await crossSign(rootYR, isrgX1, { extendedKeyUsage: options.crossSignEku, pathLength: 1 });
  const yr1 = await intermediate('YR1', rootYR);
  const server = await leaf(yr1);
  return { isrgX1, rootYR, yrByX1, yr1, leaf: server, crossSigned: pem(server.cert, yr1, yrByX1), direct: pem(server.cert, yr1) };
}

/**
 * What the real issuer returns for a CSR, without a CA: a root named `rootName` and an
 * intermediate under it issue the CSR's leaf, and the chain engine selects and verifies it,
 * for coordinator tests whose issuer is a double.
 */
export async function issuerAnswers(rootName: string, label: string): Promise<(csrPem: string) => Promise<IssuedChain>> {
  const anchor = await root(rootName);
  const issuing = await intermediate(`${rootName} CA`, anchor);
  const trustAnchors = parseCertificateBundle(anchor.pem);
  return async (csrPem) => {
    const leaf = await leafForCsr(issuing, csrPem);
    const pem = leaf.pem + issuing.pem;
    const chain = parseCertificateBundle(pem);
    const selection = selectChain([chain], { preferences: [rootName], trustAnchors, at: new Date(), hostnames: chain[0]!.dnsNames });
    const { report } = requireSelection(selection, [rootName]);
    return { fullchainPem: report.servedChainPem, report, selection, offeredChainsPem: [pem], offered: [{ index: 0, pem, topIssuerCN: rootName, selected: true, verification: {} }], trustFingerprint: label, orderUrl: 'https://ca.test/order/x', certificateUrl: 'https://ca.test/cert/x' };
  };
}
