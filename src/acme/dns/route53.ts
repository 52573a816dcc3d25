/**
 * dns-01 through Amazon Route 53, where production zones live. Route 53 replaces a record
 * set as a whole and applies changes asynchronously, so this provider merges values itself
 * and waits for the change to reach every authoritative server before the CA looks.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import {
  ChangeResourceRecordSetsCommand,
  GetChangeCommand,
  ListHostedZonesByNameCommand,
  ListResourceRecordSetsCommand,
  type ChangeAction,
  type Route53Client,
} from '@aws-sdk/client-route-53';
import { CertplaneError } from '../../errors.js';
import { RecordNameLock, type DnsProvider } from './provider.js';
import { ErrorCode } from '../../error-catalogue.js';

/** Short, so that a stale challenge value is forgotten by resolvers soon after cleanup. */
const TXT_TTL_SECONDS = 60;
const DEFAULT_PROPAGATION_TIMEOUT_MS = 120_000;
const DEFAULT_POLL_INTERVAL_MS = 4_000;
/** Enough to see every zone of one name: a public zone and its private twins. */
const ZONES_PER_NAME = 100;

/** What the composition root hands the Route 53 provider. */
export interface Route53DnsProviderOptions {
  /** Built by the composition root, so credentials, region and endpoint stay out of this room. */
  readonly client: Route53Client;
  /** Skips the zone lookup, and the ListHostedZonesByName permission it needs. */
  readonly hostedZoneId?: string;
  /** How long present() waits for the change to be INSYNC. */
  readonly propagationTimeoutMs?: number;
  readonly pollIntervalMs?: number;
}

interface TxtRecordSet {
  readonly ttl: number;
  /** Values exactly as Route 53 holds them: quoted character-strings. */
  readonly values: readonly string[];
}

/**
 * Publishes challenge values in the public hosted zone that holds the name: the configured
 * one, or else the zone with the longest name that contains it (a delegated subdomain zone
 * wins over its parent, because that is the zone resolvers are sent to).
 */
export class Route53DnsProvider implements DnsProvider {
  readonly name = 'route53';
  readonly #client: Route53Client;
  readonly #hostedZoneId: string | undefined;
  readonly #propagationTimeoutMs: number;
  readonly #pollIntervalMs: number;
  readonly #lock = new RecordNameLock();

  constructor(options: Route53DnsProviderOptions) {
    this.#client = options.client;
    this.#hostedZoneId = options.hostedZoneId;
    this.#propagationTimeoutMs = options.propagationTimeoutMs ?? DEFAULT_PROPAGATION_TIMEOUT_MS;
    this.#pollIntervalMs = options.pollIntervalMs ?? DEFAULT_POLL_INTERVAL_MS;
  }

