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
import { DEFAULT_ISSUANCE_CONCURRENCY } from '../../src/config/config.js';
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
    const requested: string[] = [];
    const coordinator = {
      requestIssue: async (instanceId: string) => {
        requested.push(instanceId);
        return store.certificates.create(instanceId);
      },
      reconcileChanged: async () => undefined,
      room: () => Math.max(0, capacity - requested.length),
    };
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
      scheduler.roomFreed();
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.equal(requested.length, 10, 'nothing more to claim');
    } finally {
      await scheduler.stop();
    }
  });
});

describe('the coordinator\'s room: twice its order slots, less its orders and the CSRs it waits for', () => {
  let plane: TestPlane;
  const channels: AgentChannel[] = [];
  before(async () => {
    plane = await startTestPlane();
  });
  after(async () => {
    for (const channel of channels) channel.socket.terminate();
    await plane.close();
  });

  test('each CSR asked for takes one unit of room; an answered CSR whose order ends gives it back', async () => {
    const full = 2 * DEFAULT_ISSUANCE_CONCURRENCY;
    assert.equal(plane.coordinator.room(), full);
    const agents = [];
    for (let i = 0; i < 3; i += 1) {
      const agent = await enrollTestAgent(plane, `room${i}`);
      const channel = await openAgentChannel(plane, agent);
      await channel.next('welcome');
      agents.push(agent);
      channels.push(channel);
    }
    for (const agent of agents) await plane.coordinator.requestIssue(agent.instanceId);
    assert.equal(plane.coordinator.room(), full - 3, 'three CSRs asked for, none answered');
    // Asked again for an instance already waiting: the same certificate, no more room taken.
    await plane.coordinator.requestIssue(agents[0]!.instanceId);
    assert.equal(plane.coordinator.room(), full - 3);

    const request = await channels[0]!.next('csr_request');
    const key = await generateKeyPair();
    channels[0]!.send({ type: 'csr', certificateId: request.certificateId, csrPem: await createCsr(key, request.hostnames) });
    // The test plane's CA refuses connections: the order fails, and its room comes back.
    await eventually(async () => ((await plane.store.certificates.get(request.certificateId))?.status === 'failed' ? true : undefined), 10_000, 20, 'the order to fail');
    await eventually(async () => (plane.coordinator.room() === full - 2 ? true : undefined), 5_000, 10, 'the room to come back');
  });
});
