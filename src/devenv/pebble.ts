/**
 * A local ACME CA for the demo and the integration tests: Pebble (Let's Encrypt's test CA)
 * and pebble-challtestsrv as its DNS and http-01 peer, on loopback ports of their own. With
 * alternate roots Pebble offers several chains per certificate, which is exactly what the
 * chain selection must be exercised against.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, rmSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:https';
import { Resolver } from 'node:dns/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CertplaneError } from '../errors.js';
import { loopbackServerCertificate } from '../pki/factory.js';
import { ErrorCode } from '../error-catalogue.js';
import { freeLoopbackPorts } from './ports.js';

/** How Pebble is started; everything else (ports, listener certificate) is chosen here. */
export interface PebbleOptions {
  /** PEBBLE_ALTERNATE_ROOTS: chains besides the default one. */
  readonly alternateRoots?: number;
  /** PEBBLE_WFE_NONCEREJECT; left unset keeps Pebble's own default, which exists to harden clients. */
  readonly nonceRejectPercent?: number;
  /** PEBBLE_CHAIN_LENGTH. */
  readonly chainLength?: number;
  /** Where the config and certificates go; kept on stop(). A temporary directory, removed on stop(), otherwise. */
  readonly workDir?: string;
  /** Further variables for Pebble, e.g. PEBBLE_AUTHZREUSE. */
  readonly env?: Record<string, string>;
  /** A file that gets all of Pebble's own output (its request log, a goroutine dump on SIGQUIT), for reading a run afterwards. */
  readonly logFile?: string;
}

/** A running local Pebble and what a client needs to talk to it. */
export interface LocalPebble {
  /** https://127.0.0.1:PORT/dir */
  readonly directoryUrl: string;
  /** https://127.0.0.1:PORT, Pebble's management listener (/roots/N, /intermediates/N). */
  readonly managementUrl: string;
  /** http://127.0.0.1:PORT, challtestsrv's management API. */
  readonly challtestsrvUrl: string;
  /** The CA that signed Pebble's HTTPS listener certificate: what a client must trust to talk to it. */
  readonly acmeServerCaPem: string;
  /** The same, written to a file (for CERTPLANE_ACME_CA_CERTS). */
  readonly acmeServerCaPath: string;
  /**
   * The port Pebble's VA connects to for http-01. challtestsrv answers on it at 127.0.0.1;
   * an agent answers on it at another loopback address that `resolve()` points its names to.
   */
  readonly http01Port: number;
  /** Makes challtestsrv's DNS answer `host` with `address` (A record), e.g. an agent on 127.0.0.2. */
  resolve(host: string, address: string): Promise<void>;
  /** PEM of /roots/0..alternateRoots. */
  roots(): Promise<string[]>;
  /** PEM of /intermediates/0..alternateRoots. */
  intermediates(): Promise<string[]>;
  /**
   * Pebble's own record of the certificate with serial number `serialHex` (as X509Certificate's
   * serialNumber gives it), from /cert-status-by-serial: whether the CA considers it revoked,
   * and for which RFC 5280 reason. What a revocation must change, seen from the CA.
   */
  certificateStatus(serialHex: string): Promise<{ status: string; reason: number | null }>;
  /** Pebble's and challtestsrv's process ids, for a bench that reads their CPU time from /proc. */
  readonly pids: readonly number[];
  /** Kills both processes, waits for their exit, removes the temporary directory it created. */
  stop(): Promise<void>;
}

const READY_TIMEOUT_MS = 15_000;
const READY_POLL_MS = 50;
const REQUEST_TIMEOUT_MS = 5_000;
const STOP_GRACE_MS = 5_000;
const OUTPUT_LINES_KEPT = 30;

/** A child process with the tail of its output, kept for the error a person reads when it fails. */
interface Supervised {
  readonly name: string;
  readonly child: ChildProcess;
  readonly output: string[];
  /** Settles once the process is gone and its output is fully read, or it could not be started. */
  readonly exited: Promise<unknown>;
}

/**
 * Where infra/pebble/build.sh installs Pebble 2.4.0 built from Debian's source with the
 * store's reads that wait for an order's or authorization's lock taken out of its read lock:
 * Debian's binary deadlocks in newOrder's under concurrent orders (docs/testing.md, "A Pebble
 * without the newOrder deadlock").
 */
export const PATCHED_PEBBLE = '/usr/local/libexec/certplane/pebble';

