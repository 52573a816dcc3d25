#!/usr/bin/env node
/**
 * The `certplane` command. Dispatches to a subcommand and turns every failure into
 * a message and an exit code: 2 for bad input or usage (a CertplaneError whose code
 * says the input was wrong), 1 for everything that went wrong on the way.
 */
import { CertplaneError } from '../errors.js';
import { CLI_USAGE, ExitCode, type Io } from './args.js';
import { commands } from './commands.js';

const HELP = `certplane: Let's Encrypt certificates on an explicitly chosen, verified chain

commands:
  chain verify BUNDLE.pem [--trust ROOTS.pem] [--hostname NAME]... [--key CSR_OR_PUBLIC_KEY.pem] [--at TIME] [--json]
  chain select --prefer CN [--prefer CN]... [--trust ROOTS.pem] [--at TIME] [--json] CHAIN.pem CHAIN.pem...
  issue --csr REQ.pem --out FULLCHAIN.pem [--report REPORT.json]
  demo  [--alternate-roots N] [--out-dir DIR] [--hostname NAME]
  serve                       the management plane (CERTPLANE_* configuration)
  agent --server URL --state-dir DIR [--token TOKEN] [--http01-port PORT] [--http01-host ADDR]
        [--reload-command CMD] [--trust ROOTS.pem] [--server-ca CA.pem]
  reissue --server URL (--instance ID... | --cluster NAME | --chain-includes CN|sha256:HASH | --all) --reason TEXT [--dry-run] [--follow]
  status --server URL [--instance ID | --campaign ID] [--json]
  whatif --server URL [--remove-root CN|sha256:PIN]... [--from-profile NAME]... [--distrust PIN]...
        [--replace-profile NAME=ROOTS.pem]... [--at TIME] [--cluster NAME | --instance ID...] [--json]
        reissue, status and whatif: [--cert CLIENT.pem --key CLIENT.key] [--server-ca CA.pem] for a secure-mode plane
  openapi [--out openapi.yaml]
  admin [--socket PATH] [--actor NAME] [--json] COMMAND [--option value]...   the local admin console (certplane admin help)

configuration comes from CERTPLANE_* environment variables (see docs/reference/configuration.md).`;

/** Error codes that mean "what you gave me is wrong": exit 2 rather than 1. */
const BAD_INPUT_PREFIXES = ['CLI_USAGE', 'VALIDATION_', 'REISSUE_', 'RATE_LIMIT_CONFIG', 'CHAIN_EMPTY', 'CHAIN_GARBAGE', 'CHAIN_PRIVATE_KEY', 'CHAIN_UNPARSABLE', 'CSR_', 'KEY_INVALID', 'CONFIG_', 'TRUST_STORE_', 'SECRETS_INVALID', 'PRIVATE_KEY_REFUSED'];

export async function run(argv: string[], io: Io): Promise<number> {
  const [first, second, ...rest] = argv;
  if (first === undefined || first === 'help' || first === '--help' || first === '-h') {
    io.stdout.write(`${HELP}\n`);
    return first === undefined ? ExitCode.BAD_INPUT : ExitCode.OK;
  }
  const key = commands[`${first} ${second ?? ''}`] ? `${first} ${second}` : first;
  const command = commands[key];
  if (!command) {
    io.stderr.write(`certplane: unknown command "${argv.slice(0, 2).join(' ')}"\n\n${HELP}\n`);
    return ExitCode.BAD_INPUT;
  }
  const args = key === first ? argv.slice(1) : rest;
  try {
    return await command(args, io);
  } catch (error) {
    if (error instanceof CertplaneError) {
      io.stderr.write(`certplane: ${error.code}: ${error.message}\n`);
      return BAD_INPUT_PREFIXES.some((p) => error.code.startsWith(p)) || error.code === CLI_USAGE ? ExitCode.BAD_INPUT : ExitCode.NO;
    }
    io.stderr.write(`certplane: unexpected failure: ${(error as Error).stack ?? String(error)}\n`);
    return ExitCode.NO;
  }
}

const io: Io = { stdout: process.stdout, stderr: process.stderr, env: process.env };
process.exitCode = await run(process.argv.slice(2), io);
