/**
 * Loopback ports for servers started as separate processes (Pebble, a plane under test):
 * chosen below the kernel's ephemeral range, so that no outgoing connection can be handed one
 * between the check here and the program's own bind. A port taken from the kernel with
 * listen(0) comes from that very range, and on a machine making hundreds of loopback
 * connections a second (PostgreSQL, Pebble, agents) one was given to a connection before
 * Pebble bound it (a CI run of 2026-12-04).
 */
import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';

/** The lowest port handed out: above the well-known and most registered services' ports. */
const LOWEST = 10_000;
/** Linux's default start of the ephemeral range, for systems that do not say theirs. */
const DEFAULT_EPHEMERAL_START = 32_768;
/** Random picks tried for each port before giving up. */
const ATTEMPTS = 50;

/** The first port of the kernel's ephemeral range (Linux's ip_local_port_range), or Linux's default. */
async function ephemeralStart(): Promise<number> {
  const text = await readFile('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').catch(() => '');
  const start = Number(text.trim().split(/\s+/)[0]);
  return Number.isInteger(start) && start > LOWEST + 1_000 ? start : DEFAULT_EPHEMERAL_START;
}

/** Listens on `port` of 127.0.0.1: the server, or undefined when the port is taken. */
function hold(port: number): Promise<Server | undefined> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(undefined));
    server.listen({ port, host: '127.0.0.1', exclusive: true }, () => resolve(server));
  });
}

/**
 * `count` distinct ports free on 127.0.0.1 now, below the ephemeral range: each picked at random
 * and held until all are found, then released for the caller's program to bind.
 */
export async function freeLoopbackPorts(count: number, random: () => number = Math.random): Promise<number[]> {
  const end = await ephemeralStart();
  const held: Server[] = [];
  const ports: number[] = [];
  try {
    while (ports.length < count) {
      let server: Server | undefined;
      let port = 0;
      for (let attempt = 0; attempt < ATTEMPTS && !server; attempt += 1) {
        port = LOWEST + Math.floor(random() * (end - LOWEST));
        if (!ports.includes(port)) server = await hold(port);
      }
      if (!server) throw new Error(`no free loopback port found in ${LOWEST}-${end - 1} after ${ATTEMPTS} tries`);
      held.push(server);
      ports.push(port);
    }
    return ports;
  } finally {
    await Promise.all(held.map((server) => new Promise((resolve) => server.close(resolve))));
  }
}
