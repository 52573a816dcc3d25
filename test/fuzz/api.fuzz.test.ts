/**
 * Property-based fuzzing of the REST API, in process (app.inject) against a plane on
 * real parts (PGlite store, agent CA, coordinator, campaigns).
 *
 * What is proven, for every generated request (8,700 of them, random each run; fast-check
 * prints the seed and the shrunk counterexample when a property fails):
 * - the answer is 2xx or 4xx, never 5xx, and every 4xx body is JSON with a non-empty
 *   string `code` and `message` (the documented error shape), every 2xx body is JSON;
 * - where the outcome is decidable from the documented contract (README "API"), it is
 *   the documented one: the exact status for instance bodies (the CreateInstance schema
 *   decides 201 or 400), enrollment only with a fresh token, dry-run match counts, page
 *   contents for issued cursors, 400 for malformed ids and 404 for unknown ones;
 * - after all of it the process is alive: /healthz and /readyz answer 200 and no
 *   unhandled rejection or uncaught exception was seen.
 * And that valid instance registrations succeed (201) and read back with the same,
 * normalised (lower-cased, de-duplicated) hostnames.
 *
 * Why: the API is the plane's attack surface towards operators' scripts and the
 * internet; a 5xx on bad input is a bug (a leak of internals, a crash path, an error an
 * on-call person cannot act on), and a request that is refused must say why.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { z } from 'zod';
import { BODY_LIMIT_BYTES } from '../../src/api/app.js';
import { CreateInstance, EnrollRequest, ListQuery, MAX_PAGE_SIZE } from '../../src/api/schemas.js';
import { normalizeSpkiPin } from '../../src/chain/index.js';
import { Selector } from '../../src/jobs/campaigns.js';
import { startTestPlane, type TestPlane } from '../support/plane.js';
import {
  API_UUID,
  anyId,
  applyMutations,
  badHostname,
  clashingHostname,
  csrMaterial,
  csrText,
  encodedBody,
  holdsPrivateKey,
  hostileString,
  junkJson,
  lineInjection,
  mutations,
  oversizedString,
  parsedJson,
  pemPrivateKey,
  secretLines,
  sometimesEscaped,
  validHostname,
  type CsrMaterial,
  type EncodedBody,
} from './arbitraries.js';
import { ErrorCode } from '../../src/error-catalogue.js';

/** Runs per property: fixed, so the totals are the same every run (FUZZ_SCALE=10 for a longer soak). */
const SCALE = Number(process.env.FUZZ_SCALE ?? 1);
const RUNS = {
  createHostile: 2500 * SCALE,
  createValid: 500 * SCALE,
  enroll: 1500 * SCALE,
  reissue: 1500 * SCALE,
  list: 1000 * SCALE,
  paths: 1500 * SCALE,
  cancel: 200 * SCALE,
} as const;

interface Reply {
  readonly status: number;
  readonly text: string;
  readonly json: any;
}

/** The README's rule for text a person typed (names, clusters, reasons): trimmed, not empty, bounded, no control characters. */
const TextModel = (max: number) => z.string().trim().min(1).max(max).regex(/^[^\p{Cc}]*$/u);
const hasControl = (s: string) => /\p{Cc}/u.test(s);

/** The README's reissue request, as a model of what must be accepted. */
const ReissueModel = z.strictObject({
  selector: Selector,
  reason: TextModel(1000),
  dryRun: z.boolean().default(false),
  rotateKey: z.boolean().default(true),
});
const ActorModel = z.string().trim().min(1).max(200).optional();
/** Fastify hands an absent body to the schema as null, so the JSON body `null` is the same request as no body. */
const CancelModel = z.strictObject({ reason: TextModel(1000).optional() }).nullable();

/** What the store gives back for a string: ill-formed UTF-16 (a lone surrogate) becomes U+FFFD on the way through UTF-8. */
const wellFormed = (s: string) => s.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '\ufffd');
const tooBig = (body: EncodedBody) => body.payload !== undefined && Buffer.byteLength(body.payload) > BODY_LIMIT_BYTES;
const jsonModes = new Set(['json', 'json-charset', 'duplicate-keys']);
/** A JSON body the schema refuses: VALIDATION_FAILED, or REQUEST_BODY_INVALID_JSON when it carries prototype-poisoning keys (refused while parsing). */
const invalidBodyCodes = [ErrorCode.VALIDATION_FAILED, ErrorCode.REQUEST_BODY_INVALID_JSON];
/** Keys Fastify refuses while parsing, before any hook runs (`__proto__`, `constructor` with a `prototype`). */
const poisoned = (value: unknown): boolean =>
  Array.isArray(value) ? value.some(poisoned) : value !== null && typeof value === 'object' ? Object.entries(value).some(([k, v]) => k === '__proto__' || k === 'constructor' || poisoned(v)) : false;
/** The README's rule: private-key material anywhere in a body, query or actor header is refused before any schema (after parsing). */
const assertKeyRefused = (reply: Reply, parsed: unknown) => {
  assert.equal(reply.status, 400, reply.text.slice(0, 300));
  const codes = poisoned(parsed) ? [ErrorCode.PRIVATE_KEY_REFUSED, ErrorCode.REQUEST_BODY_INVALID_JSON] : [ErrorCode.PRIVATE_KEY_REFUSED];
  assert.ok(codes.includes(reply.json.code), reply.text.slice(0, 300));
};

