/**
 * The one spelling of a DNS name that ownership is decided on. Registration and the CSR
 * check must agree on it, or "B.example.com." in a CSR would slip past the owner of
 * "b.example.com"; so both go through this function.
 */
import { domainToASCII } from 'node:url';

/**
 * Lower case, without a trailing dot, internationalised labels in their ASCII (punycode)
 * form, a leading "*." kept. A name that IDNA refuses is only lower-cased and dotless: it
 * then matches nothing anyone registered, which is the safe answer.
 */
export function normaliseDnsName(name: string): string {
  const dotless = name.endsWith('.') ? name.slice(0, -1) : name;
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
