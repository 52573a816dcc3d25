/**
 * What certplane does with text it did not write (channel frames, API bodies, admin
 * arguments, anything that reaches a log): find private-key material in it, and make it
 * safe to show on one line. One detector for every surface, so the API, the channel, the
 * admin console and the logs agree on what a private key looks like.
 *
 * The detector runs on parsed values, never only on raw bytes: an encoding (the JSON
 * escape `\u002d` for "-") hides a PEM header from a pattern over the bytes, not from one
 * over what the parser produced. It ignores whitespace and control characters and letter
 * case, because a key pasted on one line, re-wrapped or with a mangled header is still a
 * key. It recognises PEM headers and footers (BEGIN/END ... PRIVATE KEY, which covers
 * PKCS#8, ENCRYPTED, RSA, EC, DSA and OPENSSH keys); a bare base64 body with no header is
 * not recognised.
 *
 * Imports only errors.ts, which imports nothing, so that every room, the pure chain engine
 * included, may use it without breaking the one-way arrows of the architecture.
 */
import { CertplaneError } from './errors.js';
import { ErrorCode } from './error-catalogue.js';

/** Skipped before matching: PEM readers skip whitespace, and a paste moves it around. */
const IGNORED = /[\s\p{Cc}]+/gu;
/**
 * A PEM private-key header or footer once whitespace is gone, e.g. "-----BEGINRSAPRIVATEKEY-----",
 * with dashes on at least one side. Exactly three dashes are matched (any longer run ends in
 * three) and the label is bounded, so the time stays linear in the text's length.
 */
const PRIVATE_KEY_BOUNDARY = /---(?:BEGIN|END)[A-Z0-9_-]{0,24}PRIVATEKEY|(?:BEGIN|END)[A-Z0-9_-]{0,24}PRIVATEKEY---/i;

/** True when a PEM block's label names a private key ("PRIVATE KEY", "EC PRIVATE KEY", "ENCRYPTED PRIVATE KEY"...). */
export function isPrivateKeyLabel(label: string): boolean {
  return label.replace(IGNORED, '').toUpperCase().includes('PRIVATEKEY');
}

/** True when `text` holds a PEM private-key header or footer, in any spacing or case. */
export function carriesPrivateKey(text: string): boolean {
  return PRIVATE_KEY_BOUNDARY.test(text.replace(IGNORED, ''));
}

/**
 * Where in a parsed value (JSON-like: objects, arrays, strings) the first string carrying
 * a private key is: the keys leading to it, or undefined when there is none. Object keys
 * are checked too, since a refusal that names an unknown key would echo it. Iterative, so
 * a deeply nested value cannot exhaust the stack.
 */
export function findPrivateKey(value: unknown): string[] | undefined {
  const pending: Visit[] = [{ value }];
  for (let visit = pending.pop(); visit !== undefined; visit = pending.pop()) {
    const current = visit.value;
    if (typeof current === 'string') {
      if (carriesPrivateKey(current)) return pathOf(visit);
    } else if (Array.isArray(current)) {
      current.forEach((item, index) => pending.push({ value: item, key: String(index), parent: visit }));
    } else if (current !== null && typeof current === 'object') {
      for (const [key, item] of Object.entries(current)) {
        if (carriesPrivateKey(key)) return pathOf(visit);
        pending.push({ value: item, key, parent: visit });
      }
    }
  }
  return undefined;
}

/** A value met during the walk, linked to its parent so that paths cost nothing until one is needed. */
interface Visit {
  readonly value: unknown;
  readonly key?: string;
  readonly parent?: Visit;
}

function pathOf(visit: Visit): string[] {
  const path: string[] = [];
  for (let at: Visit | undefined = visit; at?.key !== undefined; at = at.parent) path.push(at.key);
  return path.reverse();
}

/**
 * Throws `code` (PRIVATE_KEY_REFUSED unless the surface has its own) when any string in
 * `value` carries a private key. The message names the field, never its content.
 */
export function refusePrivateKey(value: unknown, root: string, code: ErrorCode = ErrorCode.PRIVATE_KEY_REFUSED): void {
  const path = findPrivateKey(value);
  if (path === undefined) return;
  const field = describePath(path, root);
  throw new CertplaneError(code, `${field} holds a PEM private-key block; private keys never leave the instance, so the request is refused and nothing of it is kept`, { field });
}

/**
 * A field path for a refusal message: at most 8 keys, each cut to 40 characters and
 * escaped, because keys are the caller's text too and the message is shown on one line.
 */
export function describePath(path: readonly string[], root: string): string {
  const shown = path.slice(0, 8).map((key) => escapeControlCharacters(key.length > 40 ? `${key.slice(0, 40)}...` : key));
  return [root, ...shown, ...(path.length > 8 ? ['...'] : [])].join('.');
}

/** Text shown where one line is one record (tables, console answers) must not contain control characters. */
export const CONTROL_CHARACTER = /\p{Cc}/u;

/**
 * `text` with every control character written as a visible escape (`\n`, `\t`, `\u001b`),
 * so text from elsewhere keeps its content but cannot add a row to a table, rewrite a
 * terminal line or forge a log line.
 */
export function escapeControlCharacters(text: string): string {
  return text.replace(/\p{Cc}/gu, (c) => ESCAPES[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

const ESCAPES: Readonly<Record<string, string>> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

/** What replaces a logged string that carried a private key. */
export const REDACTED_KEY = '[redacted: private key]';

/**
 * A copy of a parsed value in which every string (value or key) carrying a private key is
 * replaced by REDACTED_KEY; the value itself when nothing needed it. For logs, which
 * redact rather than refuse: the line is still written, without the key.
 */
export function redactPrivateKeys(value: unknown): unknown {
  if (typeof value === 'string') return carriesPrivateKey(value) ? REDACTED_KEY : value;
  if (Array.isArray(value)) return value.map(redactPrivateKeys);
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([key, item], index) => [carriesPrivateKey(key) ? `${REDACTED_KEY} ${index}` : key, redactPrivateKeys(item)]));
  }
  return value;
}
