/**
 * The plane's trust settings: the trust profiles (client trust stores) a certificate's chain
 * must verify in, the preferred chains and the distrusted keys, from the environment or a
 * trust file, with a fingerprint for the verdicts stored beside each chain. Reading a trust
 * store itself (a PEM file, or "system") is trust-store.ts's, which the program on the
 * instance shares.
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { CertplaneError } from '../errors.js';
import { normalizeSpkiPin, type FallbackPolicy, type TrustProfile } from '../chain/index.js';
import { ErrorCode } from '../error-catalogue.js';
import { PROFILE_NAME, type Config } from './config.js';
import { distrustedKeys, loadTrustStore, readText } from './trust-store.js';

export { SYSTEM_TRUST_STORE_PATH, distrustedKeys, loadTrustStore, readText, type TrustStore } from './trust-store.js';

/** The name of the profile CERTPLANE_TRUST_STORE configures, and what an instance uses unless told otherwise. */
export const DEFAULT_PROFILE = 'default';

/** What CERTPLANE_TRUST_FILE may hold; each key present overrides its environment variable. */
const TrustFile = z.strictObject({
  profiles: z.record(z.string().regex(PROFILE_NAME, 'profile names are lowercase letters, digits, ".", "_" and "-"'), z.string().min(1)).optional(),
  preferredChains: z.array(z.string().trim().min(1)).min(1).optional(),
  distrustedSpki: z.array(z.string()).optional(),
});

/**
 * Everything chain selection and trust evaluation depend on, as loaded at one moment:
 * the profiles' roots, the preferences and the distrust list. Replaced whole on a reload,
 * so a reader never sees half of one and half of another.
 */
export interface TrustSettings {
  /** `default` first, then the others by name. */
  readonly profiles: readonly TrustProfile[];
  /** Where each profile's roots came from. */
  readonly sources: Readonly<Record<string, string>>;
  readonly preferences: readonly string[];
  readonly fallback: FallbackPolicy;
  readonly distrustedSpkiSha256: ReadonlySet<string>;
  /** SHA-256 over the roots of every profile, the preferences and the distrust list: which settings an evaluation was made under. */
  readonly fingerprint: string;
  /** Preferences no profile holds (each a warning; all of them an error). */
  readonly unheldPreferences: readonly string[];
}

/**
 * Reads the trust settings: the environment's, overridden key by key by CERTPLANE_TRUST_FILE,
 * and every profile's PEM file. Environment variables cannot change under a running
 * process, so what an operator changes without a restart lives in files: the profiles' PEM
 * files and the trust file. Refuses preferences none of which any profile holds.
 */
export async function loadTrustSettings(chain: Config['chain'], options: { requireHeldPreference?: boolean } = {}): Promise<TrustSettings> {
  const file = chain.trustFile ? await readTrustFile(chain.trustFile) : {};
  const specs: Record<string, string> = { [DEFAULT_PROFILE]: chain.trustStore, ...chain.profiles, ...(file.profiles ?? {}) };
  const names = [DEFAULT_PROFILE, ...Object.keys(specs).filter((name) => name !== DEFAULT_PROFILE).sort()];
  const profiles: TrustProfile[] = [];
  const sources: Record<string, string> = {};
  for (const name of names) {
    const store = await loadTrustStore(specs[name] as string);
    profiles.push({ name, anchors: store.anchors });
    sources[name] = store.source;
  }
  const preferences = file.preferredChains ?? chain.preferences;
  const distrusted = distrustedKeys(file.distrustedSpki ? pinsOf(file.distrustedSpki, chain.trustFile as string) : chain.extraDistrustedSpki);
  const unheldPreferences = preferences.filter((preference) => !profiles.some((p) => p.anchors.some((a) => a.subjectCN === preference)));
  if (unheldPreferences.length === preferences.length && options.requireHeldPreference !== false) {
    throw new CertplaneError(
      ErrorCode.TRUST_PREFERENCES_UNTRUSTED,
      `no trust profile holds any preferred root (${preferences.map((p) => `"${p}"`).join(', ')}): every issuance would be refused. Profiles: ${names.map((n) => `${n} (${sources[n]})`).join(', ')}. Fix CERTPLANE_PREFERRED_CHAINS${chain.trustFile ? ` or preferredChains in ${chain.trustFile}` : ''}, or add the root to a profile.`,
      { preferences, profiles: names },
    );
  }
  return trustSettings({ profiles, sources, preferences, fallback: chain.fallback, distrustedSpkiSha256: distrusted, unheldPreferences });
}

