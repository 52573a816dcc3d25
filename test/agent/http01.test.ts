import assert from 'node:assert/strict';
import { request } from 'node:http';
import { test, type TestContext } from 'node:test';
import { hasCode } from '../../src/errors.js';
import { Http01Responder } from '../../src/agent/http01.js';
import { ErrorCode } from '../../src/error-catalogue.js';

const TOKEN = 'evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA';
const KEY_AUTHORIZATION = `${TOKEN}.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI`;

async function started(t: TestContext): Promise<{ responder: Http01Responder; base: string; port: number }> {
  const responder = new Http01Responder({ host: '127.0.0.1', port: 0 });
  const { host, port } = await responder.start();
  t.after(() => responder.stop());
  return { responder, base: `http://${host}:${port}`, port };
}

/** A raw GET, so the path reaches the server exactly as written (fetch would normalise it). */
function rawGet(port: number, rawPath: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: rawPath, method: 'GET', agent: false }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.end();
  });
}

test('serves exactly the key authorization for a served token', async (t) => {
  const { responder, base } = await started(t);
  responder.serve(TOKEN, KEY_AUTHORIZATION);

  const response = await fetch(`${base}/.well-known/acme-challenge/${TOKEN}`);
  assert.equal(response.status, 200);
  assert.equal(response.headers.get('content-type'), 'application/octet-stream');
  assert.equal(await response.text(), KEY_AUTHORIZATION);
});

test('unknown and withdrawn tokens are 404, other paths too', async (t) => {
  const { responder, base } = await started(t);
  responder.serve(TOKEN, KEY_AUTHORIZATION);

  const unknown = await fetch(`${base}/.well-known/acme-challenge/someOtherToken_123`);
  assert.equal(unknown.status, 404);
  assert.doesNotMatch(await unknown.text(), new RegExp(KEY_AUTHORIZATION));
  const elsewhere = await fetch(`${base}/${TOKEN}`);
  assert.equal(elsewhere.status, 404);
  await elsewhere.body?.cancel();

  responder.withdraw(TOKEN);
  const withdrawn = await fetch(`${base}/.well-known/acme-challenge/${TOKEN}`);
  assert.equal(withdrawn.status, 404);
  await withdrawn.body?.cancel();
});

test('malformed tokens in requests are 400 and are refused by serve()', async (t) => {
  const { responder, port } = await started(t);
  responder.serve(TOKEN, KEY_AUTHORIZATION);

  for (const bad of ['..%2F..%2Fetc%2Fpasswd', 'a.b', `${'a'.repeat(257)}`, '', `${TOKEN}%00`]) {
    const response = await rawGet(port, `/.well-known/acme-challenge/${bad}`);
    assert.equal(response.status, 400, bad);
    assert.notEqual(response.body, KEY_AUTHORIZATION);
  }
  assert.equal((await rawGet(port, `/.well-known/acme-challenge/${TOKEN}?x=1`)).body, KEY_AUTHORIZATION);
  assert.throws(() => responder.serve('a/b', 'a/b.thumb'), (error) => hasCode(error, ErrorCode.AGENT_BAD_CHALLENGE_TOKEN));
  assert.throws(() => responder.serve(TOKEN, 'otherToken.9jg46WB3rR'), (error) => hasCode(error, ErrorCode.AGENT_BAD_KEY_AUTHORIZATION));
  assert.throws(() => responder.serve(TOKEN, `${TOKEN}.`), (error) => hasCode(error, ErrorCode.AGENT_BAD_KEY_AUTHORIZATION));
});

test('HEAD answers without a body and other methods are refused', async (t) => {
  const { responder, base } = await started(t);
  responder.serve(TOKEN, KEY_AUTHORIZATION);

  const head = await fetch(`${base}/.well-known/acme-challenge/${TOKEN}`, { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(head.headers.get('content-length'), String(KEY_AUTHORIZATION.length));
  const post = await fetch(`${base}/.well-known/acme-challenge/${TOKEN}`, { method: 'POST', body: 'x' });
  assert.equal(post.status, 405);
  await post.body?.cancel();
});

test('a port in use is reported with an actionable code, and stop() frees the port', async (t) => {
  const { port } = await started(t);
  const second = new Http01Responder({ host: '127.0.0.1', port });
  await assert.rejects(second.start(), (error) => hasCode(error, ErrorCode.AGENT_HTTP01_LISTEN_FAILED) && error.details.errno === 'EADDRINUSE');

  const third = new Http01Responder({ host: '127.0.0.1', port: 0 });
  const { port: freed } = await third.start();
  await third.stop();
  const again = new Http01Responder({ host: '127.0.0.1', port: freed });
  await again.start();
  await again.stop();
});
