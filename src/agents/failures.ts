/**
 * Which lifecycle failure reason (lifecycle/reasons.ts) an error stands for, decided by its
 * stable code and never by its message. The reason decides whether the work is tried again,
 * so a code that maps to a permanent reason stops a campaign from ordering again for nothing.
 */
import { CertplaneError } from '../errors.js';
import { AcmeProblemCode } from '../acme/problems.js';
import { AcmeErrorCode } from '../acme/issuer.js';
import type { FailureReason, FailureReasonName } from '../lifecycle/index.js';
import { SessionErrorCode } from './sessions.js';
import { RevocationErrorCode } from './revocation.js';

export const IssuanceErrorCode = {
  CSR_REJECTED: 'ISSUANCE_CSR_REJECTED',
  UNKNOWN_INSTANCE: 'ISSUANCE_UNKNOWN_INSTANCE',
  UNKNOWN_CERTIFICATE: 'ISSUANCE_UNKNOWN_CERTIFICATE',
  /** An order stopped before it settled (shutdown, or its lease taken over); never a failure: the next lease holder resumes it. */
  STOPPED: 'ISSUANCE_STOPPED',
  /** The instance's names or key algorithm changed while a certificate was under way for the old ones. */
  INSTANCE_CHANGED: 'ISSUANCE_INSTANCE_CHANGED',
} as const;

const REASON_BY_CODE: Readonly<Record<string, FailureReasonName>> = {
  [AcmeProblemCode.RATE_LIMITED]: 'RateLimited',
  [AcmeErrorCode.UNREACHABLE]: 'CaUnreachable',
  [AcmeProblemCode.VALIDATION_FAILED]: 'ValidationFailed',
  [AcmeProblemCode.REJECTED_IDENTIFIER]: 'IdentifierRejected',
  [AcmeProblemCode.ALREADY_REPLACED]: 'AlreadyReplaced',
  [AcmeProblemCode.BAD_CSR]: 'CsrRejected',
  [AcmeProblemCode.ACCOUNT_REFUSED]: 'AccountRefused',
  [AcmeErrorCode.UNKNOWN_PROFILE]: 'ProfileUnknown',
  [AcmeErrorCode.NO_SOLVER]: 'ChallengeUnsupported',
  [AcmeProblemCode.BAD_NONCE]: 'CaError',
  [AcmeProblemCode.SERVER_INTERNAL]: 'CaError',
  [AcmeProblemCode.PROBLEM]: 'CaError',
  [AcmeErrorCode.ORDER_FAILED]: 'CaError',
  [AcmeErrorCode.BAD_CHAIN]: 'CaError',
  [AcmeErrorCode.DIRECTORY_UNREADABLE]: 'CaError',
  [SessionErrorCode.OFFLINE]: 'AgentOffline',
  [SessionErrorCode.TIMEOUT]: 'AgentOffline',
  [SessionErrorCode.REQUEST_REFUSED]: 'AgentRefused',
  [IssuanceErrorCode.CSR_REJECTED]: 'CsrRejected',
  [IssuanceErrorCode.INSTANCE_CHANGED]: 'InstanceChanged',
  [RevocationErrorCode.INSTANCE_DECOMMISSIONED]: 'InstanceDecommissioned',
};

/** Families of codes by their room's prefix: the chain engine's findings, and the CSR checks. */
const REASON_BY_PREFIX: readonly (readonly [prefix: string, reason: FailureReasonName])[] = [
  ['CHAIN_', 'ChainUnsatisfied'],
  ['CSR_', 'CsrRejected'],
];

/** The failure reason for `error`: by its code, then its code's family; anything else is internal. */
export function failureOf(error: unknown): FailureReason {
  if (!(error instanceof CertplaneError)) return { reason: 'Internal', code: 'INTERNAL' };
  const reason = REASON_BY_CODE[error.code] ?? REASON_BY_PREFIX.find(([prefix]) => error.code.startsWith(prefix))?.[1] ?? 'Internal';
  const { retryAt, names, problemType, agentCode } = error.details as { retryAt?: unknown; names?: unknown; problemType?: unknown; agentCode?: unknown };
  return {
    reason,
    code: error.code,
    ...(typeof agentCode === 'string' ? { agentCode } : {}),
    ...(typeof retryAt === 'string' ? { retryAt } : {}),
    ...(Array.isArray(names) ? { names: names.filter((n): n is string => typeof n === 'string') } : {}),
    ...(typeof problemType === 'string' ? { problemType } : {}),
  };
}

/** The agent refused or failed to install a delivery, with its own code. */
export function agentRefused(agentCode: string): FailureReason {
  return { reason: 'AgentRefused', code: 'AGENT_INSTALL_FAILED', agentCode };
}
