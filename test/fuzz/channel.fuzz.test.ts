/**
 * Property-based fuzzing of the agent channel over real WebSocket connections to an
 * in-process plane (loopback).
 *
 * What is proven, for 2,244 generated frames (random each run; fast-check prints the seed
 * and the shrunk counterexample on failure):
 * - before authentication, every frame that is not a valid `auth` of this connection
 *   closes that connection with the close code and reason code the protocol documents
 *   (4000 and CHANNEL_MESSAGE_NOT_JSON / _VERSION_UNSUPPORTED / _INVALID / _UNEXPECTED /
 *   CHANNEL_PRIVATE_KEY_REFUSED, 4001 and AGENT_AUTH_FAILED), and a valid one is welcomed;
 *   the frames are random text, random JSON, mutations of every valid agent message
 *   (fields corrupted, wrong types and versions, unknown keys, broken renderings), binary
 *   frames and frames carrying a PEM private-key block;
 * - after authentication, a mutated message either is refused with 4000 and its reason,
 *   or is accepted and the connection keeps working (a sentinel frame sent right after
 *   it is what closes the connection); no agent can act on another instance's certificate;
 *   no refusal is a CHANNEL_INTERNAL (the channel's 5xx);
 * - frames over the size limit close with 1009 and text frames that are not UTF-8 with
 *   1007 (both from the WebSocket layer, which gives no reason text);
 * - nothing waits forever: every connection answers within 5 s;
 * - a healthy agent connected before all of it stays open throughout, still shows as
 *   connected in the API and still gets answers (pong, its status recorded) afterwards,
 *   its delivered certificate is untouched, and the plane's /healthz answers 200.
 *
 * Why: the channel is exposed to every customer instance; one misbehaving or hostile
 * agent must cost the plane one closed connection with a reason in the log, never the
 * process, another agent's session or another instance's certificates.
 */
import assert from 'node:assert/strict';
import { isUtf8 } from 'node:buffer';
import { sign } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import WebSocket from 'ws';
import { AgentMessage, CHANNEL_PATH, MAX_MESSAGE_BYTES, PROTOCOL_VERSION, authPayload, decodeMessage } from '../../src/channel/protocol.js';
import { CertplaneError } from '../../src/errors.js';
import { enrollTestAgent, startTestPlane, type EnrolledAgent, type TestPlane } from '../support/plane.js';
import {
  applyMutations,
  buildCsr,
  csrKeys,
  csrMaterial,
  csrRecipe,
  csrVerdict,
  holdsPrivateKey,
  hostileString,
  jsonEscapes,
  junkJson,
  lineInjection,
  mutations,
  pemPrivateKey,
  resolveName,
  setOwn,
  unknownKey,
  withJsonEscapes,
  type CsrMaterial,
  type JsonEscapes,
  type Mutation,
} from './arbitraries.js';
import { advance } from '../support/lifecycle.js';
import { ErrorCode } from '../../src/error-catalogue.js';

/** Runs per property, fixed so the totals are the same every run (FUZZ_SCALE=10 for a longer soak). */
const SCALE = Number(process.env.FUZZ_SCALE ?? 1);
const BATCH = 12;
const POST_AUTH_BATCH = 4;
const RUNS = { preAuth: 160 * SCALE, transport: 24 * SCALE, postAuth: 75 * SCALE, csr: 50 * SCALE } as const;
const CSR_BATCH = 4;
const WAIT_MS = 5000;

interface Channel {
  readonly socket: WebSocket;
  readonly messages: any[];
  readonly closed: Promise<{ code: number; reason: string }>;
  /** Resolves when a welcome arrives; never rejects. */
  readonly welcomed: Promise<'welcome'>;
  next(type: string): Promise<any>;
}

// ---------------------------------------------------------------------------------------
// Frames

/** Placeholders resolved per connection: this connection's certificate, signature, a CSR, another instance's certificate. */
const CERT = '$CERT';
const SIG = '$SIG';
const CSR = '$CSR';
const FOREIGN = '$FOREIGN_CERTIFICATE_ID';

const hex64 = fc.string({ unit: fc.constantFrom(...'0123456789abcdef'), minLength: 64, maxLength: 64 });
const certificateIdRef = fc.oneof(
  { arbitrary: fc.uuid(), weight: 6 },
  { arbitrary: fc.constant(FOREIGN), weight: 4 },
  { arbitrary: fc.string({ minLength: 1, maxLength: 40 }), weight: 1 },
  { arbitrary: fc.tuple(fc.constantFrom('🔥', 'é', '中'), fc.integer({ min: 20, max: 42 })).map(([c, n]) => c.repeat(n)), weight: 1 },
);