/** The Pebble binary started: CERTPLANE_DEVENV_PEBBLE when set (`pebble` for Debian's own), else the patched build when it is installed, else `pebble` from PATH, with a warning on stderr. */
export function pebbleBinary(env: NodeJS.ProcessEnv = process.env): string {
  if (env.CERTPLANE_DEVENV_PEBBLE) return env.CERTPLANE_DEVENV_PEBBLE;
  if (existsSync(PATCHED_PEBBLE)) return PATCHED_PEBBLE;
  if (!warnedUnpatched) {
    warnedUnpatched = true;
    process.stderr.write(`certplane devenv: ${PATCHED_PEBBLE} is missing (bash infra/setup.sh builds it); starting pebble from PATH, which can deadlock under concurrent orders\n`);
  }
  return 'pebble';
}
let warnedUnpatched = false;

/**
 * Starts at most this many times when a port chosen for Pebble or challtestsrv was taken
 * before the program bound it (Pebble exits; challtestsrv says so and is stopped). The ports
 * are chosen outside the ephemeral range (ports.ts), so no outgoing connection takes one
 * (which happened once, 2026-12-04, when they came from listen(0)); another program choosing
 * the same port at the same moment still can.
 */
const PORT_ATTEMPTS = 3;

/** Starts pebble-challtestsrv, then Pebble resolving through it, and waits until Pebble answers over HTTPS. */
export async function startPebble(options: PebbleOptions = {}): Promise<LocalPebble> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await startPebbleOnce(options);
    } catch (error) {
      if (attempt >= PORT_ATTEMPTS || !portTaken(error)) throw error;
    }
  }
}

/** A start that failed because a program could not bind a port it was given. */
export function portTaken(error: unknown): boolean {
  if (!(error instanceof CertplaneError) || error.code !== ErrorCode.DEVENV_PEBBLE_START) return false;
  const output = (error.details as { output?: unknown }).output;
  return Array.isArray(output) && output.some((line) => typeof line === 'string' && line.includes(ADDRESS_IN_USE));
}

/** What Go's net package says when a port is taken. */
const ADDRESS_IN_USE = 'address already in use';

