/** Public chains and their verification reports; never anything private. Revocation at the CA. */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import type { Revocations } from '../../fleet/revocation.js';
import type { Store } from '../../store/types.js';
import { findInScope, type Caller } from '../auth.js';
import { Certificate, IdParams, Problem, RevocationResult, RevokeCertificate } from '../schemas.js';
import { certificateView } from './views.js';

/** What the certificate routes use: certificates and their instances (for the caller's scope), and revocation. */
export interface CertificateRouteOptions {
  readonly store: Pick<Store, 'certificates' | 'instances'>;
  readonly revocations: Pick<Revocations, 'revoke'>;
}

export const certificateRoutes: FastifyPluginAsyncZod<CertificateRouteOptions> = async (app, deps) => {
  const inScope = async (id: string, caller: Caller | undefined) =>
    findInScope(caller, `certificate ${id}`, await deps.store.certificates.get(id), async (c) => {
      const instance = await deps.store.instances.get(c.instanceId);
      return instance && [instance.cluster];
    });

  app.get(
    '/v1/certificates/:id',
    { config: { permission: 'read' }, schema: { summary: 'The public chain of a certificate and its verification report', tags: ['certificates'], params: IdParams, response: { 200: Certificate, 401: Problem, 403: Problem, 404: Problem } } },
    async (request) => certificateView(await inScope(request.params.id, request.caller)),
  );

  app.post(
    '/v1/certificates/:id/revoke',
    {
      config: { permission: 'operate' },
      schema: {
        summary:
          "Revoke a certificate at the CA (RFC 8555 §7.6) with an RFC 5280 reason; keyCompromise is signed by the certificate's own key through its agent, or by the account key when the agent cannot sign (revocation.signedBy says which). The installed certificate of an instance in service is replaced unless reissue is false.",
        tags: ['certificates'],
        params: IdParams,
        body: RevokeCertificate,
        response: { 200: RevocationResult, 400: Problem, 401: Problem, 403: Problem, 404: Problem, 409: Problem, 429: Problem, 502: Problem, 503: Problem },
      },
    },
    async (request) => {
      const certificate = await inScope(request.params.id, request.caller);
      const { reason, comment, reissue } = request.body;
      const outcome = await deps.revocations.revoke(certificate, { reason, comment: comment ?? null, requestedBy: request.caller?.actor ?? 'unknown', reissue });
      return { certificate: certificateView(outcome.certificate), reissue: outcome.reissue && { certificateId: outcome.reissue.id, status: outcome.reissue.status } };
    },
  );
};
