/**
 * The administrator's console: one command set behind both local transports, the Unix
 * socket (socket.ts) and standard input (console.ts). Neither asks for a certificate, on
 * purpose: this is how the first client certificate gets registered, and the way in when
 * TLS or the client registry is broken (the incident case). Whoever reaches it already
 * is the service's user or root, as in the design this follows
 * (RavenDB 4.0's design posts on the administrator's local console, 2017). Because nothing authenticates
 * here, every state-changing command is recorded in the audit trail with who (the
 * transport's actor) and why (a reason, required except when registering a client).
 */
import type { Logger } from 'pino';
import { z } from 'zod';
import type { SessionRegistry } from '../fleet/sessions.js';
import type { ServerCertificate } from '../api/tls.js';
import { parseCertificateBundle } from '../chain/index.js';
import type { Clock } from '../config/clock.js';
import type { LiveTrust } from '../config/trust.js';
import type { TrustEvaluation } from '../jobs/trust.js';
import { CertplaneError } from '../errors.js';
import { describeIssues } from '../validation.js';
import { Selector, describeDryRun, type Campaigns } from '../jobs/campaigns.js';
import { REISSUE_MODES } from '../lifecycle/index.js';
import type { ApiClientRecord, Store } from '../store/index.js';
import { Text } from '../api/schemas.js';
import { escapeControlCharacters, refusePrivateKey } from '../untrusted-text.js';
import { ErrorCode } from '../error-catalogue.js';
import { processName } from '../process-name.js';

/** What the console acts on: the same parts `certplane serve` composes, so both transports see the live process. */
export interface AdminDeps {
  readonly store: Store;
  /** This process's agent sessions: revocation cuts them off at once. */
  readonly sessions: Pick<SessionRegistry, 'get' | 'instanceIds' | 'disconnectRevoked'>;
  readonly campaigns: Pick<Campaigns, 'start'>;
  readonly clock: Clock;
  readonly logger: Logger;
  /** The HTTPS listener's certificate, re-read from its files; absent when the plane serves plain HTTP (development mode). */
  readonly serverTls?: Pick<ServerCertificate, 'reload'> | undefined;
  /** The trust settings in force and the fleet's re-evaluation under them; absent where no plane runs them. */
  readonly trust?:
    | {
        readonly live: Pick<LiveTrust, 'reload'>;
        readonly evaluation: Pick<TrustEvaluation, 'evaluate'>;
        /** CERTPLANE_ON_TRUST_CHANGE: `rechain` starts a rechain campaign for what a reload broke. */
        readonly onChange?: 'report' | 'rechain';
      }
    | undefined;
}

/** One command as either transport hands it over; `actor` is set by the transport, never trusted from the args. */
export interface AdminRequest {
  readonly command: string;
  readonly args: Record<string, unknown>;
  readonly actor: string;
}

/** Plain JSON data for programs (`--json`, the socket) and a rendering for people. */
export interface AdminResult {
  readonly data: unknown;
  readonly text: string;
}

/**
 * How one `--option` of the text form (console line, `certplane admin`) becomes an
 * argument: `list` repeats, `file` is read where the command is typed (so a path means
 * the operator's file), `json` and `number` are decoded before validation.
 */
export interface OptionSpec {
  readonly arg: string;
  readonly kind: 'text' | 'list' | 'number' | 'json' | 'flag' | 'file';
}

/** What the text form and `help` need to know about a command. */
export interface AdminCommand {
  readonly summary: string;
  /** The options part of its usage line. */
  readonly usage: string;
  readonly options: Readonly<Record<string, OptionSpec>>;
  /** Changes state: audited and logged. */
  readonly changesState: boolean;
  readonly schema: z.ZodType;
}

interface Definition<S extends z.ZodType> extends AdminCommand {
  readonly schema: S;
  run(args: z.output<S>, actor: string, deps: AdminDeps): Promise<AdminResult>;
}

const define = <S extends z.ZodType>(definition: Definition<S>) => definition as unknown as Definition<z.ZodType>;