/** One valid message of each type the agent sends (with placeholders). */
const templates: Record<string, fc.Arbitrary<Record<string, unknown>>> = {
  auth: fc.constant({ v: PROTOCOL_VERSION, type: 'auth', certificatePem: CERT, signature: SIG, agentVersion: 'fuzz/1.0' }),
  status: fc.record({ v: fc.constant(PROTOCOL_VERSION), type: fc.constant('status'), installedFingerprintSha256: fc.option(hex64, { nil: null }), pendingCertificateIds: fc.array(fc.uuid(), { maxLength: 3 }) }),
  csr: certificateIdRef.map((certificateId) => ({ v: PROTOCOL_VERSION, type: 'csr', certificateId, csrPem: CSR })),
  installed: fc.tuple(certificateIdRef, hex64).map(([certificateId, fingerprintSha256]) => ({ v: PROTOCOL_VERSION, type: 'installed', certificateId, fingerprintSha256 })),
  install_failed: certificateIdRef.map((certificateId) => ({ v: PROTOCOL_VERSION, type: 'install_failed', certificateId, code: 'INSTALL_CHAIN_UNVERIFIED', message: 'the chain does not verify' })),
  http01_ready: fc.uuid().map((requestId) => ({ v: PROTOCOL_VERSION, type: 'http01_ready', requestId })),
  error: fc.option(fc.uuid(), { nil: undefined }).map((requestId) => ({ v: PROTOCOL_VERSION, type: 'error', ...(requestId ? { requestId } : {}), code: ErrorCode.AGENT_RELOAD_FAILED, message: 'nginx -s reload exited 1' })),
  identity_renewal: fc.constant({ v: PROTOCOL_VERSION, type: 'identity_renewal', csrPem: CSR }),
  revocation_signed: fc.uuid().map((requestId) => ({ v: PROTOCOL_VERSION, type: 'revocation_signed', requestId, jws: { protected: 'eyJhbGciOiJFUzI1NiJ9', payload: 'e30', signature: 'c2ln' } })),
  served: fc.array(servedProbe(), { minLength: 1, maxLength: 3 }).map((probes) => ({ v: PROTOCOL_VERSION, type: 'served', probes })),
};
const messageKeys = ['v', 'type', 'certificatePem', 'signature', 'agentVersion', 'installedFingerprintSha256', 'pendingCertificateIds', 'certificateId', 'csrPem', 'fingerprintSha256', 'code', 'message', 'requestId', 'jws', 'probes'];

/** One probe of a served-chain report: bytes that may or may not be a certificate, or a reason it got none. */
function servedProbe(): fc.Arbitrary<Record<string, unknown>> {
  const where = fc.record({ target: fc.constantFrom('127.0.0.1:5432', '[::1]:443', 'db.example.com:5432', 'postgres://127.0.0.1:5432'), sni: fc.option(fc.constantFrom('db.example.com', 'x.test'), { nil: null }) });
  return fc.oneof(
    fc.tuple(where, fc.array(fc.base64String({ minLength: 4, maxLength: 400 }), { minLength: 1, maxLength: 4 })).map(([w, certificates]) => ({ ...w, certificates })),
    where.map((w) => ({ ...w, unreachable: { code: 'ECONNREFUSED', message: 'connect ECONNREFUSED' } })),
  );
}

/** Multi-byte text of a length that lands the 123-byte close-reason limit in the middle of a character. */
const wideText = fc.tuple(fc.constantFrom('🔥', 'é', '中', '𝄞', 'ß'), fc.integer({ min: 20, max: 90 })).map(([c, n]) => c.repeat(n));

/** Values a corrupted field takes: wrong versions and types, near-miss hex, long and multi-byte strings, placeholders in the wrong place. */
function fieldValue(key: string): fc.Arbitrary<unknown> {
  switch (key) {
    case 'v':
      return fc.oneof({ arbitrary: fc.constantFrom(0, 2, -1, 1.5, '1', 'v1', null, true, [1], { v: 1 }, 1e21), weight: 4 }, { arbitrary: wideText, weight: 1 });
    case 'type':
      return fc.oneof(fc.constantFrom(...Object.keys(templates), 'hello', 'welcome', 'deliver', 'csr_request', 'AUTH', 'Auth', ' auth', '', 'identity_renewed'), hostileString);
    case 'fingerprintSha256':
    case 'installedFingerprintSha256':
      return fc.oneof(hex64.map((h) => h.toUpperCase()), hex64.map((h) => h.slice(1)), hex64.map((h) => `${h}0`), hex64.map((h) => `sha256:${h}`), fc.constant(null));
    case 'pendingCertificateIds':
      return fc.oneof(fc.array(fc.uuid(), { minLength: 17, maxLength: 20 }), fc.array(fc.constantFrom('', 'x'.repeat(129)), { minLength: 1, maxLength: 2 }), fc.array(junkJson, { maxLength: 3 }));
    case 'certificatePem':
    case 'csrPem':
      return fc.oneof(fc.constantFrom(CERT, CSR, '-----BEGIN CERTIFICATE-----', '-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----'), hostileString);
    case 'probes':
      return fc.oneof(
        fc.constant([]),
        fc.array(servedProbe(), { minLength: 33, maxLength: 34 }),
        servedProbe().map((probe) => [{ ...probe, instanceId: FOREIGN }]),
        servedProbe().map((probe) => [{ ...probe, target: 'db\n| forged:5432' }]),
        servedProbe().map((probe) => [{ ...probe, certificates: ['not base64!'] }]),
        fc.array(junkJson, { maxLength: 3 }),
      );
    case 'signature':
      return fc.oneof(fc.base64String({ maxLength: 120 }), fc.constant(''), fc.constant('x'.repeat(2049)), hostileString);
    default:
      return fc.oneof(certificateIdRef, hostileString, wideText, fc.integer({ min: 60, max: 3000 }).map((n) => 'y'.repeat(n)), lineInjection);
  }
}

