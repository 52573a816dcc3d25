/**
 * The channel under a reconnect storm, where the plane's own queue (the store) makes an
 * authentication slow: a connection that goes away while its authentication waits must
 * leave nothing behind (no session, no connected count, no "connected" mark), and an
 * agent that sent its auth in time is not cut off because the plane was slow to check it.
 */
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { once } from 'node:events';
import { WebSocket, WebSocketServer } from 'ws';
import { ErrorCode, channelCloseOf } from '../../src/error-catalogue.js';
import { SessionRegistry } from '../../src/fleet/sessions.js';
import type { Store } from '../../src/store/types.js';
import { eventually } from '../support/processes.js';
import { enrollTestAgent, openAgentChannel, startTestPlane, type TestPlane } from '../support/plane.js';

/** A gate in front of the store's agent certificate look-up: authentications wait there until opened. */
function gatedStore(store: Store) {
  let open!: () => void;
  let reached!: () => void;
  const gate = new Promise<void>((resolve) => (open = resolve));
  const waiting = new Promise<void>((resolve) => (reached = resolve));
  const connectedMarks: (Date | null)[] = [];
  const agentCertificates = { ...store.agentCertificates, get: async (fingerprint: string) => (reached(), await gate, store.agentCertificates.get(fingerprint)) };
  const instances = {
    ...store.instances,
    setAgentConnected: async (id: string, at: Date | null) => {
      connectedMarks.push(at);
      return store.instances.setAgentConnected(id, at);
    },
  };
  return { store: { ...store, agentCertificates, instances, certificates: store.certificates } as Store, open: () => open(), waiting, connectedMarks };
}

describe('agent channel under a reconnect storm', async () => {
  let plane: TestPlane;
  before(async () => {
    plane = await startTestPlane();
  });
  after(() => plane.close());

  /** A registry over `store`, with its own listener, counting what it reports as connected. */
  const registryOn = async (store: Store, authTimeoutMs = 10_000, authenticationsAtOnce?: number) => {
    let connected = 0;
    const registry = new SessionRegistry({ store, ca: plane.ca, logger: pino({ level: 'silent' }), clock: plane.clock, authTimeoutMs, ...(authenticationsAtOnce ? { authenticationsAtOnce } : {}), metrics: { connected: (delta) => void (connected += delta), rejected: () => undefined } });
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await new Promise((resolve) => wss.once('listening', resolve));
    wss.on('connection', (socket) => registry.accept(socket, '127.0.0.1'));
    /** Cuts the agents' connections and waits until the registry has released every session. */
    const release = async (channels: readonly { socket: { terminate(): void } }[]) => {
      for (const channel of channels) channel.socket.terminate();
      await eventually(async () => (connected === 0 ? true : undefined), 10_000, 20, 'the sessions to be released');
    };
    return { registry, url: `http://127.0.0.1:${(wss.address() as AddressInfo).port}`, connected: () => connected, open: () => wss.clients.size, release, close: () => new Promise((resolve) => wss.close(resolve)) };
  };

  test('a connection closed while its authentication waits for the store leaves no session, count or connected mark behind', async () => {
    const agent = await enrollTestAgent(plane, 'storm-gone');
    const gated = gatedStore(plane.store);
    const server = await registryOn(gated.store);
    try {
      const channel = await openAgentChannel(server, agent);
      await gated.waiting;
      channel.socket.terminate();
      await eventually(async () => (server.open() === 0 ? true : undefined), 10_000, 20, 'the plane to see the connection closed');
      gated.open();
      await eventually(async () => (gated.connectedMarks.length >= 2 ? true : undefined), 10_000, 20, 'the registration to be undone');
      assert.equal(server.registry.size, 0);
      assert.equal(server.registry.get(agent.instanceId), undefined);
      assert.equal(server.connected(), 0);
      assert.equal(gated.connectedMarks.at(-1), null);
      assert.equal((await plane.store.instances.get(agent.instanceId))?.agentConnectedAt, null);
    } finally {
      await server.close();
    }
  });

  test('an agent whose auth arrived in time is welcomed even when checking it outlasts the authentication timeout', async () => {
    const agent = await enrollTestAgent(plane, 'storm-slow');
    const gated = gatedStore(plane.store);
    const server = await registryOn(gated.store, 300);
    try {
      const channel = await openAgentChannel(server, agent);
      await gated.waiting;
      await new Promise((resolve) => setTimeout(resolve, 900));
      gated.open();
      const welcome = await channel.next('welcome', 10_000);
      assert.equal(welcome.instanceId, agent.instanceId);
      assert.equal(server.connected(), 1);
      await server.release([channel]);
    } finally {
      await server.close();
    }
  });

  test('an agent whose auth arrived while the event loop was blocked past the authentication timeout is welcomed', async () => {
    const agent = await enrollTestAgent(plane, 'storm-stall');
    const server = await registryOn(plane.store, 300);
    try {
      const channel = await openAgentChannel(server, agent);
      // The channel's own listener sends the auth on hello; this one then blocks the whole process (plane included)
      // for three times the timeout, so the plane's timer is due before its socket is read again.
      channel.socket.on('message', (data) => {
        if ((JSON.parse(data.toString()) as { type: string }).type === 'hello') Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 900);
      });
      const answer = await channel.next(['welcome', 'error'], 10_000).catch(async () => ({ type: 'closed', ...(await channel.closed) }));
      assert.equal(answer.type, 'welcome', `the plane answered ${JSON.stringify(answer)}`);
      assert.equal(server.connected(), 1);
      await server.release([channel]);
    } finally {
      await server.close();
    }
  });

  test('authentications beyond the bound wait their turn, without reaching the store, and are all welcomed', async () => {
    const agents = await Promise.all(['storm-turn-a', 'storm-turn-b', 'storm-turn-c'].map((name) => enrollTestAgent(plane, name)));
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    let inStore = 0;
    let mostInStore = 0;
    let lookups = 0;
    const agentCertificates = {
      ...plane.store.agentCertificates,
      get: async (fingerprint: string) => {
        lookups += 1;
        inStore += 1;
        mostInStore = Math.max(mostInStore, inStore);
        await gate;
        inStore -= 1;
        return plane.store.agentCertificates.get(fingerprint);
      },
    };
    const server = await registryOn({ ...plane.store, agentCertificates } as Store, 10_000, 1);
    const channels: Awaited<ReturnType<typeof openAgentChannel>>[] = [];
    try {
      for (const agent of agents) channels.push(await openAgentChannel(server, agent));
      await eventually(async () => (lookups >= 1 ? true : undefined), 10_000, 20, 'the first authentication to reach the store');
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.equal(lookups, 1, 'the other two wait for their turn');
      open();
      const welcomes = await Promise.all(channels.map((channel) => channel.next('welcome', 10_000)));
      assert.deepEqual(welcomes.map((welcome) => welcome.instanceId).sort(), agents.map((agent) => agent.instanceId).sort());
      assert.equal(mostInStore, 1);
      assert.equal(server.connected(), 3);
      await server.release(channels);
    } finally {
      open();
      for (const channel of channels) channel.socket.terminate();
      await server.close();
    }
  });

  test('an agent that says nothing is still timed out', async () => {
    const server = await registryOn(plane.store, 300);
    try {
      const socket = new WebSocket(`${server.url.replace('http', 'ws')}/`);
      socket.on('error', () => undefined);
      const [code] = (await once(socket, 'close')) as [number, Buffer];
      assert.equal(code, channelCloseOf(ErrorCode.AGENT_AUTH_FAILED));
    } finally {
      await server.close();
    }
  });
});
