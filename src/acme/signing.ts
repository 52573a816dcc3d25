/**
 * Signs with the account key parsed once. acme-client keeps the account key as PEM and hands
 * the PEM to node:crypto for every signed request, which decodes it again each time: in the
 * bench's profile of a campaign that decoding was most of `sign`, about 0.7 ms of the plane's
 * CPU per request, several per certificate. node:crypto signs with a KeyObject the same way
 * (and acme-client derives its JWK from it the same way), so the client's HTTP layer gets
 * the parsed key.
 */
import { createPrivateKey, type KeyObject } from 'node:crypto';

/** The part of acme-client's HTTP client that holds the account key. */
interface KeyHolder {
  accountKey: Buffer | string | KeyObject;
}

export function parseAccountKeyOnce(client: object): void {
  const http = (client as { http: KeyHolder }).http;
  if (typeof http.accountKey === 'string' || Buffer.isBuffer(http.accountKey)) http.accountKey = createPrivateKey(http.accountKey);
}
