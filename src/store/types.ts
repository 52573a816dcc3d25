/**
 * What the management plane keeps, and the operations it needs on it. One interface,
 * two engines of one dialect (PGlite embedded, PostgreSQL server), so every room above
 * talks to records, never to a driver. No private key is ever a field here: the plane
 * stores CSRs, public chains and fingerprints only.
 */
import type { KeyAlgorithm } from '../chain/index.js';
import type { CertificateState, FailureReason, LifecycleEvent, RevocationReasonName, RevocationRecord } from '../lifecycle/index.js';
import type { AuditStore, CampaignStore, JobStore } from './jobs.js';

/**
 * Connections each process keeps to a PostgreSQL server (CERTPLANE_DATABASE_POOL_SIZE): the
 * default and the bounds, here because configuration checks them and the engine applies
 * them, and this file loads no driver. All are opened at start and kept. Measured on
 * 2026-12-03 (docs/testing.md, "A fixed pool of 8"): the pool of 20 that grew on demand
 * (8 warm) cost the server about 40 ms of CPU per new connection (its backend, and each
 * statement prepared again on it), so a plane's first waves paid for a dozen more of them:
 * 19 to 28 ms of server CPU per certificate in a 20-agent part against 11 to 17 with 8
 * kept, and 8 kept was as fast as the growing pool or faster in every part of the bench
 * (the 1,000-instance campaign, bound by the plane's own CPU, the same). Before statements
 * were prepared, 10 connections had held a campaign back (12.9/s against 15.8/s with 20);
 * with them, they no longer do.
 */
export const DATABASE_POOL_SIZE = { default: 8, min: 1, max: 200 } as const;

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
  /** SHA-256 of the leaf in the agent's live/fullchain.pem as it last reported it, or null: installed, which is not necessarily served. */
  readonly installedFingerprintSha256: string | null;
  /** ACME profile asked for in this instance's orders (e.g. tlsserver), or null for the CA's default. */
  readonly profile: string | null;
  /** Whether the agent's connection alone starts issuance when the instance holds no valid certificate. */
  readonly autoIssue: boolean;
  /** The trust profiles (client trust stores) its certificate's chain must verify in. */
  readonly trustProfiles: readonly string[];
  /** Set once the instance is decommissioned: it owns no hostname, gets no certificate and its agent is cut off. */
  readonly decommissioned: DecommissionRecord | null;
}

/** What `instances.update` may change; absent fields stay as they are. */
export interface InstanceChanges {
  readonly name?: string;
  /** The complete new set of names, normalised. */
  readonly hostnames?: readonly string[];
  readonly cluster?: string | null;
  readonly keyAlgorithm?: KeyAlgorithm;
  readonly profile?: string | null;
  readonly autoIssue?: boolean;
}

/** Where an instance stands in listings: the state of its most recent certificate, or `none` before the first. */
export type InstanceStatus = CertificateState | 'none';

/** Narrows a listing; every field given must hold. */
export interface InstanceFilter {
  readonly cluster?: string;
  readonly status?: InstanceStatus;
  /** A normalised name the instance lists. */
  readonly hostname?: string;
  /** Whether its installed certificate is past five sixths of its lifetime (lifecycle/renewal.ts), as of `now`. */
  readonly atRisk?: boolean;
}

/** Counts over the instances a caller may see. */
export interface InstanceSummary {
  readonly total: number;
  readonly byStatus: Readonly<Record<InstanceStatus, number>>;
  readonly atRisk: number;
  readonly agentsConnected: number;
}

/** One chain the CA offered for a certificate, kept with its verdict in every trust profile. */
export interface StoredChainRecord {
  readonly certificateId: string;
  /** Position among the offered chains: 0 is the CA's default. */
  readonly index: number;
  /** As the CA sent it (leaf first). */
  readonly pem: string;
  readonly topIssuerCN: string;
  /** The chain delivered; certificates.fullchain_pem is its verified path. */
  readonly selected: boolean;
  /** The chain engine's ProfileVerdicts by profile name, as JSON. */
  readonly verification: unknown;
  /** When this verdict was reached; a later judgement that finds the same verdict under the same settings leaves it. */
  readonly evaluatedAt: Date;
  /** TrustSettings.fingerprint of the settings `verification` was made under. */
  readonly trustFingerprint: string;
}

