/**
 * `certplane issue --csr REQ.pem --out FULLCHAIN.pem`: one issuance with the
 * environment's configuration. The output appears only when a chain was selected and
 * verified, and appears whole (written beside, then renamed), so a script that checks
 * for the file never sees a partial or an unverified chain.
 */
import { randomBytes } from 'node:crypto';
import { open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { explainReport } from '../chain/index.js';
import { loadConfig } from '../config/config.js';
import { readText } from '../config/trust.js';
import { composeIssuer } from '../compose.js';
import { createLogger } from '../log/logger.js';
import { ExitCode, parse, usageError, type Io } from './args.js';

const USAGE = 'usage: certplane issue --csr REQ.pem --out FULLCHAIN.pem [--report REPORT.json]';

export async function issue(args: string[], io: Io): Promise<number> {
  const { values, positionals } = parse(args, { csr: { type: 'string' }, out: { type: 'string' }, report: { type: 'string' } }, USAGE);
  if (!values.csr || !values.out || positionals.length > 0) throw usageError('--csr and --out are required', USAGE);
  const config = loadConfig(io.env);
  const logger = createLogger(config.logLevel, io.stderr);
  const csrPem = await readText(values.csr, 'CSR');
  const issuer = await composeIssuer(config, logger);
  const result = await issuer.issue(csrPem);
  await writeAtomically(values.out, result.fullchainPem);
  if (values.report) await writeAtomically(values.report, `${JSON.stringify({ selection: { selected: result.selection.selected, preference: result.selection.preference, fallbackUsed: result.selection.fallbackUsed }, report: { ...result.report, servedChainPem: undefined } }, null, 2)}\n`);
  io.stdout.write(`${explainReport(result.report)}\nwrote ${values.out}\n`);
  return ExitCode.OK;
}

/** Writes `text` to `path` via a temporary file in the same directory, fsync and rename. */
export async function writeAtomically(path: string, text: string, mode = 0o644): Promise<void> {
  const temporary = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  const handle = await open(temporary, 'wx', mode);
  try {
    await handle.writeFile(text);
    await handle.sync();
  } finally {
    await handle.close();
  }
  try {
    await rename(temporary, path);
  } catch (error) {
    await rm(temporary, { force: true });
    throw error;
  }
}
