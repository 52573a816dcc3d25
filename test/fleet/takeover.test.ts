/**
 * The coordinator's ownership decisions without a CA: a takeover resumes the stored order
 * (or replaces it, saying why, only when the CA can no longer complete it), a rate-limit
 * refusal parks the certificate under its lease, shutdown stops an order without failing
 * it and releases its lease, and a lost lease stops an order without touching the new
 * holder's work. The store is the real one (in-memory PGlite), the issuer a recording
 * double whose answers each test chooses, and every chain it returns is a real one.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { AgentCa } from '../../src/fleet/ca.js';
import { CertplaneError } from '../../src/errors.js';
import { IssuanceCoordinator, type Issuer, type OrderGate } from '../../src/fleet/issuance.js';
import { SessionRegistry } from '../../src/fleet/sessions.js';
import type { IssueOptions, IssuedChain, LateCsr } from '../../src/acme/issuer.js';
import type { OrderStanding } from '../../src/lifecycle/index.js';
import { createCsr, generateKeyPair } from '../../src/pki/factory.js';
import { FileSecretStore } from '../../src/secrets/index.js';
import { openStore, type CertificateRecord, type Store } from '../../src/store/index.js';
import { scratch } from '../support/cli.js';
import { eventually } from '../support/processes.js';
import { issuerAnswers } from '../support/hierarchies.js';
import { ErrorCode } from '../../src/error-catalogue.js';

const logger = pino({ level: 'silent' });

/** An issuer whose answers the test sets: where the stored order stands, and how `issue` behaves. */
class RecordingIssuer implements Issuer {
  readonly calls: Pick<IssueOptions, 'resumeOrderUrl' | 'signal'>[] = [];
  standing: OrderStanding = { status: 'ready' };
  /** The order `issue` places (reporting it) when not resuming. */
  newOrderUrl = 'https://ca.test/order/new';
  /** `issue` then waits for the abort instead of returning. */
  hang = false;
  /** `issue` then fails with this, after placing its order. */
  failWith: Error | undefined;

  constructor(private readonly chainFor: (csrPem: string) => Promise<IssuedChain>) {}

  async orderStanding(): Promise<OrderStanding> {
    return this.standing;
  }

  async issue(csr: string | LateCsr, options: Pick<IssueOptions, 'onOrderCreated' | 'resumeOrderUrl' | 'signal'>): Promise<IssuedChain> {
    this.calls.push({ resumeOrderUrl: options.resumeOrderUrl, signal: options.signal });
    if (!options.resumeOrderUrl) await options.onOrderCreated?.(this.newOrderUrl);
    if (this.failWith) throw this.failWith;
    if (this.hang) {
      await new Promise((_resolve, reject) => options.signal?.addEventListener('abort', () => reject(options.signal?.reason), { once: true }));
    }
    return this.chainFor(typeof csr === 'string' ? csr : await csr.csr());
  }
}

/** A gate that grants or refuses as told, counting the orders it was asked for. */
class CountingGate implements OrderGate {
  asked = 0;
  refuseUntil: Date | undefined;
  async acquire(): ReturnType<OrderGate['acquire']> {
    this.asked += 1;
    return this.refuseUntil ? { granted: false, retryAt: this.refuseUntil, limitedBy: 'newOrders' } : { granted: true, decidedAt: new Date() };
  }
  async blockUntil(): Promise<void> {}
}