/**
 * The README's ownership rule as a model of one plane's registrations: a (lower-cased) name
 * belongs to one instance, and a wildcard to the same instance as every name it covers.
 */
class HeldNames {
  readonly #names = new Set<string>();
  readonly #parentsOfNames = new Set<string>();
  /** Whether registering `names` together collides with what is held. */
  taken(names: readonly string[]): boolean {
    const parent = (name: string) => name.slice(name.indexOf('.') + 1);
    return names.some((name) => this.#names.has(name) || (name.startsWith('*.') ? this.#parentsOfNames.has(parent(name)) : this.#names.has(`*.${parent(name)}`)));
  }
  hold(names: readonly string[]): void {
    for (const name of names) {
      this.#names.add(name);
      if (!name.startsWith('*.')) this.#parentsOfNames.add(name.slice(name.indexOf('.') + 1));
    }
  }
}

/**
 * FUZZ_COLLECT=1 lists every 5xx met (deduplicated by route and answer) and fails once at
 * the end, instead of stopping each property at its first 5xx: for whoever fixes them.
 */
const COLLECT = process.env.FUZZ_COLLECT === '1';
class Collected extends Error {}
const collected = new Map<string, string>();
function guarded<A extends unknown[]>(predicate: (...args: A) => Promise<unknown>): (...args: A) => Promise<void> {
  return async (...args) => {
    try {
      await predicate(...args);
    } catch (error) {
      if (!(error instanceof Collected)) throw error;
    }
  };
}

describe('API fuzz: bad input anywhere gets a clear 4xx, never a 5xx', async () => {
  let plane: TestPlane;
  /** A second plane with a small fixed fleet, for reissues and listing, whose answers depend on the whole fleet. */
  let fleet: TestPlane;
  let material: CsrMaterial;
  const known = { instances: [] as string[], certificates: [] as string[], campaigns: [] as string[] };
  /** The names registered on `plane`, so the oracle knows which registrations must get 409. */
  const held = new HeldNames();
  const fleetInstances: { id: string; cluster: string | null }[] = [];
  const requests = { count: 0 };
  const crashes: unknown[] = [];
  const onCrash = (error: unknown) => crashes.push(error);

  before(async () => {
    process.on('unhandledRejection', onCrash);
    process.on('uncaughtException', onCrash);
    [plane, fleet] = await Promise.all([startTestPlane(), startTestPlane()]);
    material = await csrMaterial(plane.ca.certificatePem);
    for (const name of ['known1', 'known2', 'known3']) {
      const created = await plane.app.inject({ method: 'POST', url: '/v1/instances', payload: { name, hostnames: [`${name}.example.com`] } });
      known.instances.push(created.json().id);
      held.hold([`${name}.example.com`]);
    }
    const issued = await plane.app.inject({ method: 'POST', url: `/v1/instances/${known.instances[0]}/issue` });
    known.certificates.push(issued.json().certificateId);
    const campaign = await plane.app.inject({ method: 'POST', url: '/v1/reissues', payload: { selector: { instanceIds: [known.instances[1]] }, reason: 'fuzz fixture' } });
    assert.equal(campaign.statusCode, 201, campaign.body);
    known.campaigns.push(campaign.json().id);
    for (const [i, cluster] of ['blue', 'blue', 'blue', 'green', 'green', null, null].entries()) {
      const created = await fleet.app.inject({ method: 'POST', url: '/v1/instances', payload: { name: `fleet${i}`, hostnames: [`fleet${i}.example.com`], ...(cluster ? { cluster } : {}) } });
      fleetInstances.push({ id: created.json().id, cluster });
    }
  });

  after(async () => {
    process.off('unhandledRejection', onCrash);
    process.off('uncaughtException', onCrash);
    await Promise.all([plane?.close(), fleet?.close()]);
  });

  /** Sends one request and checks the envelope every answer must have. */
  const send = async (on: TestPlane, method: string, url: string, body?: EncodedBody, headers: Record<string, string> = {}, remoteAddress?: string): Promise<Reply> => {
    requests.count += 1;
    const response = await on.app.inject({
      method: method as 'GET',
      url,
      ...(remoteAddress ? { remoteAddress } : {}),
      headers: { ...headers, ...(body?.contentType !== undefined ? { 'content-type': body.contentType } : {}) },
      ...(body?.payload !== undefined ? { payload: body.payload } : {}),
    });
    const what = `${method} ${url.slice(0, 200)} (${body?.mode ?? 'no body'}) -> ${response.statusCode} ${response.body.slice(0, 300)}`;
    if (response.statusCode >= 500 && COLLECT) {
      collected.set(`${method} ${url.split('?')[0]!.replace(/[0-9a-fA-F-]{36}/g, ':id')} -> ${response.statusCode} ${response.body.replace(/"[^"]*\\"[^"]*\\"[^"]*"/g, '').replace(/[0-9]+/g, '#').slice(0, 160)}`, `${what} <- ${body?.payload?.slice(0, 400) ?? ''}`);
      throw new Collected();
    }
    assert.ok(response.statusCode < 500, `5xx: ${what}`);
    assert.ok((response.statusCode >= 200 && response.statusCode < 300) || (response.statusCode >= 400 && response.statusCode < 500), `neither 2xx nor 4xx: ${what}`);
    let json: any;
    try {
      json = JSON.parse(response.body);
    } catch {
      assert.fail(`body is not JSON: ${what}`);
    }
    if (response.statusCode >= 400) {
      assert.equal(typeof json?.code, 'string', `4xx without a string code: ${what}`);
      assert.equal(typeof json?.message, 'string', `4xx without a string message: ${what}`);
      assert.ok(json.code.length > 0 && json.message.length > 0, `4xx with an empty code or message: ${what}`);
      // The framework's own codes are not the API's: every refusal speaks certplane's codes.
      assert.match(json.code, /^(?!FST_)[A-Z][A-Z0-9_]+$/, `4xx with a code that is not certplane's: ${what}`);
      if (response.statusCode === 413) assert.equal(json.code, ErrorCode.REQUEST_BODY_TOO_LARGE, what);
      if (response.statusCode === 415) assert.equal(json.code, ErrorCode.REQUEST_MEDIA_TYPE_UNSUPPORTED, what);
    }
    return { status: response.statusCode, text: response.body, json };
  };

  // ------------------------------------------------------------------------------------
  // POST /v1/instances

  const instanceFields: Record<string, fc.Arbitrary<unknown>> = {
    name: fc.oneof({ arbitrary: fc.string({ minLength: 1, maxLength: 30 }), weight: 80 }, { arbitrary: hostileString, weight: 80 }, { arbitrary: junkJson, weight: 20 }, { arbitrary: oversizedString, weight: 1 }, { arbitrary: pemPrivateKey, weight: 10 }, { arbitrary: lineInjection, weight: 10 }),
    hostnames: fc.oneof(
      { arbitrary: fc.array(fc.oneof(validHostname, badHostname), { minLength: 1, maxLength: 5 }), weight: 6 },
      { arbitrary: fc.array(validHostname, { maxLength: 4 }), weight: 2 },
      { arbitrary: validHostname.map((h) => [h, h.toUpperCase(), h.toLowerCase()]), weight: 1 },
      { arbitrary: fc.array(clashingHostname, { minLength: 1, maxLength: 3 }), weight: 2 },
      { arbitrary: fc.integer({ min: 100, max: 140 }).map((n) => Array.from({ length: n }, (_, i) => `h${i}.example.com`)), weight: 1 },
      { arbitrary: fc.array(junkJson, { maxLength: 3 }), weight: 1 },
      { arbitrary: junkJson, weight: 1 },
    ),
    cluster: fc.oneof(fc.constantFrom('c1', 'prod-eu'), hostileString, junkJson, pemPrivateKey, lineInjection),
    keyAlgorithm: fc.oneof(fc.constantFrom('ecdsa-p256', 'rsa-2048', 'rsa-3072', 'ECDSA-P256', 'rsa-4096', 'dsa', 'ed25519', ''), junkJson),
    profile: fc.oneof(fc.constantFrom('tlsserver', 'shortlived', 'x'.repeat(65)), hostileString, junkJson),
  };
  const instanceBody = fc
    .tuple(
      fc.record({ name: instanceFields.name!, hostnames: instanceFields.hostnames!, cluster: instanceFields.cluster!, keyAlgorithm: instanceFields.keyAlgorithm!, profile: instanceFields.profile! }, { requiredKeys: ['name', 'hostnames'] }),
      mutations(Object.keys(instanceFields), (k) => instanceFields[k]!, 2),
    )
    .map(([body, edits]) => applyMutations(body, edits))
    .chain((value) => encodedBody(value, Object.keys(instanceFields)))
    .chain(sometimesEscaped);

  test(`POST /v1/instances: ${RUNS.createHostile} hostile and valid-ish bodies get exactly the status the schema and name ownership decide (201, 400, 409, 413, 415), never 5xx`, async () => {
    await fc.assert(
      fc.asyncProperty(instanceBody, guarded(async (body) => {
        const reply = await send(plane, 'POST', '/v1/instances', body);
        if (tooBig(body) && body.mode !== 'wrong-content-type') return assert.equal(reply.status, 413);
        if (jsonModes.has(body.mode)) {
          const parsed = parsedJson(body);
          if (parsed.ok && holdsPrivateKey(parsed.value)) return assertKeyRefused(reply, parsed.value);
          const schema = parsed.ok ? CreateInstance.safeParse(parsed.value) : undefined;
          const names = schema?.success ? [...new Set(schema.data.hostnames)] : [];
          const expected = !schema?.success ? 400 : held.taken(names) ? 409 : 201;
          assert.equal(reply.status, expected, `schema and ownership say ${expected}; got ${reply.status} ${reply.text.slice(0, 300)}`);
          if (expected === 400) assert.ok(invalidBodyCodes.includes(reply.json.code), reply.text);
          if (expected === 409) assert.equal(reply.json.code, ErrorCode.INSTANCE_HOSTNAME_TAKEN, reply.text);
          if (expected === 201) {
            assert.match(reply.json.enrollmentToken, /^cpe_/);
            held.hold(names);
          }
        } else if (body.mode === 'wrong-content-type') {
          assert.ok([400, 413, 415].includes(reply.status), `${reply.status} for content-type ${body.contentType}`);
        } else {
          assert.equal(reply.status, 400, `${body.mode} body got ${reply.status}`);
        }
      })),
      { numRuns: RUNS.createHostile, includeErrorInReport: true },
    );
  });

  const validInstance = fc.record(
    {
      name: fc.string({ unit: 'binary', minLength: 1, maxLength: 200 }).filter((s) => s.trim().length >= 1 && s.trim().length <= 200 && !hasControl(s.trim())),
      hostnames: fc
        .array(fc.oneof({ arbitrary: validHostname, weight: 4 }, { arbitrary: clashingHostname, weight: 1 }), { minLength: 1, maxLength: 8 })
        .chain((hs) => fc.shuffledSubarray([...hs, ...hs.map((h) => h.toUpperCase())], { minLength: hs.length })),
      cluster: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 50 }).filter((s) => s.trim().length > 0 && !hasControl(s.trim())),
      keyAlgorithm: fc.constantFrom('ecdsa-p256', 'rsa-2048', 'rsa-3072'),
      profile: fc.stringMatching(/^[a-z][a-z0-9-]{0,30}$/),
    },
    { requiredKeys: ['name', 'hostnames'] },
  );