/** Free text is shown one record per line (list-clients, audit, status), so it follows the API's rule: no control characters. */
const Reason = z
  .string({ error: 'a reason is required: it is recorded in the audit trail' })
  .trim()
  .min(1, 'a reason is required: it is recorded in the audit trail')
  .max(1000)
  .regex(/^[^\p{Cc}]*$/u, 'must not contain control characters');
/** Accepts the forms tools print (openssl's colon-separated upper case, a sha256: prefix) and keeps the one certplane stores. */
const Thumbprint = z
  .string()
  .transform((value) => value.trim().toLowerCase().replace(/^sha256:/, '').replaceAll(':', ''))
  .pipe(z.string().regex(/^[0-9a-f]{64}$/, 'expected a SHA-256 thumbprint: 64 hex digits'));
const Limit = (fallback: number) => z.number().int().min(1).max(1000).default(fallback);
const exactlyOne = (a: unknown, b: unknown) => (a === undefined) !== (b === undefined);

const clientView = (c: ApiClientRecord) => ({ thumbprint: c.fingerprintSha256, name: c.name, role: c.role, clusters: c.clusters, notAfter: c.notAfter, createdAt: c.createdAt, revokedAt: c.revokedAt });
const iso = (date: Date | null) => (date ? date.toISOString() : '-');
/** Stored text in a line for people: rows written before control characters were refused must not forge rows either. */
const shown = escapeControlCharacters;
const describeClient = (c: ApiClientRecord) => `"${shown(c.name)}" (${c.role}, ${c.clusters ? `clusters ${shown(c.clusters.join(', '))}` : 'all clusters'})`;

/** The SHA-256 and notAfter of the client certificate the PEM starts with; refuses keys, garbage and expired certificates. */
function clientCertificate(pem: string, now: Date): { fingerprintSha256: string; notAfter: Date; subject: string } {
  const [leaf] = parseCertificateBundle(pem, 'client certificate');
  if (!leaf) throw new CertplaneError(ErrorCode.CHAIN_EMPTY, 'client certificate: no certificate found');
  if (now > leaf.notAfter) {
    throw new CertplaneError(ErrorCode.CHAIN_EXPIRED, `the client certificate "${leaf.subjectCN}" expired at ${leaf.notAfter.toISOString()}; register a current one`, { notAfter: leaf.notAfter.toISOString() });
  }
  return { fingerprintSha256: leaf.fingerprintSha256, notAfter: leaf.notAfter, subject: leaf.subject };
}

const registerClient = define({
  summary: 'register a control-plane caller by its client certificate (or its SHA-256 thumbprint) with a role',
  usage: '--name NAME --role admin|operator|reader [--cluster NAME]... (--cert-file CLIENT.pem | --thumbprint SHA256) [--reason TEXT]',
  options: { name: { arg: 'name', kind: 'text' }, role: { arg: 'role', kind: 'text' }, cluster: { arg: 'clusters', kind: 'list' }, 'cert-file': { arg: 'certificatePem', kind: 'file' }, thumbprint: { arg: 'thumbprint', kind: 'text' }, reason: { arg: 'reason', kind: 'text' } },
  changesState: true,
  schema: z
    .strictObject({
      name: Text(200),
      role: z.enum(['admin', 'operator', 'reader']),
      clusters: z.array(Text(200)).min(1).max(1000).optional(),
      certificatePem: z.string().max(256 * 1024).optional(),
      thumbprint: Thumbprint.optional(),
      reason: Reason.optional(),
    })
    .refine((a) => exactlyOne(a.certificatePem, a.thumbprint), 'give exactly one of certificatePem (--cert-file) and thumbprint'),
  async run(args, actor, deps) {
    const identity = args.certificatePem !== undefined ? clientCertificate(args.certificatePem, deps.clock()) : { fingerprintSha256: args.thumbprint as string, notAfter: null, subject: null };
    const previous = await deps.store.apiClients.get(identity.fingerprintSha256);
    const client = await deps.store.apiClients.register({ fingerprintSha256: identity.fingerprintSha256, name: args.name, role: args.role, clusters: args.clusters ?? null, notAfter: identity.notAfter });
    await deps.store.audit.record({
      actor,
      action: 'client.register',
      target: client.fingerprintSha256,
      reason: args.reason ?? null,
      details: { name: client.name, role: client.role, clusters: client.clusters, notAfter: client.notAfter, subject: identity.subject, previous: previous ? clientView(previous) : null },
    });
    const replaced = previous ? ` (replaces ${describeClient(previous)}${previous.revokedAt ? `, revoked at ${iso(previous.revokedAt)}: the revocation is cleared` : ''})` : '';
    return {
      data: { client: clientView(client), subject: identity.subject, replaced: previous ? clientView(previous) : null },
      text: `registered client ${describeClient(client)} sha256:${client.fingerprintSha256}, valid until ${iso(client.notAfter)}${replaced}`,
    };
  },
});

