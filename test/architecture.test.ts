/**
 * The rooms of src/ and the arrows between them (docs/architecture.md), read from the
 * import statements themselves: the pure engines import no other room, the program on the
 * instance never reaches into the plane, storage and configuration stay below the rooms
 * that use them, and only the composition root and the command line wire everything.
 */
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const src = join(root, 'src');

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return sources(path);
    return entry.name.endsWith('.ts') ? [path] : [];
  });
}

/** Every module specifier a file names (imports, re-exports, dynamic import()), read by TypeScript's own parser. */
export function specifiers(text: string): string[] {
  const found: string[] = [];
  const visit = (node: ts.Node): void => {
    if ((ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) && node.moduleSpecifier && ts.isStringLiteral(node.moduleSpecifier)) found.push(node.moduleSpecifier.text);
    if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword) {
      const [argument] = node.arguments;
      // A computed import() cannot be followed: refuse it rather than miss an arrow.
      found.push(argument && ts.isStringLiteralLike(argument) ? argument.text : '<computed import()>');
    }
    ts.forEachChild(node, visit);
  };
  visit(ts.createSourceFile('scanned.ts', text, ts.ScriptTarget.Latest, false));
  return found;
}

/** The room of a file under src/: its first folder, or the file's own name for a top-level module. */
function roomOf(path: string): string {
  const [first, ...rest] = relative(src, path).split(sep);
  return rest.length > 0 ? (first as string) : (first as string).replace(/\.ts$/, '');
}

interface Arrow {
  readonly from: string;
  readonly file: string;
  readonly to: string;
  readonly target: string;
  readonly specifier: string;
}

const arrows: Arrow[] = sources(src).flatMap((file) =>
  specifiers(readFileSync(file, 'utf8')).flatMap((specifier) => {
    if (!specifier.startsWith('.')) return [];
    const target = resolve(dirname(file), specifier.replace(/\.js$/, '.ts'));
    const to = roomOf(target);
    const from = roomOf(file);
    return from === to ? [] : [{ from, file: relative(root, file), to, target: relative(src, target), specifier }];
  }),
);

/** The src/ files `entry` reaches through relative imports, itself included. */
function closure(entries: readonly string[]): Set<string> {
  const seen = new Set<string>();
  const stack = [...entries];
  while (stack.length > 0) {
    const file = stack.pop() as string;
    if (seen.has(file)) continue;
    seen.add(file);
    for (const specifier of specifiers(readFileSync(file, 'utf8'))) if (specifier.startsWith('.')) stack.push(resolve(dirname(file), specifier.replace(/\.js$/, '.ts')));
  }
  return seen;
}

/** The rooms each room may import; anything else is an arrow the wrong way. */
const ALLOWED: Record<string, readonly string[]> = {
  chain: ['errors', 'error-catalogue', 'untrusted-text'],
  lifecycle: ['errors', 'error-catalogue'],
  channel: ['chain', 'errors', 'error-catalogue', 'untrusted-text', 'validation'],
  agent: ['chain', 'channel', 'errors', 'error-catalogue', 'http-client', 'log', 'pki', 'untrusted-text', 'validation', 'process-name'],
  store: ['chain', 'lifecycle', 'errors', 'error-catalogue', 'untrusted-text', 'validation'],
  config: ['chain', 'store', 'errors', 'error-catalogue', 'validation', 'untrusted-text'],
};

