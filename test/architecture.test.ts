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

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const src = join(root, 'src');

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return sources(path);
    return entry.name.endsWith('.ts') ? [path] : [];
  });
}

/** Every module specifier a file names: static imports, re-exports and dynamic import(). */
export function specifiers(text: string): string[] {
  const found = [...text.matchAll(/(?:^|\n)\s*(?:import|export)\b[^'";]*?\bfrom\s*'([^']+)'/g), ...text.matchAll(/(?:^|\n)\s*import\s*'([^']+)'/g), ...text.matchAll(/\bimport\(\s*'([^']+)'\s*\)/g)];
  return found.map((match) => match[1] as string);
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
    assert.deepEqual(specifiers("import a from './a.js';\nexport { b } from '../b.js';\nimport type {\n  C,\n} from '../c.js';\nconst d = await import('./d.js');\nimport './e.js';"), ['./a.js', '../b.js', '../c.js', './e.js', './d.js']);
    assert.ok(arrows.length > 100, `${arrows.length} arrows between rooms`);
    assert.ok(arrows.some((a) => a.from === 'fleet' && a.to === 'chain'));
  });

  for (const [room, allowed] of Object.entries(ALLOWED)) {
    test(`${room}/ imports only ${allowed.join(', ')}`, () => {
      const wrong = arrows.filter((a) => a.from === room && !allowed.includes(a.to)).map((a) => `${a.file} -> ${a.specifier}`);
      assert.deepEqual(wrong, []);
    });
  }

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
