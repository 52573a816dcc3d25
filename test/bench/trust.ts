/**
 * Trust figures for `npm run bench`: first-sight parse-and-verify beside node:crypto doing
 * the same (its own parse and the signature checks) in the same run, and a what-if over a
 * fleet: every instance's installed certificate with two stored chains (one per root, as
 * Pebble and Let's Encrypt offer them) judged under "clients lose root A".
 */
import { X509Certificate } from 'node:crypto';
import pino from 'pino';
import { clearCertificateCache, parseCertificateBundle, verifyChain } from '../../src/chain/index.js';
import { LiveTrust, trustSettings } from '../../src/config/trust.js';
import { TrustEvaluation } from '../../src/jobs/trust.js';
import { openStore } from '../../src/store/index.js';
import { crossSign, intermediate, leaf, root } from '../support/hierarchies.js';

function line(label: string, value: string): void {
  process.stdout.write(`${label.padEnd(58)} ${value}\n`);
}

const derOf = (pem: string) => Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ''), 'base64');

/** Leaf + intermediate at first sight: everything new, then only the leaf new (a fleet's shared intermediate seen before), each beside node:crypto's own parse and checks. */
export async function benchFirstSight(count: number): Promise<void> {
  const anchor = await root('Bench First Sight Root');
  const issuing = await intermediate('Bench First Sight Intermediate', anchor);
  const leaves = await Promise.all(Array.from({ length: count }, async (_, i) => (await leaf(issuing, [`f${i}.bench.example.com`])).cert.pem));
  const anchors = parseCertificateBundle(anchor.pem);
  const anchorKey = anchors[0]!.publicKey;
  const at = new Date();
  const time = (fn: (pem: string, i: number) => unknown) => {
    const started = performance.now();
    leaves.forEach((pem, i) => fn(pem, i));
    return count / ((performance.now() - started) / 1000);
  };
  const nodeBoth = time((pem) => {
    const l = new X509Certificate(derOf(pem));
    const m = new X509Certificate(derOf(issuing.pem));
    return l.verify(m.publicKey) && m.verify(anchorKey);
  });
  const ours = time((pem, i) => {
    clearCertificateCache();
    if (!verifyChain(parseCertificateBundle(pem + issuing.pem), { trustAnchors: anchors, at, hostnames: [`f${i}.bench.example.com`] }).ok) throw new Error('bench chain does not verify');
  });
  const issuingParsed = new X509Certificate(derOf(issuing.pem));
  const nodeLeaf = time((pem) => new X509Certificate(derOf(pem)).verify(issuingParsed.publicKey));
  parseCertificateBundle(issuing.pem);
  const oursLeaf = time((pem, i) => {
    if (!verifyChain(parseCertificateBundle(pem + issuing.pem), { trustAnchors: anchors, at, hostnames: [`f${i}.bench.example.com`] }).ok) throw new Error('bench chain does not verify');
  });
  process.stdout.write(`\nfirst sight: parse PEM and verify leaf + intermediate to a root (${count} distinct leaves, ECDSA P-256)\n`);
  line('  baseline: node:crypto parses both and checks both signatures', `${nodeBoth.toFixed(0)} /s`);
  line('  certplane, nothing seen before (memos cleared)', `${ours.toFixed(0)} /s  (${(ours / nodeBoth).toFixed(2)} x baseline)`);
  line('  baseline: node:crypto parses the leaf and checks its signature', `${nodeLeaf.toFixed(0)} /s`);
  line('  certplane, new leaf under an intermediate seen before', `${oursLeaf.toFixed(0)} /s  (${(oursLeaf / nodeLeaf).toFixed(2)} x baseline)`);
}

/** What-if and reload over `instances` instances, each with two stored chains, on in-process PGlite. */
export async function benchWhatIf(instances: number): Promise<void> {
  const rootA = await root('Bench Root A');
  const rootB = await root('Bench Root B');
  const issuing = await intermediate('Bench Shared Intermediate', rootA);
  const viaB = await crossSign(issuing, rootB);
  const store = await openStore('memory:');
  try {
    const seedStarted = performance.now();
    const batch = 500;
    for (let start = 0; start < instances; start += batch) {
      const size = Math.min(batch, instances - start);
      const leaves = await Promise.all(Array.from({ length: size }, async (_, i) => (await leaf(issuing, [`w${start + i}.bench.example.com`])).cert.pem));
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
        [rows.map((r) => r.certificate_id), leaves, issuing.pem, viaB.pem],
      );
    }
    const seedSeconds = (performance.now() - seedStarted) / 1000;
    const anchors = [...parseCertificateBundle(rootA.pem), ...parseCertificateBundle(rootB.pem)];
    const settings = trustSettings({ profiles: [{ name: 'default', anchors }], sources: {}, preferences: ['Bench Root A'], fallback: 'none', distrustedSpkiSha256: new Set(), unheldPreferences: [] });
    const evaluation = new TrustEvaluation({ store, trust: new LiveTrust(async () => settings, settings), clock: () => new Date(), logger: pino({ level: 'silent' }) });
    clearCertificateCache();
    const timed = async <T>(fn: () => Promise<T>) => {
      const started = performance.now();
      const result = await fn();
      return { result, seconds: (performance.now() - started) / 1000 };
    };
    const first = await timed(() => evaluation.whatIf({ removeRoots: ['Bench Root A'] }, {}));
    const again = await timed(() => evaluation.whatIf({ removeRoots: ['Bench Root A'] }, {}));
    const reload = await timed(() => evaluation.evaluate());
    const rescued = first.result.rows.filter((r) => r.outcome === 'alternate-chain').length;
    if (rescued !== instances) throw new Error(`what-if found ${rescued} of ${instances} instances rescued by the stored chain`);
    process.stdout.write(`\nwhat-if over a fleet (${instances} instances, 2 stored chains each, in-process PGlite; seeded in ${seedSeconds.toFixed(1)} s)\n`);
    line('  what-if "clients lose Bench Root A", leaves at first sight', `${first.seconds.toFixed(2)} s  (${(instances / first.seconds).toFixed(0)} instances/s)`);
    line('  the same what-if again (parses and signatures memoised)', `${again.seconds.toFixed(2)} s  (${(instances / again.seconds).toFixed(0)} instances/s)`);
    line('  reload re-evaluation, verdicts stored', `${reload.seconds.toFixed(2)} s  (${(instances / reload.seconds).toFixed(0)} instances/s)`);
  } finally {
    await store.close();
  }
}
