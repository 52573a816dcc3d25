/**
 * dns-01 through pebble-challtestsrv, the mock DNS server that answers Pebble's lookups in
 * the local environment and in integration tests. It stands in for a real DNS service so the
 * whole issuance path, challenge records included, runs on loopback.
 */
import { CertplaneError } from '../../errors.js';
import { RecordNameLock, type DnsProvider } from './provider.js';
import { ErrorCode } from '../../error-catalogue.js';

const REQUEST_TIMEOUT_MS = 10_000;

/**
 * Publishes TXT records through challtestsrv's management API. That API can only clear a
 * name as a whole (its /clear-txt ignores the value), so this provider remembers the values
 * it published and publishes the others again after a clear; values published at the same
 * name by anyone else are cleared with them.
 */
export class ChalltestsrvDnsProvider implements DnsProvider {
  readonly name = 'challtestsrv';
  readonly #managementUrl: string;
  readonly #published = new Map<string, Set<string>>();
  readonly #lock = new RecordNameLock();

  /** `managementUrl` is challtestsrv's -management listener, e.g. "http://127.0.0.1:8055". */
  constructor(managementUrl: string) {
    this.#managementUrl = managementUrl.replace(/\/+$/, '');
  }

  /** challtestsrv serves a value as soon as it acknowledges it, so there is nothing to wait for. */
  present(fqdn: string, value: string): Promise<void> {
    const host = hostOf(fqdn);
    return this.#lock.run(host, async () => {
      if (!this.#published.get(host)?.has(value)) await this.#publish(host, value);
    });
  }

  cleanUp(fqdn: string, value: string): Promise<void> {
    const host = hostOf(fqdn);
    return this.#lock.run(host, async () => {
      const others = [...(this.#published.get(host) ?? [])].filter((published) => published !== value);
      await this.#post('/clear-txt', { host });
      this.#published.delete(host);
      for (const other of others) await this.#publish(host, other);
    });
  }

  async #publish(host: string, value: string): Promise<void> {
    await this.#post('/set-txt', { host, value });
    this.#published.set(host, (this.#published.get(host) ?? new Set<string>()).add(value));
  }

  async #post(path: string, body: Record<string, string>): Promise<void> {
    const url = `${this.#managementUrl}${path}`;
    let response: Response;
    try {
      response = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      });
    } catch (error) {
      throw new CertplaneError(
        ErrorCode.DNS_CHALLTESTSRV,
        `Could not reach pebble-challtestsrv at ${url} (${reasonOf(error)}); check that it runs and that its -management address matches.`,
        { url, host: body.host },
        { cause: error },
      );
    }
    if (!response.ok) {
      const text = (await response.text().catch(() => '')).trim();
      throw new CertplaneError(
        ErrorCode.DNS_CHALLTESTSRV,
        `pebble-challtestsrv answered ${response.status} to POST ${url}${text ? `: ${text}` : ''}.`,
        { url, status: response.status, host: body.host },
      );
    }
    await response.body?.cancel();
  }
}

/** challtestsrv keys its records by absolute name, with the trailing dot, and matches them exactly. */
function hostOf(fqdn: string): string {
  return `${fqdn.replace(/\.+$/, '').toLowerCase()}.`;
}

/** fetch reports "fetch failed" and keeps the useful part (ECONNREFUSED, a timeout) in its cause. */
function reasonOf(error: unknown): string {
  const cause = error instanceof Error && error.cause instanceof Error ? error.cause : error;
  return cause instanceof Error ? cause.message : String(cause);
}
