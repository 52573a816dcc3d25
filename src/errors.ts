/**
 * The one error type every room throws. A stable `code` lets callers (the CLI's
 * exit codes, the API's problem documents, tests) branch on the failure without
 * parsing prose, and `details` carries the structured facts a person needs to act.
 * The code must be one of error-catalogue.ts, which gives it its HTTP status, exit code and
 * documentation. This module imports nothing but that catalogue's type, so that every room,
 * the pure chain engine included, may depend on it without breaking the one-way arrows of
 * the architecture.
 */
import type { ErrorCode } from './error-catalogue.js';

export class CertplaneError extends Error {
  readonly code: ErrorCode;
  readonly details: Readonly<Record<string, unknown>>;

  constructor(code: ErrorCode, message: string, details: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CertplaneError';
    this.code = code;
    this.details = details;
  }

  /** A plain object for logs and JSON output; the cause is reduced to its message. */
  toJSON(): { code: ErrorCode; message: string; details: Readonly<Record<string, unknown>> } {
    return { code: this.code, message: this.message, details: this.details };
  }
}

/** True when `error` is a CertplaneError carrying `code`; saves every caller the instanceof dance. */
export function hasCode(error: unknown, code: ErrorCode): error is CertplaneError {
  return error instanceof CertplaneError && error.code === code;
}
