/**
 * A job whose claim lapsed is claimed again (its process died, or lost the database, after
 * starting the certificate but before recording it on the job). Seen in the chaos test at
 * 100 instances: the certificate went on to be installed by another process, the job was
 * claimed again and ordered a second certificate. A claimed-again job whose certificate is
 * installed is finished, not started. Seen again in the campaign test after SIGKILL: the
 * process died between installing a certificate and completing its job, and the job stayed
 * running for ever (and, one open job per instance, blocked every later renewal of it).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout } from 'node:timers/promises';
import pino from 'pino';
import { JobLifecycle } from '../../src/jobs/lifecycle.js';
import { Scheduler } from '../../src/jobs/scheduler.js';
import { openStore, type CertificateRecord, type Store } from '../../src/store/index.js';
import { advance, recordingCoordinator } from '../support/lifecycle.js';
import { leaf, pem, root } from '../support/hierarchies.js';
import { parseCertificateBundle } from '../../src/chain/index.js';
import { ErrorCode } from '../../src/error-catalogue.js';

/** The dead process's claim: short, since claims lapse on the database's clock, not the scheduler's. */
const CLAIM_MS = 50;

describe('a job claimed again after its process died', () => {
  let store: Store;
  const logger = pino({ level: 'silent' });
  before(async () => {
    store = await openStore('memory:');
  });
  after(async () => {
    await store.close();
  });


  test('finds its certificate installed by another process and completes, without ordering a second one', async () => {
    const instance = await store.instances.create({ name: 'reclaimed', hostnames: ['reclaimed.jobs.test'], cluster: null, keyAlgorithm: 'ecdsa-p256' });
    const started = new Date();
    const { job } = await store.jobs.enqueue({ kind: 'reissue', instanceId: instance.id, dueAt: started, reason: 'rehearsal', requestedBy: 'test' });
    // The process that died: it claimed the job and created the certificate for it.
    const [claimed] = await store.jobs.claimDue('a process that died', started, CLAIM_MS, 10);
    await setTimeout(CLAIM_MS * 2); // the dead process's claim lapses, on the database's clock
    assert.equal(claimed?.id, job.id);
    // Created with its job in one statement, both ways (the coordinator passes the job along): nothing between them to die in.
    const certificate = await store.certificates.create(instance.id, { jobId: job.id });
    assert.equal(certificate.jobId, job.id);
    assert.equal((await store.jobs.get(job.id))?.certificateId, certificate.id, 'the job points at the certificate created for it');
    await advance(store, certificate.id, 'installed');

    const { requested, coordinator } = recordingCoordinator(store);
    const later = () => new Date(started.getTime() + 5_000);
    // Linked, the job is claimed again once its certificate has been settled for a lease (0 here: long enough).
    const scheduler = new Scheduler({ store, coordinator, lifecycle: new JobLifecycle({ store, logger, clock: later }), logger, clock: later, leaseMs: 0 });
    await scheduler.tick();

    assert.deepEqual(requested, [], 'the job claimed again asked for no new certificate');
    assert.equal((await store.jobs.get(job.id))?.state, 'done');
    const [latest] = [await store.certificates.latest(instance.id)];
    assert.equal(latest?.id, certificate.id, 'the installed certificate is still the instance\'s latest');
  });

  test('a claim lapses on the database\'s clock: a process whose clock runs an hour ahead does not take a job claimed a moment ago', async () => {
    const instance = await store.instances.create({ name: 'fastclock', hostnames: ['fastclock.jobs.test'], cluster: null, keyAlgorithm: 'ecdsa-p256' });
    const started = new Date();
    const { job } = await store.jobs.enqueue({ kind: 'reissue', instanceId: instance.id, dueAt: started, reason: 'rehearsal', requestedBy: 'test' });
    await store.jobs.claimDue('a live process', started, 60_000, 10);
    const { requested, coordinator } = recordingCoordinator(store);
    const ahead = () => new Date(started.getTime() + 3_600_000);
    await new Scheduler({ store, coordinator, lifecycle: new JobLifecycle({ store, logger, clock: ahead }), logger, clock: ahead }).tick();
    assert.deepEqual(requested, []);
    const held = await store.jobs.get(job.id);
    assert.deepEqual([held?.state, held?.claimedBy], ['running', 'a live process']);
  });

  test('whose certificate is still under way attaches it instead of creating another', async () => {
    const instance = await store.instances.create({ name: 'underway', hostnames: ['underway.jobs.test'], cluster: null, keyAlgorithm: 'ecdsa-p256' });
    const started = new Date();
    const { job } = await store.jobs.enqueue({ kind: 'reissue', instanceId: instance.id, dueAt: started, reason: 'rehearsal', requestedBy: 'test' });
    await store.jobs.claimDue('a process that died', started, CLAIM_MS, 10);
    await setTimeout(CLAIM_MS * 2); // the dead process's claim lapses, on the database's clock
    const certificate = await store.certificates.create(instance.id);
    assert.equal((await store.jobs.get(job.id))?.certificateId, null, 'a certificate created for no job links none');
    await store.certificates.attachJob(certificate.id, job.id, null);
    assert.equal((await store.jobs.get(job.id))?.certificateId, certificate.id, 'adopting links both ways');
    await advance(store, certificate.id, 'ordering');

    const coordinator = {
      requestIssue: async (instanceId: string) => (await store.certificates.open(instanceId))[0]!,
      reconcileChanged: async () => undefined,
    };
    const later = () => new Date(started.getTime() + 5_000);
    const scheduler = new Scheduler({ store, coordinator, lifecycle: new JobLifecycle({ store, logger, clock: later }), logger, clock: later });
    await scheduler.tick();

    const reclaimed = await store.jobs.get(job.id);
    assert.equal(reclaimed?.state, 'running');
    assert.equal(reclaimed?.certificateId, certificate.id);
  });

  test('whose certificate points at it while it does not point back (linked in two steps by an older release, the second never run) links it, so it is not claimed again every lease', async () => {
    const instance = await store.instances.create({ name: 'halflinked', hostnames: ['halflinked.jobs.test'], cluster: null, keyAlgorithm: 'ecdsa-p256' });
    const started = new Date();
    const { job } = await store.jobs.enqueue({ kind: 'reissue', instanceId: instance.id, dueAt: started, reason: 'rehearsal', requestedBy: 'test' });
    // Created while the job was queued: the certificate names the job, the job names nothing.
    const certificate = await store.certificates.create(instance.id, { jobId: job.id });
    await store.jobs.claimDue('a process that died', started, CLAIM_MS, 10);
    await setTimeout(CLAIM_MS * 2); // the dead process's claim lapses, on the database's clock
    assert.equal((await store.jobs.get(job.id))?.certificateId, null);
    const coordinator = {
      requestIssue: async (instanceId: string) => (await store.certificates.open(instanceId))[0]!,
      reconcileChanged: async () => undefined,
    };
    const later = () => new Date(started.getTime() + 5_000);
    await new Scheduler({ store, coordinator, lifecycle: new JobLifecycle({ store, logger, clock: later }), logger, clock: later }).tick();
    const reclaimed = await store.jobs.get(job.id);
    assert.equal(reclaimed?.state, 'running');
    assert.equal(reclaimed?.certificateId, certificate.id, 'the job points at its certificate again');
  });

  /**
   * A job whose certificate settled, its process dead before it settled the job. A scheduler's
   * `leaseMs` is also how long ago (by the database's clock) the certificate must have settled
   * for the job to be claimed again: 0 here means "long enough".
   */
  const orphaned = async (name: string, settle: (certificateId: string) => Promise<unknown>) => {
    const instance = await store.instances.create({ name, hostnames: [`${name}.jobs.test`], cluster: null, keyAlgorithm: 'ecdsa-p256' });
    const started = new Date();
    const { job } = await store.jobs.enqueue({ kind: 'reissue', instanceId: instance.id, dueAt: started, reason: 'rehearsal', requestedBy: 'test' });
    await store.jobs.claimDue('a process that died', started, CLAIM_MS, 10);
    await setTimeout(CLAIM_MS * 2); // the dead process's claim lapses, on the database's clock
    const certificate = await store.certificates.create(instance.id);
    await store.certificates.attachJob(certificate.id, job.id, null);
    await store.jobs.attachCertificate(job.id, certificate.id);
    await settle(certificate.id);
    const { requested, coordinator } = recordingCoordinator(store);
    const schedulerAt = (ms: number, leaseMs: number) => {
      const clock = () => new Date(started.getTime() + ms);
      return new Scheduler({ store, coordinator, lifecycle: new JobLifecycle({ store, logger, clock }), logger, clock, leaseMs });
    };
    return { instance, job, certificate, requested, schedulerAt };
  };

  test('whose certificate was installed before its process could complete it is completed and its renewal queued, with no new order', async () => {
    const ca = await root('Reclaim Test Root');
    const { instance, job, requested, schedulerAt } = await orphaned('installed-orphan', async (id) => {
      const issued = await leaf(ca, ['installed-orphan.jobs.test']);
      const [parsed] = parseCertificateBundle(issued.cert.pem);
      return advance(store, id, 'installed', { fullchainPem: pem(issued.cert, ca), notBefore: parsed!.notBefore, notAfter: parsed!.notAfter, fingerprintSha256: parsed!.fingerprintSha256 });
    });

    // Moments after the certificate settled, its process may still be completing the job: not claimed.
    await schedulerAt(5_000, 60_000).tick();
    assert.equal((await store.jobs.get(job.id))?.state, 'running', 'a job settled less than a claim lease ago is left to its process');

    await schedulerAt(5_000, 0).tick();
    assert.deepEqual(requested, []);
    assert.equal((await store.jobs.get(job.id))?.state, 'done');
    const renewal = (await store.jobs.history(instance.id)).find((j) => j.kind === 'renewal');
    assert.equal(renewal?.state, 'queued', 'the renewal its process would have queued is queued');
  });

  test('whose certificate failed before its process could fail it is failed the same way, counted as an attempt and retried later', async () => {
    const { job, requested, schedulerAt } = await orphaned('failed-orphan', (id) =>
      store.certificates.apply(id, 'failed', { failure: { reason: 'ValidationFailed', code: 'ACME_VALIDATION_FAILED', names: [] }, lastError: 'the CA could not reach the name' }),
    );
    await schedulerAt(5_000, 0).tick();
    assert.deepEqual(requested, []);
    const failed = await store.jobs.get(job.id);
    assert.equal(failed?.state, 'queued');
    assert.equal(failed?.attempts, 1);
    assert.ok(failed!.dueAt.getTime() > job.dueAt.getTime() + 5_000, 'retried after a backoff, not at once');
    assert.equal(failed?.certificateId, null);

    // When the retry is due, it orders again: the failed attempt's certificate is history, not a reason to fail once more.
    await schedulerAt(failed!.dueAt.getTime() - job.dueAt.getTime() + 1_000, 0).tick();
    assert.equal(requested.length, 1, 'the retry asked for a new certificate');
    const retried = await store.jobs.get(job.id);
    assert.deepEqual([retried?.state, retried?.attempts], ['running', 1]);
  });

  test('whose certificate was revoked before its agent installed it is failed as an attempt and orders again later', async () => {
    const { job, requested, schedulerAt } = await orphaned('revoked-orphan', async (id) => {
      await advance(store, id, 'delivered', { fullchainPem: 'x', fingerprintSha256: 'a'.repeat(64) });
      return store.certificates.apply(id, 'revoked', { revocation: { reason: 'keyCompromise', revokedAt: new Date().toISOString(), requestedBy: 'test', comment: null, signedBy: 'account', fallbackReason: null } as never });
    });
    await schedulerAt(5_000, 0).tick();
    assert.deepEqual(requested, []);
    const failed = await store.jobs.get(job.id);
    assert.deepEqual([failed?.state, failed?.attempts, failed?.lastFailure?.code], ['queued', 1, ErrorCode.ISSUANCE_REVOKED_BEFORE_INSTALL]);
  });

  test('whose certificate was installed and then replaced is completed, and the certificate that replaced it gets its renewal', async () => {
    const ca = await root('Reclaim Replaced Root');
    const installedCertificate = async (instanceId: string) => {
      const certificate = await store.certificates.create(instanceId);
      const issued = await leaf(ca, ['replaced-orphan.jobs.test']);
      const [parsed] = parseCertificateBundle(issued.cert.pem);
      return advance(store, certificate.id, 'installed', { installedAt: new Date(), fullchainPem: pem(issued.cert, ca), notBefore: parsed!.notBefore, notAfter: parsed!.notAfter, fingerprintSha256: parsed!.fingerprintSha256 });
    };
    let replacement: CertificateRecord | undefined;
    const { instance, job, requested, schedulerAt } = await orphaned('replaced-orphan', async (id) => {
      const issued = await leaf(ca, ['replaced-orphan.jobs.test']);
      const [parsed] = parseCertificateBundle(issued.cert.pem);
      const mine = await advance(store, id, 'installed', { installedAt: new Date(), fullchainPem: pem(issued.cert, ca), notBefore: parsed!.notBefore, notAfter: parsed!.notAfter, fingerprintSha256: parsed!.fingerprintSha256 });
      // Installed by hand (no job) while the job was stuck, which supersedes the job's certificate.
      replacement = await installedCertificate(mine.instanceId);
    });
    assert.equal((await store.certificates.get(job.certificateId ?? (await store.jobs.get(job.id))!.certificateId!))?.status, 'superseded');
    await schedulerAt(5_000, 0).tick();
    assert.deepEqual(requested, []);
    const history = await store.jobs.history(instance.id);
    assert.equal(history.find((j) => j.id === job.id)?.state, 'done');
    const renewal = history.find((j) => j.kind === 'renewal');
    assert.equal(renewal?.state, 'queued', 'the replacement is renewed');
    assert.equal((await store.certificates.get(replacement!.id))?.renewAt instanceof Date, true);
  });
});
