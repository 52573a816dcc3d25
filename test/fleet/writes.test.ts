/**
 * What one certificate writes on its way, counted, not timed: on PGlite each statement is
 * CPU the plane spends, and on PostgreSQL a round trip. An order placed while the agent makes
 * its CSR takes the lease, records its URL on the pending certificate, and accepts the CSR in
 * the write that marks the order; without it (CERTPLANE_ORDER_BEFORE_CSR=0), a CSR accepted
 * with an order slot free takes the order's lease in the same write. An order whose agent is connected to
 * the process that ordered ends in one write (chain verified, delivered, lease given up), and
 * the agent's acknowledgement is one write (installed, the one before superseded, the
 * instance's installed fingerprint), read only when it does not apply. The store is the real
 * one (in-memory PGlite), the channel a real WebSocket over TLS, the issuer a double
 * returning a real chain for the agent's CSR.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import type { IssuedChain } from '../../src/acme/issuer.js';
import { IssuanceCoordinator } from '../../src/fleet/issuance.js';
import { createCsr, generateKeyPair } from '../../src/pki/factory.js';
import { countingStore } from '../support/counting-store.js';
import { issuerAnswers } from '../support/hierarchies.js';
import { eventually } from '../support/processes.js';
import { enrollTestAgent, openAgentChannel, startTestPlane, type TestPlane } from '../support/plane.js';

const logger = pino({ level: 'silent' });

describe('the writes of one certificate', () => {
  let plane: TestPlane;
  let chainFor: (csrPem: string) => Promise<IssuedChain>;

  before(async () => {
    // No notifications: only the coordinator made here acts on the agents.
    plane = await startTestPlane({ wakeups: false });
    chainFor = await issuerAnswers('Writes Test Root', 'writes test');
  });
  after(() => plane.close());

  /** A coordinator over `store` (the plane's, or one that watches it) whose issuer records `orderUrl` and returns a real chain for the agent's CSR; `orderBeforeCsr` as CERTPLANE_ORDER_BEFORE_CSR. */
  const coordinatorOver = (store: TestPlane['store'], orderUrl: string, orderBeforeCsr = true) =>
    new IssuanceCoordinator({
      store,
      issuer: { issue: async (csr, options) => (await options.onOrderCreated?.(orderUrl), chainFor(typeof csr === 'string' ? csr : await csr.csr())), orderStanding: () => Promise.reject(new Error('no order is resumed here')) },
      sessions: plane.sessions,
      logger,
      clock: plane.clock,
      preferDns01: true,
      orderBeforeCsr,
    });

  /** The plane's store, counting its calls, with the lifecycle events applied (and CSRs accepted with a lease) recorded in order. */
  const recordingWrites = () => {
    const counted = countingStore(plane.store);
    const applied: unknown[] = [];
    const certificates = Object.assign(Object.create(counted.store.certificates), {
      apply: (...args: Parameters<typeof plane.store.certificates.apply>) => (applied.push(args[1]), counted.store.certificates.apply(...args)),
      acceptCsrForOrder: (...args: Parameters<typeof plane.store.certificates.acceptCsrForOrder>) => (applied.push('csr_accepted, leased'), counted.store.certificates.acceptCsrForOrder(...args)),
    }) as typeof plane.store.certificates;
    const store = new Proxy(counted.store, { get: (target, property, receiver) => (property === 'certificates' ? certificates : Reflect.get(target, property, receiver)) });
    return { counted, applied, store };
  };

  test('without an order before the CSR: the CSR is accepted with the order\'s lease, the order ends in one write, and the acknowledgement is one more', async () => {
    const { counted, applied, store } = recordingWrites();
    const coordinator = coordinatorOver(store, 'https://ca.test/order/w', false);
    plane.sessions.setHandler(coordinator);
    const agent = await enrollTestAgent(plane, 'writes-one');
    const channel = await openAgentChannel(plane, agent);
    try {
      await channel.next('welcome');
      const before = await plane.store.certificates.create(agent.instanceId);
      const earlier = await plane.store.certificates.get(before.id);
      assert.ok(earlier);
      // An installed certificate before this one, which the acknowledgement supersedes.
      for (const event of ['csr_accepted', 'order_created', 'chain_verified', 'delivered', 'installed'] as const) await plane.store.certificates.apply(before.id, event, { fingerprintSha256: 'ee'.repeat(32), installedAt: new Date() });

      await coordinator.requestIssue(agent.instanceId);
      const request = await channel.next('csr_request');
      counted.calls.clear();
      applied.length = 0;
      channel.send({ type: 'csr', certificateId: request.certificateId, csrPem: await createCsr(await generateKeyPair(), request.hostnames) });
      const delivered = await channel.next('deliver');
      const stored = await plane.store.certificates.get(delivered.certificateId);
      assert.equal(stored?.status, 'delivered');
      assert.equal(stored?.leaseOwner, null, 'the lease was given up');
      assert.deepEqual(applied, ['csr_accepted, leased', 'order_created', ['chain_verified', 'delivered']], 'the CSR was accepted with the order\'s lease taken, and the chain verified and delivered, each in one write');
      assert.equal(counted.calls.get('certificates.leaseForOrder') ?? 0, 0, 'with a slot free, the lease came with the CSR\'s acceptance');
      assert.equal(counted.calls.get('certificates.release') ?? 0, 0, 'the lease was given up in that write, not in one of its own');
      assert.equal(counted.calls.get('jobs.get') ?? 0, 0, 'the job\'s attempts came with the lease');
      assert.equal(counted.calls.get('certificates.get') ?? 0, 0, 'a CSR that is accepted reads no certificate first');

      counted.calls.clear();
      applied.length = 0;
      channel.send({ type: 'installed', certificateId: delivered.certificateId, fingerprintSha256: delivered.fingerprintSha256 });
      const installed = await eventually(async () => {
        const record = await plane.store.certificates.get(delivered.certificateId);
        return record?.status === 'installed' ? record : undefined;
      }, 10_000, 20, 'the acknowledgement to be stored');
      assert.deepEqual(applied, ['installed']);
      assert.equal(counted.calls.get('certificates.get') ?? 0, 0, 'an acknowledgement that applies reads nothing first');
      assert.equal(counted.calls.get('instances.setInstalledFingerprint') ?? 0, 0, 'the fingerprint was recorded in the same write');
      assert.equal((await plane.store.instances.get(agent.instanceId))?.installedFingerprintSha256, installed.fingerprintSha256);
      assert.equal((await plane.store.certificates.get(before.id))?.status, 'superseded');

      // Said again (a reconnect replays its journal): nothing moves; the read tells it is stale, the fingerprint is still the agent's.
      counted.calls.clear();
      channel.send({ type: 'installed', certificateId: delivered.certificateId, fingerprintSha256: delivered.fingerprintSha256 });
      await eventually(async () => ((counted.calls.get('instances.setInstalledFingerprint') ?? 0) === 1 ? true : undefined), 10_000, 20, 'the repeated acknowledgement to be handled');
      assert.equal(counted.calls.get('certificates.get'), 1);
      assert.equal((await plane.store.certificates.get(delivered.certificateId))?.status, 'installed');
    } finally {
      channel.socket.terminate();
    }
  });

  test('an order placed while the agent makes its CSR: the lease, the order on record, the CSR accepted with the order, one write to deliver', async () => {
    const { counted, applied, store } = recordingWrites();
    let orderPlaced: () => void = () => undefined;
    const placed = new Promise<void>((resolve) => (orderPlaced = resolve));
    const coordinator = new IssuanceCoordinator({
      store,
      issuer: {
        issue: async (csr, options) => {
          assert.notEqual(typeof csr, 'string', 'the order starts before the CSR exists');
          const late = csr as Exclude<typeof csr, string>;
          await options.onOrderCreated?.('https://ca.test/order/early');
          orderPlaced();
          return chainFor(await late.csr());
        },
        orderStanding: () => Promise.reject(new Error('no order is resumed here')),
      },
      sessions: plane.sessions,
      logger,
      clock: plane.clock,
      preferDns01: true,
      orderBeforeCsr: true,
    });
    plane.sessions.setHandler(coordinator);
    const agent = await enrollTestAgent(plane, 'writes-early');
    const channel = await openAgentChannel(plane, agent);
    try {
      await channel.next('welcome');
      counted.calls.clear();
      await coordinator.requestIssue(agent.instanceId);
      const request = await channel.next('csr_request');
      // The agent answers only once the order is on record: the order did not wait for it.
      await placed;
      const pendingWithOrder = await plane.store.certificates.get(request.certificateId);
      assert.equal(pendingWithOrder?.status, 'pending', 'the certificate waits for its CSR');
      assert.equal(pendingWithOrder?.orderUrl, 'https://ca.test/order/early', 'with its order on record');
      assert.equal(pendingWithOrder?.leaseOwner, coordinator.owner, 'under this process\'s lease');
      channel.send({ type: 'csr', certificateId: request.certificateId, csrPem: await createCsr(await generateKeyPair(), request.hostnames) });
      const delivered = await channel.next('deliver');
      const stored = await plane.store.certificates.get(delivered.certificateId);
      assert.equal(stored?.status, 'delivered');
      assert.equal(stored?.leaseOwner, null, 'the lease was given up');
      assert.deepEqual(applied, ['preordered', ['csr_accepted', 'order_created'], ['chain_verified', 'delivered']], 'the order recorded on the pending certificate, the CSR accepted with it, the chain verified and delivered: each one write');
      assert.equal(counted.calls.get('certificates.leaseForOrder'), 1, 'the lease was taken once, before the order');
      assert.equal(counted.calls.get('certificates.acceptCsrForOrder') ?? 0, 0);
      assert.equal(counted.calls.get('certificates.release') ?? 0, 0, 'the lease was given up in the last write, not in one of its own');
    } finally {
      channel.socket.terminate();
    }
  });

  /**
   * A coordinator over the plane's store whose instance reads are recorded from the moment a
   * CSR is sent up to its first combined read (`failOnce` makes that read fail once), and an
   * agent with a certificate requested and its CSR request received.
   */
  const csrReads = async (name: string, failOnce = false) => {
    const reads: string[] = [];
    let recording = false;
    let failing = failOnce;
    const record = (read: string) => recording && reads.push(read);
    const instances = Object.assign(Object.create(plane.store.instances), {
      get: (id: string) => (record('get'), plane.store.instances.get(id)),
      ownedNames: (id: string, names: readonly string[]) => (record('ownedNames'), plane.store.instances.ownedNames(id, names)),
      withOwnedNames: (id: string, names: readonly string[]) => {
        record(`withOwnedNames ${names.join(',')}`);
        recording = false;
        if (failing) {
          failing = false;
          return Promise.reject(new Error('the store is away'));
        }
        return plane.store.instances.withOwnedNames(id, names);
      },
    }) as typeof plane.store.instances;
    const store = new Proxy(plane.store, { get: (target, property, receiver) => (property === 'instances' ? instances : Reflect.get(target, property, receiver)) });
    const coordinator = coordinatorOver(store, `https://ca.test/order/${name}`);
    plane.sessions.setHandler(coordinator);
    const agent = await enrollTestAgent(plane, name);
    const channel = await openAgentChannel(plane, agent);
    await channel.next('welcome');
    await coordinator.requestIssue(agent.instanceId);
    const request = await channel.next('csr_request');
    const send = (csrPem: string) => {
      recording = true;
      channel.send({ type: 'csr', certificateId: request.certificateId, csrPem });
    };
    return { reads, channel, request, send };
  };

  test('a CSR is checked with one read: its instance and which of its names the instance owns', async () => {
    const { reads, channel, request, send } = await csrReads('writes-one-read');
    try {
      send(await createCsr(await generateKeyPair(), [...request.hostnames].reverse().map((name) => name.toUpperCase())));
      const delivered = await channel.next('deliver');
      assert.equal(delivered.certificateId, request.certificateId, 'the CSR was accepted and its certificate delivered');
      assert.deepEqual(reads, [`withOwnedNames ${[...request.hostnames].reverse().join(',')}`], 'one read, with the names normalised');
    } finally {
      channel.socket.terminate();
    }
  });

  test('a CSR that does not decode reads its instance alone and is refused', async () => {
    const { reads, channel, request, send } = await csrReads('writes-bad-csr');
    try {
      send('-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----');
      const cancel = await channel.next('cancel');
      assert.equal(cancel.certificateId, request.certificateId);
      assert.match(cancel.reason, /^CSR rejected: /);
      assert.deepEqual(reads, ['withOwnedNames ']);
      assert.equal((await plane.store.certificates.get(request.certificateId))?.status, 'failed');
    } finally {
      channel.socket.terminate();
    }
  });

  test('a CSR whose read fails (the store) leaves its certificate pending, not failed', async () => {
    const { reads, channel, request, send } = await csrReads('writes-read-fails', true);
    try {
      send(await createCsr(await generateKeyPair(), request.hostnames));
      const closed = await channel.closed;
      assert.equal(reads.length, 1);
      assert.notEqual(closed.code, 1000, 'the plane closed the channel over its own failure');
      assert.equal((await plane.store.certificates.get(request.certificateId))?.status, 'pending');
    } finally {
      channel.socket.terminate();
    }
  });

  test('shutdown waits for a CSR being accepted with its order\'s lease, and the lease is given back before it returns', async () => {
    let writeStarted: () => void = () => undefined;
    const started = new Promise<void>((resolve) => (writeStarted = resolve));
    let letWriteGo: () => void = () => undefined;
    const held = new Promise<void>((resolve) => (letWriteGo = resolve));
    const certificates = Object.assign(Object.create(plane.store.certificates), {
      acceptCsrForOrder: async (...args: Parameters<typeof plane.store.certificates.acceptCsrForOrder>) => {
        writeStarted();
        await held;
        return plane.store.certificates.acceptCsrForOrder(...args);
      },
    }) as typeof plane.store.certificates;
    const store = new Proxy(plane.store, { get: (target, property, receiver) => (property === 'certificates' ? certificates : Reflect.get(target, property, receiver)) });
    const coordinator = coordinatorOver(store, 'https://ca.test/order/s', false);
    plane.sessions.setHandler(coordinator);
    const agent = await enrollTestAgent(plane, 'writes-shutdown');
    const channel = await openAgentChannel(plane, agent);
    try {
      await channel.next('welcome');
      await coordinator.requestIssue(agent.instanceId);
      const request = await channel.next('csr_request');
      channel.send({ type: 'csr', certificateId: request.certificateId, csrPem: await createCsr(await generateKeyPair(), request.hostnames) });
      await started;
      let stopped = false;
      const stopping = coordinator.stop(1_000).then(() => (stopped = true));
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.equal(stopped, false, 'shutdown waits for the acceptance in flight');
      letWriteGo();
      await stopping;
      const stored = await plane.store.certificates.get(request.certificateId);
      assert.equal(stored?.status, 'csr_accepted', 'the CSR was accepted');
      assert.equal(stored?.leaseOwner, null, 'and its lease given back before shutdown returned, for another process to take up at once');
    } finally {
      letWriteGo();
      channel.socket.terminate();
    }
  });
});
