/**
 * What a failed connection to the plane means, in the words of the fix: Node says
 * "socket hang up" when http:// meets the TLS port and "unable to verify the first
 * certificate" when --server-ca is missing, neither of which tells an operator what to do.
 * Decided by the error's code, never by its message.
 */
import { CertplaneError } from '../errors.js';
import { ErrorCode } from '../error-catalogue.js';

const UNTRUSTED = new Set(['UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'SELF_SIGNED_CERT_IN_CHAIN', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'UNABLE_TO_GET_ISSUER_CERT', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'CERT_UNTRUSTED']);
const UNREACHABLE = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT']);
const NOT_TLS = new Set(['EPROTO', 'ERR_SSL_WRONG_VERSION_NUMBER', 'ERR_SSL_PACKET_LENGTH_TOO_LONG']);

/** A CertplaneError naming the fix, or undefined when the failure is none of the known mistakes. */
export function explainConnectError(error: unknown, server: URL, options: { serverCaGiven: boolean }): CertplaneError | undefined {
  const code = typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'string' ? error.code : undefined;
  if (code === undefined) return undefined;
  const secure = server.protocol === 'https:' || server.protocol === 'wss:';
  const origin = `${secure ? 'https' : 'http'}://${server.host}`;
  const details = { server: origin, cause: code };
  const make = (errorCode: ErrorCode, message: string) => new CertplaneError(errorCode, message, details, { cause: error });
  if (!secure && code === 'ECONNRESET') {
    return make(ErrorCode.AGENT_SERVER_SPEAKS_TLS, `${origin} closed the connection at once, which is what a TLS port does to plain HTTP: use --server https://${server.host} (the plane serves HTTPS unless it runs with CERTPLANE_INSECURE_HTTP=1).`);
  }
  if (secure && NOT_TLS.has(code)) {
    return make(ErrorCode.AGENT_SERVER_NOT_TLS, `${origin} does not speak TLS (${code}): the plane may run with CERTPLANE_INSECURE_HTTP=1 for development; use --server http://${server.host} only on that machine, or point --server at the plane's HTTPS listener.`);
  }
  if (UNTRUSTED.has(code)) {
    return make(
      ErrorCode.AGENT_SERVER_UNTRUSTED,
      options.serverCaGiven
        ? `The plane's certificate at ${origin} is not signed by the CA in --server-ca (${code}): give --server-ca the CA certificate that issued the plane's listener certificate.`
        : `The plane's certificate at ${origin} is not signed by a CA this instance trusts (${code}): pass --server-ca with the CA certificate (PEM) that issued the plane's listener certificate.`,
    );
  }
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    return make(ErrorCode.AGENT_SERVER_NAME_MISMATCH, `The plane's certificate does not name ${server.hostname}: use the host name its certificate was issued for in --server.`);
  }
  if (UNREACHABLE.has(code)) {
    return make(ErrorCode.AGENT_SERVER_UNREACHABLE, `Cannot reach ${origin} (${code}): check the host name and port in --server, and that the instance may open TCP connections to it.`);
  }
  return undefined;
}
