/**
 * What the management plane keeps, and the operations it needs on it. One interface,
 * two engines of one dialect (PGlite embedded, PostgreSQL server), so every room above
 * talks to records, never to a driver. No private key is ever a field here: the plane
 * stores CSRs, public chains and fingerprints only.
 */
import type { KeyAlgorithm } from '../agents/protocol.js';
import type { CertificateState, FailureReason, LifecycleEvent, RevocationReasonName, RevocationRecord } from '../lifecycle/index.js';
import type { AuditStore, CampaignStore, JobStore } from './jobs.js';

export interface InstanceRecord {
  readonly id: string;
  readonly name: string;
  /** The names this instance may ever get certificates for. */
  readonly hostnames: readonly string[];
  readonly cluster: string | null;
  readonly keyAlgorithm: KeyAlgorithm;
  readonly createdAt: Date;
  /** Set while an agent session is open on some management-plane process. */
  readonly agentConnectedAt: Date | null;
  readonly agentLastSeenAt: Date | null;
  /** SHA-256 of the leaf the agent reports it serves now, or null. */
  readonly installedFingerprintSha256: string | null;
  /** ACME profile asked for in this instance's orders (e.g. tlsserver), or null for the CA's default. */
  readonly profile: string | null;
  /** Set once the instance is decommissioned: it owns no hostname, gets no certificate and its agent is cut off. */
  readonly decommissioned: DecommissionRecord | null;
}

/** Who decommissioned an instance, when, why, and what was decided for its live certificate. */
export interface DecommissionRecord {
  readonly at: Date;
  readonly requestedBy: string;
  readonly comment: string | null;
  /** `revoke`: the installed certificate was revoked first; `keep`: it stays valid until it expires. */
  readonly certificate: 'revoke' | 'keep';
  /** The RFC 5280 reason of that revocation (with `revoke`). */
  readonly revocationReason: RevocationReasonName | null;
}

/** What decommissioning changed besides the instance itself. */
export interface DecommissionOutcome {
  readonly instance: InstanceRecord;
  /** Agent certificates revoked now: their sessions are to be cut off. */
  readonly agentCertificates: readonly string[];
  readonly cancelledJobs: number;
  /** Hostnames released: another instance may register them. */
  readonly releasedHostnames: readonly string[];
}

export interface CertificateRecord {
  readonly id: string;
  readonly instanceId: string;
  /** Where it stands in the lifecycle (lifecycle/machine.ts); changed only by `certificates.apply`. */
  readonly status: CertificateState;
  /** When `status` last changed (cert-manager's lastTransitionTime). */
  readonly stateChangedAt: Date;
  /** Why it failed, typed (lifecycle/reasons.ts); null unless failed. */
  readonly failure: FailureReason | null;
  /** The ACME order placed for it, so a process that takes over can follow the same order. */
  readonly orderUrl: string | null;
  /** The process working on it and until when (see `certificates.lease`). */
  readonly leaseOwner: string | null;
  readonly leaseUntil: Date | null;
  readonly csrPem: string | null;
  /** Leaf and intermediates of the selected, verified chain. */
  readonly fullchainPem: string | null;
  readonly fingerprintSha256: string | null;
  readonly notAfter: Date | null;
  /** CN of the trust anchor the chain verifies to. */
  readonly anchorCN: string | null;
  /** The chain engine's VerificationReport, as JSON. */
  readonly report: unknown;
  readonly lastError: string | null;
  readonly createdAt: Date;
  readonly updatedAt: Date;
  readonly deliveredAt: Date | null;
  readonly installedAt: Date | null;
  readonly notBefore: Date | null;
  /** When the scheduler renews it: inside the CA's ARI window, else two thirds into the lifetime with jitter. */
  readonly renewAt: Date | null;
  /** When to ask the CA's renewal information again. */
  readonly ariRetryAt: Date | null;
  /** The certificate this one replaces (the ARI `replaces` of its order). */
  readonly replacesCertificateId: string | null;
  /** The renewal or reissue job that asked for it, if any. */
  readonly jobId: string | null;
  /** Who revoked it, why, when and which key signed; null unless revoked. */
  readonly revocation: RevocationRecord | null;
}

