/**
 * Which path a fleet campaign takes for one instance. A reissue orders a new certificate;
 * a rechain delivers a stored chain of the installed certificate (same leaf, same key) that
 * the trust in force now accepts, with no order and no rate-limit budget spent: in 2021 the
 * certificates were fine and only their chains were not, so most of a fleet needs no CA at
 * all. Pure: the facts about the instance are arguments, decided the same way in a dry run,
 * when a campaign starts and when its job runs.
 */
import { rechainRefusal } from './machine.js';
import type { CertificateState } from './machine.js';

/** `reissue`: a new order for every instance (the default). `rechain`: stored chains only; instances without one are reported, not reissued. `rechain-or-reissue`: a stored chain where one fits, a new order elsewhere. */
export const REISSUE_MODES = ['reissue', 'rechain', 'rechain-or-reissue'] as const;
export type ReissueMode = (typeof REISSUE_MODES)[number];

/**
 * Why an instance takes neither path. `current`: its installed chain is already the one the
 * trust in force selects. `no-alternate-chain`: no stored chain of its certificate satisfies
 * the preferences and every trust profile of the instance (only a new order helps).
 * `no-installed-certificate`: nothing to re-chain. `issuance-under-way`: a certificate is
 * being issued or delivered, and its chain is chosen under the trust in force.
 */
export const SKIP_REASONS = ['current', 'no-alternate-chain', 'no-installed-certificate', 'issuance-under-way'] as const;
export type SkipReason = (typeof SKIP_REASONS)[number];

export type CampaignPath = { readonly path: 'reissue' } | { readonly path: 'rechain'; readonly chainIndex: number } | { readonly path: 'skip'; readonly reason: SkipReason };

/** What the plane knows about one instance when it decides. */
export interface RechainFacts {
  /** The state of its most recent installed certificate, undefined when it has none. */
  readonly installed: CertificateState | undefined;
  /** States of its open certificates (at most one). */
  readonly open: readonly CertificateState[];
  /**
   * The stored chain the trust in force selects for the installed certificate: `current`
   * (the installed one), an alternate's index, or `none` (no stored chain satisfies).
   * Undefined when there is no installed certificate.
   */
  readonly selection: 'current' | 'none' | { readonly alternateIndex: number } | undefined;
}

/** The path `mode` gives an instance in the situation `facts` describe. */
export function campaignPath(mode: ReissueMode, facts: RechainFacts): CampaignPath {
  if (mode === 'reissue') return { path: 'reissue' };
  const refusal = rechainRefusal(facts);
  const fallBack = (reason: SkipReason): CampaignPath => (mode === 'rechain-or-reissue' ? { path: 'reissue' } : { path: 'skip', reason });
  if (refusal) return fallBack(refusal);
  if (facts.selection === 'current') return { path: 'skip', reason: 'current' };
  if (facts.selection === undefined || facts.selection === 'none') return fallBack('no-alternate-chain');
  return { path: 'rechain', chainIndex: facts.selection.alternateIndex };
}
