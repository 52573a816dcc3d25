/**
 * The CA's problem documents (RFC 8555 §6.7, RFC 7807) as typed errors. acme-client turns
 * a problem into an Error carrying only its `detail`, which left certplane matching
 * regular expressions over prose to tell a rate limit from a refused name. Here the
 * problem `type` becomes a stable code and its facts (Retry-After, subproblem identifiers)
 * become details, before acme-client ever sees the response.
 */
import { CertplaneError } from '../errors.js';
import { ErrorCode } from '../error-catalogue.js';

const ACME_ERROR = 'urn:ietf:params:acme:error:';

const CODE_BY_TYPE: Readonly<Record<string, ErrorCode>> = {
  rateLimited: ErrorCode.ACME_RATE_LIMITED,
  badNonce: ErrorCode.ACME_BAD_NONCE,
  rejectedIdentifier: ErrorCode.ACME_REJECTED_IDENTIFIER,
  unsupportedIdentifier: ErrorCode.ACME_REJECTED_IDENTIFIER,
  caa: ErrorCode.ACME_REJECTED_IDENTIFIER,
  alreadyReplaced: ErrorCode.ACME_ALREADY_REPLACED,
  badCSR: ErrorCode.ACME_BAD_CSR,
  badPublicKey: ErrorCode.ACME_BAD_CSR,
  badSignatureAlgorithm: ErrorCode.ACME_BAD_CSR,
  unauthorized: ErrorCode.ACME_ACCOUNT_REFUSED,
  userActionRequired: ErrorCode.ACME_ACCOUNT_REFUSED,
  externalAccountRequired: ErrorCode.ACME_ACCOUNT_REFUSED,
  connection: ErrorCode.ACME_VALIDATION_FAILED,
  dns: ErrorCode.ACME_VALIDATION_FAILED,
  incorrectResponse: ErrorCode.ACME_VALIDATION_FAILED,
  tls: ErrorCode.ACME_VALIDATION_FAILED,
  serverInternal: ErrorCode.ACME_SERVER_INTERNAL,
  alreadyRevoked: ErrorCode.ACME_ALREADY_REVOKED,
  badRevocationReason: ErrorCode.ACME_BAD_REVOCATION_REASON,
};

/** The parts of an RFC 7807 problem certplane reads. */
interface Problem {
  readonly type?: unknown;
  readonly detail?: unknown;
  readonly subproblems?: readonly { readonly identifier?: { readonly value?: unknown } }[];
}

function isProblem(value: unknown): value is Problem {
  return typeof value === 'object' && value !== null && typeof (value as Problem).type === 'string';
}

/**
 * A typed error for `problem`, answered with HTTP `status` (0 when it came inside an
 * object, as a challenge's `error` does). `names` are the identifiers concerned when the
 * caller knows them; `retryAfter` is the response's Retry-After header.
 */
export function problemError(problem: unknown, context: { status?: number; retryAfter?: string; names?: readonly string[]; now?: Date; what?: string }): CertplaneError {
  const type = isProblem(problem) ? String(problem.type) : 'unknown';
  const short = type.startsWith(ACME_ERROR) ? type.slice(ACME_ERROR.length) : type;
  const code = CODE_BY_TYPE[short] ?? ErrorCode.ACME_PROBLEM;
  const detail = isProblem(problem) && typeof problem.detail === 'string' ? problem.detail.replace(/[\r\n]+/g, ' ') : 'no detail';
  const subNames = isProblem(problem) ? (problem.subproblems ?? []).map((s) => s.identifier?.value).filter((v): v is string => typeof v === 'string') : [];
  const names = context.names ?? subNames;
  const retryAt = retryAtOf(context.retryAfter, context.now ?? new Date());
  return new CertplaneError(code, `the CA answered ${short}${context.what ? ` to ${context.what}` : ''}: ${detail}`, {
    problemType: type,
    ...(context.status ? { status: context.status } : {}),
    ...(names.length > 0 ? { names } : {}),
    ...(retryAt ? { retryAt: retryAt.toISOString() } : {}),
  });
}

/** Retry-After as seconds or an HTTP date (RFC 9110 §10.2.3); undefined when absent or unreadable. */
export function retryAtOf(header: string | undefined, now: Date): Date | undefined {
  if (!header) return undefined;
  const seconds = Number(header);
  if (Number.isFinite(seconds) && seconds >= 0) return new Date(now.getTime() + seconds * 1000);
  const date = Date.parse(header);
  return Number.isFinite(date) ? new Date(date) : undefined;
}

/** The one method of acme-client's HTTP client that every signed request passes through. */
interface SignedRequester {
  signedRequest(url: string, payload: unknown, options: object, attempts?: number): Promise<{ status: number; headers: Record<string, string | undefined>; data: unknown }>;
}

/**
 * Makes every signed request of `client` throw a typed problem error when the CA answers
 * with a problem document, after acme-client's own badNonce retries. acme-client keeps its
 * HTTP client on `http` and exposes no hook for this, hence the wrapper.
 */
export function throwTypedProblems(client: object, clock: () => Date): void {
  const http = (client as { http: SignedRequester }).http;
  const signedRequest = http.signedRequest.bind(http);
  http.signedRequest = async (url, payload, options, attempts) => {
    const response = await signedRequest(url, payload, options, attempts);
    // A 5xx without a problem document (a proxy's HTML page) is a passing server failure too.
    const problem = isProblem(response.data) ? response.data : response.status >= 500 ? { type: `${ACME_ERROR}serverInternal`, detail: `HTTP ${response.status} from ${url}` } : undefined;
    if (response.status >= 400 && problem) throw problemError(problem, { status: response.status, retryAfter: response.headers['retry-after'], now: clock() });
    return response;
  };
}

/** The parts of an axios response and its request that the GET interceptor reads. */
interface UnsignedResponse {
  readonly status: number;
  readonly headers: Record<string, string | undefined>;
  readonly data: unknown;
  readonly config: { readonly method?: string; readonly url?: string; readonly retryValidateStatus?: unknown };
}

/**
 * Makes an unsigned GET that the CA answers with 429 or 5xx (the directory, a nonce) throw
 * a typed problem carrying its Retry-After, where acme-client would throw a bare Error
 * naming only the status; retry.ts then retries it at the CA's pace. acme-client's own
 * requests carry no validateStatus (it reads every status); a caller that set one (renewal
 * information, which reads its statuses itself) is left alone.
 */
export function typedUnsignedFailure(response: UnsignedResponse, clock: () => Date): UnsignedResponse {
  const method = (response.config.method ?? 'get').toLowerCase();
  if ((method !== 'get' && method !== 'head') || typeof response.config.retryValidateStatus === 'function') return response;
  if (response.status !== 429 && response.status < 500) return response;
  const fallback = { type: `${ACME_ERROR}${response.status === 429 ? 'rateLimited' : 'serverInternal'}`, detail: `HTTP ${response.status} from ${response.config.url ?? 'the CA'}` };
  throw problemError(isProblem(response.data) ? response.data : fallback, { status: response.status, retryAfter: response.headers['retry-after'], now: clock() });
}
