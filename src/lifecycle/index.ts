/** The lifecycle engine: the states of a certificate, the one transition table, and typed failure reasons, and the reasons a certificate is revoked. */
export * from './machine.js';
export * from './reasons.js';
export * from './revocation.js';
