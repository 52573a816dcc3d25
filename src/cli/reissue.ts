/**
 * Operator commands against a running management plane: `certplane reissue` starts (or
 * dry-runs) a fleet reissue or rechain (`--mode`) and can follow it with a progress bar; `certplane status`
 * shows an instance, a campaign, or the first page of the fleet.
 */
import { readText } from '../config/trust.js';
import { CertplaneError } from '../errors.js';
import { sendHttp, type ClientTls } from '../http-client.js';
import { ExitCode, parse, parseTime, usageError, type Io } from './args.js';
import { ErrorCode, isErrorCode } from '../error-catalogue.js';
import { describeDryRun } from '../jobs/campaigns.js';

/** How the CLI reaches a plane in secure mode: its client certificate, and the CA that signed the listener's. */
export const TLS_USAGE = '[--cert CLIENT.pem --key CLIENT.key] [--server-ca CA.pem]   (or CERTPLANE_CLIENT_CERT, CERTPLANE_CLIENT_KEY, CERTPLANE_SERVER_CA)';
const REISSUE_USAGE = `usage: certplane reissue --server URL (--instance ID... | --cluster NAME | --chain-includes CN|sha256:HASH | --trust-broken | --all | --selector JSON) --reason TEXT [--mode reissue|rechain|rechain-or-reissue] [--dry-run] [--follow] [--actor NAME] ${TLS_USAGE}`;
const MODES = ['reissue', 'rechain', 'rechain-or-reissue'];
const STATUS_USAGE = `usage: certplane status --server URL [--instance ID | --campaign ID] [--json] ${TLS_USAGE}`;
const WHATIF_USAGE = `usage: certplane whatif --server URL [--remove-root CN|sha256:PIN]... [--from-profile NAME]... [--distrust PIN]... [--replace-profile NAME=ROOTS.pem]... [--at TIME] [--cluster NAME | --instance ID...] [--json] ${TLS_USAGE}`;
export const TLS_OPTIONS = { cert: { type: 'string' }, key: { type: 'string' }, 'server-ca': { type: 'string' } } as const;
/** Rows per request while the CLI walks every page of a what-if. */
const WHATIF_PAGE = 500;

/** Where the plane is and how to prove who we are: files are read here, on the operator's machine. */
export interface Target {
  readonly server: URL;
  readonly tls: ClientTls;
}

export async function targetOf(values: { server?: string; cert?: string; key?: string; 'server-ca'?: string }, env: Io['env'], usage: string): Promise<Target> {
  if (!values.server) throw usageError('--server is required', usage);
  let server: URL;
  try {
    server = new URL(values.server);
  } catch {
    throw usageError(`--server must be a URL such as https://certplane.internal:8443, not "${values.server}"`, usage);
  }
  if (server.protocol !== 'https:' && server.protocol !== 'http:') throw usageError(`--server must be an https:// (or development http://) URL, not "${values.server}"`, usage);
  const certPath = values.cert ?? env.CERTPLANE_CLIENT_CERT;
  const keyPath = values.key ?? env.CERTPLANE_CLIENT_KEY;
  const caPath = values['server-ca'] ?? env.CERTPLANE_SERVER_CA;
  if ((certPath === undefined) !== (keyPath === undefined)) throw usageError('give --cert and --key together (the client certificate and its key)', usage);
  const tls: { cert?: string; key?: string; ca?: string } = {};
  if (certPath && keyPath) {
    tls.cert = await readText(certPath, '--cert');
    tls.key = await readText(keyPath, '--key');
  }
  if (caPath) tls.ca = await readText(caPath, '--server-ca');
  return { server, tls };
}