const listClients = define({
  summary: 'list the registered control-plane callers',
  usage: '',
  options: {},
  changesState: false,
  schema: z.strictObject({}),
  async run(_args, _actor, deps) {
    const clients = await deps.store.apiClients.list();
    const lines = clients.map((c) => `sha256:${c.fingerprintSha256}  ${shown(c.name)}  ${c.role}  ${c.clusters ? shown(c.clusters.join(',')) : 'all clusters'}  until ${iso(c.notAfter)}  ${c.revokedAt ? `REVOKED ${iso(c.revokedAt)}` : 'active'}`);
    return { data: { clients: clients.map(clientView) }, text: lines.length > 0 ? lines.join('\n') : 'no client registered' };
  },
});

const revokeClient = define({
  summary: 'revoke a control-plane caller: its next request is refused',
  usage: '--thumbprint SHA256 --reason TEXT',
  options: { thumbprint: { arg: 'thumbprint', kind: 'text' }, reason: { arg: 'reason', kind: 'text' } },
  changesState: true,
  schema: z.strictObject({ thumbprint: Thumbprint, reason: Reason }),
  async run(args, actor, deps) {
    const client = await deps.store.apiClients.get(args.thumbprint);
    if (!client) throw new CertplaneError(ErrorCode.ADMIN_NOT_FOUND, `no client with thumbprint sha256:${args.thumbprint}; see list-clients`);
    const revoked = await deps.store.apiClients.revoke(args.thumbprint, deps.clock());
    if (revoked) await deps.store.audit.record({ actor, action: 'client.revoke', target: args.thumbprint, reason: args.reason, details: { name: client.name, role: client.role } });
    const now = (await deps.store.apiClients.get(args.thumbprint)) ?? client;
    return {
      data: { client: clientView(now), alreadyRevoked: !revoked },
      text: revoked ? `revoked client ${describeClient(now)} sha256:${now.fingerprintSha256}` : `client ${describeClient(now)} was already revoked at ${iso(now.revokedAt)}`,
    };
  },
});

const listAgents = define({
  summary: 'list agent certificates, newest first, and whether each agent is connected to this process',
  usage: '[--limit N]',
  options: { limit: { arg: 'limit', kind: 'number' } },
  changesState: false,
  schema: z.strictObject({ limit: Limit(100) }),
  async run(args, _actor, deps) {
    const records = await deps.store.agentCertificates.list(args.limit);
    const agents = records.map((r) => ({
      instanceId: r.instanceId,
      thumbprint: r.fingerprintSha256,
      serialNumber: r.serialNumber,
      notAfter: r.notAfter,
      createdAt: r.createdAt,
      revokedAt: r.revokedAt,
      supersededAt: r.supersededAt,
      renewedFrom: r.renewedFrom,
      connected: deps.sessions.get(r.instanceId)?.identity.fingerprintSha256 === r.fingerprintSha256,
    }));
    const lines = agents.map((a) => `${a.instanceId}  sha256:${a.thumbprint}  until ${iso(a.notAfter)}  ${a.revokedAt ? `REVOKED ${iso(a.revokedAt)}` : a.supersededAt ? `SUPERSEDED ${iso(a.supersededAt)}` : 'active'}  ${a.connected ? 'connected' : '-'}`);
    return { data: { agents }, text: lines.length > 0 ? lines.join('\n') : 'no agent certificate' };
  },
});

