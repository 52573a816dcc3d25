/**
 * How this process names itself where several processes share one database (job claims,
 * certificate leases): host, pid and a random suffix, so an operator reading a table can
 * tell which process holds what, and a restarted process with a reused pid is a new owner.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';

export function processName(): string {
  return `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
}