/** Settings from their parts, with their fingerprint: what the loader returns, and what tests and tools build directly. */
export function trustSettings(parts: Omit<TrustSettings, 'fingerprint'>): TrustSettings {
  const digest = createHash('sha256');
  for (const profile of parts.profiles) digest.update(`${profile.name}\0${profile.anchors.map((a) => a.fingerprintSha256).sort().join(',')}\n`);
  digest.update(`${parts.preferences.join('\0')}\n${[...parts.distrustedSpkiSha256].sort().join(',')}\n${parts.fallback}`);
  return { ...parts, fingerprint: digest.digest('hex') };
}

async function readTrustFile(path: string): Promise<z.infer<typeof TrustFile>> {
  let value: unknown;
  try {
    value = JSON.parse(await readText(path, 'CERTPLANE_TRUST_FILE'));
  } catch (cause) {
    if (cause instanceof CertplaneError) throw cause;
    throw new CertplaneError(ErrorCode.TRUST_FILE_INVALID, `the trust file ${path} (CERTPLANE_TRUST_FILE) is not JSON: ${(cause as Error).message}`, { path }, { cause });
  }
  const parsed = TrustFile.safeParse(value);
  if (!parsed.success) {
    throw new CertplaneError(ErrorCode.TRUST_FILE_INVALID, `the trust file ${path} (CERTPLANE_TRUST_FILE): ${z.prettifyError(parsed.error)}; it holds {"profiles": {NAME: PEM_PATH}, "preferredChains": [CN...], "distrustedSpki": [PIN...]}, each optional`, { path });
  }
  return parsed.data;
}

function pinsOf(pins: readonly string[], path: string): string[] {
  return pins.map((pin) => {
    const normalized = normalizeSpkiPin(pin);
    if (normalized === undefined) throw new CertplaneError(ErrorCode.TRUST_FILE_INVALID, `the trust file ${path}: distrustedSpki "${pin.slice(0, 80)}" is not a SHA-256 SPKI pin (64 hex digits or base64)`, { path });
    return normalized;
  });
}

/**
 * The trust settings a process runs with now, replaced whole by `reload()`: chain
 * selection, trust evaluation and what-if read `current()` at the moment they start.
 */
export class LiveTrust {
  #current: TrustSettings;

  /** `read` loads the settings afresh: from the configured files in a plane, from whatever a test holds otherwise. */
  constructor(
    private readonly read: () => Promise<TrustSettings>,
    current: TrustSettings,
  ) {
    this.#current = current;
  }

  /** A plane's trust: refuses preferences no profile holds, at start and at every reload. */
  static async load(chain: Config['chain'], options: { requireHeldPreference?: boolean } = {}): Promise<LiveTrust> {
    return new LiveTrust(() => loadTrustSettings(chain, options), await loadTrustSettings(chain, options));
  }

  current(): TrustSettings {
    return this.#current;
  }

  /** Re-reads every file; on any failure the settings in use stay as they were and the error is thrown. */
  async reload(): Promise<{ previous: TrustSettings; current: TrustSettings }> {
    const previous = this.#current;
    this.#current = await this.read();
    return { previous, current: this.#current };
  }
}

/** The issuer's chain policy under `settings`: the `default` profile stands for the trust store of an order that names none. */
export function chainPolicyOf(settings: TrustSettings) {
  return {
    preferences: settings.preferences,
    fallback: settings.fallback,
    trustAnchors: settings.profiles.find((p) => p.name === DEFAULT_PROFILE)?.anchors ?? [],
    distrustedSpkiSha256: settings.distrustedSpkiSha256,
    profiles: settings.profiles,
    fingerprint: settings.fingerprint,
  };
}
