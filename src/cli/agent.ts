/**
 * `certplane agent`: the program on the instance. Enrolls on first start (the token is
 * needed only then), answers http-01 on its own port, verifies and installs chains into
 * STATE_DIR/live/, and runs until SIGTERM or SIGINT.
 */
import { AgentClient } from '../agent/client.js';
import { enroll } from '../agent/enroll.js';
import { Http01Responder } from '../agent/http01.js';
import { Installer } from '../agent/install.js';
import { openState, readIdentity } from '../agent/state.js';
import { loadTrustStore, readText } from '../config/trust.js';
import { createLogger } from '../log/logger.js';
import { ExitCode, parse, usageError, type Io } from './args.js';

const USAGE =
  'usage: certplane agent --server URL --state-dir DIR [--token TOKEN] [--http01-port PORT] [--http01-host ADDRESS] [--reload-command CMD] [--trust ROOTS.pem] [--server-ca CA.pem]';

export async function agent(args: string[], io: Io): Promise<number> {
  const { values, positionals } = parse(
    args,
    {
      server: { type: 'string' },
      token: { type: 'string' },
      'state-dir': { type: 'string' },
      'http01-port': { type: 'string' },
      'http01-host': { type: 'string' },
      'reload-command': { type: 'string' },
      trust: { type: 'string' },
      'server-ca': { type: 'string' },
    },
    USAGE,
  );
  if (positionals.length > 0 || !values.server || !values['state-dir']) throw usageError('--server and --state-dir are required', USAGE);
  let server: URL;
  try {
    server = new URL(values.server);
  } catch {
    throw usageError(`--server: "${values.server}" is not a URL`, USAGE);
  }
  if (server.protocol !== 'http:' && server.protocol !== 'https:') throw usageError('--server must be an http:// or https:// URL', USAGE);
  const http01Port = values['http01-port'] === undefined ? undefined : Number(values['http01-port']);
  if (http01Port !== undefined && (!Number.isInteger(http01Port) || http01Port < 1 || http01Port > 65_535)) throw usageError('--http01-port must be a port number', USAGE);

  const logger = createLogger(io.env.CERTPLANE_LOG_LEVEL ?? 'info', io.stdout).child({ component: 'agent' });
  const serverCaPem = values['server-ca'] ? await readText(values['server-ca'], '--server-ca') : undefined;
  const trust = await loadTrustStore(values.trust ?? 'system');
  const state = await openState(values['state-dir']);
  let identity = await readIdentity(state);
  if (!identity) {
    if (!values.token) throw usageError('this agent is not enrolled yet: --token is required on first start', USAGE);
    identity = await enroll(state, server.toString(), values.token, serverCaPem);
    logger.info({ instanceId: identity.instanceId }, 'enrolled');
  }

  const installer = new Installer({ state, trustAnchors: trust.anchors, reloadCommand: values['reload-command'], logger });
  const http01 = http01Port === undefined ? undefined : new Http01Responder({ host: values['http01-host'] ?? '0.0.0.0', port: http01Port });
  await http01?.start();
  const client = new AgentClient({ state, identity, installer, http01, serverCaPem, logger });
  client.start();
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', () => resolve());
    process.once('SIGINT', () => resolve());
  });
  await client.stop();
  await http01?.stop();
  return ExitCode.OK;
}
