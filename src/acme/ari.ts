/**
 * ACME Renewal Information (RFC 9773): the CA, not a fixed fraction of the lifetime,
 * says when a certificate should be replaced. Let's Encrypt used it in May 2026 to ask
 * for early replacement after the Generation Y serverAuth fault; a client that only
 * counts days would have kept serving the affected certificates. Everything here is
 * pure; the HTTP request lives in the issuer.
 */
import { z } from 'zod';
import { authorityKeyIdentifier, parseCertificateBundle } from '../chain/index.js';
import { CertplaneError } from '../errors.js';
import { ErrorCode } from '../error-catalogue.js';

/** The CA's suggested renewal window and when to ask again, as RFC 9773 section 4.2 describes them. */
export interface RenewalInfo {
  readonly windowStart: Date;
  readonly windowEnd: Date;
  /** A page for people explaining why the window moved (an incident), when the CA gives one. */
  readonly explanationUrl?: string;
  /** When to fetch the renewal information again (Retry-After, defaulted and clamped). */
  readonly retryAt: Date;
}

/** RFC 9773 section 4.3: six hours when the CA gives no usable Retry-After (a "long-term error"). */
export const DEFAULT_RETRY_MS = 6 * 60 * 60 * 1000;
/** RFC 9773 section 4.3: treat shorter intervals as one minute, so a CA's typo cannot make us hammer it. */
export const MIN_RETRY_MS = 60 * 1000;
/** RFC 9773 section 4.3: treat longer intervals as one day, so an incident window is seen within a day. */
export const MAX_RETRY_MS = 24 * 60 * 60 * 1000;

const base64url = (bytes: Uint8Array): string => Buffer.from(bytes).toString('base64url');

/**
 * The RFC 9773 section 4.1 identifier of the first certificate in `leafPem` (a leaf or a
 * full chain): base64url(AKI keyIdentifier) "." base64url(serial INTEGER content octets).
 * It names the certificate both in the renewalInfo URL and in newOrder's `replaces`.
 */
export function ariCertId(leafPem: string): string {
  const [leaf] = parseCertificateBundle(leafPem, 'certificate for ARI');
  const keyId = authorityKeyIdentifier(leaf!);
  if (!keyId) {
    throw new CertplaneError(ErrorCode.ARI_NO_AKI, `certificate ${leaf!.serialNumber} (${leaf!.subject}) has no Authority Key Identifier key identifier, so it has no ARI certID`, {
      serialNumber: leaf!.serialNumber,
    });
  }
  // The parsed serial is the INTEGER's content octets as encoded (hex), leading 0x00 included,
  // as RFC 9773 wants them (its own example is 0x0087654321).
  return `${base64url(keyId)}.${base64url(Buffer.from(leaf!.serialNumber, 'hex'))}`;
}

const RenewalInfoBody = z.object({
  suggestedWindow: z.object({
    start: z.iso.datetime({ offset: true }),
    end: z.iso.datetime({ offset: true }),
  }),
  // Only a link for people: a malformed one must not cost us the window it explains.
  explanationURL: z.url().optional().catch(undefined),
});

/**
 * Validates a renewalInfo response body and turns its Retry-After header (seconds or an
 * HTTP date) into the next time to ask: six hours when absent or unreadable, and never
 * sooner than a minute nor later than a day from `now`.
 */
export function parseRenewalInfo(json: unknown, retryAfterHeader: string | undefined, now: Date): RenewalInfo {
  const parsed = RenewalInfoBody.safeParse(json);
  if (!parsed.success) {
    throw new CertplaneError(ErrorCode.ARI_INVALID, `the CA's renewal information is malformed: ${z.prettifyError(parsed.error)}`, {
      issues: parsed.error.issues.map((issue) => ({ path: issue.path.join('.'), message: issue.message })),
    });
  }
  const { suggestedWindow, explanationURL } = parsed.data;
  const windowStart = new Date(suggestedWindow.start);
  const windowEnd = new Date(suggestedWindow.end);
  if (windowEnd.getTime() <= windowStart.getTime()) {
    throw new CertplaneError(ErrorCode.ARI_INVALID, `the CA's suggested renewal window ends (${suggestedWindow.end}) before it starts (${suggestedWindow.start})`, {
      start: suggestedWindow.start,
      end: suggestedWindow.end,
    });
  }
  const delayMs = Math.min(MAX_RETRY_MS, Math.max(MIN_RETRY_MS, retryDelayMs(retryAfterHeader, now) ?? DEFAULT_RETRY_MS));
  return { windowStart, windowEnd, ...(explanationURL ? { explanationUrl: explanationURL } : {}), retryAt: new Date(now.getTime() + delayMs) };
}

/** RFC 9110's preferred HTTP-date (IMF-fixdate), what CAs send; Date.parse alone would read "-5" as a year. */
const IMF_FIXDATE = /^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} GMT$/;

/** Retry-After (RFC 9110 section 10.2.3) as a delay from `now`, or undefined when it says nothing usable. */
function retryDelayMs(header: string | undefined, now: Date): number | undefined {
  const value = header?.trim() ?? '';
  if (/^\d+$/.test(value)) return Number(value) * 1000;
  const at = IMF_FIXDATE.test(value) ? Date.parse(value) : Number.NaN;
  return Number.isNaN(at) ? undefined : at - now.getTime();
}

/**
 * When to renew inside the CA's window. Uniformly random so a fleet does not renew in one
 * burst (RFC 9773 section 4.2); a window that has already ended means "now" (the CA asks
 * for immediate replacement, as after an incident); a window that has begun is drawn from
 * what is left of it.
 */
export function chooseRenewalTime(window: Pick<RenewalInfo, 'windowStart' | 'windowEnd'>, now: Date, random: () => number = Math.random): Date {
  const end = window.windowEnd.getTime();
  if (end <= now.getTime()) return new Date(now.getTime());
  const from = Math.max(window.windowStart.getTime(), now.getTime());
  return new Date(from + Math.floor(random() * (end - from)));
}
