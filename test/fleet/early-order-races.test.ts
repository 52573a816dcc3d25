/**
 * Races of the order placed while the agent makes its CSR (issuance.ts #orderEarly,
 * #handOver), each found in review of 102e0a5: a CSR sent twice must not stop the order the
 * first one was accepted with; an early order whose certificate moved on (its CSR accepted by
 * another process, without the lease) before the order was recorded must give its lease back;
 * and a CSR accepted for an order placed before it must name that order's names. The store is
 * the real one (in-memory PGlite), the channel a real WebSocket, the issuer a double.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import type { IssuedChain } from '../../src/acme/issuer.js';
import { IssuanceCoordinator, type Issuer } from '../../src/fleet/issuance.js';
import { createCsr, generateKeyPair } from '../../src/pki/factory.js';
import { issuerAnswers } from '../support/hierarchies.js';
import { eventually } from '../support/processes.js';
import { enrollTestAgent, openAgentChannel, startTestPlane, type AgentChannel, type TestPlane } from '../support/plane.js';

const logger = pino({ level: 'silent' });

describe('an order placed before its CSR, under races', () => {
  let plane: TestPlane;
  let chainFor: (csrPem: string) => Promise<IssuedChain>;

  before(async () => {
    plane = await startTestPlane({ wakeups: false });
    chainFor = await issuerAnswers('Early Race Root', 'early race test');
  });
  after(() => plane.close());

  const opened: AgentChannel[] = [];
  after(() => {
    for (const channel of opened) channel.socket.terminate();
  });

  /** A new instance's agent, connected and asked by `coordinator` for its CSR (its early order starts then). */
  const askedForCsr = async (coordinator: IssuanceCoordinator, name: string, hostnames?: string[]) => {
    const agent = await enrollTestAgent(plane, name, hostnames);
    const channel = await openAgentChannel(plane, agent);
    opened.push(channel);
    await channel.next('welcome');
    await coordinator.requestIssue(agent.instanceId);
    return { agent, channel, request: await channel.next('csr_request') };
  };

  /** Resolves once the early order's URL is on the pending certificate. */
  const orderOnRecord = (certificateId: string) =>
    eventually(async () => ((await plane.store.certificates.get(certificateId))?.orderUrl ? true : undefined), 10_000, 20, 'the early order on record');

  const coordinatorWith = (issuer: Issuer, extra: { promptAgainMs?: number; leaseMs?: number } = {}) => {
    const coordinator = new IssuanceCoordinator({ store: plane.store, issuer, sessions: plane.sessions, logger, clock: plane.clock, preferDns01: true, orderBeforeCsr: true, ...extra });
    plane.sessions.setHandler(coordinator);
    return coordinator;
  };

  test('a CSR sent twice does not stop the order the first one was accepted with', async () => {
    let finalize: () => void = () => undefined;
    const finalizing = new Promise<void>((resolve) => (finalize = resolve));
    let gotCsr: () => void = () => undefined;
    const csrHandedOver = new Promise<void>((resolve) => (gotCsr = resolve));
    let abortedWith: unknown;
    const coordinator = coordinatorWith({
      issue: async (csr, options) => {
        options.signal?.addEventListener('abort', () => (abortedWith = options.signal?.reason), { once: true });
        await options.onOrderCreated?.('https://ca.test/order/twice');
        const pem = typeof csr === 'string' ? csr : await csr.csr();
        gotCsr();
        // Finalization at the CA takes a while: the agent's second CSR arrives meanwhile.
        await finalizing;
        options.signal?.throwIfAborted();
        return chainFor(pem);
      },
      orderStanding: async () => ({ status: 'processing' }),
    });
    const { agent, channel, request } = await askedForCsr(coordinator, 'early-twice');
    try {
      const csrPem = await createCsr(await generateKeyPair(), request.hostnames);
      channel.send({ type: 'csr', certificateId: request.certificateId, csrPem });
      await csrHandedOver;
      // The agent repeats itself (a retransmission, an agent answering two requests): the
      // module says a repeated CSR is ignored. A status report after it tells when it was handled.
      channel.send({ type: 'csr', certificateId: request.certificateId, csrPem });
      channel.send({ type: 'status', installedFingerprintSha256: 'ab'.repeat(32), pendingCertificateIds: [] });
      await eventually(async () => ((await plane.store.instances.get(agent.instanceId))?.installedFingerprintSha256 === 'ab'.repeat(32) ? true : undefined), 10_000, 20, 'the messages after the repeated CSR to be handled');
      assert.equal(abortedWith, undefined, `the running order was stopped by the repeated CSR: ${(abortedWith as Error | undefined)?.message}`);
      const record = await plane.store.certificates.get(request.certificateId);
      assert.equal(record?.leaseOwner, coordinator.owner, 'the order still holds its lease');
      finalize();
      const delivered = await channel.next('deliver');
      assert.equal(delivered.certificateId, request.certificateId);
    } finally {
      finalize();
      channel.socket.terminate();
      await coordinator.stop(0);
    }
  });

  test('an early order whose certificate had its CSR accepted elsewhere before the order was recorded gives its lease back', async () => {
    let place: () => void = () => undefined;
    const placing = new Promise<void>((resolve) => (place = resolve));
    let started: () => void = () => undefined;
    const issuing = new Promise<void>((resolve) => (started = resolve));
    let ended: () => void = () => undefined;
    const earlyEnded = new Promise<void>((resolve) => (ended = resolve));
    const orders: string[] = [];
    const coordinator = coordinatorWith(
      {
        issue: async (csr, options) => {
          if (typeof csr !== 'string') {
            started();
            try {
              // newOrder is in flight at the CA while the agent's CSR goes elsewhere.
              await placing;
              orders.push('https://ca.test/order/orphan');
              await options.onOrderCreated?.(orders.at(-1)!);
              return chainFor(await csr.csr());
            } finally {
              ended();
            }
          }
          orders.push(`https://ca.test/order/${orders.length}`);
          await options.onOrderCreated?.(orders.at(-1)!);
          return chainFor(csr);
        },
        orderStanding: async () => ({ status: 'invalid' }),
      },
      { leaseMs: 60_000 },
    );
    const { agent, channel, request } = await askedForCsr(coordinator, 'early-moved');
    try {
      await issuing;
      // Another process, which the agent reached meanwhile, accepted its CSR: its
      // acceptCsrForOrder found this lease live, so it accepted the CSR on its own (#onCsr's
      // plain apply, no lease condition).
      const csrPem = await createCsr(await generateKeyPair(), request.hostnames);
      const accepted = await plane.store.certificates.apply(request.certificateId, 'csr_accepted', { csrPem }, { instanceId: agent.instanceId });
      assert.equal(accepted?.status, 'csr_accepted');
      place();
      await earlyEnded;
      const record = await eventually(async () => {
        const current = await plane.store.certificates.get(request.certificateId);
        return current?.leaseOwner === null ? current : undefined;
      }, 3_000, 20, 'the early order to give its lease back (else the certificate waits a whole lease, 60 s here, for anyone to resume it)').catch((error: Error) => error);
      assert.ok(!(record instanceof Error), `${(record as Error).message}: lease held by ${(await plane.store.certificates.get(request.certificateId))?.leaseOwner}`);
      assert.equal(record.status, 'csr_accepted');
    } finally {
      place();
      channel.socket.terminate();
      await coordinator.stop(0);
    }
  });

  test('a CSR that comes while its early order is stopping (the agent reconnected here) is not left without an order', async () => {
    let earlyIssues = 0;
    const resumed: string[] = [];
    let earlyEnded: () => void = () => undefined;
    const ended = new Promise<void>((resolve) => (earlyEnded = resolve));
    const coordinator = coordinatorWith({
      issue: async (csr, options) => {
        if (typeof csr !== 'string') {
          earlyIssues += 1;
          try {
            await options.onOrderCreated?.('https://ca.test/order/reconnect');
            // A request to the CA in flight when the agent leaves: the abort is seen 300 ms later.
            await new Promise<void>((resolve) => options.signal?.addEventListener('abort', () => resolve(), { once: true }));
            await new Promise((resolve) => setTimeout(resolve, 300));
            options.signal?.throwIfAborted();
            return chainFor(await csr.csr());
          } finally {
            earlyEnded();
          }
        }
        if (options.resumeOrderUrl) resumed.push(options.resumeOrderUrl);
        return chainFor(csr);
      },
      orderStanding: async () => ({ status: 'ready' }),
    });
    const asked = await askedForCsr(coordinator, 'early-reconnect');
    const { agent, request } = asked;
    let channel = asked.channel;
    try {
      await orderOnRecord(request.certificateId);
      // The agent's connection drops, and it comes back to this same process at once, with its CSR.
      channel.socket.terminate();
      await eventually(async () => (plane.sessions.get(agent.instanceId) ? undefined : true), 10_000, 10, 'the plane to see the agent leave');
      channel = await openAgentChannel(plane, agent);
      await channel.next('welcome');
      const again = await channel.next('csr_request');
      assert.equal(again.certificateId, request.certificateId);
      channel.send({ type: 'csr', certificateId: request.certificateId, csrPem: await createCsr(await generateKeyPair(), request.hostnames) });
      await ended;
      assert.equal(earlyIssues, 1);
      // No notification and no fallback pass here: only what the CSR's own handling starts.
      const delivered = await channel.next('deliver', 3_000).catch((error: Error) => error);
      const record = await plane.store.certificates.get(request.certificateId);
      assert.ok(!(delivered instanceof Error), `nothing works on the certificate after its CSR was accepted: ${record?.status}, lease ${record?.leaseOwner}, resumed ${resumed.length} time(s)`);
      assert.deepEqual(resumed, ['https://ca.test/order/reconnect'], 'the early order resumed, not a second one');
    } finally {
      channel.socket.terminate();
      await coordinator.stop(0);
    }
  });

  test('a CSR accepted with its early order in the moment that order stops waiting for it is still ordered', async () => {
    const resumed: string[] = [];
    // The write that accepts the CSR with the order lands, and its answer comes back only after the order's wait for the CSR ran out.
    const certificates = Object.assign(Object.create(plane.store.certificates), {
      apply: async (...args: Parameters<typeof plane.store.certificates.apply>) => {
        const moved = await plane.store.certificates.apply(...args);
        if (Array.isArray(args[1]) && args[1][0] === 'csr_accepted') await new Promise((resolve) => setTimeout(resolve, 600));
        return moved;
      },
    }) as typeof plane.store.certificates;
    const store = new Proxy(plane.store, { get: (target, property, receiver) => (property === 'certificates' ? certificates : Reflect.get(target, property, receiver)) });
    const coordinator = new IssuanceCoordinator({
      orderBeforeCsr: true,
      store,
      issuer: {
        issue: async (csr, options) => {
          if (typeof csr !== 'string') {
            await options.onOrderCreated?.('https://ca.test/order/moment');
            return chainFor(await csr.csr());
          }
          if (options.resumeOrderUrl) resumed.push(options.resumeOrderUrl);
          return chainFor(csr);
        },
        orderStanding: async () => ({ status: 'ready' }),
      },
      sessions: plane.sessions,
      logger,
      clock: plane.clock,
      preferDns01: true,
      promptAgainMs: 300,
    });
    plane.sessions.setHandler(coordinator);
    const { agent, channel, request } = await askedForCsr(coordinator, 'early-moment');
    try {
      await orderOnRecord(request.certificateId);
      channel.send({ type: 'csr', certificateId: request.certificateId, csrPem: await createCsr(await generateKeyPair(), request.hostnames) });
      // No notification and no fallback pass here: only what the CSR's own handling starts.
      const delivered = await channel.next('deliver', 4_000).catch((error: Error) => error);
      const record = await plane.store.certificates.get(request.certificateId);
      assert.ok(!(delivered instanceof Error), `nothing works on the certificate after its CSR was accepted: ${record?.status}, lease ${record?.leaseOwner}, resumed ${resumed.length} time(s)`);
    } finally {
      channel.socket.terminate();
      await coordinator.stop(0);
    }
  });

  test('a certificate failed while its early order waits for the CSR (the instance changed) stops that order and frees its slot', async () => {
    let aborted = false;
    const coordinator = new IssuanceCoordinator({
      orderBeforeCsr: true,
      store: plane.store,
      issuer: {
        issue: async (csr, options) => {
          options.signal?.addEventListener('abort', () => (aborted = true), { once: true });
          await options.onOrderCreated?.(`https://ca.test/order/changed-${Math.random()}`);
          return chainFor(typeof csr === 'string' ? csr : await csr.csr());
        },
        orderStanding: async () => ({ status: 'ready' }),
      },
      sessions: plane.sessions,
      logger,
      clock: plane.clock,
      preferDns01: true,
      concurrency: 1,
      promptAgainMs: 60_000,
    });
    plane.sessions.setHandler(coordinator);
    const { agent, channel, request } = await askedForCsr(coordinator, 'early-changed');
    try {
      await orderOnRecord(request.certificateId);
      const next = await coordinator.restartIssuance(agent.instanceId, 'the instance\'s names changed');
      assert.notEqual(next.id, request.certificateId);
      assert.equal((await plane.store.certificates.get(request.certificateId))?.status, 'failed');
      const stopped = await eventually(async () => (aborted ? true : undefined), 2_000, 20, 'the failed certificate\'s early order to stop').catch((error: Error) => error);
      assert.equal(stopped, true, 'the early order of a failed certificate holds its slot until its wait for a CSR that never comes runs out (60 s here)');
    } finally {
      channel.socket.terminate();
      await coordinator.stop(0);
    }
  });

  test('a CSR that comes after its early order stopped is finalized only with the names that order is for', async () => {
    const finalizedWith: { order: string; names: string }[] = [];
    let placed = 0;
    const coordinator = coordinatorWith(
      {
        issue: async (csr, options) => {
          if (typeof csr !== 'string') {
            await options.onOrderCreated?.(`https://ca.test/order/names-${placed++}`);
            return chainFor(await csr.csr());
          }
          const order = options.resumeOrderUrl ?? `https://ca.test/order/names-${placed++}`;
          if (!options.resumeOrderUrl) await options.onOrderCreated?.(order);
          finalizedWith.push({ order, names: csr.length > 0 ? 'given' : '' });
          return chainFor(csr);
        },
        orderStanding: async () => ({ status: 'ready' }),
      },
      { promptAgainMs: 200 },
    );
    const { agent, channel, request } = await askedForCsr(coordinator, 'early-names', ['early-names.example.com', 'www.early-names.example.com']);
    try {
      const stopped = await eventually(async () => {
        const current = await plane.store.certificates.get(request.certificateId);
        return current?.orderUrl && current.leaseOwner === null ? current : undefined;
      }, 10_000, 20, 'the early order to stop without its CSR');
      assert.equal(stopped.status, 'pending');
      // The agent answers late, for one of the two names only (both its instance's own: policy accepts it).
      channel.send({ type: 'csr', certificateId: request.certificateId, csrPem: await createCsr(await generateKeyPair(), [request.hostnames[0]]) });
      await channel.next(['deliver', 'cancel']);
      // At the CA, finalizing the order for two names with a CSR for one is badCSR: the order on
      // record must not be resumed with it (a new order for the CSR's names, or a refusal here).
      assert.ok(!finalizedWith.some((f) => f.order === stopped.orderUrl), `the order for ${request.hostnames.join(', ')} was finalized with a CSR for ${request.hostnames[0]} only`);
    } finally {
      channel.socket.terminate();
      await coordinator.stop(0);
    }
  });
});
