/**
 * Enrollment: the only agent route that is plain HTTP; everything else is on the channel.
 * It needs no client certificate (the one-time token is the credential), so failed
 * attempts are limited per remote address. Only wrong tokens count as failures, and a
 * valid token is accepted whatever its address has failed before: a correct token is not
 * a guess, and a fleet enrolling behind one NAT address must not be locked out by one
 * broken or hostile neighbour.
 */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { enrollAgent } from '../../fleet/enrollment.js';
import type { AgentCa } from '../../fleet/ca.js';
import { CertplaneError, hasCode } from '../../errors.js';
import type { Store } from '../../store/types.js';
import { EnrollRequest, EnrollResponse, Problem } from '../schemas.js';
import { ErrorCode } from '../../error-catalogue.js';

/** Failed enrollments a remote address may make at once, and how fast its allowance comes back. */
export const ENROLLMENT_BURST = 10;
export const ENROLLMENT_REFILL_PER_SECOND = 1 / 6;
/** Addresses remembered; the oldest are forgotten first, so memory stays bounded under a flood. */
const MAX_TRACKED_ADDRESSES = 10_000;

/**
 * Per-address token buckets of failures. A request reserves its failure before it looks at
 * the token, synchronously (no await between reading and taking the allowance), so any
 * number of concurrent requests from one address is evaluated against the burst as a
 * whole; a request that turns out not to have failed gives its reservation back.
 */
function failureAllowance(clock: () => Date) {
  const buckets = new Map<string, { tokens: number; at: number }>();
  const update = (address: string, change: (tokens: number) => number): void => {
    const now = clock().getTime();
    const bucket = buckets.get(address) ?? { tokens: ENROLLMENT_BURST, at: now };
    const refilled = Math.min(ENROLLMENT_BURST, bucket.tokens + ((now - bucket.at) / 1000) * ENROLLMENT_REFILL_PER_SECOND);
    buckets.delete(address);
    buckets.set(address, { tokens: change(refilled), at: now });
    if (buckets.size > MAX_TRACKED_ADDRESSES) buckets.delete(buckets.keys().next().value as string);
  };
  return {
    /** Takes one failure from the address's allowance; false (and nothing taken) when none is left. */
    reserve(address: string): boolean {
      let reserved = false;
      update(address, (tokens) => {
        reserved = tokens >= 1;
        return reserved ? tokens - 1 : tokens;
      });
      return reserved;
    },
    /** Gives back a reservation that did not turn into a failure. */
    refund(address: string): void {
      update(address, (tokens) => Math.min(ENROLLMENT_BURST, tokens + 1));
    },
  };
}

/** What enrollment uses: the tokens, the agent CA, the audit trail, and the URL agents are told to use. */
export interface AgentRouteOptions {
  readonly store: Pick<Store, 'enrollmentTokens' | 'agentCertificates' | 'audit'>;
  readonly ca: Pick<AgentCa, 'issue' | 'certificatePem'>;
  readonly clock: () => Date;
  readonly publicUrl?: string | undefined;
}

export const agentRoutes: FastifyPluginAsyncZod<AgentRouteOptions> = async (app, deps) => {
  const failures = failureAllowance(deps.clock);
  app.post(
    '/v1/agents/enroll',
    {
      schema: {
        summary: 'Exchange a one-time token and an identity CSR for an agent certificate',
        tags: ['agents'],
        security: [],
        body: EnrollRequest,
        response: { 201: EnrollResponse, 400: Problem, 401: Problem, 429: Problem },
      },
    },
    async (request, reply) => {
      // Over the allowance the token is still looked up (one hash, one indexed read, no CSR
      // work), so a valid token enrolls; a wrong one is answered 429 instead of 401.
      const reserved = failures.reserve(request.ip);
      const enrolled = await enrollAgent(deps, request.body.token, request.body.csrPem, deps.clock()).catch((error: unknown) => {
        const wrongToken = hasCode(error, ErrorCode.ENROLLMENT_TOKEN_INVALID);
        if (reserved && !wrongToken) failures.refund(request.ip);
        if (!reserved && wrongToken) throw new CertplaneError(ErrorCode.ENROLLMENT_RATE_LIMITED, `too many failed enrollments from ${request.ip}; wait a few seconds`);
        throw error;
      });
      if (reserved) failures.refund(request.ip);
      const { instanceId, certificatePem, caPem, fingerprintSha256 } = enrolled;
      await deps.store.audit.record({ actor: `agent enrollment from ${request.ip}`, action: 'agent.enroll', target: instanceId, reason: null, details: { fingerprintSha256 } });
      return reply.status(201).send({ instanceId, certificatePem, caPem, ...(deps.publicUrl ? { server: deps.publicUrl } : {}) });
    },
  );
};
