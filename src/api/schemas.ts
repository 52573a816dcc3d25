/**
 * The REST API's shapes, written once with zod: they validate requests, serialise
 * responses, type the handlers and generate openapi.yaml.
 */
import { z } from 'zod';
import { LAST_SEEN_RESOLUTION_MS } from '../fleet/sessions.js';
import { CERTIFICATE_STATES, FAILURE_REASONS, REVOCATION_REASON_NAMES, type FailureReasonName } from '../lifecycle/index.js';
import { KeyAlgorithm } from '../channel/protocol.js';
import { SERVED_STATUSES, checkHostname } from '../chain/index.js';

/**
 * A name an instance may get certificates for, checked and normalised by the one validator
 * (chain/names.ts): case, trailing dot and IDNA folded, RFC 1123 labels, length limits and
 * the CA's wildcard rules; an IP address in its canonical form.
 */
export const Hostname = z
  .string()
  .min(1)
  .max(1024)
  .transform((raw, ctx) => {
    const checked = checkHostname(raw);
    if ('problem' in checked) {
      ctx.addIssue({ code: 'custom', message: checked.problem });
      return z.NEVER;
    }
    return checked.name;
  })
  .describe('a DNS name (db1.example.com, *.example.com, an internationalised name), or an IP address when the instance\'s profile issues for addresses (shortlived)');

/** Text a person typed: no control characters (a NUL byte cannot even be stored). */
export const Text = (max: number) => z.string().trim().min(1).max(max).regex(/^[^\p{Cc}]*$/u, 'must not contain control characters');

export const Problem = z.object({ code: z.string(), message: z.string(), details: z.record(z.string(), z.unknown()).optional() }).meta({ id: 'Problem' });

export const CreateInstance = z.strictObject({
  name: Text(200),
  hostnames: z.array(Hostname).min(1).max(100),
  cluster: Text(200).optional(),
  keyAlgorithm: KeyAlgorithm.default('ecdsa-p256'),
  profile: Text(64).optional().describe('ACME profile for this instance\'s orders (e.g. tlsserver), one of the CA directory\'s meta.profiles'),
  autoIssue: z.boolean().default(true).describe('issue the first certificate as soon as the agent connects (and whenever it connects without a valid one); false leaves issuance to POST /v1/instances/{id}/issue'),
  trustProfiles: z
    .array(z.string().regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, 'must be a trust profile name'))
    .min(1)
    .max(20)
    .default(['default'])
    .describe('the trust profiles (client trust stores) its chain must verify in, each configured in CERTPLANE_TRUST_PROFILES or the trust file'),
});

/** A change to an instance: only the fields given change; `reason` says why, for the audit trail. */
export const UpdateInstance = z
  .strictObject({
    name: Text(200).optional(),
    hostnames: z.array(Hostname).min(1).max(100).optional().describe('the complete new set of names; a changed set is issued at once, and removed names are released for other instances'),
    cluster: Text(200).nullable().optional().describe('null takes the instance out of any cluster (callers without cluster limits only)'),
    keyAlgorithm: KeyAlgorithm.optional().describe('a change is issued at once, with a new key of that algorithm'),
    profile: Text(64).nullable().optional().describe('null goes back to the CA\'s default profile; applies from the next order'),
    autoIssue: z.boolean().optional(),
    reason: Text(1000).describe('why the instance changes, recorded in the audit trail'),
  })
  .refine((body) => Object.keys(body).some((key) => key !== 'reason'), { message: 'name at least one field to change' });

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
export const ServedStanding = z
  .object({
    status: z
      .enum(SERVED_STATUSES)
      .describe(
        'match: the service serves the installed certificate on a chain that verifies in every trust profile of the instance; stale: it serves another certificate (its reload did nothing, or another store serves); wrong-chain: the installed certificate on a chain that does not verify in some profile; unreachable: the agent could not complete a TLS handshake with its --probe target; unchecked: no probe report yet (the agent runs without --probe)',
      ),
    checkedAt: z.iso.datetime().nullable().describe('when the plane judged the agent\'s last report'),
    fingerprintSha256: z.string().nullable().describe('SHA-256 of the leaf the service served (the first probe with the worst finding)'),
    anchor: z.string().nullable().describe('CN of the root the served chain verifies to, in the first of the instance\'s profiles where it does'),
    problems: z
      .array(z.object({ target: z.string().describe('[postgres://]HOST:PORT the agent probed'), sni: z.string().nullable().describe('the name it asked for (SNI)'), code: z.string(), message: z.string() }))
      .describe('what each probe found wrong, in the order probed'),
  })
  .describe('what the service on the instance really serves, as its agent last probed it (`certplane agent --probe`) and the plane judged it against the installed certificate and the trust profiles');
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
      lastSeenAt: z.iso
        .datetime()
        .nullable()
        .describe(`when the agent last sent a message on its channel, to within ${LAST_SEEN_RESOLUTION_MS / 1000} s (written when it authenticates, then for its messages at most every ${LAST_SEEN_RESOLUTION_MS / 1000} s)`),
      installedFingerprintSha256: z.string().nullable().describe('the leaf of the agent\'s live/fullchain.pem, as the agent last reported it: installed, which is not necessarily served (see `served`)'),
    }),
    certificate: CertificateSummary.nullable().describe('the most recent certificate request'),
    profile: z.string().nullable(),
    autoIssue: z.boolean().describe('whether the agent\'s connection alone starts issuance when it holds no valid certificate'),
    trustProfiles: z.array(z.string()),
    trust: TrustStanding,
    served: ServedStanding,
    atRisk: z.boolean().describe('the installed certificate needs attention: its renewal is at risk or a trust change broke its chain'),
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

/** Where an instance stands: its most recent certificate's state, or `none` before its first. */
export const InstanceStatus = z.enum(['none', ...CERTIFICATE_STATES]).describe("the state of the instance's most recent certificate, none before the first");

/** The listing's page and its filters; every filter given must hold. Pass the same filters with each page's cursor. */
export const InstanceListQuery = ListQuery.extend({
  include: z.literal('decommissioned').optional().describe('list decommissioned instances too (they are left out otherwise)'),
  cluster: Text(200).optional().describe('only instances of this cluster (a cluster-limited caller: one of its own, else 403)'),
  status: InstanceStatus.optional(),
  hostname: Hostname.optional().describe('only instances that list this name (normalised like a registration: case, trailing dot, IDNA)'),
  atRisk: z.enum(['true', 'false']).transform((value) => value === 'true').optional().describe('only instances whose installed certificate is (true) or is not (false) past five sixths of its lifetime'),
});

export const InstanceSummary = z
  .object({
    total: z.number().int(),
    byStatus: z.record(InstanceStatus, z.number().int()).describe('instances by the state of their most recent certificate; every status is present'),
    atRisk: z.number().int().describe('instances whose installed certificate is past five sixths of its lifetime'),
    agentsConnected: z.number().int(),
  })
  .meta({ id: 'InstanceSummary' });

export const SummaryQuery = z.strictObject({ cluster: Text(200).optional().describe('count one cluster only') });

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
