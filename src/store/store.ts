/**
 * The Store contract over SQL that both engines run unchanged. Every state change that
 * two actors may race on (consuming an enrollment token, moving a certificate between
 * statuses) is one conditional UPDATE, so the database, not the caller, decides who won.
 * Rate buckets, whose next state the limiter computes, are instead locked for the length
 * of one transaction, which serialises their callers across processes just the same.
 */
import { randomUUID } from 'node:crypto';
import type { KeyAlgorithm } from '../chain/index.js';
import { coveringParent, normaliseDnsName } from '../chain/index.js';
import { CertplaneError, hasCode } from '../errors.js';
import { openDatabase, type Database, type OpenOptions, type Queryable } from './engines.js';
import { migrate } from './migrations.js';
import { servedStandingNow } from '../chain/index.js';
import { SqlAudit, SqlCampaigns, SqlJobs } from './jobs.js';
import { AT_RISK_FRACTION, CERTIFICATE_STATES, ENTRIES, OPEN_STATES, ORDERING_STATES, TRANSITIONS, classify, composedArc, refusal, type CertificateState, type FailureReason, type RevocationRecord } from '../lifecycle/index.js';
import {
  type AgentCertificateRecord,
  type ApiClientRecord,
  type CertificateRecord,
  type CertificateUpdate,
  type DecommissionRecord,
  type HostnameConflict,
  type InstanceFilter,
  type InstalledChainsRecord,
  type InstanceRecord,
  type InstanceServedRecord,
  type InstanceStatus,
  type Page,
  type RateBucketRecord,
  type Store,
} from './types.js';
import { ErrorCode } from '../error-catalogue.js';

/**
 * Opens the database named by `url` (postgres://, postgresql://, pglite:PATH or memory:)
 * and brings its schema up to date before anything else may use it.
 */
export async function openStore(url: string, options: OpenOptions = {}): Promise<Store> {
  const db = await openDatabase(url, options);
  try {
    await migrate(db);
  } catch (error) {
    await db.close();
    throw error;
  }
  return new SqlStore(db);
}