export async function api(target: Target, method: string, path: string, actor: string | undefined, body?: unknown): Promise<{ status: number; body: any }> {
  const payload = body === undefined ? undefined : JSON.stringify(body);
  const headers = { ...(payload === undefined ? {} : { 'content-type': 'application/json' }), ...(actor ? { 'x-certplane-actor': actor } : {}) };
  const answer = await sendHttp(new URL(path, target.server), { method, headers, ...(payload === undefined ? {} : { body: payload }), tls: target.tls }).catch((cause: Error) => {
    throw new CertplaneError(ErrorCode.CLI_SERVER_UNREACHABLE, `cannot reach ${target.server.origin}: ${cause.message}`, {}, { cause });
  });
  let parsed: any;
  try {
    parsed = JSON.parse(answer.text);
  } catch {
    parsed = { message: answer.text };
  }
  if (answer.status >= 400) {
    // A code this build does not know (a newer plane's) is kept in the message and the details.
    const code = isErrorCode(parsed.code) ? parsed.code : ErrorCode.CLI_SERVER_ERROR;
    const unknown = parsed.code !== undefined && code !== parsed.code ? `${String(parsed.code)}: ` : '';
    throw new CertplaneError(code, `${method} ${path}: HTTP ${answer.status}: ${unknown}${parsed.message ?? answer.text}`, { status: answer.status, ...(unknown ? { serverCode: String(parsed.code) } : {}) });
  }
  return { status: answer.status, body: parsed };
}

function selectorFrom(values: { instance?: string[]; cluster?: string; 'chain-includes'?: string; 'trust-broken'?: boolean; all?: boolean; selector?: string }): unknown {
  const given = [values.instance?.length ? 'instance' : '', values.cluster ? 'cluster' : '', values['chain-includes'] ? 'chain' : '', values['trust-broken'] ? 'trust' : '', values.all ? 'all' : '', values.selector ? 'selector' : ''].filter(Boolean);
  if (given.length !== 1) throw usageError('give exactly one of --instance, --cluster, --chain-includes, --trust-broken, --all, --selector', REISSUE_USAGE);
  if (values.selector) {
    try {
      return JSON.parse(values.selector);
    } catch {
      throw usageError('--selector must be JSON, e.g. {"cluster":"eu-1"}', REISSUE_USAGE);
    }
  }
  if (values.instance?.length) return { instanceIds: values.instance };
  if (values.cluster) return { cluster: values.cluster };
  if (values['chain-includes']) return { chainIncludes: values['chain-includes'] };
  if (values['trust-broken']) return { trustBroken: true };
  return { all: true };
}

