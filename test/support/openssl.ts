/**
 * CSRs made by the openssl command line, which still signs with SHA-1 and MD5 when asked:
 * the weak requests certplane must refuse, made for real rather than by editing bytes.
 */
import { execFileSync } from 'node:child_process';
import { scratch } from './cli.js';

export type OpensslKey = 'ecdsa-p256' | 'ecdsa-p384' | 'ecdsa-p521' | 'rsa-2048' | 'ed25519' | 'ecdsa-secp256k1' | 'ecdsa-p256-explicit' | 'rsa-2048-e3';

const GENPKEY: Record<OpensslKey, string[]> = {
  'ecdsa-p256': ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'],
  'ecdsa-p384': ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-384'],
  'ecdsa-p521': ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-521'],
  'rsa-2048': ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048'],
  ed25519: ['-algorithm', 'ED25519'],
  // Keys WebCrypto does not take, or that certplane checks off the event loop: a curve
  // outside P-256/384/521, P-256 spelled out as explicit parameters, an RSA exponent of 3.
  'ecdsa-secp256k1': ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:secp256k1'],
  'ecdsa-p256-explicit': ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-pkeyopt', 'ec_param_enc:explicit'],
  'rsa-2048-e3': ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-pkeyopt', 'rsa_keygen_pubexp:3'],
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

/**
 * `openssl verify` of a fullchain (leaf first, then intermediates) against the roots in
 * `rootsPem` only: what a client holding exactly that store concludes, judged by OpenSSL
 * rather than by certplane's own engine. `ok` when it printed "OK"; `output` says why not.
 */
export async function opensslVerify(fullchainPem: string, rootsPem: string): Promise<{ ok: boolean; output: string }> {
  const blocks = fullchainPem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  const dir = await scratch('certplane-openssl-verify-');
  try {
    await dir.write('roots.pem', rootsPem);
    await dir.write('leaf.pem', `${blocks[0] ?? ''}\n`);
    await dir.write('untrusted.pem', `${blocks.slice(1).join('\n')}\n`);
    const args = ['verify', '-CAfile', dir.path('roots.pem'), ...(blocks.length > 1 ? ['-untrusted', dir.path('untrusted.pem')] : []), dir.path('leaf.pem')];
    try {
      const output = execFileSync('openssl', args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
      return { ok: /: OK\s*$/.test(output), output };
    } catch (error) {
      const failed = error as { stdout?: Buffer; stderr?: Buffer };
      return { ok: false, output: `${failed.stdout?.toString() ?? ''}${failed.stderr?.toString() ?? ''}` };
    }
  } finally {
    await dir.remove();
  }
}
