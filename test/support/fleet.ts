/**
 * Simulated agents for fleet-scale tests and benchmarks: the real agent code (state
 * directory, enrollment, pending keys, verification, installation, channel client) run
 * in this process, many at a time, with challenges left to the plane's DNS provider.
 */
import pino from 'pino';
import { AgentClient } from '../../src/agent/client.js';
import { enroll } from '../../src/agent/enroll.js';
import { Installer } from '../../src/agent/install.js';
import { openState, readJournal, type AgentState } from '../../src/agent/state.js';
import type { Certificate } from '../../src/chain/index.js';

export interface SimulatedAgent {
  readonly instanceId: string;
  readonly state: AgentState;
  readonly client: AgentClient;
  /** Journal entries of installations: the proof of "installed exactly once". */
  installs(): Promise<{ certificateId: string; fingerprintSha256: string }[]>;
}

export async function startSimulatedAgent(options: { server: string; token: string; stateDir: string; trustAnchors: readonly Certificate[] }): Promise<SimulatedAgent> {
  const logger = pino({ level: 'silent' });
  const state = await openState(options.stateDir);
  const identity = await enroll(state, options.server, options.token);
  const client = new AgentClient({ state, identity, installer: new Installer({ state, trustAnchors: options.trustAnchors, logger }), logger, minBackoffMs: 100, maxBackoffMs: 2000 });
  client.start();
  return {
    instanceId: identity.instanceId,
    state,
    client,
    installs: async () => (await readJournal(state)).filter((e) => e.event === 'installed').map((e) => ({ certificateId: e.certificateId, fingerprintSha256: e.fingerprintSha256 })),
  };
}
