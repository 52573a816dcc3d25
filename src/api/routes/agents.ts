/**
 * Enrollment: the only agent route that is plain HTTP; everything else is on the channel.
 * It needs no client certificate (the one-time token is the credential), so failed
 * attempts are rate-limited per remote address: guessing tokens costs time, while a fleet
 * enrolling legitimately behind one NAT address is never slowed down.
 */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { enrollAgent } from '../../agents/enrollment.js';
import { CertplaneError } from '../../errors.js';
import type { ApiDependencies } from '../app.js';
import { EnrollRequest, EnrollResponse, Problem } from '../schemas.js';

/** Failed enrollments a remote address may make at once, and how fast its allowance comes back. */
export const ENROLLMENT_BURST = 10;
export const ENROLLMENT_REFILL_PER_SECOND = 1 / 6;
/** Addresses remembered; the oldest are forgotten first, so memory stays bounded under a flood. */
const MAX_TRACKED_ADDRESSES = 10_000;

export function agentRoutes(deps: ApiDependencies): FastifyPluginAsyncZod {
  const buckets = new Map<string, { tokens: number; at: number }>();
  /** The address's allowance now, refilled; `spend` takes one failure from it. */
  const allowance = (address: string, spend: boolean): number => {
    const now = deps.clock().getTime();
    const bucket = buckets.get(address) ?? { tokens: ENROLLMENT_BURST, at: now };
    const tokens = Math.min(ENROLLMENT_BURST, bucket.tokens + ((now - bucket.at) / 1000) * ENROLLMENT_REFILL_PER_SECOND);
    buckets.delete(address);
    buckets.set(address, { tokens: spend ? Math.max(0, tokens - 1) : tokens, at: now });
    if (buckets.size > MAX_TRACKED_ADDRESSES) buckets.delete(buckets.keys().next().value as string);
    return tokens;
  };
  return async (app) => {
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
        if (allowance(request.ip, false) < 1) throw new CertplaneError('ENROLLMENT_RATE_LIMITED', `too many failed enrollments from ${request.ip}; wait a few seconds`);
        const enrolled = await enrollAgent(deps, request.body.token, request.body.csrPem, deps.clock()).catch((error: unknown) => {
          allowance(request.ip, true);
          throw error;
        });
        const { instanceId, certificatePem, caPem, fingerprintSha256 } = enrolled;
        await deps.store.audit.record({ actor: `agent enrollment from ${request.ip}`, action: 'agent.enroll', target: instanceId, reason: null, details: { fingerprintSha256 } });
        return reply.status(201).send({ instanceId, certificatePem, caPem, ...(deps.publicUrl ? { server: deps.publicUrl } : {}) });
      },
    );
  };
}
