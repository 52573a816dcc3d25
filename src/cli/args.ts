/**
 * Argument parsing shared by every subcommand: node:util's parseArgs, with usage
 * mistakes turned into CLI_USAGE (exit 2) instead of stack traces.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { CertplaneError } from '../errors.js';
import { ErrorCode, FailureExitCode, exitCodeOf } from '../error-catalogue.js';

/** Exit codes every subcommand keeps: 0 success, 1 the answer is "no", 2 bad input or usage. */
export const ExitCode = { OK: 0, NO: FailureExitCode.FAILED, BAD_INPUT: FailureExitCode.BAD_INPUT } as const;

export function parse<T extends NonNullable<ParseArgsConfig['options']>>(args: string[], options: T, usage: string) {
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (cause) {
    throw new CertplaneError(ErrorCode.CLI_USAGE, `${(cause as Error).message}\n${usage}`, {}, { cause });
  }
}

/** Parses --at; an ISO-8601 time, or now when absent. */
export function parseTime(value: string | undefined, usage: string): Date {
  if (value === undefined) return new Date();
  const at = new Date(value);
  if (Number.isNaN(at.getTime()) || !/^\d{4}-\d{2}-\d{2}/.test(value)) {
    throw new CertplaneError(ErrorCode.CLI_USAGE, `--at: "${value}" is not an ISO-8601 time such as 2021-10-01T00:00:00Z\n${usage}`);
  }
  return at;
}

export function usageError(message: string, usage: string): CertplaneError {
  return new CertplaneError(ErrorCode.CLI_USAGE, `${message}\n${usage}`);
}

/**
 * Writes why `program` failed and returns its exit code: the error catalogue's for a
 * CertplaneError (2 when its kind is bad input), 1 with the stack for anything unexpected.
 */
export function reportFailure(error: unknown, program: string, io: Io): number {
  if (error instanceof CertplaneError) {
    io.stderr.write(`${program}: ${error.code}: ${error.message}\n`);
    return exitCodeOf(error.code);
  }
  io.stderr.write(`${program}: unexpected failure: ${(error as Error).stack ?? String(error)}\n`);
  return ExitCode.NO;
}

/** Where a command writes: injectable so tests and the composition root decide, never globals. */
export interface Io {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
  readonly env: Readonly<Record<string, string | undefined>>;
}