/** Fields a lifecycle event may set alongside the state. */
export type CertificateUpdate = Partial<
  Pick<
    CertificateRecord,
    'csrPem' | 'fullchainPem' | 'fingerprintSha256' | 'notAfter' | 'anchorCN' | 'report' | 'lastError' | 'deliveredAt' | 'installedAt' | 'notBefore' | 'failure' | 'orderUrl' | 'revocation'
  >
>;

export interface AgentCertificateRecord {
  readonly fingerprintSha256: string;
  readonly instanceId: string;
  readonly serialNumber: string;
  readonly notAfter: Date;
  readonly revokedAt: Date | null;
  readonly createdAt: Date;
  /** The certificate it was renewed from; null for one issued at enrollment. */
  readonly renewedFrom: string | null;
  /** When it first authenticated; null while its agent has not used it yet. */
  readonly firstUsedAt: Date | null;
  /** When its successor first authenticated: from then on it no longer authenticates. */
  readonly supersededAt: Date | null;
}

/** What an agent certificate renewal came to, decided while the instance's agent certificates are locked. */
export type AgentRenewalOutcome<T> =
  | { readonly outcome: 'renewed'; readonly minted: T; readonly replaced: readonly string[] }
  /** The presenting certificate is revoked, superseded or unknown: nothing was minted. */
  | { readonly outcome: 'refused' }
  /** The instance renewed less than the minimum interval ago: nothing was minted. */
  | { readonly outcome: 'rate_limited'; readonly retryAt: Date };

/**
 * One token bucket of the rate limiter as stored. The tokens are as of `updatedAt`; the
 * limiter refills them on read, so a bucket nobody touches costs no writes.
 */
export interface RateBucketRecord {
  readonly key: string;
  readonly tokens: number;
  readonly updatedAt: Date;
  /** Until when the CA told us to stop (its Retry-After), shared by every process. */
  readonly blockedUntil: Date | null;
  readonly blockedReason: string | null;
}

/** What a bucket update may set: everything but the key. */
export type RateBucketState = Omit<RateBucketRecord, 'key'>;

/** What a control-plane caller may do: readers read, operators also issue and reissue, admins also manage callers and agents. */
export type ApiRole = 'admin' | 'operator' | 'reader';

/** A control-plane caller, known by the SHA-256 of its client certificate. */
export interface ApiClientRecord {
  readonly fingerprintSha256: string;
  readonly name: string;
  readonly role: ApiRole;
  /** Clusters it may act on; null for all. */
  readonly clusters: readonly string[] | null;
  /** The client certificate's notAfter, when registered from the certificate itself. */
  readonly notAfter: Date | null;
  readonly createdAt: Date;
  readonly revokedAt: Date | null;
}

/** One reason a registration was refused: the name asked for, the name already held, and its holder. */
export interface HostnameConflict {
  readonly requested: string;
  readonly held: string;
  readonly instanceId: string;
  readonly cluster: string | null;
}

export interface Page<T> {
  readonly items: readonly T[];
  /** Opaque; pass back as `cursor` for the next page. Null on the last page. */
  readonly nextCursor: string | null;
}

