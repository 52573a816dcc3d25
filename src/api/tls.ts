/**
 * The listener's own certificate, replaced while the process runs: new handshakes get the
 * new certificate, connections already open (agents' channels) keep theirs. With clients
 * that trust both the old and the new issuer (a CA bundle), the service's certificate is
 * rotated node by node without a restart and without dropping a connection.
 */
import type { Server } from 'node:https';
import { createSecureContext } from 'node:tls';
import { parseCertificateBundle } from '../chain/index.js';
import { CertplaneError } from '../errors.js';
import { ErrorCode } from '../error-catalogue.js';

export interface TlsPair {
  readonly certPem: string;
  readonly keyPem: string;
}

export interface ServerIdentity {
  readonly fingerprintSha256: string;
  readonly subject: string;
  readonly notAfter: Date;
}

/**
 * What the listener would serve: refuses garbage and a key that does not match, and (with
 * `requireValid`, for a replacement) a certificate outside its validity at `now`. At start
 * an expired certificate is served anyway, so that the process, and its admin socket,
 * come up in the very incident this is for.
 */
export function checkServerCertificate(pair: TlsPair, now: Date, requireValid = true): { readonly identity: ServerIdentity; readonly validNow: boolean } {
  let leaf;
  try {
    [leaf] = parseCertificateBundle(pair.certPem, 'server certificate');
  } catch (error) {
    throw new CertplaneError(ErrorCode.TLS_RELOAD_FAILED, `the server certificate is unusable: ${(error as Error).message}`);
  }
  if (!leaf) throw new CertplaneError(ErrorCode.TLS_RELOAD_FAILED, 'the server certificate file holds no certificate');
  const validNow = now <= leaf.notAfter && now >= leaf.notBefore;
  if (requireValid && !validNow) {
    throw new CertplaneError(ErrorCode.TLS_RELOAD_FAILED, `the server certificate "${leaf.subjectCN}" is valid from ${leaf.notBefore.toISOString()} to ${leaf.notAfter.toISOString()}, not now`);
  }
  try {
    // Node refuses a key that does not belong to the certificate here, before anything is served.
    createSecureContext({ cert: pair.certPem, key: pair.keyPem });
  } catch (error) {
    throw new CertplaneError(ErrorCode.TLS_RELOAD_FAILED, `the server certificate and key do not make a TLS identity: ${(error as Error).message}`);
  }
  return { identity: { fingerprintSha256: leaf.fingerprintSha256, subject: leaf.subject, notAfter: leaf.notAfter }, validNow };
}

/** How to replace the listener's certificate with what `read` returns. */
export interface ServerCertificate {
  /** Checks the new pair, then makes it the listener's for every new handshake. On any refusal the current certificate stays. */
  reload(): Promise<{ readonly previous: ServerIdentity; readonly current: ServerIdentity }>;
}

export function serverCertificate(server: Server, initial: ServerIdentity, read: () => Promise<TlsPair>, clock: () => Date): ServerCertificate {
  let current = initial;
  return {
    async reload() {
      const pair = await read();
      const { identity } = checkServerCertificate(pair, clock());
      server.setSecureContext({ cert: pair.certPem, key: pair.keyPem });
      const previous = current;
      current = identity;
      return { previous, current };
    },
  };
}
