/**
 * `certplane agent`: the program on the instance. Enrolls on first start (the token is
 * needed only then), answers http-01 on its own port, verifies and installs chains into
 * STATE_DIR/live/, and runs until SIGTERM or SIGINT.
 */
import { execFile } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { promisify } from 'node:util';
import { AgentClient } from '../agent/client.js';
import { enroll } from '../agent/enroll.js';
import { Http01Responder } from '../agent/http01.js';
import { Installer } from '../agent/install.js';
import { DEFAULT_PROBE_INTERVAL_SECONDS, ServedProber, parseProbeTarget } from '../agent/probe.js';
import { openState, readIdentity, writeInstanceFile } from '../agent/state.js';
import { loadTrustStore, readText } from '../config/trust-store.js';
import { createLogger } from '../log/logger.js';
import { CertplaneError } from '../errors.js';
import { ExitCode, parse, usageError, type Io } from './args.js';
import { ErrorCode } from '../error-catalogue.js';

export const USAGE =
  'usage: certplane agent --server URL --state-dir DIR [--token TOKEN | --token-file FILE] [--http01-port PORT] [--http01-host ADDRESS] [--reload-command CMD] [--trust ROOTS.pem] [--server-ca CA.pem] [--group NAME] [--probe [postgres://]HOST:PORT ...] [--probe-interval SECONDS]';

/** Services one agent probes; each is probed under every name of the instance. */
const MAX_PROBE_TARGETS = 8;

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
      'token-file': { type: 'string' },
      group: { type: 'string' },
      probe: { type: 'string', multiple: true },
      'probe-interval': { type: 'string' },
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

  const probeTargets = (values.probe ?? []).map((spec) => parseProbeTarget(spec) ?? usageFailure(`--probe takes HOST:PORT (an IPv6 address as [ADDRESS]:PORT; postgres://HOST:PORT for a PostgreSQL server), not "${spec}"`));
  if (probeTargets.length > MAX_PROBE_TARGETS) throw usageError(`at most ${MAX_PROBE_TARGETS} --probe targets`, USAGE);
  const probeInterval = values['probe-interval'] === undefined ? DEFAULT_PROBE_INTERVAL_SECONDS : Number(values['probe-interval']);
  if (!Number.isInteger(probeInterval) || probeInterval < 1 || probeInterval > 86_400) throw usageError('--probe-interval takes whole seconds from 1 to 86400', USAGE);
  if (values['probe-interval'] !== undefined && probeTargets.length === 0) throw usageError('--probe-interval needs at least one --probe HOST:PORT', USAGE);

  const logger = createLogger(io.env.CERTPLANE_LOG_LEVEL ?? 'info', io.stdout).child({ component: 'agent' });
  const serverCaPem = values['server-ca'] ? await readText(values['server-ca'], '--server-ca') : undefined;
  const trust = await loadTrustStore(values.trust ?? 'system');
  const liveGroup = values.group === undefined ? undefined : await groupId(values.group);
  const state = await openState(values['state-dir'], { liveGroup });
  let identity = await readIdentity(state);
  if (!identity) {
    const token = values.token ?? (values['token-file'] ? (await readText(values['token-file'], '--token-file')).trim() : undefined);
    if (!token) throw usageError('this agent is not enrolled yet: --token or --token-file is required on first start', USAGE);
    identity = await enroll(state, server.toString(), token, serverCaPem);
    logger.info({ instanceId: identity.instanceId }, 'enrolled');
    // The token is spent; a file holding it only invites someone to wonder whether it still works.
    if (values['token-file']) await rm(values['token-file'], { force: true }).catch((error: Error) => logger.warn({ err: error.message, file: values['token-file'] }, 'could not remove the spent token file'));
  } else if ((identity.configuredServer ?? identity.server) !== server.toString()) {
    // The operator moved the plane: follow --server and remember it, instead of dialling the old address forever.
    logger.info({ previous: identity.server, server: server.toString() }, 'the --server URL changed since the last start: using the new one and saving it in the state directory');
    identity = { ...identity, server: server.toString(), configuredServer: server.toString() };
    await writeInstanceFile(state, identity);
  }

  const installer = new Installer({ state, trustAnchors: trust.anchors, reloadCommand: values['reload-command'], logger });
  const http01 = http01Port === undefined ? undefined : new Http01Responder({ host: values['http01-host'] ?? '0.0.0.0', port: http01Port });
  await http01?.start();
  const prober = probeTargets.length > 0 ? new ServedProber({ targets: probeTargets, names: () => installer.installedNames(), logger }) : undefined;
  const client = new AgentClient({ state, identity, installer, http01, serverCaPem, logger, prober, probeIntervalMs: probeInterval * 1000 });
  client.start();
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', () => resolve());
    process.once('SIGINT', () => resolve());
  });
  await client.stop();
  await http01?.stop();
  return ExitCode.OK;
}

function usageFailure(message: string): never {
  throw usageError(message, USAGE);
}

/**
 * --group's id: a number as given, or a name through getent, which also sees groups from
 * LDAP or sssd that /etc/group does not list.
 */
async function groupId(group: string): Promise<number> {
  if (/^\d+$/.test(group)) return Number(group);
  const entry = await promisify(execFile)('getent', ['group', group]).then(({ stdout }) => stdout, () => '');
  const gid = Number(entry.split(':')[2]);
  if (entry === '' || !Number.isInteger(gid)) {
    throw new CertplaneError(ErrorCode.AGENT_GROUP_UNKNOWN, `--group ${group}: no such group on this instance (getent group ${group} found nothing); give the group the database server runs as, for example postgres.`, { group });
  }
  return gid;
}
