/**
 * Configuration comes from the environment only, validated once at start-up. Each
 * problem names the variable and says what it accepts, because a typo in a preferred
 * chain is exactly the kind of mistake that otherwise surfaces months later as a
 * silently different chain.
 */
import { z } from 'zod';
import { CertplaneError } from '../errors.js';
import { describeIssues } from '../validation.js';
import { DEFAULT_MAX_NAMES_PER_CERTIFICATE, normalizeSpkiPin } from '../chain/index.js';
import { ErrorCode } from '../error-catalogue.js';
import { DATABASE_POOL_SIZE } from '../store/types.js';

/** Orders one process runs at once unless CERTPLANE_ISSUANCE_CONCURRENCY says otherwise; compose.ts passes the setting to the coordinator. */
export const DEFAULT_ISSUANCE_CONCURRENCY = 50;
export const LETS_ENCRYPT_PRODUCTION = 'https://acme-v02.api.letsencrypt.org/directory';

/** Root CNs in preference order, from a JSON array or a comma-separated list. */
const preferredChains = z
  .string()
  .transform((raw, ctx) => {
    const trimmed = raw.trim();
    let names: unknown;
    if (trimmed.startsWith('[')) {
      try {
        names = JSON.parse(trimmed);
      } catch {
        ctx.addIssue({ code: 'custom', message: 'starts with "[" but is not valid JSON' });
        return z.NEVER;
      }
    } else {
      names = trimmed.split(',').map((s) => s.trim());
    }
    const parsed = z.array(z.string().trim().min(1, 'an empty root name')).min(1, 'needs at least one root name').safeParse(names);
    if (!parsed.success) {
      ctx.addIssue({ code: 'custom', message: `must be a JSON array of root CNs or a comma-separated list (${parsed.error.issues[0]?.message})` });
      return z.NEVER;
    }
    return parsed.data;
  });

const spkiPins = z.string().transform((raw, ctx) => {
  const pins = raw.split(',').map((s) => s.trim()).filter(Boolean);
  const normalized = pins.map((pin) => normalizeSpkiPin(pin));
  const bad = pins.filter((_, i) => normalized[i] === undefined);
  if (bad.length > 0) {
    ctx.addIssue({ code: 'custom', message: `not a SHA-256 SPKI pin (64 hex digits or base64): ${bad.join(', ')}` });
    return z.NEVER;
  }
  return normalized as string[];
});

/** A trust profile's name: what instances list in `trustProfiles` and the API shows. */
export const PROFILE_NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;

/** Profile name to PEM path, from a JSON object; `default` is CERTPLANE_TRUST_STORE's. */
const trustProfiles = z.string().transform((raw, ctx) => {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    ctx.addIssue({ code: 'custom', message: 'must be a JSON object of profile name to PEM file path, e.g. {"legacy-windows":"/etc/certplane/legacy-windows.pem"}' });
    return z.NEVER;
  }
  const parsed = z.record(z.string().regex(PROFILE_NAME, 'profile names are lowercase letters, digits, ".", "_" and "-"'), z.string().min(1, 'an empty path')).safeParse(value);
  if (!parsed.success) {
    ctx.addIssue({ code: 'custom', message: `must be a JSON object of profile name to PEM file path (${parsed.error.issues[0]?.message})` });
    return z.NEVER;
  }
  if (Object.hasOwn(parsed.data, 'default')) {
    ctx.addIssue({ code: 'custom', message: 'names "default", which is CERTPLANE_TRUST_STORE: set that instead' });
    return z.NEVER;
  }
  return parsed.data;
});

/** host:port, with [v6] in brackets. */
const listenAddress = z.string().transform((raw, ctx) => {
  const match = /^(\[[0-9a-fA-F:]+\]|[^:\s]+):(\d{1,5})$/.exec(raw.trim());
  const port = Number(match?.[2]);
  if (!match || port < 0 || port > 65_535) {
    ctx.addIssue({ code: 'custom', message: 'must be HOST:PORT, e.g. 127.0.0.1:8443 or [::1]:8443' });
    return z.NEVER;
  }
  return { host: (match[1] as string).replace(/^\[|\]$/g, ''), port };
});

