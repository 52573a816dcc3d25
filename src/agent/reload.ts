/**
 * Runs the operator's reload command (e.g. "systemctl reload postgresql") after a new pair
 * is live. The command is the only way the agent learns whether the database server
 * accepted the pair, so its exit code decides between keeping and rolling back, and its
 * time is bounded: a hung reload must not hold the installer, and every later delivery, forever.
 */
import { spawn } from 'node:child_process';

/** Enough to read the server's complaint; bounded so a chatty command cannot fill memory or a channel message. */
const STDERR_TAIL_LINES = 10;
const STDERR_KEPT_BYTES = 16 * 1024;
/** How long to wait for stderr to drain after exit, in case a daemon the command started keeps the pipe open. */
const PIPE_DRAIN_MS = 1_000;
const PRIVATE_KEY_BLOCK = /-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?(-----END [A-Z0-9 ]*PRIVATE KEY-----|$)/g;

/** What one run of the reload command did. */
export interface ReloadOutcome {
  readonly ok: boolean;
  /** Null when the command was killed by a signal or could not start. */
  readonly exitCode: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly timedOut: boolean;
  /** The last lines of stderr, with any private-key block removed: it goes into errors and channel messages. */
  readonly stderrTail: string;
}

/**
 * Runs `command` through /bin/sh -c with `env` added to the agent's environment. The shell
 * runs in its own process group so that on timeout the whole group is killed, not only the
 * shell while its children keep the server half-reloaded.
 */
export function runReloadCommand(command: string, env: Readonly<Record<string, string>>, timeoutMs: number): Promise<ReloadOutcome> {
  return new Promise((resolve) => {
    const child = spawn('/bin/sh', ['-c', command], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'], detached: true });
    let stderr = Buffer.alloc(0);
    let timedOut = false;
    child.stderr.on('data', (chunk: Buffer) => {
      stderr = Buffer.concat([stderr, chunk]).subarray(-STDERR_KEPT_BYTES);
    });
    const deadline = setTimeout(() => {
      timedOut = true;
      killGroup(child.pid);
    }, timeoutMs);
    const finish = (exitCode: number | null, signal: NodeJS.Signals | null): void => {
      clearTimeout(deadline);
      resolve({ ok: !timedOut && exitCode === 0, exitCode, signal, timedOut, stderrTail: tail(stderr.toString('utf8')) });
    };
    child.on('error', (error) => {
      stderr = Buffer.from(`could not run /bin/sh: ${error.message}`);
      finish(null, null);
    });
    let draining: NodeJS.Timeout | undefined;
    child.on('exit', (exitCode, signal) => {
      draining = setTimeout(() => {
        child.stderr.destroy();
        finish(exitCode, signal);
      }, PIPE_DRAIN_MS);
    });
    child.on('close', (exitCode, signal) => {
      clearTimeout(draining);
      finish(exitCode, signal);
    });
  });
}

function killGroup(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // The group already exited between the deadline and the kill: nothing is left to stop.
  }
}

function tail(text: string): string {
  const lines = text.replace(PRIVATE_KEY_BLOCK, '[private key removed]').trimEnd().split('\n');
  return lines.slice(-STDERR_TAIL_LINES).join('\n');
}
