/**
 * The one set of schema migrations, for both engines. They live here as TypeScript
 * strings so the compiled service carries them with nothing to copy beside it. A released
 * migration is never edited: a change to the schema is a new entry at the end.
 */
import { CertplaneError, hasCode } from '../errors.js';
import type { Database } from './engines.js';
import { ErrorCode } from '../error-catalogue.js';

/** One step of the schema, applied entirely or not at all. */
export interface Migration {
  readonly version: number;
  readonly description: string;
  /** One statement each, so both engines can run them through query(). */
  readonly statements: readonly string[];
}

/** Every migration, in the order it is applied. */
export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    description: 'instances, enrollment tokens, agent certificates and certificates',
    statements: [
      `CREATE TABLE instances (
        id uuid PRIMARY KEY,
        name text NOT NULL,
        hostnames text[] NOT NULL,
        cluster text,
        key_algorithm text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        agent_connected_at timestamptz,
        agent_last_seen_at timestamptz,
        installed_fingerprint_sha256 text
      )`,
      'CREATE INDEX instances_created_at_id ON instances (created_at, id)',
      `CREATE TABLE enrollment_tokens (
        token_sha256 text PRIMARY KEY,
        instance_id uuid NOT NULL REFERENCES instances (id),
        expires_at timestamptz NOT NULL,
        used_at timestamptz,
        created_at timestamptz NOT NULL DEFAULT now()
      )`,
      `CREATE TABLE agent_certificates (
        fingerprint_sha256 text PRIMARY KEY,
        instance_id uuid NOT NULL REFERENCES instances (id),
        serial_number text NOT NULL,
        not_after timestamptz NOT NULL,
        revoked_at timestamptz,
        created_at timestamptz NOT NULL DEFAULT now()
      )`,
      // creation_order breaks ties between rows created in the same clock tick (PGlite's
      // clock has millisecond resolution), so "latest" always means the last one inserted.
      `CREATE TABLE certificates (
        id uuid PRIMARY KEY,
        instance_id uuid NOT NULL REFERENCES instances (id),
        status text NOT NULL CHECK (status IN ('pending', 'issuing', 'delivered', 'installed', 'failed')),
        csr_pem text,
        fullchain_pem text,
        fingerprint_sha256 text,
        not_after timestamptz,
        anchor_cn text,
        report jsonb,
        last_error text,
        created_at timestamptz NOT NULL DEFAULT now(),
        creation_order bigint GENERATED ALWAYS AS IDENTITY,
        updated_at timestamptz NOT NULL DEFAULT now(),
        delivered_at timestamptz,
        installed_at timestamptz
      )`,
      'CREATE INDEX certificates_instance_created ON certificates (instance_id, created_at, creation_order)',
      'CREATE INDEX certificates_status ON certificates (status)',
    ],
  },
  {
    version: 2,
    description: 'renewal scheduling, reissue campaigns, one open certificate per instance, audit trail',
    statements: [
      'ALTER TABLE instances ADD COLUMN profile text',
      'ALTER TABLE certificates ADD COLUMN not_before timestamptz',
      // When the scheduler renews this certificate: inside the CA's ARI window when it
      // offers one, else two thirds into the lifetime with jitter.
      'ALTER TABLE certificates ADD COLUMN renew_at timestamptz',
      'ALTER TABLE certificates ADD COLUMN ari_checked_at timestamptz',
      'ALTER TABLE certificates ADD COLUMN ari_retry_at timestamptz',
      'ALTER TABLE certificates ADD COLUMN replaces_certificate_id uuid',
      'ALTER TABLE certificates ADD COLUMN job_id uuid',
      // Two replicas asked to issue for one instance at once must end with one request.
      "CREATE UNIQUE INDEX certificates_one_open_per_instance ON certificates (instance_id) WHERE status IN ('pending', 'issuing', 'delivered')",
      'CREATE INDEX certificates_renew_at ON certificates (renew_at) WHERE renew_at IS NOT NULL',
      `CREATE TABLE campaigns (
        id uuid PRIMARY KEY,
        selector jsonb NOT NULL,
        reason text NOT NULL,
        requested_by text NOT NULL,
        rotate_key boolean NOT NULL,
        state text NOT NULL CHECK (state IN ('running', 'done', 'cancelled')),
        matched integer NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        finished_at timestamptz
      )`,
      `CREATE TABLE jobs (
        id uuid PRIMARY KEY,
        kind text NOT NULL CHECK (kind IN ('renewal', 'reissue')),
        instance_id uuid NOT NULL REFERENCES instances (id),
        campaign_id uuid REFERENCES campaigns (id),
        state text NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
        due_at timestamptz NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        claimed_by text,
        claimed_until timestamptz,
        certificate_id uuid,
        last_error text,
        reason text NOT NULL,
        requested_by text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now()
      )`,
      'CREATE INDEX jobs_due ON jobs (state, due_at)',
      'CREATE INDEX jobs_campaign ON jobs (campaign_id)',
      "CREATE UNIQUE INDEX jobs_one_open_per_instance ON jobs (instance_id) WHERE state IN ('queued', 'running')",
      `CREATE TABLE audit_log (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at timestamptz NOT NULL DEFAULT now(),
        actor text NOT NULL,
        action text NOT NULL,
        target text,
        reason text,
        details jsonb
      )`,
    ],
  },
  {
    version: 3,
    description: 'rate limiter token buckets shared by every management-plane process',
    statements: [
      // One row per bucket (an account's new orders, a registered domain's certificates, a
      // hostname's failed validations). Tokens are stored as of updated_at and refilled on
      // read; blocked_until holds the CA's Retry-After so every process honours it.
      `CREATE TABLE rate_buckets (
        key text PRIMARY KEY,
        tokens double precision NOT NULL,
        updated_at timestamptz NOT NULL,
        blocked_until timestamptz,
        blocked_reason text
      )`,
    ],
  },
  {
    version: 4,
    description: 'control-plane callers registered by client-certificate thumbprint, with a role',
    statements: [
      `CREATE TABLE api_clients (
        fingerprint_sha256 text PRIMARY KEY,
        name text NOT NULL,
        role text NOT NULL CHECK (role IN ('admin', 'operator', 'reader')),
        clusters text[],
        not_after timestamptz,
        created_at timestamptz NOT NULL DEFAULT now(),
        revoked_at timestamptz
      )`,
    ],
  },
  {
    version: 5,
    description: 'audit trail lookups by action and target (the last configuration recorded per node)',
    statements: ['CREATE INDEX audit_log_action_target ON audit_log (action, target, id)'],
  },
  {
    version: 6,
    description: 'the clusters a reissue campaign touches, so that cluster-limited callers reach their own campaigns only',
    statements: [
      'ALTER TABLE campaigns ADD COLUMN clusters text[]',
      // Earlier campaigns: exact where the selector named a cluster or instances (an
      // instance never changes cluster); left unknown otherwise, for unlimited callers only.
      "UPDATE campaigns SET clusters = ARRAY[selector->>'cluster'] WHERE selector ? 'cluster'",
      `UPDATE campaigns c SET clusters = (SELECT array_agg(DISTINCT i.cluster) FROM instances i WHERE i.id::text IN (SELECT jsonb_array_elements_text(c.selector->'instanceIds')))
       WHERE c.selector ? 'instanceIds'`,
    ],
  },
  {
    version: 7,
    description: 'agent certificate chains: each renewal names its predecessor, which its first use supersedes',
    statements: [
      // The certificate this one was renewed from (null for one issued at enrollment): revoking
      // a certificate walks these links to reach every certificate minted from it.
      'ALTER TABLE agent_certificates ADD COLUMN renewed_from text REFERENCES agent_certificates (fingerprint_sha256)',
      // The plane's clock when the renewal was granted: the per-instance interval is measured on it.
      'ALTER TABLE agent_certificates ADD COLUMN renewed_at timestamptz',
      // Set by the first authentication with the certificate; that is when its predecessor stops being valid.
      'ALTER TABLE agent_certificates ADD COLUMN first_used_at timestamptz',
      'ALTER TABLE agent_certificates ADD COLUMN superseded_at timestamptz',
      // At most one valid successor per certificate, whatever the callers do.
      'CREATE UNIQUE INDEX agent_certificates_one_live_successor ON agent_certificates (renewed_from) WHERE renewed_from IS NOT NULL AND revoked_at IS NULL',
      'CREATE INDEX agent_certificates_instance ON agent_certificates (instance_id, created_at)',
    ],
  },
  {
    version: 8,
    description: 'a hostname belongs to one instance: the ownership table, filled oldest instance first',
    statements: [
      // One CA account serves every tenant and the CA reuses a valid authorization for a
      // name, so certplane itself must decide who may ask for it. `parent` and `wildcard`
      // let a wildcard conflict with the names it covers ("*.example.com" and
      // "b.example.com" share the parent "example.com").
      `CREATE TABLE instance_hostnames (
        name text PRIMARY KEY,
        instance_id uuid NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
        parent text NOT NULL,
        wildcard boolean NOT NULL
      )`,
      'CREATE INDEX instance_hostnames_parent ON instance_hostnames (parent, wildcard)',
      'CREATE INDEX instance_hostnames_instance ON instance_hostnames (instance_id)',
      // Existing instances claim their names oldest first; a later instance listing a name
      // already held (or covered by a wildcard held) keeps it in its list but does not own
      // it, so its CSRs for it are refused. Each such name is recorded in the audit trail,
      // and serve warns about it at every start until it is resolved.
      `DO $$
      DECLARE
        claim record;
        holder uuid;
      BEGIN
        FOR claim IN
          SELECT i.id, n.name, substr(n.name, strpos(n.name, '.') + 1) AS parent, n.name LIKE '*.%' AS wildcard
          FROM instances i CROSS JOIN LATERAL (SELECT DISTINCT lower(rtrim(h, '.')) AS name FROM unnest(i.hostnames) AS h) n
          ORDER BY i.created_at, i.id, n.name
        LOOP
          SELECT o.instance_id INTO holder FROM instance_hostnames o
          WHERE o.instance_id <> claim.id AND (o.name = claim.name OR (o.parent = claim.parent AND (o.wildcard OR claim.wildcard)))
          LIMIT 1;
          IF holder IS NULL THEN
            INSERT INTO instance_hostnames (name, instance_id, parent, wildcard) VALUES (claim.name, claim.id, claim.parent, claim.wildcard);
          ELSE
            INSERT INTO audit_log (actor, action, target, reason, details)
            VALUES ('migration 8', 'instance.hostname-conflict', claim.id::text, 'the name was registered to an older instance first',
                    jsonb_build_object('name', claim.name, 'heldBy', holder));
          END IF;
        END LOOP;
      END $$`,
    ],
  },
  {
    version: 9,
    description: "the lifecycle engine's states (lifecycle/machine.ts), typed failure reasons, when the state last changed",
    statements: [
      'ALTER TABLE certificates DROP CONSTRAINT certificates_status_check',
      'DROP INDEX certificates_one_open_per_instance',
      // An issuance under way had no stored order: it resumes from its accepted CSR.
      "UPDATE certificates SET status = 'csr_accepted' WHERE status = 'issuing'",
      `UPDATE certificates c SET status = 'superseded'
       WHERE c.status = 'installed'
         AND EXISTS (SELECT 1 FROM certificates n WHERE n.instance_id = c.instance_id AND n.status = 'installed' AND n.creation_order > c.creation_order)`,
      `ALTER TABLE certificates ADD CONSTRAINT certificates_state_check
         CHECK (status IN ('pending', 'csr_accepted', 'ordering', 'issued', 'delivered', 'installed', 'superseded', 'failed'))`,
      "CREATE UNIQUE INDEX certificates_one_open_per_instance ON certificates (instance_id) WHERE status IN ('pending', 'csr_accepted', 'ordering', 'issued', 'delivered')",
      'ALTER TABLE certificates ADD COLUMN failure jsonb',
      'ALTER TABLE certificates ADD COLUMN order_url text',
      'ALTER TABLE certificates ADD COLUMN state_changed_at timestamptz',
      'UPDATE certificates SET state_changed_at = updated_at',
      'ALTER TABLE certificates ALTER COLUMN state_changed_at SET DEFAULT now()',
      'ALTER TABLE certificates ALTER COLUMN state_changed_at SET NOT NULL',
      // Who works on the certificate until when: no other process orders while the lease is live.
      'ALTER TABLE certificates ADD COLUMN lease_owner text',
      'ALTER TABLE certificates ADD COLUMN lease_until timestamptz',
      // An order that was under way at the upgrade may still be running on a replica of the
      // previous version: nobody takes it up for ten minutes.
      "UPDATE certificates SET lease_owner = 'before migration 9', lease_until = now() + interval '10 minutes' WHERE status = 'csr_accepted'",
      'ALTER TABLE jobs ADD COLUMN last_failure jsonb',
    ],
  },
  {
    version: 10,
    description: 'revoked certificates with their revocation record; decommissioned instances, kept for the audit trail',
    statements: [
      'ALTER TABLE certificates DROP CONSTRAINT certificates_state_check',
      `ALTER TABLE certificates ADD CONSTRAINT certificates_state_check
         CHECK (status IN ('pending', 'csr_accepted', 'ordering', 'issued', 'delivered', 'installed', 'superseded', 'failed', 'revoked'))`,
      // Who asked, why (the RFC 5280 reason and its code), when, and which key signed (lifecycle/revocation.ts).
      'ALTER TABLE certificates ADD COLUMN revocation jsonb',
      // A decommissioned instance keeps its row (certificates, jobs and the audit trail point at
      // it) but owns no hostname any more and is left out of listings unless asked for.
      'ALTER TABLE instances ADD COLUMN decommissioned_at timestamptz',
      'ALTER TABLE instances ADD COLUMN decommission jsonb',
    ],
  },
  {
    version: 11,
    description: 'first certificate on enrollment (auto_issue per instance), and listing filters by hostname',
    statements: [
      // Instances registered before this version were created by callers that issue
      // themselves: they keep that. The API turns it on for new instances unless told not to.
      'ALTER TABLE instances ADD COLUMN auto_issue boolean NOT NULL DEFAULT false',
      // GET /v1/instances?hostname=: which instances list a name, without reading them all.
      'CREATE INDEX instances_hostnames ON instances USING gin (hostnames)',
      'CREATE INDEX instances_cluster_created_at_id ON instances (cluster, created_at, id)',
    ],
  },
  {
    version: 12,
    description: 'trust profiles: every chain the CA offered for a certificate with its verdict per profile, the profiles each instance serves, and the last trust evaluation of each instance',
    statements: [
      // The client trust stores (config/trust.ts) an instance's certificate must verify in.
      "ALTER TABLE instances ADD COLUMN trust_profiles text[] NOT NULL DEFAULT ARRAY['default']::text[]",
      // Every chain offered for the certificate, as the CA sent it: public, and what lets a
      // later decision (a trust change, a rechain) do without the CA. `selected` marks the
      // chain delivered (certificates.fullchain_pem is its verified path); `verification` is
      // its verdict per configured profile ({name: {ok, anchor, errors}}) under the trust
      // settings whose fingerprint is `trust_fingerprint`, as of `evaluated_at`.
      `CREATE TABLE certificate_chains (
        certificate_id uuid NOT NULL REFERENCES certificates (id) ON DELETE CASCADE,
        chain_index integer NOT NULL,
        chain_pem text NOT NULL,
        top_issuer_cn text NOT NULL,
        selected boolean NOT NULL,
        verification jsonb NOT NULL,
        evaluated_at timestamptz NOT NULL,
        trust_fingerprint text NOT NULL,
        PRIMARY KEY (certificate_id, chain_index)
      )`,
      // One row per instance with an installed certificate: whether that certificate's
      // installed chain verifies in every profile of the instance, and which stored chain
      // would, as the last reload (or installation) judged it. Persisted so that every
      // process, the API and the CLI agree on what a trust change broke.
      `CREATE TABLE instance_trust (
        instance_id uuid PRIMARY KEY REFERENCES instances (id) ON DELETE CASCADE,
        certificate_id uuid NOT NULL REFERENCES certificates (id) ON DELETE CASCADE,
        status text NOT NULL CHECK (status IN ('ok', 'broken')),
        broken_profiles text[] NOT NULL,
        alternate_chain_index integer,
        evaluated_at timestamptz NOT NULL,
        trust_fingerprint text NOT NULL
      )`,
      'CREATE INDEX instance_trust_status ON instance_trust (status)',
    ],
  },
  {
    version: 13,
    description: 'wake-ups for the process holding an agent\'s channel: a notification per certificate that waits for its agent, and indexes for the fallback pass over what changed',
    statements: [
      // The fallback pass reads only what changed since its last look, or whose lease lapsed since then.
      "CREATE INDEX certificates_open_updated ON certificates (updated_at) WHERE status IN ('pending', 'csr_accepted', 'ordering', 'issued', 'delivered')",
      "CREATE INDEX certificates_ordering_lease ON certificates (lease_until) WHERE status IN ('csr_accepted', 'ordering')",
      // Delivered at commit to every process that LISTENs (on PostgreSQL, across processes):
      // a new request waits for a CSR, an issued chain for its delivery, an order released
      // by its process for the one that holds the channel its http-01 challenges need.
      `CREATE FUNCTION certplane_agent_work() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF TG_OP = 'INSERT'
            OR (OLD.status IS DISTINCT FROM NEW.status AND NEW.status IN ('pending', 'issued'))
            OR (NEW.status IN ('csr_accepted', 'ordering') AND OLD.lease_owner IS NOT NULL AND NEW.lease_owner IS NULL) THEN
           PERFORM pg_notify('certplane_agent_work', NEW.instance_id::text || ' ' || NEW.id::text || ' ' || NEW.status);
         END IF;
         RETURN NULL;
       END $$`,
      `CREATE TRIGGER certificates_agent_work AFTER INSERT OR UPDATE OF status, lease_owner ON certificates
       FOR EACH ROW WHEN (NEW.status IN ('pending', 'csr_accepted', 'ordering', 'issued')) EXECUTE FUNCTION certplane_agent_work()`,
    ],
  },
  {
    version: 14,
    description: 'served-chain checks: what each instance\'s service really serves, as its agent last probed it and the plane judged it',
    statements: [
      // One row per instance whose agent reported a probe: the plane's verdict on what the
      // service served, against the certificate installed then (null: none was). Public
      // facts only: fingerprints, a root's name, findings; never a chain's key.
      `CREATE TABLE instance_served (
        instance_id uuid PRIMARY KEY REFERENCES instances (id) ON DELETE CASCADE,
        certificate_id uuid REFERENCES certificates (id) ON DELETE SET NULL,
        status text NOT NULL CHECK (status IN ('match', 'stale', 'wrong-chain', 'unreachable')),
        checked_at timestamptz NOT NULL,
        fingerprint_sha256 text,
        anchor text,
        problems jsonb NOT NULL
      )`,
      'CREATE INDEX instance_served_status ON instance_served (status)',
    ],
  },
  {
    version: 15,
    description: 're-chaining: a certificate record that re-chains another (the same leaf on another stored chain), rechain jobs, and the mode of a campaign with the path it gave each instance',
    statements: [
      // A rechain is a record of its own (it is delivered, acknowledged and superseded like
      // any certificate); this names the record whose leaf and key it re-uses.
      'ALTER TABLE certificates ADD COLUMN rechained_from_id uuid REFERENCES certificates (id)',
      'ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check',
      "ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check CHECK (kind IN ('renewal', 'reissue', 'rechain'))",
      "ALTER TABLE campaigns ADD COLUMN mode text NOT NULL DEFAULT 'reissue' CHECK (mode IN ('reissue', 'rechain', 'rechain-or-reissue'))",
      // Every instance a campaign matched and the path it took: jobs exist for `reissue` and
      // `rechain`; `skip` (with its reason) is what the campaign reports without touching.
      `CREATE TABLE campaign_instances (
        campaign_id uuid NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
        instance_id uuid NOT NULL REFERENCES instances (id),
        path text NOT NULL CHECK (path IN ('reissue', 'rechain', 'skip')),
        skip_reason text,
        chain_index integer,
        PRIMARY KEY (campaign_id, instance_id)
      )`,
      "CREATE INDEX campaign_instances_skipped ON campaign_instances (campaign_id) WHERE path = 'skip'",
    ],
  },
  {
    version: 16,
    description: 'indexes for what every certificate reads on its way: the newest certificate of a job (its start scanned every certificate) and the newest installed certificate of an instance (PGlite, without statistics, intersected the status index, every installed certificate, with the instance\'s)',
    statements: [
      'CREATE INDEX certificates_job ON certificates (job_id, created_at, creation_order) WHERE job_id IS NOT NULL',
      "CREATE INDEX certificates_installed ON certificates (instance_id, created_at, creation_order) WHERE status = 'installed'",
    ],
  },
  {
    version: 17,
    description: 'no wake-up notification for a certificate whose creator asks its agent itself: on PostgreSQL a notifying commit takes a database-wide lock held through its WAL flush, so every certificate creation of a wave waited for the others',
    statements: [
      // As in 13, except that an INSERT whose transaction set certplane.quiet_create to on
      // (store.certificates.create with notify: false, in the INSERT's own statement) is not
      // announced. The branches test TG_OP first: on an INSERT, OLD is null, so OLD's
      // columns alone would count a new pending row as a status change.
      `CREATE OR REPLACE FUNCTION certplane_agent_work() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF (TG_OP = 'INSERT' AND current_setting('certplane.quiet_create', true) IS DISTINCT FROM 'on')
            OR (TG_OP = 'UPDATE' AND OLD.status IS DISTINCT FROM NEW.status AND NEW.status IN ('pending', 'issued'))
            OR (TG_OP = 'UPDATE' AND NEW.status IN ('csr_accepted', 'ordering') AND OLD.lease_owner IS NOT NULL AND NEW.lease_owner IS NULL) THEN
           PERFORM pg_notify('certplane_agent_work', NEW.instance_id::text || ' ' || NEW.id::text || ' ' || NEW.status);
         END IF;
         RETURN NULL;
       END $$`,
    ],
  },
];

