/**
 * Generators shared by the fuzz suites: hostile strings and JSON, a generic mutator that
 * corrupts a valid object (wrong types, missing and unknown fields, whole-value
 * replacement), hostnames good and bad, and CSR/PEM material, good and corrupted.
 * Nothing here knows the expected answer; the oracles live next to the properties.
 */
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import fc from 'fast-check';
import { createCsr, generateKeyPair } from '../../src/pki/factory.js';
import { ErrorCode } from '../../src/error-catalogue.js';

/** Strings a careless or hostile client sends: empty, blank, control characters, unicode, injection-looking, PEM-looking, long. */
export const hostileString: fc.Arbitrary<string> = fc.oneof(
  { arbitrary: fc.string({ maxLength: 40 }), weight: 4 },
  { arbitrary: fc.string({ unit: 'binary', maxLength: 40 }), weight: 4 },
  { arbitrary: fc.string({ unit: 'grapheme', maxLength: 20 }), weight: 2 },
  {
    arbitrary: fc.constantFrom(
      '',
      ' ',
      '   \t\n',
      '\u0000',
      'a\u0000b',
      '\ud800',
      'x\udfffy',
      '\ufeff',
      '\u202e\u2066evil',
      '🔥💥',
      'null',
      'true',
      '0',
      '-1',
      '[]',
      '{}',
      "'; DROP TABLE instances; --",
      '../../../etc/passwd',
      '%00',
      '%zz',
      '<script>alert(1)</script>',
      '${jndi:ldap://x}',
      '-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----',
      '-----BEGIN CERTIFICATE-----',
    ),
    weight: 3,
  },
  { arbitrary: fc.tuple(fc.constantFrom('x', 'é', '🔥', ' ', '\u0000'), fc.integer({ min: 190, max: 4000 })).map(([c, n]) => c.repeat(n)), weight: 1 },
);

/** A string over the 64 KiB body limit, for the 413 path: few of them, they are slow to move. */
export const oversizedString: fc.Arbitrary<string> = fc.integer({ min: 65 * 1024, max: 80 * 1024 }).map((n) => 'x'.repeat(n));

/** Any JSON value, nested a little, with hostile strings in it. */
export const junkJson: fc.Arbitrary<unknown> = fc.oneof(
  { arbitrary: fc.jsonValue({ maxDepth: 3 }), weight: 4 },
  { arbitrary: hostileString, weight: 2 },
  { arbitrary: fc.constantFrom(null, true, false, 0, -1, 1.5, 1e308, -0, Number.MAX_SAFE_INTEGER + 2, [], {}, [null], { '': '' }), weight: 2 },
  { arbitrary: fc.array(hostileString, { maxLength: 4 }), weight: 1 },
  { arbitrary: fc.dictionary(hostileString, fc.jsonValue({ maxDepth: 1 }), { maxKeys: 3 }), weight: 1 },
);

/** Keys that are not in any schema, including the ones that poke at prototypes. */
export const unknownKey: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom('extra', '__proto__', 'constructor', 'prototype', 'Name', 'name ', 'NAME', '', 'v2', 'id', 'toString'),
  fc.string({ minLength: 1, maxLength: 12 }),
);

export type Mutation = { kind: 'set'; key: string; value: unknown } | { kind: 'delete'; key: string } | { kind: 'replace'; value: unknown } | { kind: 'wrap' };

/** Sets an own, enumerable property even for "__proto__", so JSON.stringify sends it. */
export function setOwn(target: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
}

export function applyMutations(base: unknown, mutations: readonly Mutation[]): unknown {
  let value: unknown = base;
  for (const m of mutations) {
    if (m.kind === 'replace') value = m.value;
    else if (m.kind === 'wrap') value = [value];
    else if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
      const copy: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(value)) setOwn(copy, k, v);
      if (m.kind === 'set') setOwn(copy, m.key, m.value);
      else delete copy[m.key];
      value = copy;
    }
  }
  return value;
}

/**
 * Zero to `max` corruptions of a valid object: a known field set to `valueFor(key)` or
 * to junk, a known field deleted, an unknown field added, the whole value replaced by
 * junk or wrapped in an array.
 */
export function mutations(knownKeys: readonly string[], valueFor: (key: string) => fc.Arbitrary<unknown>, max = 3): fc.Arbitrary<Mutation[]> {
  const key = fc.constantFrom(...knownKeys);
  const mutation: fc.Arbitrary<Mutation> = fc.oneof(
    { arbitrary: key.chain((k) => fc.oneof(valueFor(k), junkJson).map((value): Mutation => ({ kind: 'set', key: k, value }))), weight: 6 },
    { arbitrary: key.map((k): Mutation => ({ kind: 'delete', key: k })), weight: 2 },
    { arbitrary: fc.tuple(unknownKey, junkJson).map(([k, value]): Mutation => ({ kind: 'set', key: k, value })), weight: 2 },
    { arbitrary: junkJson.map((value): Mutation => ({ kind: 'replace', value })), weight: 1 },
    { arbitrary: fc.constant<Mutation>({ kind: 'wrap' }), weight: 1 },
  );
  return fc.array(mutation, { maxLength: max });
}

