/** The lifecycle engine: the states of a certificate, the one transition table, typed failure reasons, the ownership decisions behind leases, and the reasons a certificate is revoked. */
export * from './machine.js';
export * from './reasons.js';
export * from './ownership.js';
export * from './revocation.js';
export * from './renewal.js';
export * from './rechain.js';
