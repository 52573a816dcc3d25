/**
 * The admin console on standard input, for a plane run interactively: whoever types
 * into the process's terminal started it or could have, so, as with the socket, the
 * operating system is the authentication. Also home of the text form of a command
 * (`register-client --name ops --cert-file client.pem`), which `certplane admin` shares
 * so that both read the same words the same way.
 */
import { readFile } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { parseCertificateBundle } from '../chain/index.js';
import { CertplaneError } from '../errors.js';
import { ADMIN_COMMANDS, runAdminCommand, type AdminDeps } from './commands.js';
import { ErrorCode } from '../error-catalogue.js';

const PROMPT = 'certplane> ';

/**
 * Splits a line into words as a shell would for the simple cases: blanks separate,
 * 'single quotes' keep everything, "double quotes" allow \" and \\, a backslash outside
 * quotes escapes the next character. An unterminated quote is refused, not guessed at.
 */
export function splitWords(line: string): string[] {
  const words: string[] = [];
  let word = '';
  let inWord = false;
  let quote: "'" | '"' | undefined;
  const append = (text: string) => {
    word += text;
    inWord = true;
  };
  for (let i = 0; i < line.length; i += 1) {
    const c = line.charAt(i);
    if (quote === "'") {
      if (c === "'") quote = undefined;
      else append(c);
    } else if (quote === '"') {
      if (c === '"') quote = undefined;
      else if (c === '\\' && (line.charAt(i + 1) === '"' || line.charAt(i + 1) === '\\')) append(line.charAt(++i));
      else append(c);
    } else if (c === "'" || c === '"') {
      quote = c;
      append('');
    } else if (c === '\\' && i + 1 < line.length) {
      append(line.charAt(++i));
    } else if (/\s/.test(c)) {
      if (inWord) words.push(word);
      word = '';
      inWord = false;
    } else {
      append(c);
    }
  }
  if (quote) throw new CertplaneError(ErrorCode.ADMIN_BAD_ARGUMENTS, `unterminated ${quote} quote`);
  if (inWord) words.push(word);
  return words;
}

/**
 * Turns `COMMAND --option value...` into a request's command and args. Files named by
 * `--cert-file` are read here, where the command is typed, and refused when they hold
 * anything but certificates, so a private key never leaves the operator's file.
 */
export async function parseCommandWords(words: readonly string[], read: (path: string) => Promise<string> = (path) => readFile(path, 'utf8')): Promise<{ command: string; args: Record<string, unknown> }> {
  const [command = '', ...rest] = words;
  const definition = Object.hasOwn(ADMIN_COMMANDS, command) ? ADMIN_COMMANDS[command] : undefined;
  if (!definition) throw new CertplaneError(ErrorCode.ADMIN_UNKNOWN_COMMAND, `unknown admin command "${command}"; commands: ${Object.keys(ADMIN_COMMANDS).join(', ')}`);
  const usage = `usage: ${command} ${definition.usage}`.trimEnd();
  const options = Object.fromEntries(Object.entries(definition.options).map(([name, spec]) => [name, { type: spec.kind === 'flag' ? 'boolean' : 'string', multiple: spec.kind === 'list' } as const]));
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: [...rest], options, strict: true, allowPositionals: false });
  } catch (error) {
    throw new CertplaneError(ErrorCode.ADMIN_BAD_ARGUMENTS, `${command}: ${(error as Error).message}; ${usage}`);
  }
  const args: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(parsed.values)) {
    const spec = definition.options[name];
    if (!spec || value === undefined) continue;
    args[spec.arg] = await decode(name, spec.kind, value, read, usage);
  }
  return { command, args };
}

async function decode(name: string, kind: string, value: string | boolean | (string | boolean)[], read: (path: string) => Promise<string>, usage: string): Promise<unknown> {
  if (kind !== 'file' && kind !== 'json' && kind !== 'number') return value;
  const text = String(value);
  if (kind === 'number') return /^\d+$/.test(text) ? Number(text) : text;
  if (kind === 'json') {
    try {
      return JSON.parse(text) as unknown;
    } catch {
      throw new CertplaneError(ErrorCode.ADMIN_BAD_ARGUMENTS, `--${name} must be JSON, e.g. '{"cluster":"eu-1"}'; ${usage}`);
    }
  }
  let pem: string;
  try {
    pem = await read(text);
  } catch (error) {
    throw new CertplaneError(ErrorCode.ADMIN_BAD_ARGUMENTS, `--${name}: cannot read ${text}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
  parseCertificateBundle(pem, text);
  return pem;
}

/** A running stdin console. */
export interface StdinConsole {
  /** Stops reading; the command under way finishes first. */
  close(): void;
  /** Settles when the input ended (EOF) or close() was called, after the last answer is written. */
  readonly closed: Promise<void>;
}

/**
 * Reads commands line by line from `input` and writes each answer (the text rendering,
 * or `error CODE: message`) to `output`, one command at a time; prompts only when
 * `output` is a terminal, so scripted sessions stay clean. Audited as
 * `stdin-console:USER`, the account the process runs as.
 */
export function startStdinConsole(options: { input: NodeJS.ReadableStream; output: NodeJS.WritableStream; deps: AdminDeps }): StdinConsole {
  const { input, output, deps } = options;
  const actor = `stdin-console:${userInfo().username}`;
  const interactive = (output as Partial<NodeJS.WriteStream>).isTTY === true;
  const lines = createInterface({ input, crlfDelay: Infinity, terminal: false });
  const prompt = () => interactive && output.write(PROMPT);
  const closed = (async () => {
    prompt();
    for await (const line of lines) {
      output.write(await respond(line, actor, deps));
      prompt();
    }
  })();
  return { close: () => lines.close(), closed };
}

async function respond(line: string, actor: string, deps: AdminDeps): Promise<string> {
  try {
    const words = splitWords(line);
    if (words.length === 0 || words[0]?.startsWith('#')) return '';
    const { command, args } = await parseCommandWords(words);
    return `${(await runAdminCommand({ command, args, actor }, deps)).text}\n`;
  } catch (error) {
    if (error instanceof CertplaneError) return `error ${error.code}: ${error.message}\n`;
    deps.logger.error({ err: (error as Error).message }, 'admin console command failed unexpectedly');
    return `error ADMIN_INTERNAL: ${(error as Error).message}\n`;
  }
}
