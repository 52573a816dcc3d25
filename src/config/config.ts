/**
 * Configuration comes from the environment only, validated once at start-up. Each
 * problem names the variable and says what it accepts, because a typo in a preferred
 * chain is exactly the kind of mistake that otherwise surfaces months later as a
 * silently different chain.
 */
import { z } from 'zod';
import { CertplaneError } from '../errors.js';
import { DEFAULT_MAX_NAMES_PER_CERTIFICATE, normalizeSpkiPin } from '../chain/index.js';
import { DEFAULT_ISSUANCE_CONCURRENCY } from '../agents/issuance.js';

export const LETS_ENCRYPT_PRODUCTION = 'https://acme-v02.api.letsencrypt.org/directory';

export const ConfigErrorCode = { INVALID: 'CONFIG_INVALID' } as const;

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

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

const secretsSpec = z.string().regex(/^(file:.+|aws-sm:[A-Za-z0-9/_+=.@-]+)$/, 'must be file:PATH or aws-sm:SECRET_ID_PREFIX');

const schema = z
  .object({
    CERTPLANE_ACME_DIRECTORY: z.url({ protocol: /^https?$/ }).default(LETS_ENCRYPT_PRODUCTION),
    CERTPLANE_ACME_CA_CERTS: z.string().min(1).optional(),
    CERTPLANE_ACME_EMAIL: z.email().optional(),
    CERTPLANE_ACME_POLL_INTERVAL_MS: z.coerce.number().int().min(50).max(60_000).default(200),
    CERTPLANE_MAX_NAMES_PER_CERTIFICATE: z.coerce.number().int().min(1).max(DEFAULT_MAX_NAMES_PER_CERTIFICATE).default(DEFAULT_MAX_NAMES_PER_CERTIFICATE),
    CERTPLANE_PREFERRED_CHAINS: preferredChains.default(['ISRG Root X1']),
    CERTPLANE_CHAIN_FALLBACK: z.enum(['none', 'default-chain']).default('none'),
    CERTPLANE_TRUST_STORE: z.string().min(1).default('system'),
    CERTPLANE_DISTRUSTED_SPKI: spkiPins.default([]),
    CERTPLANE_TRUST_PROFILES: trustProfiles.default({}),
    CERTPLANE_TRUST_FILE: z.string().min(1).optional(),
    CERTPLANE_SECRETS: secretsSpec.default('file:./data/secrets'),
    CERTPLANE_DNS_PROVIDER: z.enum(['route53', 'challtestsrv', 'none']).default('none'),
    CERTPLANE_CHALLTESTSRV_URL: z.url({ protocol: /^https?$/ }).optional(),
    CERTPLANE_ROUTE53_HOSTED_ZONE_ID: z.string().min(1).optional(),
    CERTPLANE_LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    CERTPLANE_DATABASE_URL: z.string().regex(/^(postgres(ql)?:\/\/.+|pglite:.+|memory:)$/, 'must be postgres://..., pglite:PATH or memory:').default('pglite:./data/db'),
    CERTPLANE_LISTEN: listenAddress.prefault('127.0.0.1:8443'),
    CERTPLANE_INSECURE_HTTP: z.enum(['0', '1']).default('0'),
    CERTPLANE_TLS_CERT: z.string().min(1).optional(),
    CERTPLANE_TLS_KEY: z.string().min(1).optional(),
    CERTPLANE_ENROLLMENT_TTL_SECONDS: z.coerce.number().int().min(60).max(7 * 86_400).default(3600),
    CERTPLANE_CHALLENGE: z.enum(['http-01', 'dns-01']).default('http-01'),
    CERTPLANE_RATE_LIMITS: z.string().min(2).optional(),
    CERTPLANE_SCHEDULER_INTERVAL_MS: z.coerce.number().int().min(50).max(600_000).default(1000),
    CERTPLANE_LEASE_MS: z.coerce.number().int().min(3000).max(3_600_000).default(60_000),
    CERTPLANE_SHUTDOWN_GRACE_MS: z.coerce.number().int().min(0).max(600_000).default(10_000),
    CERTPLANE_ISSUANCE_CONCURRENCY: z.coerce.number().int().min(1).max(10_000).default(DEFAULT_ISSUANCE_CONCURRENCY),
    CERTPLANE_CLOCK_OFFSET_FILE: z.string().min(1).optional(),
    CERTPLANE_PUBLIC_URL: z.url({ protocol: /^https?$/ }).optional(),
    CERTPLANE_ADMIN_SOCKET: z.string().min(1).default('./data/admin.sock'),
  })
  .superRefine((env, ctx) => {
    if (env.CERTPLANE_INSECURE_HTTP === '1' && !isLoopback(env.CERTPLANE_LISTEN.host)) {
      ctx.addIssue({ code: 'custom', path: ['CERTPLANE_LISTEN'], message: 'must be a loopback address when CERTPLANE_INSECURE_HTTP=1 (plain HTTP without client authentication is for development on this machine only)' });
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
    readonly listen: { readonly host: string; readonly port: number };
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
  const parsed = schema.safeParse(present);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => `${String(issue.path[0] ?? 'environment')}: ${issue.message}`);
    throw new CertplaneError(ConfigErrorCode.INVALID, `invalid configuration:\n  ${problems.join('\n  ')}`, { problems });
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
    },
    secrets: e.CERTPLANE_SECRETS,
    dns: { provider: e.CERTPLANE_DNS_PROVIDER, challtestsrvUrl: e.CERTPLANE_CHALLTESTSRV_URL, route53HostedZoneId: e.CERTPLANE_ROUTE53_HOSTED_ZONE_ID },
    logLevel: e.CERTPLANE_LOG_LEVEL,
    server: {
      databaseUrl: e.CERTPLANE_DATABASE_URL,
      listen: e.CERTPLANE_LISTEN,
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
      clockOffsetFile: e.CERTPLANE_CLOCK_OFFSET_FILE,
      publicUrl: e.CERTPLANE_PUBLIC_URL,
      adminSocket: e.CERTPLANE_ADMIN_SOCKET,
    },
  };
}
