/**
 * Loopback ports for servers started as separate processes (Pebble, a plane under test):
 * chosen outside the kernel's ephemeral range (below it with Linux's default), so that no
 * outgoing connection can be handed one between the check here and the program's own bind.
 * A port taken from the kernel with listen(0) comes from that very range, and on a machine
 * making hundreds of loopback connections a second (PostgreSQL, Pebble, agents) one was
 * given to a connection before Pebble bound it (a CI run of 2026-12-04).
 */
import { readFile } from 'node:fs/promises';
import { createSocket, type Socket } from 'node:dgram';
import { createServer, type Server } from 'node:net';

/** The lowest port handed out when the range below the ephemeral one allows: above the well-known and most registered services' ports. */
const LOWEST = 10_000;
/** Linux's default ephemeral range, for systems that do not say theirs. */
const DEFAULT_EPHEMERAL: readonly [number, number] = [32_768, 60_999];
/** The fewest ports a band outside the ephemeral range must hold to be picked from. */
const BAND_MIN = 1_000;
/** Random picks tried for each port before giving up. */
const ATTEMPTS = 50;

/** The kernel's ephemeral range (Linux's ip_local_port_range), or Linux's default. */
export async function ephemeralRange(): Promise<readonly [number, number]> {
  const text = await readFile('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').catch(() => '');
  const [start, end] = text.trim().split(/\s+/).map(Number);
  return Number.isInteger(start) && Number.isInteger(end) && start! >= 1 && end! >= start! && end! <= 65_535 ? [start!, end!] : DEFAULT_EPHEMERAL;
}

/**
 * The ports to pick from, [first, last]: below the ephemeral range (from LOWEST, or from 1024
 * when that leaves too few), or above it, whichever holds more; refused when neither holds
 * BAND_MIN, as no pick could then be safe from outgoing connections.
 */
export function bandOutside([start, end]: readonly [number, number]): readonly [number, number] {
  const below: [number, number] = [start - LOWEST >= BAND_MIN ? LOWEST : 1_024, start - 1];
  const above: [number, number] = [end + 1, 65_535];
  const width = ([first, last]: readonly [number, number]) => last - first + 1;
  const band = width(below) >= width(above) ? below : above;
  if (width(band) < BAND_MIN) throw new Error(`the ephemeral port range ${start}-${end} leaves fewer than ${BAND_MIN} ports outside it for test servers`);
  return band;
}

/** Holds `port` of 127.0.0.1 over TCP and UDP (challtestsrv's DNS server takes both): the two sockets, or undefined when either is taken. */
async function hold(port: number): Promise<Held | undefined> {
  const tcp = await new Promise<Server | undefined>((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(undefined));
    server.listen({ port, host: '127.0.0.1' }, () => resolve(server));
  });
  if (!tcp) return undefined;
  const udp = await new Promise<Socket | undefined>((resolve) => {
    const socket = createSocket('udp4');
    socket.once('error', () => {
      try {
        socket.close();
      } catch {
        // Never bound: nothing to close.
      }
      resolve(undefined);
    });
    socket.bind(port, '127.0.0.1', () => resolve(socket));
  });
  if (udp) return { tcp, udp };
  await new Promise((resolve) => tcp.close(resolve));
  return undefined;
}

interface Held {
  readonly tcp: Server;
  readonly udp: Socket;
}

/**
 * `count` distinct ports free on 127.0.0.1 now (TCP and UDP), outside the ephemeral range:
 * each picked at random and held until all are found, then released for the caller's
 * programs to bind. Ask for every port a caller needs in one call: two calls can return the
 * same port.
 */
export async function freeLoopbackPorts(count: number, random: () => number = Math.random): Promise<number[]> {
  const [first, last] = bandOutside(await ephemeralRange());
  const held: Held[] = [];
  const ports: number[] = [];
  try {
    while (ports.length < count) {
      let sockets: Held | undefined;
      let port = 0;
      for (let attempt = 0; attempt < ATTEMPTS && !sockets; attempt += 1) {
        port = first + Math.floor(random() * (last - first + 1));
        if (!ports.includes(port)) sockets = await hold(port);
      }
      if (!sockets) throw new Error(`no free loopback port found in ${first}-${last} after ${ATTEMPTS} tries`);
      held.push(sockets);
      ports.push(port);
    }
    return ports;
  } finally {
    await Promise.all(held.flatMap(({ tcp, udp }) => [new Promise((resolve) => tcp.close(resolve)), new Promise<void>((resolve) => udp.close(() => resolve()))]));
  }
}
