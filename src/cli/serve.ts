/** `certplane serve`: the management plane, until SIGTERM or SIGINT closes it cleanly. */
import { loadConfig } from '../config/config.js';
import { composeServer } from '../compose.js';
import { startStdinConsole } from '../admin/index.js';
import { createLogger } from '../log/logger.js';
import { ExitCode, parse, usageError, type Io } from './args.js';

const USAGE = 'usage: certplane serve   (configured by CERTPLANE_* environment variables, see README.md)';

export async function serve(args: string[], io: Io): Promise<number> {
  const { positionals } = parse(args, {}, USAGE);
  if (positionals.length > 0) throw usageError('serve takes no arguments', USAGE);
  const config = loadConfig(io.env);
  const logger = createLogger(config.logLevel, io.stdout);
  const plane = await composeServer(config, logger);
  // Run by a person at a terminal, the admin console is also on standard input.
  const console = process.stdin.isTTY ? startStdinConsole({ input: process.stdin, output: process.stderr, deps: plane.adminDeps }) : undefined;
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      logger.info({ signal }, 'shutting down');
      resolve();
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  console?.close();
  await plane.close();
  return ExitCode.OK;
}
