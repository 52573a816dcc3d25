/**
 * The served-chain probe: the agent connects with TLS to the service on its own instance
 * and reports what the service hands out, because installed is not served. In 2021 a
 * second, stale certificate store kept serving the old chain after the files were fixed,
 * and every check that read the files said fine. Only certificates travel: the probe never
 * authenticates the server (it reports, the plane judges), never sends a client certificate
 * and never reads application data.
 */
import { connect as connectTcp, isIP, type Socket } from 'node:net';
import { connect, type DetailedPeerCertificate } from 'node:tls';
import type { Logger } from 'pino';
import { MAX_PROBES_PER_REPORT, MAX_SERVED_CERTIFICATE_CHARS, MAX_SERVED_CHAIN, SERVED_SNI, type ServedProbe } from '../channel/protocol.js';

/**
 * A service to probe, as `--probe` gave it: `HOST:PORT` speaks TLS from the first byte;
 * `postgres://HOST:PORT` is a PostgreSQL server, which negotiates TLS inside its own
 * protocol (an SSLRequest answered with "S") before the handshake.
 */
export interface ProbeTarget {
  readonly host: string;
  readonly port: number;
  readonly protocol: 'tls' | 'postgres';
  /** As reported: HOST:PORT (IPv6 in brackets), with postgres:// for PostgreSQL. */
  readonly label: string;
}

/** PostgreSQL's SSLRequest: length 8, then the code 1234 5679 (protocol section 53.2.10). */
const POSTGRES_SSL_REQUEST = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);

/** The probe interval unless `--probe-interval` says otherwise: five minutes. */
export const DEFAULT_PROBE_INTERVAL_SECONDS = 300;
/** A handshake on the instance's own network that takes longer than this is as good as unreachable. */
const PROBE_TIMEOUT_MS = 10_000;
/** Probes at once: a few, so that many names on one service do not open many connections together. */
const PROBE_CONCURRENCY = 4;

/** Reads [postgres://]HOST:PORT (`[v6]:PORT` for IPv6); undefined when it is not one. */
export function parseProbeTarget(spec: string): ProbeTarget | undefined {
  const match = /^(postgres:\/\/)?(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(spec);
  if (!match) return undefined;
  const protocol = match[1] === undefined ? 'tls' : 'postgres';
  const host = match[2] ?? (match[3] as string);
  const port = Number(match[4]);
  if (port < 1 || port > 65_535 || (match[2] !== undefined && isIP(host) !== 6)) return undefined;
  const address = match[2] !== undefined ? `[${host}]:${port}` : `${host}:${port}`;
  return { host, port, protocol, label: protocol === 'postgres' ? `postgres://${address}` : address };
}

/**
 * One TLS handshake with `target`, naming `sni` (none when null): the certificates the
 * service sent, leaf first, as DER in base64. The agent's TLS client trusts no root here
 * (`ca: []`), so nothing of its own store is added to what the service sent; certificates
 * are linked leaf to issuer, as node:tls does, and at most MAX_SERVED_CHAIN are kept.
 */
export function probeOnce(target: ProbeTarget, sni: string | null, timeoutMs = PROBE_TIMEOUT_MS): Promise<ServedProbe> {
  return new Promise((resolve) => {
    const where = { target: target.label, sni };
    let settled = false;
    /** The outermost socket: once TLS wraps the PostgreSQL connection, it owns it, and destroying both crashes Node. */
    let outermost: Socket | undefined;
    const finish = (probe: ServedProbe) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      outermost?.destroy();
      resolve(probe);
    };
    const unreachable = (code: string, message: string) => finish({ ...where, unreachable: { code: code.slice(0, 64), message: message.slice(0, 500) } });
    const failed = (error: NodeJS.ErrnoException) => unreachable(error.code ?? 'ECONNECT', error.message);
    const timer = setTimeout(() => unreachable('ETIMEDOUT', `no TLS handshake within ${timeoutMs} ms`), timeoutMs);
    const handshake = (over?: Socket) => {
      const socket = connect({ ...(over ? { socket: over } : { host: target.host, port: target.port }), ...(sni === null ? {} : { servername: sni }), rejectUnauthorized: false, ca: [] });
      outermost = socket;
      socket.once('secureConnect', () => {
        const certificates = peerChain(socket.getPeerCertificate(true));
        if (certificates.length > 0) finish({ ...where, certificates });
        else if (socket.getPeerCertificate().raw) unreachable('E2BIG', `the server's certificate is larger than a report holds (${MAX_SERVED_CERTIFICATE_CHARS} base64 characters)`);
        else unreachable('ENOCERTIFICATE', 'the handshake completed without a server certificate');
      });
      socket.once('error', failed);
    };
    if (target.protocol === 'tls') {
      handshake();
      return;
    }
    const raw = connectTcp({ host: target.host, port: target.port });
    outermost = raw;
    raw.once('error', failed);
    raw.once('connect', () => raw.write(POSTGRES_SSL_REQUEST));
    raw.once('data', (answer: Buffer) => {
      // Exactly "S": anything sent with it would be read as if it came over TLS (CVE-2021-23214).
      if (answer.length === 1 && answer[0] === 0x53) handshake(raw);
      else if (answer[0] === 0x4e) unreachable('ENOTLS', 'the PostgreSQL server answered the SSLRequest with N: it does not offer TLS (ssl = off)');
      else unreachable('EPROTO', `the server answered the SSLRequest with ${answer.length} bytes that are not PostgreSQL's "S"`);
    });
  });
}

