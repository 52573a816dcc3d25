/**
 * `certplane demo`: the main job on embedded defaults. Starts a local Pebble with
 * alternate roots and prefers one of the alternates (so the CA's default chain is the
 * wrong answer), runs a management plane on PGlite, starts an agent process for one
 * instance, and has a certificate issued, delivered and installed through the agent;
 * then shows the instance as the API reports it and how every offered chain was judged.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CertplaneError } from '../errors.js';
import { explainReport, parseCertificateBundle, verifyChain } from '../chain/index.js';
import { loadConfig } from '../config/config.js';
import { composeServer } from '../compose.js';
import { startPebble } from '../devenv/pebble.js';
import { createLogger } from '../log/logger.js';
import { ExitCode, parse, usageError, type Io } from './args.js';
import { ErrorCode } from '../error-catalogue.js';

const USAGE = 'usage: certplane demo [--alternate-roots N] [--out-dir DIR] [--hostname NAME]';
const AGENT_ADDRESS = '127.0.0.2';
const INSTALL_TIMEOUT_MS = 120_000;

export async function demo(args: string[], io: Io): Promise<number> {
  const { values } = parse(args, { 'alternate-roots': { type: 'string' }, 'out-dir': { type: 'string' }, hostname: { type: 'string' } }, USAGE);
  const alternateRoots = Number(values['alternate-roots'] ?? '2');
  if (!Number.isInteger(alternateRoots) || alternateRoots < 1 || alternateRoots > 5) throw usageError('--alternate-roots must be an integer from 1 to 5', USAGE);
  const outDir = resolve(values['out-dir'] ?? 'data/demo');
  const hostname = values.hostname ?? 'db1.demo.certplane.test';
  await rm(join(outDir, 'db'), { recursive: true, force: true });
  await mkdir(outDir, { recursive: true, mode: 0o700 });
  const say = (text: string) => io.stdout.write(`${text}\n`);

  say(`starting Pebble with ${alternateRoots} alternate root(s) on loopback...`);
  const pebble = await startPebble({ alternateRoots });
  let agent: ChildProcess | undefined;
  let plane: Awaited<ReturnType<typeof composeServer>> | undefined;
  try {
    const roots = (await pebble.roots()).map((pem) => parseCertificateBundle(pem, 'Pebble root')[0]!);
    const preferred = roots[roots.length - 1]!;
    const trustStorePath = join(outDir, 'trust-store.pem');
    await writeFile(trustStorePath, preferred.pem);
    say(`Pebble offers chains to ${roots.map((r) => `"${r.subjectCN}"`).join(', ')}; preferring the alternate "${preferred.subjectCN}", the only root trusted`);

    const config = loadConfig({
      CERTPLANE_ACME_DIRECTORY: pebble.directoryUrl,
      CERTPLANE_ACME_CA_CERTS: pebble.acmeServerCaPath,
      CERTPLANE_PREFERRED_CHAINS: JSON.stringify([preferred.subjectCN]),
      CERTPLANE_TRUST_STORE: trustStorePath,
      CERTPLANE_SECRETS: `file:${join(outDir, 'secrets')}`,
      CERTPLANE_DATABASE_URL: `pglite:${join(outDir, 'db')}`,
      CERTPLANE_INSECURE_HTTP: '1',
      CERTPLANE_LISTEN: '127.0.0.1:0',
      CERTPLANE_ADMIN_SOCKET: join(outDir, 'admin.sock'),
      CERTPLANE_LOG_LEVEL: io.env.CERTPLANE_LOG_LEVEL ?? 'warn',
    });
    plane = await composeServer(config, createLogger(config.logLevel, io.stderr));
    say(`management plane on ${plane.url} (PGlite in ${join(outDir, 'db')}, development mode: plain HTTP on loopback)`);
    const api = plane.url;
    const call = async (method: string, path: string, body?: unknown) => {
      const response = await fetch(`${api}${path}`, { method, headers: body ? { 'content-type': 'application/json' } : {}, body: body ? JSON.stringify(body) : undefined });
      return (await response.json()) as Record<string, any>;
    };

    const instance = await call('POST', '/v1/instances', { name: 'demo-db1', hostnames: [hostname], cluster: 'demo' });
    await pebble.resolve(hostname, AGENT_ADDRESS);
    const stateDir = join(outDir, 'agent');
    say(`registered instance ${instance.id} for ${hostname}; starting its agent (state in ${stateDir}, http-01 on ${AGENT_ADDRESS}:${pebble.http01Port})`);
    agent = spawn(
      process.execPath,
      [
        fileURLToPath(new URL('./main.js', import.meta.url)),
        'agent',
        '--server', api,
        '--token', instance.enrollmentToken,
        '--state-dir', stateDir,
        '--http01-port', String(pebble.http01Port),
        '--http01-host', AGENT_ADDRESS,
        '--trust', trustStorePath,
      ],
      { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, CERTPLANE_LOG_LEVEL: 'warn' } },
    );
    await waitFor(async () => ((await call('GET', `/v1/instances/${instance.id}`)).agent.connected ? true : undefined), 30_000, 'the agent to connect');
    say('the agent connected: its first certificate is issued without another call (autoIssue); the agent makes the key, sends a CSR and answers http-01 itself');
    const view = await waitFor(async () => {
      const current = await call('GET', `/v1/instances/${instance.id}`);
      if (current.certificate?.status === 'failed') throw new CertplaneError(ErrorCode.DEMO_FAILED, `issuance failed: ${current.certificate.lastError}`);
      return current.certificate?.status === 'installed' ? current : undefined;
    }, INSTALL_TIMEOUT_MS, 'the certificate to be installed');

    say(`\nGET /v1/instances/${instance.id}:\n${JSON.stringify(view, null, 2)}`);
    const live = parseCertificateBundle(await readFile(join(stateDir, 'live', 'fullchain.pem'), 'utf8'), 'installed chain');
    say(`\nthe agent's own check of ${join(stateDir, 'live', 'fullchain.pem')}:\n${explainReport(verifyChain(live, { trustAnchors: [preferred], at: new Date(), hostnames: [hostname] }))}`);
    say(`\nthe private key never left the instance: ${join(stateDir, 'live', 'privkey.pem')} (0600)`);
    return ExitCode.OK;
  } finally {
    if (agent && agent.exitCode === null) {
      agent.kill('SIGTERM');
      await once(agent, 'exit');
    }
    await plane?.close();
    await pebble.stop();
  }
}

async function waitFor<T>(probe: () => Promise<T | undefined>, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const value = await probe();
    if (value !== undefined) return value;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new CertplaneError(ErrorCode.DEMO_TIMEOUT, `timed out after ${timeoutMs / 1000} s waiting for ${what}`);
}
