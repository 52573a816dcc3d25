/**
 * The one error type every room throws. A stable `code` lets callers (the CLI's
 * exit codes, the API's problem documents, tests) branch on the failure without
 * parsing prose, and `details` carries the structured facts a person needs to act.
 * This module imports nothing so that every room, the pure chain engine included,
 * may depend on it without breaking the one-way arrows of the architecture.
 */
export class CertplaneError extends Error {
  readonly code: string;
  readonly details: Readonly<Record<string, unknown>>;

  constructor(code: string, message: string, details: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CertplaneError';
    this.code = code;
    this.details = details;
  }

  /** A plain object for logs and JSON output; the cause is reduced to its message. */
  toJSON(): { code: string; message: string; details: Readonly<Record<string, unknown>> } {
    return { code: this.code, message: this.message, details: this.details };
  }
}

/** True when `error` is a CertplaneError carrying `code`; saves every caller the instanceof dance. */
export function hasCode(error: unknown, code: string): error is CertplaneError {
  return error instanceof CertplaneError && error.code === code;
}