/** The peer's certificates, leaf first, following issuer links until they end, loop, or reach one larger than a report holds. */
function peerChain(leaf: DetailedPeerCertificate): string[] {
  const chain: string[] = [];
  const seen = new Set<string>();
  let current: DetailedPeerCertificate | undefined = leaf;
  while (current?.raw && chain.length < MAX_SERVED_CHAIN) {
    const der = current.raw.toString('base64');
    if (seen.has(der) || der.length > MAX_SERVED_CERTIFICATE_CHARS) break;
    seen.add(der);
    chain.push(der);
    current = current.issuerCertificate;
  }
  return chain;
}

export interface ServedProberOptions {
  readonly targets: readonly ProbeTarget[];
  /** The names to use as SNI: the instance's hostnames (the installed leaf's DNS names); empty probes once without SNI. */
  readonly names: () => Promise<readonly string[]>;
  readonly logger: Logger;
  readonly timeoutMs?: number;
}

/** Probes every target under every name, a few at a time, at most MAX_PROBES_PER_REPORT probes. */
export class ServedProber {
  constructor(private readonly options: ServedProberOptions) {}

  async probeAll(): Promise<ServedProbe[]> {
    // SNI is a DNS name: no wildcard, no address, nothing a report could not carry.
    const names = (await this.options.names()).filter((name) => !name.startsWith('*.') && isIP(name) === 0 && name.length <= 253 && SERVED_SNI.test(name));
    const snis: (string | null)[] = names.length > 0 ? [...new Set(names)] : [null];
    const planned = this.options.targets.flatMap((target) => snis.map((sni) => ({ target, sni })));
    if (planned.length > MAX_PROBES_PER_REPORT) {
      this.options.logger.warn({ planned: planned.length, probed: MAX_PROBES_PER_REPORT }, 'more targets and names than one report holds: only the first are probed');
    }
    const work = planned.slice(0, MAX_PROBES_PER_REPORT);
    const results: ServedProbe[] = new Array(work.length);
    let next = 0;
    const worker = async () => {
      while (next < work.length) {
        const index = next;
        next += 1;
        const { target, sni } = work[index]!;
        results[index] = await probeOnce(target, sni, this.options.timeoutMs);
      }
    };
    await Promise.all(Array.from({ length: Math.min(PROBE_CONCURRENCY, work.length) }, worker));
    return results;
  }
}
