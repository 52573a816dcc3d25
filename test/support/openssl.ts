/**
 * CSRs made by the openssl command line, which still signs with SHA-1 and MD5 when asked:
 * the weak requests certplane must refuse, made for real rather than by editing bytes.
 */
import { execFileSync } from 'node:child_process';
import { scratch } from './cli.js';

export type OpensslKey = 'ecdsa-p256' | 'rsa-2048' | 'ed25519';

const GENPKEY: Record<OpensslKey, string[]> = {
  'ecdsa-p256': ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'],
  'rsa-2048': ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048'],
  ed25519: ['-algorithm', 'ED25519'],
};

/** A PEM CSR for `names` (the first also the CN) over a fresh key, signed with `digest` (`sha1`, `md5`, `sha256`...; none for Ed25519). */
export async function opensslCsr(key: OpensslKey, digest: string | undefined, names: readonly string[]): Promise<string> {
  const dir = await scratch('certplane-openssl-');
  try {
    const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir.path('.'), stdio: ['ignore', 'pipe', 'pipe'] }).toString();
    openssl('genpkey', ...GENPKEY[key], '-out', 'request.key');
    const san = names.map((name) => `DNS:${name}`).join(',');
    return openssl('req', '-new', '-key', 'request.key', '-subj', `/CN=${names[0]}`, '-addext', `subjectAltName=${san}`, ...(digest ? [`-${digest}`] : []));
  } finally {
    await dir.remove();
  }
}
