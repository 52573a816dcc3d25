/**
 * Trust figures for `npm run bench`: first-sight parse-and-verify beside node:crypto doing
 * the same (its own parse and the signature checks) in the same run, and a what-if over a
 * fleet: every instance's installed certificate with two stored chains (one per root, as
 * Pebble and Let's Encrypt offer them) judged under "clients lose root A".
 */
import { KeyObject, X509Certificate, randomBytes, sign } from 'node:crypto';
import { loadavg } from 'node:os';
import * as asn1js from 'asn1js';
import pino from 'pino';
import { chainVerdict, clearCertificateCache, createCertificateScope, parseCertificateBundle, verifyChain } from '../../src/chain/index.js';
import { LiveTrust, trustSettings } from '../../src/config/trust.js';
import { TrustEvaluation } from '../../src/jobs/trust.js';
import { openStore } from '../../src/store/index.js';
import type { IssuedCertificate } from '../../src/pki/factory.js';
import { crossSign, intermediate, leaf, root } from '../support/hierarchies.js';
import { freshPostgresDatabase } from '../support/postgres.js';

function line(label: string, value: string): void {
  process.stdout.write(`${label.padEnd(58)} ${value}\n`);
}

const derOf = (pem: string) => Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ''), 'base64');

/**
 * Leaf + intermediate at first sight: everything new, then only the leaf new (a fleet's
 * shared intermediate seen before), each beside node:crypto's own parse and checks, and
 * the path a fleet-wide evaluation takes (its own parse scope, the verdict without the
 * report). The leaves go in batches of BATCH, every method timed on each batch in turn
 * and the times summed, so load from other processes on a shared machine falls on all
 * of them alike and the ratios hold even when the rates do not.
 */
export async function benchFirstSight(count: number): Promise<void> {
  const BATCH = 25;
  const ROUNDS = 3;
  const anchor = await root('Bench First Sight Root');
  const issuing = await intermediate('Bench First Sight Intermediate', anchor);
  const leaves = await Promise.all(Array.from({ length: count }, async (_, i) => (await leaf(issuing, [`f${i}.bench.example.com`])).cert.pem));
  const anchors = parseCertificateBundle(anchor.pem);
  const anchorKey = anchors[0]!.publicKey;
  const at = new Date();
  const issuingParsed = new X509Certificate(derOf(issuing.pem));
  const check = (ok: boolean) => {
    if (!ok) throw new Error('bench chain does not verify');
  };
  let scope = createCertificateScope();
  const methods: Record<string, { before?: () => void; each: (pem: string, i: number) => void }> = {
    nodeBoth: {
      each: (pem) => {
        const l = new X509Certificate(derOf(pem));
        const m = new X509Certificate(derOf(issuing.pem));
        check(l.verify(m.publicKey) && m.verify(anchorKey));
      },
    },
    ours: {
      each: (pem, i) => {
        clearCertificateCache();
        check(verifyChain(parseCertificateBundle(pem + issuing.pem), { trustAnchors: anchors, at, hostnames: [`f${i}.bench.example.com`] }).ok);
      },
    },
    nodeLeaf: { each: (pem) => check(new X509Certificate(derOf(pem)).verify(issuingParsed.publicKey)) },
    oursLeaf: {
      before: () => {
        clearCertificateCache();
        parseCertificateBundle(issuing.pem);
      },
      each: (pem, i) => check(verifyChain(parseCertificateBundle(pem + issuing.pem), { trustAnchors: anchors, at, hostnames: [`f${i}.bench.example.com`] }).ok),
    },
    fleetLeaf: {
      before: () => {
        scope = createCertificateScope();
        scope.bundle(issuing.pem);
      },
      each: (pem) => check(chainVerdict(scope.bundle(pem + issuing.pem), { trustAnchors: anchors, at }).ok),
    },
  };
  const spent = new Map<string, number>();
  for (let round = 0; round < ROUNDS; round += 1) {
    for (let start = 0; start < count; start += BATCH) {
      const batch = leaves.slice(start, start + BATCH);
      for (const [label, method] of Object.entries(methods)) {
        method.before?.();
        const started = performance.now();
        batch.forEach((pem, i) => method.each(pem, start + i));
        spent.set(label, (spent.get(label) ?? 0) + performance.now() - started);
      }
    }
  }
  const rate = (label: string) => (ROUNDS * count) / ((spent.get(label) ?? Infinity) / 1000);
  const ratio = (label: string, baseline: string) => `${rate(label).toFixed(0)} /s  (${(rate(label) / rate(baseline)).toFixed(2)} x baseline)`;
  process.stdout.write(`\nfirst sight: parse PEM and verify leaf + intermediate to a root (${count} distinct leaves x ${ROUNDS} rounds, ECDSA P-256, methods interleaved every ${BATCH} leaves; load average ${loadavg()[0]!.toFixed(1)})\n`);
  line('  baseline: node:crypto parses both and checks both signatures', `${rate('nodeBoth').toFixed(0)} /s`);
  line('  certplane, nothing seen before (memos cleared)', ratio('ours', 'nodeBoth'));
  line('  baseline: node:crypto parses the leaf and checks its signature', `${rate('nodeLeaf').toFixed(0)} /s`);
  line('  certplane, new leaf under an intermediate seen before', ratio('oursLeaf', 'nodeLeaf'));
  line('  the same in a what-if (evaluation scope, verdict only)', ratio('fleetLeaf', 'nodeLeaf'));
}

