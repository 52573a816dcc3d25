/** Runs the built `certplane` command as a real child process, the way an operator does. */
import { execFile } from 'node:child_process';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const CLI_PATH = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

export interface CliResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export function certplane(args: string[], env: Record<string, string> = {}, timeoutMs = 120_000): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI_PATH, ...args], { env: { PATH: process.env.PATH ?? '', ...env }, timeout: timeoutMs, maxBuffer: 16 << 20 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** A temporary directory with helpers to write files into it; remove() when done. */
export async function scratch(prefix = 'certplane-test-') {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return {
    dir,
    /** Writes `name`; with `mode` (0o600 for a private key, which the plane refuses when others may read it) the file gets exactly that mode. */
    async write(name: string, text: string, mode?: number): Promise<string> {
      const path = join(dir, name);
      await writeFile(path, text);
      if (mode !== undefined) await chmod(path, mode);
      return path;
    },
    path: (name: string) => join(dir, name),
    remove: () => rm(dir, { recursive: true, force: true }),
  };
}
