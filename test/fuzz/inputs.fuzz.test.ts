/**
 * Property-based fuzzing of the inputs that are not HTTP or channel frames: PEM bundles
 * and the chain engine, CSR files, the environment configuration, and request lines on
 * the admin console's Unix socket (a real socket, a real PGlite store).
 *
 * What is proven, for every generated input (random each run; FUZZ_SCALE multiplies):
 * - bundles: parsing returns certificates or throws a CertplaneError with a CHAIN_* code,
 *   never anything else; a bundle carrying a private-key block is never accepted; the
 *   verifier reports and never throws; a bundle it calls valid holds only untouched
 *   certificates of the real chain, so no corrupted certificate ever verifies;
 * - CSRs: parseCsr accepts exactly the untouched supported requests among the kinds
 *   whose answer is known, and otherwise rejects with CSR_INVALID or CSR_BAD_SIGNATURE;
 *   a private key is never accepted;
 * - configuration: loadConfig returns a configuration or throws CONFIG_INVALID naming
 *   a variable that was set, never another error;
 * - admin socket: every line gets one JSON answer, `{ok: true, data}` or `{ok: false,
 *   code, message}` with a stable code that is not ADMIN_INTERNAL; the connection keeps
 *   answering; a private key sent as a client certificate is refused and not echoed.
 *
 * Why: bad input anywhere (configuration, PEM files, the console an on-call engineer
 * types into during an incident) must get a clear error with a stable code, not a stack.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createConnection, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { startAdminSocket, type AdminSocket } from '../../src/admin/index.js';
import { parseCertificateBundle, parseCsr, verifyChain, type Certificate } from '../../src/chain/index.js';
import { loadConfig } from '../../src/config/config.js';
import { CertplaneError } from '../../src/errors.js';
import { EKU, generateKeyPair, issueCertificate } from '../../src/pki/factory.js';
import { scratch } from '../support/cli.js';
import { letsEncrypt2021 } from '../support/hierarchies.js';
import { startTestPlane, type TestPlane } from '../support/plane.js';
import { applyMutations, byteEdit, corruptBytes, csrMaterial, csrText, hostileString, junkJson, mutations, pemBody, secretLines, toPem, type ByteEdit, type CsrMaterial } from './arbitraries.js';
import { ErrorCode } from '../../src/error-catalogue.js';

const SCALE = Number(process.env.FUZZ_SCALE ?? 1);
const RUNS = { bundles: 1200 * SCALE, csrs: 800 * SCALE, config: 2000 * SCALE, adminBatches: 100 * SCALE } as const;
const ADMIN_BATCH = 10;

const CHAIN_CODES = new Set<string>(Object.values(ErrorCode).filter((code) => code.startsWith('CHAIN_')));
const STABLE_CODE = /^[A-Z][A-Z0-9_]+$/;

// ---------------------------------------------------------------------------------------
// Bundles

type BundleEdit =
  | { kind: 'corrupt'; index: number; edits: ByteEdit[] }
  | { kind: 'reorder'; order: number[] }
  | { kind: 'drop'; index: number }
  | { kind: 'duplicate'; index: number }
  | { kind: 'crlf' }
  | { kind: 'comment'; at: number; text: string }
  | { kind: 'insert-text'; at: number; text: string }
  | { kind: 'private-key' }
  | { kind: 'truncate'; at: number }
  | { kind: 'other-label'; index: number; label: string };

const bundleEdit: fc.Arbitrary<BundleEdit> = fc.oneof(
  { arbitrary: fc.record({ kind: fc.constant('corrupt' as const), index: fc.nat(), edits: fc.array(byteEdit, { minLength: 1, maxLength: 3 }) }), weight: 6 },
  { arbitrary: fc.record({ kind: fc.constant('reorder' as const), order: fc.array(fc.nat(), { minLength: 1, maxLength: 5 }) }), weight: 2 },
  { arbitrary: fc.record({ kind: fc.constant('drop' as const), index: fc.nat() }), weight: 2 },
  { arbitrary: fc.record({ kind: fc.constant('duplicate' as const), index: fc.nat() }), weight: 1 },
  { arbitrary: fc.constant<BundleEdit>({ kind: 'crlf' }), weight: 1 },
  { arbitrary: fc.record({ kind: fc.constant('comment' as const), at: fc.nat(), text: fc.string({ maxLength: 30 }).map((t) => `# ${t.replace(/[\r\n]/g, ' ')}`) }), weight: 1 },
  { arbitrary: fc.record({ kind: fc.constant('insert-text' as const), at: fc.nat(), text: hostileString }), weight: 2 },
  { arbitrary: fc.constant<BundleEdit>({ kind: 'private-key' }), weight: 1 },
  { arbitrary: fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }), weight: 1 },
  { arbitrary: fc.record({ kind: fc.constant('other-label' as const), index: fc.nat(), label: fc.constantFrom('CERTIFICATE REQUEST', 'X509 CRL', 'TRUSTED CERTIFICATE', 'PUBLIC KEY') }), weight: 1 },
);

/** Applies edits to a bundle held as DER blocks, then renders it; the flags tell the oracle what was done. */
function renderBundle(originals: readonly Buffer[], edits: readonly BundleEdit[], privateKeyPem: string): { text: string; corrupted: boolean; hasPrivateKey: boolean } {
  let blocks: { der: Buffer; label: string }[] = originals.map((der) => ({ der: Buffer.from(der), label: 'CERTIFICATE' }));
  let corrupted = false;
  let hasPrivateKey = false;
  const textEdits: BundleEdit[] = [];
  for (const edit of edits) {
    const at = (i: number) => i % Math.max(1, blocks.length);
    if (edit.kind === 'corrupt' && blocks.length > 0) {
      const block = blocks[at(edit.index)]!;
      const der = corruptBytes(block.der, edit.edits);
      if (!der.equals(block.der)) corrupted = true;
      blocks[at(edit.index)] = { ...block, der };
    } else if (edit.kind === 'reorder') blocks = edit.order.map((i) => blocks[at(i)]!).filter(Boolean);
    else if (edit.kind === 'drop') blocks.splice(at(edit.index), 1);
    else if (edit.kind === 'duplicate' && blocks.length > 0) blocks.splice(at(edit.index), 0, blocks[at(edit.index)]!);
    else if (edit.kind === 'other-label' && blocks.length > 0) blocks[at(edit.index)] = { ...blocks[at(edit.index)]!, label: edit.label };
    else if (edit.kind === 'private-key') hasPrivateKey = true;
    else textEdits.push(edit);
  }
  let text = blocks.map((b) => toPem(b.der, b.label)).join('');
  if (hasPrivateKey) text += privateKeyPem;
  for (const edit of textEdits) {
    if (edit.kind === 'crlf') text = text.replace(/\n/g, '\r\n');
    else if (edit.kind === 'comment' || edit.kind === 'insert-text') {
      const lines = text.split('\n');
      lines.splice(edit.at % (lines.length + 1), 0, edit.text);
      text = lines.join('\n');
    } else if (edit.kind === 'truncate') text = text.slice(0, edit.at % (text.length + 1));
  }
  // Truncation can cut the key block away; what counts is whether a whole one is still there.
  hasPrivateKey = /-----BEGIN ([A-Z ]*PRIVATE KEY)-----[\s\S]*?-----END \1-----/.test(text);
  return { text, corrupted, hasPrivateKey };
}

