import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Route53Client } from '@aws-sdk/client-route-53';
import { Route53DnsProvider, type Route53DnsProviderOptions } from '../../../src/acme/dns/route53.js';
import { hasCode } from '../../../src/errors.js';
import { ErrorCode } from '../../../src/error-catalogue.js';

const NS = 'https://route53.amazonaws.com/doc/2013-04-01/';

interface ReceivedRequest {
  readonly method: string;
  readonly path: string;
  readonly query: URLSearchParams;
  readonly headers: IncomingMessage['headers'];
  readonly body: string;
}

interface FakeZone {
  readonly id: string;
  readonly name: string;
  readonly privateZone?: boolean;
}

interface FakeRecordSet {
  readonly name: string;
  readonly type: string;
  readonly ttl: number;
  readonly values: string[];
}

class AwsFault extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Route 53 as its REST-XML wire protocol shows it to the SDK: hosted zones listed by name in
 * reversed-label order, TXT record sets kept in memory, changes that stay PENDING for
 * `pendingPolls` GetChange calls. It records every request so tests can assert what AWS would
 * have received.
 */
class FakeRoute53 {
  readonly requests: ReceivedRequest[] = [];
  readonly records = new Map<string, FakeRecordSet[]>();
  pendingPolls = 1;
  readonly #polls = new Map<string, number>();
  #changes = 0;
  readonly #server = createServer((request, response) => void this.#handle(request, response));

  constructor(readonly zones: readonly FakeZone[]) {
    for (const zone of zones) this.records.set(zone.id, []);
  }

  async listen(): Promise<string> {
    await new Promise<void>((resolve) => this.#server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
  }

  close(): Promise<void> {
    this.#server.closeAllConnections();
    return new Promise((resolve, reject) => this.#server.close((error) => (error ? reject(error) : resolve())));
  }

  txt(zoneId: string, name: string): string[] | undefined {
    return this.records.get(zoneId)?.find((set) => set.name === name && set.type === 'TXT')?.values;
  }

  changeBodies(): string[] {
    return this.requests.filter((request) => request.method === 'POST').map((request) => request.body);
  }

  async #handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    const url = new URL(request.url ?? '/', 'http://fake');
    const received = { method: request.method ?? '', path: url.pathname, query: url.searchParams, headers: request.headers, body: Buffer.concat(chunks).toString() };
    this.requests.push(received);
    try {
      this.#reply(response, 200, this.#route(received));
    } catch (error) {
      if (!(error instanceof AwsFault)) throw error;
      this.#reply(
        response,
        error.status,
        `<ErrorResponse xmlns="${NS}"><Error><Type>Sender</Type><Code>${error.code}</Code><Message>${escapeXml(error.message)}</Message></Error><RequestId>fake-request</RequestId></ErrorResponse>`,
      );
    }
  }