/** PEM private keys in every spelling the refusal must catch: real ones, and odd spacings, one-line, lower case. */
function privateKeyText(material: CsrMaterial): fc.Arbitrary<string> {
  return fc.oneof(fc.constantFrom(...material.privateKeys), pemPrivateKey);
}

type Render = 'json' | 'pretty' | 'duplicate-keys' | 'truncated' | 'trailing' | 'bom' | 'binary' | 'escaped-pem' | 'json-escapes';
type Recipe =
  | { kind: 'text'; text: string }
  | { kind: 'bytes'; bytes: Uint8Array; binary: boolean }
  | { kind: 'message'; template: string; base: Record<string, unknown>; edits: Mutation[]; render: Render; cut: number; duplicate: [string, unknown]; escapes: JsonEscapes };

const render: fc.Arbitrary<Render> = fc.oneof(
  { arbitrary: fc.constant<Render>('json'), weight: 12 },
  { arbitrary: fc.constantFrom<Render>('pretty', 'duplicate-keys', 'truncated', 'trailing', 'bom', 'binary', 'escaped-pem', 'json-escapes'), weight: 5 },
);

function messageRecipe(material: CsrMaterial, editCount: number): fc.Arbitrary<Recipe> {
  const key = fc.constantFrom(...messageKeys);
  const withPrivateKey = fc.tuple(key, privateKeyText(material), fc.string({ maxLength: 8 })).map(([k, pk, around]): Mutation => ({ kind: 'set', key: k, value: `${around}${pk}${around}` }));
  return fc
    .constantFrom(...Object.keys(templates))
    .chain((template) =>
      fc.record({
        kind: fc.constant('message' as const),
        template: fc.constant(template),
        base: templates[template]!,
        edits: fc.oneof(
          { arbitrary: mutations(messageKeys, fieldValue, editCount), weight: 8 },
          { arbitrary: fc.tuple(mutations(messageKeys, fieldValue, 1), withPrivateKey).map(([m, pk]) => [...m, pk]), weight: 2 },
          { arbitrary: fc.tuple(unknownKey, junkJson).map(([k, value]): Mutation[] => [{ kind: 'set', key: k, value }]), weight: 2 },
        ),
        render,
        cut: fc.nat(),
        duplicate: fc.tuple(fc.constantFrom('v', 'type', 'certificateId'), fieldValue('v')),
        escapes: jsonEscapes,
      }),
    );
}

function frameRecipe(material: CsrMaterial): fc.Arbitrary<Recipe> {
  return fc.oneof(
    { arbitrary: messageRecipe(material, 3), weight: 10 },
    {
      arbitrary: fc.oneof(fc.string({ maxLength: 200 }), fc.string({ unit: 'binary', maxLength: 200 }), fc.string({ unit: 'grapheme', maxLength: 50 }), fc.constantFrom('', ' ', 'null', '{}', '[]', '{"v":1}', '{"v":1,"type":"auth"}', '1', '"auth"')).map((text): Recipe => ({ kind: 'text', text })),
      weight: 3,
    },
    { arbitrary: junkJson.map((value): Recipe => ({ kind: 'text', text: JSON.stringify(value) ?? 'null' })), weight: 2 },
    {
      arbitrary: fc
        .record({ type: fc.oneof(fc.constantFrom(...Object.keys(templates)), hostileString), rest: fc.dictionary(fc.constantFrom(...messageKeys), junkJson, { maxKeys: 4 }) })
        .map(({ type, rest }): Recipe => ({ kind: 'text', text: JSON.stringify({ ...rest, v: PROTOCOL_VERSION, type }) })),
      weight: 2,
    },
    { arbitrary: fc.uint8Array({ maxLength: 300 }).map((bytes): Recipe => ({ kind: 'bytes', bytes, binary: true })), weight: 2 },
    { arbitrary: privateKeyText(material).map((text): Recipe => ({ kind: 'text', text })), weight: 1 },
  );
}

interface Context {
  readonly certificatePem: string;
  readonly signature: string;
  readonly csrPem: string;
  readonly foreignCertificateId: string;
}