async function startPebbleOnce(options: PebbleOptions): Promise<LocalPebble> {
  const alternateRoots = options.alternateRoots ?? 2;
  checkOptions(options, alternateRoots);
  const ownsWorkDir = options.workDir === undefined;
  const workDir = options.workDir ?? (await mkdtemp(join(tmpdir(), 'certplane-pebble-')));
  await mkdir(workDir, { recursive: true });
  const processes: Supervised[] = [];
  const killOnExit = (): void => {
    processes.forEach(({ child }) => child.kill('SIGKILL'));
    if (ownsWorkDir) rmSync(workDir, { recursive: true, force: true });
  };
  process.on('exit', killOnExit);
  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopped ??= (async () => {
      await Promise.all(processes.map(terminate));
      process.removeListener('exit', killOnExit);
      if (ownsWorkDir) await rm(workDir, { recursive: true, force: true });
    })());

  try {
    const [acmePort, managementPort, challtestsrvPort, dnsPort, httpPort, tlsPort] = await freeLoopbackPorts(6);
    const listener = await loopbackServerCertificate('certplane local Pebble listener CA');
    const acmeServerCaPath = join(workDir, 'acme-server-ca.pem');
    const configPath = join(workDir, 'pebble-config.json');
    await writeFile(acmeServerCaPath, `${listener.caPem.trimEnd()}\n`);
    await writeFile(join(workDir, 'listener-cert.pem'), listener.certPem);
    await writeFile(join(workDir, 'listener-key.pem'), listener.keyPem, { mode: 0o600 });
    await writeFile(
      configPath,
      JSON.stringify({
        pebble: {
          listenAddress: `127.0.0.1:${acmePort}`,
          managementListenAddress: `127.0.0.1:${managementPort}`,
          certificate: join(workDir, 'listener-cert.pem'),
          privateKey: join(workDir, 'listener-key.pem'),
          httpPort,
          tlsPort,
          ocspResponderURL: '',
          externalAccountBindingRequired: false,
        },
      }),
    );

    const challtestsrvUrl = `http://127.0.0.1:${challtestsrvPort}`;
    const challtestsrv = supervise(
      'pebble-challtestsrv',
      [
        '-management', `127.0.0.1:${challtestsrvPort}`,
        '-dns01', `127.0.0.1:${dnsPort}`,
        '-http01', `127.0.0.1:${httpPort}`,
        '-https01', '',
        '-tlsalpn01', '',
        '-defaultIPv4', '127.0.0.1',
        '-defaultIPv6', '',
      ],
      process.env,
    );
    processes.push(challtestsrv);
    // challtestsrv keeps running when one of its servers cannot bind, and says so only in its
    // output: every server it runs must answer, and a port taken fails the start at once (for
    // startPebble to try again on fresh ports).
    await waitUntilReady(
      challtestsrv,
      async () => {
        await answers(challtestsrvUrl);
        await resolvesOn(dnsPort!);
        await accepts(httpPort!);
      },
      () => challtestsrv.output.some((line) => line.includes(ADDRESS_IN_USE)),
    );

    const pebble = supervise('pebble', ['-config', configPath, '-dnsserver', `127.0.0.1:${dnsPort}`], pebbleEnv(options, alternateRoots), options.logFile);
    processes.push(pebble);
    const directoryUrl = `https://127.0.0.1:${acmePort}/dir`;
    const managementUrl = `https://127.0.0.1:${managementPort}`;
    await waitUntilReady(pebble, async () => {
      await answers(directoryUrl, listener.caPem);
      await answers(`${managementUrl}/roots/0`, listener.caPem);
    });

    const fetchAll = (kind: 'roots' | 'intermediates') => (): Promise<string[]> =>
      Promise.all(
        Array.from({ length: alternateRoots + 1 }, (_, index) => fetchManagementPem(`${managementUrl}/${kind}/${index}`, listener.caPem)),
      );
    return {
      directoryUrl,
      managementUrl,
      challtestsrvUrl,
      acmeServerCaPem: listener.caPem,
      acmeServerCaPath,
      http01Port: httpPort as number,
      resolve: (host, address) => addARecord(challtestsrvUrl, host, address),
      roots: fetchAll('roots'),
      intermediates: fetchAll('intermediates'),
      certificateStatus: async (serialHex) => {
        // Pebble keys certificates by the serial's hex without leading zeros.
        const url = `${managementUrl}/cert-status-by-serial/${BigInt(`0x${serialHex}`).toString(16)}`;
        const response = await httpsGet(url, listener.caPem);
        if (response.status !== 200) throw new CertplaneError(ErrorCode.DEVENV_PEBBLE_MANAGEMENT, `Pebble's management API answered ${response.status} to GET ${url}: ${response.body.slice(0, 200)}`, { url, status: response.status });
        const record = JSON.parse(response.body) as { Status?: unknown; Reason?: unknown };
        return { status: String(record.Status), reason: typeof record.Reason === 'number' ? record.Reason : null };
      },
      pids: processes.flatMap(({ child }) => (child.pid === undefined ? [] : [child.pid])),
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

async function addARecord(challtestsrvUrl: string, host: string, address: string): Promise<void> {
  const response = await fetch(`${challtestsrvUrl}/add-a`, {
    method: 'POST',
    body: JSON.stringify({ host: `${host.replace(/\.$/, '')}.`, addresses: [address] }),
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  if (!response.ok) throw new CertplaneError(ErrorCode.DEVENV_CHALLTESTSRV, `challtestsrv refused the A record ${host} -> ${address}: HTTP ${response.status}`);
}

/** Pebble silently ignores some out-of-range values (a negative chain length) and panics on others; both deserve a clear word first. */
function checkOptions(options: PebbleOptions, alternateRoots: number): void {
  const problems = [
    Number.isInteger(alternateRoots) && alternateRoots >= 0 ? undefined : `alternateRoots must be an integer >= 0, not ${alternateRoots}`,
    options.chainLength === undefined || (Number.isInteger(options.chainLength) && options.chainLength >= 1)
      ? undefined
      : `chainLength must be an integer >= 1 (the number of intermediates), not ${options.chainLength}`,
    options.nonceRejectPercent === undefined || (Number.isInteger(options.nonceRejectPercent) && options.nonceRejectPercent >= 0 && options.nonceRejectPercent <= 100)
      ? undefined
      : `nonceRejectPercent must be an integer from 0 to 100, not ${options.nonceRejectPercent}`,
  ].filter((problem) => problem !== undefined);
  if (problems.length > 0) throw new CertplaneError(ErrorCode.DEVENV_PEBBLE_OPTIONS, `Cannot start Pebble: ${problems.join('; ')}.`, { problems });
}


/** Pebble reads its knobs from the environment; inherited PEBBLE_* variables are dropped so a developer's shell cannot change a test. */
function pebbleEnv(options: PebbleOptions, alternateRoots: number): NodeJS.ProcessEnv {
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('PEBBLE_')));
  return {
    ...inherited,
    ...options.env,
    PEBBLE_VA_NOSLEEP: '1',
    PEBBLE_ALTERNATE_ROOTS: String(alternateRoots),
    ...(options.nonceRejectPercent === undefined ? {} : { PEBBLE_WFE_NONCEREJECT: String(options.nonceRejectPercent) }),
    ...(options.chainLength === undefined ? {} : { PEBBLE_CHAIN_LENGTH: String(options.chainLength) }),
  };
}

/** Starts `name` (pebble: pebbleBinary()) and keeps its last lines of output. */
function supervise(name: string, args: string[], env: NodeJS.ProcessEnv, logFile?: string): Supervised {
  const child = spawn(name === 'pebble' ? pebbleBinary(env) : name, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const log = logFile === undefined ? undefined : createWriteStream(logFile, { flags: 'a' });
  const output: string[] = [];
  const keep = (lines: string[]): void => {
    output.push(...lines.filter((line) => line.length > 0));
    output.splice(0, Math.max(0, output.length - OUTPUT_LINES_KEPT));
  };
  for (const stream of [child.stdout, child.stderr]) {
    let unfinished = '';
    stream?.on('data', (chunk: Buffer) => {
      log?.write(chunk);
      const lines = (unfinished + chunk.toString()).split('\n');
      unfinished = lines.pop() ?? '';
      keep(lines);
    });
    stream?.on('end', () => keep([unfinished]));
  }
  const exited = new Promise((resolve) => {
    child.once('close', (code) => (log?.end(), resolve(code)));
    child.once('error', (error) => {
      log?.end();
      keep([`${name} could not be started (${error.message}); it comes with the Debian package "pebble".`]);
      resolve(error);
    });
  });
  return { name, child, output, exited };
}

/** Polls `ready` until it resolves; fails fast with the process's own words when it exits first. */
async function waitUntilReady(supervised: Supervised, ready: () => Promise<void>, failed: () => boolean = () => false): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  let hasExited = false;
  let lastFailure = 'no attempt';
  void supervised.exited.then(() => (hasExited = true));
  while (!hasExited && !failed() && Date.now() < deadline) {
    try {
      return await ready();
    } catch (error) {
      lastFailure = error instanceof Error ? error.message : String(error);
    }
    await sleep(READY_POLL_MS);
  }
  const why = hasExited
    ? `exited (code ${supervised.child.exitCode ?? supervised.child.signalCode ?? 'unknown'})`
    : failed()
      ? 'reported a failure'
      : `did not answer within ${READY_TIMEOUT_MS} ms (last attempt: ${lastFailure})`;
  throw new CertplaneError(
    ErrorCode.DEVENV_PEBBLE_START,
    `${supervised.name} ${why} while starting. Its last output:\n${supervised.output.join('\n') || '(none)'}`,
    { process: supervised.name, exitCode: supervised.child.exitCode, lastFailure, output: [...supervised.output] },
  );
}

async function terminate({ child, exited }: Supervised): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  child.kill('SIGTERM');
  const killed = await Promise.race([exited.then(() => true), sleep(STOP_GRACE_MS).then(() => false)]);
  if (!killed) {
    child.kill('SIGKILL');
    await exited;
  }
}

/** challtestsrv's DNS server answers an A query on `port` (over UDP, as Pebble asks first). */
async function resolvesOn(port: number): Promise<void> {
  const resolver = new Resolver({ timeout: 1_000, tries: 1 });
  resolver.setServers([`127.0.0.1:${port}`]);
  await resolver.resolve4('ready.certplane.test');
}

/** A TCP connection to `port` of 127.0.0.1 is accepted. */
function accepts(port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => (socket.destroy(), resolve()));
    socket.setTimeout(REQUEST_TIMEOUT_MS, () => socket.destroy(new Error(`no answer on port ${port}`)));
    socket.once('error', reject);
  });
}