/**
 * Distinct leaves for a fleet, fast enough for 10,000: one real leaf is issued as a
 * template, with a name of fixed width; every other leaf is that TBSCertificate with its
 * own serial and name written over the template's (same lengths, so the encoding stays
 * valid), signed by the issuer with node:crypto, in an outer frame asn1js encoded once
 * per signature length. Every leaf has its own DER and a real signature; they share the
 * template's key, which judging a chain never uses.
 */
async function fleetLeaves(issuer: IssuedCertificate, count: number): Promise<string[]> {
  const width = String(Math.max(count - 1, 0)).length;
  const nameOf = (n: number) => `w${String(n).padStart(width, '0')}.bench.example.com`;
  const template = derOf((await leaf(issuer, [nameOf(0)])).cert.pem);
  const [tbs, algorithm] = (asn1js.fromBER(template).result as asn1js.Sequence).valueBlock.value as [asn1js.Sequence, asn1js.Sequence];
  const tbsBytes = Buffer.from(tbs.valueBeforeDecodeView);
  const serial = Buffer.from((tbs.valueBlock.value[1] as asn1js.Integer).valueBlock.valueHexView);
  const serialAt = tbsBytes.indexOf(serial);
  const name = Buffer.from(nameOf(0));
  const nameAt: number[] = [];
  for (let at = tbsBytes.indexOf(name); at >= 0; at = tbsBytes.indexOf(name, at + 1)) nameAt.push(at);
  if (serialAt < 0 || nameAt.length !== 2) throw new Error('the template leaf does not have its serial and two copies of its name where expected');
  const signingKey = KeyObject.from(issuer.key.keys.privateKey);
  const frames = new Map<number, { bytes: Buffer; tbsAt: number }>();
  const frame = (signatureLength: number) => {
    let found = frames.get(signatureLength);
    if (!found) {
      const bytes = Buffer.from(new asn1js.Sequence({ value: [tbs, algorithm, new asn1js.BitString({ valueHex: new Uint8Array(signatureLength) })] }).toBER());
      frames.set(signatureLength, (found = { bytes, tbsAt: bytes.indexOf(tbsBytes) }));
    }
    return found;
  };
  return Array.from({ length: count }, (_, n) => {
    const own = Buffer.from(tbsBytes);
    randomBytes(serial.length).copy(own, serialAt);
    own[serialAt] = ((own[serialAt] as number) & 0x7f) | 0x01;
    for (const at of nameAt) own.write(nameOf(n), at, 'latin1');
    const signature = sign('sha256', own, signingKey);
    const { bytes, tbsAt } = frame(signature.length);
    const der = Buffer.from(bytes);
    own.copy(der, tbsAt);
    signature.copy(der, der.length - signature.length);
    return `-----BEGIN CERTIFICATE-----\n${der.toString('base64').replace(/(.{64})/g, '$1\n')}\n-----END CERTIFICATE-----\n`;
  });
}

/** Wall-clock and this process's CPU seconds (the CPU figure is less distorted when other work shares the machine). */
async function timed<T>(fn: () => Promise<T>): Promise<{ result: T; seconds: number; cpuSeconds: number }> {
  const cpu = process.cpuUsage();
  const started = performance.now();
  const result = await fn();
  const used = process.cpuUsage(cpu);
  return { result, seconds: (performance.now() - started) / 1000, cpuSeconds: (used.user + used.system) / 1e6 };
}

/**
 * What-if and reload over `instances` instances, each with an installed certificate and two
 * stored chains (one per root, sharing the intermediate's key: a cross-sign), on each of
 * `engines`: in-process PGlite, and a fresh database on the local PostgreSQL server.
 */