  #reply(response: ServerResponse, status: number, xml: string): void {
    response.writeHead(status, { 'content-type': 'text/xml', 'x-amzn-requestid': 'fake-request' });
    response.end(`<?xml version="1.0" encoding="UTF-8"?>\n${xml}`);
  }

  #route(request: ReceivedRequest): string {
    const { method, path } = request;
    if (method === 'GET' && path === '/2013-04-01/hostedzonesbyname') return this.#listZones(request.query);
    const rrset = /^\/2013-04-01\/hostedzone\/([^/]+)\/rrset\/?$/.exec(path);
    if (rrset && method === 'GET') return this.#listRecordSets(this.#zone(rrset[1] ?? ''), request.query);
    if (rrset && method === 'POST') return this.#changeRecordSets(this.#zone(rrset[1] ?? ''), request.body);
    const change = /^\/2013-04-01\/change\/([^/]+)$/.exec(path);
    if (change && method === 'GET') return this.#getChange(change[1] ?? '');
    throw new AwsFault(404, 'UnknownOperationException', `${method} ${path}`);
  }

  #zone(id: string): FakeRecordSet[] {
    const sets = this.records.get(id);
    if (!sets) throw new AwsFault(404, 'NoSuchHostedZone', `No hosted zone found with ID: ${id}`);
    return sets;
  }

  #listZones(query: URLSearchParams): string {
    const start = reversedLabels(query.get('dnsname') ?? '');
    const maxItems = Number(query.get('maxitems') ?? '100');
    const listed = [...this.zones].sort((a, b) => compare(reversedLabels(a.name), reversedLabels(b.name))).filter((zone) => reversedLabels(zone.name) >= start);
    const page = listed.slice(0, maxItems);
    const zonesXml = page
      .map(
        (zone) =>
          `<HostedZone><Id>/hostedzone/${zone.id}</Id><Name>${zone.name}</Name><CallerReference>fake</CallerReference><Config><PrivateZone>${zone.privateZone === true}</PrivateZone></Config><ResourceRecordSetCount>2</ResourceRecordSetCount></HostedZone>`,
      )
      .join('');
    return `<ListHostedZonesByNameResponse xmlns="${NS}"><HostedZones>${zonesXml}</HostedZones><DNSName>${query.get('dnsname') ?? ''}</DNSName><IsTruncated>${listed.length > maxItems}</IsTruncated><MaxItems>${maxItems}</MaxItems></ListHostedZonesByNameResponse>`;
  }

  #listRecordSets(sets: FakeRecordSet[], query: URLSearchParams): string {
    const startKey = `${reversedLabels(query.get('name') ?? '')} ${query.get('type') ?? ''}`;
    const maxItems = Number(query.get('maxitems') ?? '300');
    const listed = [...sets]
      .map((set) => ({ key: `${reversedLabels(set.name)} ${set.type}`, set }))
      .sort((a, b) => compare(a.key, b.key))
      .filter(({ key }) => key >= startKey)
      .map(({ set }) => set);
    const setsXml = listed
      .slice(0, maxItems)
      .map(
        (set) =>
          `<ResourceRecordSet><Name>${set.name}</Name><Type>${set.type}</Type><TTL>${set.ttl}</TTL><ResourceRecords>${set.values.map((value) => `<ResourceRecord><Value>${escapeXml(value)}</Value></ResourceRecord>`).join('')}</ResourceRecords></ResourceRecordSet>`,
      )
      .join('');
    return `<ListResourceRecordSetsResponse xmlns="${NS}"><ResourceRecordSets>${setsXml}</ResourceRecordSets><IsTruncated>${listed.length > maxItems}</IsTruncated><MaxItems>${maxItems}</MaxItems></ListResourceRecordSetsResponse>`;
  }

  #changeRecordSets(sets: FakeRecordSet[], body: string): string {
    const action = field(body, 'Action');
    const set: FakeRecordSet = {
      name: field(body, 'Name'),
      type: field(body, 'Type'),
      ttl: Number(field(body, 'TTL')),
      values: [...body.matchAll(/<Value>(.*?)<\/Value>/g)].map((match) => unescapeXml(match[1] ?? '')),
    };
    const index = sets.findIndex((held) => held.name === set.name && held.type === set.type);
    if (action === 'UPSERT') {
      if (index >= 0) sets.splice(index, 1, set);
      else sets.push(set);
    } else if (action === 'DELETE') {
      if (index < 0 || JSON.stringify(sets[index]) !== JSON.stringify(set)) {
        throw new AwsFault(400, 'InvalidChangeBatch', `Tried to delete resource record set [name='${set.name}', type='${set.type}'] but the values provided do not match the current values`);
      }
      sets.splice(index, 1);
    } else {
      throw new AwsFault(400, 'InvalidInput', `unsupported action ${action}`);
    }
    this.#changes += 1;
    const id = `C${this.#changes}`;
    this.#polls.set(id, 0);
    return `<ChangeResourceRecordSetsResponse xmlns="${NS}"><ChangeInfo><Id>/change/${id}</Id><Status>PENDING</Status><SubmittedAt>2026-01-01T00:00:00.000Z</SubmittedAt></ChangeInfo></ChangeResourceRecordSetsResponse>`;
  }

  #getChange(id: string): string {
    const polls = this.#polls.get(id);
    if (polls === undefined) throw new AwsFault(404, 'NoSuchChange', `A change with the specified change ID does not exist: ${id}`);
    this.#polls.set(id, polls + 1);
    const status = polls < this.pendingPolls ? 'PENDING' : 'INSYNC';
    return `<GetChangeResponse xmlns="${NS}"><ChangeInfo><Id>/change/${id}</Id><Status>${status}</Status><SubmittedAt>2026-01-01T00:00:00.000Z</SubmittedAt></ChangeInfo></GetChangeResponse>`;
  }
}