// ---------------------------------------------------------------------------------------
// HTTP bodies

/** How a body travels: the JSON text, or a deliberately broken rendering of it ('garbage' is anything but a JSON object, so it may be a JSON scalar). */
export type BodyMode = 'json' | 'json-charset' | 'duplicate-keys' | 'truncated' | 'garbage' | 'prototype-keys' | 'wrong-content-type' | 'none';

export interface EncodedBody {
  readonly mode: BodyMode;
  readonly payload: string | undefined;
  readonly contentType: string | undefined;
}

/** Renders an object as JSON text with `extra` entries first, so a later key of the same name wins (as JSON.parse does). */
function duplicateKeys(value: unknown, extra: readonly [string, unknown][]): string {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return JSON.stringify(value) ?? 'null';
  const parts = [...extra, ...Object.entries(value)].map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v) ?? 'null'}`);
  return `{${parts.join(',')}}`;
}

/** One of the renderings of `value`; the mode says which, so the oracle knows what the server saw. */
export function encodedBody(value: unknown, knownKeys: readonly string[]): fc.Arbitrary<EncodedBody> {
  const text = JSON.stringify(value) ?? 'null';
  return fc.oneof(
    { arbitrary: fc.constant<EncodedBody>({ mode: 'json', payload: text, contentType: 'application/json' }), weight: 14 },
    { arbitrary: fc.constantFrom('application/json; charset=utf-8', 'Application/JSON', 'application/json;charset=UTF-8').map((contentType): EncodedBody => ({ mode: 'json-charset', payload: text, contentType })), weight: 1 },
    {
      arbitrary: fc
        .array(fc.tuple(fc.oneof(fc.constantFrom(...knownKeys), unknownKey), junkJson), { minLength: 1, maxLength: 2 })
        .map((extra): EncodedBody => ({ mode: 'duplicate-keys', payload: duplicateKeys(value, extra), contentType: 'application/json' })),
      weight: 2,
    },
    // A strict prefix of a JSON object or array is never JSON; scalars are kept out so the prefix "12" of "123" cannot slip through.
    ...(text.startsWith('{') || text.startsWith('[')
      ? [{ arbitrary: fc.nat({ max: Math.max(0, text.length - 1) }).map((n): EncodedBody => ({ mode: 'truncated', payload: text.slice(0, n), contentType: 'application/json' })), weight: 1 }]
      : []),
    {
      arbitrary: fc
        .oneof(hostileString, fc.constantFrom('{', '}', '{"a":}', '[1,]', "{'a':1}", 'NaN', '{"a":1}garbage', '{"a":1}{"b":2}', '{"a":01}', '{"a":"\\x41"}'))
        // '\ufeff{}' is a JSON object to Fastify (see parsedJson), so not garbage.
        .filter((s) => !isJsonObjectText(s))
        .map((payload): EncodedBody => ({ mode: 'garbage', payload, contentType: 'application/json' })),
      weight: 2,
    },
    {
      arbitrary: fc
        .constantFrom('{"__proto__":{"polluted":1}}', '{"constructor":{"prototype":{"polluted":1}}}', '{"a":1,"__proto__":{"isAdmin":true}}')
        .map((payload): EncodedBody => ({ mode: 'prototype-keys', payload, contentType: 'application/json' })),
      weight: 1,
    },
    {
      arbitrary: fc
        .constantFrom('text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/xml', 'application/octet-stream', 'application/jsonx', 'json', 'image/png', 'application/json-patch+json')
        .map((contentType): EncodedBody => ({ mode: 'wrong-content-type', payload: text, contentType })),
      weight: 2,
    },
    { arbitrary: fc.constantFrom<EncodedBody>({ mode: 'none', payload: undefined, contentType: undefined }, { mode: 'none', payload: '', contentType: 'application/json' }), weight: 1 },
  );
}

/**
 * What Fastify hands to the schema for a JSON body: JSON.parse of the same text (the last of
 * duplicate keys wins), after skipping a leading byte-order mark as Fastify's parser does.
 */
export function parsedJson(body: Pick<EncodedBody, 'payload'>): { ok: true; value: unknown } | { ok: false } {
  if (body.payload === undefined) return { ok: false };
  try {
    return { ok: true, value: JSON.parse(body.payload.replace(/^\ufeff/, '')) };
  } catch {
    return { ok: false };
  }
}

function isJsonObjectText(payload: string): boolean {
  const parsed = parsedJson({ payload });
  return parsed.ok && parsed.value !== null && typeof parsed.value === 'object';
}

// ---------------------------------------------------------------------------------------
// Hostnames

/**
 * A label starting "xn--" is an A-label only when it decodes (Punycode, then IDNA's rules):
 * "xn--a" does not and must be refused (names.test.ts holds those cases), so the labels of
 * names that must be accepted never take that prefix at random.
 */
const notALabelPrefix = (l: string) => !l.startsWith('xn--');
const label = fc.stringMatching(/^[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?$/).filter(notALabelPrefix);
const longLabel = fc.stringMatching(/^[a-z0-9][a-z0-9-]{40,61}[a-z0-9]$/).filter(notALabelPrefix);

/** A DNS name the API must accept (before case folding): 2 to 5 labels, optional leading wildcard, random case. */
export const validHostname: fc.Arbitrary<string> = fc
  .tuple(fc.boolean(), fc.array(fc.oneof({ arbitrary: label, weight: 5 }, { arbitrary: longLabel, weight: 1 }), { minLength: 1, maxLength: 4 }), fc.constantFrom('com', 'net', 'io', 'example', 'xn--p1ai', 'a1'))
  .map(([wildcard, labels, tld]) => `${wildcard ? '*.' : ''}${[...labels, tld].join('.')}`)
  .filter((h) => h.length <= 253)
  .chain((h) => fc.mixedCase(fc.constant(h)));

/**
 * Names from a pool of sixteen, in random case, a quarter of them wildcards: registrations in
 * one run collide exactly, by case only, or as a wildcard and a name it covers, which a name
 * belonging to one instance must refuse.
 */
export const clashingHostname: fc.Arbitrary<string> = fc
  .tuple(fc.constantFrom('*', 'a', 'b', 'www'), fc.constantFrom('one', 'two'), fc.constantFrom('clash.example', 'clash.test'))
  .map(([first, middle, zone]) => `${first}.${middle}.${zone}`)
  .chain((h) => fc.mixedCase(fc.constant(h)));

/**
 * Names at the edge of the validator (chain/names.ts): bad characters, empty labels,
 * misplaced wildcards, labels over 63, names over 253, and spellings it normalises instead
 * (a trailing dot, unicode and full-width letters become A-labels).
 */
export const badHostname: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom('', '.', '..', 'localhost', 'a..com', '.a.com', 'a.com.', '-a.com', 'a-.com', '*.', '*', '*.*.a.com', 'a.*.com', 'a b.com', 'a_b.com', 'bücher.de', 'a.com/x', 'a.com:443', 'http://a.com', '1.2.3.4/24', '[::1]', 'a\u0000.com', 'ａ.com', 'a.com\n', '*.com', 'a.123'),
  fc.integer({ min: 64, max: 80 }).map((n) => `${'a'.repeat(n)}.com`),
  fc.integer({ min: 5, max: 12 }).map((n) => [...Array.from({ length: n }, () => 'a'.repeat(50)), 'com'].join('.')),
  fc.tuple(validHostname, fc.nat(), fc.constantFrom(' ', '_', '/', '\\', '!', '@', '#', '%', '\u0000', 'é', '🔥', '\t', '..', '*', ':', ',')).map(([h, at, c]) => {
    const i = at % (h.length + 1);
    return `${h.slice(0, i)}${c}${h.slice(i)}`;
  }),
  hostileString,
);

// ---------------------------------------------------------------------------------------
// PEM and CSR material

export interface CsrMaterial {
  /** CSRs the agent CA certifies (ECDSA P-256, what `certplane agent` makes): with a fresh token they enroll. */
  readonly supported: readonly string[];
  /** Well-formed, self-signed CSRs for keys agent identities do not use (RSA 2048, P-384, P-521, Ed25519, RSA-PSS, RSA 1024). */
  readonly otherKeys: readonly { readonly kind: string; readonly pem: string }[];
  /** Private keys in PEM: must never be accepted nor echoed back. */
  readonly privateKeys: readonly string[];
  /** A certificate (not a request). */
  readonly certificatePem: string;
}

type KeyGenParams = webcrypto.AlgorithmIdentifier | webcrypto.RsaHashedKeyGenParams | webcrypto.EcKeyGenParams;
type SignParams = webcrypto.Algorithm | webcrypto.EcdsaParams | webcrypto.RsaPssParams;

/** A CSR signed with WebCrypto through @peculiar/x509, independent of certplane's own CSR factory. */
function signedCsr(keys: webcrypto.CryptoKeyPair, signingAlgorithm: SignParams, name: string, extensions: x509.Extension[] = []): Promise<x509.Pkcs10CertificateRequest> {
  return x509.Pkcs10CertificateRequestGenerator.create({ name, keys, signingAlgorithm, extensions }, webcrypto as unknown as Parameters<typeof x509.Pkcs10CertificateRequestGenerator.create>[1]);
}

async function newKeys(generate: KeyGenParams): Promise<webcrypto.CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(generate, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
}

async function csrWithWebCrypto(params: { generate: KeyGenParams; sign: SignParams }): Promise<string> {
  return (await signedCsr(await newKeys(params.generate), params.sign, 'CN=fuzz')).toString('pem');
}

export async function csrMaterial(certificatePem: string): Promise<CsrMaterial> {
  const p256 = await Promise.all([1, 2, 3].map(async () => generateKeyPair('ecdsa-p256')));
  const rsa = await generateKeyPair('rsa-2048');
  const supported = await Promise.all(p256.map((k, i) => createCsr(k, [i === 0 ? 'certplane-agent' : `agent${i}.example.com`])));
  const rsaParams = (name: string, modulusLength: number) => ({ name, modulusLength, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' });
  const otherKeys = [
    { kind: 'rsa-2048', pem: await createCsr(rsa, ['certplane-agent']) },
    { kind: 'ecdsa-p384', pem: await csrWithWebCrypto(KEY_PARAMS['ecdsa-p384']) },
    { kind: 'ecdsa-p521', pem: await csrWithWebCrypto({ generate: { name: 'ECDSA', namedCurve: 'P-521' }, sign: { name: 'ECDSA', hash: 'SHA-512' } as webcrypto.EcdsaParams }) },
    { kind: 'ed25519', pem: await csrWithWebCrypto({ generate: { name: 'Ed25519' }, sign: { name: 'Ed25519' } }) },
    { kind: 'rsa-pss-2048', pem: await csrWithWebCrypto({ generate: rsaParams('RSA-PSS', 2048), sign: { name: 'RSA-PSS', saltLength: 32 } as webcrypto.RsaPssParams }) },
    { kind: 'rsa-1024', pem: await csrWithWebCrypto({ generate: rsaParams('RSASSA-PKCS1-v1_5', 1024), sign: { name: 'RSASSA-PKCS1-v1_5' } }) },
  ];
  return { supported, otherKeys, privateKeys: [p256[0]!.privateKeyPem, rsa.privateKeyPem], certificatePem };
}

export function pemBody(pem: string): Buffer {
  return Buffer.from(
    pem
      .split(/\r?\n/)
      .filter((l) => l && !l.startsWith('-----'))
      .join(''),
    'base64',
  );
}

export function toPem(der: Buffer, label: string, lineLength = 64): string {
  const b64 = der.toString('base64');
  const lines = lineLength > 0 ? (b64.match(new RegExp(`.{1,${lineLength}}`, 'g')) ?? ['']) : [b64];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

/** A byte edit of DER: flip bits, overwrite, insert or delete one byte at a position (taken modulo the length). */
export type ByteEdit = readonly [number, number, 'xor' | 'set' | 'insert' | 'delete'];
export const byteEdit: fc.Arbitrary<ByteEdit> = fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 }), fc.constantFrom('xor' as const, 'set' as const, 'insert' as const, 'delete' as const));

/** `der` with the edits applied in order; never empty. */
export function corruptBytes(der: Uint8Array, edits: readonly ByteEdit[]): Buffer {
  const bytes = [...der];
  for (const [at, byte, op] of edits) {
    const i = at % Math.max(1, bytes.length);
    if (op === 'xor') bytes[i] = (bytes[i] ?? 0) ^ byte;
    else if (op === 'set') bytes[i] = byte;
    else if (op === 'insert') bytes.splice(i, 0, byte);
    else bytes.splice(i, 1);
  }
  return Buffer.from(bytes.length > 0 ? bytes : [0]);
}

/** How a CSR text was made, so the oracle knows whether it is the untouched original. */
export type CsrText = { kind: 'supported' | 'other-key' | 'corrupted' | 'reframed' | 'private-key' | 'certificate' | 'garbage'; pem: string; privateKey?: string };

/** Good CSRs, CSRs whose bytes were flipped (bad signatures, broken DER), re-framed ones, private keys, certificates and PEM-looking garbage. */
export function csrText(material: CsrMaterial): fc.Arbitrary<CsrText> {
  const original = fc.constantFrom(...material.supported);
  const corrupted = fc
    .tuple(original, fc.array(byteEdit, { minLength: 1, maxLength: 4 }), fc.constantFrom(64, 76, 0))
    .map(([pem, edits, lineLength]): CsrText => ({ kind: 'corrupted', pem: toPem(corruptBytes(pemBody(pem), edits), 'CERTIFICATE REQUEST', lineLength) }));
  const reframed = fc
    .tuple(original, fc.constantFrom('crlf', 'no-newline', 'truncate-base64', 'text-before', 'text-after', 'two-blocks', 'new-label', 'wrong-label', 'no-end', 'spaces', 'comment'), fc.nat())
    .map(([pem, how, n]): CsrText => {
      const body = pem.split('\n').filter((l) => l && !l.startsWith('-----'));
      const reframe: Record<string, () => string> = {
        crlf: () => pem.replace(/\n/g, '\r\n'),
        'no-newline': () => pem.trimEnd(),
        'truncate-base64': () => toPem(pemBody(pem).subarray(0, n % pemBody(pem).length), 'CERTIFICATE REQUEST'),
        'text-before': () => `hello\n${pem}`,
        'text-after': () => `${pem}trailing words\n`,
        'two-blocks': () => `${pem}${pem}`,
        'new-label': () => pem.replace(/CERTIFICATE REQUEST/g, 'NEW CERTIFICATE REQUEST'),
        'wrong-label': () => pem.replace(/CERTIFICATE REQUEST/g, 'CERTIFICATE'),
        'no-end': () => pem.split('-----END')[0]!,
        spaces: () => `-----BEGIN CERTIFICATE REQUEST-----\n${body.join(' \n ')}\n-----END CERTIFICATE REQUEST-----`,
        comment: () => `# identity CSR\n${pem}`,
      };
      return { kind: 'reframed', pem: reframe[how]!() };
    });
  const garbage = fc.oneof(
    fc.base64String({ minLength: 4, maxLength: 600 }).map((b) => `-----BEGIN CERTIFICATE REQUEST-----\n${b}\n-----END CERTIFICATE REQUEST-----\n`),
    fc.uint8Array({ minLength: 1, maxLength: 400 }).map((b) => toPem(Buffer.from(b), 'CERTIFICATE REQUEST')),
    fc.uint8Array({ minLength: 1, maxLength: 64 }).map((b) => toPem(Buffer.concat([Buffer.from([0x30, 0x82, 0x01, 0x00]), Buffer.from(b)]), 'CERTIFICATE REQUEST')),
    fc.string({ unit: 'binary', maxLength: 200 }).map((s) => `-----BEGIN CERTIFICATE REQUEST-----\n${s}\n-----END CERTIFICATE REQUEST-----`),
    hostileString,
  );
  return fc.oneof(
    { arbitrary: original.map((pem): CsrText => ({ kind: 'supported', pem })), weight: 3 },
    { arbitrary: fc.constantFrom(...material.otherKeys).map(({ pem }): CsrText => ({ kind: 'other-key', pem })), weight: 2 },
    { arbitrary: corrupted, weight: 6 },
    { arbitrary: reframed, weight: 2 },
    { arbitrary: fc.constantFrom(...material.privateKeys).map((pem): CsrText => ({ kind: 'private-key', pem, privateKey: pem })), weight: 1 },
    {
      arbitrary: fc.tuple(original, fc.constantFrom(...material.privateKeys)).map(([csr, key]): CsrText => ({ kind: 'private-key', pem: `${csr.trimEnd()}\n${key}`, privateKey: key })),
      weight: 1,
    },
    { arbitrary: fc.constant<CsrText>({ kind: 'certificate', pem: material.certificatePem }), weight: 1 },
    { arbitrary: garbage.map((pem): CsrText => ({ kind: 'garbage', pem })), weight: 3 },
  );
}

