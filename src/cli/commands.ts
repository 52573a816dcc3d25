/** The subcommand table: one line per command, so `certplane` stays a thin dispatcher. */
import type { Io } from './args.js';
import { admin } from './admin.js';
import { agent } from './agent.js';
import { chainSelect, chainVerify } from './chain.js';
import { demo } from './demo.js';
import { docs } from './docs.js';
import { issue } from './issue.js';
import { openapi } from './openapi.js';
import { reissue, status, whatif } from './reissue.js';
import { revoke } from './revoke.js';
import { serve } from './serve.js';

export type Command = (args: string[], io: Io) => Promise<number>;

export const commands: Record<string, Command> = {
  'chain verify': chainVerify,
  'chain select': chainSelect,
  issue,
  demo,
  serve,
  agent,
  openapi,
  docs,
  reissue,
  revoke,
  status,
  whatif,
  admin,
};
