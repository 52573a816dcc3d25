/** A free TCP port on loopback, for servers the tests start as separate processes: below the ephemeral range (src/devenv/ports.ts). */
import { freeLoopbackPorts } from '../../src/devenv/ports.js';

export async function freePort(): Promise<number> {
  const [port] = await freeLoopbackPorts(1);
  return port!;
}