/** The base64 lines of a PEM private key, which must never appear in a response. */
export function secretLines(privateKeyPem: string): string[] {
  return privateKeyPem.split(/\r?\n/).filter((l) => l.length >= 32 && !l.startsWith('-----'));
}

// ---------------------------------------------------------------------------------------
// Ids

/** An RFC 9562 UUID as the API's schema (zod's z.uuid()) accepts it: versions 1 to 8, variant 10xx, or nil, or max. */
export const API_UUID = /^([0-9a-f]{8}-[0-9a-f]{4}-[1-8][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}|00000000-0000-0000-0000-000000000000|ffffffff-ffff-ffff-ffff-ffffffffffff)$/i;

/** Ids of every shape: known ones, random uuids of all versions, near-uuids, and strings that are not ids at all. */
export function anyId(known: readonly string[]): fc.Arbitrary<string> {
  return fc.oneof(
    { arbitrary: fc.constantFrom(...known), weight: 4 },
    { arbitrary: fc.constantFrom(...known).map((id) => id.toUpperCase()), weight: 1 },
    { arbitrary: fc.uuid({ version: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15] }), weight: 4 },
    { arbitrary: fc.constantFrom('00000000-0000-0000-0000-000000000000', 'ffffffff-ffff-ffff-ffff-ffffffffffff', '00000000-0000-4000-8000-000000000000'), weight: 1 },
    {
      arbitrary: fc.tuple(fc.uuid(), fc.constantFrom('braces', 'no-dashes', 'trailing', 'leading-space', 'bad-variant', 'short', 'g')).map(([u, how]) => {
        const variants: Record<string, string> = {
          braces: `{${u}}`,
          'no-dashes': u.replace(/-/g, ''),
          trailing: `${u}0`,
          'leading-space': ` ${u}`,
          'bad-variant': `${u.slice(0, 19)}c${u.slice(20)}`,
          short: u.slice(0, 35),
          g: `g${u.slice(1)}`,
        };
        return variants[how]!;
      }),
      weight: 2,
    },
    { arbitrary: hostileString.filter((s) => s.length > 0), weight: 3 },
    { arbitrary: fc.integer({ min: 90, max: 2000 }).map((n) => 'a'.repeat(n)), weight: 1 },
  );
}