describe('input fuzz: PEM files, CSRs, configuration and the admin console', async () => {
  let material: CsrMaterial;
  let plane: TestPlane;
  let admin: AdminSocket;
  const dir = await scratch('certplane-inputs-fuzz-');

  before(async () => {
    plane = await startTestPlane();
    material = await csrMaterial(plane.ca.certificatePem);
    admin = await startAdminSocket({ path: dir.path('admin.sock'), deps: plane.adminDeps });
  });
  after(async () => {
    await admin?.close();
    await plane?.close();
    await dir.remove();
  });

  test(`bundles: ${RUNS.bundles} edited chains (corrupted DER and signatures, reordered, dropped, duplicated, relabelled, text and keys mixed in, truncated): a CHAIN_* refusal or a report, and only untouched certificates ever verify`, async (t) => {
    const hierarchy = await letsEncrypt2021();
    const originals = parseCertificateBundle(hierarchy.long).map((c) => pemBody(c.pem));
    const known = new Set(originals.map((der) => der.toString('base64')));
    const trustAnchors = parseCertificateBundle(hierarchy.isrgX1.pem);
    const outcomes = { refused: 0, reported: 0, verified: 0 };
    await fc.assert(
      fc.property(fc.array(bundleEdit, { minLength: 1, maxLength: 3 }), (edits) => {
        const { text, corrupted, hasPrivateKey } = renderBundle(originals, edits, material.privateKeys[0]!);
        let certificates: Certificate[];
        try {
          certificates = parseCertificateBundle(text, 'fuzzed bundle');
        } catch (error) {
          assert.ok(error instanceof CertplaneError, `not a CertplaneError: ${String(error)}`);
          assert.ok(CHAIN_CODES.has(error.code), `unexpected code ${error.code}`);
          if (hasPrivateKey) for (const line of secretLines(material.privateKeys[0]!)) assert.ok(!error.message.includes(line), 'the refusal echoes the private key');
          outcomes.refused += 1;
          return;
        }
        assert.ok(!hasPrivateKey, 'a bundle with a private key was accepted');
        const report = verifyChain(certificates, { trustAnchors, at: new Date(), hostnames: ['db1.example.com'] });
        outcomes.reported += 1;
        if (report.ok) {
          outcomes.verified += 1;
          const path = parseCertificateBundle(report.servedChainPem);
          for (const certificate of path) assert.ok(known.has(pemBody(certificate.pem).toString('base64')), `a certificate that is not one of the originals verified (edits ${JSON.stringify(edits).slice(0, 300)})`);
          assert.ok(!corrupted || path.every((c) => known.has(pemBody(c.pem).toString('base64'))));
        } else {
          assert.ok(report.errors.length > 0, 'a failed report without errors');
          for (const problem of report.errors) assert.match(problem.code, STABLE_CODE);
        }
      }),
      { numRuns: RUNS.bundles, includeErrorInReport: true },
    );
    t.diagnostic(`bundles: ${JSON.stringify(outcomes)}`);
    assert.ok(outcomes.refused > 0 && outcomes.reported > 0 && outcomes.verified > 0, JSON.stringify(outcomes));
  });

  test(`CSR files: ${RUNS.csrs} requests (supported, other keys, corrupted, re-framed, private keys, certificates, garbage): accepted exactly when untouched, else CSR_INVALID, CSR_BAD_SIGNATURE or CSR_WEAK_SIGNATURE`, async () => {
    await fc.assert(
      fc.asyncProperty(csrText(material), async (csr) => {
        let parsed: Awaited<ReturnType<typeof parseCsr>> | undefined;
        try {
          parsed = await parseCsr(csr.pem, 'fuzzed CSR');
        } catch (error) {
          assert.ok(error instanceof CertplaneError, `not a CertplaneError: ${String(error)}`);
          assert.ok(([ErrorCode.CSR_INVALID, ErrorCode.CSR_BAD_SIGNATURE, ErrorCode.CSR_WEAK_SIGNATURE, ErrorCode.CHAIN_GARBAGE] as ErrorCode[]).includes(error.code), `unexpected code ${error.code}`);
          if (csr.privateKey) for (const line of secretLines(csr.privateKey)) assert.ok(!error.message.includes(line), 'the refusal echoes the private key');
          assert.ok(csr.kind !== 'supported' && csr.kind !== 'other-key', `an untouched ${csr.kind} CSR was refused: ${error.code} ${error.message}`);
          return;
        }
        assert.ok(!['private-key', 'certificate'].includes(csr.kind), `a ${csr.kind} was accepted as a CSR`);
        assert.ok(parsed.dnsNames.every((n) => n === n.toLowerCase()));
      }),
      { numRuns: RUNS.csrs, includeErrorInReport: true },
    );
  });

  test(`configuration: ${RUNS.config} environments (valid, near-valid and hostile values for every CERTPLANE_* variable): a configuration or CONFIG_INVALID naming a variable that was set`, () => {
    const values: Record<string, fc.Arbitrary<string>> = {
      CERTPLANE_ACME_DIRECTORY: fc.constantFrom('https://acme-v02.api.letsencrypt.org/directory', 'http://127.0.0.1:14000/dir', 'ftp://x', 'not a url', 'https://'),
      CERTPLANE_ACME_EMAIL: fc.constantFrom('ops@example.com', 'not-an-email', '@', 'a@b'),
      CERTPLANE_PREFERRED_CHAINS: fc.constantFrom('ISRG Root X1', 'ISRG Root X2, ISRG Root X1', '["Root YR","ISRG Root X1"]', '[', '[1,2]', '[]', ',', '{}'),
      CERTPLANE_CHAIN_FALLBACK: fc.constantFrom('none', 'default-chain', 'any', 'NONE'),
      CERTPLANE_DATABASE_URL: fc.constantFrom('pglite:./data/db', 'memory:', 'postgres://u:p@h/db', 'mysql://x', 'pglite:', 'postgres://'),
      CERTPLANE_LISTEN: fc.constantFrom('127.0.0.1:8443', '0.0.0.0:443', ':8443', '127.0.0.1:99999', '127.0.0.1', '[::1]:8443', 'localhost:-1', 'host:port'),
      CERTPLANE_INSECURE_HTTP: fc.constantFrom('1', '0', 'true', 'yes', ''),
      CERTPLANE_ENROLLMENT_TTL_SECONDS: fc.constantFrom('3600', '0', '-1', '1e3', '86400000', 'abc', '2.5'),
      CERTPLANE_SCHEDULER_INTERVAL_MS: fc.constantFrom('1000', '0', '-5', 'NaN', '99999999999'),
      CERTPLANE_LOG_LEVEL: fc.constantFrom('info', 'debug', 'silent', 'verbose', 'INFO'),
      CERTPLANE_DNS_PROVIDER: fc.constantFrom('none', 'route53', 'challtestsrv', 'cloudflare'),
      CERTPLANE_CHALLENGE: fc.constantFrom('http-01', 'dns-01', 'tls-alpn-01'),
      CERTPLANE_CHALLTESTSRV_URL: fc.constantFrom('http://127.0.0.1:8055', 'nope'),
      CERTPLANE_DISTRUSTED_SPKI: fc.constantFrom('ab'.repeat(32), `sha256:${'cd'.repeat(32)}`, 'zz', `${'ab'.repeat(32)},x`),
      CERTPLANE_RATE_LIMITS: fc.constantFrom('{}', '{"newOrders":{"capacity":300,"refillPerSecond":0.08}}', '{', '[]', 'null'),
      CERTPLANE_MAX_NAMES_PER_CERTIFICATE: fc.constantFrom('100', '25', '1', '0', '101', '2.5', 'many'),
      CERTPLANE_PUBLIC_URL: fc.constantFrom('https://certplane.example.com', 'certplane.example.com', 'https://', 'ws://x'),
      CERTPLANE_ADMIN_SOCKET: fc.constantFrom('/run/certplane/admin.sock', 'relative.sock', `/${'x'.repeat(200)}.sock`),
      CERTPLANE_TRUST_STORE: fc.constantFrom('system', '/etc/ssl/certs/ca-certificates.crt'),
      CERTPLANE_SECRETS: fc.constantFrom('file:./data/secrets', 'aws-sm:certplane/', 'vault:x', 'file:'),
    };
    const names = Object.keys(values);
    const env = fc.dictionary(
      fc.oneof({ arbitrary: fc.constantFrom(...names), weight: 9 }, { arbitrary: fc.string({ maxLength: 12 }).map((s) => `CERTPLANE_${s}`), weight: 1 }),
      fc.string(),
      { maxKeys: 8 },
    ).chain((keys) =>
      fc.record(Object.fromEntries(Object.keys(keys).map((k) => [k, fc.oneof({ arbitrary: values[k] ?? hostileString, weight: 4 }, { arbitrary: hostileString, weight: 1 })]))),
    );
    fc.assert(
      fc.property(env, (vars) => {
        try {
          loadConfig(vars);
        } catch (error) {
          assert.ok(error instanceof CertplaneError, `not a CertplaneError: ${String(error)}`);
          assert.equal(error.code, ErrorCode.CONFIG_INVALID);
          const set = Object.keys(vars).filter((k) => vars[k] !== '');
          assert.ok(set.some((k) => error.message.includes(k)), `the refusal names none of the variables set: ${error.message}`);
        }
      }),
      { numRuns: RUNS.config, includeErrorInReport: true },
    );
  });

  test(`admin socket: ${RUNS.adminBatches} batches of ${ADMIN_BATCH} lines (every command with mutated arguments, junk JSON, broken lines): one JSON answer each with a stable code, and the connection keeps answering`, async (t) => {
    const instance = await plane.store.instances.create({ name: 'admin-fuzz', hostnames: ['admin-fuzz.example.com'], cluster: 'blue', keyAlgorithm: 'ecdsa-p256' });
    const clientKey = await generateKeyPair();
    const client = await issueCertificate({ subject: 'CN=fuzz client', key: clientKey, extendedKeyUsage: [EKU.clientAuth] });
    const argValues: Record<string, fc.Arbitrary<unknown>> = {
      name: fc.oneof(fc.constantFrom('on-call', 'ci'), hostileString),
      role: fc.constantFrom('admin', 'operator', 'reader', 'root', ''),
      clusters: fc.oneof(fc.constant(['blue']), fc.array(hostileString, { maxLength: 3 })),
      certificatePem: fc.constantFrom(client.pem, material.certificatePem, material.privateKeys[0]!, material.supported[0]!, `${client.pem}${material.privateKeys[0]!}`, 'garbage'),
      thumbprint: fc.oneof(fc.constantFrom('ab'.repeat(32), `SHA256:${'AB:'.repeat(31)}AB`, 'zz', ''), hostileString),
      reason: fc.oneof(fc.constantFrom('incident 42', ''), hostileString),
      instanceId: fc.oneof(fc.constant(instance.id), fc.uuid(), hostileString),
      selector: fc.oneof(fc.constant({ instanceIds: [instance.id] }), fc.constant({ cluster: 'blue' }), fc.constant({ all: true }), junkJson),
      dryRun: fc.oneof(fc.constant(true), junkJson),
      limit: fc.oneof(fc.integer({ min: -5, max: 2000 }), junkJson),
    };
    const clientThumbprint = parseCertificateBundle(client.pem)[0]!.fingerprintSha256;
    // A valid request per command, then zero to two corrupted, dropped or unknown arguments: most reach the command itself.
    const valid: Record<string, Record<string, unknown>> = {
      'register-client': { name: 'on-call', role: 'operator', certificatePem: client.pem, reason: 'fuzz' },
      'list-clients': {},
      'revoke-client': { thumbprint: clientThumbprint, reason: 'fuzz' },
      'list-agents': {},
      'revoke-agent': { instanceId: instance.id, reason: 'fuzz' },
      status: {},
      reissue: { selector: { instanceIds: [instance.id] }, reason: 'fuzz', dryRun: true },
      'reload-tls': { reason: 'fuzz' },
      audit: { limit: 5 },
      help: {},
    };
    const request = fc
      .tuple(
        fc.oneof({ arbitrary: fc.constantFrom(...Object.keys(valid)), weight: 19 }, { arbitrary: hostileString, weight: 1 }),
        mutations(Object.keys(argValues), (k) => argValues[k]!, 2),
        fc.oneof({ arbitrary: fc.constantFrom('alice', 'bob@example.com', undefined), weight: 9 }, { arbitrary: hostileString, weight: 1 }),
        fc.oneof({ arbitrary: fc.constant([]), weight: 9 }, { arbitrary: mutations(['command', 'args', 'actor'], () => junkJson, 1), weight: 1 }),
      )
      .map(([command, argEdits, actor, edits]) => {
        const args = applyMutations(valid[command] ?? {}, argEdits);
        return JSON.stringify(applyMutations({ command, args, ...(actor === undefined ? {} : { actor }) }, edits)) ?? 'null';
      });
    const rawLine = fc.oneof(hostileString, fc.constantFrom('{', '{}', '[]', 'null', '{"command":1}', '{"command":"status","args":[]}', '{"command":"status","extra":1}')).filter((l) => !l.includes('\n') && l.trim() !== '');
    const line = fc.oneof({ arbitrary: request, weight: 8 }, { arbitrary: rawLine, weight: 2 });

    const codes = new Map<string, number>();
    const socket: Socket = createConnection(admin.path);
    await once(socket, 'connect');
    socket.setEncoding('utf8');
    let buffer = '';
    const answers: string[] = [];
    const waiting: (() => void)[] = [];
    socket.on('data', (chunk: string) => {
      buffer += chunk;
      for (let nl = buffer.indexOf('\n'); nl !== -1; nl = buffer.indexOf('\n')) {
        answers.push(buffer.slice(0, nl));
        buffer = buffer.slice(nl + 1);
      }
      for (const wake of waiting.splice(0)) wake();
    });
    const collect = async (count: number) => {
      const deadline = Date.now() + 10_000;
      while (answers.length < count) {
        assert.ok(Date.now() < deadline, `only ${answers.length} of ${count} answers within 10 s`);
        await new Promise<void>((resolve) => {
          waiting.push(resolve);
          setTimeout(resolve, 200);
        });
      }
      return answers.splice(0, count).map((text) => JSON.parse(text));
    };
    try {
      await fc.assert(
        fc.asyncProperty(fc.array(line, { minLength: ADMIN_BATCH, maxLength: ADMIN_BATCH }), async (lines) => {
          socket.write(`${lines.join('\n')}\n${JSON.stringify({ command: 'status' })}\n`);
          const replies = await collect(lines.length + 1);
          for (const [i, reply] of replies.slice(0, -1).entries()) {
            const shown = `${lines[i]!.slice(0, 300)} -> ${JSON.stringify(reply).slice(0, 300)}`;
            assert.equal(typeof reply.ok, 'boolean', shown);
            // An answered line was a JSON request.
            const request = reply.ok ? JSON.parse(lines[i]!) : undefined;
            const seen = reply.ok ? `ok ${request.command}` : reply.code;
            codes.set(seen, (codes.get(seen) ?? 0) + 1);
            if (!reply.ok) {
              assert.match(reply.code, STABLE_CODE, shown);
              assert.notEqual(reply.code, ErrorCode.ADMIN_INTERNAL, shown);
              assert.ok(typeof reply.message === 'string' && reply.message.length > 0, shown);
            }
            if (lines[i]!.includes('PRIVATE KEY')) {
              for (const secret of secretLines(material.privateKeys[0]!)) assert.ok(!JSON.stringify(reply).includes(secret), `the answer echoes a private key: ${shown}`);
              // Only the certificate field counts: a key pasted into `reason` is text, not a registration.
              if (request?.command === 'register-client' && String(request.args?.certificatePem).includes('PRIVATE KEY')) assert.fail(`a private key was registered as a client certificate: ${shown}`);
            }
          }
          assert.equal(replies.at(-1).ok, true, 'the connection stopped answering');
        }),
        { numRuns: RUNS.adminBatches, includeErrorInReport: true },
      );
    } finally {
      socket.destroy();
    }
    t.diagnostic(`admin answers: ${[...codes].sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k} ${n}`).join(', ')}`);
    for (const command of ['register-client', 'revoke-client', 'revoke-agent', 'reissue']) assert.ok(codes.has(`ok ${command}`), `no ${command} succeeded: the generators only test its refusals`);
  });
});
