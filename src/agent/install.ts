/**
 * Installs a delivered chain on the instance: verifies it again, independently of the
 * management plane, makes it live next to its pending key (or, for a rechain, next to the
 * live key of the same certificate), reloads the database server and
 * rolls back when the reload fails. Every step is journaled, so a delivery repeated after
 * a reconnect or a crash finishes the work instead of doing it twice.
 */
import path from 'node:path';
import { parseCertificateBundle, verifyChain, type Certificate } from '../chain/index.js';
import { CertplaneError } from '../errors.js';
import type { Logger } from '../log/logger.js';
import { discardPendingKey, pendingKeyPath, readPendingKey, spkiSha256OfPrivateKeyPem } from './keys.js';
import { runReloadCommand, type ReloadOutcome } from './reload.js';
import {
  appendJournal,
  PairFile,
  PRIVATE_FILE_MODE,
  PUBLIC_FILE_MODE,
  readFileIfExists,
  readJournal,
  removeFilesDurably,
  SHARED_KEY_FILE_MODE,
  writeFileAtomic,
  writeFilesAtomic,
  type AgentState,
  type JournalEvent,
} from './state.js';
import { ErrorCode } from '../error-catalogue.js';

/** A minute covers a database server that finishes in-flight work before reloading, and still ends a hang. */
const DEFAULT_RELOAD_TIMEOUT_MS = 60_000;

/** What an installer needs, passed in by the agent's composition so tests can give their own clock, anchors and command. */
export interface InstallerOptions {
  readonly state: AgentState;
  /** The agent's own trust store: the roots the instance's clients trust, not whatever the plane says. */
  readonly trustAnchors: readonly Certificate[];
  /** Shell command that makes the database server load live/; omitted when the server rereads the files itself. */
  readonly reloadCommand?: string;
  readonly reloadTimeoutMs?: number;
  readonly clock?: () => Date;
  readonly logger?: Logger;
}

/** The installed leaf, and whether this call found it already in place (a repeated delivery). */
export interface InstallResult {
  readonly fingerprintSha256: string;
  readonly alreadyInstalled: boolean;
}

interface Pair {
  readonly fullchainPem: string;
  readonly privkeyPem: string;
}

/**
 * absent: no chain (nothing installed); whole: chain and key that belong together;
 * torn: anything else, i.e. an install or rollback interrupted between its two renames.
 */
type PairOnDisk = { readonly kind: 'absent' } | { readonly kind: 'torn' } | { readonly kind: 'whole'; readonly pair: Pair; readonly fingerprintSha256: string };

