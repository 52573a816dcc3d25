/**
 * One process of the bench's load generator (agents-scale.ts forks several, because
 * 10,000 agents are too many for one event loop beside the plane on a small machine):
 * the real agent code, many at a time. It enrolls its share of instances with the real
 * `enroll` (or loads the identities a kept fleet enrolled in an earlier run, from the
 * agents' state directories, as an agent does when it starts again) and runs the real
 * AgentClient for each, so reconnections after a plane restart follow the agent's own
 * backoff with jitter. Driven over IPC; exits when told, or when its parent goes away.
 */
import pino from 'pino';
import { AgentClient } from '../../src/agent/client.js';
import { enroll } from '../../src/agent/enroll.js';
import { Installer } from '../../src/agent/install.js';
import { openState, readIdentity, type AgentIdentity, type AgentState } from '../../src/agent/state.js';

/** What the parent asks. */
export type SwarmCommand =
  /** Enrolls one agent per token, each with its own state directory (`dirs[i]` for `tokens[i]`). */
  | { readonly type: 'enroll'; readonly server: string; readonly tokens: readonly string[]; readonly dirs: readonly string[]; readonly serverCaPem?: string }
  /** Reads the identities agents enrolled earlier from their state directories. */
  | { readonly type: 'load'; readonly dirs: readonly string[]; readonly serverCaPem?: string }
  | { readonly type: 'start' }
  | { readonly type: 'count' }
  | { readonly type: 'stop' };
/** What the worker answers, once per command. */
export type SwarmReply = { readonly type: 'enrolled'; readonly count: number } | { readonly type: 'loaded'; readonly count: number } | { readonly type: 'started'; readonly count: number } | { readonly type: 'counted'; readonly authenticated: number; readonly redials: number; readonly endings: Readonly<Record<string, number>> } | { readonly type: 'stopped' } | { readonly type: 'failed'; readonly message: string };

/** Enrollments in flight at once per worker: the plane signs each, so more only queue there. */
const ENROLL_CONCURRENCY = Number(process.env.BENCH_AGENT_ENROLL_CONCURRENCY ?? 6);

const logger = pino({ level: 'silent' });
/** Dials that ended, as the agents log them ("channel closed, reconnecting"), counted rather than written: a storm's retries show here. */
let redials = 0;
/** Why dials ended, as the agents log it: the close code and reason, and the errors before a close without one (1006), counted by kind. */
const endings: Record<string, number> = {};
const tally = (kind: string) => void (endings[kind] = (endings[kind] ?? 0) + 1);
const clientLogger = pino(
  { level: 'info' },
  {
    write: (line: string) => {
      if (line.includes('"msg":"channel closed, reconnecting"')) {
        redials += 1;
        const { code, reason } = JSON.parse(line) as { code: number; reason: string };
        tally(`closed ${code}${reason ? ` ${reason.replace(/[0-9a-f-]{36}/g, 'ID').slice(0, 60)}` : ''}`);
      } else if (line.includes('"msg":"channel error')) {
        tally(`error: ${(JSON.parse(line) as { err: string }).err.replace(/[0-9]+/g, 'N').slice(0, 60)}`);
      }
    },
  },
);
const agents: { state: AgentState; identity: AgentIdentity }[] = [];
const clients: AgentClient[] = [];
let serverCaPem: string | undefined;
const reply = (message: SwarmReply) => process.send?.(message);

async function enrollAll(server: string, tokens: readonly string[], dirs: readonly string[], ca: string | undefined): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: ENROLL_CONCURRENCY }, async () => {
      while (next < tokens.length) {
        const i = next++;
        const state = await openState(dirs[i]!);
        agents.push({ state, identity: await enroll(state, server, tokens[i]!, ca) });
      }
    }),
  );
}

async function loadAll(dirs: readonly string[]): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (next < dirs.length) {
        const dir = dirs[next++]!;
        const state = await openState(dir);
        const identity = await readIdentity(state);
        if (!identity) throw new Error(`${dir} holds no enrolled identity`);
        agents.push({ state, identity });
      }
    }),
  );
}

process.on('message', (command: SwarmCommand) => {
  const run = async (): Promise<SwarmReply> => {
    switch (command.type) {
      case 'enroll':
        serverCaPem = command.serverCaPem;
        await enrollAll(command.server, command.tokens, command.dirs, serverCaPem);
        return { type: 'enrolled', count: agents.length };
      case 'load':
        serverCaPem = command.serverCaPem;
        await loadAll(command.dirs);
        return { type: 'loaded', count: agents.length };
      case 'start':
        for (const { state, identity } of agents) {
          const client = new AgentClient({ state, identity, installer: new Installer({ state, trustAnchors: [], logger }), logger: clientLogger, ...(serverCaPem ? { serverCaPem } : {}) });
          client.start();
          clients.push(client);
        }
        return { type: 'started', count: clients.length };
      case 'count':
        // Authenticated as the agent sees it: the plane's welcome arrived on the connection open now.
        return { type: 'counted', authenticated: clients.filter((client) => client.authenticated).length, redials, endings };
      case 'stop':
        await Promise.all(clients.map((client) => client.stop()));
        return { type: 'stopped' };
    }
  };
  run().then(reply, (error: unknown) => reply({ type: 'failed', message: (error as Error).message }));
});
process.on('disconnect', () => process.exit(0));
// Exiting (rather than dying of the signal) lets a profiler preloaded with BENCH_SWARM_NODE_OPTIONS write its profile.
process.on('SIGTERM', () => process.exit(0));
