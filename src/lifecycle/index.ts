/** The lifecycle engine: the states of a certificate, the one transition table, and typed failure reasons. */
export * from './machine.js';
export * from './reasons.js';
