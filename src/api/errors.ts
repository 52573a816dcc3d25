/**
 * One error shape for every route: `{ code, message, details? }` with a status derived
 * from the code, so a client branches on `code` and a person reads `message`. Unknown
 * failures become 500 with a generic message; their detail goes to the log only.
 */
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { hasZodFastifySchemaValidationErrors } from 'fastify-type-provider-zod';
import { CertplaneError } from '../errors.js';

const STATUS_BY_CODE: Record<string, number> = {
  NOT_FOUND: 404,
  ENROLLMENT_TOKEN_INVALID: 401,
  ISSUANCE_UNKNOWN_INSTANCE: 404,
  STORE_INVALID_CURSOR: 400,
  CSR_INVALID: 400,
  CSR_BAD_SIGNATURE: 400,
  CSR_WEAK_SIGNATURE: 400,
  CSR_TOO_MANY_NAMES: 400,
  CSR_TOO_LARGE: 413,
  CHAIN_GARBAGE: 400,
  CHAIN_EMPTY: 400,
  CHAIN_PRIVATE_KEY_IN_BUNDLE: 400,
  PRIVATE_KEY_REFUSED: 400,
  VALIDATION_FAILED: 400,
  STORE_INVALID_VALUE: 400,
  ENROLLMENT_KEY_UNSUPPORTED: 400,
  AUTH_FORBIDDEN: 403,
  ENROLLMENT_RATE_LIMITED: 429,
  REISSUE_KEY_REUSE_UNSUPPORTED: 400,
  REISSUE_NOTHING_MATCHED: 400,
  INSTANCE_HOSTNAME_TAKEN: 409,
  INSTANCE_IP_ADDRESS_PROFILE_REQUIRED: 400,
  INSTANCE_UNKNOWN_TRUST_PROFILE: 400,
  CHAIN_UNPARSABLE_CERTIFICATE: 400,
  INSTANCE_DECOMMISSIONED: 409,
  CERTIFICATE_NOT_REVOCABLE: 409,
  CERTIFICATE_ALREADY_REVOKED: 409,
  ACME_BAD_REVOCATION_REASON: 400,
  ACME_UNREACHABLE: 502,
  ACME_PROBLEM: 502,
  ACME_SERVER_INTERNAL: 502,
  ACME_ACCOUNT_REFUSED: 502,
  ACME_RATE_LIMITED: 429,
};

/**
 * Fastify's own refusals of a request (before any route runs), under certplane's codes:
 * the framework's codes are not part of the API. The framework code stays in `details`.
 */
const REQUEST_CODE_BY_FASTIFY_CODE: Record<string, string> = {
  FST_ERR_CTP_INVALID_JSON_BODY: 'REQUEST_BODY_INVALID_JSON',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'REQUEST_BODY_INVALID_JSON',
  FST_ERR_CTP_BODY_TOO_LARGE: 'REQUEST_BODY_TOO_LARGE',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'REQUEST_MEDIA_TYPE_UNSUPPORTED',
  FST_ERR_CTP_INVALID_TYPE: 'REQUEST_MEDIA_TYPE_UNSUPPORTED',
  FST_ERR_BAD_URL: 'REQUEST_URL_INVALID',
  FST_ERR_MAX_PARAM_LENGTH: 'REQUEST_URL_PARAMETER_TOO_LONG',
};

export function statusOf(error: CertplaneError): number {
  return STATUS_BY_CODE[error.code] ?? 500;
}

export function notFound(what: string): CertplaneError {
  return new CertplaneError('NOT_FOUND', `${what} not found`);
}

export function errorHandler(error: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  if (hasZodFastifySchemaValidationErrors(error)) {
    const problems = error.validation.map((v) => `${error.validationContext ?? 'request'}${v.instancePath || ''}: ${v.message}`);
    void reply.status(400).send({ code: 'VALIDATION_FAILED', message: problems.join('; '), details: { problems } });
    return;
  }
  if (error instanceof CertplaneError) {
    const status = statusOf(error);
    if (status >= 500) request.log.error({ err: error }, 'request failed');
    void reply.status(status).send({ code: error.code, message: error.message });
    return;
  }
  const status = error.statusCode && error.statusCode >= 400 && error.statusCode < 500 ? error.statusCode : 500;
  if (status >= 500) {
    request.log.error({ err: error }, 'request failed');
    void reply.status(500).send({ code: 'INTERNAL', message: 'internal error; see the management plane log' });
    return;
  }
  void reply.status(status).send(frameworkRefusal(error));
}

/** Fastify's `frameworkErrors`: refusals from the router (a malformed URL, a path parameter over 100 characters), in the same shape. */
export function frameworkErrorHandler(error: FastifyError, _request: FastifyRequest, reply: FastifyReply): void {
  void reply.status(error.code === 'FST_ERR_MAX_PARAM_LENGTH' ? 414 : 400).send(frameworkRefusal(error));
}

/** A refusal of Fastify's own in certplane's shape, the framework's code kept as the cause. */
function frameworkRefusal(error: FastifyError): { code: string; message: string; details?: { cause: string } } {
  const code = (error.code && REQUEST_CODE_BY_FASTIFY_CODE[error.code]) ?? 'REQUEST_INVALID';
  return { code, message: error.message, ...(error.code ? { details: { cause: error.code } } : {}) };
}