/** An address that binds every interface. */
function isWildcard(host: string): boolean {
  return host === '0.0.0.0' || host === '::';
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

const secretsSpec = z.string().regex(/^(file:.+|aws-sm:[A-Za-z0-9/_+=.@-]+)$/, 'must be file:PATH or aws-sm:SECRET_ID_PREFIX');

/**
 * Every variable, its validation and what it means (`describe`, and `shownDefault` where the
 * default is not a value): loadConfig validates with it and
 * docs/reference/configuration.md is generated from it (src/docs/configuration.ts), so a
 * variable's description lives here and nowhere else.
 */
export const CONFIGURATION_SCHEMA = z
  .object({
    CERTPLANE_ACME_DIRECTORY: z.url({ protocol: /^https?$/ }).default(LETS_ENCRYPT_PRODUCTION).describe('the CA\'s ACME directory'),
    CERTPLANE_ACME_CA_CERTS: z.string().min(1).optional().describe('PEM file of extra CAs to trust for the ACME server\'s own HTTPS (Pebble\'s listener)'),
    CERTPLANE_ACME_EMAIL: z.email().optional().describe('account contact'),
    CERTPLANE_ACME_POLL_INTERVAL_MS: z.coerce.number().int().min(50).max(60_000).default(200).describe('how often a pending challenge or order is looked at when the CA sends no Retry-After (50 to 60000); the CA\'s Retry-After always wins, and past 10 s of waiting the interval grows to a quarter of the time waited (at most 10 s); an answer still pending to the request that started the work (a challenge\'s, a finalization\'s) is looked at again at once, unless it carried Retry-After'),
    CERTPLANE_MAX_NAMES_PER_CERTIFICATE: z.coerce.number().int().min(1).max(DEFAULT_MAX_NAMES_PER_CERTIFICATE).default(DEFAULT_MAX_NAMES_PER_CERTIFICATE).describe('names one certificate may carry, 1 to 100 (Let\'s Encrypt allows 100, 25 under its newer profiles): caps an instance\'s hostnames and every CSR, duplicates included'),
    CERTPLANE_PREFERRED_CHAINS: preferredChains.default(['ISRG Root X1']).describe('root CNs in order: a JSON array (`["ISRG Root X2","ISRG Root X1"]`) or a comma-separated list'),
    CERTPLANE_CHAIN_FALLBACK: z.enum(['none', 'default-chain']).default('none').describe('`default-chain` accepts the CA\'s default chain when no preference fits (logged at warn)'),
    CERTPLANE_TRUST_STORE: z.string().min(1).default('system').describe('PEM file of trust anchors; `system` is `/etc/ssl/certs/ca-certificates.crt`, or Node\'s bundled roots if that file is missing'),
    CERTPLANE_DISTRUSTED_SPKI: spkiPins.default([]).describe('extra distrusted keys, comma-separated SPKI SHA-256 pins (hex or `sha256/BASE64`), added to the built-in DST Root CA X3'),
    CERTPLANE_TRUST_PROFILES: trustProfiles.default({}).meta({ description: 'further trust profiles (client trust stores): a JSON object of profile name to PEM file, e.g. `{"legacy-windows":"/etc/certplane/legacy-windows.pem"}`; names are lowercase letters, digits, `.`, `_`, `-`; `default` is `CERTPLANE_TRUST_STORE` ([trust profiles](../concepts/chain-selection.md#trust-profiles))', shownDefault: 'none' }),
    CERTPLANE_TRUST_FILE: z.string().min(1).optional().describe('a JSON file `{"profiles": {NAME: PEM_PATH}, "preferredChains": [CN...], "distrustedSpki": [PIN...]}`, each key optional; a key present overrides `CERTPLANE_TRUST_PROFILES` (merged by name, may name `default`), `CERTPLANE_PREFERRED_CHAINS` or `CERTPLANE_DISTRUSTED_SPKI`; re-read on every trust reload'),
    CERTPLANE_ON_TRUST_CHANGE: z.enum(['report', 'rechain']).default('report').describe('what a trust reload that finds installed chains broken does: `report` (the API, `certplane status` and the log show them) or `rechain` (it also starts a rechain campaign for them by itself, audited as `service:...`: each gets the stored chain the new trust selects, with no order; those without one are reported in the campaign)'),
    CERTPLANE_SECRETS: secretsSpec.default('file:./data/secrets').describe('`file:DIR` (one 0600 file per secret in a 0700 directory) or `aws-sm:PREFIX` (AWS Secrets Manager, secret ids `PREFIX/NAME`)'),
    CERTPLANE_DNS_PROVIDER: z.enum(['route53', 'challtestsrv', 'none']).default('none').describe('dns-01 provider: `route53`, `challtestsrv` or `none`'),
    CERTPLANE_CHALLTESTSRV_URL: z.url({ protocol: /^https?$/ }).optional().describe('pebble-challtestsrv management URL (required with `challtestsrv`)'),
    CERTPLANE_ROUTE53_HOSTED_ZONE_ID: z.string().min(1).optional().meta({ description: 'the hosted zone for dns-01 records; otherwise the longest public zone containing the name', shownDefault: "looked up" }),
    CERTPLANE_LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info').describe('pino level; JSON lines (stdout for `serve` and `agent`, stderr for one-shot commands), with key, token, secret and authorization fields redacted'),
    CERTPLANE_DATABASE_URL: z.string().regex(/^(postgres(ql)?:\/\/.+|pglite:.+|memory:)$/, 'must be postgres://..., pglite:PATH or memory:').default('pglite:./data/db').describe('`postgres://USER:PASS@HOST/DB` (a PostgreSQL server: production, several replicas), `pglite:PATH` (embedded PostgreSQL in a folder, one process at a time) or `memory:` (throwaway)'),
    CERTPLANE_DATABASE_POOL_SIZE: z.coerce.number().int().min(DATABASE_POOL_SIZE.min).max(DATABASE_POOL_SIZE.max).default(DATABASE_POOL_SIZE.default).describe(`connections each process opens to a PostgreSQL server at start and keeps (${DATABASE_POOL_SIZE.min} to ${DATABASE_POOL_SIZE.max}; PGlite has one): every replica holds this many and one more for its notifications, so keep replicas times this plus one below the server's \`max_connections\`; see [several processes](../operations.md#several-processes)`),
    CERTPLANE_LISTEN: listenAddress.prefault('127.0.0.1:8443').describe('address `serve` binds to (`HOST:PORT`, `[::1]:PORT`)'),
    CERTPLANE_METRICS_LISTEN: listenAddress.optional().meta({ description: 'a second, plain-HTTP listener (`HOST:PORT`) that serves only `GET /metrics`, without client certificates, for a Prometheus scraper on a private network; the main listener keeps requiring client certificates (and keeps its own authenticated `/metrics`). Bind it to an address only the scraper\'s network reaches ([monitoring](../operations.md#monitoring))', shownDefault: 'unset: `/metrics` on the main listener only' }),
    CERTPLANE_INSECURE_HTTP: z.enum(['0', '1']).default('0').describe('`1`: plain HTTP, no client authentication, loopback listen address only, warning at start (development)'),
    CERTPLANE_TLS_CERT: z.string().min(1).optional().describe('PEM file of the plane\'s HTTPS certificate; required with `CERTPLANE_TLS_KEY` unless `CERTPLANE_INSECURE_HTTP=1`'),
    CERTPLANE_TLS_KEY: z.string().min(1).optional().describe('PEM file of the plane\'s HTTPS key; required with `CERTPLANE_TLS_CERT` unless `CERTPLANE_INSECURE_HTTP=1`; a key readable by group or others is refused (`SECRETS_FILE_PERMISSIONS`)'),
    CERTPLANE_ENROLLMENT_TTL_SECONDS: z.coerce.number().int().min(60).max(7 * 86_400).default(3600).describe('lifetime of an enrollment token (60 s to 7 days)'),
    CERTPLANE_CHALLENGE: z.enum(['http-01', 'dns-01']).default('http-01').describe('`http-01`: the agent answers on its `--http01-port`; `dns-01`: the DNS provider answers (needs `CERTPLANE_DNS_PROVIDER`)'),
    CERTPLANE_RATE_LIMITS: z.string().min(2).optional().meta({ description: 'JSON overriding any of `{"newOrders": {"capacity": 300, "refillPerSecond": 0.0278}, "certificatesPerDomain": {"capacity": 50, ...}, "failedValidationsPerHostname": {"capacity": 5, ...}, "retryReserve": 0.5}`', shownDefault: "Let's Encrypt's published limits" }),
    CERTPLANE_SCHEDULER_INTERVAL_MS: z.coerce.number().int().min(50).max(600_000).default(1000).describe('how often each process claims due jobs, refreshes due ARI windows and runs the fallback pass for its agents (work changed elsewhere whose notification was lost, lapsed leases, prompts unanswered for 30 s)'),
    CERTPLANE_LEASE_MS: z.coerce.number().int().min(3000).max(3_600_000).default(60_000).describe('how long a process\'s lease on a certificate lasts without renewal (renewed every third of it, 3000 to 3600000): how soon another process takes over, and resumes, the order of one that died; see [leases](../concepts/lifecycle.md#leases). Job claims keep their own 60 s'),
    CERTPLANE_SHUTDOWN_GRACE_MS: z.coerce.number().int().min(0).max(600_000).default(10_000).describe('on SIGTERM/SIGINT, how long in-flight orders may run on (0 to 600000) before they are stopped at their next step and their leases released, so another process resumes them at once; keep it below the supervisor\'s stop timeout (the systemd unit\'s `TimeoutStopSec=30s`)'),
    CERTPLANE_ISSUANCE_CONCURRENCY: z.coerce.number().int().min(1).max(10_000).default(DEFAULT_ISSUANCE_CONCURRENCY).describe('orders one process runs at once (1 to 10000); further certificates wait in this process for a slot, holding no lease; CSRs are asked for and jobs claimed for at most twice this many certificates on their way to an order'),
    CERTPLANE_ORDER_BEFORE_CSR: z.enum(['0', '1']).default('0').describe('`1`: the process holding an agent\'s channel places the ACME order (and answers its challenges) while the agent makes its CSR, and finalizes once the CSR passed policy, hiding the agent\'s key generation and round trip; a CSR then refused leaves that order unfinalized at the CA (once: the refusal is permanent). Off by default: on a plane whose CPU is the limit it measured slower (see [ordering before the CSR](../concepts/lifecycle.md#ordering-before-the-csr)); worth trying where agents are slow to make keys (RSA on small instances) or far away. `0`: no order before the CSR passed policy'),
    CERTPLANE_CLOCK_OFFSET_FILE: z.string().min(1).optional().describe('rehearsal and test aid: a file holding milliseconds to add to the clock, re-read when it changes, so every process moves time together'),
    CERTPLANE_PUBLIC_URL: z.url({ protocol: /^https?$/ }).optional().describe('the URL agents and clients should use, returned on instance creation and enrollment (agents keep using it)'),
    CERTPLANE_ADMIN_SOCKET: z.string().min(1).default('./data/admin.sock').describe('the admin console\'s Unix socket (mode 0600), in a directory owned by the service\'s user that nobody else may write (else `ADMIN_SOCKET_DIRECTORY_INSECURE` at start)'),
  })
  .superRefine((env, ctx) => {
    if (env.CERTPLANE_INSECURE_HTTP === '1' && !isLoopback(env.CERTPLANE_LISTEN.host)) {
      ctx.addIssue({ code: 'custom', path: ['CERTPLANE_LISTEN'], message: 'must be a loopback address when CERTPLANE_INSECURE_HTTP=1 (plain HTTP without client authentication is for development on this machine only)' });
    }
    const metrics = env.CERTPLANE_METRICS_LISTEN;
    if (metrics && metrics.port === env.CERTPLANE_LISTEN.port && metrics.port !== 0 && (metrics.host === env.CERTPLANE_LISTEN.host || isWildcard(metrics.host) || isWildcard(env.CERTPLANE_LISTEN.host))) {
      ctx.addIssue({ code: 'custom', path: ['CERTPLANE_METRICS_LISTEN'], message: `must be another address than CERTPLANE_LISTEN (both are port ${metrics.port}): the metrics listener is a second listener` });
    }
    if ((env.CERTPLANE_TLS_CERT === undefined) !== (env.CERTPLANE_TLS_KEY === undefined)) {
      ctx.addIssue({ code: 'custom', path: [env.CERTPLANE_TLS_CERT ? 'CERTPLANE_TLS_KEY' : 'CERTPLANE_TLS_CERT'], message: 'CERTPLANE_TLS_CERT and CERTPLANE_TLS_KEY go together' });
    }
    if (env.CERTPLANE_CHALLENGE === 'dns-01' && env.CERTPLANE_DNS_PROVIDER === 'none') {
      ctx.addIssue({ code: 'custom', path: ['CERTPLANE_CHALLENGE'], message: 'dns-01 needs a DNS provider: set CERTPLANE_DNS_PROVIDER' });
    }
    if (env.CERTPLANE_DNS_PROVIDER === 'challtestsrv' && !env.CERTPLANE_CHALLTESTSRV_URL) {
      ctx.addIssue({ code: 'custom', path: ['CERTPLANE_CHALLTESTSRV_URL'], message: 'is required when CERTPLANE_DNS_PROVIDER=challtestsrv' });
    }
  });

/** The validated configuration; field names say what they are, docs/reference/configuration.md maps them to variables. */
export interface Config {
  readonly acme: {
    readonly directoryUrl: string;
    /** PEM file of extra CAs trusted for the ACME server's own HTTPS (Pebble's listener). */
    readonly serverCaCertsPath: string | undefined;
    readonly contactEmail: string | undefined;
    /**
     * Names one certificate may carry (the CA's limit: 100 at Let's Encrypt, 25 under its
     * newer profiles): caps the names an instance registers and every CSR, duplicates included.
     */
    readonly maxNamesPerCertificate: number;
    /** How often a pending challenge or order is looked at when the CA sends no Retry-After, and the floor when it does. */
    readonly pollIntervalMs: number;
  };
  readonly chain: {
    readonly preferences: readonly string[];
    readonly fallback: 'none' | 'default-chain';
    /** A PEM file of trust anchors, or "system". */
    readonly trustStore: string;
    /** Extra SPKI SHA-256 pins (hex) distrusted on top of the built-in list. */
    readonly extraDistrustedSpki: readonly string[];
    /** Trust profiles besides `default` (trustStore): name to PEM path. */
    readonly profiles: Readonly<Record<string, string>>;
    /** A JSON file whose profiles, preferences and distrust list override the three above, re-read on every trust reload (config/trust.ts). */
    readonly trustFile: string | undefined;
    /** Whether a trust reload that breaks installed chains starts a rechain campaign for them by itself. */
    readonly onTrustChange: 'report' | 'rechain';
  };
  readonly secrets: string;
  readonly dns: {
    readonly provider: 'route53' | 'challtestsrv' | 'none';
    readonly challtestsrvUrl: string | undefined;
    readonly route53HostedZoneId: string | undefined;
  };
  readonly logLevel: string;
  readonly server: {
    readonly databaseUrl: string;
    /** Connections kept to a PostgreSQL server. */
    readonly databasePoolSize: number;
    readonly listen: { readonly host: string; readonly port: number };
    /** A second, plain-HTTP listener serving only /metrics, for a scraper on a private network; undefined: none. */
    readonly metricsListen: { readonly host: string; readonly port: number } | undefined;
    /** Plain HTTP without client authentication, loopback only: development until mutual TLS lands. */
    readonly insecureHttp: boolean;
    readonly tlsCertPath: string | undefined;
    readonly tlsKeyPath: string | undefined;
    readonly enrollmentTtlMs: number;
    /** Who answers challenges: the agent (http-01) or the DNS provider (dns-01). */
    readonly challenge: 'http-01' | 'dns-01';
    /** JSON overrides of the rate-limit buckets (jobs/ratelimit.ts), validated there. */
    readonly rateLimitsJson: string | undefined;
    readonly schedulerIntervalMs: number;
    /**
     * How long a lease on a certificate lasts without renewal: how soon another process
     * takes over (and resumes) the order of one that died (renewed every third of it).
     */
    readonly leaseMs: number;
    /** On shutdown, how long in-flight orders may run on before they are stopped and their leases released. */
    readonly shutdownGraceMs: number;
    /** Orders this process runs at once; further certificates wait for a slot without holding a lease. */
    readonly issuanceConcurrency: number;
    /** Whether an order is placed while the agent makes its CSR (finalized once the CSR passed policy). */
    readonly orderBeforeCsr: boolean;
    /** Test and rehearsal aid: a file holding a clock offset in ms (config/clock.ts). */
    readonly clockOffsetFile: string | undefined;
    /** The URL agents and clients are told to use, when it differs from the bind address (NAT, proxies). */
    readonly publicUrl: string | undefined;
    /** The admin console's Unix socket (mode 0600): works without TLS or any certificate. */
    readonly adminSocket: string;
  };
}

/** Reads and validates `env`; throws CONFIG_INVALID naming every bad variable. */
export function loadConfig(env: Readonly<Record<string, string | undefined>>): Config {
  const present = Object.fromEntries(Object.entries(env).filter(([key, value]) => key.startsWith('CERTPLANE_') && value !== ''));
  const parsed = CONFIGURATION_SCHEMA.safeParse(present);
  if (!parsed.success) {
    const problems = describeIssues(parsed.error.issues, { whole: 'environment' });
    throw new CertplaneError(ErrorCode.CONFIG_INVALID, `invalid configuration:\n  ${problems.join('\n  ')}`, { problems });
  }
  const e = parsed.data;
  return {
    acme: {
      directoryUrl: e.CERTPLANE_ACME_DIRECTORY,
      serverCaCertsPath: e.CERTPLANE_ACME_CA_CERTS,
      contactEmail: e.CERTPLANE_ACME_EMAIL,
      maxNamesPerCertificate: e.CERTPLANE_MAX_NAMES_PER_CERTIFICATE,
      pollIntervalMs: e.CERTPLANE_ACME_POLL_INTERVAL_MS,
    },
    chain: {
      preferences: e.CERTPLANE_PREFERRED_CHAINS,
      fallback: e.CERTPLANE_CHAIN_FALLBACK,
      trustStore: e.CERTPLANE_TRUST_STORE,
      extraDistrustedSpki: e.CERTPLANE_DISTRUSTED_SPKI,
      profiles: e.CERTPLANE_TRUST_PROFILES,
      trustFile: e.CERTPLANE_TRUST_FILE,
      onTrustChange: e.CERTPLANE_ON_TRUST_CHANGE,
    },
    secrets: e.CERTPLANE_SECRETS,
    dns: { provider: e.CERTPLANE_DNS_PROVIDER, challtestsrvUrl: e.CERTPLANE_CHALLTESTSRV_URL, route53HostedZoneId: e.CERTPLANE_ROUTE53_HOSTED_ZONE_ID },
    logLevel: e.CERTPLANE_LOG_LEVEL,
    server: {
      databaseUrl: e.CERTPLANE_DATABASE_URL,
      databasePoolSize: e.CERTPLANE_DATABASE_POOL_SIZE,
      listen: e.CERTPLANE_LISTEN,
      metricsListen: e.CERTPLANE_METRICS_LISTEN,
      insecureHttp: e.CERTPLANE_INSECURE_HTTP === '1',
      tlsCertPath: e.CERTPLANE_TLS_CERT,
      tlsKeyPath: e.CERTPLANE_TLS_KEY,
      enrollmentTtlMs: e.CERTPLANE_ENROLLMENT_TTL_SECONDS * 1000,
      challenge: e.CERTPLANE_CHALLENGE,
      rateLimitsJson: e.CERTPLANE_RATE_LIMITS,
      schedulerIntervalMs: e.CERTPLANE_SCHEDULER_INTERVAL_MS,
      leaseMs: e.CERTPLANE_LEASE_MS,
      shutdownGraceMs: e.CERTPLANE_SHUTDOWN_GRACE_MS,
      issuanceConcurrency: e.CERTPLANE_ISSUANCE_CONCURRENCY,
      orderBeforeCsr: e.CERTPLANE_ORDER_BEFORE_CSR === '1',
      clockOffsetFile: e.CERTPLANE_CLOCK_OFFSET_FILE,
      publicUrl: e.CERTPLANE_PUBLIC_URL,
      adminSocket: e.CERTPLANE_ADMIN_SOCKET,
    },
  };
}
