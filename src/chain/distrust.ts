/**
 * Keys that no certificate certplane delivers may chain to, whatever a trust store says.
 * Identified by SPKI SHA-256 rather than by name, because a name match is exactly the
 * mistake this project exists to avoid.
 */

/**
 * DST Root CA X3 (IdenTrust), expired 30 September 2021 and removed from trust stores;
 * Let's Encrypt's long default chain led to it through the ISRG Root X1 cross-sign.
 * sha256/Vjs8r4z+80wjNcr1YKepWQboSIRi63WsWXhIMN+eWys= in HPKP notation.
 */
export const DST_ROOT_CA_X3_SPKI_SHA256 = '563b3caf8cfef34c2335caf560a7a95906e8488462eb75ac59784830df9e5b2b';

/** The built-in distrust list; configuration may add to it. */
export const DEFAULT_DISTRUSTED_SPKI_SHA256: readonly string[] = [DST_ROOT_CA_X3_SPKI_SHA256];

/** Accepts hex (with or without colons) or base64 "sha256/..." pins and returns lowercase hex, or undefined if neither. */
export function normalizeSpkiPin(pin: string): string | undefined {
  const trimmed = pin.trim().replace(/^sha256[:/]/i, '');
  const hex = trimmed.replace(/:/g, '').toLowerCase();
  if (/^[0-9a-f]{64}$/.test(hex)) return hex;
  const bytes = Buffer.from(trimmed, 'base64');
  return bytes.length === 32 && /^[A-Za-z0-9+/]{43}=$/.test(trimmed) ? bytes.toString('hex') : undefined;
}