  test(`POST /v1/instances: ${RUNS.createValid} valid registrations succeed (201) and read back with the same normalised hostnames, unless another instance holds a name (409)`, async () => {
    await fc.assert(
      fc.asyncProperty(validInstance, guarded(async (body) => {
        const names = [...new Set(body.hostnames.map((h) => h.toLowerCase()))];
        const created = await send(plane, 'POST', '/v1/instances', { mode: 'json', payload: JSON.stringify(body), contentType: 'application/json' });
        if (held.taken(names)) {
          assert.equal(created.status, 409, created.text);
          return assert.equal(created.json.code, ErrorCode.INSTANCE_HOSTNAME_TAKEN);
        }
        assert.equal(created.status, 201, created.text);
        held.hold(names);
        assert.match(created.json.id, API_UUID);
        const view = await send(plane, 'GET', `/v1/instances/${created.json.id}`);
        assert.equal(view.status, 200);
        assert.deepEqual(view.json.hostnames, names);
        assert.equal(view.json.name, wellFormed(body.name.trim()));
        assert.equal(view.json.cluster, body.cluster === undefined ? null : wellFormed(body.cluster.trim()));
        assert.equal(view.json.keyAlgorithm, body.keyAlgorithm ?? 'ecdsa-p256');
        assert.equal(view.json.profile, body.profile ?? null);
        assert.equal(view.json.agent.connected, false);
        assert.equal(view.json.certificate, null);
      })),
      { numRuns: RUNS.createValid, includeErrorInReport: true },
    );
  });

