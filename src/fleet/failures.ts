/**
 * Which lifecycle failure reason (lifecycle/reasons.ts) an error stands for, decided by its
 * stable code and never by its message. The reason decides whether the work is tried again,
 * so a code that maps to a permanent reason stops a campaign from ordering again for nothing.
 */
import { CertplaneError } from '../errors.js';
import type { FailureReason, FailureReasonName } from '../lifecycle/index.js';
import { ErrorCode } from '../error-catalogue.js';

const REASON_BY_CODE: Readonly<Record<string, FailureReasonName>> = {
  [ErrorCode.ACME_RATE_LIMITED]: 'RateLimited',
  [ErrorCode.ACME_UNREACHABLE]: 'CaUnreachable',
  [ErrorCode.ACME_VALIDATION_FAILED]: 'ValidationFailed',
  [ErrorCode.ACME_REJECTED_IDENTIFIER]: 'IdentifierRejected',
  [ErrorCode.ACME_ALREADY_REPLACED]: 'AlreadyReplaced',
  [ErrorCode.ACME_BAD_CSR]: 'CsrRejected',
  [ErrorCode.ACME_ACCOUNT_REFUSED]: 'AccountRefused',
  [ErrorCode.ACME_UNKNOWN_PROFILE]: 'ProfileUnknown',
  [ErrorCode.ACME_NO_SOLVER]: 'ChallengeUnsupported',
  [ErrorCode.ACME_BAD_NONCE]: 'CaError',
  [ErrorCode.ACME_SERVER_INTERNAL]: 'CaError',
  [ErrorCode.ACME_PROBLEM]: 'CaError',
  [ErrorCode.ACME_ORDER_FAILED]: 'CaError',
  [ErrorCode.ACME_BAD_CHAIN]: 'CaError',
  [ErrorCode.ACME_DIRECTORY_UNREADABLE]: 'CaError',
  [ErrorCode.AGENT_OFFLINE]: 'AgentOffline',
  [ErrorCode.AGENT_TIMEOUT]: 'AgentOffline',
  [ErrorCode.AGENT_REQUEST_REFUSED]: 'AgentRefused',
  [ErrorCode.ISSUANCE_CSR_REJECTED]: 'CsrRejected',
  [ErrorCode.ISSUANCE_INSTANCE_CHANGED]: 'InstanceChanged',
  [ErrorCode.INSTANCE_DECOMMISSIONED]: 'InstanceDecommissioned',
  [ErrorCode.RECHAIN_NO_SATISFYING_CHAIN]: 'RechainUnavailable',
  [ErrorCode.RECHAIN_NO_INSTALLED_CERTIFICATE]: 'RechainUnavailable',
  [ErrorCode.RECHAIN_ISSUANCE_UNDER_WAY]: 'RechainUnavailable',
};

/** Families of codes by their room's prefix: the chain engine's findings, and the CSR checks. */
const REASON_BY_PREFIX: readonly (readonly [prefix: string, reason: FailureReasonName])[] = [
  ['CHAIN_', 'ChainUnsatisfied'],
  ['CSR_', 'CsrRejected'],
];

/** The failure reason for `error`: by its code, then its code's family; anything else is internal. */
export function failureOf(error: unknown): FailureReason {
  if (!(error instanceof CertplaneError)) return { reason: 'Internal', code: ErrorCode.INTERNAL };
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
  return { reason: 'AgentRefused', code: ErrorCode.AGENT_INSTALL_FAILED, agentCode };
}