/** One line of progress: a bar over matched, and the counts that matter at 3 a.m. */
export function progressLine(
  counts: { matched: number; installed: number; failed: number; ordered: number; waitingForAgent: number; queued: number; cancelled: number; rechained?: number; skipped?: number },
  width = 30,
): string {
  const skipped = counts.skipped ?? 0;
  const done = counts.installed + counts.failed + counts.cancelled + skipped;
  const filled = counts.matched === 0 ? width : Math.round((done / counts.matched) * width);
  const rechain = counts.rechained || skipped ? `, re-chained ${counts.rechained ?? 0}, skipped ${skipped}` : '';
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${counts.matched} installed ${counts.installed}, failed ${counts.failed}, ordered ${counts.ordered}${rechain}, waiting for agent ${counts.waitingForAgent}, queued ${counts.queued}`;
}

export async function reissue(args: string[], io: Io): Promise<number> {
  const { values, positionals } = parse(
    args,
    {
      server: { type: 'string' },
      instance: { type: 'string', multiple: true },
      cluster: { type: 'string' },
      'chain-includes': { type: 'string' },
      'trust-broken': { type: 'boolean' },
      all: { type: 'boolean' },
      selector: { type: 'string' },
      reason: { type: 'string' },
      mode: { type: 'string' },
      'dry-run': { type: 'boolean' },
      follow: { type: 'boolean' },
      actor: { type: 'string' },
      'poll-ms': { type: 'string' },
      ...TLS_OPTIONS,
    },
    REISSUE_USAGE,
  );
  if (positionals.length > 0 || !values.server || !values.reason) throw usageError('--server and --reason are required', REISSUE_USAGE);
  const selector = selectorFrom(values);
  if (values.mode !== undefined && !MODES.includes(values.mode)) throw usageError(`--mode is one of ${MODES.join(', ')}, not "${values.mode}"`, REISSUE_USAGE);
  const target = await targetOf(values, io.env, REISSUE_USAGE);
  const actor = values.actor ?? io.env.USER ?? undefined;
  const started = await api(target, 'POST', '/v1/reissues', actor, { selector, reason: values.reason, dryRun: Boolean(values['dry-run']), ...(values.mode ? { mode: values.mode } : {}) });
  if (values['dry-run']) {
    io.stdout.write(`${describeDryRun(started.body).join('\n')}\n`);
    return ExitCode.OK;
  }
  const id = started.body.id as string;
  const counts = started.body.counts;
  io.stdout.write(`campaign ${id} (${started.body.mode}) started: ${counts.matched} instance(s)${counts.skipped > 0 ? `, ${counts.skipped} skipped (${Object.entries(counts.skippedReasons).map(([r, n]) => `${r} ${n}`).join(', ')})` : ''}\n`);
  if (!values.follow) return ExitCode.OK;
  const pollMs = Number(values['poll-ms'] ?? 1000);
  const tty = (io.stderr as NodeJS.WriteStream).isTTY === true;
  let last = '';
  for (;;) {
    const { body } = await api(target, 'GET', `/v1/reissues/${id}`, actor);
    const text = progressLine(body.counts);
    if (tty) io.stderr.write(`\r${text}`);
    else if (text !== last) io.stderr.write(`${text}\n`);
    last = text;
    if (body.state !== 'running') {
      if (tty) io.stderr.write('\n');
      const reasons = Object.entries(body.counts.failureReasons ?? {}).map(([reason, count]) => `${reason} ${count}`);
      io.stdout.write(`campaign ${id} ${body.state}: ${body.counts.installed} installed (${body.counts.rechained ?? 0} re-chained), ${body.counts.failed} failed${reasons.length > 0 ? ` (${reasons.join(', ')})` : ''}, ${body.counts.skipped ?? 0} skipped\n`);
      return body.counts.failed > 0 ? ExitCode.NO : ExitCode.OK;
    }
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
}

export async function status(args: string[], io: Io): Promise<number> {
  const { values, positionals } = parse(args, { server: { type: 'string' }, instance: { type: 'string' }, campaign: { type: 'string' }, json: { type: 'boolean' }, ...TLS_OPTIONS }, STATUS_USAGE);
  if (positionals.length > 0 || !values.server) throw usageError('--server is required', STATUS_USAGE);
  if (values.instance && values.campaign) throw usageError('give --instance or --campaign, not both', STATUS_USAGE);
  const target = await targetOf(values, io.env, STATUS_USAGE);
  const path = values.instance ? `/v1/instances/${values.instance}` : values.campaign ? `/v1/reissues/${values.campaign}` : '/v1/instances?limit=100';
  const { body } = await api(target, 'GET', path, undefined);
  if (values.json) {
    io.stdout.write(`${JSON.stringify(body, null, 2)}\n`);
    return ExitCode.OK;
  }
  if (values.campaign) {
    io.stdout.write(`campaign ${body.id} ${body.state} (by ${body.requestedBy}: ${body.reason})\n${progressLine(body.counts)}\n`);
    return ExitCode.OK;
  }
  const rows = values.instance ? [body] : body.items;
  for (const i of rows) {
    const c = i.certificate;
    io.stdout.write(
      `${i.id}  ${i.name.padEnd(20)} agent ${i.agent.connected ? 'online ' : 'offline'}  ${c ? `${c.status.padEnd(9)} ${c.anchor ?? '-'}  not after ${c.notAfter ?? '-'}` : 'no certificate'}${trustNote(i.trust)}${servedNote(i.served)}${i.renewal.atRisk ? '  AT RISK' : ''}${c?.lastError ? `  error: ${c.lastError}` : ''}\n`,
    );
  }
  if (!values.instance && body.nextCursor) io.stdout.write('(more instances: use the API with ?cursor=)\n');
  return ExitCode.OK;
}

/** What a trust reload made of the installed chain, when it is not fine. */
function trustNote(trust: { status: string; brokenProfiles: string[]; alternateAvailable: boolean } | undefined): string {
  if (trust?.status !== 'broken') return '';
  return `  TRUST BROKEN in ${trust.brokenProfiles.join(', ')} (${trust.alternateAvailable ? 'a stored alternate chain verifies' : 'needs a new certificate'})`;
}

/** What the instance's service serves, as its agent last probed it: nothing before the first probe, a warning unless it is the installed certificate on a good chain. */
function servedNote(served: { status: string; problems: { target: string; sni: string | null; code: string }[] } | undefined): string {
  if (!served || served.status === 'unchecked') return '';
  if (served.status === 'match') return '  served: match';
  const where = [...new Set(served.problems.map((p) => (p.sni ? `${p.target} (${p.sni})` : p.target)))].slice(0, 3).join(', ');
  return `  SERVED ${served.status.toUpperCase()}${where ? ` at ${where}` : ''}`;
}

/** `certplane whatif`: asks the plane what a trust change would do to the fleet, walks every page, prints a table (or JSON). Changes nothing. */
export async function whatif(args: string[], io: Io): Promise<number> {
  const { values, positionals } = parse(
    args,
    {
      server: { type: 'string' },
      'remove-root': { type: 'string', multiple: true },
      'from-profile': { type: 'string', multiple: true },
      distrust: { type: 'string', multiple: true },
      'replace-profile': { type: 'string', multiple: true },
      at: { type: 'string' },
      cluster: { type: 'string' },
      instance: { type: 'string', multiple: true },
      json: { type: 'boolean' },
      ...TLS_OPTIONS,
    },
    WHATIF_USAGE,
  );
  if (positionals.length > 0 || !values.server) throw usageError('--server is required', WHATIF_USAGE);
  if (values.cluster && values.instance?.length) throw usageError('give --cluster or --instance, not both', WHATIF_USAGE);
  const target = await targetOf(values, io.env, WHATIF_USAGE);
  const replaceProfiles: Record<string, string> = {};
  for (const spec of values['replace-profile'] ?? []) {
    const [name, file] = [spec.slice(0, spec.indexOf('=')), spec.slice(spec.indexOf('=') + 1)];
    if (!spec.includes('=') || !name || !file) throw usageError(`--replace-profile takes NAME=ROOTS.pem, not "${spec}"`, WHATIF_USAGE);
    replaceProfiles[name] = await readText(file, `--replace-profile ${name}`);
  }
  const change = {
    ...(values['remove-root']?.length ? { removeRoots: values['remove-root'] } : {}),
    ...(values['from-profile']?.length ? { removeFromProfiles: values['from-profile'] } : {}),
    ...(values.distrust?.length ? { distrustSpki: values.distrust } : {}),
    ...(Object.keys(replaceProfiles).length > 0 ? { replaceProfiles } : {}),
    ...(values.at ? { at: parseTime(values.at, WHATIF_USAGE).toISOString() } : {}),
  };
  const selector = values.cluster ? { cluster: values.cluster } : values.instance?.length ? { instanceIds: values.instance } : { all: true };
  const items: Record<string, any>[] = [];
  let answer: Record<string, any>;
  let cursor: string | undefined;
  do {
    answer = (await api(target, 'POST', '/v1/whatif', undefined, { change, selector, limit: WHATIF_PAGE, ...(cursor ? { cursor } : {}) })).body;
    items.push(...answer.items);
    cursor = answer.nextCursor ?? undefined;
  } while (cursor);
  if (values.json) {
    io.stdout.write(`${JSON.stringify({ evaluatedAt: answer.evaluatedAt, counts: answer.counts, items }, null, 2)}\n`);
    return ExitCode.OK;
  }
  const c = answer.counts;
  io.stdout.write(
    `what-if at ${answer.evaluatedAt}: ${c.instances} instance(s): ${c.verifies} still verify, ${c.alternateChain} need another stored chain (no new order), ${c.newCertificate} need a new certificate, ${c.noInstalledCertificate} have none installed\n`,
  );
  const table = [['INSTANCE', 'NAME', 'CLUSTER', 'OUTCOME', 'BROKEN IN', 'ALTERNATE'], ...items.map((r) => [r.instanceId, r.name, r.cluster ?? '-', r.outcome, r.brokenProfiles.join(',') || '-', r.alternateChainIndex === null ? '-' : `chain ${r.alternateChainIndex}`])];
  const widths = table[0]!.map((_, column) => Math.max(...table.map((row) => String(row[column]).length)));
  for (const row of table) io.stdout.write(`${row.map((cell, column) => String(cell).padEnd(widths[column]!)).join('  ').trimEnd()}\n`);
  return ExitCode.OK;
}
