/**
 * pino, configured once. Redaction is on by default for every field name that could
 * carry a key, a token or a secret, so that a careless `log.info({ account })` cannot
 * leak the ACME account key into a log pipeline; and for every string, under any name,
 * that carries a PEM private key (an error message quoting what an agent or a caller
 * sent), because logs redact where requests are refused.
 */
import { pino, type Logger } from 'pino';
import { carriesPrivateKey, redactPrivateKeys, REDACTED_KEY } from '../untrusted-text.js';

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
  return pino({ level, base: { service: 'certplane' }, redact: { paths: REDACTED_PATHS, censor: '[redacted]' }, hooks: { streamWrite: redactKeyMaterial } }, destination);
}

/**
 * JSON escapes in the finished line (`\n`, `\u000b`), removed before the cheap test below so
 * that it sees at least every match the detector would find in the parsed strings: the
 * letters and dashes of a PEM boundary are never escaped, only what separates them.
 */
const JSON_ESCAPE = /\\(?:u[0-9a-fA-F]{4}|["\\/bfnrt])/g;

/**
 * The finished line, with every string (value or key, message and bindings included) that
 * carries a private key replaced. Works on the serialized line, after pino's serializers,
 * so an Error's message and stack are covered too. Only a line that might carry a key is
 * parsed; one that cannot be re-read safely is replaced whole.
 */
export function redactKeyMaterial(line: string): string {
  if (!carriesPrivateKey(line.replace(JSON_ESCAPE, ''))) return line;
  try {
    return `${JSON.stringify(redactPrivateKeys(JSON.parse(line)))}\n`;
  } catch {
    return `${JSON.stringify({ level: 50, time: Date.now(), msg: `a log line was dropped: it carried a private key (${REDACTED_KEY})` })}\n`;
  }
}