describe('the arrows between the rooms of src/', () => {
  test('the scanner sees imports, re-exports and dynamic imports', () => {
    const read = specifiers("import a from './a.js';\nexport { b } from \"../b.js\";\nimport type {\n  C, // the room's helper\n} from '../c.js';\nconst d = await import('./d.js');\nimport './e.js'; import f from './f.js';\nexport * as g from './g.js';");
    assert.deepEqual([...read].sort(), ['../b.js', '../c.js', './a.js', './d.js', './e.js', './f.js', './g.js']);
    assert.ok(arrows.length > 100, `${arrows.length} arrows between rooms`);
    assert.deepEqual(specifiers('const m = await import(name);'), ['<computed import()>']);
    assert.deepEqual(sources(src).filter((file) => specifiers(readFileSync(file, 'utf8')).includes('<computed import()>')).map((file) => relative(root, file)), [], 'no import the scan cannot follow');
    assert.ok(arrows.some((a) => a.from === 'fleet' && a.to === 'chain'));
  });

  for (const [room, allowed] of Object.entries(ALLOWED)) {
    test(`${room}/ imports only ${allowed.join(', ')}`, () => {
      const wrong = arrows.filter((a) => a.from === room && !allowed.includes(a.to)).map((a) => `${a.file} -> ${a.specifier}`);
      assert.deepEqual(wrong, []);
    });
  }

  test('what the pure engines reach, transitively, stays inside them and the shared error and text modules', () => {
    for (const [room, allowed] of [
      ['chain', ['chain', 'errors', 'error-catalogue', 'untrusted-text']],
      ['lifecycle', ['lifecycle', 'errors', 'error-catalogue']],
    ] as const) {
      const outside = [...closure(sources(join(src, room)))].filter((file) => !(allowed as readonly string[]).includes(roomOf(file))).map((file) => relative(root, file));
      assert.deepEqual(outside, [], `${room}/ reaches outside itself`);
    }
  });

  test('the program on the instance (the agent bundle\'s entry) reaches none of the plane\'s rooms', () => {
    const reached = closure([join(src, 'cli', 'agent-main.ts')]);
    assert.ok([...reached].some((file) => roomOf(file) === 'agent'), 'the scan follows the entry into agent/');
    const plane = ['fleet', 'store', 'api', 'jobs', 'acme', 'admin', 'secrets', 'devenv', 'compose'];
    assert.deepEqual([...reached].filter((file) => plane.includes(roomOf(file))).map((file) => relative(root, file)), []);
  });

  test('the pure engines (chain/, lifecycle/) do no I/O: of node:, only crypto and pure name helpers; no database, network or file library', () => {
    const engines = sources(join(src, 'chain')).concat(sources(join(src, 'lifecycle')));
    const impure = engines.flatMap((file) => specifiers(readFileSync(file, 'utf8')).filter((s) => !s.startsWith('.') && (s.startsWith('node:') ? !['node:crypto', 'node:url', 'node:net'].includes(s) : /^(pg|@electric-sql|ws|fastify|pino|acme-client|@aws-sdk)/.test(s))).map((s) => `${relative(root, file)} -> ${s}`));
    assert.deepEqual(impure, []);
    // node:net and node:url are allowed for their pure functions only (IP literals, IDNA), never sockets or files.
    const named = engines.flatMap((file) => [...readFileSync(file, 'utf8').matchAll(/import\s*\{([^}]*)\}\s*from\s*'node:(?:net|url)'/g)].flatMap((m) => (m[1] as string).split(',').map((n) => n.trim()).filter(Boolean)));
    assert.ok(named.length > 0);
    assert.deepEqual(named.filter((n) => !/^(isIP|isIPv4|isIPv6|domainToASCII|domainToUnicode)$/.test(n)), []);
  });

  test('the store is entered through its public face: outside store/, nobody imports its engines, migrations or implementation', () => {
    const around = arrows.filter((a) => a.to === 'store' && !['store/index.ts', 'store/types.ts'].includes(a.target.split(sep).join('/'))).map((a) => `${a.file} -> ${a.specifier}`);
    assert.deepEqual(around, []);
  });

  test('outside store/, production code calls named store methods, never raw SQL through query()', () => {
    const raw = sources(src)
      .filter((file) => roomOf(file) !== 'store')
      .filter((file) => /\.query\s*(<[^>]*>)?\s*\(/.test(readFileSync(file, 'utf8')))
      .map((file) => relative(root, file));
    assert.deepEqual(raw, []);
  });

  test('only the composition root and the command line import compose.ts', () => {
    assert.deepEqual(arrows.filter((a) => a.to === 'compose' && a.from !== 'cli').map((a) => a.file), []);
  });
});
