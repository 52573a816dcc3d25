/**
 * The Store contract over SQL that both engines run unchanged. Every state change that
 * two actors may race on (consuming an enrollment token, moving a certificate between
 * statuses) is one conditional UPDATE, so the database, not the caller, decides who won.
 * Rate buckets, whose next state the limiter computes, are instead locked for the length
 * of one transaction, which serialises their callers across processes just the same.
 */
import { randomUUID } from 'node:crypto';
import type { KeyAlgorithm } from '../agents/protocol.js';
import { CertplaneError, hasCode } from '../errors.js';
import { openDatabase, type Database } from './engines.js';
import { migrate } from './migrations.js';
import { SqlAudit, SqlCampaigns, SqlJobs } from './jobs.js';
import { OPEN_STATES, TRANSITIONS, classify, refusal, type CertificateState, type FailureReason } from '../lifecycle/index.js';
import {
  type AgentCertificateRecord,
  type ApiClientRecord,
  type CertificateRecord,
  type CertificateUpdate,
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
    create: async (input) => {
      const [row] = await this.db.query<InstanceRow>(
        'INSERT INTO instances (id, name, hostnames, cluster, key_algorithm, profile) VALUES ($1, $2, $3::text[], $4, $5, $6) RETURNING *',
        [randomUUID(), input.name, [...input.hostnames], input.cluster, input.keyAlgorithm, input.profile ?? null],
      );
      return toInstance(inserted(row));
    },
    get: async (id) => {
      if (!UUID.test(id)) return undefined;
      const [row] = await this.db.query<InstanceRow>('SELECT * FROM instances WHERE id = $1', [id]);
      return row && toInstance(row);
    },
    list: async ({ cursor, limit }) => {
      const after = cursor === undefined ? undefined : decodeCursor(cursor);
      const rows = await this.db.query<InstanceRow & { cursor_created_at: string }>(
        `SELECT *, ${CURSOR_TIME_SQL} AS cursor_created_at FROM instances
         ${after ? 'WHERE (created_at, id) > ($2::timestamptz, $3::uuid)' : ''}
         ORDER BY created_at, id LIMIT $1`,
        after ? [limit + 1, after.createdAt, after.id] : [limit + 1],
      );
      const items = rows.slice(0, limit);
      const last = items.at(-1);
      const nextCursor = rows.length > limit && last ? encodeCursor(last.cursor_created_at, last.id) : null;
      return { items: items.map(toInstance), nextCursor } satisfies Page<InstanceRecord>;
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
      (await this.db.query<{ fingerprint_sha256: string }>('SELECT fingerprint_sha256 FROM agent_certificates WHERE revoked_at IS NOT NULL AND revoked_at > $1::timestamptz', [since])).map((r) => r.fingerprint_sha256),
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
    /** True only for the call that revoked it: unknown or already revoked certificates give false. */
    revoke: async (fingerprintSha256, at) => {
      const rows = await this.db.query(
        'UPDATE agent_certificates SET revoked_at = $2::timestamptz WHERE fingerprint_sha256 = $1 AND revoked_at IS NULL RETURNING fingerprint_sha256',
        [fingerprintSha256, at],
      );
      return rows.length === 1;
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
    apply: async (id, event, fields = {}) => {
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
      const update = `UPDATE certificates SET ${assignments.join(', ')} WHERE id = $1 AND status = ANY($2::text[]) RETURNING *`;
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
  };
}