function reversedLabels(name: string): string {
  return name.replace(/\.$/, '').toLowerCase().split('.').reverse().join('.');
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function field(xml: string, tag: string): string {
  return unescapeXml(new RegExp(`<${tag}>(.*?)</${tag}>`).exec(xml)?.[1] ?? '');
}

function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function unescapeXml(text: string): string {
  return text
    .replace(/&quot;/g, '"')
    .replace(/&apos;/g, "'")
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&#x([0-9a-f]+);/gi, (_, hex: string) => String.fromCodePoint(parseInt(hex, 16)))
    .replace(/&#([0-9]+);/g, (_, decimal: string) => String.fromCodePoint(Number(decimal)))
    .replace(/&amp;/g, '&');
}

const ZONES: FakeZone[] = [
  { id: 'ZEXAMPLE', name: 'example.com.' },
  { id: 'ZSUB', name: 'sub.example.com.' },
  { id: 'ZSUBPRIVATE', name: 'sub.example.com.', privateZone: true },
  { id: 'ZOTHER', name: 'other.test.' },
];

/** A fake Route 53 and a provider wired to it through the real SDK client; both torn down after the test. */
async function setUp(
  t: { after: (fn: () => Promise<void>) => void },
  options: Partial<Omit<Route53DnsProviderOptions, 'client'>> = {},
): Promise<{ fake: FakeRoute53; provider: Route53DnsProvider }> {
  const fake = new FakeRoute53(ZONES);
  const endpoint = await fake.listen();
  const client = new Route53Client({
    endpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: 'AKIDCERTPLANETEST', secretAccessKey: 'not-a-real-secret' },
    maxAttempts: 1,
  });
  t.after(async () => {
    client.destroy();
    await fake.close();
  });
  return { fake, provider: new Route53DnsProvider({ client, pollIntervalMs: 5, propagationTimeoutMs: 2_000, ...options }) };
}

test('present upserts a quoted TXT value with a 60 s TTL in the zone that holds the name, signed with SigV4', async (t) => {
  const { fake, provider } = await setUp(t);
  await provider.present('_acme-challenge.www.example.com', 'token-one');

  const [body] = fake.changeBodies();
  assert.ok(body, 'a ChangeResourceRecordSets request was sent');
  assert.match(body, /<Action>UPSERT<\/Action>/);
  assert.match(body, /<Name>_acme-challenge\.www\.example\.com\.<\/Name>/);
  assert.match(body, /<Type>TXT<\/Type>/);
  assert.match(body, /<TTL>60<\/TTL>/);
  assert.match(body, /<Value>(&quot;|")token-one(&quot;|")<\/Value>/, 'the value travels as a quoted character-string');
  assert.deepEqual(fake.txt('ZEXAMPLE', '_acme-challenge.www.example.com.'), ['"token-one"']);
  const post = fake.requests.find((request) => request.method === 'POST');
  assert.match(post?.path ?? '', /^\/2013-04-01\/hostedzone\/ZEXAMPLE\/rrset\/?$/);
  for (const request of fake.requests) {
    assert.match(String(request.headers.authorization), /^AWS4-HMAC-SHA256 Credential=AKIDCERTPLANETEST\/\d{8}\/us-east-1\/route53\/aws4_request, SignedHeaders=[^,]+, Signature=[0-9a-f]{64}$/);
    assert.ok(request.headers['x-amz-date'], 'SigV4 requests carry x-amz-date');
  }
});

test('present reads the existing values with a one-item listing from the record name', async (t) => {
  const { fake, provider } = await setUp(t);
  await provider.present('_acme-challenge.www.example.com', 'token-one');

  const read = fake.requests.find((request) => request.method === 'GET' && request.path.endsWith('/rrset'));
  assert.equal(read?.query.get('name'), '_acme-challenge.www.example.com.');
  assert.equal(read?.query.get('type'), 'TXT');
  assert.equal(read?.query.get('maxitems'), '1');
});

test('present waits until the change is INSYNC, polling GetChange past PENDING', async (t) => {
  const { fake, provider } = await setUp(t);
  fake.pendingPolls = 3;
  await provider.present('_acme-challenge.example.com', 'token-one');

  const polls = fake.requests.filter((request) => request.path === '/2013-04-01/change/C1');
  assert.equal(polls.length, 4, 'three PENDING answers, then INSYNC');
});

test('present gives DNS_ROUTE53_TIMEOUT when the change never reaches INSYNC', async (t) => {
  const { fake, provider } = await setUp(t, { propagationTimeoutMs: 60 });
  fake.pendingPolls = Number.POSITIVE_INFINITY;
  await assert.rejects(provider.present('_acme-challenge.example.com', 'token-one'), (error) => {
    assert.ok(hasCode(error, ErrorCode.DNS_ROUTE53_TIMEOUT));
    assert.equal(error.details.changeId, '/change/C1');
    return true;
  });
});

test('a signal (shutdown, a lost lease) ends the wait for INSYNC at once, with its reason, and leaves the record for cleanUp', { timeout: 20_000 }, async (t) => {
  const { fake, provider } = await setUp(t, { pollIntervalMs: 10_000, propagationTimeoutMs: 600_000 });
  fake.pendingPolls = Number.POSITIVE_INFINITY;
  const stop = new AbortController();
  const reason = new Error('shutting down');
  const started = Date.now();
  const presenting = provider.present('_acme-challenge.example.com', 'token-one', stop.signal);
  setTimeout(() => stop.abort(reason), 100);
  await assert.rejects(presenting, (error) => error === reason);
  assert.ok(Date.now() - started < 5_000, `ended ${Date.now() - started} ms after it began, not at the next poll (10 s) or the timeout`);
  assert.deepEqual(fake.txt('ZEXAMPLE', '_acme-challenge.example.com.'), ['"token-one"']);
  await assert.rejects(provider.present('_acme-challenge.example.com', 'token-two', stop.signal), (error) => error === reason, 'an aborted signal starts nothing');
  assert.deepEqual(fake.txt('ZEXAMPLE', '_acme-challenge.example.com.'), ['"token-one"']);
});

test('two values at one name coexist, and concurrent presents do not drop either', async (t) => {
  const { fake, provider } = await setUp(t);
  await Promise.all([
    provider.present('_acme-challenge.example.com', 'wildcard-token'),
    provider.present('_acme-challenge.example.com', 'base-token'),
  ]);

  assert.deepEqual(fake.txt('ZEXAMPLE', '_acme-challenge.example.com.')?.sort(), ['"base-token"', '"wildcard-token"']);
  const last = fake.changeBodies().at(-1) ?? '';
  assert.equal([...last.matchAll(/<Value>/g)].length, 2, 'the second UPSERT carries both values');
});

test('present of a value already there sends no change', async (t) => {
  const { fake, provider } = await setUp(t);
  await provider.present('_acme-challenge.example.com', 'token-one');
  await provider.present('_acme-challenge.example.com', 'token-one');

  assert.equal(fake.changeBodies().length, 1);
  assert.deepEqual(fake.txt('ZEXAMPLE', '_acme-challenge.example.com.'), ['"token-one"']);
});

test('cleanUp of one value upserts the others, and cleanUp of the last one deletes the record set', async (t) => {
  const { fake, provider } = await setUp(t);
  await provider.present('_acme-challenge.example.com', 'wildcard-token');
  await provider.present('_acme-challenge.example.com', 'base-token');

  await provider.cleanUp('_acme-challenge.example.com', 'wildcard-token');
  assert.deepEqual(fake.txt('ZEXAMPLE', '_acme-challenge.example.com.'), ['"base-token"']);
  assert.match(fake.changeBodies().at(-1) ?? '', /<Action>UPSERT<\/Action>/);

  await provider.cleanUp('_acme-challenge.example.com', 'base-token');
  assert.equal(fake.txt('ZEXAMPLE', '_acme-challenge.example.com.'), undefined);
  const deletion = fake.changeBodies().at(-1) ?? '';
  assert.match(deletion, /<Action>DELETE<\/Action>/);
  assert.match(deletion, /<TTL>60<\/TTL>/);
});

test('cleanUp of a value that is already gone sends no change', async (t) => {
  const { fake, provider } = await setUp(t);
  await provider.present('_acme-challenge.example.com', 'token-one');
  await provider.cleanUp('_acme-challenge.example.com', 'token-one');
  await provider.cleanUp('_acme-challenge.example.com', 'token-one');
  await provider.cleanUp('_acme-challenge.never.example.com', 'token-two');

  assert.equal(fake.changeBodies().length, 2);
});

test('the zone lookup picks the longest public zone that contains the name', async (t) => {
  const { fake, provider } = await setUp(t);
  await provider.present('_acme-challenge.www.sub.example.com', 'token-one');

  assert.deepEqual(fake.txt('ZSUB', '_acme-challenge.www.sub.example.com.'), ['"token-one"']);
  assert.equal(fake.txt('ZEXAMPLE', '_acme-challenge.www.sub.example.com.'), undefined);
  assert.equal(fake.txt('ZSUBPRIVATE', '_acme-challenge.www.sub.example.com.'), undefined);
  const lookups = fake.requests.filter((request) => request.path === '/2013-04-01/hostedzonesbyname');
  assert.ok(lookups.length > 0);
  assert.ok(lookups.every((request) => request.query.get('dnsname')?.endsWith('sub.example.com.')), 'stopped at the subdomain zone');
});

test('a configured hosted zone id skips the lookup', async (t) => {
  const { fake, provider } = await setUp(t, { hostedZoneId: 'ZOTHER' });
  await provider.present('_acme-challenge.example.com', 'token-one');

  assert.deepEqual(fake.txt('ZOTHER', '_acme-challenge.example.com.'), ['"token-one"']);
  assert.equal(fake.requests.filter((request) => request.path === '/2013-04-01/hostedzonesbyname').length, 0);
});

test('a name in no hosted zone gives DNS_ROUTE53_NO_ZONE', async (t) => {
  const { fake, provider } = await setUp(t);
  await assert.rejects(provider.present('_acme-challenge.example.org', 'token-one'), (error) => hasCode(error, ErrorCode.DNS_ROUTE53_NO_ZONE));
  assert.equal(fake.changeBodies().length, 0);
});

test('an AWS error becomes DNS_ROUTE53 carrying the AWS error name', async (t) => {
  const { provider } = await setUp(t, { hostedZoneId: 'ZMISSING' });
  await assert.rejects(provider.present('_acme-challenge.example.com', 'token-one'), (error) => {
    assert.ok(hasCode(error, ErrorCode.DNS_ROUTE53));
    assert.equal(error.details.awsErrorName, 'NoSuchHostedZone');
    assert.match(error.message, /NoSuchHostedZone/);
    return true;
  });
});