/**
 * Key of the transaction-scoped advisory lock that serialises migrations: the ASCII bytes
 * of "certplan". Two replicas starting at once against one server would otherwise both
 * create the same tables and one would fail.
 */
const MIGRATION_LOCK_KEY = '7162256626830565742';

/**
 * Brings the schema up to date in one transaction and returns the versions applied now
 * (empty when it already was). Safe to run from several processes at once.
 */
export async function migrate(db: Database, migrations: readonly Migration[] = MIGRATIONS): Promise<number[]> {
  let current: Migration | undefined;
  try {
    return await db.transaction(async (tx) => {
      await tx.query(`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK_KEY})`);
      await tx.query('CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())');
      const applied = new Set((await tx.query<{ version: number }>('SELECT version FROM schema_migrations')).map((row) => row.version));
      const pending = migrations.filter((migration) => !applied.has(migration.version));
      for (const migration of pending) {
        current = migration;
        for (const statement of migration.statements) await tx.query(statement);
        await tx.query('INSERT INTO schema_migrations (version) VALUES ($1)', [migration.version]);
      }
      return pending.map((migration) => migration.version);
    });
  } catch (error) {
    if (hasCode(error, ErrorCode.STORE_UNAVAILABLE)) throw error;
    const step = current === undefined ? 'Preparing the migrations' : `Migration ${current.version} (${current.description})`;
    throw new CertplaneError(
      ErrorCode.STORE_MIGRATION_FAILED,
      `${step} failed on ${db.location}, so no pending migration was applied: ${(error as Error).message} Fix what the database reported, then start certplane again.`,
      { location: db.location, version: current?.version },
      { cause: error },
    );
  }
}