// ---------------------------------------------------------------------------------------
// CSRs for a certificate of an instance (the names it owns and its key policy)

/** Which names a CSR asks for, by role: resolved per instance so "own" and "another instance's" mean something. */
export type NameRole = 'own0' | 'own1' | 'other-instance' | 'wildcard-of-own' | 'own-as-suffix' | 'unrelated' | 'localhost' | 'parent';
export type CsrKeyKind = 'ecdsa-p256' | 'ecdsa-p384' | 'rsa-2048';

export interface CsrRecipe {
  readonly key: CsrKeyKind;
  /** The subject CN, a name role, or none. */
  readonly cn: { readonly role: NameRole; readonly upper: boolean } | undefined;
  readonly sans: readonly { readonly role: NameRole; readonly upper: boolean }[];
  /**
   * Extra copies of each SAN entry: none mostly, a few (de-duplicated and ordered), enough to
   * pass the names limit, or enough to pass the size limit (the 3,000-copy stall, scaled).
   */
  readonly copies: number;
  /** Byte edits of the DER after signing: bad signatures and broken encodings. */
  readonly corrupt: readonly ByteEdit[];
}

const nameRef = fc.record({
  role: fc.oneof(
    { arbitrary: fc.constantFrom<NameRole>('own0', 'own1'), weight: 6 },
    { arbitrary: fc.constantFrom<NameRole>('other-instance', 'wildcard-of-own', 'own-as-suffix', 'unrelated', 'localhost', 'parent'), weight: 3 },
  ),
  upper: fc.boolean(),
});

