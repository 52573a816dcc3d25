/**
 * The Store contract over SQL that both engines run unchanged. Every state change that
 * two actors may race on (consuming an enrollment token, moving a certificate between
 * statuses) is one conditional UPDATE, so the database, not the caller, decides who won.
 * Rate buckets, whose next state the limiter computes, are instead locked for the length
 * of one transaction, which serialises their callers across processes just the same.
 */
import { randomUUID } from 'node:crypto';
import type { KeyAlgorithm } from '../agents/protocol.js';
import { coveringParent, normaliseDnsName } from '../chain/index.js';
import { CertplaneError, hasCode } from '../errors.js';
import { openDatabase, type Database, type Queryable } from './engines.js';
import { migrate } from './migrations.js';
import { SqlAudit, SqlCampaigns, SqlJobs } from './jobs.js';
import { OPEN_STATES, TRANSITIONS, classify, refusal, type CertificateState, type FailureReason, type RevocationRecord } from '../lifecycle/index.js';
import {
  type AgentCertificateRecord,
  type ApiClientRecord,
  type CertificateRecord,
  type CertificateUpdate,
  type DecommissionRecord,
  type HostnameConflict,
  type InstanceRecord,
  type Page,
  type RateBucketRecord,
  type Store,
} from './types.js';

/**
 * Opens the database named by `url` (postgres://, postgresql://, pglite:PATH or memory:)
 * and brings its schema up to date before anything else may use it.
 */
export async function openStore(url: string): Promise<Store> {
  const db = await openDatabase(url);
  try {
    await migrate(db);
  } catch (error) {
    await db.close();
    throw error;
  }
  return new SqlStore(db);
}