export interface Store {
  readonly instances: {
    /**
     * Registers the instance and claims its (normalised) hostnames in one transaction. A name
     * belongs to one instance: INSTANCE_HOSTNAME_TAKEN, with the holders in
     * `details.conflicts` (HostnameConflict[]), when another instance holds one of them or a
     * wildcard and a name it covers would be split between two instances.
     */
    create(input: { name: string; hostnames: readonly string[]; cluster: string | null; keyAlgorithm: KeyAlgorithm; profile?: string | null }): Promise<InstanceRecord>;
    get(id: string): Promise<InstanceRecord | undefined>;
    /**
     * Stable order (creation, then id); `limit` is trusted to be already bounded by the caller.
     * With `clusters`, only instances of those clusters (none without a cluster), so that
     * neither the items nor the cursor ever point at an instance outside them. Decommissioned
     * instances only with `includeDecommissioned`.
     */
    list(page: { cursor?: string; limit: number; clusters?: readonly string[] | null; includeDecommissioned?: boolean }): Promise<Page<InstanceRecord>>;
    /**
     * Decommissions the instance in one transaction, serialised with its agent certificates'
     * renewals and uses: records who and why, releases its hostnames, cancels its open jobs,
     * spends its unused enrollment tokens and revokes every agent certificate it holds.
     * STORE_NOT_FOUND for an unknown instance, INSTANCE_DECOMMISSIONED when it already was.
     */
    decommission(id: string, record: DecommissionRecord): Promise<DecommissionOutcome>;
    /** Which of `names` (normalised) the instance owns: what it may put in a CSR. */
    ownedNames(instanceId: string, names: readonly string[]): Promise<string[]>;
    /** Names instances list but do not own (an older instance held them when ownership began), at most `limit`. */
    unownedHostnames(limit: number): Promise<{ instanceId: string; name: string }[]>;
    setAgentConnected(id: string, connectedAt: Date | null): Promise<void>;
    touchAgent(id: string, at: Date): Promise<void>;
    setInstalledFingerprint(id: string, fingerprintSha256: string | null): Promise<void>;
  };
  readonly enrollmentTokens: {
    /** Stores only the token's SHA-256; the token itself is shown once, to the caller that created the instance. */
    create(instanceId: string, tokenSha256: string, expiresAt: Date): Promise<void>;
    /** The instance a usable (unspent, unexpired at `now`) token enrolls, without spending it; undefined otherwise. */
    find(tokenSha256: string, now: Date): Promise<string | undefined>;
    /** Atomically marks the token used and returns its instance id; undefined if unknown, used or expired at `now`. */
    consume(tokenSha256: string, now: Date): Promise<string | undefined>;
  };
  readonly apiClients: {
    /** Registers (or re-registers, clearing a revocation) a caller's certificate. */
    register(input: { fingerprintSha256: string; name: string; role: ApiRole; clusters: readonly string[] | null; notAfter: Date | null }): Promise<ApiClientRecord>;
    get(fingerprintSha256: string): Promise<ApiClientRecord | undefined>;
    list(): Promise<ApiClientRecord[]>;
    revoke(fingerprintSha256: string, at: Date): Promise<boolean>;
  };
  readonly agentCertificates: {
    /** Every agent certificate, newest first, at most `limit`. */
    list(limit: number): Promise<AgentCertificateRecord[]>;
    /** Fingerprints revoked or superseded after `since`: how other processes learn to cut an agent off. */
    revokedSince(since: Date): Promise<string[]>;
    record(input: { fingerprintSha256: string; instanceId: string; serialNumber: string; notAfter: Date }): Promise<void>;
    get(fingerprintSha256: string): Promise<AgentCertificateRecord | undefined>;
    /**
     * Revokes the certificate and every certificate renewed from it, directly or not (whoever
     * held its key could have minted them); returns the fingerprints revoked now, empty when
     * it is unknown or all of them already were.
     */
    revoke(fingerprintSha256: string, at: Date): Promise<string[]>;
    /**
     * Revokes every agent certificate of the instance. Serialised with `renew` and `use` on
     * the instance, so a certificate minted concurrently is either revoked here or never minted.
     */
    revokeInstance(instanceId: string, at: Date): Promise<string[]>;
    /**
     * Renews `predecessor`, atomically with respect to revocation: with the instance's agent
     * certificates locked, checks that the predecessor is still valid and the instance did not
     * renew within `minIntervalMs`, revokes any successor of the predecessor that was never
     * used (at most one is valid), then runs `mint` (which signs the certificate) and records
     * what it returns. Nothing is signed unless it is also recorded.
     */
    renew<T extends { fingerprintSha256: string; serialNumber: string; notAfter: Date }>(
      input: { instanceId: string; predecessor: string; at: Date; minIntervalMs: number },
      mint: () => Promise<T>,
    ): Promise<AgentRenewalOutcome<T>>;
    /**
     * Records that the certificate authenticated, superseding the certificate it was renewed
     * from. Returns the record as it is now (a revocation that raced the authentication shows
     * here), and the fingerprint it superseded, if any.
     */
    use(fingerprintSha256: string, at: Date): Promise<{ record: AgentCertificateRecord | undefined; superseded: string | null }>;
  };
  readonly certificates: {
    /** A new request in status `pending`; STORE_CONFLICT when the instance already has an open one (replicas racing). */
    create(instanceId: string): Promise<CertificateRecord>;
    get(id: string): Promise<CertificateRecord | undefined>;
    /** The most recently created certificate of the instance. */
    latest(instanceId: string): Promise<CertificateRecord | undefined>;
    /** The most recent certificate in status `installed`. */
    latestInstalled(instanceId: string): Promise<CertificateRecord | undefined>;
    /** Certificates of the instance still in an open status, oldest first. */
    open(instanceId: string): Promise<CertificateRecord[]>;
    /**
     * Applies a lifecycle event as one compare-and-set: the certificate moves to the state the
     * transition table gives (setting `fields`) only if it is in one of the states the event
     * may leave. Undefined when the event is stale (another actor, or a repeated message,
     * got there first: this is what makes delivery idempotent); LIFECYCLE_TRANSITION_REFUSED
     * when the table has no such arc from the current state. `installed` also supersedes the
     * instance's previously installed certificate; `failed` needs `failure` and `lastError`.
     * With `leaseOwner`, the event applies only while that process holds the certificate's
     * lease: a process that lost its lease (stalled, cut off) can no longer write over the
     * one that took the order over; its event is stale.
     */
    apply(id: string, event: LifecycleEvent, fields?: CertificateUpdate, condition?: { leaseOwner: string }): Promise<CertificateRecord | undefined>;
    /** Links a still-pending certificate to the job that asked for it and the certificate it replaces; no change of state. */
    attachJob(id: string, jobId: string, replacesCertificateId: string | null): Promise<CertificateRecord | undefined>;
    /** Records when an installed certificate renews and when to ask the CA's renewal information again; no change of state. */
    setRenewal(id: string, renewal: { renewAt?: Date; ariRetryAt: Date | null }): Promise<void>;
    /**
     * Takes or extends the lease that lets `owner` work on the certificate until `until`:
     * true when it was free, lapsed by `now` (the caller's clock, as every deadline here), or already `owner`'s. Whoever orders holds it, so two
     * processes never order the same certificate; a process that dies lets it lapse.
     */
    lease(id: string, owner: string, now: Date, until: Date): Promise<boolean>;
    /** Gives the lease up (the work finished, failed or was stopped); only `owner`'s lease is released. */
    release(id: string, owner: string): Promise<void>;
  };
  readonly jobs: JobStore;
  readonly campaigns: CampaignStore;
  readonly audit: AuditStore;
  readonly rateBuckets: {
    /** The stored buckets among `keys`, read without locking; keys never used are absent. For forecasts that take nothing. */
    get(keys: readonly string[]): Promise<RateBucketRecord[]>;
    /**
     * One atomic read-modify-write of several buckets, across every process sharing the
     * database: creates each bucket of `initial` that does not exist yet in the state given
     * there, locks all of them (in key order, so two callers never deadlock), hands their
     * stored state to `decide` and writes back the records it returns, all in one
     * transaction. `decide` holds the policy and must not do I/O: it runs while the rows are locked.
     */
    update<T>(
      initial: ReadonlyMap<string, RateBucketState>,
      decide: (buckets: ReadonlyMap<string, RateBucketRecord>) => { readonly write: readonly RateBucketRecord[]; readonly result: T },
    ): Promise<T>;
  };
  /** Raw SQL, for operations and for tests that inspect what is stored. */
  query<T = Record<string, unknown>>(sql: string, params?: readonly unknown[]): Promise<T[]>;
  /** Which engine: "pglite" or "postgres". */
  readonly engine: 'pglite' | 'postgres';
  close(): Promise<void>;
}
