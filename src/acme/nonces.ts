/**
 * Reuses the Replay-Nonce that every CA answer carries for the next signed request.
 * acme-client asks newNonce for a fresh nonce before each signed request, which doubles the
 * round trips of an order; RFC 8555 §7.2 lets a client use any nonce the server handed out.
 * A nonce the CA no longer accepts costs one badNonce answer, which carries a fresh nonce
 * and which acme-client already retries.
 */

/** The one method of acme-client's HTTP client that every signed request passes through. */
interface SignedRequester {
  signedRequest(url: string, payload: unknown, options?: { nonce?: string | null }, attempts?: number): Promise<{ headers: Record<string, string | undefined> }>;
}

/** Nonces kept for reuse: enough for the requests in flight at once; the freshest is used first. */
const KEPT = 64;

/** Makes every signed request of `client` use a nonce from an earlier answer when one is at hand. */
export function reuseNonces(client: object): void {
  const http = (client as { http: SignedRequester }).http;
  const signedRequest = http.signedRequest.bind(http);
  const nonces: string[] = [];
  // acme-client's badNonce retry calls signedRequest again and hands its answer back up the
  // chain: each answer's nonce is kept once, or two requests would spend the same nonce.
  const harvested = new WeakSet<object>();
  http.signedRequest = async (url, payload, options = {}, attempts) => {
    const nonce = options.nonce ?? nonces.pop() ?? null;
    const response = await signedRequest(url, payload, { ...options, nonce }, attempts);
    const fresh = response.headers['replay-nonce'];
    if (fresh && !harvested.has(response)) {
      harvested.add(response);
      nonces.push(fresh);
      if (nonces.length > KEPT) nonces.shift();
    }
    return response;
  };
}