/** Resolves once `url` gives any HTTP answer (over HTTPS trusting `caPem` when given): the listener is up. */
async function answers(url: string, caPem?: string): Promise<void> {
  if (caPem) {
    await httpsGet(url, caPem);
    return;
  }
  const response = await fetch(url, { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
  await response.body?.cancel();
}

async function fetchManagementPem(url: string, caPem: string): Promise<string> {
  const response = await httpsGet(url, caPem).catch((error: unknown) => {
    throw new CertplaneError(ErrorCode.DEVENV_PEBBLE_MANAGEMENT, `Could not GET ${url} from Pebble's management API (${(error as Error).message}); is this Pebble still running?`, { url }, { cause: error });
  });
  if (response.status !== 200 || !response.body.includes('-----BEGIN CERTIFICATE-----')) {
    throw new CertplaneError(ErrorCode.DEVENV_PEBBLE_MANAGEMENT, `Pebble's management API answered ${response.status} without a certificate to GET ${url}.`, {
      url,
      status: response.status,
    });
  }
  return response.body;
}

/** GET over HTTPS trusting exactly `caPem`, as a client of the local Pebble must. */
function httpsGet(url: string, caPem: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const outgoing = request(url, { method: 'GET', ca: caPem, agent: false, timeout: REQUEST_TIMEOUT_MS }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
      response.on('error', reject);
    });
    outgoing.on('timeout', () => outgoing.destroy(new Error(`GET ${url} timed out after ${REQUEST_TIMEOUT_MS} ms`)));
    outgoing.on('error', reject);
    outgoing.end();
  });
}
