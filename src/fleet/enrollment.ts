/**
 * Enrollment: the one moment an agent proves itself with a one-time token instead of a
 * certificate. The token is shown once to the control plane, stored only as a hash,
 * expires, and is consumed atomically, so a leaked or replayed token is worth nothing.
 * It is spent last, after everything that could refuse the request, so a refused CSR
 * leaves it usable for a corrected one.
 */
import { createHash, randomBytes } from 'node:crypto';
import { CertplaneError } from '../errors.js';
import { parseCsr } from '../chain/index.js';
import type { Store } from '../store/types.js';
import type { AgentCa } from './ca.js';
import { ErrorCode } from '../error-catalogue.js';

const tokenHash = (token: string) => createHash('sha256').update(token).digest('hex');

/** Mints a token for `instanceId`, valid for `ttlMs`; only its hash is stored. */
export async function createEnrollmentToken(store: Pick<Store, 'enrollmentTokens'>, instanceId: string, now: Date, ttlMs: number): Promise<{ token: string; expiresAt: Date }> {
  const token = `cpe_${randomBytes(32).toString('base64url')}`;
  const expiresAt = new Date(now.getTime() + ttlMs);
  await store.enrollmentTokens.create(instanceId, tokenHash(token), expiresAt);
  return { token, expiresAt };
}

/**
 * Exchanges a token and the agent's identity CSR for an agent certificate. The token is
 * looked up first (a hash and one indexed read), so a wrong token costs no CSR parsing;
 * the certificate is signed before the token is spent, and only the request that spends
 * it gets the certificate recorded and returned.
 */
export async function enrollAgent(
  deps: { store: Pick<Store, 'enrollmentTokens' | 'agentCertificates'>; ca: Pick<AgentCa, 'issue' | 'certificatePem'> },
  token: string,
  identityCsrPem: string,
  now: Date,
): Promise<{ instanceId: string; certificatePem: string; caPem: string; fingerprintSha256: string }> {
  const hash = tokenHash(token);
  const instanceId = await deps.store.enrollmentTokens.find(hash, now);
  if (!instanceId) throw invalidToken();
  const csr = await parseCsr(identityCsrPem, 'identity CSR');
  const { certificatePem, identity } = await deps.ca.issue(instanceId, csr, now);
  if (!(await deps.store.enrollmentTokens.consume(hash, now))) throw invalidToken();
  await deps.store.agentCertificates.record({ fingerprintSha256: identity.fingerprintSha256, instanceId, serialNumber: identity.serialNumber, notAfter: identity.notAfter });
  return { instanceId, certificatePem, caPem: deps.ca.certificatePem, fingerprintSha256: identity.fingerprintSha256 };
}

const invalidToken = () => new CertplaneError(ErrorCode.ENROLLMENT_TOKEN_INVALID, 'the enrollment token is unknown, already used or expired; ask the control plane for a new one');
