/**
 * What follows an installation (jobs/lifecycle.ts onInstalled): the job the certificate
 * answers is done, the certificate's renewal time set and the instance's renewal queued, in
 * one statement (it was four or five: a process could die between the job done and the
 * renewal queued, and PGlite spends 130 us and more of CPU on each). Every guarantee of the
 * steps it replaces is checked here: only an open job is completed, the job that adopted
 * the certificate when the link is missing, one open job per instance, an existing queued
 * renewal moved rather than doubled, never for a certificate replaced since.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { parseCertificateBundle } from '../../src/chain/index.js';
import { ErrorCode } from '../../src/error-catalogue.js';
import { JobLifecycle } from '../../src/jobs/lifecycle.js';
import { lifetimeRenewalTime } from '../../src/lifecycle/index.js';
import { openStore, type CertificateRecord, type InstanceRecord, type Store } from '../../src/store/index.js';
import type { IssuedCertificate } from '../../src/pki/factory.js';
import { leaf, pem, root } from '../support/hierarchies.js';
import { advance } from '../support/lifecycle.js';
import { statementsOf } from '../support/statements.js';

describe('after an installation', () => {
  let store: Store;
  let ca: IssuedCertificate;
  let lifecycle: JobLifecycle;
  const now = new Date();
  const random = () => 0.5;
  let serial = 0;
  before(async () => {
    store = await openStore('memory:', { pgliteThread: false });
    ca = await root('Lifecycle Test Root');
    lifecycle = new JobLifecycle({ store, logger: pino({ level: 'silent' }), clock: () => now, random });
  });
  after(async () => {
    await store?.close();
  });

  const newInstance = () => store.instances.create({ name: `settled-${(serial += 1)}`, hostnames: [`settled-${serial}.jobs.test`], cluster: null, keyAlgorithm: 'ecdsa-p256' });
  const installed = async (instance: InstanceRecord, jobId?: string): Promise<CertificateRecord> => {
    const certificate = await store.certificates.create(instance.id, jobId ? { jobId } : {});
    const issued = await leaf(ca, instance.hostnames as string[]);
    const [parsed] = parseCertificateBundle(pem(issued.cert));
    return advance(store, certificate.id, 'installed', { installedAt: now, fullchainPem: pem(issued.cert, ca), notBefore: parsed!.notBefore, notAfter: parsed!.notAfter, fingerprintSha256: parsed!.fingerprintSha256 });
  };
  const expectedRenewal = (certificate: CertificateRecord) => {
    const [parsed] = parseCertificateBundle(certificate.fullchainPem!);
    return lifetimeRenewalTime(parsed!.notBefore, parsed!.notAfter, random);
  };
  const claimedJob = async (instance: InstanceRecord, kind: 'reissue' | 'renewal' = 'reissue') => {
    const { job } = await store.jobs.enqueue({ kind, instanceId: instance.id, dueAt: now, reason: 'test', requestedBy: 'test' });
    const claimed = await store.jobs.claimDue('lifecycle-test', new Date(now.getTime() + 1), 60_000, 100);
    assert.ok(claimed.some((j) => j.id === job.id), 'the job was claimed');
    return job;
  };
  const openJobs = async (instance: InstanceRecord) => (await store.jobs.history(instance.id)).filter((j) => j.state === 'queued' || j.state === 'running');

  test('completes the job, sets the renewal time and queues the renewal, in one statement', async () => {
    const instance = await newInstance();
    const job = await claimedJob(instance);
    const certificate = await installed(instance, job.id);
    const { statements } = await statementsOf(() => lifecycle.onInstalled(certificate));
    assert.equal(statements.length, 1, statements.join('\n'));
    assert.equal((await store.jobs.get(job.id))?.state, 'done');
    const renewAt = expectedRenewal(certificate);
    assert.equal((await store.certificates.get(certificate.id))?.renewAt?.getTime(), renewAt.getTime());
    const [renewal, ...others] = await openJobs(instance);
    assert.deepEqual(others, []);
    assert.equal(renewal?.kind, 'renewal');
    assert.equal(renewal?.state, 'queued');
    assert.equal(renewal?.dueAt.getTime(), renewAt.getTime());
    assert.equal(renewal?.reason, 'two thirds of the lifetime');
  });

  test('without the link, completes the open job waiting on the certificate (one that adopted it)', async () => {
    const instance = await newInstance();
    const job = await claimedJob(instance);
    const certificate = await installed(instance);
    assert.equal(certificate.jobId, null);
    await store.jobs.attachCertificate(job.id, certificate.id);
    await lifecycle.onInstalled(certificate);
    assert.equal((await store.jobs.get(job.id))?.state, 'done');
    assert.deepEqual((await openJobs(instance)).map((j) => j.kind), ['renewal']);
  });

  test('a linked job that is no longer open stays as it is (a failed job is not made done); the renewal is queued', async () => {
    const instance = await newInstance();
    const job = await claimedJob(instance);
    const certificate = await installed(instance, job.id);
    await store.jobs.fail(job.id, 'gave up', null, { reason: 'Internal', code: ErrorCode.INTERNAL });
    await lifecycle.onInstalled(certificate);
    assert.equal((await store.jobs.get(job.id))?.state, 'failed');
    assert.deepEqual((await openJobs(instance)).map((j) => j.kind), ['renewal']);
  });

  test('an instance with a queued renewal gets it moved to the new time, not a second one', async () => {
    const instance = await newInstance();
    const certificate = await installed(instance);
    const { job: queued } = await store.jobs.enqueue({ kind: 'renewal', instanceId: instance.id, dueAt: new Date(now.getTime() + 365 * 86_400_000), reason: 'earlier', requestedBy: 'scheduler' });
    await lifecycle.onInstalled(certificate);
    const open = await openJobs(instance);
    assert.deepEqual(open.map((j) => j.id), [queued.id]);
    assert.equal(open[0]?.dueAt.getTime(), expectedRenewal(certificate).getTime());
  });

  test('another open job of the instance (a running reissue) is kept as it is, and no renewal is added', async () => {
    const instance = await newInstance();
    const certificate = await installed(instance);
    const running = await claimedJob(instance);
    await lifecycle.onInstalled(certificate);
    const open = await openJobs(instance);
    assert.deepEqual(open.map((j) => [j.id, j.kind, j.state, j.dueAt.getTime()]), [[running.id, 'reissue', 'running', running.dueAt.getTime()]]);
  });

  test('a late settlement of a replaced certificate never moves its successor\'s renewal, nor sets its own time', async () => {
    const instance = await newInstance();
    const first = await installed(instance);
    const second = await installed(instance);
    assert.equal((await store.certificates.get(first.id))?.status, 'superseded');
    await lifecycle.onInstalled(second);
    const [renewal] = await openJobs(instance);
    assert.equal(renewal?.dueAt.getTime(), expectedRenewal(second).getTime());
    await lifecycle.onInstalled(first);
    const open = await openJobs(instance);
    assert.deepEqual(open.map((j) => [j.id, j.dueAt.getTime()]), [[renewal!.id, expectedRenewal(second).getTime()]]);
    assert.equal((await store.certificates.get(first.id))?.renewAt, null);
  });

  test('a late settlement of a replaced certificate on an instance with no open job queues no renewal at the old time', async () => {
    const instance = await newInstance();
    const first = await installed(instance);
    await installed(instance);
    assert.equal((await store.certificates.get(first.id))?.status, 'superseded');
    await lifecycle.onInstalled(first);
    assert.deepEqual(await openJobs(instance), [], 'the replaced certificate\'s renewal is not its successor\'s');
  });

  test('a job done without a certificate of its own completes and queues the renewal of what is installed', async () => {
    const instance = await newInstance();
    const certificate = await installed(instance);
    const job = await claimedJob(instance, 'reissue');
    await lifecycle.onDoneWithoutCertificate(job);
    assert.equal((await store.jobs.get(job.id))?.state, 'done');
    const open = await openJobs(instance);
    assert.deepEqual(open.map((j) => [j.kind, j.dueAt.getTime()]), [['renewal', expectedRenewal(certificate).getTime()]]);
  });
});
