/**
 * The one interface every secret backend implements. The ACME account key, the agent CA
 * key and the key that authenticates page cursors are the only secrets certplane keeps;
 * whoever holds them can order certificates for the fleet, enroll rogue agents or forge
 * cursors, so they live behind this small surface instead of in the database, and the
 * rest of the service never learns where they are kept.
 */
import { CertplaneError } from '../errors.js';
import { ErrorCode } from '../error-catalogue.js';

/**
 * Where secrets live. Kept to three operations so that a new backend (a local file, AWS
 * Secrets Manager, anything else) is a single small file with the same shape.
 */
export interface SecretStore {
  /** Human-readable description for logs, never containing secret material, e.g. "file:/var/lib/certplane/secrets" */
  readonly description: string;
  /** The secret's value, or undefined when it does not exist. */
  get(name: string): Promise<string | undefined>;
  /** Stores `value` under `name` only if nothing is stored there yet, and returns what is stored afterwards: ours, or the value another process stored first (races between replicas must converge on one value). */
  createIfMissing(name: string, value: string): Promise<string>;
  /** Creates or replaces the value. */
  put(name: string, value: string): Promise<void>;
}

/**
 * Secret names become file names and AWS secret ids, so they are restricted to characters
 * that are safe in both. Requiring an alphanumeric first character rules out "..", hidden
 * files and the stores' own temporary files, and the character set rules out separators.
 */
const SECRET_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/**
 * Refuses a name before any backend sees it, so that a name built from outside input can
 * never escape the secrets directory or address another service's secret.
 */
export function assertValidSecretName(name: string): void {
  if (!SECRET_NAME.test(name)) {
    throw new CertplaneError(
      ErrorCode.SECRETS_INVALID_NAME,
      `Secret name ${JSON.stringify(name)} is invalid: use 1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit (for example "acme-account-abc123").`,
      { name },
    );
  }
}