const revokeAgent = define({
  summary: 'revoke an agent certificate and those renewed from it (or every one of an instance) and cut their sessions off at once',
  usage: '(--thumbprint SHA256 | --instance ID) --reason TEXT',
  options: { thumbprint: { arg: 'thumbprint', kind: 'text' }, instance: { arg: 'instanceId', kind: 'text' }, reason: { arg: 'reason', kind: 'text' } },
  changesState: true,
  schema: z
    .strictObject({ thumbprint: Thumbprint.optional(), instanceId: z.uuid().optional(), reason: Reason })
    .refine((a) => exactlyOne(a.thumbprint, a.instanceId), 'give exactly one of thumbprint and instanceId (--instance)'),
  async run(args, actor, deps) {
    const now = deps.clock();
    let instanceId: string;
    let revoked: string[];
    if (args.instanceId !== undefined) {
      instanceId = args.instanceId;
      if (!(await deps.store.instances.get(instanceId))) throw new CertplaneError(ErrorCode.ADMIN_NOT_FOUND, `no instance ${instanceId}`);
      // Every certificate the instance holds, and any a renewal is minting now: the store serialises both on the instance.
      revoked = await deps.store.agentCertificates.revokeInstance(instanceId, now);
    } else {
      const record = await deps.store.agentCertificates.get(args.thumbprint as string);
      if (!record) throw new CertplaneError(ErrorCode.ADMIN_NOT_FOUND, `no agent certificate with thumbprint sha256:${args.thumbprint}; see list-agents`);
      instanceId = record.instanceId;
      // With the certificates renewed from it: whoever held its key could have minted them.
      revoked = await deps.store.agentCertificates.revoke(record.fingerprintSha256, now);
    }
    // Only after the store says revoked: a reconnection racing this is then refused by authentication.
    const disconnected = [...new Set([...(args.thumbprint ? [args.thumbprint] : []), ...revoked])].filter((fingerprint) => deps.sessions.disconnectRevoked(fingerprint));
    if (revoked.length > 0) {
      await deps.store.audit.record({ actor, action: 'agent.revoke', target: args.instanceId ?? args.thumbprint ?? instanceId, reason: args.reason, details: { instanceId, revoked, disconnected: disconnected.length } });
    }
    const what = revoked.length > 0 ? `revoked ${revoked.length} agent certificate(s) of instance ${instanceId}` : `nothing to revoke: instance ${instanceId} has no unrevoked agent certificate${args.thumbprint ? ' with that thumbprint' : ''}`;
    return { data: { instanceId, revoked, disconnected: disconnected.length }, text: `${what}; ${disconnected.length} session(s) disconnected` };
  },
});

const status = define({
  summary: 'instances, connected agents, certificates by status and running campaigns',
  usage: '',
  options: {},
  changesState: false,
  schema: z.strictObject({}),
  async run(_args, _actor, deps) {
    const fleet = await deps.store.instances.summary({ clusters: null, now: deps.clock() });
    const certificates = await deps.store.certificates.countByStatus();
    const running = await deps.store.campaigns.running(100);
    const campaigns = await Promise.all(running.map(async (c) => ({ id: c.id, reason: c.reason, requestedBy: c.requestedBy, createdAt: c.createdAt, counts: await deps.store.campaigns.counts(c.id) })));
    const data = {
      instances: fleet.total,
      agentsConnectedHere: deps.sessions.instanceIds().length,
      agentsConnectedAnywhere: fleet.agentsConnected,
      certificates,
      runningCampaigns: campaigns,
    };
    const lines = [
      `instances: ${data.instances}`,
      `agents connected: ${data.agentsConnectedHere} to this process, ${data.agentsConnectedAnywhere} in all`,
      `certificates: ${Object.keys(certificates).length > 0 ? Object.entries(certificates).map(([state, n]) => `${state} ${n}`).join(', ') : 'none'}`,
      `running campaigns: ${campaigns.length}`,
      ...campaigns.map((c) => `  ${c.id} by ${shown(c.requestedBy)} (${shown(c.reason)}): ${c.counts.installed}/${c.counts.matched} installed, ${c.counts.failed} failed, ${c.counts.waitingForAgent} waiting for agent`),
    ];
    return { data, text: lines.join('\n') };
  },
});