  async present(fqdn: string, value: string, signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted();
    const name = recordNameOf(fqdn);
    const zoneId = await this.#findZoneId(name);
    const change = await this.#lock.run(name, async () => {
      const existing = await this.#readTxt(zoneId, name);
      const quoted = quote(value);
      if (existing?.values.includes(quoted)) return undefined;
      return this.#change(zoneId, 'UPSERT', name, { ttl: TXT_TTL_SECONDS, values: [...(existing?.values ?? []), quoted] });
    });
    if (change && change.status !== 'INSYNC') await this.#waitInSync(change.id, name, signal);
  }

  async cleanUp(fqdn: string, value: string): Promise<void> {
    const name = recordNameOf(fqdn);
    const zoneId = await this.#findZoneId(name);
    await this.#lock.run(name, async () => {
      const existing = await this.#readTxt(zoneId, name);
      const quoted = quote(value);
      if (!existing?.values.includes(quoted)) return;
      const others = existing.values.filter((held) => held !== quoted);
      if (others.length === 0) await this.#change(zoneId, 'DELETE', name, existing);
      else await this.#change(zoneId, 'UPSERT', name, { ttl: existing.ttl, values: others });
    });
  }

  async #findZoneId(name: string): Promise<string> {
    if (this.#hostedZoneId) return this.#hostedZoneId;
    const labels = name.slice(0, -1).split('.');
    for (let start = 0; start < labels.length; start++) {
      const candidate = `${labels.slice(start).join('.')}.`;
      const listed = await this.#send('ListHostedZonesByName', () =>
        this.#client.send(new ListHostedZonesByNameCommand({ DNSName: candidate, MaxItems: ZONES_PER_NAME })),
      );
      const zone = (listed.HostedZones ?? []).find(
        (listedZone) => listedZone.Name?.toLowerCase() === candidate && listedZone.Config?.PrivateZone !== true,
      );
      if (zone?.Id) return zone.Id;
    }
    throw new CertplaneError(
      ErrorCode.DNS_ROUTE53_NO_ZONE,
      `No public Route 53 hosted zone visible to these credentials contains ${name}; create one, or configure the hosted zone id.`,
      { name },
    );
  }

  async #readTxt(zoneId: string, name: string): Promise<TxtRecordSet | undefined> {
    const listed = await this.#send('ListResourceRecordSets', () =>
      this.#client.send(
        new ListResourceRecordSetsCommand({ HostedZoneId: zoneId, StartRecordName: name, StartRecordType: 'TXT', MaxItems: 1 }),
      ),
    );
    const set = listed.ResourceRecordSets?.[0];
    if (!set || set.Type !== 'TXT' || set.Name?.toLowerCase() !== name) return undefined;
    return { ttl: set.TTL ?? TXT_TTL_SECONDS, values: (set.ResourceRecords ?? []).flatMap((record) => record.Value ?? []) };
  }

  async #change(zoneId: string, action: ChangeAction, name: string, set: TxtRecordSet): Promise<{ id: string; status: string }> {
    const changed = await this.#send('ChangeResourceRecordSets', () =>
      this.#client.send(
        new ChangeResourceRecordSetsCommand({
          HostedZoneId: zoneId,
          ChangeBatch: {
            Comment: 'certplane dns-01 challenge',
            Changes: [
              {
                Action: action,
                ResourceRecordSet: { Name: name, Type: 'TXT', TTL: set.ttl, ResourceRecords: set.values.map((Value) => ({ Value })) },
              },
            ],
          },
        }),
      ),
    );
    const id = changed.ChangeInfo?.Id;
    if (!id) {
      throw new CertplaneError(ErrorCode.DNS_ROUTE53, `Route 53 accepted the ${action} of ${name} but returned no change id to follow.`, {
        operation: 'ChangeResourceRecordSets',
        name,
      });
    }
    return { id, status: changed.ChangeInfo?.Status ?? '' };
  }

  /** Polls the change until INSYNC; the signal ends the poll and the sleep between polls at once, with its reason. */
  async #waitInSync(changeId: string, name: string, signal: AbortSignal | undefined): Promise<void> {
    const deadline = Date.now() + this.#propagationTimeoutMs;
    for (;;) {
      signal?.throwIfAborted();
      const got = await this.#send('GetChange', () => this.#client.send(new GetChangeCommand({ Id: changeId }), signal ? { abortSignal: signal } : {}), signal);
      if (got.ChangeInfo?.Status === 'INSYNC') return;
      if (Date.now() + this.#pollIntervalMs > deadline) {
        throw new CertplaneError(
          ErrorCode.DNS_ROUTE53_TIMEOUT,
          `Route 53 change ${changeId} for ${name} was still ${got.ChangeInfo?.Status ?? 'unknown'} after ${this.#propagationTimeoutMs} ms; check the change in the Route 53 console or raise the propagation timeout.`,
          { changeId, name, status: got.ChangeInfo?.Status, propagationTimeoutMs: this.#propagationTimeoutMs },
        );
      }
      await sleep(this.#pollIntervalMs, undefined, signal ? { signal } : {}).catch((error: unknown) => Promise.reject(signal?.aborted ? signal.reason : error));
    }
  }

  /** Turns every SDK failure into one code, keeping the AWS error name callers and people key on. */
  async #send<T>(operation: string, call: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    try {
      return await call();
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      const awsName = error instanceof Error ? error.name : 'UnknownError';
      const reason = error instanceof Error ? error.message : String(error);
      throw new CertplaneError(
        ErrorCode.DNS_ROUTE53,
        `Route 53 ${operation} failed with ${awsName}: ${reason}`,
        { operation, awsErrorName: awsName },
        { cause: error },
      );
    }
  }
}

/** Route 53 names are absolute and lowercase in its answers. */
function recordNameOf(fqdn: string): string {
  return `${fqdn.replace(/\.+$/, '').toLowerCase()}.`;
}

/** A TXT value as one DNS character-string in Route 53's zone-file notation. */
function quote(value: string): string {
  return `"${value.replace(/["\\]/g, '\\$&')}"`;
}
