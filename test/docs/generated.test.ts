/**
 * The reference pages generated from the code are committed, so a reader on GitHub sees
 * them; these tests fail when a committed page is not what the code generates now.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { generatedPages } from '../../src/cli/docs.js';
import { CONFIGURATION_SCHEMA } from '../../src/config/config.js';
import { CATALOGUE_ENTRIES, httpStatusOf } from '../../src/error-catalogue.js';

const REFERENCE = fileURLToPath(new URL('../../../docs/reference/', import.meta.url));

for (const [name, text] of Object.entries(generatedPages())) {
  test(`the committed docs/reference/${name} is what the code generates (run npm run docs)`, async () => {
    assert.equal(await readFile(join(REFERENCE, name), 'utf8'), text, `docs/reference/${name} is stale: run "npm run docs" and commit the result`);
  });
}

test('the error reference has one row per catalogue code, with its kind and HTTP status', () => {
  const rows = generatedPages()['errors.md']!.split('\n').filter((line) => line.startsWith('| `'));
  assert.equal(rows.length, CATALOGUE_ENTRIES.length);
  for (const entry of CATALOGUE_ENTRIES) {
    const row = rows.find((line) => line.startsWith(`| \`${entry.code}\` |`));
    assert.ok(row, entry.code);
    assert.deepEqual(row.split(' | ').slice(1, 3), [entry.kind, String(httpStatusOf(entry.code))], entry.code);
  }
});

test('the configuration reference has one row per variable of the schema, each with a description', () => {
  const rows = generatedPages()['configuration.md']!.split('\n').filter((line) => line.startsWith('| `CERTPLANE_'));
  assert.deepEqual(rows.map((row) => row.split('`')[1]), Object.keys(CONFIGURATION_SCHEMA.shape));
  assert.ok(rows.every((row) => row.split(' | ')[2]!.length > 10));
  assert.ok(rows.some((row) => row.startsWith('| `CERTPLANE_LISTEN` | `127.0.0.1:8443` |')), 'a prefault is shown as the default');
});
