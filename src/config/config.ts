/**
 * Configuration comes from the environment only, validated once at start-up. Each
 * problem names the variable and says what it accepts, because a typo in a preferred
 * chain is exactly the kind of mistake that otherwise surfaces months later as a
 * silently different chain.
 */
import { z } from 'zod';
import { CertplaneError } from '../errors.js';
import { normalizeSpkiPin } from '../chain/index.js';

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

const secretsSpec = z.string().regex(/^(file:.+|aws-sm:[A-Za-z0-9/_+=.@-]+)$/, 'must be file:PATH or aws-sm:SECRET_ID_PREFIX');

const schema = z
  .object({
    CERTPLANE_ACME_DIRECTORY: z.url({ protocol: /^https?$/ }).default(LETS_ENCRYPT_PRODUCTION),
    CERTPLANE_ACME_CA_CERTS: z.string().min(1).optional(),
    CERTPLANE_ACME_EMAIL: z.email().optional(),
    CERTPLANE_PREFERRED_CHAINS: preferredChains.default(['ISRG Root X1']),
    CERTPLANE_CHAIN_FALLBACK: z.enum(['none', 'default-chain']).default('none'),
    CERTPLANE_TRUST_STORE: z.string().min(1).default('system'),
    CERTPLANE_DISTRUSTED_SPKI: spkiPins.default([]),
    CERTPLANE_SECRETS: secretsSpec.default('file:./data/secrets'),
    CERTPLANE_DNS_PROVIDER: z.enum(['route53', 'challtestsrv', 'none']).default('none'),
    CERTPLANE_CHALLTESTSRV_URL: z.url({ protocol: /^https?$/ }).optional(),
    CERTPLANE_ROUTE53_HOSTED_ZONE_ID: z.string().min(1).optional(),
    CERTPLANE_LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  })
  .superRefine((env, ctx) => {
    if (env.CERTPLANE_DNS_PROVIDER === 'challtestsrv' && !env.CERTPLANE_CHALLTESTSRV_URL) {
      ctx.addIssue({ code: 'custom', path: ['CERTPLANE_CHALLTESTSRV_URL'], message: 'is required when CERTPLANE_DNS_PROVIDER=challtestsrv' });
    }
  });

/** The validated configuration; field names say what they are, the README maps them to variables. */
export interface Config {
  readonly acme: {
    readonly directoryUrl: string;
    /** PEM file of extra CAs trusted for the ACME server's own HTTPS (Pebble's listener). */
    readonly serverCaCertsPath: string | undefined;
    readonly contactEmail: string | undefined;
  };
  readonly chain: {
    readonly preferences: readonly string[];
    readonly fallback: 'none' | 'default-chain';
    /** A PEM file of trust anchors, or "system". */
    readonly trustStore: string;
    /** Extra SPKI SHA-256 pins (hex) distrusted on top of the built-in list. */
    readonly extraDistrustedSpki: readonly string[];
  };
  readonly secrets: string;
  readonly dns: {
    readonly provider: 'route53' | 'challtestsrv' | 'none';
    readonly challtestsrvUrl: string | undefined;
    readonly route53HostedZoneId: string | undefined;
  };
  readonly logLevel: string;
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
    acme: { directoryUrl: e.CERTPLANE_ACME_DIRECTORY, serverCaCertsPath: e.CERTPLANE_ACME_CA_CERTS, contactEmail: e.CERTPLANE_ACME_EMAIL },
    chain: { preferences: e.CERTPLANE_PREFERRED_CHAINS, fallback: e.CERTPLANE_CHAIN_FALLBACK, trustStore: e.CERTPLANE_TRUST_STORE, extraDistrustedSpki: e.CERTPLANE_DISTRUSTED_SPKI },
    secrets: e.CERTPLANE_SECRETS,
    dns: { provider: e.CERTPLANE_DNS_PROVIDER, challtestsrvUrl: e.CERTPLANE_CHALLTESTSRV_URL, route53HostedZoneId: e.CERTPLANE_ROUTE53_HOSTED_ZONE_ID },
    logLevel: e.CERTPLANE_LOG_LEVEL,
  };
}
