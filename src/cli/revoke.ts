/**
 * `certplane revoke`: asks a running management plane to revoke a certificate at the CA with
 * an RFC 5280 reason, and says which key signed: for keyCompromise the certificate's own key
 * through its agent, or the account key when the agent could not sign (and why).
 */
import { REVOCATION_REASON_NAMES } from '../lifecycle/index.js';
import { ExitCode, parse, usageError, type Io } from './args.js';
import { TLS_OPTIONS, TLS_USAGE, api, targetOf } from './reissue.js';

const USAGE = `usage: certplane revoke --server URL --certificate ID --reason ${REVOCATION_REASON_NAMES.join('|')} [--comment TEXT] [--no-reissue] [--actor NAME] [--json] ${TLS_USAGE}`;

export async function revoke(args: string[], io: Io): Promise<number> {
  const { values, positionals } = parse(
    args,
    { server: { type: 'string' }, certificate: { type: 'string' }, reason: { type: 'string' }, comment: { type: 'string' }, 'no-reissue': { type: 'boolean' }, actor: { type: 'string' }, json: { type: 'boolean' }, ...TLS_OPTIONS },
    USAGE,
  );
  if (positionals.length > 0 || !values.server || !values.certificate || !values.reason) throw usageError('--server, --certificate and --reason are required', USAGE);
  if (!(REVOCATION_REASON_NAMES as readonly string[]).includes(values.reason)) throw usageError(`--reason must be one of ${REVOCATION_REASON_NAMES.join(', ')}, not "${values.reason}"`, USAGE);
  const target = await targetOf(values, io.env, USAGE);
  const actor = values.actor ?? io.env.USER ?? undefined;
  const { body } = await api(target, 'POST', `/v1/certificates/${encodeURIComponent(values.certificate)}/revoke`, actor, {
    reason: values.reason,
    ...(values.comment ? { comment: values.comment } : {}),
    reissue: !values['no-reissue'],
  });
  if (values.json) {
    io.stdout.write(`${JSON.stringify(body, null, 2)}\n`);
    return ExitCode.OK;
  }
  const revocation = body.certificate.revocation;
  const fallback = revocation.certificateKeyUnavailable ? ` (the certificate key could not sign: ${revocation.certificateKeyUnavailable.code}: ${revocation.certificateKeyUnavailable.message})` : '';
  io.stdout.write(`certificate ${body.certificate.id} revoked (${revocation.reason}, code ${revocation.reasonCode}), signed by the ${revocation.signedBy}${fallback}\n`);
  io.stdout.write(body.reissue ? `replacement ${body.reissue.certificateId} requested (${body.reissue.status})\n` : 'no replacement requested\n');
  return ExitCode.OK;
}
