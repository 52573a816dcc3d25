/**
 * Challenge solvers: the one seam between an ACME order and whatever makes a challenge
 * answerable (a DNS record, a file served by the agent on the instance). Small on
 * purpose, like CertMagic's Solver: present, then clean up, whatever happened between.
 */
import type { DnsProvider } from './dns/provider.js';

export type ChallengeType = 'dns-01' | 'http-01';

/** What a solver needs to know about one challenge. */
export interface ChallengeContext {
  /** The identifier being validated, without any "*." prefix. */
  readonly domain: string;
  readonly wildcard: boolean;
  readonly token: string;
  /**
   * For http-01 the key authorization to serve; for dns-01 the base64url SHA-256 digest
   * to publish (acme-client computes both).
   */
  readonly keyAuthorization: string;
}

export interface ChallengeSolver {
  readonly type: ChallengeType;
  /** Makes the challenge answerable; `signal` ends any wait in it (shutdown, a lost lease) with the signal's reason. */
  present(challenge: ChallengeContext, signal?: AbortSignal): Promise<void>;
  cleanUp(challenge: ChallengeContext): Promise<void>;
}

/** Publishes dns-01 TXT records through a DNS provider (Route 53, pebble-challtestsrv, ...). */
export class Dns01Solver implements ChallengeSolver {
  readonly type = 'dns-01' as const;

  constructor(private readonly provider: DnsProvider) {}

  present(challenge: ChallengeContext, signal?: AbortSignal): Promise<void> {
    return this.provider.present(`_acme-challenge.${challenge.domain}`, challenge.keyAuthorization, signal);
  }

  cleanUp(challenge: ChallengeContext): Promise<void> {
    return this.provider.cleanUp(`_acme-challenge.${challenge.domain}`, challenge.keyAuthorization);
  }
}

/**
 * Whatever serves /.well-known/acme-challenge/TOKEN on port 80 of the instance: the
 * agent in production, pebble-challtestsrv in tests and the demo.
 */
export interface Http01Responder {
  /** `signal` ends the wait for the responder (shutdown, a lost lease) with its reason. */
  serve(domain: string, token: string, keyAuthorization: string, signal?: AbortSignal): Promise<void>;
  withdraw(domain: string, token: string): Promise<void>;
}

/** Answers http-01 challenges through an Http01Responder. */
export class Http01Solver implements ChallengeSolver {
  readonly type = 'http-01' as const;

  constructor(private readonly responder: Http01Responder) {}

  present(challenge: ChallengeContext, signal?: AbortSignal): Promise<void> {
    return this.responder.serve(challenge.domain, challenge.token, challenge.keyAuthorization, signal);
  }

  cleanUp(challenge: ChallengeContext): Promise<void> {
    return this.responder.withdraw(challenge.domain, challenge.token);
  }
}
