/** The lifecycle engine: the states of a certificate, the one transition table, typed failure reasons, and the ownership decisions behind leases. */
export * from './machine.js';
export * from './reasons.js';
export * from './ownership.js';
