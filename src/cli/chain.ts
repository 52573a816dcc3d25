/**
 * `certplane chain verify` and `certplane chain select`: the chain engine offline, for
 * an on-call engineer holding PEM files. Exit 0 means yes, 1 means no, 2 means the
 * input or the command line is wrong.
 */
import { normalizeSpkiPin, explainReport, explainSelection, parseCertificateBundle, selectChain, spkiSha256OfKeyFile, verifyChain } from '../chain/index.js';
import { distrustedKeys, loadTrustStore, readText } from '../config/trust.js';
import { ExitCode, parse, parseTime, usageError, type Io } from './args.js';

const VERIFY_USAGE =
  'usage: certplane chain verify BUNDLE.pem [--trust ROOTS.pem] [--hostname NAME]... [--key CSR_OR_PUBLIC_KEY.pem] [--at ISO-8601-TIME] [--distrust SPKI_SHA256]... [--json]';
const SELECT_USAGE =
  'usage: certplane chain select --prefer CN [--prefer CN]... [--trust ROOTS.pem] [--at ISO-8601-TIME] [--distrust SPKI_SHA256]... [--fallback default-chain] [--json] CHAIN.pem CHAIN.pem...';

const common = {
  trust: { type: 'string' },
  at: { type: 'string' },
  distrust: { type: 'string', multiple: true },
  json: { type: 'boolean' },
} as const;

function distrustFrom(pins: string[] | undefined, usage: string): ReadonlySet<string> {
  const normalized = (pins ?? []).map((pin) => {
    const hex = normalizeSpkiPin(pin);
    if (!hex) throw usageError(`--distrust: "${pin}" is not a SHA-256 SPKI pin (64 hex digits or base64)`, usage);
    return hex;
  });
  return distrustedKeys(normalized);
}

export async function chainVerify(args: string[], io: Io): Promise<number> {
  const { values, positionals } = parse(args, { ...common, hostname: { type: 'string', multiple: true }, key: { type: 'string' } }, VERIFY_USAGE);
  if (positionals.length !== 1) throw usageError('expected exactly one BUNDLE.pem', VERIFY_USAGE);
  const file = positionals[0] as string;
  const at = parseTime(values.at, VERIFY_USAGE);
  const distrusted = distrustFrom(values.distrust, VERIFY_USAGE);
  const bundle = parseCertificateBundle(await readText(file, 'bundle'), file);
  const trust = await loadTrustStore(values.trust ?? 'system');
  const expectedSpkiSha256 = values.key ? await spkiSha256OfKeyFile(await readText(values.key, 'key'), values.key) : undefined;
  const report = verifyChain(bundle, { trustAnchors: trust.anchors, at, hostnames: values.hostname ?? [], expectedSpkiSha256, distrustedSpkiSha256: distrusted });
  if (values.json) {
    const { servedChainPem: _omitted, ...rest } = report;
    io.stdout.write(`${JSON.stringify({ file, trustStore: trust.source, ...rest }, null, 2)}\n`);
  } else {
    io.stdout.write(`${file}: ${explainReport(report)}\n`);
  }
  return report.ok ? ExitCode.OK : ExitCode.NO;
}

export async function chainSelect(args: string[], io: Io): Promise<number> {
  const { values, positionals } = parse(args, { ...common, prefer: { type: 'string', multiple: true }, fallback: { type: 'string' } }, SELECT_USAGE);
  const preferences = values.prefer ?? [];
  if (preferences.length === 0) throw usageError('at least one --prefer CN is required', SELECT_USAGE);
  if (positionals.length === 0) throw usageError('expected one or more CHAIN.pem files', SELECT_USAGE);
  if (values.fallback !== undefined && values.fallback !== 'default-chain') throw usageError('--fallback accepts only "default-chain"', SELECT_USAGE);
  const at = parseTime(values.at, SELECT_USAGE);
  const distrusted = distrustFrom(values.distrust, SELECT_USAGE);
  const chains = [];
  for (const file of positionals) chains.push(parseCertificateBundle(await readText(file, 'chain'), file));
  const trust = await loadTrustStore(values.trust ?? 'system');
  const result = selectChain(chains, {
    preferences,
    trustAnchors: trust.anchors,
    at,
    distrustedSpkiSha256: distrusted,
    fallback: values.fallback === 'default-chain' ? 'default-chain' : 'none',
  });
  if (values.json) {
    const chainsOut = result.chains.map((c) => ({ file: positionals[c.index], index: c.index, topIssuer: c.topIssuer, anchor: c.anchor, errors: c.errors }));
    io.stdout.write(`${JSON.stringify({ selected: result.selected, preference: result.preference, fallbackUsed: result.fallbackUsed, trustStore: trust.source, chains: chainsOut }, null, 2)}\n`);
  } else {
    if (result.selected !== null) io.stdout.write(`${positionals[result.selected]}\n`);
    io.stderr.write(`${explainSelection(result, positionals)}\n`);
    if (result.fallbackUsed) io.stderr.write('warning: no chain satisfies the preferences; the default chain was taken because --fallback default-chain was given\n');
  }
  return result.selected === null ? ExitCode.NO : ExitCode.OK;
}
