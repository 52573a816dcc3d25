/**
 * /metrics gzip-compressed for a scraper that accepts it (Prometheus sends
 * `Accept-Encoding: gzip`), plain text for one that does not, on both listeners, over real
 * HTTP with node:http (which, unlike fetch, decompresses nothing by itself): the gzip body
 * decompresses to the exposition the plain scrape returns.
 */
import assert from 'node:assert/strict';
import { get } from 'node:http';
import { gunzipSync } from 'node:zlib';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { acceptsGzip, type MetricsSource } from '../../src/api/metrics.js';
import { startMetricsListener, type MetricsListener } from '../../src/api/metrics-listener.js';
import { startTestPlane, type TestPlane } from '../support/plane.js';

/** GET `url` with exactly the headers given: status, headers and the body's bytes as sent. */
function rawGet(url: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Buffer }> {
  return new Promise((resolve, reject) => {
    get(url, { headers }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, headers: response.headers, body: Buffer.concat(chunks) }));
    }).on('error', reject);
  });
}

test('acceptsGzip: gzip or x-gzip with a weight above zero, in any case, in any of several headers', () => {
  for (const header of ['gzip', 'GZIP', 'deflate, gzip;q=0.5', 'br;q=1.0, x-gzip', ' gzip ; q=1 ', ['br', 'gzip']]) assert.equal(acceptsGzip(header), true, JSON.stringify(header));
  for (const header of [undefined, '', 'identity', 'deflate, br', 'gzip;q=0', 'gzip;q=0.000', '*', 'gzipped', ['br', 'deflate']]) assert.equal(acceptsGzip(header), false, JSON.stringify(header));
});

describe('the metrics listener', () => {
  // Large and repetitive, like a fleet's exposition, so compression shows in the size.
  const exposition = `# HELP certplane_instance_ready test\n# TYPE certplane_instance_ready gauge\n${Array.from({ length: 2000 }, (_, i) => `certplane_instance_ready{instance_id="i-${i}",cluster="c\\"${i % 7}"} ${i % 2}\n`).join('')}`;
  const source: MetricsSource = { contentType: 'text/plain; version=0.0.4; charset=utf-8', metrics: async () => exposition };
  let listener: MetricsListener;
  before(async () => {
    listener = await startMetricsListener({ listen: { host: '127.0.0.1', port: 0 }, source, logger: pino({ level: 'silent' }) });
  });
  after(() => listener.close());

  test('a scraper sending Accept-Encoding: gzip gets gzip that decompresses to the exposition; one sending none, or refusing gzip, gets the plain text', async () => {
    const zipped = await rawGet(`${listener.url}/metrics`, { 'accept-encoding': 'gzip' });
    assert.equal(zipped.status, 200);
    assert.deepEqual([zipped.headers['content-encoding'], zipped.headers.vary, zipped.headers['content-type']], ['gzip', 'Accept-Encoding', source.contentType]);
    assert.equal(gunzipSync(zipped.body).toString('utf8'), exposition);
    assert.ok(zipped.body.length * 5 < Buffer.byteLength(exposition), `gzip ${zipped.body.length} bytes of ${Buffer.byteLength(exposition)}`);

    for (const headers of [{}, { 'accept-encoding': 'gzip;q=0, br' }] as Record<string, string>[]) {
      const plain = await rawGet(`${listener.url}/metrics`, headers);
      assert.equal(plain.status, 200);
      assert.deepEqual([plain.headers['content-encoding'], plain.headers.vary, plain.headers['content-type']], [undefined, 'Accept-Encoding', source.contentType], JSON.stringify(headers));
      assert.equal(plain.body.toString('utf8'), exposition);
    }
  });
});

describe('the main listener', () => {
  let plane: TestPlane;
  before(async () => {
    plane = await startTestPlane();
    for (const name of ['gz-a', 'gz-b']) assert.equal((await plane.app.inject({ method: 'POST', url: '/v1/instances', payload: { name, hostnames: [`${name}.example.com`] } })).statusCode, 201);
  });
  after(() => plane.close());

  test('GET /metrics with Accept-Encoding: gzip decompresses to what a plain scrape returns', async () => {
    // This scrape's own read time differs from one scrape to the next; everything else is the same.
    const steady = (text: string) => text.split('\n').filter((line) => !line.startsWith('certplane_fleet_metrics_query_duration_seconds ')).join('\n');
    const zipped = await rawGet(`${plane.url}/metrics`, { 'accept-encoding': 'gzip, deflate' });
    const plain = await rawGet(`${plane.url}/metrics`);
    assert.deepEqual([zipped.status, zipped.headers['content-encoding'], plain.status, plain.headers['content-encoding']], [200, 'gzip', 200, undefined]);
    const unzipped = gunzipSync(zipped.body).toString('utf8');
    assert.match(unzipped, /^# TYPE certplane_instance_ready gauge$/m);
    assert.equal(steady(unzipped), steady(plain.body.toString('utf8')));
  });
});
