/** The subcommand table: one line per command, so `certplane` stays a thin dispatcher. */
import type { Io } from './args.js';
import { chainSelect, chainVerify } from './chain.js';
import { demo } from './demo.js';
import { issue } from './issue.js';

export type Command = (args: string[], io: Io) => Promise<number>;

export const commands: Record<string, Command> = {
  'chain verify': chainVerify,
  'chain select': chainSelect,
  issue,
  demo,
};
