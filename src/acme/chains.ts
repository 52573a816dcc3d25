/**
 * Downloads every chain the CA offers for a certificate: the default at the order's
 * certificate URL and each alternate linked with rel="alternate" (RFC 8555 section
 * 7.4.2). acme-client's own getCertificate() keeps only the chain whose issuer name
 * matches and silently returns the default otherwise; we fetch them all and let the
 * chain engine decide by verification.
 */

/** The URLs of Link headers with rel="alternate", resolved against `base`. */
export function alternateLinks(linkHeader: string | string[] | undefined, base: string): string[] {
  const values = Array.isArray(linkHeader) ? linkHeader : linkHeader ? [linkHeader] : [];
  const urls: string[] = [];
  for (const value of values) {
    for (const match of value.matchAll(/<([^>]*)>\s*((?:;\s*[^;,]+)*)/g)) {
      const params = match[2] ?? '';
      if (/;\s*rel\s*=\s*"?([^";]*\s)?alternate(\s[^";]*)?"?/i.test(params)) urls.push(new URL(match[1] ?? '', base).toString());
    }
  }
  return urls;
}

/** The subset of acme-client's internal API used for signed requests: POST-as-GET (payload null) and POSTs with a payload. */
export interface PostAsGet {
  apiRequest(url: string, payload: object | null, validStatusCodes: number[]): Promise<{ data: unknown; headers: Record<string, string | string[] | undefined> }>;
}

/** Fetches the default chain and every alternate, default first, as PEM text. */
export async function downloadChains(api: PostAsGet, certificateUrl: string): Promise<string[]> {
  const first = await api.apiRequest(certificateUrl, null, [200]);
  const alternates = alternateLinks(first.headers.link, certificateUrl);
  const rest = await Promise.all(alternates.map((url) => api.apiRequest(url, null, [200])));
  return [first, ...rest].map((response) => (Buffer.isBuffer(response.data) ? response.data.toString('utf8') : String(response.data)));
}