/** How the last trust evaluation judged an instance's installed certificate. */
export interface InstanceTrustRecord {
  readonly instanceId: string;
  readonly certificateId: string;
  readonly status: 'ok' | 'broken';
  readonly brokenProfiles: readonly string[];
  /** A stored chain of the same certificate that verifies in every profile, when the installed one does not. */
  readonly alternateChainIndex: number | null;
  readonly evaluatedAt: Date;
  readonly trustFingerprint: string;
}

/** What the instance's service served when its agent last probed it, as the plane judged it. */
export interface InstanceServedRecord {
  readonly instanceId: string;
  /** The certificate installed when the report was judged; null when none was. */
  readonly certificateId: string | null;
  readonly status: 'match' | 'stale' | 'wrong-chain' | 'unreachable';
  readonly checkedAt: Date;
  /** SHA-256 of the served leaf the status is about. */
  readonly fingerprintSha256: string | null;
  readonly anchor: string | null;
  readonly problems: readonly { readonly target: string; readonly sni: string | null; readonly code: string; readonly message: string }[];
}

/**
 * One live instance as the fleet metrics show it, read at scrape time: the dates of its
 * installed certificate and the trust verdict of that certificate.
 */
export interface FleetInstanceRecord {
  readonly instanceId: string;
  readonly cluster: string | null;
  /** The installed certificate's notAfter; null when none is installed (or its date is unknown). */
  readonly notAfter: Date | null;
  /** When the installed certificate is due for renewal; null when none is installed or no time is set. */
  readonly renewAt: Date | null;
  /** The last trust evaluation of the installed certificate; null when none is installed or it was not judged yet. */
  readonly trustStatus: 'ok' | 'broken' | null;
  /** What the instance's service served when its agent last probed it, as it stands for the certificate installed now; null: never probed. */
  readonly servedStatus: InstanceServedRecord['status'] | null;
}

/** The last trust reload as its audit entry records it. */
export interface TrustReloadRecord {
  readonly at: Date;
  /** Instances whose installed chain the reload found broken in one of their profiles. */
  readonly broken: number;
  /** Of those, the ones with a stored chain of the same certificate that verifies everywhere. */
  readonly alternateAvailable: number;
}

/** An instance with its installed certificate (if any) and that certificate's stored chains: what trust evaluation reads. */
export interface InstalledChainsRecord {
  readonly instance: Pick<InstanceRecord, 'id' | 'name' | 'cluster' | 'createdAt' | 'trustProfiles'>;
  readonly certificateId: string | null;
  /** The installed path, for certificates issued before chains were stored (then the only chain known); null when chains are stored. */
  readonly fullchainPem: string | null;
  readonly chains: readonly Pick<StoredChainRecord, 'index' | 'pem' | 'selected'>[];
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
  /** For a rechain: the record whose leaf and key it delivers on another stored chain; null for a certificate that was ordered. */
  readonly rechainedFromId: string | null;
}

/** What a rechain record carries: the chosen stored chain's verified path and what was judged of it. */
export interface RechainInput {
  readonly instanceId: string;
  /** The installed certificate re-chained; it must still be installed. */
  readonly rechainedFromId: string;
  /** The stored chain delivered (its index in certificate_chains). */
  readonly chainIndex: number;
  /** Leaf and intermediates of the chosen chain's verified path: what is delivered. */
  readonly fullchainPem: string;
  readonly anchorCN: string | null;
  readonly report: unknown;
  /** The rechain job that asked for it. */
  readonly jobId: string | null;
}

/** Fields a lifecycle event may set alongside the state. */
export type CertificateUpdate = Partial<
  Pick<
    CertificateRecord,
    'csrPem' | 'fullchainPem' | 'fingerprintSha256' | 'notAfter' | 'anchorCN' | 'report' | 'lastError' | 'deliveredAt' | 'installedAt' | 'notBefore' | 'failure' | 'orderUrl' | 'revocation'
  >
>;

/** What must also hold for `certificates.apply` to move a certificate. */
export interface ApplyCondition {
  /**
   * Only while this process holds the certificate's lease: a process that lost its lease
   * (stalled, cut off) can no longer write over the one that took the order over; its event is stale.
   */
  readonly leaseOwner?: string;
  /** Gives the lease up in the same write (the holder's last step of the order); needs `leaseOwner`. */
  readonly releaseLease?: boolean;
  /** Only a certificate of this instance: an agent speaks for its own instance. */
  readonly instanceId?: string;
  /** Only the certificate with this fingerprint (the one an agent says it installed). */
  readonly fingerprintSha256?: string;
}

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

