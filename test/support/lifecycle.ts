/**
 * Moves a certificate along the lifecycle's happy path through the store's only write path
 * (events), for tests that need one in a given state without an ACME order.
 */
import type { CertificateState, LifecycleEvent } from '../../src/lifecycle/index.js';
import type { CertificateRecord, CertificateUpdate, Store } from '../../src/store/index.js';

const HAPPY_PATH: readonly (readonly [LifecycleEvent, CertificateState])[] = [
  ['csr_accepted', 'csr_accepted'],
  ['order_created', 'ordering'],
  ['chain_verified', 'issued'],
  ['delivered', 'delivered'],
  ['installed', 'installed'],
];

/** Applies each event up to `target`, `fields` with the last one; fails loudly if any event is refused or stale. */
export async function advance(store: Store, certificateId: string, target: CertificateState, fields: CertificateUpdate = {}): Promise<CertificateRecord> {
  const last = HAPPY_PATH.findIndex(([, state]) => state === target);
  if (last < 0) throw new Error(`${target} is not on the happy path`);
  let record: CertificateRecord | undefined;
  for (const [index, [event]] of HAPPY_PATH.slice(0, last + 1).entries()) {
    record = await store.certificates.apply(certificateId, event, index === last ? fields : {});
    if (!record) throw new Error(`event ${event} did not apply to certificate ${certificateId}`);
  }
  return record as CertificateRecord;
}

/**
 * A scheduler's coordinator for tests without agents: it records which instances it was
 * asked to issue for and creates their certificates; `room`, when given, is what it says it
 * has room for.
 */
export function recordingCoordinator(store: Store, room?: () => number) {
  const requested: string[] = [];
  const coordinator = {
    requestIssue: async (instanceId: string) => {
      requested.push(instanceId);
      return store.certificates.create(instanceId);
    },
    reconcileChanged: async () => undefined,
    ...(room ? { room } : {}),
  };
  return { requested, coordinator };
}