function resolve(value: unknown, ctx: Context): unknown {
  if (value === CERT) return ctx.certificatePem;
  if (value === SIG) return ctx.signature;
  if (value === CSR) return ctx.csrPem;
  if (value === FOREIGN) return ctx.foreignCertificateId;
  if (Array.isArray(value)) return value.map((v) => resolve(v, ctx));
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) setOwn(out, k, resolve(v, ctx));
    return out;
  }
  return value;
}

/** The bytes on the wire for a recipe in a connection's context. */
function materialize(recipe: Recipe, ctx: Context): { bytes: Buffer; binary: boolean } {
  if (recipe.kind === 'text') return { bytes: Buffer.from(recipe.text), binary: false };
  if (recipe.kind === 'bytes') return { bytes: Buffer.from(recipe.bytes), binary: recipe.binary };
  const value = resolve(applyMutations(recipe.base, recipe.edits), ctx);
  const json = JSON.stringify(value) ?? 'null';
  const text: Record<Render, () => string> = {
    json: () => json,
    pretty: () => JSON.stringify(value, null, 2) ?? 'null',
    'duplicate-keys': () => (json.startsWith('{') && json !== '{}' ? `{${JSON.stringify(recipe.duplicate[0])}:${JSON.stringify(recipe.duplicate[1])},${json.slice(1)}` : json),
    truncated: () => json.slice(0, recipe.cut % Math.max(1, json.length)),
    trailing: () => `${json} }`,
    bom: () => `\ufeff${json}`,
    binary: () => json,
    'escaped-pem': () => json.replace(/-----BEGIN/g, '\\u002d----BEGIN'),
    'json-escapes': () => withJsonEscapes(json, recipe.escapes),
  };
  return { bytes: Buffer.from(text[recipe.render]()), binary: recipe.render === 'binary' };
}

// ---------------------------------------------------------------------------------------
// The oracle

/** The frame's text as JSON.parse reads it, or undefined when it is not JSON. */
function parsedFrame(bytes: Buffer): unknown {
  try {
    return JSON.parse(bytes.toString('utf8'));
  } catch {
    return undefined;
  }
}

type Expected = { close: number; code?: string; notInternal?: boolean } | { accept: true } | { welcome: true } | { welcomeOrClose: number };

function expectation(frame: { bytes: Buffer; binary: boolean }, phase: 'pre' | 'post', ctx: Context, supportedCsrs: ReadonlySet<string>): Expected {
  if (frame.bytes.length > MAX_MESSAGE_BYTES) return { close: 1009 };
  if (!frame.binary && !isUtf8(frame.bytes)) return { close: 1007 };
  if (frame.binary) return { close: 4000, code: ErrorCode.CHANNEL_MESSAGE_INVALID };
  let message: AgentMessage;
  try {
    message = decodeMessage(AgentMessage, frame.bytes);
  } catch (error) {
    return { close: 4000, code: (error as CertplaneError).code };
  }
  if (phase === 'pre') {
    if (message.type !== 'auth') return { close: 4000, code: ErrorCode.CHANNEL_MESSAGE_UNEXPECTED };
    const signed = Buffer.from(message.signature, 'base64').equals(Buffer.from(ctx.signature, 'base64'));
    if (!signed) return { close: 4001, code: ErrorCode.AGENT_AUTH_FAILED };
    return message.certificatePem === ctx.certificatePem ? { welcome: true } : { welcomeOrClose: 4001 };
  }
  switch (message.type) {
    case 'auth':
      return { close: 4000, code: ErrorCode.CHANNEL_MESSAGE_UNEXPECTED };
    case 'status':
    case 'error':
    case 'http01_ready':
    // An answer to a request nobody waits on is dropped, as a late http01_ready is.
    case 'revocation_signed':
    // Judged for the agent's own instance (stale: fuzz agents have nothing installed), or ignored past the rate: the connection stays.
    case 'served':
      return { accept: true };
    case 'identity_renewal':
      return supportedCsrs.has(message.csrPem) ? { accept: true } : { close: 4000, notInternal: true };
    default:
      // csr, installed, install_failed: these fuzz agents own no certificate, so every id is someone else's or nobody's.
      return { close: 4000, code: ErrorCode.ISSUANCE_UNKNOWN_CERTIFICATE };
  }
}

