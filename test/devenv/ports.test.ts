/**
 * Ports for the servers the suites start: below the kernel's ephemeral range, distinct, free
 * when returned, and a taken one is passed over.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { test } from 'node:test';
import { freeLoopbackPorts } from '../../src/devenv/ports.js';

const ephemeralStart = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);

test('ports are distinct, below the ephemeral range, and free once returned', async () => {
  const ports = await freeLoopbackPorts(20);
  assert.equal(new Set(ports).size, 20);
  for (const port of ports) assert.ok(port >= 10_000 && port < ephemeralStart, `${port} lies outside 10000-${ephemeralStart - 1}`);
  // Each can be bound at once by its user.
  const servers = await Promise.all(ports.map((port) => new Promise<ReturnType<typeof createServer>>((resolve, reject) => {
    const server = createServer();
    server.once('error', reject).listen(port, '127.0.0.1', () => resolve(server));
  })));
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
});

test('a port in use is passed over, and a range with none free says so', async () => {
  const [taken, other] = await freeLoopbackPorts(2);
  const blocker = createServer();
  await new Promise<void>((resolve) => blocker.listen(taken, '127.0.0.1', resolve));
  try {
    // The first pick lands on the taken port; the next one is used.
    const picks = [taken!, other!];
    const offset = (port: number) => (port - 10_000) / (ephemeralStart - 10_000);
    let call = 0;
    const random = () => offset(picks[Math.min(call++, picks.length - 1)]!) + 1e-9;
    assert.deepEqual(await freeLoopbackPorts(1, random), [other]);
    await assert.rejects(freeLoopbackPorts(1, () => offset(taken!) + 1e-9), /no free loopback port found/);
  } finally {
    await new Promise((resolve) => blocker.close(resolve));
  }
});
