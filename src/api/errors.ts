/**
 * One error shape for every route: `{ code, message, details? }` with the status the error
 * catalogue gives the code, so a client branches on `code` and a person reads `message`.
 * Unknown failures become 500 with a generic message; their detail goes to the log only.
 */
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { hasZodFastifySchemaValidationErrors } from 'fastify-type-provider-zod';
import { CertplaneError } from '../errors.js';
import { describeIssues } from '../validation.js';
import { ErrorCode, httpStatusOf } from '../error-catalogue.js';

/**
 * Fastify's own refusals of a request (before any route runs), under certplane's codes:
 * the framework's codes are not part of the API. The framework code stays in `details`.
 */
const REQUEST_CODE_BY_FASTIFY_CODE: Readonly<Record<string, ErrorCode>> = {
  FST_ERR_CTP_INVALID_JSON_BODY: ErrorCode.REQUEST_BODY_INVALID_JSON,
  FST_ERR_CTP_EMPTY_JSON_BODY: ErrorCode.REQUEST_BODY_INVALID_JSON,
  FST_ERR_CTP_BODY_TOO_LARGE: ErrorCode.REQUEST_BODY_TOO_LARGE,
  FST_ERR_CTP_INVALID_MEDIA_TYPE: ErrorCode.REQUEST_MEDIA_TYPE_UNSUPPORTED,
  FST_ERR_CTP_INVALID_TYPE: ErrorCode.REQUEST_MEDIA_TYPE_UNSUPPORTED,
  FST_ERR_BAD_URL: ErrorCode.REQUEST_URL_INVALID,
  FST_ERR_MAX_PARAM_LENGTH: ErrorCode.REQUEST_URL_PARAMETER_TOO_LONG,
};

/** Answers with `code`'s problem document, under the status the catalogue gives it. */
export function sendProblem(reply: FastifyReply, code: ErrorCode, message: string, details?: Record<string, unknown>): void {
  void reply.status(httpStatusOf(code)).send({ code, message, ...(details ? { details } : {}) });
}

export function notFound(what: string): CertplaneError {
  return new CertplaneError(ErrorCode.NOT_FOUND, `${what} not found`);
}

export function errorHandler(error: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  if (hasZodFastifySchemaValidationErrors(error)) {
    const context = error.validationContext ?? 'request';
    const issues = error.validation.map((v) => ({ path: v.instancePath.split('/').filter(Boolean), message: v.message ?? 'is invalid', code: v.keyword, keys: (v.params as { keys?: string[] }).keys }));
    const problems = describeIssues(issues, { under: context, whole: context });
    sendProblem(reply, ErrorCode.VALIDATION_FAILED, problems.join('; '), { problems });
    return;
  }
  if (error instanceof CertplaneError) {
    if (httpStatusOf(error.code) >= 500) request.log.error({ err: error }, 'request failed');
    sendProblem(reply, error.code, error.message);
    return;
  }
  const status = error.statusCode && error.statusCode >= 400 && error.statusCode < 500 ? error.statusCode : 500;
  if (status >= 500) {
    request.log.error({ err: error }, 'request failed');
    sendProblem(reply, ErrorCode.INTERNAL, 'internal error; see the management plane log');
    return;
  }
  frameworkRefusal(error, reply);
}

/** Fastify's `frameworkErrors`: refusals from the router (a malformed URL, a path parameter over 100 characters), in the same shape. */
export function frameworkErrorHandler(error: FastifyError, _request: FastifyRequest, reply: FastifyReply): void {
  frameworkRefusal(error, reply);
}

/**
 * A refusal of Fastify's own in certplane's shape, the framework's code kept as the cause.
 * A refusal certplane has no code for keeps the framework's 4xx status under REQUEST_INVALID.
 */
function frameworkRefusal(error: FastifyError, reply: FastifyReply): void {
  const code = error.code ? REQUEST_CODE_BY_FASTIFY_CODE[error.code] : undefined;
  const details = error.code ? { cause: error.code } : undefined;
  if (code) return sendProblem(reply, code, error.message, details);
  const status = error.statusCode && error.statusCode >= 400 && error.statusCode < 500 ? error.statusCode : httpStatusOf(ErrorCode.REQUEST_INVALID);
  void reply.status(status).send({ code: ErrorCode.REQUEST_INVALID, message: error.message, ...(details ? { details } : {}) });
}
