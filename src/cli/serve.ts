/** `certplane serve`: the management plane, until SIGTERM or SIGINT closes it cleanly. */
import { loadConfig } from '../config/config.js';
import { composeServer } from '../compose.js';
import { userInfo } from 'node:os';
import { runAdminCommand, startStdinConsole } from '../admin/index.js';
import type { CertplaneError } from '../errors.js';
import { createLogger } from '../log/logger.js';
import { ExitCode, parse, usageError, type Io } from './args.js';

const USAGE = 'usage: certplane serve   (configured by CERTPLANE_* environment variables, see docs/reference/configuration.md)';

export async function serve(args: string[], io: Io): Promise<number> {
  const { positionals } = parse(args, {}, USAGE);
  if (positionals.length > 0) throw usageError('serve takes no arguments', USAGE);
  const config = loadConfig(io.env);
  const logger = createLogger(config.logLevel, io.stdout);
  // Listened for from the start: a SIGTERM or SIGINT that comes while the plane starts (a
  // supervisor stopping it, or a test right after "listening") is not the default action's
  // to end the process; the plane closes cleanly as soon as it has started.
  let signalled: string | undefined;
  let onSignal: (signal: string) => void = (signal) => (signalled ??= signal);
  const stopOn = (signal: string) => () => onSignal(signal);
  const terminated = stopOn('SIGTERM');
  const interrupted = stopOn('SIGINT');
  process.once('SIGTERM', terminated);
  process.once('SIGINT', interrupted);
  // A failed start closes what it had started before throwing: nothing keeps the process alive, so main prints the code once and it exits non-zero.
  const plane = await composeServer(config, logger).catch((error: unknown) => {
    process.off('SIGTERM', terminated);
    process.off('SIGINT', interrupted);
    throw error;
  });
  try {
    // Run by a person at a terminal, the admin console is also on standard input.
    const console = process.stdin.isTTY ? startStdinConsole({ input: process.stdin, output: process.stderr, deps: plane.adminDeps }) : undefined;
    // SIGHUP re-reads the listener's certificate and key and the trust settings (as `certplane admin
    // reload-tls` and `reload-trust` do), each audited as the signal; one failing leaves the other done.
    const onHangup = () => {
      const actor = `signal:SIGHUP (${userInfo().username})`;
      if (plane.adminDeps.serverTls) {
        runAdminCommand({ command: 'reload-tls', args: { reason: 'SIGHUP' }, actor }, plane.adminDeps).then(
          (result) => logger.info({ result: result.text }, 'SIGHUP: server certificate reloaded'),
          (error: unknown) => logger.error({ code: (error as CertplaneError).code, err: (error as Error).message }, 'SIGHUP: the server certificate was not reloaded; the current one is still served'),
        );
      }
      runAdminCommand({ command: 'reload-trust', args: { reason: 'SIGHUP' }, actor }, plane.adminDeps).then(
        (result) => logger.info({ result: result.text }, 'SIGHUP: trust settings reloaded'),
        (error: unknown) => logger.error({ code: (error as CertplaneError).code, err: (error as Error).message }, 'SIGHUP: the trust settings were not reloaded; the previous ones stay in force'),
      );
    };
    process.on('SIGHUP', onHangup);
    await new Promise<void>((resolve) => {
      onSignal = (signal) => {
        logger.info({ signal }, 'shutting down');
        resolve();
      };
      if (signalled) onSignal(signalled);
    });
    process.off('SIGTERM', terminated);
    process.off('SIGINT', interrupted);
    process.off('SIGHUP', onHangup);
    console?.close();
  } finally {
    // Stops claiming, gives in-flight orders CERTPLANE_SHUTDOWN_GRACE_MS, releases their leases, then closes channels, listener and store.
    await plane.close();
  }
  logger.info('management plane stopped');
  return ExitCode.OK;
}