export const csrRecipe: fc.Arbitrary<CsrRecipe> = fc.record({
  key: fc.oneof({ arbitrary: fc.constant<CsrKeyKind>('ecdsa-p256'), weight: 6 }, { arbitrary: fc.constantFrom<CsrKeyKind>('ecdsa-p384', 'rsa-2048'), weight: 1 }),
  cn: fc.option(nameRef, { nil: undefined }),
  sans: fc.array(nameRef, { maxLength: 3 }),
  copies: fc.oneof(
    { arbitrary: fc.constant(0), weight: 12 },
    { arbitrary: fc.integer({ min: 1, max: 30 }), weight: 3 },
    { arbitrary: fc.integer({ min: 31, max: 110 }), weight: 2 },
    { arbitrary: fc.integer({ min: 500, max: 900 }), weight: 1 },
  ),
  corrupt: fc.oneof({ arbitrary: fc.constant([]), weight: 3 }, { arbitrary: fc.array(byteEdit, { minLength: 1, maxLength: 3 }), weight: 1 }),
});

/** The DNS name a role stands for, for the instance whose two names are `own`, beside `other` (another instance's). */
export function resolveName(role: NameRole, own: readonly [string, string], other: string): string {
  const names: Record<NameRole, string> = {
    own0: own[0],
    own1: own[1],
    'other-instance': other,
    'wildcard-of-own': `*.${own[0]}`,
    'own-as-suffix': `${own[0]}.evil.example.net`,
    unrelated: 'evil.example.net',
    localhost: 'localhost',
    parent: own[0].split('.').slice(1).join('.'),
  };
  return names[role];
}

