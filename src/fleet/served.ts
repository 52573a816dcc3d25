/**
 * The plane's side of served-chain checks: an agent reports what the service on its
 * instance served (`certplane agent --probe`), and the plane judges it in the instance's
 * trust profiles against the certificate it installed there, then stores the verdict for
 * the API and `certplane status`. The report is the agent's word, so it can only ever
 * speak for the agent's own instance (the session says which; the message names none), its
 * certificates are parsed as untrusted DER by the pure chain engine, every text it carries
 * is escaped before it is stored, and how often it is judged is bounded per instance.
 */
import type { Logger } from 'pino';
import { judgeServed, type ServedJudgement, type ServedObservation, type TrustProfile } from '../chain/index.js';
import type { InstanceServedRecord, Store } from '../store/types.js';
import { escapeControlCharacters } from '../untrusted-text.js';
import type { AgentMessage } from '../channel/protocol.js';
import { ErrorCode } from '../error-catalogue.js';

/** What served checks read of the trust settings in force: the profiles and the distrust list, as last reloaded. */
export interface ServedTrust {
  current(): { readonly profiles: readonly TrustProfile[]; readonly distrustedSpkiSha256: ReadonlySet<string> };
}

/**
 * Reports an instance may have judged in a burst, and how fast the allowance comes back:
 * an honest agent reports once per installation and once per probe interval (a second at
 * the least), so 20 at once and one a second is never reached by one, and a hostile agent
 * costs the plane at most one judgement a second.
 */
const REPORT_BURST = 20;
const REPORT_REFILL_MS = 1_000;
/** Instances whose allowance is remembered before full ones are forgotten. */
const BUDGETS_KEPT = 10_000;
/** Findings stored per instance: a report holds at most 32 probes, each with a few. */
const PROBLEMS_KEPT = 64;

export type ServedReport = Extract<AgentMessage, { type: 'served' }>;

export class ServedChecks {
  readonly #budgets = new Map<string, { tokens: number; at: number }>();

  constructor(
    private readonly deps: {
      store: Store;
      trust: ServedTrust;
      clock: () => Date;
      logger: Logger;
      /** Counts ignored reports (the channel's rejection counter). */
      rejected?: (code: string) => void;
      burst?: number;
      refillMs?: number;
    },
  ) {}

  /**
   * Judges and stores the report of the agent of `instanceId`. Returns the judgement, or
   * undefined when the report was not judged (too frequent, or the instance is gone).
   */
  async onReport(instanceId: string, report: ServedReport): Promise<ServedJudgement | undefined> {
    const { store, clock, logger } = this.deps;
    const log = logger.child({ instanceId });
    if (!this.#take(instanceId)) {
      this.deps.rejected?.(ErrorCode.CHANNEL_SERVED_REPORT_TOO_FREQUENT);
      log.warn({ code: ErrorCode.CHANNEL_SERVED_REPORT_TOO_FREQUENT }, 'served-chain report ignored: this agent reports faster than the plane judges');
      return undefined;
    }
    const instance = await store.instances.get(instanceId);
    if (!instance || instance.decommissioned) return undefined;
    const installed = await store.certificates.latestInstalled(instanceId);
    const settings = this.deps.trust.current();
    const at = clock();
    const observations = report.probes.map((probe): ServedObservation => {
      const where = { target: probe.target, sni: probe.sni };
      return 'unreachable' in probe ? { ...where, unreachable: probe.unreachable } : { ...where, certificates: probe.certificates.map((der) => Buffer.from(der, 'base64')) };
    });
    const judged = judgeServed(observations, installed?.fingerprintSha256 ?? null, instance.trustProfiles, settings.profiles, { at, distrustedSpkiSha256: settings.distrustedSpkiSha256 });
    const record: InstanceServedRecord = {
      instanceId,
      certificateId: installed?.id ?? null,
      status: judged.status,
      checkedAt: at,
      fingerprintSha256: judged.fingerprintSha256,
      anchor: judged.anchor,
      // The agent's words (its targets, its error messages) are shown in tables and logs: escaped, so no newline forges a row.
      problems: judged.problems.slice(0, PROBLEMS_KEPT).map((p) => ({ target: escapeControlCharacters(p.target), sni: p.sni, code: escapeControlCharacters(p.code), message: escapeControlCharacters(p.message).slice(0, 1000) })),
    };
    await store.served.record(record);
    const level = judged.status === 'match' ? 'info' : 'warn';
    log[level]({ status: judged.status, served: judged.fingerprintSha256, installed: installed?.fingerprintSha256 ?? null, problems: record.problems.length }, 'served chain judged');
    return judged;
  }

  /** Takes one report from the instance's allowance; false when it is spent. */
  #take(instanceId: string): boolean {
    const burst = this.deps.burst ?? REPORT_BURST;
    const refillMs = this.deps.refillMs ?? REPORT_REFILL_MS;
    const now = Date.now();
    const budget = this.#budgets.get(instanceId) ?? { tokens: burst, at: now };
    const tokens = Math.min(burst, budget.tokens + (now - budget.at) / refillMs);
    if (tokens < 1) {
      this.#budgets.set(instanceId, { tokens, at: now });
      return false;
    }
    this.#budgets.set(instanceId, { tokens: tokens - 1, at: now });
    if (this.#budgets.size > BUDGETS_KEPT) this.#forgetFull(burst, refillMs, now);
    return true;
  }

  /** Forgets allowances that are full again: remembering them changes nothing. */
  #forgetFull(burst: number, refillMs: number, now: number): void {
    for (const [id, budget] of this.#budgets) if (budget.tokens + (now - budget.at) / refillMs >= burst) this.#budgets.delete(id);
  }
}
