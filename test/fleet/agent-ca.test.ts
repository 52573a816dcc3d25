/**
 * The agent CA's check of an agent certificate, run for every channel authentication:
 * node:crypto alone (no chain-engine parse), yet what it returns is exactly what the chain
 * engine reads from the same certificate (the fingerprint and serial stored with every
 * agent certificate, the validity, the instance named), and what it refuses it refuses.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { parseCertificateBundle, parseCsr } from '../../src/chain/index.js';
import { AgentCa, derSerialHex } from '../../src/fleet/ca.js';
import { createCsr, generateKeyPair } from '../../src/pki/factory.js';
import { FileSecretStore } from '../../src/secrets/index.js';
import { ErrorCode } from '../../src/error-catalogue.js';

let dir: string;
let ca: AgentCa;
let other: AgentCa;
const now = new Date();

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'certplane-agent-ca-'));
  ca = await AgentCa.loadOrCreate(await FileSecretStore.open(join(dir, 'a')), now);
  other = await AgentCa.loadOrCreate(await FileSecretStore.open(join(dir, 'b')), now);
});
after(() => rm(dir, { recursive: true, force: true }));

const csr = async () => parseCsr(await createCsr(await generateKeyPair('ecdsa-p256'), ['certplane-agent']));

test('derSerialHex writes the serial as the DER INTEGER holds it', () => {
  assert.equal(derSerialHex('7F01'), '7f01');
  assert.equal(derSerialHex('80'), '0080');
  assert.equal(derSerialHex('F1A2'), '00f1a2');
  assert.equal(derSerialHex('ABC'), '0abc');
});

test('what verify returns is what the chain engine reads from the same certificate', async () => {
  for (let i = 0; i < 24; i += 1) {
    const { certificatePem, identity } = await ca.issue(`instance-${i}`, await csr(), now);
    const parsed = parseCertificateBundle(certificatePem)[0]!;
    const checked = ca.verify(certificatePem, now);
    assert.equal(checked.instanceId, `instance-${i}`);
    assert.equal(checked.fingerprintSha256, parsed.fingerprintSha256);
    assert.equal(checked.serialNumber, parsed.serialNumber);
    assert.equal(checked.notBefore.getTime(), parsed.notBefore.getTime());
    assert.equal(checked.notAfter.getTime(), parsed.notAfter.getTime());
    assert.ok(checked.publicKey.equals(parsed.publicKey), 'the key of the certificate');
    assert.deepEqual({ ...identity, publicKey: undefined }, { ...checked, publicKey: undefined });
  }
});

test('a certificate of another agent CA, an expired one and garbage are refused', async () => {
  const foreign = await other.issue('instance-x', await csr(), now);
  assert.throws(() => ca.verify(foreign.certificatePem, now), (error: { code?: string }) => error.code === ErrorCode.AGENT_CERT_UNKNOWN_ISSUER);
  const mine = await ca.issue('instance-y', await csr(), now, 1);
  assert.throws(() => ca.verify(mine.certificatePem, new Date(now.getTime() + 2 * 86_400_000)), (error: { code?: string }) => error.code === ErrorCode.AGENT_CERT_EXPIRED);
  assert.throws(() => ca.verify(mine.certificatePem, new Date(now.getTime() - 86_400_000)), (error: { code?: string }) => error.code === ErrorCode.AGENT_CERT_EXPIRED);
  assert.throws(() => ca.verify('-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n', now), (error: { code?: string }) => typeof error.code === 'string');
});