  // ------------------------------------------------------------------------------------
  // POST /v1/agents/enroll

  test(`POST /v1/agents/enroll: ${RUNS.enroll} tokens and CSRs (real, other keys, corrupted signatures and DER, private keys, PEM-looking garbage): 201 only with a fresh token, never 5xx, keys never echoed`, async () => {
    const tokenInstance = known.instances[2]!;
    const used: string[] = [];
    let enrollments = 0;
    type TokenChoice = { kind: 'fresh' } | { kind: 'used' } | { kind: 'given'; value: unknown };
    const token: fc.Arbitrary<TokenChoice> = fc.oneof(
      { arbitrary: fc.constant<TokenChoice>({ kind: 'fresh' }), weight: 4 },
      { arbitrary: fc.constant<TokenChoice>({ kind: 'used' }), weight: 1 },
      { arbitrary: fc.base64String({ minLength: 40, maxLength: 48 }).map((b): TokenChoice => ({ kind: 'given', value: `cpe_${b.replace(/[+/=]/g, 'A')}` })), weight: 2 },
      { arbitrary: fc.oneof(hostileString, junkJson, fc.integer({ min: 201, max: 300 }).map((n) => 'c'.repeat(n))).map((value): TokenChoice => ({ kind: 'given', value })), weight: 2 },
    );
    const keys = ['token', 'csrPem'];
    const request = fc.record({ token, csr: csrText(material), edits: fc.oneof({ arbitrary: fc.constant([]), weight: 3 }, { arbitrary: mutations(keys, () => junkJson, 2), weight: 1 }), encode: fc.nat() });
    const supported = new Set(material.supported);
    await fc.assert(
      fc.asyncProperty(request, guarded(async ({ token: choice, csr, edits }) => {
        let tokenValue: unknown;
        if (choice.kind === 'fresh') {
          const minted = await plane.app.inject({ method: 'POST', url: `/v1/instances/${tokenInstance}/enrollment-token` });
          assert.equal(minted.statusCode, 201);
          tokenValue = minted.json().enrollmentToken;
        } else if (choice.kind === 'used') tokenValue = used.at(-1) ?? 'cpe_never_issued';
        else tokenValue = choice.value;
        const value = applyMutations({ token: tokenValue, csrPem: csr.pem }, edits);
        const body: EncodedBody = { mode: 'json', payload: JSON.stringify(value), contentType: 'application/json' };
        // Each request from its own address: failed enrollments are rate-limited per address, which is not what this property is about.
        enrollments += 1;
        const reply = await send(plane, 'POST', '/v1/agents/enroll', body, {}, `10.${(enrollments >> 16) & 255}.${(enrollments >> 8) & 255}.${enrollments & 255}`);
        if (csr.privateKey) for (const line of secretLines(csr.privateKey)) assert.ok(!reply.text.includes(line), 'the response echoes the private key');
        if (tooBig(body)) return assert.equal(reply.status, 413);
        if (holdsPrivateKey(JSON.parse(body.payload!))) return assertKeyRefused(reply, JSON.parse(body.payload!));
        const parsed = EnrollRequest.safeParse(JSON.parse(body.payload!));
        if (!parsed.success) return assert.ok(reply.status === 400 && invalidBodyCodes.includes(reply.json.code), reply.text.slice(0, 300));
        const fresh = choice.kind === 'fresh' && parsed.data.token === tokenValue;
        if (reply.status === 201) {
          assert.ok(fresh, `enrolled with a token that was not fresh: ${String(parsed.data.token).slice(0, 60)}`);
          assert.equal(reply.json.instanceId, tokenInstance);
          assert.match(reply.json.certificatePem, /-----BEGIN CERTIFICATE-----/);
          used.push(parsed.data.token);
        }
        if (reply.status === 401) assert.equal(reply.json.code, ErrorCode.ENROLLMENT_TOKEN_INVALID);
        if (supported.has(parsed.data.csrPem)) assert.equal(reply.status, fresh ? 201 : 401, reply.text.slice(0, 300));
        if (csr.kind === 'private-key' || csr.kind === 'certificate' || csr.kind === 'garbage') assert.ok(reply.status >= 400, `${csr.kind} enrolled`);
      })),
      { numRuns: RUNS.enroll, includeErrorInReport: true },
    );
  });

