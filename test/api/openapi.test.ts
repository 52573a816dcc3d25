import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { renderOpenApi } from '../../src/api/openapi.js';

const committed = fileURLToPath(new URL('../../../openapi.yaml', import.meta.url));

test('the committed openapi.yaml is what the route schemas generate (run npm run openapi)', async () => {
  assert.equal(await readFile(committed, 'utf8'), await renderOpenApi(), 'openapi.yaml is stale: run "npm run openapi" and commit the result');
});

test('the document is OpenAPI 3.1 with every route the control plane and agents use, each with responses', async () => {
  const document = parse(await renderOpenApi());
  assert.equal(document.openapi, '3.1.0');
  const expected: Record<string, string[]> = {
    '/v1/instances': ['get', 'post'],
    '/v1/instances/{id}': ['get'],
    '/v1/instances/{id}/issue': ['post'],
    '/v1/instances/{id}/enrollment-token': ['post'],
    '/v1/certificates/{id}': ['get'],
    '/v1/agents/enroll': ['post'],
    '/healthz': ['get'],
    '/readyz': ['get'],
    '/metrics': ['get'],
  };
  for (const [path, methods] of Object.entries(expected)) {
    for (const method of methods) {
      const operation = document.paths?.[path]?.[method];
      assert.ok(operation, `${method.toUpperCase()} ${path} is missing`);
      assert.ok(Object.keys(operation.responses ?? {}).length > 0, `${method.toUpperCase()} ${path} documents no response`);
    }
  }
  const refs = JSON.stringify(document).match(/"\$ref":"([^"]+)"/g) ?? [];
  for (const ref of refs) {
    const target = ref.slice(8, -1).replace(/^#\//, '').split('/');
    assert.ok(target.reduce((node: any, key) => node?.[key], document), `dangling ${ref}`);
  }
  const limit = document.paths['/v1/instances'].get.parameters.find((p: { name: string }) => p.name === 'limit');
  assert.equal(limit.schema.maximum, 500);
});
