/**
 * The REST API's shapes, written once with zod: they validate requests, serialise
 * responses, type the handlers and generate openapi.yaml.
 */
import { z } from 'zod';
import { CERTIFICATE_STATES, FAILURE_REASONS, REVOCATION_REASON_NAMES, type FailureReasonName } from '../lifecycle/index.js';
import { KeyAlgorithm } from '../agents/protocol.js';

/** A DNS name an instance may get certificates for: lowercase labels, an optional leading wildcard. */
export const Hostname = z
  .string()
  .min(1)
  .max(253)
  .transform((s) => s.toLowerCase())
  .pipe(z.string().regex(/^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, 'must be a DNS name such as db1.example.com'));

/** Text a person typed: no control characters (a NUL byte cannot even be stored). */
export const Text = (max: number) => z.string().trim().min(1).max(max).regex(/^[^\p{Cc}]*$/u, 'must not contain control characters');

export const Problem = z.object({ code: z.string(), message: z.string(), details: z.record(z.string(), z.unknown()).optional() }).meta({ id: 'Problem' });

export const CreateInstance = z.strictObject({
  name: Text(200),
  hostnames: z.array(Hostname).min(1).max(100),
  cluster: Text(200).optional(),
  keyAlgorithm: KeyAlgorithm.default('ecdsa-p256'),
  profile: Text(64).optional().describe('ACME profile for this instance\'s orders (e.g. tlsserver), one of the CA directory\'s meta.profiles'),
});

export const EnrollmentToken = z.object({ id: z.uuid(), enrollmentToken: z.string(), enrollmentTokenExpiresAt: z.iso.datetime(), server: z.url().optional().describe('the URL agents should use (CERTPLANE_PUBLIC_URL)') });

export const CertificateStatus = z.enum(CERTIFICATE_STATES).describe('where the certificate stands in its lifecycle');

export const Failure = z
  .object({
    reason: z.enum(Object.keys(FAILURE_REASONS) as [FailureReasonName, ...FailureReasonName[]]),
    code: z.string().describe('the stable error code the failure came from'),
    permanent: z.boolean().describe('true when another attempt cannot succeed until something is changed (no retry is scheduled)'),
    retryAt: z.iso.datetime().optional(),
    names: z.array(z.string()).optional(),
    agentCode: z.string().optional(),
    problemType: z.string().optional(),
  })
  .describe('why the certificate failed, for programs');

export const Condition = z
  .object({
    type: z.literal('Ready'),
    status: z.enum(['True', 'False', 'Unknown']),
    reason: z.string().describe('the failure reason when failed, else the state in PascalCase'),
    message: z.string().nullable(),
    lastTransitionTime: z.iso.datetime(),
  })
  .describe("the certificate's standing in cert-manager's condition shape");

export const CertificateSummary = z.object({
  id: z.uuid(),
  status: CertificateStatus,
  fingerprintSha256: z.string().nullable(),
  notAfter: z.iso.datetime().nullable(),
  anchor: z.string().nullable().describe('CN of the root the chain verifies to'),
  lastError: z.string().nullable(),
  failure: Failure.nullable(),
  condition: Condition,
  updatedAt: z.iso.datetime(),
});

export const RevocationReason = z.enum(REVOCATION_REASON_NAMES).describe('RFC 5280 reason: unspecified (0), keyCompromise (1), affiliationChanged (3), superseded (4), cessationOfOperation (5)');

export const Decommissioned = z
  .object({
    at: z.iso.datetime(),
    requestedBy: z.string(),
    comment: z.string().nullable(),
    certificate: z.enum(['revoke', 'keep']).describe('what was decided for the live certificate'),
    revocationReason: RevocationReason.nullable(),
  })
  .describe('set once the instance is decommissioned: it owns no hostname, gets no certificate, and its agent is cut off');

export const Instance = z
  .object({
    id: z.uuid(),
    name: z.string(),
    hostnames: z.array(z.string()),
    cluster: z.string().nullable(),
    keyAlgorithm: KeyAlgorithm,
    createdAt: z.iso.datetime(),
    agent: z.object({
      connected: z.boolean(),
      connectedAt: z.iso.datetime().nullable(),
      lastSeenAt: z.iso.datetime().nullable(),
      servedFingerprintSha256: z.string().nullable().describe('what the agent reports it serves now'),
    }),
    certificate: CertificateSummary.nullable().describe('the most recent certificate request'),
    profile: z.string().nullable(),
    renewal: z.object({
      renewAt: z.iso.datetime().nullable().describe('when the installed certificate is renewed'),
      atRisk: z.boolean().describe('the installed certificate is past five sixths of its lifetime without a replacement'),
    }),
    decommissioned: Decommissioned.nullable(),
  })
  .meta({ id: 'Instance' });

