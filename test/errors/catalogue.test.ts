/**
 * The error catalogue is the only source of a code's HTTP status, exit code, channel close
 * code and documentation. These tests read the source tree to prove that every code certplane
 * uses is in the catalogue and every catalogue entry is emitted somewhere, and drive the API,
 * the command line and the channel's close-code rule to prove they answer what it says.
 */
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import Fastify from 'fastify';
import ts from 'typescript';
import { errorHandler } from '../../src/api/errors.js';
import { CloseCode } from '../../src/channel/protocol.js';
import { ExitCode, reportFailure } from '../../src/cli/args.js';
import { CATALOGUE_ENTRIES, ChannelCloseCode, ErrorCode, STATUS_BY_KIND, channelCloseOf, exitCodeOf, httpStatusOf, isErrorCode, kindOf } from '../../src/error-catalogue.js';
import { CertplaneError } from '../../src/errors.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const CATALOGUE_FILE = join('src', 'error-catalogue.ts');

/** A string literal spelled like an error code. */
const CODE_SHAPED = /^[A-Z][A-Z0-9]*(_[A-Z0-9]+)+$/;

/**
 * Code-shaped names that are not certplane's error codes: environment variables, the
 * verification report's warnings, and the codes of Node, OpenSSL and the operating system
 * that certplane reads in order to explain them.
 */
const FOREIGN_NAMES: readonly RegExp[] = [
  /^CERTPLANE_/,
  /^BUNDLE_/,
  /^E[A-Z]+(_[A-Z]+)?$/,
  /^ERR_/,
  /^(CERT_UNTRUSTED|DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_GET_ISSUER_CERT|UNABLE_TO_GET_ISSUER_CERT_LOCALLY|UNABLE_TO_VERIFY_LEAF_SIGNATURE)$/,
];

interface CodeUse {
  readonly code: string;
  readonly where: string;
}

interface SourceScan {
  /** `ErrorCode.X` where X is thrown, answered, sent or mapped to: anything but a comparison. */
  readonly emitted: CodeUse[];
  /** `ErrorCode.X` that any code reads. */
  readonly referenced: CodeUse[];
  /** String literals spelled like a code. */
  readonly literals: CodeUse[];
}

async function sourceFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true });
  const nested = await Promise.all(entries.map((entry) => (entry.isDirectory() ? sourceFiles(join(dir, entry.name)) : entry.name.endsWith('.ts') ? [join(dir, entry.name)] : [])));
  return nested.flat();
}

/** A use that only tells codes apart (`===`, `hasCode(e, X)`, `case X:`, a lookup key) emits nothing. */
function isComparison(node: ts.Node): boolean {
  const parent = node.parent;
  if (ts.isBinaryExpression(parent) && [ts.SyntaxKind.EqualsEqualsEqualsToken, ts.SyntaxKind.ExclamationEqualsEqualsToken].includes(parent.operatorToken.kind)) return true;
  if (ts.isCallExpression(parent) && parent.expression.getText() === 'hasCode' && parent.arguments[1] === node) return true;
  return ts.isCaseClause(parent) || ts.isComputedPropertyName(parent);
}

async function scanSources(): Promise<SourceScan> {
  const scan: SourceScan = { emitted: [], referenced: [], literals: [] };
  for (const file of await sourceFiles(join(ROOT, 'src'))) {
    const path = relative(ROOT, file);
    if (path === CATALOGUE_FILE) continue;
    const source = ts.createSourceFile(file, await readFile(file, 'utf8'), ts.ScriptTarget.Latest, true);
    const visit = (node: ts.Node): void => {
      const where = `${path}:${source.getLineAndCharacterOfPosition(node.getStart()).line + 1}`;
      if (ts.isPropertyAccessExpression(node) && ts.isIdentifier(node.expression) && node.expression.text === 'ErrorCode') {
        scan.referenced.push({ code: node.name.text, where });
        if (!isComparison(node)) scan.emitted.push({ code: node.name.text, where });
      }
      if ((ts.isStringLiteral(node) || ts.isNoSubstitutionTemplateLiteral(node)) && CODE_SHAPED.test(node.text)) scan.literals.push({ code: node.text, where });
      ts.forEachChild(node, visit);
    };
    visit(source);
  }
  return scan;
}

const scanned = scanSources();

test('every code src/ uses is in the catalogue, through its constant: no code is written as a string', async () => {
  const { referenced, literals } = await scanned;
  assert.ok(referenced.length > 200, `the scan found only ${referenced.length} uses of ErrorCode; is it reading src/?`);
  assert.deepEqual(referenced.filter((use) => !isErrorCode(use.code)), [], 'ErrorCode.X with X not in the catalogue');
  const raw = literals.filter((use) => !FOREIGN_NAMES.some((name) => name.test(use.code)));
  assert.deepEqual(raw, [], 'codes written as strings: add them to src/error-catalogue.ts and use ErrorCode.X');
});