describe('agent channel fuzz: a bad frame costs its own connection only, with a reason', async () => {
  let plane: TestPlane;
  let refusingCa: Server;
  let material: CsrMaterial;
  let healthy: Channel;
  let healthyAgent: EnrolledAgent;
  let foreignCertificateId: string;
  const fuzzAgents: EnrolledAgent[] = [];
  const crashes: unknown[] = [];
  /**
   * Rejects at an unhandled rejection or uncaught exception in the process (which would
   * end `certplane serve`), so the run that caused it fails at once with its stack rather
   * than as a hang. Re-armed at the start of every run, so shrinking finds the frame that did it.
   */
  let crash: Promise<never> = new Promise<never>(() => undefined);
  let crashed: (error: unknown) => void = () => undefined;
  const armCrashSignal = () => {
    crash = new Promise<never>((_, reject) => (crashed = reject));
    crash.catch(() => undefined);
  };
  const onCrash = (error: unknown) => {
    crashes.push(error);
    crashed(new Error(`the plane process had an unhandled error: ${(error as Error)?.stack ?? String(error)}`));
  };
  const frames = { sent: 0 };
  let supportedCsrs: ReadonlySet<string>;

  const channelUrl = () => `${plane.url.replace('http', 'ws')}${CHANNEL_PATH}`;

  const connect = async (): Promise<Channel> => {
    const socket = new WebSocket(channelUrl());
    const messages: any[] = [];
    const waiters = new Set<() => void>();
    socket.on('error', () => undefined);
    socket.on('message', (data) => {
      try {
        messages.push(JSON.parse(data.toString()));
      } catch {
        messages.push({ unparsable: data.toString() });
      }
      for (const waiter of waiters) waiter();
    });
    const closed = new Promise<{ code: number; reason: string }>((resolve) => socket.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
    const welcomed = new Promise<'welcome'>((resolve) => {
      const check = () => {
        if (messages.some((m) => m.type === 'welcome')) {
          waiters.delete(check);
          resolve('welcome');
        }
      };
      waiters.add(check);
    });
    const next = (type: string) =>
      new Promise<any>((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`no ${type} frame within ${WAIT_MS} ms`));
        }, WAIT_MS);
        function check() {
          const found = messages.find((m) => m.type === type);
          if (found) {
            clearTimeout(timer);
            waiters.delete(check);
            resolve(found);
          }
        }
        waiters.add(check);
        check();
      });
    await new Promise<void>((resolve, reject) => {
      socket.once('open', () => resolve());
      socket.once('close', () => reject(new Error('closed before open')));
    });
    return { socket, messages, closed, welcomed, next };
  };

  /** `promise`, or a failure naming what did not happen in time: a hang is a bug too. */
  const within = async <T>(promise: Promise<T>, what: string): Promise<T> => {
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([promise, crash, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`hang: no ${what} within ${WAIT_MS} ms`)), WAIT_MS)))]);
    } finally {
      clearTimeout(timer);
    }
  };

  const enroll = (name: string, hostnames?: string[]) => enrollTestAgent(plane, name, hostnames);

  const contextFor = (agent: EnrolledAgent, nonce: string, csrPem: string): Context => ({
    certificatePem: agent.certificatePem,
    signature: sign('sha256', authPayload(nonce), agent.keyPem).toString('base64'),
    csrPem,
    foreignCertificateId,
  });

  const authenticated = async (agent: EnrolledAgent): Promise<{ channel: Channel; nonce: string }> => {
    const channel = await connect();
    const hello = await channel.next('hello');
    channel.socket.send(JSON.stringify({ v: PROTOCOL_VERSION, type: 'auth', certificatePem: agent.certificatePem, signature: contextFor(agent, hello.nonce, '').signature, agentVersion: 'fuzz/1.0' }));
    await channel.next('welcome');
    return { channel, nonce: hello.nonce };
  };

  /** The healthy agent and the other instance's certificate are untouched: checked after every run. */
  let healthyClose: { code: number; reason: string } | undefined;
  const assertOthersUntouched = async () => {
    assert.equal(healthyClose, undefined, `the healthy agent's connection was closed: ${JSON.stringify(healthyClose)}`);
    const certificate = await plane.store.certificates.get(foreignCertificateId);
    assert.equal(certificate?.status, 'delivered', `another instance's delivered certificate became ${certificate?.status} (${certificate?.lastError})`);
  };

  const assertClosedAsExpected = (expected: Expected, closed: { code: number; reason: string }, frame: { bytes: Buffer; binary: boolean }, what: string) => {
    const shown = `${what}: frame ${JSON.stringify(frame.bytes.toString('utf8').slice(0, 300))} -> ${closed.code} ${JSON.stringify(closed.reason)}`;
    assert.ok('close' in expected || 'welcomeOrClose' in expected, `expected ${JSON.stringify(expected)}: ${shown}`);
    const code = 'close' in expected ? expected.close : expected.welcomeOrClose;
    assert.equal(closed.code, code, `close code ${closed.code}, expected ${code}: ${shown}`);
    if (code >= 4000) {
      assert.ok(closed.reason.length > 0, `no reason: ${shown}`);
      assert.doesNotMatch(closed.reason, /^CHANNEL_INTERNAL/, `an internal error, not a reason: ${shown}`);
      if ('close' in expected && expected.code) assert.ok(closed.reason.startsWith(`${expected.code}: `), `reason should start with ${expected.code}: ${shown}`);
    }
    if (!frame.binary && frame.bytes.includes('-----BEGIN PRIVATE KEY-----') && frame.bytes.length <= MAX_MESSAGE_BYTES) assert.match(closed.reason, /^CHANNEL_PRIVATE_KEY_REFUSED: /, shown);
    // Whatever the escapes on the wire: the value the plane parses is what must hold no key (README).
    if (!frame.binary && frame.bytes.length <= MAX_MESSAGE_BYTES && holdsPrivateKey(parsedFrame(frame.bytes))) assert.match(closed.reason, /^CHANNEL_PRIVATE_KEY_REFUSED: /, shown);
  };

  before(async () => {
    process.on('unhandledRejection', onCrash);
    process.on('uncaughtException', onCrash);
    // A CA that answers at once and refuses everything: a CSR the plane accepts is ordered and fails fast.
    refusingCa = createServer((_, res) => res.writeHead(403, { 'content-type': 'application/problem+json' }).end('{"type":"urn:ietf:params:acme:error:unauthorized","detail":"this CA refuses every request"}'));
    await new Promise<void>((resolve) => refusingCa.listen(0, '127.0.0.1', resolve));
    plane = await startTestPlane({ authTimeoutMs: 10_000, acmeDirectoryUrl: `http://127.0.0.1:${(refusingCa.address() as AddressInfo).port}/directory` });
    material = await csrMaterial(plane.ca.certificatePem);
    supportedCsrs = new Set(material.supported);
    healthyAgent = await enroll('healthy');
    for (let i = 0; i < BATCH; i += 1) fuzzAgents.push(await enroll(`fuzz${i}`));
    healthy = (await authenticated(healthyAgent)).channel;
    void healthy.closed.then((closed) => {
      healthyClose = closed;
    });
    // The healthy instance has a delivered certificate that no other agent may touch.
    const issued = await plane.app.inject({ method: 'POST', url: `/v1/instances/${healthyAgent.instanceId}/issue` });
    foreignCertificateId = issued.json().certificateId;
    const delivered = await advance(plane.store, foreignCertificateId, 'delivered', { fingerprintSha256: 'ab'.repeat(32), deliveredAt: new Date() });
    assert.equal(delivered?.status, 'delivered');
  });

  after(async () => {
    process.off('unhandledRejection', onCrash);
    process.off('uncaughtException', onCrash);
    healthy?.socket.close();
    await plane?.close();
    refusingCa?.close();
  });

  test(`before authentication: ${RUNS.preAuth} batches of ${BATCH} frames (${RUNS.preAuth * BATCH} frames, ${BATCH} connections at a time) each close their connection with the documented code and reason, or are welcomed`, async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(frameRecipe(material), { minLength: BATCH, maxLength: BATCH }), async (batch) => {
        armCrashSignal();
        await Promise.all(
          batch.map(async (recipe, slot) => {
            const channel = await connect();
            const hello = await within(channel.next('hello'), 'hello');
            const ctx = contextFor(fuzzAgents[slot]!, hello.nonce, material.supported[slot % material.supported.length]!);
            const frame = materialize(recipe, ctx);
            const expected = expectation(frame, 'pre', ctx, supportedCsrs);
            frames.sent += 1;
            channel.socket.send(frame.bytes, { binary: frame.binary });
            const outcome = await within(Promise.race([channel.closed, channel.welcomed]), `answer to ${JSON.stringify(frame.bytes.toString('utf8').slice(0, 300))} (expected ${JSON.stringify(expected)})`);
            if (outcome === 'welcome') {
              assert.ok('welcome' in expected || 'welcomeOrClose' in expected, `welcomed, expected ${JSON.stringify(expected)}: ${frame.bytes.toString().slice(0, 300)}`);
              channel.socket.close();
              await within(channel.closed, 'close');
              return;
            }
            assertClosedAsExpected(expected, outcome, frame, 'before authentication');
          }),
        );
        await assertOthersUntouched();
      }),
      { numRuns: RUNS.preAuth, includeErrorInReport: true },
    );
  });

  test(`transport limits: ${RUNS.transport} oversized frames (text and binary, just over the limit) and non-UTF-8 text frames close with 1009 and 1007; frames at the limit get the usual answer`, async () => {
    const recipe = fc.oneof(
      fc.tuple(fc.integer({ min: 1, max: 64 * 1024 }), fc.boolean(), fc.constantFrom('x', '{"v":1,"type":"status","pad":"', '-----BEGIN PRIVATE KEY-----')).map(([over, binary, head]): Recipe => {
        const bytes = Buffer.alloc(MAX_MESSAGE_BYTES + over, 'x');
        bytes.write(head);
        return { kind: 'bytes', bytes, binary };
      }),
      fc.integer({ min: 0, max: 16 }).map((under): Recipe => ({ kind: 'bytes', bytes: Buffer.alloc(MAX_MESSAGE_BYTES - under, 'x'), binary: false })),
      fc.tuple(fc.string({ maxLength: 40 }), fc.constantFrom([0xff], [0xc3, 0x28], [0xed, 0xa0, 0x80], [0xf8, 0x88, 0x80, 0x80, 0x80], [0xe2, 0x82]), fc.nat()).map(([text, bad, at]): Recipe => {
        const good = Buffer.from(text);
        const i = at % (good.length + 1);
        return { kind: 'bytes', bytes: Buffer.concat([good.subarray(0, i), Buffer.from(bad), good.subarray(i)]), binary: false };
      }),
    );
    await fc.assert(
      fc.asyncProperty(recipe, async (r) => {
        armCrashSignal();
        const channel = await connect();
        const hello = await within(channel.next('hello'), 'hello');
        const ctx = contextFor(fuzzAgents[0]!, hello.nonce, material.supported[0]!);
        const frame = materialize(r, ctx);
        const expected = expectation(frame, 'pre', ctx, supportedCsrs);
        frames.sent += 1;
        channel.socket.send(frame.bytes, { binary: frame.binary });
        assertClosedAsExpected(expected, await within(channel.closed, 'close'), frame, 'transport');
        await assertOthersUntouched();
      }),
      { numRuns: RUNS.transport, includeErrorInReport: true },
    );
  });

  test(`after authentication: ${RUNS.postAuth} batches of ${POST_AUTH_BATCH} mutated messages (${RUNS.postAuth * POST_AUTH_BATCH}, each on a freshly authenticated connection) are refused with 4000 and a reason, or accepted with the connection still working`, async () => {
    let sentinels = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(fc.oneof({ arbitrary: messageRecipe(material, 2), weight: 9 }, { arbitrary: frameRecipe(material), weight: 1 }), { minLength: POST_AUTH_BATCH, maxLength: POST_AUTH_BATCH }), async (batch) => {
        armCrashSignal();
        await Promise.all(
          batch.map(async (recipe, slot) => {
            const agent = fuzzAgents[slot]!;
            const { channel, nonce } = await within(authenticated(agent), 'authentication');
            const ctx = contextFor(agent, nonce, material.supported[slot % material.supported.length]!);
            const frame = materialize(recipe, ctx);
            const expected = expectation(frame, 'post', ctx, supportedCsrs);
            // Anything the plane accepts leaves the connection open: the sentinel after it is then what closes it.
            sentinels += 1;
            const sentinel = `sentinel-${sentinels}`;
            frames.sent += 1;
            channel.socket.send(frame.bytes, { binary: frame.binary });
            channel.socket.send(JSON.stringify({ v: PROTOCOL_VERSION, type: 'installed', certificateId: sentinel, fingerprintSha256: 'cd'.repeat(32) }));
            const closed = await within(channel.closed, `close after ${JSON.stringify(frame.bytes.toString('utf8').slice(0, 300))} (expected ${JSON.stringify(expected)})`);
            const shown = `after authentication: frame ${JSON.stringify(frame.bytes.toString('utf8').slice(0, 300))} -> ${closed.code} ${JSON.stringify(closed.reason)}`;
            if ('accept' in expected) {
              assert.equal(closed.code, 4000, shown);
              assert.ok(closed.reason.includes(sentinel), `the frame should have been accepted and the sentinel refused: ${shown}`);
              // The fuzz agents are freshly enrolled: a well-formed renewal is refused as too early, the connection kept.
              if (recipe.kind === 'message' && recipe.template === 'identity_renewal') assert.ok(channel.messages.some((m) => m.type === 'identity_renewal_refused' && m.code === ErrorCode.AGENT_RENEWAL_TOO_EARLY), shown);
            } else {
              assert.ok(!closed.reason.includes(sentinel), `the frame should have been refused, not accepted: ${shown}`);
              assertClosedAsExpected(expected, closed, frame, 'after authentication');
            }
          }),
        );
        await assertOthersUntouched();
      }),
      { numRuns: RUNS.postAuth, includeErrorInReport: true },
    );
  });

  test(`CSRs for a pending certificate: ${RUNS.csr} batches of ${CSR_BATCH} (${RUNS.csr * CSR_BATCH}; own names, another instance's, wildcards, suffixes, no name, names duplicated up to past the names and size limits, other keys, corrupted signatures and DER) are ordered or refused with a cancel, as the instance's names and key policy decide`, async (t) => {
    const keys = await csrKeys();
    const owners = await Promise.all(Array.from({ length: CSR_BATCH }, (_, i) => enroll(`csr${i}`, [`csr${i}.example.com`, `www.csr${i}.example.com`])));
    const ownNames = (slot: number) => [`csr${slot}.example.com`, `www.csr${slot}.example.com`] as const;
    let sent = 0;
    const outcomes = { ordered: 0, refused: 0 };
    const byLimit = { CSR_TOO_LARGE: 0, CSR_TOO_MANY_NAMES: 0 };
    await fc.assert(
      fc.asyncProperty(fc.array(csrRecipe, { minLength: CSR_BATCH, maxLength: CSR_BATCH }), async (batch) => {
        armCrashSignal();
        await Promise.all(
          batch.map(async (recipe, slot) => {
            const owner = owners[slot]!;
            const own = ownNames(slot);
            const csrPem = await buildCsr(recipe, keys, (role) => resolveName(role, own, ownNames((slot + 1) % CSR_BATCH)[0]));
            const issued = await plane.app.inject({ method: 'POST', url: `/v1/instances/${owner.instanceId}/issue` });
            assert.equal(issued.statusCode, 202, issued.body);
            const certificateId: string = issued.json().certificateId;
            const { channel } = await within(authenticated(owner), 'authentication');
            const request = await within(channel.next('csr_request'), 'csr_request');
            assert.equal(request.certificateId, certificateId);
            const frame = JSON.stringify({ v: PROTOCOL_VERSION, type: 'csr', certificateId, csrPem });
            sent += 1;
            frames.sent += 1;
            let decodable = true;
            try {
              decodeMessage(AgentMessage, frame);
            } catch {
              decodable = false;
            }
            channel.socket.send(frame);
            if (!decodable) {
              const closed = await within(channel.closed, 'close of an undecodable csr frame');
              assert.equal(closed.code, 4000, closed.reason);
              return;
            }
            const { acceptable, limit } = await csrVerdict(csrPem, new Set(own));
            outcomes[acceptable ? 'ordered' : 'refused'] += 1;
            if (limit) byLimit[limit] += 1;
            // Either way the plane answers with a cancel: a refusal at once, an order when the (unreachable) CA fails.
            const cancel = await within(channel.next('cancel'), `cancel for ${acceptable ? 'an acceptable' : 'a refused'} CSR`);
            const shown = `${JSON.stringify(recipe)} -> ${cancel.reason}`;
            assert.equal(cancel.certificateId, certificateId);
            const stored = await plane.store.certificates.get(certificateId);
            assert.equal(stored?.status, 'failed', shown);
            if (acceptable) {
              assert.doesNotMatch(cancel.reason, /CSR rejected/, `an acceptable CSR was refused: ${shown}`);
              assert.equal(stored?.csrPem, csrPem, `an acceptable CSR was not ordered: ${shown}`);
            } else {
              assert.match(cancel.reason, /^CSR rejected: /, `a CSR outside the contract was not refused: ${shown}`);
              assert.equal(stored?.csrPem ?? null, null, `a refused CSR was stored for ordering: ${shown}`);
              assert.match(stored?.lastError ?? '', /^CSR rejected: /, shown);
              if (limit) assert.ok(cancel.reason.startsWith(`CSR rejected: ${limit}: `), `a CSR past the limits was refused for another reason: ${shown}`);
            }
            assert.equal(channel.socket.readyState, WebSocket.OPEN, `a refused CSR costs the certificate, not the connection: ${shown}`);
            channel.socket.close();
            await within(channel.closed, 'close');
          }),
        );
        await assertOthersUntouched();
      }),
      { numRuns: RUNS.csr, includeErrorInReport: true },
    );
    assert.equal(sent, RUNS.csr * CSR_BATCH);
    t.diagnostic(`${outcomes.ordered} CSRs ordered, ${outcomes.refused} refused (${byLimit.CSR_TOO_LARGE} too large, ${byLimit.CSR_TOO_MANY_NAMES} with too many names)`);
    // Both branches of the contract were exercised (each is likelier than 1 in 10 per CSR).
    assert.ok(outcomes.ordered > 0 && outcomes.refused > 0, JSON.stringify(outcomes));
  });

  test('afterwards the healthy agent is still connected and answered, its certificate untouched, and the plane healthy', async (t) => {
    await assertOthersUntouched();
    assert.equal(healthy.socket.readyState, WebSocket.OPEN);
    await within(new Promise<void>((resolve) => healthy.socket.once('pong', () => resolve()).ping()), 'pong');
    const installed = 'ef'.repeat(32);
    healthy.socket.send(JSON.stringify({ v: PROTOCOL_VERSION, type: 'status', installedFingerprintSha256: installed, pendingCertificateIds: [] }));
    let view: any;
    for (let i = 0; i < 100; i += 1) {
      view = (await plane.app.inject({ method: 'GET', url: `/v1/instances/${healthyAgent.instanceId}` })).json();
      if (view.agent.installedFingerprintSha256 === installed) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(view.agent.connected, true);
    assert.equal(view.agent.installedFingerprintSha256, installed, 'the healthy agent\'s status was not recorded');
    const health = await plane.app.inject({ method: 'GET', url: '/healthz' });
    assert.equal(health.statusCode, 200);
    assert.deepEqual(crashes, []);
    const planned = RUNS.preAuth * BATCH + RUNS.transport + RUNS.postAuth * POST_AUTH_BATCH + RUNS.csr * CSR_BATCH;
    t.diagnostic(`${planned} generated frames planned, ${frames.sent} sent`);
  });
});