/** Ids are uuids; anything else cannot name a record, and must not reach a uuid parameter. */
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** Microsecond precision, because that is what the database keeps: paging must not lose it. */
const CURSOR_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/;
const CURSOR_TIME_SQL = `to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;

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
        const claims = names.map((name) => ({ name, ...coveringParent(name) }));
        const parents = [...new Set(claims.map((claim) => claim.parent))].sort();
        // Two registrations that could conflict share a parent, so they queue here (in one
        // order, so they never deadlock) and the second one sees the first one's names.
        for (const parent of parents) await tx.query('SELECT pg_advisory_xact_lock($1::int, hashtext($2))', [HOSTNAME_LOCK_CLASS, parent]);
        const held = await tx.query<{ name: string; instance_id: string; parent: string; wildcard: boolean; cluster: string | null }>(
          `SELECT o.name, o.instance_id, o.parent, o.wildcard, i.cluster FROM instance_hostnames o JOIN instances i ON i.id = o.instance_id
           WHERE o.name = ANY($1::text[]) OR (o.wildcard AND o.parent = ANY($2::text[])) OR (NOT o.wildcard AND o.parent = ANY($3::text[]))
           ORDER BY o.name`,
          [names, claims.map((claim) => claim.parent), claims.filter((claim) => claim.wildcard).map((claim) => claim.parent)],
        );
        const conflicts: HostnameConflict[] = held.flatMap((row) =>
          claims
            .filter((claim) => row.name === claim.name || (row.parent === claim.parent && (row.wildcard || claim.wildcard)))
            .map((claim) => ({ requested: claim.name, held: row.name, instanceId: row.instance_id, cluster: row.cluster })),
        );
        if (conflicts.length > 0) {
          throw new CertplaneError('INSTANCE_HOSTNAME_TAKEN', `${describeConflict(conflicts[0]!)}; a hostname belongs to one instance.`, { conflicts });
        }
        const [row] = await tx.query<InstanceRow>(
          'INSERT INTO instances (id, name, hostnames, cluster, key_algorithm, profile) VALUES ($1, $2, $3::text[], $4, $5, $6) RETURNING *',
          [randomUUID(), input.name, names, input.cluster, input.keyAlgorithm, input.profile ?? null],
        );
        const instance = toInstance(inserted(row));
        await tx.query(
          'INSERT INTO instance_hostnames (name, instance_id, parent, wildcard) SELECT name, $1::uuid, parent, wildcard FROM unnest($2::text[], $3::text[], $4::boolean[]) AS claim (name, parent, wildcard)',
          [instance.id, names, claims.map((claim) => claim.parent), claims.map((claim) => claim.wildcard)],
        );
        return instance;
      }),
    get: async (id) => {
      if (!UUID.test(id)) return undefined;
      const [row] = await this.db.query<InstanceRow>('SELECT * FROM instances WHERE id = $1', [id]);
      return row && toInstance(row);
    },
    list: async ({ cursor, limit, clusters = null, includeDecommissioned = false }) => {
      const after = cursor === undefined ? undefined : decodeCursor(cursor);
      const rows = await this.db.query<InstanceRow & { cursor_created_at: string }>(
        `SELECT *, ${CURSOR_TIME_SQL} AS cursor_created_at FROM instances
         WHERE ($2::text[] IS NULL OR cluster = ANY($2::text[]))
         ${includeDecommissioned ? '' : 'AND decommissioned_at IS NULL'}
         ${after ? 'AND (created_at, id) > ($3::timestamptz, $4::uuid)' : ''}
         ORDER BY created_at, id LIMIT $1`,
        after ? [limit + 1, clusters && [...clusters], after.createdAt, after.id] : [limit + 1, clusters && [...clusters]],
      );
      const items = rows.slice(0, limit);
      const last = items.at(-1);
      const nextCursor = rows.length > limit && last ? encodeCursor(last.cursor_created_at, last.id) : null;
      return { items: items.map(toInstance), nextCursor } satisfies Page<InstanceRecord>;
    },
    ownedNames: async (instanceId, names) => {
      if (!UUID.test(instanceId)) return [];
      const rows = await this.db.query<{ name: string }>('SELECT name FROM instance_hostnames WHERE instance_id = $1 AND name = ANY($2::text[]) ORDER BY name', [instanceId, [...names]]);
      return rows.map((row) => row.name);
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
        if (!row) throw new CertplaneError('INSTANCE_DECOMMISSIONED', `Instance ${id} is already decommissioned; nothing was changed.`, { instanceId: id });
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
      await this.updateInstance(id, 'agent_connected_at = $2::timestamptz', connectedAt);
    },
    touchAgent: async (id, at) => {
      await this.updateInstance(id, 'agent_last_seen_at = $2::timestamptz', at);
    },
    setInstalledFingerprint: async (id, fingerprintSha256) => {
      await this.updateInstance(id, 'installed_fingerprint_sha256 = $2::text', fingerprintSha256);
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
    create: async (instanceId) => {
      const [row] = await this.forInstance(instanceId, 'a certificate', () =>
        this.db.query<CertificateRow>("INSERT INTO certificates (id, instance_id, status) VALUES ($1, $2, 'pending') RETURNING *", [randomUUID(), instanceId]),
      );
      return toCertificate(inserted(row));
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
    open: async (instanceId) => {
      if (!UUID.test(instanceId)) return [];
      const rows = await this.db.query<CertificateRow>('SELECT * FROM certificates WHERE instance_id = $1 AND status = ANY($2::text[]) ORDER BY created_at, creation_order', [
        instanceId,
        [...OPEN_STATES],
      ]);
      return rows.map(toCertificate);
    },
    apply: async (id, event, fields = {}, condition) => {
      if (!UUID.test(id)) return undefined;
      if (event === 'failed' && (!fields.failure || !fields.lastError)) throw new CertplaneError('STORE_INVALID_VALUE', 'a failed event needs a typed failure and a message');
      const { from, to } = TRANSITIONS[event];
      const params: unknown[] = [id, [...from], to];
      const assignments = ['status = $3', 'updated_at = now()', 'state_changed_at = now()'];
      for (const [key, [column, type]] of Object.entries(UPDATE_COLUMNS) as [keyof CertificateUpdate, readonly [string, string]][]) {
        const value = fields[key];
        if (value === undefined) continue;
        // jsonb travels as text so neither driver re-encodes it (pg would turn an array into a SQL array).
        params.push(type === 'jsonb' && value !== null ? JSON.stringify(value) : value);
        assignments.push(type === 'jsonb' ? `${column} = $${params.length}::text::jsonb` : `${column} = $${params.length}::${type}`);
      }
      let leaseClause = '';
      if (condition) {
        params.push(condition.leaseOwner);
        leaseClause = ` AND lease_owner = $${params.length}`;
      }
      const update = `UPDATE certificates SET ${assignments.join(', ')} WHERE id = $1 AND status = ANY($2::text[])${leaseClause} RETURNING *`;
      const moved =
        event !== 'installed'
          ? (await this.db.query<CertificateRow>(update, params))[0]
          : await this.db.transaction(async (tx) => {
              const [row] = await tx.query<CertificateRow>(update, params);
              // The instance serves one certificate: the one it had before is superseded in the same step.
              if (row) {
                await tx.query(
                  'UPDATE certificates SET status = $3, updated_at = now(), state_changed_at = now() WHERE instance_id = $1 AND id <> $2 AND status = ANY($4::text[])',
                  [row.instance_id, row.id, TRANSITIONS.superseded.to, [...TRANSITIONS.superseded.from]],
                );
              }
              return row;
            });
      if (moved) return toCertificate(moved);
      const [current] = await this.db.query<{ status: CertificateState }>('SELECT status FROM certificates WHERE id = $1', [id]);
      if (current && classify(current.status, event) === 'refused') throw refusal(current.status, event);
      return undefined;
    },
    attachJob: async (id, jobId, replacesCertificateId) => {
      if (!UUID.test(id)) return undefined;
      const [row] = await this.db.query<CertificateRow>(
        "UPDATE certificates SET job_id = $2::uuid, replaces_certificate_id = $3::uuid, updated_at = now() WHERE id = $1 AND status = 'pending' RETURNING *",
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
    lease: async (id, owner, now, until) => {
      if (!UUID.test(id)) return false;
      const rows = await this.db.query(
        `UPDATE certificates SET lease_owner = $2, lease_until = $3::timestamptz, updated_at = now()
         WHERE id = $1 AND (lease_owner IS NULL OR lease_owner = $2 OR lease_until IS NULL OR lease_until <= $4::timestamptz) RETURNING id`,
        [id, owner, until, now],
      );
      return rows.length === 1;
    },
    release: async (id, owner) => {
      if (!UUID.test(id)) return;
      await this.db.query('UPDATE certificates SET lease_owner = NULL, lease_until = NULL WHERE id = $1 AND lease_owner = $2', [id, owner]);
    },
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
          throw new CertplaneError('STORE_INVALID_WRITE', `A rate bucket update tried to write ${stray.key}, which it had not locked; write only the buckets named in its initial states.`, { key: stray.key });
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

  query<T = Record<string, unknown>>(sql: string, params?: readonly unknown[]): Promise<T[]> {
    return this.db.query<T>(sql, params);
  }

  close(): Promise<void> {
    return this.db.close();
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
      if (hasCode(error, 'STORE_NOT_FOUND')) throw instanceNotFound(instanceId, `record ${what} for`, error);
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

/** First key of the advisory locks that serialise hostname claims ("cpnh"); the second is the parent domain's hash. */
const HOSTNAME_LOCK_CLASS = 0x63706e68;

function describeConflict(conflict: HostnameConflict): string {
  return conflict.requested === conflict.held ? `${conflict.requested} is held by another instance` : `${conflict.requested} overlaps ${conflict.held}, which is held by another instance`;
}

function instanceNotFound(instanceId: string, action: string, cause?: unknown): CertplaneError {
  return new CertplaneError('STORE_NOT_FOUND', `Cannot ${action} instance ${instanceId}: no such instance. Create the instance first, or check the id.`, { instanceId }, { cause });
}

/** INSERT ... RETURNING always yields the row; an engine that did not would be a bug worth a loud error. */
function inserted<T>(row: T | undefined): T {
  if (row === undefined) throw new CertplaneError('STORE_QUERY_FAILED', 'The database accepted an insert but returned no row.');
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
  throw new CertplaneError('STORE_INVALID_CURSOR', 'The page cursor is not one this service issued; pass back the nextCursor of the previous page unchanged, or omit it to start from the first page.');
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