/** Installs delivered chains into the state directory's live/ slot, one at a time. */
export class Installer {
  private readonly clock: () => Date;
  private readonly reloadTimeoutMs: number;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly options: InstallerOptions) {
    this.clock = options.clock ?? (() => new Date());
    this.reloadTimeoutMs = options.reloadTimeoutMs ?? DEFAULT_RELOAD_TIMEOUT_MS;
  }

  /**
   * Installs `fullchainPem` for the pending key of `certificateId`, or finishes an earlier
   * install of the same leaf. Calls run one after another: two deliveries of one
   * certificate (a resend after a reconnect) must not both see "not installed yet".
   */
  install(certificateId: string, fullchainPem: string, expectedFingerprintSha256: string): Promise<InstallResult> {
    const run = this.queue.then(() => this.installNow(certificateId, fullchainPem, expectedFingerprintSha256.toLowerCase()));
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** The leaf fingerprint of live/fullchain.pem, or null: what the agent reports as installed. */
  async installedFingerprint(): Promise<string | null> {
    const pem = await readFileIfExists(this.pairPath('live', PairFile.fullchain));
    return pem === null ? null : (parseCertificateBundle(pem, 'live/fullchain.pem')[0] as Certificate).fingerprintSha256;
  }

  /** The DNS names of live/fullchain.pem's leaf (the instance's hostnames when it was issued), or none: what the served-chain probe names as SNI. */
  async installedNames(): Promise<readonly string[]> {
    const pem = await readFileIfExists(this.pairPath('live', PairFile.fullchain));
    if (pem === null) return [];
    try {
      return (parseCertificateBundle(pem, 'live/fullchain.pem')[0] as Certificate).dnsNames;
    } catch {
      return [];
    }
  }

  /**
   * The private key (PEM) whose public key has SPKI SHA-256 `spkiSha256`: the pending key of
   * `certificateId`, or the key of the pair in live/ or previous/; null when this agent holds none.
   * For a revocation signed by the certificate's own key (./revocation.ts).
   */
  async keyFor(spkiSha256: string, certificateId: string): Promise<string | null> {
    const pending = await readPendingKey(this.options.state, certificateId);
    if (pending?.spkiSha256 === spkiSha256) return pending.pem;
    for (const slot of ['live', 'previous'] as const) {
      const pem = await readFileIfExists(this.pairPath(slot, PairFile.privkey));
      if (pem !== null && spkiSha256OfPrivateKeyPem(pem) === spkiSha256) return pem;
    }
    return null;
  }

  private async installNow(certificateId: string, fullchainPem: string, expected: string): Promise<InstallResult> {
    pendingKeyPath(this.options.state, certificateId);
    const live = await this.inspectPair('live');
    const bundle = this.parseBundle(fullchainPem, certificateId);
    const leaf = bundle[0] as Certificate;
    if (leaf.fingerprintSha256 !== expected) {
      throw new CertplaneError(
        ErrorCode.AGENT_FINGERPRINT_MISMATCH,
        `The delivered chain's leaf has fingerprint ${leaf.fingerprintSha256}, not the announced ${expected}; the agent installs only the certificate the plane recorded. Reissue certificate ${certificateId}.`,
        { certificateId, expectedFingerprintSha256: expected, actualFingerprintSha256: leaf.fingerprintSha256 },
      );
    }
    if (live.kind === 'whole' && live.fingerprintSha256 === expected) {
      // The same leaf on the same chain: a repeated delivery. On another chain: a rechain.
      if (sameCertificates(parseCertificateBundle(live.pair.fullchainPem, 'live/fullchain.pem'), bundle)) return this.finishInstalled(certificateId, live.pair, expected);
      return this.rechain(certificateId, fullchainPem, bundle, live);
    }
    const pending = await readPendingKey(this.options.state, certificateId);
    if (pending === null) {
      throw new CertplaneError(
        ErrorCode.AGENT_NO_PENDING_KEY,
        `No key is pending for certificate ${certificateId} on this instance (it was never requested here, was cancelled, or was already used); reissue the certificate so the agent makes a new key and CSR.`,
        { certificateId },
      );
    }
    if (pending.spkiSha256 !== leaf.spkiSha256) {
      throw new CertplaneError(
        ErrorCode.AGENT_KEY_MISMATCH,
        `The delivered leaf certifies key sha256:${leaf.spkiSha256}, not this instance's pending key sha256:${pending.spkiSha256} for certificate ${certificateId}; the chain belongs to another request. Reissue the certificate.`,
        { certificateId, leafSpkiSha256: leaf.spkiSha256, pendingSpkiSha256: pending.spkiSha256 },
      );
    }
    const report = verifyChain(bundle, { trustAnchors: this.options.trustAnchors, at: this.clock(), expectedSpkiSha256: pending.spkiSha256 });
    if (!report.ok) {
      const codes = report.errors.map((problem) => problem.code);
      throw new CertplaneError(
        ErrorCode.AGENT_CHAIN_UNVERIFIED,
        `The delivered chain for certificate ${certificateId} does not verify against this instance's trust anchors (${codes.join(', ')}): ${report.errors.map((problem) => problem.message).join('; ')}. Check the agent's trust store and the plane's preferred chain.`,
        { certificateId, codes, errors: report.errors },
      );
    }

    await this.makeLive({ fullchainPem, privkeyPem: pending.pem }, live);
    // Side by side, both after the pair is durable in live/: a crash that keeps either without
    // the other is finished by the next delivery (the leaf is live, so finishInstalled runs,
    // which discards the key again and reloads unless the journal shows a reload).
    await Promise.all([this.journal('installed', certificateId, expected), discardPendingKey(this.options.state, certificateId)]);
    this.options.logger?.info({ certificateId, fingerprintSha256: expected }, 'certificate installed');
    await this.reloadOrRollBack(certificateId, expected, pending.pem);
    return { fingerprintSha256: expected, alreadyInstalled: false };
  }

  /**
   * A rechain: the live certificate again, on another chain (a trust change made the plane
   * choose another of the chains the CA offered for it). The key is the live one, never sent
   * and never pending; the chain is verified against this instance's own anchors like any
   * delivery, installed the same atomic way with the current pair kept as previous/, and
   * rolled back to it when the reload fails.
   */
  private async rechain(certificateId: string, fullchainPem: string, bundle: readonly Certificate[], live: Extract<PairOnDisk, { kind: 'whole' }>): Promise<InstallResult> {
    const leaf = bundle[0] as Certificate;
    const report = verifyChain(bundle, { trustAnchors: this.options.trustAnchors, at: this.clock(), expectedSpkiSha256: leaf.spkiSha256 });
    if (!report.ok) {
      const codes = report.errors.map((problem) => problem.code);
      throw new CertplaneError(
        ErrorCode.AGENT_CHAIN_UNVERIFIED,
        `The re-chained delivery for certificate ${certificateId} does not verify against this instance's trust anchors (${codes.join(', ')}): ${report.errors.map((problem) => problem.message).join('; ')}. The installed chain stays; check the agent's trust store and the plane's trust profiles.`,
        { certificateId, codes, errors: report.errors },
      );
    }
    await this.makeLive({ fullchainPem, privkeyPem: live.pair.privkeyPem }, live);
    await this.journal('installed', certificateId, live.fingerprintSha256);
    this.options.logger?.info({ certificateId, fingerprintSha256: live.fingerprintSha256 }, 'certificate re-chained: the same certificate and key on another chain');
    await discardPendingKey(this.options.state, certificateId);
    await this.reloadOrRollBack(certificateId, live.fingerprintSha256, live.pair.privkeyPem, { keyStaysLive: true });
    return { fingerprintSha256: live.fingerprintSha256, alreadyInstalled: false };
  }

  /**
   * The leaf is already live. If the journal does not show it reloaded, the agent stopped
   * between install and reload: reload now, because installing again would replace
   * previous/ with this very pair and lose the rollback target.
   */
  private async finishInstalled(certificateId: string, live: Pair, fingerprint: string): Promise<InstallResult> {
    await discardPendingKey(this.options.state, certificateId);
    if (this.options.reloadCommand !== undefined && (await this.lastEventFor(fingerprint)) !== 'reloaded') {
      this.options.logger?.warn({ certificateId, fingerprintSha256: fingerprint }, 'certificate is live but was never reloaded; reloading now');
      await this.reloadOrRollBack(certificateId, fingerprint, live.privkeyPem);
    }
    return { fingerprintSha256: fingerprint, alreadyInstalled: true };
  }

  private parseBundle(fullchainPem: string, certificateId: string): Certificate[] {
    try {
      return parseCertificateBundle(fullchainPem, `chain for ${certificateId}`);
    } catch (cause) {
      if (!(cause instanceof CertplaneError)) throw cause;
      throw new CertplaneError(ErrorCode.AGENT_CHAIN_UNVERIFIED, `The delivered chain for certificate ${certificateId} does not parse (${cause.code}): ${cause.message}`, { certificateId, codes: [cause.code] }, { cause });
    }
  }

  /**
   * Saves the current live pair as previous/, then replaces live/. The key is written
   * before the chain: fullchain.pem is the commit point, because whatever certificate it
   * names must already have its key beside it (the installer's own "already installed"
   * check and the status it reports both read the chain). A reader may see the new key
   * with the old chain for the one rename in between; a crash there leaves a pair the
   * next install recognises as torn (key and leaf differ) and does not save as previous/,
   * since previous/ already holds what the interrupted install replaced. With nothing
   * live, previous/ is emptied: this install replaces nothing, and a rollback must never
   * resurrect an older, stale pair.
   */
  private async makeLive(next: Pair, live: PairOnDisk): Promise<void> {
    if (live.kind === 'whole') await this.writePair('previous', live.pair);
    else if (live.kind === 'absent') await this.removePair('previous');
    await this.writePair('live', next);
  }

  /**
   * Runs the reload command for the live pair. On failure the new key goes back to
   * pending/ (so a later re-delivery can retry without a new order), the previous pair is
   * restored and reloaded, or the new pair removed when there was none; then it throws.
   */
  private async reloadOrRollBack(certificateId: string, fingerprint: string, keyPem: string, options: { keyStaysLive?: boolean } = {}): Promise<void> {
    const command = this.options.reloadCommand;
    if (command === undefined) return;
    const outcome = await this.reload(command, fingerprint);
    if (outcome.ok) {
      await this.journal('reloaded', certificateId, fingerprint);
      this.options.logger?.info({ certificateId, fingerprintSha256: fingerprint }, 'database server reloaded');
      return;
    }
    await this.journal('reload_failed', certificateId, fingerprint);
    // A rechain's key is the previous pair's, restored with it: no copy goes back to pending/.
    if (!options.keyStaysLive) await writeFileAtomic(pendingKeyPath(this.options.state, certificateId), keyPem, PRIVATE_FILE_MODE);
    const previous = await this.inspectPair('previous');
    let restoredFingerprint: string | null = null;
    let restoreOutcome: ReloadOutcome | null = null;
    if (previous.kind === 'whole') {
      await this.writePair('live', previous.pair);
      restoredFingerprint = previous.fingerprintSha256;
      restoreOutcome = await this.reload(command, restoredFingerprint);
    } else {
      await this.removePair('live');
    }
    await this.journal('rolled_back', certificateId, fingerprint);
    this.options.logger?.error(
      { certificateId, fingerprintSha256: fingerprint, exitCode: outcome.exitCode, timedOut: outcome.timedOut, restoredFingerprintSha256: restoredFingerprint, restoreReloadOk: restoreOutcome?.ok ?? null },
      'reload failed; rolled back',
    );
    const restoreNote = restoredFingerprint === null
      ? 'removed the new pair (nothing was installed before)'
      : `restored the previous certificate ${restoredFingerprint}${restoreOutcome?.ok ? ' and reloaded it' : `, but reloading it failed too (${describe(restoreOutcome as ReloadOutcome, this.reloadTimeoutMs)})`}`;
    throw new CertplaneError(
      ErrorCode.AGENT_RELOAD_FAILED,
      `The reload command ${describe(outcome, this.reloadTimeoutMs)} after installing certificate ${certificateId} (${fingerprint}); the agent ${restoreNote}. Fix the reload command or the server's TLS configuration, then deliver again.${outcome.stderrTail ? ` stderr:\n${outcome.stderrTail}` : ''}`,
      {
        certificateId,
        fingerprintSha256: fingerprint,
        exitCode: outcome.exitCode,
        signal: outcome.signal,
        timedOut: outcome.timedOut,
        stderrTail: outcome.stderrTail,
        restoredFingerprintSha256: restoredFingerprint,
        restoreReloadOk: restoreOutcome?.ok ?? null,
      },
    );
  }

  private reload(command: string, fingerprint: string): Promise<ReloadOutcome> {
    return runReloadCommand(
      command,
      { CERTPLANE_FULLCHAIN: this.pairPath('live', PairFile.fullchain), CERTPLANE_PRIVKEY: this.pairPath('live', PairFile.privkey), CERTPLANE_FINGERPRINT: fingerprint },
      this.reloadTimeoutMs,
    );
  }

  private async inspectPair(slot: 'live' | 'previous'): Promise<PairOnDisk> {
    const fullchainPem = await readFileIfExists(this.pairPath(slot, PairFile.fullchain));
    if (fullchainPem === null) return { kind: 'absent' };
    const privkeyPem = await readFileIfExists(this.pairPath(slot, PairFile.privkey));
    if (privkeyPem === null) return { kind: 'torn' };
    try {
      const leaf = parseCertificateBundle(fullchainPem, `${slot}/${PairFile.fullchain}`)[0] as Certificate;
      if (leaf.spkiSha256 !== spkiSha256OfPrivateKeyPem(privkeyPem)) return { kind: 'torn' };
      return { kind: 'whole', pair: { fullchainPem, privkeyPem }, fingerprintSha256: leaf.fingerprintSha256 };
    } catch {
      return { kind: 'torn' };
    }
  }

  /**
   * Key first, chain last (see makeLive), in one writeFilesAtomic: both temporary files are
   * fsynced side by side, renamed in that order, and the slot's directory fsynced once after
   * both renames, before anything acts on the pair. A crash before that fsync leaves the old
   * pair, the new pair, or a torn one (either file without the other), which the next
   * delivery installs over from the still-pending key, as after a crash between the renames.
   */
  private async writePair(slot: 'live' | 'previous', pair: Pair): Promise<void> {
    // Only live/ is shared with the database server's group; previous/ stays the agent's.
    const group = slot === 'live' ? this.options.state.liveGroup : undefined;
    await writeFilesAtomic([
      { file: this.pairPath(slot, PairFile.privkey), data: pair.privkeyPem, mode: group === undefined ? PRIVATE_FILE_MODE : SHARED_KEY_FILE_MODE, ...(group === undefined ? {} : { group }) },
      { file: this.pairPath(slot, PairFile.fullchain), data: pair.fullchainPem, mode: PUBLIC_FILE_MODE, ...(group === undefined ? {} : { group }) },
    ]);
  }

  /**
   * Chain first, key last, so that no moment has a chain without its key; one directory
   * fsync after both (none when neither was there, as for every first install). A crash
   * before it may keep the chain without its key: inspectPair calls that torn, and neither
   * an install nor a rollback uses a torn pair.
   */
  private async removePair(slot: 'live' | 'previous'): Promise<void> {
    await removeFilesDurably([this.pairPath(slot, PairFile.fullchain), this.pairPath(slot, PairFile.privkey)]);
  }

  private pairPath(slot: 'live' | 'previous', file: string): string {
    return path.join(slot === 'live' ? this.options.state.liveDir : this.options.state.previousDir, file);
  }

  private async lastEventFor(fingerprint: string): Promise<JournalEvent | undefined> {
    return (await readJournal(this.options.state)).filter((entry) => entry.fingerprintSha256 === fingerprint).at(-1)?.event;
  }

  private journal(event: JournalEvent, certificateId: string, fingerprintSha256: string): Promise<void> {
    return appendJournal(this.options.state, { at: this.clock().toISOString(), event, certificateId, fingerprintSha256 });
  }
}

/** The same certificates in the same order (a bundle as delivered, and as live/ holds it). */
function sameCertificates(a: readonly Certificate[], b: readonly Certificate[]): boolean {
  return a.length === b.length && a.every((certificate, i) => certificate.fingerprintSha256 === b[i]?.fingerprintSha256);
}

function describe(outcome: ReloadOutcome, timeoutMs: number): string {
  if (outcome.timedOut) return `was killed after its ${timeoutMs} ms timeout`;
  if (outcome.exitCode !== null) return `exited with code ${outcome.exitCode}`;
  return outcome.signal !== null ? `was killed by ${outcome.signal}` : 'could not run';
}