  // ------------------------------------------------------------------------------------
  // POST /v1/reissues (on the fixed fleet)

  test(`POST /v1/reissues: ${RUNS.reissue} selectors of every shape, reasons, dryRun/rotateKey of wrong types, actor headers: the documented outcome, never 5xx`, async () => {
    const ids = fleetInstances.map((i) => i.id);
    const selectorArb: fc.Arbitrary<unknown> = fc.oneof(
      { arbitrary: fc.array(fc.oneof(fc.constantFrom(...ids), fc.constantFrom(...ids).map((id) => id.toUpperCase()), fc.uuid(), hostileString), { maxLength: 5 }).map((instanceIds) => ({ instanceIds })), weight: 30 },
      { arbitrary: fc.shuffledSubarray(ids, { minLength: 1 }).map((instanceIds) => ({ instanceIds: [...instanceIds, ...instanceIds] })), weight: 10 },
      { arbitrary: fc.integer({ min: 10_001, max: 10_100 }).map((n) => ({ instanceIds: Array.from({ length: n }, () => ids[0]!) })), weight: 1 },
      { arbitrary: fc.oneof(fc.constantFrom('blue', 'green', 'red', 'BLUE', ' blue'), hostileString, pemPrivateKey, lineInjection).map((cluster) => ({ cluster })), weight: 30 },
      {
        arbitrary: fc
          .oneof(
            fc.constantFrom('ISRG Root X1', 'R11', 'sha256:', 'SHA256:zz', 'sha256:' + 'ab'.repeat(32), 'sha256:' + Buffer.alloc(32, 7).toString('base64')),
            fc.string({ unit: fc.constantFrom(...'0123456789abcdefABCDEF'), minLength: 60, maxLength: 66 }).map((h) => `sha256:${h}`),
            fc.base64String({ maxLength: 50 }).map((b) => `Sha256:${b}`),
            hostileString,
          )
          .map((chainIncludes) => ({ chainIncludes })),
        weight: 3,
      },
      { arbitrary: fc.oneof(fc.constant(true), junkJson).map((all) => ({ all })), weight: 20 },
      { arbitrary: fc.constantFrom({}, { all: true, cluster: 'blue' }, { instanceIds: [] }, { cluster: '' }, { chainIncludes: '' }), weight: 10 },
      { arbitrary: junkJson, weight: 10 },
    );
    const fields: Record<string, fc.Arbitrary<unknown>> = {
      selector: selectorArb,
      reason: fc.oneof(
        { arbitrary: fc.string({ minLength: 1, maxLength: 40 }), weight: 4 },
        { arbitrary: hostileString, weight: 3 },
        { arbitrary: fc.integer({ min: 990, max: 1100 }).map((n) => 'r'.repeat(n)), weight: 1 },
        { arbitrary: junkJson, weight: 1 },
        { arbitrary: pemPrivateKey, weight: 2 },
        { arbitrary: lineInjection, weight: 1 },
      ),
      dryRun: fc.oneof({ arbitrary: fc.boolean(), weight: 4 }, { arbitrary: junkJson, weight: 1 }),
      rotateKey: fc.oneof({ arbitrary: fc.constant(true), weight: 4 }, { arbitrary: fc.constant(false), weight: 1 }, { arbitrary: junkJson, weight: 1 }),
    };
    const request = fc.record({
      body: fc
        .tuple(fc.record(fields, { requiredKeys: ['selector'] }), mutations(Object.keys(fields), (k) => fields[k]!, 2))
        .map(([b, edits]) => applyMutations(b, edits))
        .chain((v) => encodedBody(v, Object.keys(fields)))
        .chain(sometimesEscaped),
      actor: fc.option(fc.oneof(fc.string({ maxLength: 30 }), fc.constantFrom('', '   ', 'oncall@example.com'), fc.integer({ min: 195, max: 260 }).map((n) => 'a'.repeat(n)), pemPrivateKey.map((k) => k.replace(/[\r\n\u000b\u0085]/g, ' '))), { nil: undefined }),
    });
    const expectedMatches = (selector: z.infer<typeof Selector>): string[] => {
      if ('all' in selector) return ids;
      if ('cluster' in selector) return fleetInstances.filter((i) => i.cluster === selector.cluster).map((i) => i.id);
      // One instance named twice (in any letter case) is one match.
      if ('instanceIds' in selector) return [...new Set(selector.instanceIds.map((id) => id.toLowerCase()))];
      return [];
    };
    await fc.assert(
      fc.asyncProperty(request, guarded(async ({ body, actor }) => {
        const reply = await send(fleet, 'POST', '/v1/reissues', body, actor === undefined ? {} : { 'x-certplane-actor': actor });
        if (!jsonModes.has(body.mode)) return assert.ok(reply.status >= 400, `${body.mode} body got ${reply.status}`);
        if (tooBig(body)) return assert.equal(reply.status, 413);
        const parsed = parsedJson(body);
        if (parsed.ok && holdsPrivateKey(parsed.value)) return assertKeyRefused(reply, parsed.value);
        if (holdsPrivateKey(actor)) return assertKeyRefused(reply, parsed.ok ? parsed.value : undefined);
        const request = parsed.ok ? ReissueModel.safeParse(parsed.value) : undefined;
        const actorOk = ActorModel.safeParse(actor).success;
        if (!request?.success || !actorOk) return assert.equal(reply.status, 400, `invalid request got ${reply.status} ${reply.text.slice(0, 200)}`);
        const { selector, reason, dryRun, rotateKey } = request.data;
        if (!rotateKey) return assert.deepEqual([reply.status, reply.json.code], [400, ErrorCode.REISSUE_KEY_REUSE_UNSUPPORTED]);
        if ('instanceIds' in selector && selector.instanceIds.some((id) => !ids.includes(id.toLowerCase()))) return assert.deepEqual([reply.status, reply.json.code], [404, ErrorCode.NOT_FOUND]);
        if ('chainIncludes' in selector && selector.chainIncludes.toLowerCase().startsWith('sha256:') && !normalizeSpkiPin(selector.chainIncludes.slice(7))) {
          return assert.deepEqual([reply.status, reply.json.code], [400, ErrorCode.VALIDATION_FAILED]);
        }
        const matches = expectedMatches(selector);
        if (dryRun) {
          assert.equal(reply.status, 200, reply.text.slice(0, 300));
          assert.equal(reply.json.dryRun, true);
          assert.equal(reply.json.matched, matches.length);
          assert.deepEqual([...reply.json.instanceIds].map((id: string) => id.toLowerCase()).sort(), [...matches].sort());
        } else if (matches.length === 0) {
          assert.deepEqual([reply.status, reply.json.code], [400, ErrorCode.REISSUE_NOTHING_MATCHED]);
        } else {
          assert.equal(reply.status, 201, reply.text.slice(0, 300));
          assert.equal(reply.json.counts.matched, matches.length);
          assert.equal(reply.json.reason, wellFormed(reason));
          assert.equal(reply.json.requestedBy, actor === undefined ? 'unauthenticated (development mode)' : wellFormed(actor.trim()));
        }
      })),
      { numRuns: RUNS.reissue, includeErrorInReport: true },
    );
  });

