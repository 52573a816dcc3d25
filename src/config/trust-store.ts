/**
 * Reads trust anchors from a file or the system store. Both ends use it: the plane (through
 * trust.ts) and the program on the instance, which must not load the plane's configuration
 * (config.ts knows the store's limits, and with them the storage room). "system" means the
 * operating system's store (Debian's ca-certificates bundle); when the file is absent,
 * Node's bundled Mozilla roots stand in and the caller is told which was used.
 */
import { readFile } from 'node:fs/promises';
import { rootCertificates } from 'node:tls';
import { CertplaneError } from '../errors.js';
import { DEFAULT_DISTRUSTED_SPKI_SHA256, parseCertificateBundle, type Certificate } from '../chain/index.js';
import { ErrorCode } from '../error-catalogue.js';

export const SYSTEM_TRUST_STORE_PATH = '/etc/ssl/certs/ca-certificates.crt';

export interface TrustStore {
  readonly anchors: readonly Certificate[];
  /** Where the anchors came from, for logs and reports. */
  readonly source: string;
}

/** Reads a PEM file of trust anchors, or the system store for "system". */
export async function loadTrustStore(spec: string): Promise<TrustStore> {
  if (spec === 'system') {
    const text = await readFile(SYSTEM_TRUST_STORE_PATH, 'utf8').catch(() => undefined);
    if (text !== undefined) return { anchors: parseCertificateBundle(text, SYSTEM_TRUST_STORE_PATH), source: SYSTEM_TRUST_STORE_PATH };
    return { anchors: parseCertificateBundle(rootCertificates.join('\n'), 'node:tls rootCertificates'), source: 'node:tls rootCertificates' };
  }
  return { anchors: parseCertificateBundle(await readText(spec, 'trust store'), spec), source: spec };
}

/** The built-in distrust list plus configured pins, as the set the verifier takes. */
export function distrustedKeys(extra: readonly string[] = []): ReadonlySet<string> {
  return new Set([...DEFAULT_DISTRUSTED_SPKI_SHA256, ...extra]);
}

/** Reads a text file, turning I/O failures into an error that names the file and its role. */
export async function readText(path: string, role: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (cause) {
    throw new CertplaneError(ErrorCode.TRUST_STORE_UNREADABLE, `cannot read the ${role} file ${path}: ${(cause as NodeJS.ErrnoException).code ?? (cause as Error).message}`, { path, role }, { cause });
  }
}
