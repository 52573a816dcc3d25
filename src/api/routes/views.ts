/** Store records turned into API shapes: dates as ISO strings, nothing the client must not see. */
import { atRisk } from '../../lifecycle/index.js';
import { servedStandingNow } from '../../chain/index.js';
import { isPermanent, readyCondition } from '../../lifecycle/index.js';
import type { CertificateRecord, InstanceRecord, InstanceServedRecord, InstanceTrustRecord } from '../../store/types.js';

const iso = (d: Date | null) => (d ? d.toISOString() : null);

export function certificateSummary(c: CertificateRecord | undefined) {
  if (!c) return null;
  return { id: c.id, status: c.status, fingerprintSha256: c.fingerprintSha256, notAfter: iso(c.notAfter), anchor: c.anchorCN, lastError: c.lastError, ...standing(c), updatedAt: c.updatedAt.toISOString() };
}

/** The typed failure and the Ready condition, derived from the lifecycle state. */
function standing(c: CertificateRecord) {
  return {
    failure: c.failure ? { ...c.failure, names: c.failure.names && [...c.failure.names], permanent: isPermanent(c.failure) } : null,
    condition: readyCondition(c.status, c.failure?.reason ?? null, c.lastError, c.stateChangedAt),
  };
}

/** The stored trust evaluation, when it is about the certificate installed now. */
function trustStanding(installed: CertificateRecord | undefined, trust: InstanceTrustRecord | undefined) {
  if (!installed || !trust || trust.certificateId !== installed.id) return { status: 'unevaluated' as const, brokenProfiles: [], alternateAvailable: false, alternateChainIndex: null, evaluatedAt: null };
  return {
    status: trust.status,
    brokenProfiles: [...trust.brokenProfiles],
    alternateAvailable: trust.alternateChainIndex !== null,
    alternateChainIndex: trust.alternateChainIndex,
    evaluatedAt: trust.evaluatedAt.toISOString(),
  };
}

/** What the instance's service was last seen serving, judged for the certificate installed now; `unchecked` before the first probe report. */
function servedStanding(installed: CertificateRecord | undefined, served: InstanceServedRecord | undefined) {
  if (!served) return { status: 'unchecked' as const, checkedAt: null, fingerprintSha256: null, anchor: null, problems: [] };
  const now = servedStandingNow(served, installed?.fingerprintSha256 ?? null);
  return { status: now.status, checkedAt: served.checkedAt.toISOString(), fingerprintSha256: now.fingerprintSha256, anchor: now.anchor, problems: now.problems.map((p) => ({ ...p })) };
}

export function instanceView(
  instance: InstanceRecord,
  latest: CertificateRecord | undefined,
  connected: boolean,
  installed: CertificateRecord | undefined,
  now: Date,
  trust: InstanceTrustRecord | undefined,
  served: InstanceServedRecord | undefined,
) {
  const renewalAtRisk = Boolean(installed?.notBefore && installed.notAfter && atRisk(installed.notBefore, installed.notAfter, now));
  const standing = trustStanding(installed, trust);
  return {
    id: instance.id,
    name: instance.name,
    hostnames: [...instance.hostnames],
    cluster: instance.cluster,
    keyAlgorithm: instance.keyAlgorithm,
    createdAt: instance.createdAt.toISOString(),
    agent: {
      connected,
      connectedAt: iso(instance.agentConnectedAt),
      lastSeenAt: iso(instance.agentLastSeenAt),
      installedFingerprintSha256: instance.installedFingerprintSha256,
    },
    certificate: certificateSummary(latest),
    profile: instance.profile,
    autoIssue: instance.autoIssue,
    trustProfiles: [...instance.trustProfiles],
    trust: standing,
    served: servedStanding(installed, served),
    atRisk: renewalAtRisk || standing.status === 'broken',
    renewal: {
      renewAt: iso(installed?.renewAt ?? null),
      atRisk: renewalAtRisk,
    },
    decommissioned: instance.decommissioned && { ...instance.decommissioned, at: instance.decommissioned.at.toISOString() },
  };
}

export function certificateView(c: CertificateRecord) {
  return {
    id: c.id,
    instanceId: c.instanceId,
    status: c.status,
    fullchainPem: c.fullchainPem,
    fingerprintSha256: c.fingerprintSha256,
    notAfter: iso(c.notAfter),
    anchor: c.anchorCN,
    report: c.report ?? null,
    lastError: c.lastError,
    ...standing(c),
    createdAt: c.createdAt.toISOString(),
    deliveredAt: iso(c.deliveredAt),
    installedAt: iso(c.installedAt),
    revocation: c.revocation,
  };
}
