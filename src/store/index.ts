/**
 * The storage room's public face: open a store by URL and use the records and operations
 * of the contract. Engines and migrations stay inside the room, so no caller can reach
 * around the contract to a driver.
 */
export { openStore } from './store.js';
export type { OpenOptions } from './engines.js';
/** A database URL with its password masked, for messages and the audit trail. */
export { redactUrl } from './engines.js';
export * from './types.js';
export type { AuditEntry, AuditStore, CampaignCounts, CampaignInstance, CampaignRecord, CampaignState, CampaignStore, JobKind, JobRecord, JobState, JobStore, RenewalPlan } from './jobs.js';
export { JOB_KINDS } from './jobs.js';
