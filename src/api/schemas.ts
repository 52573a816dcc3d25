/**
 * The REST API's shapes, written once with zod: they validate requests, serialise
 * responses, type the handlers and generate openapi.yaml.
 */
import { z } from 'zod';
import { CERTIFICATE_STATES, FAILURE_REASONS, type FailureReasonName } from '../lifecycle/index.js';
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
  trustProfiles: z
    .array(z.string().regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, 'must be a trust profile name'))
    .min(1)
    .max(20)
    .default(['default'])
    .describe('the trust profiles (client trust stores) its chain must verify in, each configured in CERTPLANE_TRUST_PROFILES or the trust file'),
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

export const TrustStanding = z
  .object({
    status: z.enum(['ok', 'broken', 'unevaluated']).describe('ok: the installed chain verifies in every trust profile of the instance; broken: not in some; unevaluated: no installed certificate, or not judged yet'),
    brokenProfiles: z.array(z.string()).describe('the profiles the installed chain fails in'),
    alternateAvailable: z.boolean().describe('a stored chain of the same certificate (same key) verifies in every profile: a rechain, no new order'),
    alternateChainIndex: z.number().int().nullable(),
    evaluatedAt: z.iso.datetime().nullable().describe('when the last trust reload or installation judged it'),
  })
  .describe('what the trust settings in force (as last reloaded) make of the installed chain');

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
    trustProfiles: z.array(z.string()),
    trust: TrustStanding,
    atRisk: z.boolean().describe('the installed certificate needs attention: its renewal is at risk or a trust change broke its chain'),
    renewal: z.object({
      renewAt: z.iso.datetime().nullable().describe('when the installed certificate is renewed'),
      atRisk: z.boolean().describe('the installed certificate is past five sixths of its lifetime without a replacement'),
    }),
  })
  .meta({ id: 'Instance' });

export const InstancePage = z.object({ items: z.array(Instance), nextCursor: z.string().nullable() });

export const MAX_PAGE_SIZE = 500;
export const ListQuery = z.strictObject({
  cursor: z.string().max(200).optional(),
  limit: z.coerce.number().int().min(1).max(MAX_PAGE_SIZE).default(50),
});

/**
 * An id in a path, lower-cased once here: the database compares uuids in any case, but the
 * maps that hold live state (agent sessions) and audit targets key on the canonical form,
 * so every lookup must see the same spelling.
 */
export const IdParams = z.strictObject({ id: z.uuid().transform((id) => id.toLowerCase()) });

export const IssueAccepted = z.object({ certificateId: z.uuid(), status: CertificateStatus });

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
  })
  .meta({ id: 'Certificate' });

export const EnrollRequest = z.strictObject({
  token: z.string().min(1).max(200),
  csrPem: z.string().min(1).max(16 * 1024).describe('CSR of the agent\'s identity key (not the TLS key)'),
});
export const EnrollResponse = z.object({ instanceId: z.uuid(), certificatePem: z.string(), caPem: z.string(), server: z.url().optional().describe('the URL the agent should use from now on') });
