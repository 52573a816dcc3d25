/**
 * Ports for the servers the suites start: outside the kernel's ephemeral range, distinct,
 * free over TCP and UDP when returned, and one taken either way is passed over.
 */
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { test } from 'node:test';
import { bandOutside, ephemeralRange, freeLoopbackPorts } from '../../src/devenv/ports.js';

test('the ephemeral range is the kernel\'s where Linux says it, and Linux\'s default elsewhere', async () => {
  const file = '/proc/sys/net/ipv4/ip_local_port_range';
  const expected = existsSync(file) ? readFileSync(file, 'utf8').trim().split(/\s+/).map(Number) : [32_768, 60_999];
  assert.deepEqual(await ephemeralRange(), expected);
});

test('the band picked from lies outside the ephemeral range, the wider side, and a range that leaves no room is refused', () => {
  assert.deepEqual(bandOutside([32_768, 60_999]), [10_000, 32_767]);
  assert.deepEqual(bandOutside([49_152, 65_535]), [10_000, 49_151]);
  assert.deepEqual(bandOutside([10_000, 40_000]), [40_001, 65_535]);
  assert.deepEqual(bandOutside([1_024, 50_000]), [50_001, 65_535]);
  assert.deepEqual(bandOutside([10_500, 64_000]), [1_024, 10_499]);
  assert.throws(() => bandOutside([1_024, 65_000]), /leaves fewer than 1000 ports/);
});

test('ports are distinct, outside the ephemeral range, and free over TCP and UDP once returned', async () => {
  const [start, end] = await ephemeralRange();
  const ports = await freeLoopbackPorts(20);
  assert.equal(new Set(ports).size, 20);
  for (const port of ports) assert.ok(port < start || port > end, `${port} lies inside ${start}-${end}`);
  const servers = await Promise.all(
    ports.map(
      (port) =>
        new Promise<ReturnType<typeof createServer>>((resolve, reject) => {
          const server = createServer();
          server.once('error', reject).listen(port, '127.0.0.1', () => resolve(server));
        }),
    ),
  );
  const sockets = await Promise.all(
    ports.map(
      (port) =>
        new Promise<ReturnType<typeof createSocket>>((resolve, reject) => {
          const socket = createSocket('udp4');
          socket.once('error', reject).bind(port, '127.0.0.1', () => resolve(socket));
        }),
    ),
  );
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
  await Promise.all(sockets.map((socket) => new Promise<void>((resolve) => socket.close(() => resolve()))));
});

test('a port in use over TCP or over UDP is passed over, and a band with none free says so', async () => {
  const [first, last] = bandOutside(await ephemeralRange());
  const [tcpTaken, udpTaken, other] = await freeLoopbackPorts(3);
  const tcp = createServer();
  await new Promise<void>((resolve) => tcp.listen(tcpTaken, '127.0.0.1', resolve));
  const udp = createSocket('udp4');
  await new Promise<void>((resolve) => udp.bind(udpTaken, '127.0.0.1', resolve));
  try {
    // The random picks land on the two taken ports first; the next one is used.
    const at = (port: number) => (port - first + 1e-6) / (last - first + 1);
    const picks = [tcpTaken!, udpTaken!, other!];
    let call = 0;
    assert.deepEqual(await freeLoopbackPorts(1, () => at(picks[Math.min(call++, picks.length - 1)]!)), [other]);
    await assert.rejects(freeLoopbackPorts(1, () => at(tcpTaken!)), /no free loopback port found/);
  } finally {
    await new Promise((resolve) => tcp.close(resolve));
    await new Promise<void>((resolve) => udp.close(() => resolve()));
  }
});
