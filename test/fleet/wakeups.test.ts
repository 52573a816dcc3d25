/**
 * What a scheduler tick costs with many agents connected to one process, and how work
 * reaches them: the tick's fallback pass asks the store what changed, so with nothing
 * changed it makes the same store calls for 3 agents as for 30 (it used to read every
 * connected agent's instance and certificates on every tick), and a change made behind
 * the process's back still reaches the agent it waits for. Not timed: calls are counted.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { IssuanceCoordinator } from '../../src/fleet/issuance.js';
import { JobLifecycle } from '../../src/jobs/lifecycle.js';
import { Scheduler } from '../../src/jobs/scheduler.js';
import { countingStore } from '../support/counting-store.js';
import { enrollTestAgent, openAgentChannel, startTestPlane, type AgentChannel, type TestPlane } from '../support/plane.js';

describe('scheduler ticks and wake-ups with many agents connected', async () => {
  let plane: TestPlane;
  const channels: AgentChannel[] = [];
  const agents: { instanceId: string }[] = [];
  let counted: ReturnType<typeof countingStore>;
  let scheduler: Scheduler;
  let coordinator: IssuanceCoordinator;

  const connect = async (count: number) => {
    for (let i = 0; i < count; i += 1) {
      const agent = await enrollTestAgent(plane, `tick${agents.length}`);
      const channel = await openAgentChannel(plane, agent);
      await channel.next('welcome');
      agents.push(agent);
      channels.push(channel);
    }
  };

  /** Store calls of one tick, after the ticks before it have settled. */
  const callsOfOneTick = async () => {
    counted.calls.clear();
    await scheduler.tick();
    return new Map(counted.calls);
  };

  before(async () => {
    // The plane does not hear notifications: the certificate made behind its back must reach the agent through this tick's fallback pass alone.
    plane = await startTestPlane({ wakeups: false });
    counted = countingStore(plane.store);
    const logger = pino({ level: process.env.DEBUG_WAKEUPS ? 'debug' : 'silent' });
    // The plane's registry holds the channels; this coordinator and scheduler read the store through the counter.
    coordinator = new IssuanceCoordinator({ store: counted.store, issuer: { issue: () => Promise.reject(new Error('no CA in this test')), orderStanding: () => Promise.reject(new Error('no CA in this test')) }, sessions: plane.sessions, logger, clock: plane.clock });
    scheduler = new Scheduler({ store: counted.store, coordinator, lifecycle: new JobLifecycle({ store: counted.store, logger, clock: plane.clock }), logger, clock: plane.clock });
  });
  after(async () => {
    for (const channel of channels) channel.socket.terminate();
    await plane.close();
  });

  test('with nothing changed, a tick makes the same store calls for 30 connected agents as for 3', async () => {
    await connect(3);
    await scheduler.tick();
    const withThree = await callsOfOneTick();
    await connect(27);
    assert.equal(plane.sessions.size, 30);
    await scheduler.tick();
    const withThirty = await callsOfOneTick();
    assert.deepEqual(Object.fromEntries(withThirty), Object.fromEntries(withThree));
    assert.equal(withThirty.get('certificates.open') ?? 0, 0, 'no connected agent\'s certificates are read when nothing changed');
    assert.equal(withThirty.get('instances.get') ?? 0, 0, 'no connected agent\'s instance is read when nothing changed');
  });

  test('a certificate created behind the process\'s back reaches its agent at the next tick, and only its agent is read', async () => {
    const target = agents[7]!;
    const channel = channels[7]!;
    const certificate = await plane.store.certificates.create(target.instanceId);
    const calls = await callsOfOneTick();
    const request = await channel.next('csr_request');
    assert.equal(request.certificateId, certificate.id);
    assert.equal(calls.get('certificates.open'), 1);
    assert.equal(calls.get('instances.get'), 1);
    for (const [i, other] of channels.entries()) if (i !== 7) assert.ok(!other.frames.some((frame) => frame.type === 'csr_request'), `agent ${i} was prompted for another instance's certificate`);
    const again = await callsOfOneTick();
    assert.equal(again.get('certificates.open') ?? 0, 0, 'a change already handled is not handled again at the next tick');
    assert.equal(channel.frames.filter((frame) => frame.type === 'csr_request').length, 1);
  });

  test('an agent\'s connection reads its instance and its open certificates once each', async () => {
    const session = plane.sessions.get(agents[3]!.instanceId);
    assert.ok(session, 'the agent is connected');
    counted.calls.clear();
    await coordinator.onConnected(session);
    assert.equal(counted.calls.get('instances.get'), 1);
    assert.equal(counted.calls.get('certificates.open'), 1);
  });

  test('so does the connection of an agent that issues by itself (autoIssue) and has a certificate under way', async () => {
    const agent = await enrollTestAgent(plane, 'tickauto', undefined, { autoIssue: true });
    const channel = await openAgentChannel(plane, agent);
    channels.push(channel);
    // The plane's own coordinator starts its first certificate as it connects.
    await channel.next('csr_request');
    const session = plane.sessions.get(agent.instanceId);
    assert.ok(session, 'the agent is connected');
    counted.calls.clear();
    await coordinator.onConnected(session);
    assert.equal(counted.calls.get('instances.get'), 1);
    assert.equal(counted.calls.get('certificates.open'), 1, 'whether it wants a first certificate is answered from the open certificates already read');
    assert.equal(counted.calls.get('certificates.create') ?? 0, 0);
  });
});