const KEY_PARAMS: Record<CsrKeyKind, { generate: KeyGenParams; sign: SignParams }> = {
  'ecdsa-p256': { generate: { name: 'ECDSA', namedCurve: 'P-256' }, sign: { name: 'ECDSA', hash: 'SHA-256' } as webcrypto.EcdsaParams },
  'ecdsa-p384': { generate: { name: 'ECDSA', namedCurve: 'P-384' }, sign: { name: 'ECDSA', hash: 'SHA-384' } as webcrypto.EcdsaParams },
  'rsa-2048': { generate: { name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' }, sign: { name: 'RSASSA-PKCS1-v1_5' } },
};

/** One key pair per kind, made once: key generation (RSA above all) would dominate the runs. */
export async function csrKeys(): Promise<Record<CsrKeyKind, webcrypto.CryptoKeyPair>> {
  const entries = await Promise.all((Object.keys(KEY_PARAMS) as CsrKeyKind[]).map(async (kind) => [kind, await newKeys(KEY_PARAMS[kind].generate)] as const));
  return Object.fromEntries(entries) as Record<CsrKeyKind, webcrypto.CryptoKeyPair>;
}

/** The PEM CSR a recipe describes, signed, then corrupted as it says. */
export async function buildCsr(recipe: CsrRecipe, keys: Record<CsrKeyKind, webcrypto.CryptoKeyPair>, name: (role: NameRole) => string): Promise<string> {
  const spell = (ref: { role: NameRole; upper: boolean }) => (ref.upper ? name(ref.role).toUpperCase() : name(ref.role));
  const entries = recipe.sans.flatMap((ref) => Array.from({ length: 1 + recipe.copies }, () => ({ type: 'dns' as const, value: spell(ref) })));
  const sans = entries.length > 0 ? [new x509.SubjectAlternativeNameExtension(entries)] : [];
  const csr = await signedCsr(keys[recipe.key], KEY_PARAMS[recipe.key].sign, recipe.cn ? `CN=${spell(recipe.cn)}` : 'O=certplane fuzz', sans);
  if (recipe.corrupt.length === 0) return csr.toString('pem');
  return toPem(corruptBytes(new Uint8Array(csr.rawData), recipe.corrupt), 'CERTIFICATE REQUEST');
}

/**
 * The README's CSR limits: 4 KiB plus twice the bytes of the instance's names (4 more per
 * name), at most 16 KiB of PEM; 100 names (CERTPLANE_MAX_NAMES_PER_CERTIFICATE's default) counting duplicates.
 */
const csrLimitBytes = (owned: ReadonlySet<string>) => Math.min(16 * 1024, 4096 + 2 * [...owned].reduce((sum, name) => sum + name.length + 4, 0));
const CSR_LIMIT_NAMES = 100;

/**
 * The contract, read off the CSR with @peculiar/x509 (not certplane's parser): a CSR is
 * ordered only if it is within the instance's size allowance, parses, its signature verifies
 * with its own key, it carries at most 100 DNS names counting duplicates (SANs, and a
 * name-like subject CN not among them) and at least one, at most one subject CN and none
 * longer than 64 bytes, every name is the instance's, and its key is ECDSA P-256 (the instance's default
 * policy). `limit` names the code of a refusal the limits decide.
 */
export async function csrVerdict(pem: string, owned: ReadonlySet<string>): Promise<{ acceptable: boolean; limit?: typeof ErrorCode.CSR_TOO_LARGE | typeof ErrorCode.CSR_TOO_MANY_NAMES }> {
  if (Buffer.byteLength(pem) > csrLimitBytes(owned)) return { acceptable: false, limit: ErrorCode.CSR_TOO_LARGE };
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(pemBody(pem));
    if (!(await csr.verify(webcrypto as unknown as Parameters<typeof csr.verify>[0]))) return { acceptable: false };
  } catch {
    return { acceptable: false };
  }
  const san = csr.extensions.find((e): e is x509.SubjectAlternativeNameExtension => e instanceof x509.SubjectAlternativeNameExtension);
  const entries = (san?.names.items ?? []).filter((n) => n.type === 'dns').map((n) => n.value.toLowerCase());
  const names = new Set(entries);
  const cn = (csr.subjectName.getField('CN')[0] as string | undefined)?.toLowerCase();
  const extraCn = cn !== undefined && /^[a-z0-9*._-]+$/.test(cn) && !names.has(cn);
  if (extraCn) names.add(cn);
  if (entries.length + (extraCn ? 1 : 0) > CSR_LIMIT_NAMES) return { acceptable: false, limit: ErrorCode.CSR_TOO_MANY_NAMES };
  // Let's Encrypt's 64 bytes for a CN, which the plane checks before any order.
  const cns = csr.subjectName.getField('CN');
  if (cns.length > 1 || cns.some((value) => Buffer.byteLength(value, 'utf8') > 64)) return { acceptable: false };
  const algorithm = csr.publicKey.algorithm as webcrypto.EcKeyAlgorithm;
  return { acceptable: names.size > 0 && [...names].every((n) => owned.has(n)) && algorithm.name === 'ECDSA' && algorithm.namedCurve === 'P-256' };
}

// ---------------------------------------------------------------------------------------
// Secret material and line injection

const PRIVATE_KEY_LABELS = ['PRIVATE KEY', 'RSA PRIVATE KEY', 'EC PRIVATE KEY', 'DSA PRIVATE KEY', 'ENCRYPTED PRIVATE KEY', 'OPENSSH PRIVATE KEY'] as const;

/**
 * A PEM private key as a field holds it once parsed, in the shapes that slip past a
 * pattern over raw text: on one line, re-wrapped with tabs, CRs or vertical tabs, the
 * label spaced oddly, in lower case, with text around it.
 */
export const pemPrivateKey: fc.Arbitrary<string> = fc
  .record({
    label: fc.constantFrom(...PRIVATE_KEY_LABELS),
    body: fc.base64String({ minLength: 4, maxLength: 96 }),
    wrap: fc.constantFrom('\n', ' ', '', '\r\n', '\t', '\u000b', '  \n '),
    labelSpace: fc.constantFrom(' ', '  ', '\t', '\n '),
    lowerCase: fc.boolean(),
    before: fc.string({ maxLength: 8 }),
    after: fc.string({ maxLength: 8 }),
  })
  .map(({ label, body, wrap, labelSpace, lowerCase, before, after }) => {
    const spaced = label.replaceAll(' ', labelSpace);
    const pem = `-----BEGIN ${spaced}-----${wrap}MIIEvQIBADANBgkqhkiG9w0BAQEFAASC${wrap}${body}${wrap}-----END ${spaced}-----`;
    return `${before}${lowerCase ? pem.toLowerCase() : pem}${after}`;
  });

/** Which characters inside JSON strings `withJsonEscapes` writes as \u escapes. */
export type JsonEscapes = 'dashes' | 'letters' | 'all';
export const jsonEscapes: fc.Arbitrary<JsonEscapes> = fc.constantFrom('dashes', 'letters', 'all');

/**
 * The same JSON value in other bytes: characters inside its strings (keys included)
 * written as \u escapes, as `\u002d` for "-". JSON.parse gives back the same value, so
 * an oracle reads the value; a filter over the raw text sees something else.
 */
export function withJsonEscapes(json: string, which: JsonEscapes): string {
  const pick = which === 'dashes' ? /^-$/ : which === 'letters' ? /^[A-Za-z]$/ : /^[\s\S]$/;
  return json.replace(/"(?:[^"\\]|\\.)*"/g, (literal) => {
    const inner = literal.slice(1, -1).replace(/\\u[0-9a-fA-F]{4}|\\.|[\s\S]/g, (token) => (pick.test(token) ? `\\u${token.charCodeAt(0).toString(16).padStart(4, '0')}` : token));
    return `"${inner}"`;
  });
}