  // ------------------------------------------------------------------------------------
  // GET /v1/instances?limit&cursor (on the fixed fleet)

  test(`GET /v1/instances: ${RUNS.list} query strings (limit and cursor random, repeated, huge, negative, non-numeric, forged cursors): 200 with the right page or 400`, async () => {
    // The fleet's listing order and a cursor issued after each position.
    const all = (await fleet.app.inject({ method: 'GET', url: `/v1/instances?limit=${MAX_PAGE_SIZE}` })).json().items.map((i: { id: string }) => i.id) as string[];
    const issued = new Map<string, number>();
    for (let position = 1; position < all.length; position += 1) {
      const page = (await fleet.app.inject({ method: 'GET', url: `/v1/instances?limit=${position}` })).json();
      issued.set(page.nextCursor, position);
    }
    const issuedCursors = [...issued.keys()];
    const timestamp = fc
      .tuple(fc.integer({ min: 0, max: 99999 }), fc.integer({ min: 0, max: 99 }), fc.integer({ min: 0, max: 99 }), fc.integer({ min: 0, max: 99 }), fc.integer({ min: 0, max: 99 }), fc.integer({ min: 0, max: 99 }), fc.integer({ min: 0, max: 999999 }))
      .map(([y, mo, d, h, mi, s, us]) => `${String(y).padStart(4, '0').slice(-4)}-${String(mo).padStart(2, '0')}-${String(d).padStart(2, '0')}T${String(h).padStart(2, '0')}:${String(mi).padStart(2, '0')}:${String(s).padStart(2, '0')}.${String(us).padStart(6, '0')}Z`);
    const forged = fc.oneof(
      fc.tuple(timestamp, fc.oneof(fc.uuid(), fc.constantFrom(...all))).map((pair) => Buffer.from(JSON.stringify(pair)).toString('base64url')),
      fc.jsonValue({ maxDepth: 2 }).map((v) => Buffer.from(JSON.stringify(v)).toString('base64url')),
      fc.tuple(fc.constantFrom(...issuedCursors), fc.nat()).map(([c, n]) => c.slice(0, n % c.length)),
      fc.constantFrom(...issuedCursors).map((c) => `${c}A`),
      // Another position under an issued cursor's MAC, and an issued position under a flipped MAC.
      fc.tuple(timestamp, fc.constantFrom(...all), fc.constantFrom(...issuedCursors)).map(([at, id, c]) => `${Buffer.from(JSON.stringify([at, id])).toString('base64url')}${c.slice(c.lastIndexOf('.'))}`),
      fc.constantFrom(...issuedCursors).map((c) => `${c.slice(0, -1)}${c.endsWith('A') ? 'B' : 'A'}`),
    );
    const cursor = fc.oneof({ arbitrary: fc.constantFrom(...issuedCursors), weight: 3 }, { arbitrary: forged, weight: 4 }, { arbitrary: hostileString, weight: 2 }, { arbitrary: fc.integer({ min: 190, max: 400 }).map((n) => 'Q'.repeat(n)), weight: 1 });
    const limit = fc.oneof(
      { arbitrary: fc.integer({ min: 1, max: 10 }).map(String), weight: 4 },
      { arbitrary: fc.integer({ min: -1000, max: 1000 }).map(String), weight: 3 },
      { arbitrary: fc.constantFrom('', ' 3', '3 ', '0x10', '1e2', '2.5', '-0', 'NaN', 'Infinity', '99999999999999999999', '1e309', '５', 'null', '[]', '3,4'), weight: 2 },
      { arbitrary: hostileString, weight: 1 },
    );
    const param = fc.oneof({ arbitrary: limit.map((v) => ['limit', v] as const), weight: 3 }, { arbitrary: cursor.map((v) => ['cursor', v] as const), weight: 3 }, { arbitrary: fc.tuple(fc.oneof(fc.constantFrom('offset', 'Limit', 'page', ''), fc.string({ maxLength: 8 })), hostileString).map(([k, v]) => [k, v] as const), weight: 1 });
    const query = fc.record({ params: fc.array(param.map(([k, v]) => [wellFormed(k), wellFormed(v)] as const), { maxLength: 4 }), raw: fc.oneof({ arbitrary: fc.constant(''), weight: 9 }, { arbitrary: fc.stringMatching(/^[A-Za-z0-9%&=+;,\/?:@!$'()*._~-]{0,40}$/), weight: 1 }) });
    await fc.assert(
      fc.asyncProperty(query, guarded(async ({ params, raw }) => {
        const qs = params.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join('&') + (raw ? `&${raw}` : '');
        const reply = await send(fleet, 'GET', `/v1/instances?${qs}`);
        if (raw) return;
        if (holdsPrivateKey(params)) return assertKeyRefused(reply, undefined);
        const keys = params.map(([k]) => k);
        const single = new Set(keys).size === keys.length;
        const values = Object.fromEntries(params);
        const schema = single && keys.every((k) => k === 'limit' || k === 'cursor') ? ListQuery.safeParse(values) : undefined;
        if (!schema?.success) return assert.equal(reply.status, 400, `invalid query ${qs.slice(0, 200)} got ${reply.status}`);
        const position = schema.data.cursor === undefined ? 0 : issued.get(schema.data.cursor);
        if (position === undefined) {
          // Cursors are authenticated: anything this service did not issue is refused.
          assert.equal(reply.status, 400, `forged cursor got ${reply.status}`);
          return assert.equal(reply.json.code, ErrorCode.STORE_INVALID_CURSOR, reply.text);
        }
        assert.equal(reply.status, 200, reply.text.slice(0, 300));
        const expected = all.slice(position, position + schema.data.limit);
        assert.deepEqual(
          reply.json.items.map((i: { id: string }) => i.id),
          expected,
        );
        assert.equal(reply.json.nextCursor === null, position + schema.data.limit >= all.length);
      })),
      { numRuns: RUNS.list, includeErrorInReport: true },
    );
  });

  // ------------------------------------------------------------------------------------
  // Paths with ids

  test(`paths with ids: ${RUNS.paths} requests on /v1/instances/:id[/issue|/enrollment-token], /v1/certificates/:id, /v1/reissues/:id[/cancel] with uuid and non-uuid ids: 400 malformed, 404 unknown, 2xx known`, async () => {
    const routes = [
      // PATCH on an instance's path is a route of its own (a change needs a body: test/api/instances.test.ts);
      // DELETE decommissions (test/api/revocation.test.ts): neither is a wrong method here.
      { method: 'GET', path: (id: string) => `/v1/instances/${id}`, known: known.instances, ok: 200, alsoAnswers: ['PATCH'], alsoServed: ['DELETE'] },
      { method: 'POST', path: (id: string) => `/v1/instances/${id}/issue`, known: known.instances, ok: 202 },
      { method: 'POST', path: (id: string) => `/v1/instances/${id}/enrollment-token`, known: known.instances, ok: 201 },
      { method: 'GET', path: (id: string) => `/v1/certificates/${id}`, known: known.certificates, ok: 200 },
      { method: 'GET', path: (id: string) => `/v1/reissues/${id}`, known: known.campaigns, ok: 200 },
      { method: 'POST', path: (id: string) => `/v1/reissues/${id}/cancel`, known: known.campaigns, ok: 200 },
    ];
    const everyKnown = [...known.instances, ...known.certificates, ...known.campaigns];
    const request = fc.record({
      route: fc.constantFrom(...routes.keys()),
      id: anyId(everyKnown).map(wellFormed),
      encoding: fc.oneof({ arbitrary: fc.constant('encoded' as const), weight: 9 }, { arbitrary: fc.constant('raw' as const), weight: 1 }),
      wrongMethod: fc.oneof({ arbitrary: fc.constant(undefined), weight: 12 }, { arbitrary: fc.constantFrom('PUT', 'DELETE', 'PATCH'), weight: 1 }),
    });
    await fc.assert(
      fc.asyncProperty(request, guarded(async ({ route: index, id, encoding, wrongMethod }) => {
        const route = routes[index]!;
        // "." and ".." are path segments, not ids, whatever the encoding: they are resolved away like raw text.
        const raw = encoding === 'raw' || id === '.' || id === '..';
        const segment = raw ? id.replace(/[\s#?\u0000-\u001f\u007f-\uffff]/g, '') : encodeURIComponent(id);
        const body: EncodedBody | undefined = route.method === 'POST' && route.path('x').endsWith('/cancel') ? { mode: 'json', payload: '{}', contentType: 'application/json' } : undefined;
        if (wrongMethod && 'alsoAnswers' in route && route.alsoAnswers?.includes(wrongMethod)) return;
        if (wrongMethod && route.alsoServed?.includes(wrongMethod)) return;
        const reply = await send(plane, wrongMethod ?? route.method, route.path(segment), body);
        // With a DELETE route under /v1/instances/, the router measures a wrong method's over-long id first (414).
        if (wrongMethod) return raw ? assert.ok(reply.status >= 400) : assert.ok(reply.status === 404 || (reply.status === 414 && segment.length > 100), `${wrongMethod} got ${reply.status}`);
        if (raw || segment === '') return assert.ok(reply.status >= 400 || API_UUID.test(segment), `raw id ${segment} got ${reply.status}`);
        if (!API_UUID.test(id)) {
          // Fastify (find-my-way) refuses path parameters over 100 characters with 414 before validation.
          assert.ok([400, 414].includes(reply.status), `malformed id ${id.slice(0, 80)} got ${reply.status}`);
          if (segment.length <= 100) assert.equal(reply.json.code, ErrorCode.VALIDATION_FAILED, `malformed id ${id.slice(0, 80)}: ${reply.text.slice(0, 200)}`);
          return;
        }
        const isKnown = route.known.includes(id.toLowerCase());
        assert.equal(reply.status, isKnown ? route.ok : 404, `${route.method} ${route.path(id)}: ${reply.text.slice(0, 200)}`);
      })),
      { numRuns: RUNS.paths, includeErrorInReport: true },
    );
  });

  test(`POST /v1/reissues/:id/cancel: ${RUNS.cancel} bodies (absent, {}, {reason}, junk, wrong encodings) on a known campaign: 200 for every body the README allows ({reason?}), 400 otherwise`, async () => {
    const reasonArb = fc.oneof(fc.string({ minLength: 1, maxLength: 30 }), hostileString, junkJson);
    const body = fc.oneof(
      { arbitrary: fc.constant<EncodedBody>({ mode: 'none', payload: undefined, contentType: undefined }), weight: 2 },
      { arbitrary: fc.constant({}).chain((v) => encodedBody(v, ['reason'])), weight: 2 },
      { arbitrary: fc.tuple(reasonArb, mutations(['reason'], () => reasonArb, 1)).map(([reason, edits]) => applyMutations({ reason }, edits)).chain((v) => encodedBody(v, ['reason'])), weight: 6 },
    );
    await fc.assert(
      fc.asyncProperty(body, fc.constantFrom(...known.campaigns), guarded(async (encoded, id) => {
        const reply = await send(plane, 'POST', `/v1/reissues/${id}/cancel`, encoded);
        if (encoded.mode === 'none' && encoded.payload === undefined) return assert.equal(reply.status, 200, `a cancel without a body (the README's {reason?}) got ${reply.status} ${reply.text.slice(0, 200)}`);
        const parsed = parsedJson(encoded);
        // 'garbage' may still be a JSON scalar: a bare `null` is the README's "null is {}" (200), other scalars are 400.
        if (!jsonModes.has(encoded.mode) && !(encoded.mode === 'garbage' && parsed.ok)) return assert.ok(reply.status >= 400, `${encoded.mode} body got ${reply.status}`);
        if (tooBig(encoded)) return assert.equal(reply.status, 413);
        if (parsed.ok && holdsPrivateKey(parsed.value)) return assertKeyRefused(reply, parsed.value);
        const valid = parsed.ok && CancelModel.safeParse(parsed.value).success;
        assert.equal(reply.status, valid ? 200 : 400, `${encoded.payload?.slice(0, 200)} got ${reply.status} ${reply.text.slice(0, 200)}`);
        if (valid) assert.equal(reply.json.state, 'cancelled');
      })),
      { numRuns: RUNS.cancel, includeErrorInReport: true },
    );
  });

  test('afterwards the process is alive: /healthz and /readyz answer 200, nothing crashed', async (t) => {
    for (const on of [plane, fleet]) {
      assert.deepEqual((await send(on, 'GET', '/healthz')).json, { status: 'ok' });
      assert.deepEqual((await send(on, 'GET', '/readyz')).json, { status: 'ok' });
    }
    assert.deepEqual(crashes, []);
    for (const [kind, example] of collected) t.diagnostic(`5xx ${kind}\n    e.g. ${example}`);
    assert.equal(collected.size, 0, `${collected.size} kinds of 5xx (see the diagnostics above)`);
    const planned = Object.values(RUNS).reduce((a, b) => a + b, 0);
    t.diagnostic(`${planned} generated requests planned, ${requests.count} requests sent (valid registrations are read back)`);
  });
});
