/**
 * The one spelling of a name that ownership is decided on, and the one check of what may be
 * registered. Registration (create and change) and the CSR check must agree on it, or
 * "B.example.com." in a CSR would slip past the owner of "b.example.com"; so all of them go
 * through these functions.
 */
import { isIP } from 'node:net';
import { domainToASCII } from 'node:url';

/**
 * Lower case, without a trailing dot, internationalised labels in their ASCII (punycode)
 * form, a leading "*." kept. A name that IDNA refuses is only lower-cased and dotless: it
 * then matches nothing anyone registered, which is the safe answer.
 */
export function normaliseDnsName(name: string): string {
  const dotless = name.endsWith('.') ? name.slice(0, -1) : name;
  const ip = ipAddress(dotless);
  if (ip !== undefined) return ip;
  const wildcard = dotless.startsWith('*.');
  const base = wildcard ? dotless.slice(2) : dotless;
  const ascii = domainToASCII(base) || base.toLowerCase();
  return wildcard ? `*.${ascii}` : ascii;
}

/**
 * What a name can be confused with: the domain one label up, shared by a wildcard and every
 * name it covers ("*.example.com" and "b.example.com" both give "example.com").
 */
export function coveringParent(normalisedName: string): { readonly parent: string; readonly wildcard: boolean } {
  const wildcard = normalisedName.startsWith('*.');
  return { parent: normalisedName.slice(normalisedName.indexOf('.') + 1), wildcard };
}

/** A name an instance may register, as stored: a DNS name (maybe a wildcard) or an IP address. */
export interface CheckedHostname {
  readonly name: string;
  /** The ACME identifier type an order needs for it (RFC 8555 `dns`, RFC 8738 `ip`). */
  readonly type: 'dns' | 'ip';
}

/** The longest DNS name (RFC 1035), in its ASCII form, without the trailing dot. */
export const MAX_DNS_NAME_LENGTH = 253;
const LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
/** Characters that are never part of a host name, and that the URL parser behind IDNA would silently cut at or drop. */
const NOT_IN_A_NAME = /[\s\p{Cc}/\\?#@:%[\]<>^|"'`{},;=+!$&()~]/u;

/**
 * Checks and normalises one name someone wants certificates for: the rules the CA applies,
 * so that a typo is refused when it is registered instead of failing at order time. A DNS
 * name is lower-cased, loses one trailing dot, and has its internationalised labels turned
 * into A-labels (IDNA, node:url's domainToASCII); it then needs two labels or more of 1-63
 * letters, digits and inner hyphens, 253 characters at most, and a top-level label that is
 * not all digits (that would be an IP address spelt oddly). A wildcard is one leftmost "*."
 * over a name of two labels or more: the CA issues "*.example.com", never "*.com",
 * "a.*.example.com" or "a*.example.com". An IPv4 or IPv6 address comes back in its
 * canonical form; whether the instance may have one is its profile's business
 * (acme/identifiers.ts). Returns the problem, in words, when the name is refused.
 */
export function checkHostname(raw: string): CheckedHostname | { readonly problem: string } {
  const refused = (why: string) => ({ problem: `"${raw}" ${why}` });
  const dotless = raw.endsWith('.') ? raw.slice(0, -1) : raw;
  if (dotless.length === 0) return refused('is empty');
  const ip = ipAddress(dotless);
  if (ip !== undefined) return { name: ip, type: 'ip' };
  if (NOT_IN_A_NAME.test(dotless)) return refused('has a character that is not allowed in a DNS name (letters, digits, hyphens and dots only)');
  const wildcard = dotless.startsWith('*.');
  const base = wildcard ? dotless.slice(2) : dotless;
  if (base.includes('*')) return refused('has a wildcard that is not the whole leftmost label ("*.example.com" is the only form the CA issues)');
  const rawLabels = base.split('.');
  if (rawLabels.some((label) => label.length === 0)) return refused('has an empty label (two dots in a row, or a leading dot)');
  if (/^(0x[0-9a-f]*|[0-9]+)$/i.test(rawLabels.at(-1)!)) return refused('ends in an all-numeric label; an IP address must be written as one (e.g. 192.0.2.1)');
  const ascii = domainToASCII(base);
  if (!ascii) return refused('is not a valid internationalised domain name (IDNA refuses it)');
  const labels = ascii.split('.');
  const bad = labels.find((label) => !LABEL.test(label));
  if (bad !== undefined) return refused(`has the label "${bad}": a label is 1 to 63 letters, digits and hyphens, not starting or ending with a hyphen`);
  if (labels.length < 2) return refused(wildcard ? 'is a wildcard over a single label, which the CA never issues' : 'is a single label; the CA issues only for names with a registered domain (e.g. db1.example.com)');
  const name = wildcard ? `*.${ascii}` : ascii;
  if (name.length > MAX_DNS_NAME_LENGTH) return refused(`is ${name.length} characters long in its ASCII form, more than the ${MAX_DNS_NAME_LENGTH} a DNS name may have`);
  return { name, type: 'dns' };
}

/** The canonical spelling of an IP address (IPv6 compressed and lower-case), or undefined for anything else. */
export function ipAddress(text: string): string | undefined {
  const version = isIP(text);
  if (version === 4) return text;
  // A zone index ("fe80::1%eth0") names an interface of one machine, never a certificate's address.
  if (version === 6 && !text.includes('%')) return new URL(`http://[${text}]`).hostname.slice(1, -1);
  return undefined;
}