/** A body as sent, or (sometimes, for JSON renderings) with its strings partly \u-escaped. */
export function sometimesEscaped(body: EncodedBody): fc.Arbitrary<EncodedBody> {
  if (body.payload === undefined || !['json', 'json-charset', 'duplicate-keys'].includes(body.mode)) return fc.constant(body);
  const payload = body.payload;
  return fc.oneof({ arbitrary: fc.constant(body), weight: 4 }, { arbitrary: jsonEscapes.map((which): EncodedBody => ({ ...body, payload: withJsonEscapes(payload, which) })), weight: 1 });
}

/**
 * Free text that would add a row to a table or a line to a log if printed as it is: a
 * line break (LF, CRLF, CR, NEL, vertical tab, form feed) or a terminal escape, then a
 * forged record.
 */
export const lineInjection: fc.Arbitrary<string> = fc
  .tuple(
    fc.string({ minLength: 1, maxLength: 12 }),
    fc.constantFrom('\n', '\r\n', '\r', '\u0085', '\u000b', '\f', '\u001b[2K\r', '\u0000'),
    fc.constantFrom(`sha256:${'ff'.repeat(32)}  root  admin  all clusters  until -  active`, '{"level":30,"msg":"forged"}', 'admin-socket:root  client.register  -  -'),
  )
  .map(([text, separator, forged]) => `${text}${separator}${forged}`);

/**
 * The README's rule, as the oracles' model: a value holds private-key material when one
 * of its strings or keys, with whitespace and control characters dropped, has a PEM
 * BEGIN or END line of a private key, in any letter case.
 */
export function holdsPrivateKey(value: unknown): boolean {
  if (typeof value === 'string') return /-----(BEGIN|END)[A-Z]*PRIVATEKEY-----/i.test(value.replace(/[\s\p{Cc}]/gu, ''));
  if (Array.isArray(value)) return value.some(holdsPrivateKey);
  if (value !== null && typeof value === 'object') return Object.entries(value).some(([k, v]) => holdsPrivateKey(k) || holdsPrivateKey(v));
  return false;
}