test('every catalogue entry is emitted somewhere in src/, not only compared against', async () => {
  const emitted = new Set((await scanned).emitted.map((use) => use.code));
  assert.deepEqual(CATALOGUE_ENTRIES.map((entry) => entry.code).filter((code) => !emitted.has(code)), [], 'catalogue entries nothing emits: remove them, or emit them');
});

test('the scan tells an emitted code from a compared one, and finds a code written as a string', () => {
  const source = ts.createSourceFile('probe.ts', "if (hasCode(e, ErrorCode.A_B) || e.code === ErrorCode.C_D) throw new CertplaneError(ErrorCode.E_F, 'x'); const k = { [ErrorCode.G_H]: 1 }; reply({ code: 'RAW_CODE' });", ts.ScriptTarget.Latest, true);
  const emitted: string[] = [];
  const literals: string[] = [];
  const visit = (node: ts.Node): void => {
    if (ts.isPropertyAccessExpression(node) && node.expression.getText() === 'ErrorCode' && !isComparison(node)) emitted.push(node.name.text);
    if (ts.isStringLiteral(node) && CODE_SHAPED.test(node.text)) literals.push(node.text);
    ts.forEachChild(node, visit);
  };
  visit(source);
  assert.deepEqual(emitted, ['E_F']);
  assert.deepEqual(literals, ['RAW_CODE']);
});

test('each entry has a kind, a one-line meaning, and a status override only where HTTP has a more precise 4xx', () => {
  for (const entry of CATALOGUE_ENTRIES) {
    assert.ok(Object.hasOwn(STATUS_BY_KIND, entry.kind), `${entry.code}: kind ${entry.kind}`);
    assert.match(entry.meaning, /^[^\n]{10,240}$/, `${entry.code}: meaning`);
    assert.match(entry.code, /^[A-Z][A-Z0-9_]*$/);
    if (entry.status !== undefined) assert.ok(entry.status >= 400 && entry.status < 500 && entry.status !== STATUS_BY_KIND[entry.kind], `${entry.code}: status ${entry.status}`);
  }
  assert.equal(kindOf(ErrorCode.STORE_NOT_FOUND), 'not-found');
  assert.equal(isErrorCode('toString'), false);
});

test('the API answers every code with the status the catalogue gives it (STORE_NOT_FOUND is 404, no longer 500)', async () => {
  const app = Fastify({ logger: false });
  app.setErrorHandler(errorHandler);
  app.get('/fail/:code', async (request) => {
    throw new CertplaneError((request.params as { code: ErrorCode }).code, 'refused for the test');
  });
  try {
    for (const { code } of CATALOGUE_ENTRIES) {
      const reply = await app.inject({ method: 'GET', url: `/fail/${code}` });
      assert.equal(reply.statusCode, httpStatusOf(code), code);
      assert.equal(reply.json().code, code);
    }
    assert.equal(httpStatusOf(ErrorCode.STORE_NOT_FOUND), 404);
    assert.equal(httpStatusOf(ErrorCode.CSR_TOO_LARGE), 413);
    assert.equal(httpStatusOf(ErrorCode.STORE_QUERY_FAILED), 500);
  } finally {
    await app.close();
  }
});

test('the command line exits 2 for every bad-input code and 1 for every other, naming the code', () => {
  for (const { code, kind } of CATALOGUE_ENTRIES) {
    let written = '';
    const io = { stdout: process.stdout, stderr: { write: (text: string) => ((written += text), true) } as unknown as NodeJS.WritableStream, env: {} };
    const exit = reportFailure(new CertplaneError(code, 'refused for the test'), 'certplane', io);
    assert.equal(exit, kind === 'bad-input' ? ExitCode.BAD_INPUT : ExitCode.NO, code);
    assert.equal(exit, exitCodeOf(code));
    assert.equal(written, `certplane: ${code}: refused for the test\n`);
  }
  assert.equal(exitCodeOf(ErrorCode.CONFIG_INVALID), 2);
  assert.equal(exitCodeOf(ErrorCode.CHAIN_NO_PREFERRED_CHAIN), 1);
});

test('the channel closes with 4001 for an authentication failure or a revoked certificate and 4000 for anything else', () => {
  assert.equal(CloseCode.PROTOCOL_ERROR, ChannelCloseCode.PROTOCOL_ERROR);
  assert.equal(CloseCode.AUTH_FAILED, ChannelCloseCode.AUTH_FAILED);
  const authentication = CATALOGUE_ENTRIES.filter((entry) => channelCloseOf(entry.code) === CloseCode.AUTH_FAILED).map((entry) => entry.code);
  assert.deepEqual(authentication.sort(), [ErrorCode.AGENT_AUTH_FAILED, ErrorCode.AGENT_REVOKED].sort());
  assert.equal(channelCloseOf(ErrorCode.CHANNEL_MESSAGE_NOT_JSON), CloseCode.PROTOCOL_ERROR);
  assert.equal(channelCloseOf(ErrorCode.STORE_UNAVAILABLE), CloseCode.PROTOCOL_ERROR);
});
