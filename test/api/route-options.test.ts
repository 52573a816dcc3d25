/**
 * The arrows of the API room: a route plugin declares the few values it uses as its own
 * options and is registered from app.ts with those, so none of them reaches for the
 * whole dependency bag (ApiDependencies) or for app.ts at all.
 */
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const API = fileURLToPath(new URL('../../../src/api/', import.meta.url));
const ROUTES = join(API, 'routes');
const APP = join(API, 'app.ts');

/** Every module specifier a file imports or re-exports, static or dynamic. */
function specifiers(source: string): string[] {
  const found: string[] = [];
  for (const match of source.matchAll(/\b(?:import|export)\b[^'"`;]*?\bfrom\s*['"]([^'"]+)['"]|\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)|^\s*import\s+['"]([^'"]+)['"]/gm)) {
    found.push((match[1] ?? match[2] ?? match[3])!);
  }
  return found;
}

const routeFiles = async () => (await readdir(ROUTES)).filter((name) => name.endsWith('.ts')).map((name) => join(ROUTES, name));

test('the route plugins are found, and the import scanner sees their imports', async () => {
  const files = await routeFiles();
  assert.ok(files.length >= 7, `expected the route plugins in ${ROUTES}, found ${files.length}`);
  const instances = await readFile(join(ROUTES, 'instances.ts'), 'utf8');
  assert.ok(specifiers(instances).includes('../schemas.js'), 'the scanner must see instances.ts importing ../schemas.js');
});

test('no route plugin imports app.ts or names ApiDependencies', async () => {
  const offenders: string[] = [];
  for (const file of await routeFiles()) {
    const source = await readFile(file, 'utf8');
    const name = `src/api/routes/${file.slice(ROUTES.length + 1)}`;
    for (const spec of specifiers(source)) {
      if (spec.startsWith('.') && resolve(dirname(file), spec).replace(/\.js$/, '.ts') === APP) offenders.push(`${name} imports ${spec}`);
    }
    if (/\bApiDependencies\b/.test(source)) offenders.push(`${name} names ApiDependencies`);
  }
  assert.deepEqual(offenders, [], 'route plugins declare their own options (see docs/architecture.md, Conventions)');
});

test('app.ts registers each route plugin with its own options, never the whole bag', async () => {
  const source = await readFile(APP, 'utf8');
  const registered = [...source.matchAll(/app\.register\(\s*(\w+Routes)\b([^;]*)\)/g)];
  assert.ok(registered.length >= 6, `expected app.ts to register the route plugins, found ${registered.length}`);
  for (const [call, plugin, rest] of registered) {
    assert.doesNotMatch(rest!, /^\s*\(\s*deps\s*\)|^\s*,\s*deps\s*$/, `${plugin} is given the whole dependency bag: ${call}`);
    assert.match(rest!, /^\s*,\s*\{/, `${plugin} is registered with an options object of its own: ${call}`);
  }
});