const reissue = define({
  summary: 'start a reissue campaign with fresh keys, or a rechain campaign (stored chains, no order), dry run first, as the REST API does',
  usage: '--selector JSON --reason TEXT [--mode reissue|rechain|rechain-or-reissue] [--dry-run]',
  options: { selector: { arg: 'selector', kind: 'json' }, reason: { arg: 'reason', kind: 'text' }, mode: { arg: 'mode', kind: 'text' }, 'dry-run': { arg: 'dryRun', kind: 'flag' } },
  changesState: true,
  schema: z.strictObject({ selector: Selector, reason: Reason, mode: z.enum(REISSUE_MODES).optional(), dryRun: z.boolean().optional() }),
  async run(args, actor, deps) {
    // Campaigns.start records the campaign in the audit trail itself.
    const result = await deps.campaigns.start({ selector: args.selector, reason: args.reason, dryRun: args.dryRun ?? false, mode: args.mode, actor });
    if ('dryRun' in result) return { data: result, text: describeDryRun(result).join('\n') };
    const { counts } = result;
    return { data: result, text: `campaign ${result.campaign.id} started: ${counts.matched} instance(s)${counts.skipped > 0 ? `, ${counts.skipped} skipped (${Object.entries(counts.skippedReasons).map(([r, n]) => `${r} ${n}`).join(', ')})` : ''}` };
  },
});

const reloadTls = define({
  summary: 'serve the certificate and key now in CERTPLANE_TLS_CERT and CERTPLANE_TLS_KEY to new connections (rotation without a restart; open connections keep theirs)',
  usage: '--reason TEXT',
  options: { reason: { arg: 'reason', kind: 'text' } },
  changesState: true,
  schema: z.strictObject({ reason: Reason }),
  async run(args, actor, deps) {
    if (!deps.serverTls) throw new CertplaneError(ErrorCode.ADMIN_TLS_NOT_CONFIGURED, 'this plane serves plain HTTP (CERTPLANE_INSECURE_HTTP=1): there is no certificate to reload');
    const { previous, current } = await deps.serverTls.reload();
    const details = { previous: previous.fingerprintSha256, current: current.fingerprintSha256, subject: current.subject, notAfter: current.notAfter.toISOString() };
    await deps.store.audit.record({ actor, action: 'tls.reload', target: current.fingerprintSha256, reason: args.reason, details });
    deps.logger.info({ actor, ...details }, 'server certificate reloaded');
    const same = previous.fingerprintSha256 === current.fingerprintSha256;
    return { data: details, text: `${same ? 'the same certificate as before' : 'now serving'} ${current.fingerprintSha256} (${current.subject}, not after ${iso(current.notAfter)})${same ? '' : `; was ${previous.fingerprintSha256}`}` };
  },
});

