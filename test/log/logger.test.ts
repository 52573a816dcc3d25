import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { test } from 'node:test';
import { createLogger } from '../../src/log/logger.js';
import { generateKeyPair } from '../../src/pki/factory.js';

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

test('a private key in any string of a log line (message, any field, an error, a binding, a key, one-line or re-wrapped) is redacted, the rest is kept', async () => {
  const out = new PassThrough();
  const chunks: string[] = [];
  out.on('data', (c: Buffer) => chunks.push(c.toString()));
  const { privateKeyPem } = await generateKeyPair();
  const body = privateKeyPem.split('\n').filter((l) => l && !l.startsWith('-----'));
  const oneLine = `-----BEGIN PRIVATE KEY----- ${body.join('')} -----END PRIVATE KEY-----`;
  const rewrapped = privateKeyPem.replaceAll('\n', '\r\n\t').replace('BEGIN PRIVATE', 'BEGIN  PRIVATE\u000b');
  const logger = createLogger('info', out);
  logger.warn({ err: oneLine, instanceId: 'i-1' }, 'agent reported an error');
  logger.info({ nested: { deeper: [1, { what: rewrapped }] }, kept: 'visible' }, 'nested');
  logger.error({ err: new Error(`refused: ${privateKeyPem}`) }, 'an error');
  logger.child({ component: privateKeyPem }).info('a binding');
  logger.info({ [oneLine]: true }, 'a key');
  logger.info(`the message itself: ${oneLine}`);
  logger.info({ openssh: '-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----', encrypted: '-----BEGIN ENCRYPTED PRIVATE KEY-----MIIFHzBJBgkqhkiG9w0BBQ0wPDAbBgkqhkiG9w0BBQwwDgQI-----END ENCRYPTED PRIVATE KEY-----' }, 'other kinds');
  logger.info({ certificate: '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----' }, 'a certificate is public');
  await new Promise((resolve) => setImmediate(resolve));
  const lines = chunks.join('').trimEnd().split('\n').map((line) => JSON.parse(line));
  assert.equal(lines.length, 8);
  const text = JSON.stringify(lines);
  for (const leaked of [...body.filter((l) => l.length >= 32), 'b3BlbnNzaC1rZXktdjEAAAAA', 'MIIFHzBJBgkqhkiG9w0BBQ0w']) assert.ok(!text.includes(leaked), `leaked: ${leaked}`);
  assert.deepEqual([lines[0].msg, lines[0].instanceId, lines[0].err], ['agent reported an error', 'i-1', '[redacted: private key]']);
  assert.deepEqual([lines[1].kept, lines[1].nested.deeper[0], lines[1].nested.deeper[1].what], ['visible', 1, '[redacted: private key]']);
  assert.equal(lines[2].err.type, 'Error');
  assert.equal(lines[3].component, '[redacted: private key]');
  assert.equal(lines[5].msg, '[redacted: private key]');
  assert.match(lines[7].certificate, /BEGIN CERTIFICATE/);
});
