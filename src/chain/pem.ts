/**
 * Reads PEM bundles. Strict on purpose: a bundle that holds anything but certificates
 * (a private key pasted by mistake, a truncated block, prose) is refused with a code,
 * because a silently skipped block is how a chain ends up shorter than intended.
 */
import { CertplaneError } from '../errors.js';
import { carriesPrivateKey, isPrivateKeyLabel } from '../untrusted-text.js';
import { parseCertificateDer, parseCertificateDerUnmemoised, type Certificate } from './certificate.js';
import { ErrorCode } from '../error-catalogue.js';

const BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n([\s\S]*?)\r?\n?-----END \1-----/g;
const BASE64 = /^[A-Za-z0-9+/=\r\n\t ]*$/;

/** One PEM block: its label and the DER bytes it carries. */
export interface PemBlock {
  readonly label: string;
  readonly der: Buffer;
}

/**
 * Splits PEM text into blocks. Text between blocks must be blank (comments such as
 * "# ISRG Root X1" lines, as in distribution trust stores, are allowed); anything else is garbage.
 */
export function parsePemBlocks(text: string, source = 'input'): PemBlock[] {
  return pemBlockTexts(text, source).map(({ label, body }) => ({ label, der: derOf(body) }));
}

/** A block's label and its base64 body as written. */
interface PemBlockText {
  readonly label: string;
  readonly body: string;
}

/** The blocks of `text`, checked as parsePemBlocks describes; `known` bodies were checked before and skip the base64 test. */
function pemBlockTexts(text: string, source: string, known?: (body: string) => boolean): PemBlockText[] {
  const blocks: PemBlockText[] = [];
  let cursor = 0;
  for (const match of text.matchAll(BLOCK)) {
    assertOnlyCommentsBetween(text.slice(cursor, match.index), source);
    const label = match[1] ?? '';
    const body = match[2] ?? '';
    if (!known?.(body) && !BASE64.test(body)) {
      throw new CertplaneError(ErrorCode.CHAIN_GARBAGE, `${source}: the ${label} block is not base64`, { source, label });
    }
    blocks.push({ label, body });
    cursor = (match.index ?? 0) + match[0].length;
  }
  assertOnlyCommentsBetween(text.slice(cursor), source);
  return blocks;
}

/** Node's base64 decoder skips whitespace, so the body decodes as written. */
const derOf = (body: string): Buffer => Buffer.from(body, 'base64');

function assertOnlyCommentsBetween(gap: string, source: string): void {
  for (const line of gap.split(/\r?\n/)) {
    const trimmed = line.trim();
    if (trimmed === '' || trimmed.startsWith('#')) continue;
    const hint = trimmed.includes('-----BEGIN') ? ' (a PEM block without its END line?)' : '';
    // A private key that is not a well-formed block (on one line, say) is named, never quoted.
    const excerpt = carriesPrivateKey(gap) ? 'private-key material, not shown' : `"${trimmed.slice(0, 40)}"`;
    throw new CertplaneError(ErrorCode.CHAIN_GARBAGE, `${source}: unexpected text outside PEM blocks${hint}: ${excerpt}`, {
      source,
    });
  }
}

/**
 * Parses a bundle of certificates. Refuses an empty bundle, private keys, non-certificate
 * blocks and certificates that do not parse; keeps the order given, since order is
 * something the verifier reports on.
 */
export function parseCertificateBundle(text: string, source = 'bundle'): Certificate[] {
  return certificatesOf(pemBlockTexts(text, source), source, (body, index) => parseOne(derOf(body), source, index, parseCertificateDer));
}

/**
 * A parse memo for one piece of work over a whole fleet (a what-if, a trust reload): every
 * distinct PEM block is decoded and parsed once, however many stored chains repeat it (the
 * intermediates of every chain, the leaf of each of a certificate's chains), and the memo
 * is dropped with the scope. The global memo is bounded for the requests of a running
 * plane; a fleet has more distinct leaves than it holds, and sweeping them through it
 * re-parsed every leaf and evicted everything else.
 */
export interface CertificateScope {
  /** parseCertificateBundle, with this scope's memo. */
  bundle(text: string, source?: string): Certificate[];
}

/**
 * The plane's own bounded memo as a scope, for work on a few certificates: an
 * installation's judgement finds there the intermediates every chain shares and the leaf the
 * issuer parsed moments before, with their signature verdicts, where a scope of its own
 * parsed all of them again (about 1.8 ms of the plane's CPU per installation, measured in a
 * campaign of 1,000 on 2026-12-04).
 */
export const sharedCertificateScope: CertificateScope = { bundle: parseCertificateBundle };

export function createCertificateScope(): CertificateScope {
  const parsed = new Map<string, Certificate>();
  return {
    bundle(text, source = 'bundle') {
      const blocks = pemBlockTexts(text, source, (body) => parsed.has(body));
      return certificatesOf(blocks, source, (body, index) => {
        let certificate = parsed.get(body);
        if (!certificate) parsed.set(body, (certificate = parseOne(derOf(body), source, index, parseCertificateDerUnmemoised)));
        return certificate;
      });
    },
  };
}

function certificatesOf(blocks: readonly PemBlockText[], source: string, parse: (body: string, index: number) => Certificate): Certificate[] {
  const certificates: Certificate[] = [];
  for (const [index, block] of blocks.entries()) {
    if (isPrivateKeyLabel(block.label)) {
      throw new CertplaneError(
        ErrorCode.CHAIN_PRIVATE_KEY_IN_BUNDLE,
        `${source}: block ${index + 1} is a private key (${block.label}); a certificate bundle must carry only certificates, and private keys never travel`,
        { source, block: index },
      );
    }
    if (block.label !== 'CERTIFICATE') {
      throw new CertplaneError(ErrorCode.CHAIN_GARBAGE, `${source}: block ${index + 1} is a ${block.label}, expected CERTIFICATE`, {
        source,
        block: index,
      });
    }
    certificates.push(parse(block.body, index));
  }
  if (certificates.length === 0) {
    throw new CertplaneError(ErrorCode.CHAIN_EMPTY, `${source}: no certificate found (expected PEM "-----BEGIN CERTIFICATE-----" blocks)`, {
      source,
    });
  }
  return certificates;
}

function parseOne(der: Buffer, source: string, index: number, parse: (der: Buffer) => Certificate): Certificate {
  try {
    return parse(der);
  } catch (cause) {
    throw new CertplaneError(
      ErrorCode.CHAIN_UNPARSABLE_CERTIFICATE,
      `${source}: certificate ${index + 1} is not a valid X.509 certificate (${(cause as Error).message})`,
      { source, block: index },
      { cause },
    );
  }
}
