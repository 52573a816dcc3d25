/**
 * pino, configured once. Redaction is on by default for every field name that could
 * carry a key, a token or a secret, so that a careless `log.info({ account })` cannot
 * leak the ACME account key into a log pipeline.
 */
import { pino, type Logger } from 'pino';

export type { Logger };

/** Field names whose values never reach a log line, at any depth listed. */
export const REDACTED_PATHS = [
  'privateKey',
  'privateKeyPem',
  'accountKey',
  'secret',
  'secretValue',
  'token',
  'password',
  'authorization',
  '*.privateKey',
  '*.privateKeyPem',
  '*.accountKey',
  '*.secret',
  '*.secretValue',
  '*.token',
  '*.password',
  '*.authorization',
  'req.headers.authorization',
  'req.headers.cookie',
];

/** A logger writing JSON lines to `destination` (stderr by default: stdout belongs to command output). */
export function createLogger(level: string, destination: NodeJS.WritableStream = process.stderr): Logger {
  return pino({ level, base: { service: 'certplane' }, redact: { paths: REDACTED_PATHS, censor: '[redacted]' } }, destination);
}