describe('coordinator ownership decisions', () => {
  const dir = scratchDir();
  let store: Store;
  let sessions: SessionRegistry;
  let chainFor: (csrPem: string) => Promise<IssuedChain>;
  let counter = 0;

  before(async () => {
    store = await openStore('memory:');
    const { path } = await dir;
    const ca = await AgentCa.loadOrCreate(await FileSecretStore.open(path('secrets')));
    sessions = new SessionRegistry({ store, ca, logger, clock: () => new Date() });
    // What the real issuer returns: the chain engine's selection over a chain a CA issued for the CSR's key.
    chainFor = await issuerAnswers('Takeover Test Root', 'takeover test');
  });

  after(async () => {
    await store.close();
    await (await dir).remove();
  });

  const coordinator = (issuer: Issuer, gate: OrderGate, leaseMs = 60_000) =>
    new IssuanceCoordinator({ store, issuer, sessions, logger, clock: () => new Date(), gate, preferDns01: true, leaseMs });

  /** A certificate as a dead process left it: CSR accepted, an order placed (when `orderUrl`), its lease lapsed. */
  const leftByDeadProcess = async (orderUrl?: string): Promise<CertificateRecord> => {
    counter += 1;
    const hostname = `t${counter}.takeover.test`;
    const instance = await store.instances.create({ name: `t${counter}`, hostnames: [hostname], cluster: null, keyAlgorithm: 'ecdsa-p256' });
    const certificate = await store.certificates.create(instance.id);
    assert.ok(await store.certificates.lease(certificate.id, 'dead-process', 0));
    const csrPem = await createCsr(await generateKeyPair(), [hostname]);
    let record = await store.certificates.apply(certificate.id, 'csr_accepted', { csrPem }, { leaseOwner: 'dead-process' });
    if (orderUrl) record = await store.certificates.apply(certificate.id, 'order_created', { orderUrl }, { leaseOwner: 'dead-process' });
    assert.ok(record);
    return record;
  };
  const settled = (id: string, status: CertificateRecord['status']) =>
    eventually(async () => {
      const record = await store.certificates.get(id);
      return record?.status === status && record.leaseOwner === null ? record : undefined;
    }, 10_000, 20, `certificate ${id} to be ${status} with its lease released`);

  test('a takeover resumes the stored order the CA can still complete, and spends no rate-limit budget', async () => {
    const stored = await leftByDeadProcess('https://ca.test/order/stored');
    const issuer = new RecordingIssuer(chainFor);
    issuer.standing = { status: 'pending' };
    const gate = new CountingGate();
    await coordinator(issuer, gate).requestIssue(stored.instanceId);
    const issued = await settled(stored.id, 'issued');
    assert.deepEqual(issuer.calls.map((c) => c.resumeOrderUrl), ['https://ca.test/order/stored']);
    assert.equal(gate.asked, 0, 'resuming places no order, so it asks the limiter for none');
    assert.equal(issued.orderUrl, 'https://ca.test/order/stored');
    assert.ok(issued.fingerprintSha256);
  });

  test('an order the CA marked invalid is replaced through the rate limiter, the new URL stored and the reason audited', async () => {
    const stored = await leftByDeadProcess('https://ca.test/order/stale');
    const issuer = new RecordingIssuer(chainFor);
    issuer.standing = { status: 'invalid' };
    issuer.newOrderUrl = 'https://ca.test/order/replacement';
    const gate = new CountingGate();
    await coordinator(issuer, gate).requestIssue(stored.instanceId);
    const issued = await settled(stored.id, 'issued');
    assert.deepEqual(issuer.calls.map((c) => c.resumeOrderUrl), [undefined], 'a new order, not the stale one');
    assert.equal(gate.asked, 1);
    assert.equal(issued.orderUrl, 'https://ca.test/order/replacement');
    const audit = await store.audit.latest('certificate.order-replaced', stored.id);
    assert.match(audit?.reason ?? '', /order\/stale invalid/);
    assert.deepEqual(audit?.details, { previousOrderUrl: 'https://ca.test/order/stale', orderUrl: 'https://ca.test/order/replacement' });
  });

  test('a certificate without an order gets a first one; a live lease held elsewhere starts nothing', async () => {
    const fresh = await leftByDeadProcess();
    const issuer = new RecordingIssuer(chainFor);
    const gate = new CountingGate();
    assert.ok(await store.certificates.renewLease(fresh.id, 'dead-process', 60_000), 'the other process is alive after all');
    const plane = coordinator(issuer, gate);
    await plane.requestIssue(fresh.instanceId);
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(issuer.calls.length, 0, 'no order while another process holds the lease');
    await store.certificates.renewLease(fresh.id, 'dead-process', 0);
    await plane.requestIssue(fresh.instanceId);
    const issued = await settled(fresh.id, 'issued');
    assert.equal(issued.orderUrl, issuer.newOrderUrl);
    assert.equal(gate.asked, 1);
  });

  test('a rate-limit refusal parks the certificate under its lease until the limiter\'s time, and no pass takes it up before then', async () => {
    const fresh = await leftByDeadProcess();
    const issuer = new RecordingIssuer(chainFor);
    const gate = new CountingGate();
    gate.refuseUntil = new Date(Date.now() + 120_000);
    const plane = coordinator(issuer, gate);
    await plane.requestIssue(fresh.instanceId);
    await eventually(async () => (gate.asked === 1 ? true : undefined), 5_000, 20, 'the limiter to be asked');
    await new Promise((resolve) => setTimeout(resolve, 100));
    const [row] = await store.query<{ status: string; owner: string; parked_seconds: number }>(
      'SELECT status, lease_owner AS owner, extract(epoch FROM lease_until - now())::float8 AS parked_seconds FROM certificates WHERE id = $1',
      [fresh.id],
    );
    assert.equal(row?.status, 'csr_accepted');
    assert.equal(row?.owner, plane.owner);
    assert.ok(row!.parked_seconds > 100 && row!.parked_seconds <= 120, `parked for ${row?.parked_seconds} s on the database clock`);
    await plane.requestIssue(fresh.instanceId);
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(gate.asked, 1, 'the parking process itself does not take it up again early');
    assert.equal(issuer.calls.length, 0);
  });

  test('shutdown waits for the grace, then stops the order without failing it and releases its lease; nothing starts afterwards', async () => {
    const stored = await leftByDeadProcess('https://ca.test/order/long');
    const issuer = new RecordingIssuer(chainFor);
    issuer.hang = true;
    const plane = coordinator(issuer, new CountingGate());
    await plane.requestIssue(stored.instanceId);
    await eventually(async () => (issuer.calls.length === 1 ? true : undefined), 5_000, 20, 'the order to start');
    assert.equal((await store.certificates.get(stored.id))?.leaseOwner, plane.owner);
    const started = Date.now();
    await plane.stop(200);
    assert.ok(Date.now() - started >= 200, 'in-flight work had its grace');
    assert.equal(issuer.calls[0]?.signal?.aborted, true, 'the issuer was told to stop');
    const left = await store.certificates.get(stored.id);
    assert.equal(left?.status, 'ordering', 'not failed: the next holder resumes it');
    assert.equal(left?.orderUrl, 'https://ca.test/order/long');
    assert.equal(left?.leaseOwner, null, 'released at once, not left to lapse');
    await plane.requestIssue(stored.instanceId);
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(issuer.calls.length, 1, 'a stopping coordinator starts nothing');
  });

  test('shutdown with nothing in flight returns at once', async () => {
    const started = Date.now();
    await coordinator(new RecordingIssuer(chainFor), new CountingGate()).stop(10_000);
    assert.ok(Date.now() - started < 1_000);
  });

  test('a database that stops answering mid-order stops the order without failing it; its lease lapses for the next pass to resume', async () => {
    const stored = await leftByDeadProcess('https://ca.test/order/kept');
    const issuer = new RecordingIssuer(chainFor);
    issuer.standing = { status: 'valid' };
    issuer.failWith = new CertplaneError(ErrorCode.STORE_UNAVAILABLE, 'Lost the database: timeout exceeded when trying to connect.');
    const plane = coordinator(issuer, new CountingGate());
    await plane.requestIssue(stored.instanceId);
    await eventually(async () => (issuer.calls.length === 1 ? true : undefined), 5_000, 20, 'the order to start');
    await new Promise((resolve) => setTimeout(resolve, 100));
    const left = await store.certificates.get(stored.id);
    assert.equal(left?.status, 'ordering', 'not failed: the order at the CA is still good');
    assert.equal(left?.orderUrl, 'https://ca.test/order/kept');
    assert.equal(left?.leaseOwner, plane.owner, 'left to lapse, not released through a database that did not answer');
  });

  test('an order whose lease another process took over stops at the next renewal, writes nothing and leaves the lease alone', async () => {
    const stored = await leftByDeadProcess('https://ca.test/order/contested');
    const issuer = new RecordingIssuer(chainFor);
    issuer.hang = true;
    const plane = coordinator(issuer, new CountingGate(), 300);
    await plane.requestIssue(stored.instanceId);
    await eventually(async () => (issuer.calls.length === 1 ? true : undefined), 5_000, 20, 'the order to start');
    // What a process sees after it stalled past its lease and another took it over.
    await store.query("UPDATE certificates SET lease_owner = 'successor', lease_until = now() + interval '1 minute' WHERE id = $1", [stored.id]);
    await eventually(async () => (issuer.calls[0]?.signal?.aborted ? true : undefined), 5_000, 20, 'the order to be stopped');
    await new Promise((resolve) => setTimeout(resolve, 100));
    const left = await store.certificates.get(stored.id);
    assert.equal(left?.status, 'ordering', 'not failed');
    assert.equal(left?.leaseOwner, 'successor', 'the successor keeps its lease');
    assert.equal((issuer.calls[0]?.signal?.reason as { code?: string }).code, ErrorCode.ISSUANCE_STOPPED);
  });
});

function scratchDir() {
  return scratch('certplane-takeover-');
}
