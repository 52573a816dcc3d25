/**
 * Page cursors as callers see them: the store's position, bound to the caller's view of the
 * fleet and authenticated with an HMAC under a key from the secret store. A cursor is then
 * something only this service can have made, for this caller's clusters: a forged or edited
 * one, or one issued to a caller who sees more, is refused instead of walked.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { CertplaneError } from '../errors.js';
import type { SecretStore } from '../secrets/index.js';
import type { Caller } from './auth.js';
import { ErrorCode } from '../error-catalogue.js';

export const CURSOR_KEY_SECRET = 'cursor-key';
const KEY_BYTES = 32;
const MAC = /^[A-Za-z0-9_-]{43}$/;

export class PageCursors {
  private constructor(private readonly key: Buffer) {}

  /** Loads the key from the secret store, creating it on first use (replicas converge on one key, so any of them reads another's cursors). */
  static async loadOrCreate(secrets: SecretStore): Promise<PageCursors> {
    const raw = (await secrets.get(CURSOR_KEY_SECRET)) ?? (await secrets.createIfMissing(CURSOR_KEY_SECRET, randomBytes(KEY_BYTES).toString('base64')));
    const key = Buffer.from(raw.trim(), 'base64');
    if (key.length !== KEY_BYTES) {
      throw new CertplaneError(ErrorCode.SECRETS_CURSOR_KEY_CORRUPT, `secret "${CURSOR_KEY_SECRET}" does not hold ${KEY_BYTES} bytes of base64; delete it and start certplane again (cursors issued before become invalid).`);
    }
    return new PageCursors(key);
  }

  /** The cursor a caller receives for the store's `position`. */
  seal(position: string, caller: Caller | undefined): string {
    return `${position}.${this.#mac(position, caller)}`;
  }

  /** The store's position in a cursor this service sealed for a caller with the same clusters; STORE_INVALID_CURSOR otherwise. */
  open(cursor: string, caller: Caller | undefined): string {
    const separator = cursor.lastIndexOf('.');
    const position = cursor.slice(0, separator);
    const mac = cursor.slice(separator + 1);
    if (separator > 0 && MAC.test(mac) && timingSafeEqual(Buffer.from(mac), Buffer.from(this.#mac(position, caller)))) return position;
    throw new CertplaneError(ErrorCode.STORE_INVALID_CURSOR, 'The page cursor is not one this service issued to you; pass back the nextCursor of the previous page unchanged, or omit it to start from the first page.');
  }

  /** Over the caller's view as well as the position: the same position seen through other clusters is another cursor. */
  #mac(position: string, caller: Caller | undefined): string {
    const view = caller?.clusters ? JSON.stringify([...caller.clusters].sort()) : '*';
    return createHmac('sha256', this.key).update(`certplane page cursor v1\0${view}\0${position}`).digest('base64url');
  }
}