export const InstancePage = z.object({ items: z.array(Instance), nextCursor: z.string().nullable() });

export const MAX_PAGE_SIZE = 500;
export const ListQuery = z.strictObject({
  cursor: z.string().max(200).optional(),
  limit: z.coerce.number().int().min(1).max(MAX_PAGE_SIZE).default(50),
});

export const InstanceListQuery = ListQuery.extend({
  include: z.literal('decommissioned').optional().describe('list decommissioned instances too (they are left out otherwise)'),
});

/**
 * An id in a path, lower-cased once here: the database compares uuids in any case, but the
 * maps that hold live state (agent sessions) and audit targets key on the canonical form,
 * so every lookup must see the same spelling.
 */
export const IdParams = z.strictObject({ id: z.uuid().transform((id) => id.toLowerCase()) });

export const IssueAccepted = z.object({ certificateId: z.uuid(), status: CertificateStatus });

export const Revocation = z
  .object({
    reason: RevocationReason,
    reasonCode: z.number().int().describe('the RFC 5280 CRLReason code the CA received'),
    comment: z.string().nullable(),
    requestedBy: z.string(),
    at: z.iso.datetime(),
    signedBy: z.enum(['certificate-key', 'account-key']).describe("which key signed the ACME revocation request: only certificate-key proves a key compromise to Let's Encrypt"),
    certificateKeyUnavailable: z
      .object({ code: z.string(), message: z.string() })
      .nullable()
      .describe('why the certificate key did not sign a keyCompromise revocation (the agent was offline, did not answer, or holds no such key), so the account key did'),
    alreadyRevokedAtCa: z.boolean().describe('the CA answered that it was revoked already'),
  })
  .describe('who revoked the certificate, why, when, and which key signed');

export const Certificate = z
  .object({
    id: z.uuid(),
    instanceId: z.uuid(),
    status: CertificateStatus,
    fullchainPem: z.string().nullable(),
    fingerprintSha256: z.string().nullable(),
    notAfter: z.iso.datetime().nullable(),
    anchor: z.string().nullable(),
    report: z.unknown().describe('the chain engine\'s verification report'),
    lastError: z.string().nullable(),
    failure: Failure.nullable(),
    condition: Condition,
    createdAt: z.iso.datetime(),
    deliveredAt: z.iso.datetime().nullable(),
    installedAt: z.iso.datetime().nullable(),
    revocation: Revocation.nullable(),
  })
  .meta({ id: 'Certificate' });

export const RevokeCertificate = z.strictObject({
  reason: RevocationReason,
  comment: Text(2000).optional().describe('why, for the audit trail'),
  reissue: z.boolean().default(true).describe('order a replacement when the revoked certificate is the installed one and the instance is in service'),
});

export const RevocationResult = z.object({
  certificate: Certificate,
  reissue: IssueAccepted.nullable().describe('the replacement under way, if one was ordered'),
});

/**
 * What to do with the installed certificate, in the query: content in a DELETE request has no
 * defined meaning (RFC 9110 §9.3.5) and some clients and proxies drop it.
 */
export const DecommissionInstance = z
  .strictObject({
    certificate: z.enum(['revoke', 'keep']).describe('revoke the installed certificate first (with reason), or keep it valid until it expires'),
    reason: RevocationReason.optional().describe('required with certificate=revoke'),
    comment: Text(2000).optional().describe('why, for the audit trail'),
  })
  .refine((query) => (query.certificate === 'revoke') === (query.reason !== undefined), {
    message: 'give reason with certificate=revoke (an RFC 5280 reason), and no reason with certificate=keep',
    path: ['reason'],
  });

export const DecommissionResult = z.object({
  instance: Instance,
  revokedCertificate: Certificate.nullable().describe('the installed certificate, revoked (with certificate: revoke)'),
  agentCertificatesRevoked: z.number().int(),
  jobsCancelled: z.number().int(),
  abandonedCertificates: z.array(z.uuid()).describe('certificates under way, failed as InstanceDecommissioned'),
  hostnamesReleased: z.array(z.string()).describe('names another instance may now register'),
});

export const EnrollRequest = z.strictObject({
  token: z.string().min(1).max(200),
  csrPem: z.string().min(1).max(16 * 1024).describe('CSR of the agent\'s identity key (not the TLS key)'),
});
export const EnrollResponse = z.object({ instanceId: z.uuid(), certificatePem: z.string(), caPem: z.string(), server: z.url().optional().describe('the URL the agent should use from now on') });
