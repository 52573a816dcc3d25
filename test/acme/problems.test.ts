/**
 * The CA's problem documents become typed errors, and typed errors become lifecycle
 * reasons: decided by codes, never by the words of a message.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { problemError, retryAtOf } from '../../src/acme/problems.js';
import { failureOf } from '../../src/fleet/failures.js';
import { CertplaneError } from '../../src/errors.js';
import { isPermanent } from '../../src/lifecycle/index.js';
import { ErrorCode } from '../../src/error-catalogue.js';

const now = new Date('2026-12-01T00:00:00.000Z');

test('rateLimited with Retry-After becomes ACME_RATE_LIMITED and a RateLimited reason with its time', () => {
  const error = problemError({ type: 'urn:ietf:params:acme:error:rateLimited', detail: 'too many certificates (5) already issued for this exact set of identifiers' }, { status: 429, retryAfter: '3600', now });
  assert.equal(error.code, ErrorCode.ACME_RATE_LIMITED);
  assert.equal(error.details.retryAt, '2026-12-01T01:00:00.000Z');
  assert.deepEqual(failureOf(error), { reason: 'RateLimited', code: ErrorCode.ACME_RATE_LIMITED, retryAt: '2026-12-01T01:00:00.000Z', problemType: 'urn:ietf:params:acme:error:rateLimited' });
});

test('a detail that reads like a rate limit does not make one: the type decides', () => {
  const error = problemError({ type: 'urn:ietf:params:acme:error:malformed', detail: 'rateLimited: too many orders' }, { status: 400, now });
  assert.equal(error.code, ErrorCode.ACME_PROBLEM);
  assert.equal(failureOf(error).reason, 'CaError');
});

test('rejectedIdentifier names the identifiers of its subproblems and is permanent', () => {
  const error = problemError(
    {
      type: 'urn:ietf:params:acme:error:rejectedIdentifier',
      detail: 'Error creating new order :: Cannot issue for "bad.example": Domain name is blocked',
      subproblems: [{ type: 'urn:ietf:params:acme:error:rejectedIdentifier', identifier: { type: 'dns', value: 'bad.example' } }],
    },
    { status: 400, now },
  );
  const failure = failureOf(error);
  assert.equal(failure.reason, 'IdentifierRejected');
  assert.deepEqual(failure.names, ['bad.example']);
  assert.equal(isPermanent(failure), true);
});

test('alreadyReplaced, badNonce and a failed challenge each get their own reason', () => {
  assert.equal(failureOf(problemError({ type: 'urn:ietf:params:acme:error:alreadyReplaced' }, { now })).reason, 'AlreadyReplaced');
  assert.equal(failureOf(problemError({ type: 'urn:ietf:params:acme:error:badNonce' }, { now })).reason, 'CaError');
  const validation = failureOf(problemError({ type: 'urn:ietf:params:acme:error:connection', detail: 'Connection refused' }, { names: ['db1.example.com'], now }));
  assert.deepEqual([validation.reason, validation.names], ['ValidationFailed', ['db1.example.com']]);
});

test('the CA refusing the CSR or the account is permanent; unauthorized outside a challenge is not a failed validation', () => {
  const csr = failureOf(problemError({ type: 'urn:ietf:params:acme:error:badSignatureAlgorithm', detail: 'SHA-1 is not accepted' }, { status: 400, now }));
  assert.deepEqual([csr.reason, isPermanent(csr)], ['CsrRejected', true]);
  const account = failureOf(problemError({ type: 'urn:ietf:params:acme:error:unauthorized', detail: 'account is not active' }, { status: 403, now }));
  assert.deepEqual([account.reason, isPermanent(account)], ['AccountRefused', true]);
  assert.equal(failureOf(problemError({ type: 'urn:ietf:params:acme:error:unsupportedIdentifier' }, { now })).reason, 'IdentifierRejected');
});

test('chain and CSR findings are permanent by their code family; other codes and unknown errors are internal', () => {
  assert.equal(failureOf(new CertplaneError(ErrorCode.CHAIN_NO_PREFERRED_CHAIN, 'no offered chain fits')).reason, 'ChainUnsatisfied');
  assert.equal(failureOf(new CertplaneError(ErrorCode.CSR_BAD_SIGNATURE, 'bad')).reason, 'CsrRejected');
  assert.equal(failureOf(new Error('boom')).reason, 'Internal');
  assert.equal(failureOf(new CertplaneError(ErrorCode.STORE_QUERY_FAILED, 'x')).reason, 'Internal');
});

test('Retry-After as seconds or as an HTTP date', () => {
  assert.equal(retryAtOf('120', now)?.toISOString(), '2026-12-01T00:02:00.000Z');
  assert.equal(retryAtOf('Tue, 01 Dec 2026 06:00:00 GMT', now)?.toISOString(), '2026-12-01T06:00:00.000Z');
  assert.equal(retryAtOf('soon', now), undefined);
  assert.equal(retryAtOf(undefined, now), undefined);
});
