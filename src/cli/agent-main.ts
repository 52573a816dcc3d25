#!/usr/bin/env node
/**
 * `certplane-agent`: the agent on its own, the entry point of its self-contained
 * distribution (infra/agent/build-dist.sh bundles this file and what it imports into one
 * script that needs only node, not this repository or its node_modules). Same options and
 * exit codes as `certplane agent`.
 */
import { agent, USAGE } from './agent.js';
import { ExitCode, reportFailure, type Io } from './args.js';

export async function runAgent(argv: string[], io: Io): Promise<number> {
  if (argv[0] === '--help' || argv[0] === '-h' || argv[0] === 'help') {
    io.stdout.write(`${USAGE.replace('certplane agent', 'certplane-agent')}\n`);
    return ExitCode.OK;
  }
  try {
    return await agent(argv, io);
  } catch (error) {
    return reportFailure(error, 'certplane-agent', io);
  }
}

void runAgent(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, env: process.env }).then((code) => {
  process.exitCode = code;
});