/** One certificate the fallback pass found changed: enough to tell whether, and whom, to wake. */
export interface CertificateChange {
  readonly id: string;
  readonly instanceId: string;
  readonly status: CertificateState;
  /** When it last changed, or when its lease lapsed: with the id, what makes a change seen twice recognisable. */
  readonly changedAt: Date;
}

/** A notification: this certificate of this instance entered `status`, where it waits for the process holding the agent's channel. */
export type AgentWork = Omit<CertificateChange, 'changedAt'>;

export interface Store {
  readonly instances: {
    /**
     * Registers the instance and claims its (normalised) hostnames in one transaction. A name
     * belongs to one instance: INSTANCE_HOSTNAME_TAKEN, with the holders in
     * `details.conflicts` (HostnameConflict[]), when another instance holds one of them or a
     * wildcard and a name it covers would be split between two instances. Without
     * `autoIssue`, issuance is left to the caller (the API's own default is on).
     */
    create(input: { name: string; hostnames: readonly string[]; cluster: string | null; keyAlgorithm: KeyAlgorithm; profile?: string | null; autoIssue?: boolean; trustProfiles?: readonly string[] }): Promise<InstanceRecord>;
    get(id: string): Promise<InstanceRecord | undefined>;
    /**
     * Changes the instance in one transaction, names included: names it no longer lists are
     * released, new ones claimed under the same locks and rules as `create`
     * (INSTANCE_HOSTNAME_TAKEN with `details.conflicts`, nothing changed). `allow` sees the
     * instance as it is once locked and may refuse by throwing (a caller's cluster limits);
     * undefined when there is no such instance. Returns the instance before and after.
     */
    update(id: string, changes: InstanceChanges, allow?: (current: InstanceRecord) => void): Promise<{ before: InstanceRecord; after: InstanceRecord } | undefined>;
    /**
     * Stable order (creation, then id); `limit` is trusted to be already bounded by the caller.
     * With `clusters`, only instances of those clusters (none without a cluster), so that
     * neither the items nor the cursor ever point at an instance outside them. `filter`
     * narrows further; `now` is the time "at risk" is judged at.
     */
    list(page: { cursor?: string; limit: number; clusters?: readonly string[] | null; filter?: InstanceFilter; now?: Date; includeDecommissioned?: boolean }): Promise<Page<InstanceRecord>>;
    /** Counts by status, at risk and connected, over the instances of `clusters` (all when null), in one query. */
    summary(query: { clusters: readonly string[] | null; now: Date }): Promise<InstanceSummary>;
    /**
     * Decommissions the instance in one transaction, serialised with its agent certificates'
     * renewals and uses: records who and why, releases its hostnames, cancels its open jobs,
     * spends its unused enrollment tokens and revokes every agent certificate it holds.
     * STORE_NOT_FOUND for an unknown instance, INSTANCE_DECOMMISSIONED when it already was.
     */
    decommission(id: string, record: DecommissionRecord): Promise<DecommissionOutcome>;
    /** Which of `names` (normalised) the instance owns: what it may put in a CSR. */
    ownedNames(instanceId: string, names: readonly string[]): Promise<string[]>;
    /** The instance and which of `names` (normalised) it owns, in one read: what a CSR's check needs. */
    withOwnedNames(instanceId: string, names: readonly string[]): Promise<{ instance: InstanceRecord; owned: string[] } | undefined>;
    /** Names instances list but do not own (an older instance held them when ownership began), at most `limit`. */
    unownedHostnames(limit: number): Promise<{ instanceId: string; name: string }[]>;
    /** The agent's connection, or null when it ended; a connection also sets when the agent was last seen (its authentication). */
    setAgentConnected(id: string, connectedAt: Date | null): Promise<void>;
    /** When the agent was last seen (a message); never moved back to an earlier time. */
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
    /**
     * `link` names the job that asked and the certificate it replaces, written with the row so a
     * process dying right after cannot leave a job's certificate unlinked (its job, claimed
     * again, finds it); the job's own pointer (`certificateId`) is written in the same statement
     * when the job is running (a job that failed or waits for its retry points at nothing).
     * `notify: false` creates it without the wake-up notification (`wakeups`), for a caller
     * that holds the instance's agent channel and asks for the CSR itself. On PostgreSQL a
     * notifying commit is serialised with every other notifying commit, which made each
     * creation of a 20-agent wave wait for the others. An agent that connects elsewhere
     * meanwhile still finds the certificate (on connecting, or at the fallback pass).
     */
    create(instanceId: string, link?: { jobId?: string; replacesCertificateId?: string; notify?: boolean }): Promise<CertificateRecord>;
    /**
     * A rechain record (lifecycle ENTRIES.rechained: it starts `issued`, so the delivery
     * machinery sends it at once): the leaf, key, CSR and dates of `rechainedFromId`, the chain
     * given, and a copy of its stored chains with `chainIndex` marked selected, so a later trust
     * change can re-chain it again. In one transaction with the original locked:
     * LIFECYCLE_TRANSITION_REFUSED when it is no longer installed, STORE_CONFLICT when the
     * instance has an open certificate.
     */
    createRechain(input: RechainInput): Promise<CertificateRecord>;
    get(id: string): Promise<CertificateRecord | undefined>;
    /** The most recently created certificate of the instance. */
    latest(instanceId: string): Promise<CertificateRecord | undefined>;
    /** The most recent certificate in status `installed`. */
    latestInstalled(instanceId: string): Promise<CertificateRecord | undefined>;
    /** The most recent certificate a job started: what a job claimed again must finish rather than order twice. */
    latestOfJob(jobId: string): Promise<CertificateRecord | undefined>;
    /** How many certificates are in each state (states with none are left out), for the admin console. */
    countByStatus(): Promise<Partial<Record<CertificateState, number>>>;
    /**
     * Installed certificates whose ARI window is due to be asked again by `now`, oldest first, at
     * most `limit`: only the current certificate of an instance that is not decommissioned.
     */
    ariDue(now: Date, limit: number): Promise<CertificateRecord[]>;
    /**
     * `latest` and `latestInstalled` of many instances in two queries, by instance id (ids
     * without certificates are absent): what one page of the listing shows.
     */
    latestOf(instanceIds: readonly string[]): Promise<Map<string, { readonly latest?: CertificateRecord; readonly installed?: CertificateRecord }>>;
    /**
     * What a job's start reads, in one statement: `found`, the certificate the job points at
     * (without a pointer, the newest it started), and `installed`, its instance's newest
     * installed certificate.
     */
    ofJob(job: { readonly id: string; readonly instanceId: string; readonly certificateId: string | null }): Promise<{ readonly found?: CertificateRecord; readonly installed?: CertificateRecord }>;
    /** Certificates of the instance still in an open status, oldest first. */
    open(instanceId: string): Promise<CertificateRecord[]>;
    /**
     * Applies a lifecycle event as one compare-and-set: the certificate moves to the state the
     * transition table gives (setting `fields`) only if it is in one of the states the event
     * may leave. Undefined when the event is stale (another actor, or a repeated message,
     * got there first: this is what makes delivery idempotent); LIFECYCLE_TRANSITION_REFUSED
     * when the table has no such arc from the current state. Several events (in the table's
     * order, lifecycle/machine.ts `composedArc`) are applied as one write. `installed` also
     * supersedes the instance's previously installed certificate and records its fingerprint
     * as the instance's installed one, in the same statement; `failed` needs `failure` and
     * `lastError`. The condition narrows what may move (see ApplyCondition); a certificate it
     * does not name is left alone and its state is not told (undefined).
     */
    apply(id: string, event: LifecycleEvent | readonly [LifecycleEvent, ...LifecycleEvent[]], fields?: CertificateUpdate, condition?: ApplyCondition): Promise<CertificateRecord | undefined>;
    /** Links a still-pending certificate to the job that asked for it (both ways: the running job's `certificateId` too) and the certificate it replaces; no change of state. */
    attachJob(id: string, jobId: string, replacesCertificateId: string | null): Promise<CertificateRecord | undefined>;
    /** Records when an installed certificate renews and when to ask the CA's renewal information again; no change of state. */
    setRenewal(id: string, renewal: { renewAt?: Date; ariRetryAt: Date | null }): Promise<void>;
    /**
     * Takes the lease that lets `owner` work on the certificate for `durationMs`: true when it
     * was free or lapsed. Whoever orders holds it, so two processes never order the same
     * certificate; a process that dies lets it lapse. A live lease is not taken again, not
     * even by its holder: a certificate parked under its lease (the rate limiter's wait) stays
     * parked. Expiry and lapse are read on the database's clock, the one clock every process shares.
     */
    lease(id: string, owner: string, durationMs: number): Promise<boolean>;
    /**
     * `lease`, returning the certificate as it stands under the new lease (undefined: not
     * taken) and the failed attempts of the job it answers (null: no job), so the holder reads
     * what an order needs in the same statement.
     */
    leaseForOrder(id: string, owner: string, durationMs: number): Promise<{ readonly certificate: CertificateRecord; readonly jobAttempts: number | null } | undefined>;
    /**
     * The agent's CSR accepted (`csr_accepted` on instance `instanceId`'s pending certificate,
     * as `apply` with that condition) and the order's lease taken for `owner`, as
     * `leaseForOrder` does, in one statement: for the process that holds an order slot and
     * orders at once. Undefined when either does not apply (not this instance's pending
     * certificate, or its lease is held); nothing is written then.
     */
    acceptCsrForOrder(id: string, csrPem: string, instanceId: string, owner: string, durationMs: number): Promise<{ readonly certificate: CertificateRecord; readonly jobAttempts: number | null } | undefined>;
    /**
     * Extends (or shortens) `owner`'s lease to `durationMs` from now on the database's clock:
     * false when another process holds it now, so the caller knows it lost the work.
     */
    renewLease(id: string, owner: string, durationMs: number): Promise<boolean>;
    /** Gives the lease up (the work finished, failed or was stopped); only `owner`'s lease is released. */
    release(id: string, owner: string): Promise<void>;
    /**
     * What a process's agents may be waiting for, as seen by the fallback pass: the open
     * certificates changed after `since`, and those whose ordering lease lapsed after it
     * (by the database's clock, which every process shares), with that clock's time of the
     * read. One indexed query whose answer grows with what changed, never with the fleet.
     */
    changedSince(since: Date): Promise<{ readonly changes: readonly CertificateChange[]; readonly readAt: Date }>;
  };
  /**
   * Wake-ups for the process holding an agent's channel: `onWork` hears of every
   * certificate that now waits for its agent (a new request, unless its creator asks the
   * agent itself: certificates.create's `notify`; an issued chain; an order released by its
   * process), from any process sharing the database. Until
   * the returned function is called. `onResubscribed` says that some may have been missed.
   */
  readonly wakeups: {
    listen(onWork: (work: AgentWork) => void, onResubscribed: () => void): Promise<() => Promise<void>>;
  };
  readonly chains: {
    /** Keeps every chain offered for a certificate (once: a repeated call changes nothing). */
    record(certificateId: string, chains: readonly Omit<StoredChainRecord, 'certificateId'>[]): Promise<void>;
    /** The certificate's stored chains, by index. */
    list(certificateId: string): Promise<StoredChainRecord[]>;
  };
  readonly trust: {
    /**
     * Instances (creation order) with their installed certificate's stored chains, in one
     * snapshot: what a reload re-judges and a what-if reads. `clusters` limits to those clusters
     * (null for all), `instanceIds` to those instances.
     */
    installed(filter: { clusters?: readonly string[] | null; instanceIds?: readonly string[] }): Promise<InstalledChainsRecord[]>;
    /**
     * Stores evaluations, one per instance, replacing earlier ones, and the verdicts of stored
     * chains judged with them, in one statement: a chain's verdict is replaced only when it
     * differs, or was made under other trust settings (a fingerprint of its own).
     */
    record(rows: readonly InstanceTrustRecord[], chains?: readonly Pick<StoredChainRecord, 'certificateId' | 'index' | 'verification' | 'evaluatedAt' | 'trustFingerprint'>[]): Promise<void>;
    /** The stored evaluations of `instanceIds`. */
    of(instanceIds: readonly string[]): Promise<Map<string, InstanceTrustRecord>>;
  };
  readonly served: {
    /** Stores the judgement of an instance's latest served-chain report, replacing the previous one. */
    record(row: InstanceServedRecord): Promise<void>;
    /** The stored judgements of `instanceIds`. */
    of(instanceIds: readonly string[]): Promise<Map<string, InstanceServedRecord>>;
  };
  /**
   * What the fleet metrics read at every scrape, from the database, so every process
   * reports the same values and a restart resets nothing.
   */
  readonly fleet: {
    /** Every instance not decommissioned (creation order) with its installed certificate's dates and trust verdict, in one query. */
    instances(): Promise<FleetInstanceRecord[]>;
    /** The latest `trust.reload` of the audit trail; undefined before the first. */
    lastTrustReload(): Promise<TrustReloadRecord | undefined>;
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
  /** One round trip to the database: what readiness means. */
  ping(): Promise<void>;
  /** Raw SQL, for tests that inspect what is stored (production code uses the named methods). */
  query<T = Record<string, unknown>>(sql: string, params?: readonly unknown[]): Promise<T[]>;
  /** Which engine: "pglite" or "postgres". */
  readonly engine: 'pglite' | 'postgres';
  close(): Promise<void>;
}