const reloadTrust = define({
  summary: 're-read the trust profiles (their PEM files), preferences and distrust list (CERTPLANE_TRUST_FILE), then re-judge every installed chain; what broke shows at once in the API and `certplane status`',
  usage: '--reason TEXT',
  options: { reason: { arg: 'reason', kind: 'text' } },
  changesState: true,
  schema: z.strictObject({ reason: Reason }),
  async run(args, actor, deps) {
    if (!deps.trust) throw new CertplaneError(ErrorCode.ADMIN_TRUST_NOT_CONFIGURED, 'this process runs no trust profiles');
    const { previous, current } = await deps.trust.live.reload();
    const summary = await deps.trust.evaluation.evaluate();
    const details = {
      previous: previous.fingerprint,
      current: current.fingerprint,
      profiles: Object.fromEntries(current.profiles.map((p) => [p.name, { source: current.sources[p.name], roots: p.anchors.length }])),
      preferences: current.preferences,
      unheldPreferences: current.unheldPreferences,
      evaluated: summary.evaluated,
      broken: summary.broken,
      alternateAvailable: summary.alternateAvailable,
    };
    await deps.store.audit.record({ actor, action: 'trust.reload', target: current.fingerprint, reason: args.reason, details });
    for (const preference of current.unheldPreferences) deps.logger.warn({ preference }, 'no trust profile holds this preferred root; chains to it are never chosen');
    deps.logger[summary.broken > 0 ? 'warn' : 'info']({ actor, ...details, brokenInstances: summary.brokenInstances }, 'trust settings reloaded');
    const rechain = deps.trust.onChange === 'rechain' && summary.broken > 0 ? await rechainBroken(deps, actor, args.reason) : undefined;
    const lines = [
      `trust settings ${previous.fingerprint === current.fingerprint ? 'unchanged' : 'reloaded'}: profiles ${current.profiles.map((p) => `${p.name} (${p.anchors.length} roots)`).join(', ')}`,
      ...current.unheldPreferences.map((p) => `warning: no profile holds the preferred root "${shown(p)}"`),
      `installed chains judged: ${summary.evaluated}; broken: ${summary.broken} (${summary.alternateAvailable} with a stored alternate chain)`,
      ...summary.brokenInstances.map((b) => `  ${b.instanceId}  broken in ${b.brokenProfiles.join(', ')}  ${b.alternateChainIndex === null ? 'needs a new certificate' : `alternate chain ${b.alternateChainIndex} verifies`}`),
      ...(rechain ? [rechain.text] : []),
    ];
    return { data: { ...details, brokenInstances: summary.brokenInstances, ...(rechain ? { rechainCampaign: rechain.data } : {}) }, text: lines.join('\n') };
  },
});

/**
 * CERTPLANE_ON_TRUST_CHANGE=rechain: the instances a reload broke get the stored chain the
 * new trust selects, by a campaign the plane starts itself (audited with a service actor, the
 * reload's actor and reason in its reason). Its failure to start is reported, never a failure
 * of the reload, which is done by then.
 */
async function rechainBroken(deps: AdminDeps, actor: string, reason: string): Promise<{ data: unknown; text: string }> {
  try {
    const started = await deps.campaigns.start({ selector: { trustBroken: true }, mode: 'rechain', reason: `trust reload by ${actor}: ${reason}`.slice(0, 1000), dryRun: false, actor: `service:${processName()} (on trust change)` });
    if ('dryRun' in started) throw new CertplaneError(ErrorCode.INTERNAL, 'a rechain campaign answered as a dry run');
    const { campaign, counts } = started;
    deps.logger.warn({ campaignId: campaign.id, matched: counts.matched, skipped: counts.skipped, skippedReasons: counts.skippedReasons }, 'trust reload broke installed chains: rechain campaign started (CERTPLANE_ON_TRUST_CHANGE=rechain)');
    return {
      data: { id: campaign.id, matched: counts.matched, rechain: counts.matched - counts.skipped, skipped: counts.skipped, skippedReasons: counts.skippedReasons },
      text: `rechain campaign ${campaign.id} started (CERTPLANE_ON_TRUST_CHANGE=rechain): ${counts.matched - counts.skipped} to re-chain, ${counts.skipped} reported without a stored chain that fits${counts.skipped > 0 ? ` (${Object.entries(counts.skippedReasons).map(([r, n]) => `${r}: ${n}`).join(', ')})` : ''}`,
    };
  } catch (error) {
    const code = (error as CertplaneError).code ?? ErrorCode.INTERNAL;
    deps.logger.error({ code, err: (error as Error).message }, 'the rechain campaign after the trust reload did not start');
    return { data: { error: { code, message: (error as Error).message } }, text: `rechain campaign not started: ${code}: ${(error as Error).message}` };
  }
}

