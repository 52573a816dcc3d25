/**
 * Claims paced by the coordinator's room. A 1,000-instance campaign on PGlite used to ask
 * every agent for a CSR at once while 50 orders ran, and the flood of CSR checks queued in
 * front of the orders' own writes on the single connection (227 of 1,000 installed in 300 s).
 * The scheduler now claims no more jobs than the coordinator has room for (twice its order
 * slots, less the orders and unanswered CSR requests it has), and claims again when an order
 * ends, without waiting for its interval. Not timed: what is claimed and started is counted.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { JobLifecycle } from '../../src/jobs/lifecycle.js';
import { Scheduler } from '../../src/jobs/scheduler.js';
import { openStore, type Store } from '../../src/store/index.js';
import { createCsr, generateKeyPair } from '../../src/pki/factory.js';
import { IssuanceCoordinator } from '../../src/fleet/issuance.js';
import { countingStore } from '../support/counting-store.js';
import { issuerAnswers } from '../support/hierarchies.js';
import { recordingCoordinator } from '../support/lifecycle.js';
import { eventually } from '../support/processes.js';
import { enrollTestAgent, openAgentChannel, startTestPlane, type AgentChannel, type TestPlane } from '../support/plane.js';

const logger = pino({ level: 'silent' });

describe('the scheduler claims no more jobs than the coordinator has room for', () => {
  let store: Store;
  before(async () => {
    store = await openStore('memory:');
  });
  after(async () => {
    await store.close();
  });

  test('10 due jobs and room for 3: 3 are started, the rest stay queued until room frees, then are claimed at once (not at the next interval), by claims alone', async () => {
    const now = new Date();
    const jobIds: string[] = [];
    for (let i = 0; i < 10; i += 1) {
      const instance = await store.instances.create({ name: `paced${i}`, hostnames: [`paced${i}.jobs.test`], cluster: null, keyAlgorithm: 'ecdsa-p256' });
      jobIds.push((await store.jobs.enqueue({ kind: 'reissue', instanceId: instance.id, dueAt: now, reason: 'pacing', requestedBy: 'test' })).job.id);
    }
    let capacity = 3;
    const { requested, coordinator } = recordingCoordinator(store, () => Math.max(0, capacity - requested.length));
    let ariReads = 0;
    const counted: Store = { ...store, certificates: Object.assign(Object.create(store.certificates), { ariDue: (...args: Parameters<Store['certificates']['ariDue']>) => ((ariReads += 1), store.certificates.ariDue(...args)) }) };
    // An interval far longer than the test: anything claimed after the first tick was claimed because room freed.
    const scheduler = new Scheduler({ store: counted, coordinator, lifecycle: new JobLifecycle({ store, logger, clock: () => new Date() }), logger, clock: () => new Date(), intervalMs: 600_000 });
    scheduler.start();
    try {
      await eventually(async () => (ariReads === 1 ? true : undefined), 10_000, 10, 'the first tick to end');
      assert.equal(requested.length, 3, 'only as many jobs as there was room for were started');
      const states = await Promise.all(jobIds.map(async (id) => (await store.jobs.get(id))?.state));
      assert.equal(states.filter((state) => state === 'queued').length, 7, `the others are still queued: ${states.join(', ')}`);

      capacity = 8; // two orders ended, and three more besides
      scheduler.roomFreed();
      await eventually(async () => (requested.length === 8 ? true : undefined), 10_000, 10, 'the freed room to be taken');
      capacity = 10;
      scheduler.roomFreed();
      await eventually(async () => (requested.length === 10 ? true : undefined), 10_000, 10, 'the last jobs to be started');
      assert.equal(new Set(requested).size, 10, 'every instance was asked for once');
      assert.equal(ariReads, 1, 'the claims after room freed ran alone: no ARI refresh, no fallback pass before the interval');
      const after = await Promise.all(jobIds.map(async (id) => (await store.jobs.get(id))?.state));
      assert.ok(after.every((state) => state !== 'queued'), `every job was claimed: ${after.join(', ')}`);
    } finally {
      await scheduler.stop();
    }
  });

  test('rechain jobs, which place no order, are claimed and carried out with no room at all', async () => {
    const now = new Date();
    const rechainIds: string[] = [];
    const reissueIds: string[] = [];
    for (let i = 0; i < 3; i += 1) {
      const instance = await store.instances.create({ name: `rechained${i}`, hostnames: [`rechained${i}.jobs.test`], cluster: null, keyAlgorithm: 'ecdsa-p256' });
      rechainIds.push((await store.jobs.enqueue({ kind: 'rechain', instanceId: instance.id, dueAt: now, reason: 'pacing', requestedBy: 'test' })).job.id);
      const other = await store.instances.create({ name: `unpaced${i}`, hostnames: [`unpaced${i}.jobs.test`], cluster: null, keyAlgorithm: 'ecdsa-p256' });
      reissueIds.push((await store.jobs.enqueue({ kind: 'reissue', instanceId: other.id, dueAt: now, reason: 'pacing', requestedBy: 'test' })).job.id);
    }
    const rechained: string[] = [];
    const { requested, coordinator } = recordingCoordinator(store, () => 0);
    const rechains = { run: async (job: { instanceId: string }) => (rechained.push(job.instanceId), 'current' as const) };
    const scheduler = new Scheduler({ store, coordinator, rechains, lifecycle: new JobLifecycle({ store, logger, clock: () => new Date() }), logger, clock: () => new Date() });
    await scheduler.tick();
    assert.equal(rechained.length, 3, 'every due rechain job was carried out');
    assert.deepEqual(requested, [], 'no job that orders was started without room');
    for (const id of rechainIds) assert.equal((await store.jobs.get(id))?.state, 'done');
    for (const id of reissueIds) assert.equal((await store.jobs.get(id))?.state, 'queued');
  });
});

describe('the coordinator\'s room: twice its order slots, less its orders and the CSRs it waits for', () => {
  let plane: TestPlane;
  const channels: AgentChannel[] = [];
  before(async () => {
    // No notifications: only the coordinators made here prompt the agents.
    plane = await startTestPlane({ wakeups: false });
  });
  after(async () => {
    for (const channel of channels) channel.socket.terminate();
    await plane.close();
  });

  const connected = async (name: string) => {
    const agent = await enrollTestAgent(plane, name);
    const channel = await openAgentChannel(plane, agent);
    await channel.next('welcome');
    channels.push(channel);
    return { ...agent, channel };
  };

  /**
   * A coordinator with one order slot (room 2) whose CA holds every order until the test ends
   * it, reached by the plane's agents (their messages come to it). It orders only once a CSR
   * is accepted (CERTPLANE_ORDER_BEFORE_CSR=0): these tests count the room CSR requests take.
   */
  const coordinatorWithOneSlot = (promptAgainMs: number) => {
    const orders: ((error: Error) => void)[] = [];
    let roomFreed = 0;
    const counted = countingStore(plane.store);
    const coordinator = new IssuanceCoordinator({
      store: counted.store,
      issuer: { issue: () => new Promise((_resolve, reject) => orders.push(reject)), orderStanding: () => Promise.reject(new Error('no order is resumed here')) },
      sessions: plane.sessions,
      logger,
      clock: plane.clock,
      concurrency: 1,
      promptAgainMs,
      orderBeforeCsr: false,
      onRoom: () => (roomFreed += 1),
    });
    plane.sessions.setHandler(coordinator);
    return { coordinator, orders, roomFreed: () => roomFreed, calls: counted.calls, callsWith: counted.callsWith };
  };

  const csrFor = async (request: Record<string, any>) => createCsr(await generateKeyPair(), request.hostnames);

  test('CSR requests and orders take room; without room a CSR request waits, and is sent when an order ends', async () => {
    const { coordinator, orders, roomFreed, calls } = coordinatorWithOneSlot(600_000);
    assert.equal(coordinator.room(), 2);
    const [a, b, c] = [await connected('rooma'), await connected('roomb'), await connected('roomc')];
    await coordinator.requestIssue(a.instanceId);
    await coordinator.requestIssue(b.instanceId);
    assert.equal(coordinator.room(), 0, 'two CSRs asked for, none answered');
    const waiting = await coordinator.requestIssue(c.instanceId);
    assert.equal(waiting.status, 'pending');
    // Its creation's notification (or the fallback pass seeing it) finds it waiting for room: nothing is read for it.
    calls.clear();
    coordinator.wake({ instanceId: c.instanceId, id: waiting.id, status: 'pending' });
    assert.equal(calls.get('instances.get') ?? 0, 0, 'a wake-up of a CSR request waiting for room reads nothing');
    assert.equal(calls.get('certificates.open') ?? 0, 0);
    const toA = await a.channel.next('csr_request');
    await b.channel.next('csr_request');
    // Asked again for an instance already waiting: the same certificate, asked again, no more room taken.
    await coordinator.requestIssue(a.instanceId);
    assert.equal(coordinator.room(), 0);

    a.channel.send({ type: 'csr', certificateId: toA.certificateId, csrPem: await csrFor(toA) });
    await eventually(async () => (orders.length === 1 ? true : undefined), 10_000, 20, 'a\'s order to reach the CA');
    assert.equal(coordinator.room(), 0, 'a\'s order under way and b\'s CSR request take the room');
    assert.ok(!c.channel.frames.some((frame) => frame.type === 'csr_request'), 'c is not asked while there is no room');
    // The fallback pass sees all three certificates changed; none needs a read: a's order runs here, b was asked, c waits for room.
    calls.clear();
    await coordinator.reconcileChanged();
    assert.equal(calls.get('certificates.changedSince'), 1);
    assert.equal(calls.get('instances.get') ?? 0, 0, 'the fallback pass reads nothing for an order running here');

    orders[0]!(new Error('the CA is unreachable'));
    const toC = await c.channel.next('csr_request');
    assert.equal(toC.certificateId, waiting.id, 'c was asked as soon as a\'s order ended');
    assert.equal((await plane.store.certificates.get(toA.certificateId))?.status, 'failed');
    assert.ok(roomFreed() >= 1, 'the scheduler was told that room freed');
    assert.equal(coordinator.room(), 0, 'b\'s and c\'s CSR requests take the room again');
  });

  test('an order running here longer than the prompt interval is not reconciled by every fallback pass', async () => {
    const promptAgainMs = 100;
    const { coordinator, orders, callsWith } = coordinatorWithOneSlot(promptAgainMs);
    const agent = await connected('roomlong');
    await coordinator.requestIssue(agent.instanceId);
    const request = await agent.channel.next('csr_request');
    agent.channel.send({ type: 'csr', certificateId: request.certificateId, csrPem: await csrFor(request) });
    await eventually(async () => (orders.length === 1 ? true : undefined), 10_000, 20, 'the order to reach the CA');
    await new Promise((resolve) => setTimeout(resolve, promptAgainMs * 2));
    callsWith.clear();
    await coordinator.reconcileChanged();
    await coordinator.reconcileChanged();
    // Other tests' instances share the store (and this pass): only this one's reads count.
    assert.equal(callsWith.get(`instances.get ${agent.instanceId}`) ?? 0, 0, 'the prompt this order answered is not asked again while it runs');
    assert.equal(callsWith.get(`certificates.open ${agent.instanceId}`) ?? 0, 0);
    orders[0]!(new Error('the CA is unreachable'));
    await eventually(async () => ((await plane.store.certificates.get(request.certificateId))?.status === 'failed' ? true : undefined), 10_000, 20, 'the order to end');
  });

  test('a certificate requestIssue creates for an agent connected here is not announced, and costs no reconciliation: the call asks the agent itself', async () => {
    const { coordinator, calls } = coordinatorWithOneSlot(600_000);
    const heard: string[] = [];
    const unlisten = await plane.store.wakeups.listen(
      (work) => {
        heard.push(work.id);
        coordinator.wake(work);
      },
      () => undefined,
    );
    try {
      const agent = await connected('roomnotified');
      const elsewhere = await enrollTestAgent(plane, 'roomnotifiedelsewhere');
      calls.clear();
      const certificate = await coordinator.requestIssue(agent.instanceId);
      const request = await agent.channel.next('csr_request');
      assert.equal(request.certificateId, certificate.id);
      // Created after it and announced (its agent is connected nowhere): once heard, the first would have been too.
      const announced = await plane.store.certificates.create(elsewhere.instanceId);
      await eventually(async () => (heard.includes(announced.id) ? true : undefined), 10_000, 20, 'the later creation\'s notification');
      assert.ok(!heard.includes(certificate.id), 'the creation requestIssue asked the agent for was not announced');
      assert.equal(calls.get('instances.get'), 1, 'the instance was read by requestIssue alone');
      assert.equal(calls.get('certificates.open'), 1, 'the open certificates were read by requestIssue alone');
      assert.equal(agent.channel.frames.filter((frame) => frame.type === 'csr_request').length, 1);
    } finally {
      await unlisten();
    }
  });

  test('an agent that never answers holds room for one prompt interval from its first request, however often it is asked again', async () => {
    const promptAgainMs = 300;
    const { coordinator } = coordinatorWithOneSlot(promptAgainMs);
    const silent = await connected('roomsilent');
    await coordinator.requestIssue(silent.instanceId);
    const first = await silent.channel.next('csr_request');
    assert.ok(coordinator.room() <= 1, 'the request counts at first');
    await new Promise((resolve) => setTimeout(resolve, promptAgainMs + 100));
    assert.equal(coordinator.room(), 2, 'past one interval it counts no more');
    // Asked again, by another start of its job and by a reconnection: still not counted.
    await coordinator.requestIssue(silent.instanceId);
    await eventually(async () => (silent.channel.frames.filter((frame) => frame.type === 'csr_request').length >= 2 ? true : undefined), 10_000, 20, 'the agent to be asked again');
    silent.channel.socket.terminate();
    const reconnected = await openAgentChannel(plane, silent);
    channels.push(reconnected);
    const again = await reconnected.next('csr_request');
    assert.equal(again.certificateId, first.certificateId);
    assert.ok(silent.channel.frames.filter((frame) => frame.type === 'csr_request').every((frame) => frame.certificateId === first.certificateId));
    assert.equal(coordinator.room(), 2, 'asking again does not start its count again');
  });
  test('an order placed before its CSR takes a slot; with no answer in one prompt interval it stops, its lease released, and the CSR that comes later resumes that order', async () => {
    const promptAgainMs = 300;
    const placed: string[] = [];
    const resumed: string[] = [];
    const chainFor = await issuerAnswers('Pacing Test Root', 'pacing test');
    const coordinator = new IssuanceCoordinator({
      store: plane.store,
      issuer: {
        issue: async (csr, options) => {
          if (options.resumeOrderUrl) resumed.push(options.resumeOrderUrl);
          else {
            placed.push(`https://ca.test/order/before-csr-${placed.length}`);
            await options.onOrderCreated?.(placed.at(-1)!);
          }
          return chainFor(typeof csr === 'string' ? csr : await csr.csr());
        },
        orderStanding: async () => ({ status: 'ready' }),
      },
      sessions: plane.sessions,
      logger,
      clock: plane.clock,
      concurrency: 1,
      promptAgainMs,
      orderBeforeCsr: true,
    });
    plane.sessions.setHandler(coordinator);
    const slow = await connected('roomearly');
    await coordinator.requestIssue(slow.instanceId);
    const request = await slow.channel.next('csr_request');
    await eventually(async () => (placed.length === 1 ? true : undefined), 10_000, 20, 'the order placed before the CSR');
    assert.equal(coordinator.room(), 1, 'the order holds its slot (room is twice the slots, less the orders)');
    const waiting = await plane.store.certificates.get(request.certificateId);
    assert.equal(waiting?.status, 'pending');
    assert.equal(waiting?.orderUrl, placed[0]);
    assert.equal(waiting?.leaseOwner, coordinator.owner);
    const stopped = await eventually(async () => {
      const record = await plane.store.certificates.get(request.certificateId);
      return record?.leaseOwner === null && coordinator.room() === 2 ? record : undefined;
    }, 10_000, 20, 'the order to stop waiting for the CSR');
    assert.equal(stopped.status, 'pending', 'stopped, not failed');
    assert.equal(stopped.orderUrl, placed[0], 'its order stays on record');

    // The agent answers late: its CSR takes the usual path, which resumes the order on record.
    slow.channel.send({ type: 'csr', certificateId: request.certificateId, csrPem: await csrFor(request) });
    const delivered = await slow.channel.next('deliver');
    assert.equal(delivered.certificateId, request.certificateId);
    assert.deepEqual(resumed, [placed[0]], 'the order placed before the CSR was finalized');
    assert.equal(placed.length, 1, 'no second order');
    const recorded = await plane.store.certificates.get(request.certificateId);
    assert.equal(recorded?.status, 'delivered');
    assert.equal(recorded?.orderUrl, placed[0]);
  });
});
