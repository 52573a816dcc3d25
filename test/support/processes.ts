/**
 * Long-running `certplane` processes (serve, agent) for end-to-end tests: their output is
 * kept line by line so tests can wait for a log event and search what was logged.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI_PATH } from './cli.js';

export interface RunningProcess {
  readonly child: ChildProcess;
  readonly lines: string[];
  /** Resolves with the first line (already seen or future) matching `predicate`; rejects after `timeoutMs`. */
  waitForLine(predicate: (line: string) => boolean, timeoutMs?: number): Promise<string>;
  /** Sends `signal` and waits for the exit. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/**
 * How long a test waits for a plane it started to say it is listening: opening a PGlite
 * directory and migrating it takes a few seconds on an idle machine, and took over 30 s in a
 * CI run that shared the 2 cores with a dozen runnable processes.
 */
export const PLANE_START_MS = 90_000;

export function startCertplane(args: string[], env: Record<string, string>, nodeArgs: readonly string[] = []): RunningProcess {
  // Every plane gets an admin socket of its own, so planes of parallel tests never meet.
  const adminDir = args[0] === 'serve' && !env.CERTPLANE_ADMIN_SOCKET ? mkdtempSync(join(tmpdir(), 'certplane-admin-')) : undefined;
  const adminSocket: Record<string, string> = adminDir ? { CERTPLANE_ADMIN_SOCKET: join(adminDir, 'admin.sock') } : {};
  return startNodeScript(CLI_PATH, args, { ...adminSocket, ...env }, () => adminDir && rmSync(adminDir, { recursive: true, force: true }), nodeArgs);
}

/** Any Node script of the built tree as a process of its own (a stand-in service, say), supervised like `startCertplane`'s. */
export function startNodeScript(script: string, args: string[], env: Record<string, string> = {}, onExit: () => unknown = () => undefined, nodeArgs: readonly string[] = []): RunningProcess {
  const child = spawn(process.execPath, [...nodeArgs, script, ...args], { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  const waiters = new Set<{ predicate: (line: string) => boolean; resolve: (line: string) => void }>();
  const exited = once(child, 'exit').finally(onExit);
  const take = (chunk: Buffer, partial: { rest: string }) => {
    const text = partial.rest + chunk.toString('utf8');
    const parts = text.split('\n');
    partial.rest = parts.pop() ?? '';
    for (const line of parts) {
      lines.push(line);
      for (const waiter of waiters) {
        if (waiter.predicate(line)) {
          waiters.delete(waiter);
          waiter.resolve(line);
        }
      }
    }
  };
  const out = { rest: '' };
  const err = { rest: '' };
  child.stdout?.on('data', (c: Buffer) => take(c, out));
  child.stderr?.on('data', (c: Buffer) => take(c, err));
  return {
    child,
    lines,
    waitForLine(predicate, timeoutMs = 60_000) {
      const seen = lines.find(predicate);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const waiter = { predicate, resolve: (line: string) => (clearTimeout(timer), resolve(line)) };
        const timer = setTimeout(() => {
          waiters.delete(waiter);
          reject(new Error(`no matching line within ${timeoutMs} ms; last lines:\n${lines.slice(-15).join('\n')}`));
        }, timeoutMs);
        waiters.add(waiter);
      });
    },
    async stop(signal = 'SIGTERM') {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Parses pino JSON lines, ignoring anything else a process printed. */
export function logEvents(lines: readonly string[]): Record<string, unknown>[] {
  return lines.flatMap((line) => {
    try {
      const value = JSON.parse(line);
      return typeof value === 'object' && value !== null ? [value as Record<string, unknown>] : [];
    } catch {
      return [];
    }
  });
}

/** Polls `probe` until it returns a value other than undefined, every `intervalMs`, for at most `timeoutMs`. */
export async function eventually<T>(probe: () => Promise<T | undefined>, timeoutMs = 60_000, intervalMs = 200, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (error) {
      last = error;
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
}

/**
 * The environment of a development-mode `certplane serve` on loopback against a local
 * Pebble, dns-01 through its challtestsrv, state under `dir`: what the end-to-end suites
 * share. Callers spread it and override or add what their case needs.
 */
export function localPlaneEnv(options: {
  port: number;
  dir: string;
  directoryUrl: string;
  acmeCaPath: string;
  preferredRootCN: string;
  trustStorePath: string;
  challtestsrvUrl: string;
  databaseUrl?: string;
}): Record<string, string> {
  return {
    CERTPLANE_INSECURE_HTTP: '1',
    CERTPLANE_LISTEN: `127.0.0.1:${options.port}`,
    CERTPLANE_DATABASE_URL: options.databaseUrl ?? `pglite:${join(options.dir, 'db')}`,
    CERTPLANE_ACME_DIRECTORY: options.directoryUrl,
    CERTPLANE_ACME_CA_CERTS: options.acmeCaPath,
    CERTPLANE_PREFERRED_CHAINS: JSON.stringify([options.preferredRootCN]),
    CERTPLANE_TRUST_STORE: options.trustStorePath,
    CERTPLANE_SECRETS: `file:${join(options.dir, 'secrets')}`,
    CERTPLANE_DNS_PROVIDER: 'challtestsrv',
    CERTPLANE_CHALLTESTSRV_URL: options.challtestsrvUrl,
    CERTPLANE_CHALLENGE: 'dns-01',
    CERTPLANE_SCHEDULER_INTERVAL_MS: '200',
  };
}
