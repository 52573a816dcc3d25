#!/usr/bin/env node
/**
 * The `certplane` command. Dispatches to a subcommand and turns every failure into
 * a message and an exit code: 2 for bad input or usage (a CertplaneError whose code the
 * error catalogue calls bad input), 1 for everything that went wrong on the way.
 */
import { ExitCode, reportFailure, type Io } from './args.js';
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
  docs [--out-dir docs/reference]   the reference pages generated from the code
  admin [--socket PATH] [--actor NAME] [--json] COMMAND [--option value]...   the local admin console (certplane admin help)

configuration comes from CERTPLANE_* environment variables (see docs/reference/configuration.md).`;

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
    return reportFailure(error, 'certplane', io);
  }
}

const io: Io = { stdout: process.stdout, stderr: process.stderr, env: process.env };
process.exitCode = await run(process.argv.slice(2), io);