export async function benchWhatIf(instances: number, engines: readonly ('pglite' | 'postgres')[]): Promise<void> {
  const rootA = await root('Bench Root A');
  const rootB = await root('Bench Root B');
  const issuing = await intermediate('Bench Shared Intermediate', rootA);
  const viaB = await crossSign(issuing, rootB);
  const generated = await timed(() => fleetLeaves(issuing, instances));
  const leaves = generated.result;
  const anchors = [...parseCertificateBundle(rootA.pem), ...parseCertificateBundle(rootB.pem)];
  const settings = trustSettings({ profiles: [{ name: 'default', anchors }], sources: {}, preferences: ['Bench Root A'], fallback: 'none', distrustedSpkiSha256: new Set(), unheldPreferences: [] });
  process.stdout.write(`\nwhat-if over a fleet (${instances} instances, 2 stored chains each; ${instances} leaves signed in ${generated.seconds.toFixed(1)} s; load average ${loadavg()[0]!.toFixed(1)})\n`);
  for (const engine of engines) {
    const database = engine === 'postgres' ? await freshPostgresDatabase('certplane_bench') : { url: 'memory:', drop: async () => {} };
    const store = await openStore(database.url);
    try {
      const seeded = await timed(async () => {
        const batch = 1000;
        for (let start = 0; start < instances; start += batch) {
          const size = Math.min(batch, instances - start);
          const rows = await store.query<{ instance_id: string; certificate_id: string }>(
            `WITH i AS (
               INSERT INTO instances (id, name, hostnames, cluster, key_algorithm)
               SELECT gen_random_uuid(), 'w' || n, ARRAY['w' || n || '.bench.example.com'], 'bench', 'ecdsa-p256' FROM generate_series($1::int, $2::int) AS n RETURNING id, name
             )
             INSERT INTO certificates (id, instance_id, status, fullchain_pem)
             SELECT gen_random_uuid(), i.id, 'installed', $3 || '#' || i.name FROM i RETURNING instance_id, id AS certificate_id`,
            [start, start + size - 1, 'placeholder'],
          );
          await store.query(
            `INSERT INTO certificate_chains (certificate_id, chain_index, chain_pem, top_issuer_cn, selected, verification, evaluated_at, trust_fingerprint)
             SELECT c.id, k.idx, CASE WHEN k.idx = 0 THEN c.pem || $3 ELSE c.pem || $4 END, CASE WHEN k.idx = 0 THEN 'Bench Root A' ELSE 'Bench Root B' END, k.idx = 0, '{}'::jsonb, now(), 'bench'
             FROM unnest($1::uuid[], $2::text[]) AS c (id, pem) CROSS JOIN (VALUES (0), (1)) AS k (idx)`,
            [rows.map((r) => r.certificate_id), leaves.slice(start, start + size), issuing.pem, viaB.pem],
          );
        }
      });
      const evaluation = new TrustEvaluation({ store, trust: new LiveTrust(async () => settings, settings), clock: () => new Date(), logger: pino({ level: 'silent' }) });
      clearCertificateCache();
      const read = await timed(() => store.trust.installed({}));
      const first = await timed(() => evaluation.whatIf({ removeRoots: ['Bench Root A'] }, {}));
      const again = await timed(() => evaluation.whatIf({ removeRoots: ['Bench Root A'] }, {}));
      const reload = await timed(() => evaluation.evaluate());
      const rescued = first.result.rows.filter((r) => r.outcome === 'alternate-chain').length;
      if (rescued !== instances) throw new Error(`what-if found ${rescued} of ${instances} instances rescued by the stored chain`);
      const figure = (t: { seconds: number; cpuSeconds: number }) => `${t.seconds.toFixed(2)} s  (${(instances / t.seconds).toFixed(0)} instances/s; ${t.cpuSeconds.toFixed(2)} s CPU)`;
      process.stdout.write(`  ${engine === 'pglite' ? 'in-process PGlite' : 'PostgreSQL server'} (seeded in ${seeded.seconds.toFixed(1)} s; load average ${loadavg()[0]!.toFixed(1)})\n`);
      line('    reading the stored chains alone (the what-if\'s one query)', figure(read));
      line('    what-if "clients lose Bench Root A", leaves at first sight', figure(first));
      line('    the same what-if again', figure(again));
      line('    reload re-evaluation, verdicts stored', figure(reload));
    } finally {
      await store.close();
      await database.drop();
    }
  }
}
