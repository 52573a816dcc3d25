/**
 * What an order asks the CA for, name by name: a `dns` identifier (RFC 8555) or an `ip`
 * identifier (RFC 8738). IP addresses are certified only under some profiles, so whether an
 * instance may register one is decided here, from its profile, before anything is stored.
 */
import { ipAddress } from '../chain/index.js';

/**
 * Profiles under which the CA issues for IP addresses. Let's Encrypt has done so since
 * January 2026 under `shortlived` (six-day certificates) only: its other profiles refuse an
 * `ip` identifier, so an instance without this profile cannot use an address.
 */
export const IP_ADDRESS_PROFILES: readonly string[] = ['shortlived'];

/** True when an instance ordering under `profile` may list IP addresses among its names. */
export function profileIssuesForIpAddresses(profile: string | null | undefined): boolean {
  return profile !== null && profile !== undefined && IP_ADDRESS_PROFILES.includes(profile);
}

/** The newOrder identifier for a name as the CSR carries it: `ip` for an address, `dns` otherwise (wildcards included). */
export function acmeIdentifier(name: string): { type: 'dns' | 'ip'; value: string } {
  const ip = ipAddress(name);
  return ip === undefined ? { type: 'dns', value: name } : { type: 'ip', value: ip };
}