/** Up to this many named instances, trust.installed reads in one statement (see there). */
const FEW_INSTANCES = 100;
/** Ids are uuids; anything else cannot name a record, and must not reach a uuid parameter. */
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** Microsecond precision, because that is what the database keeps: paging must not lose it. */
const CURSOR_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/;
const CURSOR_TIME_SQL = `to_char(i.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;

interface InstanceRow {
  id: string;
  name: string;
  hostnames: string[];
  cluster: string | null;
  key_algorithm: string;
  created_at: Date;
  agent_connected_at: Date | null;
  agent_last_seen_at: Date | null;
  installed_fingerprint_sha256: string | null;
  profile: string | null;
  auto_issue: boolean;
  trust_profiles: string[];
  decommissioned_at: Date | null;
  decommission: { requestedBy: string; comment: string | null; certificate: 'revoke' | 'keep'; revocationReason: DecommissionRecord['revocationReason'] } | null;
}

interface CertificateRow {
  id: string;
  instance_id: string;
  status: CertificateState;
  state_changed_at: Date;
  failure: FailureReason | null;
  order_url: string | null;
  lease_owner: string | null;
  lease_until: Date | null;
  csr_pem: string | null;
  fullchain_pem: string | null;
  fingerprint_sha256: string | null;
  not_after: Date | null;
  anchor_cn: string | null;
  report: unknown;
  last_error: string | null;
  created_at: Date;
  updated_at: Date;
  delivered_at: Date | null;
  installed_at: Date | null;
  not_before: Date | null;
  renew_at: Date | null;
  ari_retry_at: Date | null;
  replaces_certificate_id: string | null;
  job_id: string | null;
  revocation: RevocationRecord | null;
  rechained_from_id: string | null;
}

interface StoredChainRow {
  certificate_id: string;
  chain_index: number;
  chain_pem: string;
  top_issuer_cn: string;
  selected: boolean;
  verification: unknown;
  evaluated_at: Date;
  trust_fingerprint: string;
}

interface ApiClientRow {
  fingerprint_sha256: string;
  name: string;
  role: ApiClientRecord['role'];
  clusters: string[] | null;
  not_after: Date | null;
  created_at: Date;
  revoked_at: Date | null;
}

function toApiClient(row: ApiClientRow): ApiClientRecord {
  return {
    fingerprintSha256: row.fingerprint_sha256,
    name: row.name,
    role: row.role,
    clusters: row.clusters,
    notAfter: row.not_after,
    createdAt: row.created_at,
    revokedAt: row.revoked_at,
  };
}

interface AgentCertificateRow {
  fingerprint_sha256: string;
  instance_id: string;
  serial_number: string;
  not_after: Date;
  revoked_at: Date | null;
  created_at: Date;
  renewed_from: string | null;
  first_used_at: Date | null;
  superseded_at: Date | null;
}

interface RateBucketRow {
  key: string;
  tokens: number;
  updated_at: Date;
  blocked_until: Date | null;
  blocked_reason: string | null;
}

/** Column and SQL type of every field a lifecycle event may set; only these keys ever reach SQL. */
const UPDATE_COLUMNS: { readonly [K in keyof Required<CertificateUpdate>]: readonly [column: string, type: string] } = {
  csrPem: ['csr_pem', 'text'],
  fullchainPem: ['fullchain_pem', 'text'],
  fingerprintSha256: ['fingerprint_sha256', 'text'],
  notAfter: ['not_after', 'timestamptz'],
  anchorCN: ['anchor_cn', 'text'],
  report: ['report', 'jsonb'],
  lastError: ['last_error', 'text'],
  deliveredAt: ['delivered_at', 'timestamptz'],
  installedAt: ['installed_at', 'timestamptz'],
  notBefore: ['not_before', 'timestamptz'],
  failure: ['failure', 'jsonb'],
  orderUrl: ['order_url', 'text'],
  revocation: ['revocation', 'jsonb'],
};

class SqlStore implements Store {
  readonly engine: Store['engine'];

  readonly jobs: Store['jobs'];
  readonly campaigns: Store['campaigns'];
  readonly audit: Store['audit'];

  constructor(private readonly db: Database) {
    this.engine = db.engine;
    this.jobs = new SqlJobs(db);
    this.campaigns = new SqlCampaigns(db);
    this.audit = new SqlAudit(db);
  }

  readonly instances: Store['instances'] = {
    create: (input) =>
      this.db.transaction(async (tx) => {
        const names = [...new Set(input.hostnames.map(normaliseDnsName))];
        await claimHostnames(tx, null, names);
        const [row] = await tx.query<InstanceRow>(
          'INSERT INTO instances (id, name, hostnames, cluster, key_algorithm, profile, auto_issue, trust_profiles) VALUES ($1, $2, $3::text[], $4, $5, $6, $7, $8::text[]) RETURNING *',
          [randomUUID(), input.name, names, input.cluster, input.keyAlgorithm, input.profile ?? null, input.autoIssue ?? false, [...(input.trustProfiles ?? ['default'])]],
        );
        const instance = toInstance(inserted(row));
        await recordClaims(tx, instance.id, names);
        return instance;
      }),
    update: async (id, changes, allow) => {
      if (!UUID.test(id)) return undefined;
      return this.db.transaction(async (tx) => {
        // The row first, then the names' locks: nothing takes them the other way round, so
        // two changes of one instance queue here and never deadlock with a registration.
        const [row] = await tx.query<InstanceRow>('SELECT * FROM instances WHERE id = $1 FOR NO KEY UPDATE', [id]);
        if (!row) return undefined;
        const before = toInstance(row);
        allow?.(before);
        const assignments: string[] = [];
        const params: unknown[] = [id];
        const set = (column: string, value: unknown, type: string) => {
          params.push(value);
          assignments.push(`${column} = $${params.length}::${type}`);
        };
        if (changes.hostnames !== undefined) {
          const names = [...new Set(changes.hostnames.map(normaliseDnsName))];
          const owned = (await tx.query<{ name: string }>('SELECT name FROM instance_hostnames WHERE instance_id = $1', [id])).map((r) => r.name);
          const claimed = names.filter((name) => !owned.includes(name));
          await claimHostnames(tx, id, claimed);
          await tx.query('DELETE FROM instance_hostnames WHERE instance_id = $1 AND NOT (name = ANY($2::text[]))', [id, names]);
          await recordClaims(tx, id, claimed);
          set('hostnames', names, 'text[]');
        }
        if (changes.name !== undefined) set('name', changes.name, 'text');
        if (changes.cluster !== undefined) set('cluster', changes.cluster, 'text');
        if (changes.keyAlgorithm !== undefined) set('key_algorithm', changes.keyAlgorithm, 'text');
        if (changes.profile !== undefined) set('profile', changes.profile, 'text');
        if (changes.autoIssue !== undefined) set('auto_issue', changes.autoIssue, 'boolean');
        if (assignments.length === 0) return { before, after: before };
        const [updated] = await tx.query<InstanceRow>(`UPDATE instances SET ${assignments.join(', ')} WHERE id = $1 RETURNING *`, params);
        return { before, after: toInstance(inserted(updated)) };
      });
    },
    get: async (id) => {
      if (!UUID.test(id)) return undefined;
      const [row] = await this.db.query<InstanceRow>('SELECT * FROM instances WHERE id = $1', [id]);
      return row && toInstance(row);
    },
    list: async ({ cursor, limit, clusters = null, filter = {}, now = new Date(), includeDecommissioned = false }) => {
      const after = cursor === undefined ? undefined : decodeCursor(cursor);
      const params: unknown[] = [limit + 1, clusters && [...clusters]];
      const where = ['($2::text[] IS NULL OR i.cluster = ANY($2::text[]))', ...instanceFilter(filter, now, params)];
      if (!includeDecommissioned) where.push('i.decommissioned_at IS NULL');
      if (after) {
        params.push(after.createdAt, after.id);
        where.push(`(i.created_at, i.id) > ($${params.length - 1}::timestamptz, $${params.length}::uuid)`);
      }
      const rows = await this.db.query<InstanceRow & { cursor_created_at: string }>(
        `SELECT i.*, ${CURSOR_TIME_SQL} AS cursor_created_at FROM instances i ${LATEST_CERTIFICATE_JOIN}
         WHERE ${where.join(' AND ')}
         ORDER BY i.created_at, i.id LIMIT $1`,
        params,
      );
      const items = rows.slice(0, limit);
      const last = items.at(-1);
      const nextCursor = rows.length > limit && last ? encodeCursor(last.cursor_created_at, last.id) : null;
      return { items: items.map(toInstance), nextCursor } satisfies Page<InstanceRecord>;
    },
    summary: async ({ clusters, now }) => {
      const params: unknown[] = [clusters && [...clusters], now, AT_RISK_FRACTION];
      const rows = await this.db.query<{ status: InstanceStatus; total: number; at_risk: number; connected: number }>(
        `SELECT COALESCE(latest.status, 'none') AS status, count(*)::int AS total,
                count(*) FILTER (WHERE ${AT_RISK_SQL('$2', '$3')})::int AS at_risk,
                count(*) FILTER (WHERE i.agent_connected_at IS NOT NULL)::int AS connected
         FROM instances i ${LATEST_CERTIFICATE_JOIN}
         WHERE ($1::text[] IS NULL OR i.cluster = ANY($1::text[])) AND i.decommissioned_at IS NULL
         GROUP BY 1`,
        params,
      );
      const byStatus = Object.fromEntries(INSTANCE_STATUSES.map((status) => [status, 0])) as Record<InstanceStatus, number>;
      for (const row of rows) byStatus[row.status] = row.total;
      const sum = (pick: (row: (typeof rows)[number]) => number) => rows.reduce((total, row) => total + pick(row), 0);
      return { total: sum((r) => r.total), byStatus, atRisk: sum((r) => r.at_risk), agentsConnected: sum((r) => r.connected) };
    },
    ownedNames: async (instanceId, names) => {
      if (!UUID.test(instanceId)) return [];
      const rows = await this.db.query<{ name: string }>('SELECT name FROM instance_hostnames WHERE instance_id = $1 AND name = ANY($2::text[]) ORDER BY name', [instanceId, [...names]]);
      return rows.map((row) => row.name);
    },
    withOwnedNames: async (instanceId, names) => {
      if (!UUID.test(instanceId)) return undefined;
      const [row] = await this.db.query<InstanceRow & { owned_names: string[] }>(
        'SELECT i.*, ARRAY(SELECT o.name FROM instance_hostnames o WHERE o.instance_id = i.id AND o.name = ANY($2::text[]) ORDER BY o.name) AS owned_names FROM instances i WHERE i.id = $1',
        [instanceId, [...names]],
      );
      return row && { instance: toInstance(row), owned: row.owned_names };
    },
    unownedHostnames: async (limit) =>
      (
        await this.db.query<{ instance_id: string; name: string }>(
          `SELECT i.id AS instance_id, h.name FROM instances i CROSS JOIN LATERAL unnest(i.hostnames) AS h (name)
           WHERE i.decommissioned_at IS NULL
             AND NOT EXISTS (SELECT 1 FROM instance_hostnames o WHERE o.instance_id = i.id AND o.name = lower(rtrim(h.name, '.')))
           ORDER BY i.created_at, i.id, h.name LIMIT $1`,
          [limit],
        )
      ).map((row) => ({ instanceId: row.instance_id, name: row.name })),
    decommission: (id, record) => {
      if (!UUID.test(id)) return Promise.reject(instanceNotFound(id, 'decommission'));
      return this.db.transaction(async (tx) => {
        await lockAgentsOf(tx, id);
        const [row] = await tx.query<InstanceRow>(
          'UPDATE instances SET decommissioned_at = $2::timestamptz, decommission = $3::text::jsonb WHERE id = $1 AND decommissioned_at IS NULL RETURNING *',
          [id, record.at, JSON.stringify({ requestedBy: record.requestedBy, comment: record.comment, certificate: record.certificate, revocationReason: record.revocationReason })],
        );
        if (!row) throw new CertplaneError(ErrorCode.INSTANCE_DECOMMISSIONED, `Instance ${id} is already decommissioned; nothing was changed.`, { instanceId: id });
        const released = await tx.query<{ name: string }>('DELETE FROM instance_hostnames WHERE instance_id = $1 RETURNING name', [id]);
        const cancelled = await tx.query("UPDATE jobs SET state = 'cancelled', claimed_until = NULL, updated_at = now() WHERE instance_id = $1 AND state IN ('queued', 'running') RETURNING id", [id]);
        // A token minted before and used after would enroll a new agent for an instance that is gone.
        await tx.query('UPDATE enrollment_tokens SET used_at = $2::timestamptz WHERE instance_id = $1 AND used_at IS NULL', [id, record.at]);
        const revoked = await tx.query<{ fingerprint_sha256: string }>(
          'UPDATE agent_certificates SET revoked_at = $2::timestamptz WHERE instance_id = $1 AND revoked_at IS NULL RETURNING fingerprint_sha256',
          [id, record.at],
        );
        return {
          instance: toInstance(row),
          agentCertificates: revoked.map((r) => r.fingerprint_sha256),
          cancelledJobs: cancelled.length,
          releasedHostnames: released.map((r) => r.name).sort(),
        };
      });
    },
    setAgentConnected: async (id, connectedAt) => {
      // The authentication is the agent's first message: connecting is also being seen.
      // Never moved back: a replaced connection's last write, or another replica's clock, may come later with an earlier time.
      await this.updateInstance(id, connectedAt ? 'agent_connected_at = $2::timestamptz, agent_last_seen_at = GREATEST(agent_last_seen_at, $2::timestamptz)' : 'agent_connected_at = $2::timestamptz', connectedAt);
    },
    touchAgent: async (id, at) => {
      await this.updateInstance(id, 'agent_last_seen_at = GREATEST(agent_last_seen_at, $2::timestamptz)', at);
    },
    setInstalledFingerprint: async (id, fingerprintSha256) => {
      await this.updateInstance(id, 'installed_fingerprint_sha256 = $2::text', fingerprintSha256);
    },
  };

  readonly chains: Store['chains'] = {
    record: async (certificateId, chains) => {
      if (chains.length === 0) return;
      await this.db.query(
        `INSERT INTO certificate_chains (certificate_id, chain_index, chain_pem, top_issuer_cn, selected, verification, evaluated_at, trust_fingerprint)
         SELECT $1::uuid, c.chain_index, c.chain_pem, c.top_issuer_cn, c.selected, c.verification::jsonb, $2::timestamptz, $3
         FROM unnest($4::int[], $5::text[], $6::text[], $7::boolean[], $8::text[]) AS c (chain_index, chain_pem, top_issuer_cn, selected, verification)
         ON CONFLICT (certificate_id, chain_index) DO NOTHING`,
        [
          certificateId,
          chains[0]!.evaluatedAt,
          chains[0]!.trustFingerprint,
          chains.map((c) => c.index),
          chains.map((c) => c.pem),
          chains.map((c) => c.topIssuerCN),
          chains.map((c) => c.selected),
          chains.map((c) => JSON.stringify(c.verification)),
        ],
      );
    },
    list: async (certificateId) => {
      if (!UUID.test(certificateId)) return [];
      const rows = await this.db.query<StoredChainRow>('SELECT * FROM certificate_chains WHERE certificate_id = $1 ORDER BY chain_index', [certificateId]);
      return rows.map((row) => ({
        certificateId: row.certificate_id,
        index: row.chain_index,
        pem: row.chain_pem,
        topIssuerCN: row.top_issuer_cn,
        selected: row.selected,
        verification: row.verification,
        evaluatedAt: row.evaluated_at,
        trustFingerprint: row.trust_fingerprint,
      }));
    },
  };

  readonly trust: Store['trust'] = {
    installed: async ({ clusters = null, instanceIds }) => {
      const ids = instanceIds?.filter((id) => UUID.test(id));
      // The instances with their installed certificate (narrow, in creation order), then
      // those certificates' chains (wide, unsorted), in one snapshot. Fleet-wide, two reads
      // in a REPEATABLE READ transaction: as one join per instance (LATERAL ... LIMIT 1) the
      // planner, without statistics (PGlite never analyses), intersected the status index
      // with the instance's for every instance: quadratic, 6 of the 6.5 s a 10,000-instance
      // what-if spent reading. The newest installed certificate per instance is one DISTINCT
      // ON pass instead. For a few named instances (an installation's), one statement: each
      // certificate's chains aggregated by its primary key, a snapshot without a transaction.
      const few = ids !== undefined && ids.length <= FEW_INSTANCES;
      const read = async (db: Queryable) => {
        const rows = await db.query<{
          id: string;
          name: string;
          cluster: string | null;
          created_at: Date;
          trust_profiles: string[];
          certificate_id: string | null;
          fullchain_pem: string | null;
          chains?: { index: number; pem: string; selected: boolean }[] | null;
        }>(
          `WITH latest AS (
             SELECT DISTINCT ON (instance_id) instance_id, id FROM certificates
             WHERE status = 'installed' AND ($2::uuid[] IS NULL OR instance_id = ANY($2::uuid[]))
             ORDER BY instance_id, created_at DESC, creation_order DESC
           )
           SELECT i.id, i.name, i.cluster, i.created_at, i.trust_profiles, c.id AS certificate_id,
                  CASE WHEN c.id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM certificate_chains ch WHERE ch.certificate_id = c.id) THEN c.fullchain_pem END AS fullchain_pem
                  ${few ? ", (SELECT jsonb_agg(jsonb_build_object('index', ch.chain_index, 'pem', ch.chain_pem, 'selected', ch.selected)) FROM certificate_chains ch WHERE ch.certificate_id = c.id) AS chains" : ''}
           FROM instances i
           LEFT JOIN latest l ON l.instance_id = i.id
           LEFT JOIN certificates c ON c.id = l.id
           WHERE ($1::text[] IS NULL OR i.cluster = ANY($1::text[])) AND ($2::uuid[] IS NULL OR i.id = ANY($2::uuid[]))
           ORDER BY i.created_at, i.id`,
          [clusters && [...clusters], ids ?? null],
        );
        const chains = new Map<string, { index: number; pem: string; selected: boolean }[]>();
        const certificateIds = rows.flatMap((row) => (row.certificate_id ? [row.certificate_id] : []));
        if (few) {
          for (const row of rows) if (row.certificate_id && row.chains) chains.set(row.certificate_id, row.chains);
        } else if (certificateIds.length > 0) {
          const chainRows = await db.query<{ certificate_id: string; chain_index: number; chain_pem: string; selected: boolean }>(
            'SELECT certificate_id, chain_index, chain_pem, selected FROM certificate_chains WHERE certificate_id = ANY($1::uuid[])',
            [certificateIds],
          );
          for (const row of chainRows) {
            let list = chains.get(row.certificate_id);
            if (!list) chains.set(row.certificate_id, (list = []));
            list.push({ index: row.chain_index, pem: row.chain_pem, selected: row.selected });
          }
        }
        return rows.map((row) => ({
          instance: { id: row.id, name: row.name, cluster: row.cluster, createdAt: row.created_at, trustProfiles: row.trust_profiles },
          certificateId: row.certificate_id,
          fullchainPem: row.fullchain_pem,
          chains: (row.certificate_id ? (chains.get(row.certificate_id) ?? []) : []).sort((a, b) => a.index - b.index),
        }));
      };
      if (few) return read(this.db);
      return this.db.transaction(async (tx) => {
        await tx.query('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ');
        return read(tx);
      });
    },
    record: async (rows, chains = []) => {
      if (rows.length === 0 && chains.length === 0) return;
      // A chain's verdict is rewritten only when it changed, or the settings did: an
      // installation's chains were judged under the same settings moments before, at issuance.
      await this.db.query(
        `WITH verdicts AS (
           UPDATE certificate_chains c SET verification = u.verification::jsonb, evaluated_at = u.evaluated_at, trust_fingerprint = u.trust_fingerprint
           FROM unnest($8::uuid[], $9::int[], $10::text[], $11::timestamptz[], $12::text[]) AS u (certificate_id, chain_index, verification, evaluated_at, trust_fingerprint)
           WHERE c.certificate_id = u.certificate_id AND c.chain_index = u.chain_index
             AND (c.trust_fingerprint IS DISTINCT FROM u.trust_fingerprint OR c.verification IS DISTINCT FROM u.verification::jsonb)
           RETURNING 1
         )
         INSERT INTO instance_trust (instance_id, certificate_id, status, broken_profiles, alternate_chain_index, evaluated_at, trust_fingerprint)
         SELECT u.instance_id, u.certificate_id, u.status, ARRAY(SELECT jsonb_array_elements_text(u.broken_profiles::jsonb)), u.alternate_chain_index, u.evaluated_at, u.trust_fingerprint
         FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::int[], $6::timestamptz[], $7::text[])
           AS u (instance_id, certificate_id, status, broken_profiles, alternate_chain_index, evaluated_at, trust_fingerprint)
         ON CONFLICT (instance_id) DO UPDATE SET certificate_id = EXCLUDED.certificate_id, status = EXCLUDED.status, broken_profiles = EXCLUDED.broken_profiles,
           alternate_chain_index = EXCLUDED.alternate_chain_index, evaluated_at = EXCLUDED.evaluated_at, trust_fingerprint = EXCLUDED.trust_fingerprint`,
        [
          rows.map((r) => r.instanceId),
          rows.map((r) => r.certificateId),
          rows.map((r) => r.status),
          rows.map((r) => JSON.stringify(r.brokenProfiles)),
          rows.map((r) => r.alternateChainIndex),
          rows.map((r) => r.evaluatedAt),
          rows.map((r) => r.trustFingerprint),
          chains.map((r) => r.certificateId),
          chains.map((r) => r.index),
          chains.map((r) => JSON.stringify(r.verification)),
          chains.map((r) => r.evaluatedAt),
          chains.map((r) => r.trustFingerprint),
        ],
      );
    },
    of: async (instanceIds) => {
      const ids = instanceIds.filter((id) => UUID.test(id));
      if (ids.length === 0) return new Map();
      const rows = await this.db.query<{
        instance_id: string;
        certificate_id: string;
        status: 'ok' | 'broken';
        broken_profiles: string[];
        alternate_chain_index: number | null;
        evaluated_at: Date;
        trust_fingerprint: string;
      }>('SELECT * FROM instance_trust WHERE instance_id = ANY($1::uuid[])', [ids]);
      return new Map(
        rows.map((r) => [
          r.instance_id,
          {
            instanceId: r.instance_id,
            certificateId: r.certificate_id,
            status: r.status,
            brokenProfiles: r.broken_profiles,
            alternateChainIndex: r.alternate_chain_index,
            evaluatedAt: r.evaluated_at,
            trustFingerprint: r.trust_fingerprint,
          },
        ]),
      );
    },
  };

  readonly served: Store['served'] = {
    record: async (row) => {
      await this.db.query(
        `INSERT INTO instance_served (instance_id, certificate_id, status, checked_at, fingerprint_sha256, anchor, problems)
         VALUES ($1::uuid, $2::uuid, $3, $4::timestamptz, $5, $6, $7::jsonb)
         ON CONFLICT (instance_id) DO UPDATE SET certificate_id = EXCLUDED.certificate_id, status = EXCLUDED.status, checked_at = EXCLUDED.checked_at,
           fingerprint_sha256 = EXCLUDED.fingerprint_sha256, anchor = EXCLUDED.anchor, problems = EXCLUDED.problems`,
        [row.instanceId, row.certificateId, row.status, row.checkedAt, row.fingerprintSha256, row.anchor, JSON.stringify(row.problems)],
      );
    },
    of: async (instanceIds) => {
      const ids = instanceIds.filter((id) => UUID.test(id));
      if (ids.length === 0) return new Map();
      const rows = await this.db.query<{
        instance_id: string;
        certificate_id: string | null;
        status: InstanceServedRecord['status'];
        checked_at: Date;
        fingerprint_sha256: string | null;
        anchor: string | null;
        problems: InstanceServedRecord['problems'];
      }>('SELECT * FROM instance_served WHERE instance_id = ANY($1::uuid[])', [ids]);
      return new Map(
        rows.map((r) => [
          r.instance_id,
          { instanceId: r.instance_id, certificateId: r.certificate_id, status: r.status, checkedAt: r.checked_at, fingerprintSha256: r.fingerprint_sha256, anchor: r.anchor, problems: r.problems },
        ]),
      );
    },
  };

  readonly fleet: Store['fleet'] = {
    instances: async () => {
      // Set-based, not a lookup per instance: the installed certificates come from one scan of
      // the certificates_status index (history, superseded rows, is never read) and are
      // hash-joined to the instances and their verdicts. 10,000 instances: see docs/operations.md#monitoring.
      const rows = await this.db.query<{
        id: string;
        cluster: string | null;
        not_after: Date | null;
        renew_at: Date | null;
        trust_status: 'ok' | 'broken' | null;
        fingerprint_sha256: string | null;
        served_status: InstanceServedRecord['status'] | null;
        served_fingerprint_sha256: string | null;
      }>(
        `SELECT i.id, i.cluster, c.not_after, c.renew_at, t.status AS trust_status, c.fingerprint_sha256,
                s.status AS served_status, s.fingerprint_sha256 AS served_fingerprint_sha256
         FROM instances i
         LEFT JOIN (
           SELECT DISTINCT ON (r.instance_id) r.instance_id, r.id, r.not_after, r.renew_at, r.fingerprint_sha256
           FROM certificates r WHERE r.status = 'installed' ORDER BY r.instance_id, r.created_at DESC, r.creation_order DESC
         ) c ON c.instance_id = i.id
         LEFT JOIN instance_trust t ON t.instance_id = i.id AND t.certificate_id = c.id
         LEFT JOIN instance_served s ON s.instance_id = i.id
         WHERE i.decommissioned_at IS NULL
         ORDER BY i.created_at, i.id`,
      );
      return rows.map((r) => ({
        instanceId: r.id,
        cluster: r.cluster,
        notAfter: r.not_after,
        renewAt: r.renew_at,
        trustStatus: r.trust_status,
        // As the API shows it: a verdict about another leaf than the one installed now reads stale.
        servedStatus: r.served_status === null ? null : servedStandingNow({ status: r.served_status, fingerprintSha256: r.served_fingerprint_sha256, problems: [] }, r.fingerprint_sha256).status,
      }));
    },
    lastTrustReload: async () => {
      const [row] = await this.db.query<{ at: Date; broken: number | null; alternate_available: number | null }>(
        `SELECT at, (details->>'broken')::int AS broken, (details->>'alternateAvailable')::int AS alternate_available
         FROM audit_log WHERE action = 'trust.reload' ORDER BY id DESC LIMIT 1`,
      );
      return row && { at: row.at, broken: row.broken ?? 0, alternateAvailable: row.alternate_available ?? 0 };
    },
  };

  readonly enrollmentTokens: Store['enrollmentTokens'] = {
    create: async (instanceId, tokenSha256, expiresAt) => {
      await this.forInstance(instanceId, 'an enrollment token', () =>
        this.db.query('INSERT INTO enrollment_tokens (token_sha256, instance_id, expires_at) VALUES ($1, $2, $3::timestamptz)', [tokenSha256, instanceId, expiresAt]),
      );
    },
    find: async (tokenSha256, now) => {
      const [row] = await this.db.query<{ instance_id: string }>(
        'SELECT instance_id FROM enrollment_tokens WHERE token_sha256 = $1 AND used_at IS NULL AND expires_at > $2::timestamptz',
        [tokenSha256, now],
      );
      return row?.instance_id;
    },
    consume: async (tokenSha256, now) => {
      const [row] = await this.db.query<{ instance_id: string }>(
        `UPDATE enrollment_tokens SET used_at = $2::timestamptz
         WHERE token_sha256 = $1 AND used_at IS NULL AND expires_at > $2::timestamptz
         RETURNING instance_id`,
        [tokenSha256, now],
      );
      return row?.instance_id;
    },
  };

  readonly apiClients: Store['apiClients'] = {
    register: async (input) => {
      const [row] = await this.db.query<ApiClientRow>(
        `INSERT INTO api_clients (fingerprint_sha256, name, role, clusters, not_after) VALUES ($1, $2, $3, $4::text[], $5::timestamptz)
         ON CONFLICT (fingerprint_sha256) DO UPDATE SET name = EXCLUDED.name, role = EXCLUDED.role, clusters = EXCLUDED.clusters, not_after = EXCLUDED.not_after, revoked_at = NULL
         RETURNING *`,
        [input.fingerprintSha256, input.name, input.role, input.clusters ? [...input.clusters] : null, input.notAfter],
      );
      return toApiClient(row as ApiClientRow);
    },
    get: async (fingerprint) => {
      const [row] = await this.db.query<ApiClientRow>('SELECT * FROM api_clients WHERE fingerprint_sha256 = $1', [fingerprint]);
      return row && toApiClient(row);
    },
    list: async () => (await this.db.query<ApiClientRow>('SELECT * FROM api_clients ORDER BY created_at, fingerprint_sha256')).map(toApiClient),
    revoke: async (fingerprint, at) =>
      (await this.db.query('UPDATE api_clients SET revoked_at = $2::timestamptz WHERE fingerprint_sha256 = $1 AND revoked_at IS NULL RETURNING fingerprint_sha256', [fingerprint, at])).length > 0,
  };

  readonly agentCertificates: Store['agentCertificates'] = {
    list: async (limit) => (await this.db.query<AgentCertificateRow>('SELECT * FROM agent_certificates ORDER BY created_at DESC LIMIT $1', [limit])).map(toAgentCertificate),
    revokedSince: async (since) =>
      (
        await this.db.query<{ fingerprint_sha256: string }>(
          'SELECT fingerprint_sha256 FROM agent_certificates WHERE revoked_at > $1::timestamptz OR superseded_at > $1::timestamptz',
          [since],
        )
      ).map((r) => r.fingerprint_sha256),
    record: async (input) => {
      await this.forInstance(input.instanceId, 'an agent certificate', () =>
        this.db.query('INSERT INTO agent_certificates (fingerprint_sha256, instance_id, serial_number, not_after) VALUES ($1, $2, $3, $4::timestamptz)', [
          input.fingerprintSha256,
          input.instanceId,
          input.serialNumber,
          input.notAfter,
        ]),
      );
    },
    get: async (fingerprintSha256) => {
      const [row] = await this.db.query<AgentCertificateRow>('SELECT * FROM agent_certificates WHERE fingerprint_sha256 = $1', [fingerprintSha256]);
      return row && toAgentCertificate(row);
    },
    revoke: async (fingerprintSha256, at) => {
      const [known] = await this.db.query<{ instance_id: string }>('SELECT instance_id FROM agent_certificates WHERE fingerprint_sha256 = $1', [fingerprintSha256]);
      if (!known) return [];
      return this.db.transaction(async (tx) => {
        await lockAgentsOf(tx, known.instance_id);
        const rows = await tx.query<{ fingerprint_sha256: string }>(
          `WITH RECURSIVE minted_from (fingerprint_sha256) AS (
             SELECT fingerprint_sha256 FROM agent_certificates WHERE fingerprint_sha256 = $1
             UNION
             SELECT successor.fingerprint_sha256 FROM agent_certificates successor JOIN minted_from ON successor.renewed_from = minted_from.fingerprint_sha256
           )
           UPDATE agent_certificates SET revoked_at = $2::timestamptz
           WHERE fingerprint_sha256 IN (SELECT fingerprint_sha256 FROM minted_from) AND revoked_at IS NULL
           RETURNING fingerprint_sha256`,
          [fingerprintSha256, at],
        );
        return rows.map((r) => r.fingerprint_sha256);
      });
    },
    revokeInstance: (instanceId, at) =>
      this.db.transaction(async (tx) => {
        await lockAgentsOf(tx, instanceId);
        const rows = await tx.query<{ fingerprint_sha256: string }>(
          'UPDATE agent_certificates SET revoked_at = $2::timestamptz WHERE instance_id = $1 AND revoked_at IS NULL RETURNING fingerprint_sha256',
          [instanceId, at],
        );
        return rows.map((r) => r.fingerprint_sha256);
      }),
    renew: (input, mint) =>
      this.db.transaction(async (tx) => {
        await lockAgentsOf(tx, input.instanceId);
        const [predecessor] = await tx.query<AgentCertificateRow>('SELECT * FROM agent_certificates WHERE fingerprint_sha256 = $1 AND instance_id = $2', [input.predecessor, input.instanceId]);
        if (!predecessor || predecessor.revoked_at || predecessor.superseded_at) return { outcome: 'refused' } as const;
        const [last] = await tx.query<{ at: Date | null }>('SELECT max(renewed_at) AS at FROM agent_certificates WHERE instance_id = $1', [input.instanceId]);
        const retryAt = last?.at ? new Date(last.at.getTime() + input.minIntervalMs) : undefined;
        if (retryAt && retryAt > input.at) return { outcome: 'rate_limited', retryAt } as const;
        // A successor never used was lost on the way to the agent (or asked for by someone else
        // holding the key); it is replaced, so the predecessor keeps at most one valid successor.
        const replaced = await tx.query<{ fingerprint_sha256: string }>(
          'UPDATE agent_certificates SET revoked_at = $2::timestamptz WHERE renewed_from = $1 AND revoked_at IS NULL RETURNING fingerprint_sha256',
          [input.predecessor, input.at],
        );
        const minted = await mint();
        await tx.query(
          'INSERT INTO agent_certificates (fingerprint_sha256, instance_id, serial_number, not_after, renewed_from, renewed_at) VALUES ($1, $2, $3, $4::timestamptz, $5, $6::timestamptz)',
          [minted.fingerprintSha256, input.instanceId, minted.serialNumber, minted.notAfter, input.predecessor, input.at],
        );
        return { outcome: 'renewed', minted, replaced: replaced.map((r) => r.fingerprint_sha256) } as const;
      }),
    use: async (fingerprintSha256, at) => {
      const [known] = await this.db.query<AgentCertificateRow>('SELECT * FROM agent_certificates WHERE fingerprint_sha256 = $1', [fingerprintSha256]);
      // Used before (every reconnection), or unusable: a plain read is the answer, since a
      // revocation is committed before its sessions are cut. Only a first use takes the lock.
      if (!known || known.revoked_at || known.superseded_at || known.first_used_at) return { record: known && toAgentCertificate(known), superseded: null };
      return this.db.transaction(async (tx) => {
        await lockAgentsOf(tx, known.instance_id);
        const [row] = await tx.query<AgentCertificateRow>('SELECT * FROM agent_certificates WHERE fingerprint_sha256 = $1', [fingerprintSha256]);
        if (!row || row.revoked_at || row.superseded_at || row.first_used_at) return { record: row && toAgentCertificate(row), superseded: null };
        const [used] = await tx.query<AgentCertificateRow>('UPDATE agent_certificates SET first_used_at = $2::timestamptz WHERE fingerprint_sha256 = $1 RETURNING *', [fingerprintSha256, at]);
        const superseded = row.renewed_from
          ? await tx.query<{ fingerprint_sha256: string }>(
              'UPDATE agent_certificates SET superseded_at = $2::timestamptz WHERE fingerprint_sha256 = $1 AND superseded_at IS NULL RETURNING fingerprint_sha256',
              [row.renewed_from, at],
            )
          : [];
        return { record: toAgentCertificate(inserted(used)), superseded: superseded[0]?.fingerprint_sha256 ?? null };
      });
    },
  };

  readonly certificates: Store['certificates'] = {
    create: async (instanceId, link = {}) => {
      const [row] = await this.forInstance(instanceId, 'a certificate', () =>
        this.db.query<CertificateRow>(
          // The job's pointer is written in the same statement: its start needs no second round trip.
          // The setting for migration 17's trigger is made in the INSERT's one-time filter, so it
          // is made before the row exists (an unreferenced CTE would never run) and ends with
          // the statement's transaction.
          `WITH created AS (
             INSERT INTO certificates (id, instance_id, status, job_id, replaces_certificate_id)
             SELECT $1::uuid, $2::uuid, 'pending', $3::uuid, $4::uuid WHERE set_config('certplane.quiet_create', $5, true) IS NOT NULL
             RETURNING *),
                linked AS (UPDATE jobs SET certificate_id = created.id, updated_at = now() FROM created WHERE jobs.id = created.job_id AND jobs.state = 'running')
           SELECT * FROM created`,
          [randomUUID(), instanceId, link.jobId ?? null, link.replacesCertificateId ?? null, link.notify === false ? 'on' : 'off'],
        ),
      );
      return toCertificate(inserted(row));
    },
    createRechain: (input) => {
      if (!UUID.test(input.rechainedFromId)) return Promise.reject(new CertplaneError(ErrorCode.STORE_NOT_FOUND, `no certificate ${input.rechainedFromId} to re-chain`));
      return this.db.transaction(async (tx) => {
        const [original] = await tx.query<CertificateRow>('SELECT * FROM certificates WHERE id = $1 FOR UPDATE', [input.rechainedFromId]);
        if (!original || original.instance_id !== input.instanceId) throw new CertplaneError(ErrorCode.STORE_NOT_FOUND, `no certificate ${input.rechainedFromId} of instance ${input.instanceId} to re-chain`);
        if (original.status !== 'installed') {
          throw new CertplaneError(ErrorCode.LIFECYCLE_TRANSITION_REFUSED, `certificate ${original.id} is ${original.status}, not installed: only the installed certificate is re-chained`, { state: original.status, event: 'rechained' });
        }
        const [row] = await tx.query<CertificateRow>(
          `INSERT INTO certificates (id, instance_id, status, csr_pem, fullchain_pem, fingerprint_sha256, not_before, not_after, anchor_cn, report, renew_at, ari_retry_at, job_id, rechained_from_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7::timestamptz, $8::timestamptz, $9, $10::text::jsonb, $11::timestamptz, $12::timestamptz, $13::uuid, $14::uuid) RETURNING *`,
          [
            randomUUID(),
            original.instance_id,
            ENTRIES.rechained,
            original.csr_pem,
            input.fullchainPem,
            original.fingerprint_sha256,
            original.not_before,
            original.not_after,
            input.anchorCN,
            JSON.stringify(input.report ?? null),
            original.renew_at,
            original.ari_retry_at,
            input.jobId,
            original.id,
          ],
        );
        const created = inserted(row);
        await tx.query(
          `INSERT INTO certificate_chains (certificate_id, chain_index, chain_pem, top_issuer_cn, selected, verification, evaluated_at, trust_fingerprint)
           SELECT $1::uuid, chain_index, chain_pem, top_issuer_cn, chain_index = $3::int, verification, evaluated_at, trust_fingerprint FROM certificate_chains WHERE certificate_id = $2`,
          [created.id, original.id, input.chainIndex],
        );
        return toCertificate(created);
      });
    },
    get: async (id) => {
      if (!UUID.test(id)) return undefined;
      const [row] = await this.db.query<CertificateRow>('SELECT * FROM certificates WHERE id = $1', [id]);
      return row && toCertificate(row);
    },
    latest: async (instanceId) => {
      if (!UUID.test(instanceId)) return undefined;
      const [row] = await this.db.query<CertificateRow>('SELECT * FROM certificates WHERE instance_id = $1 ORDER BY created_at DESC, creation_order DESC LIMIT 1', [instanceId]);
      return row && toCertificate(row);
    },
    latestInstalled: async (instanceId) => {
      if (!UUID.test(instanceId)) return undefined;
      const [row] = await this.db.query<CertificateRow>(
        "SELECT * FROM certificates WHERE instance_id = $1 AND status = 'installed' ORDER BY created_at DESC, creation_order DESC LIMIT 1",
        [instanceId],
      );
      return row && toCertificate(row);
    },
    latestOfJob: async (jobId) => {
      if (!UUID.test(jobId)) return undefined;
      const [row] = await this.db.query<CertificateRow>('SELECT * FROM certificates WHERE job_id = $1 ORDER BY created_at DESC, creation_order DESC LIMIT 1', [jobId]);
      return row && toCertificate(row);
    },
    ofJob: async (job) => {
      if (!UUID.test(job.id) || !UUID.test(job.instanceId) || (job.certificateId !== null && !UUID.test(job.certificateId))) return {};
      // Both reads in one statement, each through its own index (certificates_job, certificates_installed).
      const found = job.certificateId === null ? 'SELECT * FROM certificates WHERE job_id = $1::uuid ORDER BY created_at DESC, creation_order DESC LIMIT 1' : 'SELECT * FROM certificates WHERE id = $1::uuid';
      const rows = await this.db.query<CertificateRow & { role: 'found' | 'installed' }>(
        `SELECT 'found' AS role, f.* FROM (${found}) AS f
         UNION ALL
         SELECT 'installed' AS role, i.* FROM (SELECT * FROM certificates WHERE instance_id = $2::uuid AND status = 'installed' ORDER BY created_at DESC, creation_order DESC LIMIT 1) AS i`,
        [job.certificateId ?? job.id, job.instanceId],
      );
      const of = (role: 'found' | 'installed') => {
        const row = rows.find((r) => r.role === role);
        return row && toCertificate(row);
      };
      return { found: of('found'), installed: of('installed') };
    },
    countByStatus: async () => {
      const rows = await this.db.query<{ status: CertificateState; n: number }>('SELECT status, count(*)::int AS n FROM certificates GROUP BY status ORDER BY status');
      return Object.fromEntries(rows.map((row) => [row.status, row.n]));
    },
    ariDue: async (now, limit) => {
      const rows = await this.db.query<CertificateRow>(
        `SELECT c.* FROM certificates c JOIN instances i ON i.id = c.instance_id
         WHERE c.status = 'installed' AND c.ari_retry_at IS NOT NULL AND c.ari_retry_at <= $1::timestamptz AND i.decommissioned_at IS NULL
           AND NOT EXISTS (SELECT 1 FROM certificates n WHERE n.instance_id = c.instance_id AND n.status = 'installed' AND n.creation_order > c.creation_order)
         ORDER BY c.ari_retry_at LIMIT $2`,
        [now, limit],
      );
      return rows.map(toCertificate);
    },
    latestOf: async (instanceIds) => {
      const ids = instanceIds.filter((id) => UUID.test(id));
      const found = new Map<string, { latest?: CertificateRecord; installed?: CertificateRecord }>();
      if (ids.length === 0) return found;
      const newest = (condition: string) =>
        this.db.query<CertificateRow>(`SELECT DISTINCT ON (instance_id) * FROM certificates WHERE instance_id = ANY($1::uuid[]) ${condition} ORDER BY instance_id, created_at DESC, creation_order DESC`, [ids]);
      for (const row of await newest('')) found.set(row.instance_id, { latest: toCertificate(row) });
      for (const row of await newest("AND status = 'installed'")) found.set(row.instance_id, { ...found.get(row.instance_id), installed: toCertificate(row) });
      return found;
    },
    open: async (instanceId) => {
      if (!UUID.test(instanceId)) return [];
      const rows = await this.db.query<CertificateRow>('SELECT * FROM certificates WHERE instance_id = $1 AND status = ANY($2::text[]) ORDER BY created_at, creation_order', [
        instanceId,
        [...OPEN_STATES],
      ]);
      return rows.map(toCertificate);
    },
    apply: async (id, event, fields = {}, condition = {}) => {
      if (!UUID.test(id)) return undefined;
      const events = typeof event === 'string' ? ([event] as const) : event;
      if (events.includes('failed') && (!fields.failure || !fields.lastError)) throw new CertplaneError(ErrorCode.STORE_INVALID_VALUE, 'a failed event needs a typed failure and a message');
      const { from, to } = composedArc(events);
      const params: unknown[] = [id, [...from], to];
      const assignments = ['status = $3', 'updated_at = now()', 'state_changed_at = now()'];
      for (const [key, [column, type]] of Object.entries(UPDATE_COLUMNS) as [keyof CertificateUpdate, readonly [string, string]][]) {
        const value = fields[key];
        if (value === undefined) continue;
        // jsonb travels as text so neither driver re-encodes it (pg would turn an array into a SQL array).
        params.push(type === 'jsonb' && value !== null ? JSON.stringify(value) : value);
        assignments.push(type === 'jsonb' ? `${column} = $${params.length}::text::jsonb` : `${column} = $${params.length}::${type}`);
      }
      const conditions = ['id = $1', 'status = ANY($2::text[])'];
      for (const [key, column] of [['leaseOwner', 'lease_owner'], ['instanceId', 'instance_id'], ['fingerprintSha256', 'fingerprint_sha256']] as const) {
        const value = condition[key];
        if (value === undefined) continue;
        if (key === 'instanceId' && !UUID.test(value)) return undefined;
        params.push(value);
        conditions.push(`${column} = $${params.length}${key === 'instanceId' ? '::uuid' : ''}`);
      }
      if (condition.releaseLease) {
        if (condition.leaseOwner === undefined) throw new CertplaneError(ErrorCode.STORE_INVALID_VALUE, 'only the holder of a lease releases it: releaseLease needs leaseOwner');
        assignments.push('lease_owner = NULL', 'lease_until = NULL');
      }
      const update = `UPDATE certificates SET ${assignments.join(', ')} WHERE ${conditions.join(' AND ')} RETURNING *`;
      let moved: CertificateRow | undefined;
      if (to !== 'installed') {
        [moved] = await this.db.query<CertificateRow>(update, params);
      } else {
        // One statement: the instance serves one certificate, so the one it had before is
        // superseded in the same step, and the instance's installed fingerprint becomes this one's
        // (the agent acknowledged exactly it).
        params.push(TRANSITIONS.superseded.to, [...TRANSITIONS.superseded.from]);
        [moved] = await this.db.query<CertificateRow>(
          `WITH moved AS (${update}),
                superseded AS (UPDATE certificates c SET status = $${params.length - 1}, updated_at = now(), state_changed_at = now() FROM moved
                               WHERE c.instance_id = moved.instance_id AND c.id <> moved.id AND c.status = ANY($${params.length}::text[])),
                recorded AS (UPDATE instances i SET installed_fingerprint_sha256 = moved.fingerprint_sha256 FROM moved WHERE i.id = moved.instance_id)
           SELECT * FROM moved`,
          params,
        );
      }
      if (moved) return toCertificate(moved);
      const [current] = await this.db.query<{ status: CertificateState; instance_id: string; fingerprint_sha256: string | null }>('SELECT status, instance_id, fingerprint_sha256 FROM certificates WHERE id = $1', [id]);
      // Not the certificate the condition names (another instance's, another fingerprint): not this caller's to move, nor to learn the state of.
      if (!current || (condition.instanceId !== undefined && current.instance_id !== condition.instanceId) || (condition.fingerprintSha256 !== undefined && current.fingerprint_sha256 !== condition.fingerprintSha256)) return undefined;
      if (classify(current.status, events[0]) === 'refused') throw refusal(current.status, events[0]);
      return undefined;
    },
    attachJob: async (id, jobId, replacesCertificateId) => {
      if (!UUID.test(id)) return undefined;
      const [row] = await this.db.query<CertificateRow>(
        `WITH attached AS (UPDATE certificates SET job_id = $2::uuid, replaces_certificate_id = $3::uuid, updated_at = now() WHERE id = $1 AND status = 'pending' RETURNING *),
              linked AS (UPDATE jobs SET certificate_id = attached.id, updated_at = now() FROM attached WHERE jobs.id = attached.job_id AND jobs.state = 'running')
         SELECT * FROM attached`,
        [id, jobId, replacesCertificateId],
      );
      return row && toCertificate(row);
    },
    setRenewal: async (id, renewal) => {
      if (!UUID.test(id)) return;
      await this.db.query(
        "UPDATE certificates SET renew_at = COALESCE($2::timestamptz, renew_at), ari_retry_at = $3::timestamptz, updated_at = now() WHERE id = $1 AND status = 'installed'",
        [id, renewal.renewAt ?? null, renewal.ariRetryAt],
      );
    },
    lease: async (id, owner, durationMs) => (await this.leaseCertificate(id, owner, durationMs, 'id')).length === 1,
    leaseForOrder: async (id, owner, durationMs) => {
      const [row] = await this.leaseCertificate<CertificateRow & { job_attempts: number | null }>(id, owner, durationMs, '*, (SELECT attempts FROM jobs WHERE jobs.id = certificates.job_id) AS job_attempts');
      return row && { certificate: toCertificate(row), jobAttempts: row.job_attempts };
    },
    acceptCsrForOrder: async (id, csrPem, instanceId, owner, durationMs) => {
      if (!UUID.test(id) || !UUID.test(instanceId)) return undefined;
      const { from, to } = composedArc(['csr_accepted']);
      const [row] = await this.db.query<CertificateRow & { job_attempts: number | null }>(
        `UPDATE certificates SET status = $3, csr_pem = $4, updated_at = now(), state_changed_at = now(), lease_owner = $6, lease_until = now() + $7::bigint * interval '1 millisecond'
         WHERE id = $1 AND status = ANY($2::text[]) AND instance_id = $5::uuid AND (lease_owner IS NULL OR lease_until IS NULL OR lease_until <= now())
         RETURNING *, (SELECT attempts FROM jobs WHERE jobs.id = certificates.job_id) AS job_attempts`,
        [id, [...from], to, csrPem, instanceId, owner, String(Math.max(0, Math.round(durationMs)))],
      );
      return row && { certificate: toCertificate(row), jobAttempts: row.job_attempts };
    },
    renewLease: async (id, owner, durationMs) => {
      if (!UUID.test(id)) return false;
      const rows = await this.db.query(
        `UPDATE certificates SET lease_until = now() + $3::bigint * interval '1 millisecond', updated_at = now() WHERE id = $1 AND lease_owner = $2 RETURNING id`,
        [id, owner, String(Math.max(0, Math.round(durationMs)))],
      );
      return rows.length === 1;
    },
    release: async (id, owner) => {
      if (!UUID.test(id)) return;
      await this.db.query('UPDATE certificates SET lease_owner = NULL, lease_until = NULL WHERE id = $1 AND lease_owner = $2', [id, owner]);
    },
    changedSince: async (since) => {
      // The outer row exists even when nothing changed, so the database's time always comes back.
      const rows = await this.db.query<{ id: string | null; instance_id: string; status: CertificateState; changed_at: Date; read_at: Date }>(
        `SELECT now() AS read_at, c.id, c.instance_id, c.status, c.changed_at FROM (SELECT 1) AS one LEFT JOIN (
           SELECT id, instance_id, status, updated_at AS changed_at FROM certificates
           WHERE status = ANY($1::text[]) AND updated_at > $2::timestamptz
           UNION ALL
           SELECT id, instance_id, status, lease_until FROM certificates
           WHERE status = ANY($3::text[]) AND lease_until > $2::timestamptz AND lease_until <= now()
         ) AS c ON true`,
        [[...OPEN_STATES], since, [...ORDERING_STATES]],
      );
      const readAt = rows[0]!.read_at;
      return { changes: rows.flatMap((row) => (row.id === null ? [] : [{ id: row.id, instanceId: row.instance_id, status: row.status, changedAt: row.changed_at }])), readAt };
    },
  };

  readonly wakeups: Store['wakeups'] = {
    listen: (onWork, onResubscribed) =>
      this.db.listen(
        AGENT_WORK_CHANNEL,
        (payload) => {
          const [instanceId = '', id = '', status] = payload.split(' ');
          if (UUID.test(instanceId) && UUID.test(id) && OPEN_STATES.includes(status as CertificateState)) onWork({ instanceId, id, status: status as CertificateState });
        },
        onResubscribed,
      ),
  };

  readonly rateBuckets: Store['rateBuckets'] = {
    get: async (keys) => {
      const rows = await this.db.query<RateBucketRow>('SELECT * FROM rate_buckets WHERE key = ANY($1::text[]) ORDER BY key', [[...new Set(keys)]]);
      return rows.map(toRateBucket);
    },
    update: (initial, decide) =>
      this.db.transaction(async (tx) => {
        const keys = [...initial.keys()];
        const fresh = [...initial.values()];
        // Inserts and locks both go in the database's order of keys, so two transactions
        // wanting overlapping buckets queue instead of deadlocking. Timestamps travel as ISO
        // text so both drivers encode the arrays the same way.
        await tx.query(
          `INSERT INTO rate_buckets (key, tokens, updated_at, blocked_until, blocked_reason)
           SELECT * FROM unnest($1::text[], $2::float8[], $3::text[]::timestamptz[], $4::text[]::timestamptz[], $5::text[]) ORDER BY 1
           ON CONFLICT (key) DO NOTHING`,
          [keys, fresh.map((state) => state.tokens), fresh.map((state) => state.updatedAt.toISOString()), fresh.map((state) => state.blockedUntil?.toISOString() ?? null), fresh.map((state) => state.blockedReason)],
        );
        const rows = await tx.query<RateBucketRow>('SELECT * FROM rate_buckets WHERE key = ANY($1::text[]) ORDER BY key FOR UPDATE', [keys]);
        const { write, result } = decide(new Map(rows.map((row) => [row.key, toRateBucket(row)])));
        const stray = write.find((bucket) => !initial.has(bucket.key));
        if (stray !== undefined) {
          throw new CertplaneError(ErrorCode.STORE_INVALID_WRITE, `A rate bucket update tried to write ${stray.key}, which it had not locked; write only the buckets named in its initial states.`, { key: stray.key });
        }
        if (write.length > 0) {
          await tx.query(
            `UPDATE rate_buckets AS bucket
             SET tokens = next.tokens, updated_at = next.updated_at::timestamptz, blocked_until = next.blocked_until::timestamptz, blocked_reason = next.blocked_reason
             FROM unnest($1::text[], $2::float8[], $3::text[], $4::text[], $5::text[]) AS next (key, tokens, updated_at, blocked_until, blocked_reason)
             WHERE bucket.key = next.key`,
            [
              write.map((bucket) => bucket.key),
              write.map((bucket) => bucket.tokens),
              write.map((bucket) => bucket.updatedAt.toISOString()),
              write.map((bucket) => bucket.blockedUntil?.toISOString() ?? null),
              write.map((bucket) => bucket.blockedReason),
            ],
          );
        }
        return result;
      }),
  };

  async ping(): Promise<void> {
    await this.db.query('SELECT 1');
  }

  query<T = Record<string, unknown>>(sql: string, params?: readonly unknown[]): Promise<T[]> {
    return this.db.query<T>(sql, params);
  }

  close(): Promise<void> {
    return this.db.close();
  }

  /**
   * Takes a certificate's lease for `owner` when it is free or lapsed, returning `columns` of
   * the row taken (none: not taken). The database's clock, never the caller's: every process
   * compares against the same time, so a process whose clock runs ahead can neither steal a
   * live lease nor keep a lapsed one.
   */
  private async leaseCertificate<T = Record<string, unknown>>(id: string, owner: string, durationMs: number, columns: string): Promise<T[]> {
    if (!UUID.test(id)) return [];
    return this.db.query<T & Record<string, unknown>>(
      `UPDATE certificates SET lease_owner = $2, lease_until = now() + $3::bigint * interval '1 millisecond', updated_at = now()
       WHERE id = $1 AND (lease_owner IS NULL OR lease_until IS NULL OR lease_until <= now()) RETURNING ${columns}`,
      [id, owner, String(Math.max(0, Math.round(durationMs)))],
    );
  }

  private async updateInstance(id: string, assignment: string, value: unknown): Promise<void> {
    const rows = UUID.test(id) ? await this.db.query(`UPDATE instances SET ${assignment} WHERE id = $1 RETURNING id`, [id, value]) : [];
    if (rows.length === 0) throw instanceNotFound(id, 'update');
  }

  /** Runs an insert that refers to an instance, naming the instance when it does not exist. */
  private async forInstance<T>(instanceId: string, what: string, insert: () => Promise<T>): Promise<T> {
    if (!UUID.test(instanceId)) throw instanceNotFound(instanceId, `record ${what} for`);
    try {
      return await insert();
    } catch (error) {
      if (hasCode(error, ErrorCode.STORE_NOT_FOUND)) throw instanceNotFound(instanceId, `record ${what} for`, error);
      throw error;
    }
  }
}

/**
 * Serialises everything that mints, uses or revokes an instance's agent certificates (on
 * PostgreSQL across processes): the instance's row is the lock. Statements after it see
 * whatever the previous holder committed, so a revocation cannot miss a renewal in flight.
 */
async function lockAgentsOf(tx: Queryable, instanceId: string): Promise<void> {
  const [row] = await tx.query('SELECT id FROM instances WHERE id = $1 FOR NO KEY UPDATE', [instanceId]);
  if (!row) throw instanceNotFound(instanceId, 'change the agent certificates of');
}

/** The channel migration 13's trigger notifies on, with "instance-id certificate-id status". */
const AGENT_WORK_CHANNEL = 'certplane_agent_work';

/** First key of the advisory locks that serialise hostname claims ("cpnh"); the second is the parent domain's hash. */
const HOSTNAME_LOCK_CLASS = 0x63706e68;

function describeConflict(conflict: HostnameConflict): string {
  return conflict.requested === conflict.held ? `${conflict.requested} is held by another instance` : `${conflict.requested} overlaps ${conflict.held}, which is held by another instance`;
}

/**
 * Takes the locks for `names` and refuses them (INSTANCE_HOSTNAME_TAKEN, the holders in
 * `details.conflicts`) when an instance other than `claimant` holds one of them, or a
 * wildcard and a name it covers would be split between two instances.
 */
async function claimHostnames(tx: Queryable, claimant: string | null, names: readonly string[]): Promise<void> {
  if (names.length === 0) return;
  const claims = names.map((name) => ({ name, ...coveringParent(name) }));
  const parents = [...new Set(claims.map((claim) => claim.parent))].sort();
  // Two registrations that could conflict share a parent, so they queue here (in one
  // order, so they never deadlock) and the second one sees the first one's names.
  for (const parent of parents) await tx.query('SELECT pg_advisory_xact_lock($1::int, hashtext($2))', [HOSTNAME_LOCK_CLASS, parent]);
  const held = await tx.query<{ name: string; instance_id: string; parent: string; wildcard: boolean; cluster: string | null }>(
    `SELECT o.name, o.instance_id, o.parent, o.wildcard, i.cluster FROM instance_hostnames o JOIN instances i ON i.id = o.instance_id
     WHERE ($4::uuid IS NULL OR o.instance_id <> $4::uuid)
       AND (o.name = ANY($1::text[]) OR (o.wildcard AND o.parent = ANY($2::text[])) OR (NOT o.wildcard AND o.parent = ANY($3::text[])))
     ORDER BY o.name`,
    [[...names], claims.map((claim) => claim.parent), claims.filter((claim) => claim.wildcard).map((claim) => claim.parent), claimant],
  );
  const conflicts: HostnameConflict[] = held.flatMap((row) =>
    claims
      .filter((claim) => row.name === claim.name || (row.parent === claim.parent && (row.wildcard || claim.wildcard)))
      .map((claim) => ({ requested: claim.name, held: row.name, instanceId: row.instance_id, cluster: row.cluster })),
  );
  if (conflicts.length > 0) {
    throw new CertplaneError(ErrorCode.INSTANCE_HOSTNAME_TAKEN, `${describeConflict(conflicts[0]!)}; a hostname belongs to one instance.`, { conflicts });
  }
}

/** Records `instanceId` as the owner of `names`, which `claimHostnames` cleared under the same transaction's locks. */
async function recordClaims(tx: Queryable, instanceId: string, names: readonly string[]): Promise<void> {
  if (names.length === 0) return;
  const claims = names.map((name) => ({ name, ...coveringParent(name) }));
  await tx.query(
    'INSERT INTO instance_hostnames (name, instance_id, parent, wildcard) SELECT name, $1::uuid, parent, wildcard FROM unnest($2::text[], $3::text[], $4::boolean[]) AS claim (name, parent, wildcard)',
    [instanceId, [...names], claims.map((claim) => claim.parent), claims.map((claim) => claim.wildcard)],
  );
}

/** Every value of an instance's status, in lifecycle order: what the summary counts. */
const INSTANCE_STATUSES: readonly InstanceStatus[] = ['none', ...CERTIFICATE_STATES];

/** The instance's most recent certificate (`latest.status`), for filtering and counting by status. */
const LATEST_CERTIFICATE_JOIN = `LEFT JOIN LATERAL (
  SELECT c.status FROM certificates c WHERE c.instance_id = i.id ORDER BY c.created_at DESC, c.creation_order DESC LIMIT 1
) latest ON true`;

/**
 * The instance's installed certificate is past `fraction` of its lifetime at `now` (lifecycle/renewal.ts's atRisk, in SQL).
 * One uncorrelated set, read once and hashed, not an EXISTS per instance: PGlite never
 * analyses, and without statistics the planner answered the EXISTS by intersecting the status
 * index (every installed certificate) with the instance's, once per instance: quadratic, 1.4 s
 * of a 10,000-instance summary. Negated it is a NOT IN, which means what NOT EXISTS did
 * because `instance_id` is never NULL.
 */
const AT_RISK_SQL = (now: string, fraction: string) => `(i.id IN (
  SELECT r.instance_id FROM certificates r WHERE r.status = 'installed' AND r.not_before IS NOT NULL AND r.not_after IS NOT NULL
    AND ${now}::timestamptz >= r.not_before + (r.not_after - r.not_before) * ${fraction}::float8
))`;

/** The conditions of `filter`, their values appended to `params`. */
function instanceFilter(filter: InstanceFilter, now: Date, params: unknown[]): string[] {
  const where: string[] = [];
  const param = (value: unknown) => {
    params.push(value);
    return `$${params.length}`;
  };
  if (filter.cluster !== undefined) where.push(`i.cluster = ${param(filter.cluster)}::text`);
  if (filter.hostname !== undefined) where.push(`i.hostnames @> ARRAY[${param(filter.hostname)}::text]`);
  if (filter.status !== undefined) where.push(`COALESCE(latest.status, 'none') = ${param(filter.status)}::text`);
  if (filter.atRisk !== undefined) where.push(`${filter.atRisk ? '' : 'NOT '}${AT_RISK_SQL(param(now), param(AT_RISK_FRACTION))}`);
  return where;
}

function instanceNotFound(instanceId: string, action: string, cause?: unknown): CertplaneError {
  return new CertplaneError(ErrorCode.STORE_NOT_FOUND, `Cannot ${action} instance ${instanceId}: no such instance. Create the instance first, or check the id.`, { instanceId }, { cause });
}

/** INSERT ... RETURNING always yields the row; an engine that did not would be a bug worth a loud error. */
function inserted<T>(row: T | undefined): T {
  if (row === undefined) throw new CertplaneError(ErrorCode.STORE_QUERY_FAILED, 'The database accepted an insert but returned no row.');
  return row;
}

function encodeCursor(createdAt: string, id: string): string {
  return Buffer.from(JSON.stringify([createdAt, id])).toString('base64url');
}

function decodeCursor(cursor: string): { createdAt: string; id: string } {
  let decoded: unknown;
  try {
    decoded = /^[A-Za-z0-9_-]+$/.test(cursor) ? JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) : undefined;
  } catch {
    decoded = undefined;
  }
  if (Array.isArray(decoded) && decoded.length === 2) {
    const [createdAt, id] = decoded as unknown[];
    const time = typeof createdAt === 'string' && CURSOR_TIME.test(createdAt) ? Date.parse(createdAt) : Number.NaN;
    if (Number.isFinite(time) && typeof id === 'string' && UUID.test(id)) return { createdAt: createdAt as string, id };
  }
  throw new CertplaneError(ErrorCode.STORE_INVALID_CURSOR, 'The page cursor is not one this service issued; pass back the nextCursor of the previous page unchanged, or omit it to start from the first page.');
}

function toInstance(row: InstanceRow): InstanceRecord {
  return {
    id: row.id,
    name: row.name,
    hostnames: row.hostnames,
    cluster: row.cluster,
    keyAlgorithm: row.key_algorithm as KeyAlgorithm,
    createdAt: row.created_at,
    agentConnectedAt: row.agent_connected_at,
    agentLastSeenAt: row.agent_last_seen_at,
    installedFingerprintSha256: row.installed_fingerprint_sha256,
    profile: row.profile,
    autoIssue: row.auto_issue,
    trustProfiles: row.trust_profiles,
    decommissioned:
      row.decommissioned_at && row.decommission
        ? {
            at: row.decommissioned_at,
            requestedBy: row.decommission.requestedBy,
            comment: row.decommission.comment,
            certificate: row.decommission.certificate,
            revocationReason: row.decommission.revocationReason,
          }
        : null,
  };
}

function toCertificate(row: CertificateRow): CertificateRecord {
  return {
    id: row.id,
    instanceId: row.instance_id,
    status: row.status,
    stateChangedAt: row.state_changed_at,
    failure: row.failure,
    orderUrl: row.order_url,
    leaseOwner: row.lease_owner,
    leaseUntil: row.lease_until,
    csrPem: row.csr_pem,
    fullchainPem: row.fullchain_pem,
    fingerprintSha256: row.fingerprint_sha256,
    notAfter: row.not_after,
    anchorCN: row.anchor_cn,
    report: row.report,
    lastError: row.last_error,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    deliveredAt: row.delivered_at,
    installedAt: row.installed_at,
    notBefore: row.not_before,
    renewAt: row.renew_at,
    ariRetryAt: row.ari_retry_at,
    replacesCertificateId: row.replaces_certificate_id,
    jobId: row.job_id,
    revocation: row.revocation,
    rechainedFromId: row.rechained_from_id ?? null,
  };
}

function toRateBucket(row: RateBucketRow): RateBucketRecord {
  return { key: row.key, tokens: row.tokens, updatedAt: row.updated_at, blockedUntil: row.blocked_until, blockedReason: row.blocked_reason };
}

function toAgentCertificate(row: AgentCertificateRow): AgentCertificateRecord {
  return {
    fingerprintSha256: row.fingerprint_sha256,
    instanceId: row.instance_id,
    serialNumber: row.serial_number,
    notAfter: row.not_after,
    revokedAt: row.revoked_at,
    createdAt: row.created_at,
    renewedFrom: row.renewed_from,
    firstUsedAt: row.first_used_at,
    supersededAt: row.superseded_at,
  };
}
