import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { test } from 'node:test';
import { createLogger } from '../../src/log/logger.js';

test('keys, tokens, secrets and authorization headers never reach a log line', async () => {
  const out = new PassThrough();
  const chunks: string[] = [];
  out.on('data', (c: Buffer) => chunks.push(c.toString()));
  const logger = createLogger('info', out);
  logger.info({ account: { privateKeyPem: '-----BEGIN PRIVATE KEY-----abc', url: 'https://ca/acct/1' }, token: 'cpe_secret', req: { headers: { authorization: 'Bearer x', host: 'h' } }, secret: 's3' }, 'something happened');
  await new Promise((resolve) => setImmediate(resolve));
  const line = chunks.join('');
  assert.match(line, /something happened/);
  assert.match(line, /https:\/\/ca\/acct\/1/);
  for (const leaked of ['BEGIN PRIVATE KEY', 'cpe_secret', 'Bearer x', 's3']) assert.ok(!line.includes(leaked), `${leaked} leaked: ${line}`);
  assert.equal((line.match(/\[redacted\]/g) ?? []).length, 4);
});