const audit = define({
  summary: 'the latest entries of the audit trail: who did what, and why',
  usage: '[--limit N]',
  options: { limit: { arg: 'limit', kind: 'number' } },
  changesState: false,
  schema: z.strictObject({ limit: Limit(20) }),
  async run(args, _actor, deps) {
    const entries = await deps.store.audit.list(args.limit);
    const lines = entries.map((e) => `${e.at.toISOString()}  ${shown(e.actor)}  ${e.action}  ${shown(e.target ?? '-')}  ${shown(e.reason ?? '-')}`);
    return { data: { entries }, text: lines.length > 0 ? lines.join('\n') : 'the audit trail is empty' };
  },
});

const help = define({
  summary: 'this list',
  usage: '',
  options: {},
  changesState: false,
  schema: z.strictObject({}),
  async run() {
    return { data: { commands: Object.entries(ADMIN_COMMANDS).map(([name, c]) => ({ name, usage: `${name} ${c.usage}`.trimEnd(), summary: c.summary, audited: c.changesState })) }, text: `commands:\n${adminHelp()}` };
  },
});

const definitions: Readonly<Record<string, Definition<z.ZodType>>> = {
  'register-client': registerClient,
  'list-clients': listClients,
  'revoke-client': revokeClient,
  'list-agents': listAgents,
  'revoke-agent': revokeAgent,
  status,
  reissue,
  'reload-tls': reloadTls,
  'reload-trust': reloadTrust,
  audit,
  help,
};

/** The command set, for `help` and the text form; the transports never call `run` directly. */
export const ADMIN_COMMANDS: Readonly<Record<string, AdminCommand>> = definitions;

/** One line per command, shared by the console's `help` and `certplane admin help`. */
export function adminHelp(): string {
  return Object.entries(ADMIN_COMMANDS)
    .map(([name, c]) => `  ${`${name} ${c.usage}`.trimEnd()}\n      ${c.summary}${c.changesState ? ' (audited)' : ''}`)
    .join('\n');
}

function definitionOf(name: string): Definition<z.ZodType> {
  const definition = Object.hasOwn(definitions, name) ? definitions[name] : undefined;
  if (!definition) throw new CertplaneError(ErrorCode.ADMIN_UNKNOWN_COMMAND, `unknown admin command "${shown(name.slice(0, 100))}"; commands: ${Object.keys(definitions).join(', ')}`);
  return definition;
}

/**
 * Validates a command's arguments without running it: `certplane admin` calls it before
 * connecting, so a usage mistake is exit 2 on the operator's side, not a round trip.
 */
export function validateAdminArgs(command: string, args: Record<string, unknown>): unknown {
  refusePrivateKey(args, 'args');
  const parsed = definitionOf(command).schema.safeParse(args);
  if (parsed.success) return parsed.data;
  const problems = describeIssues(parsed.error.issues, { whole: 'arguments' });
  throw new CertplaneError(ErrorCode.ADMIN_BAD_ARGUMENTS, `${command}: ${problems.join('; ')}`, { issues: problems });
}

/** Runs one request; throws CertplaneError (the console's own codes, or the store's, chain's and campaigns'). */
export async function runAdminCommand(request: AdminRequest, deps: AdminDeps): Promise<AdminResult> {
  refusePrivateKey({ command: request.command, actor: request.actor }, 'request');
  const definition = definitionOf(request.command);
  try {
    const result = await definition.run(validateAdminArgs(request.command, request.args), request.actor, deps);
    if (definition.changesState) deps.logger.info({ command: request.command, actor: request.actor }, 'admin command done');
    // Dates become ISO strings here, so both transports hand out the same plain JSON.
    return { data: JSON.parse(JSON.stringify(result.data)) as unknown, text: result.text };
  } catch (error) {
    deps.logger.warn({ command: request.command, actor: request.actor, code: error instanceof CertplaneError ? error.code : ErrorCode.ADMIN_INTERNAL }, 'admin command refused');
    throw error;
  }
}
