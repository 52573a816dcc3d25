/**
 * The agent channel's messages, written once with zod and validated on both ends.
 * Versioned (`v`), bounded in size, and with no field that could carry a private key:
 * CSRs, public chains, fingerprints and challenge responses are all that ever travel.
 * A frame carrying a PEM private-key block is refused: its text before parsing, and every
 * string (and key) of it after, so that a JSON escape cannot hide a block.
 */
import { z } from 'zod';
import { CertplaneError } from '../errors.js';
import { describeIssues } from '../validation.js';
import { carriesPrivateKey, refusePrivateKey } from '../untrusted-text.js';
import { ChannelCloseCode, ErrorCode } from '../error-catalogue.js';
import { KEY_ALGORITHMS } from '../chain/index.js';

export const PROTOCOL_VERSION = 1;
/** Larger than any chain plus report; small enough that one agent cannot exhaust the plane's memory. */
export const MAX_MESSAGE_BYTES = 256 * 1024;
/** WebSocket path of the agent channel. */
export const CHANNEL_PATH = '/v1/agents/channel';

const id = z.string().min(1).max(128);
const pem = (label: string) => z.string().max(MAX_MESSAGE_BYTES).includes(`-----BEGIN ${label}-----`);
const hex64 = z.string().regex(/^[0-9a-f]{64}$/);
const hostname = z.string().min(1).max(253);
export const KeyAlgorithm = z.enum(KEY_ALGORITHMS);
export type KeyAlgorithm = z.infer<typeof KeyAlgorithm>;

const base = { v: z.literal(PROTOCOL_VERSION) };

const base64url = (max: number) => z.string().regex(/^[A-Za-z0-9_-]*$/).max(max);
/** A flattened JWS: what an ACME server accepts as a request body. */
export const RevocationJws = z.strictObject({ protected: base64url(8192), payload: base64url(32 * 1024), signature: base64url(2048) });
export type RevocationJws = z.infer<typeof RevocationJws>;

/** Probes one served-chain report may carry: a few targets times the instance's names, bounded. */
export const MAX_PROBES_PER_REPORT = 32;
/** Certificates of one served chain; no real chain is longer (the verifier stops at 8). */
export const MAX_SERVED_CHAIN = 10;
/** One certificate as base64 DER: 12 KiB of DER is more than a leaf with a hundred names needs. */
export const MAX_SERVED_CERTIFICATE_CHARS = 16 * 1024;
const certificateDer = z.string().regex(/^[A-Za-z0-9+/]+={0,2}$/).max(MAX_SERVED_CERTIFICATE_CHARS);
/** What an SNI in a report may be: a DNS name in its ASCII form. */
export const SERVED_SNI = /^[A-Za-z0-9.-]+$/;
/** Where the agent connected: HOST:PORT, an IPv6 address in brackets, postgres:// before it for a PostgreSQL server. */
const probeTarget = z.string().max(273).regex(/^(postgres:\/\/)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/);
const probeSni = hostname.regex(SERVED_SNI).nullable();
/**
 * One TLS connection the agent made to the service on its instance: the certificates the
 * service sent (leaf first, as the agent's TLS client linked them), or why there were none.
 */
export const ServedProbe = z.union([
  z.strictObject({ target: probeTarget, sni: probeSni, certificates: z.array(certificateDer).min(1).max(MAX_SERVED_CHAIN) }),
  z.strictObject({ target: probeTarget, sni: probeSni, unreachable: z.strictObject({ code: z.string().min(1).max(64), message: z.string().max(500) }) }),
]);
export type ServedProbe = z.infer<typeof ServedProbe>;

/** Server to agent. */
export const ServerMessage = z.discriminatedUnion('type', [
  /** First frame: a fresh nonce the agent signs with its identity key to prove who it is. */
  z.strictObject({ ...base, type: z.literal('hello'), nonce: z.string().min(32).max(128) }),
  /** Authentication accepted. */
  z.strictObject({ ...base, type: z.literal('welcome'), instanceId: id }),
  /** Generate a fresh key for this certificate, keep it pending, send a CSR for these names. */
  z.strictObject({ ...base, type: z.literal('csr_request'), certificateId: id, hostnames: z.array(hostname).min(1).max(100), keyAlgorithm: KeyAlgorithm }),
  /** Serve this key authorization at /.well-known/acme-challenge/TOKEN until withdrawn. */
  z.strictObject({ ...base, type: z.literal('http01_serve'), requestId: id, token: z.string().min(1).max(256), keyAuthorization: z.string().min(1).max(512) }),
  z.strictObject({ ...base, type: z.literal('http01_withdraw'), requestId: id, token: z.string().min(1).max(256) }),
  /** The verified chain for the pending key of `certificateId`. */
  z.strictObject({ ...base, type: z.literal('deliver'), certificateId: id, fullchainPem: pem('CERTIFICATE'), fingerprintSha256: hex64 }),
  /** A new agent certificate for the new identity key the agent asked for; the old one stops authenticating once the new one has. */
  z.strictObject({ ...base, type: z.literal('identity_renewed'), certificatePem: pem('CERTIFICATE') }),
  /** The renewal was refused (too early, too soon after the last one): nothing was minted; ask again from `retryAt`. */
  z.strictObject({ ...base, type: z.literal('identity_renewal_refused'), code: z.string().max(64), message: z.string().max(2000), retryAt: z.iso.datetime() }),
  /** The certificate request was abandoned (failed or superseded): drop its pending key. */
  z.strictObject({ ...base, type: z.literal('cancel'), certificateId: id, reason: z.string().max(2000) }),
  /**
   * Sign an ACME revocation request (RFC 8555 §7.6) for `certificate` (base64url DER) with
   * that certificate's own key, which only the instance holds: the plane fetched `nonce` for
   * `url` and posts the signed request itself. The agent builds the payload from these fields
   * and signs nothing but a revocation of a certificate whose key it holds. Answered with
   * revocation_signed, or error with the same requestId.
   */
  z.strictObject({
    ...base,
    type: z.literal('revocation_sign'),
    requestId: id,
    certificateId: id,
    url: z.url().max(2048),
    nonce: z.string().min(1).max(512),
    certificate: z.string().regex(/^[A-Za-z0-9_-]+$/).max(16 * 1024),
    reason: z.number().int().min(0).max(10),
  }),
]);
export type ServerMessage = z.infer<typeof ServerMessage>;

/** Agent to server. */
export const AgentMessage = z.discriminatedUnion('type', [
  /** Answer to hello: the agent certificate and a signature over the nonce by its key (base64). */
  z.strictObject({ ...base, type: z.literal('auth'), certificatePem: pem('CERTIFICATE'), signature: z.string().min(1).max(2048), agentVersion: z.string().max(64) }),
  /** What the instance serves now, sent after welcome so the plane knows reality, not only what it delivered. */
  z.strictObject({ ...base, type: z.literal('status'), installedFingerprintSha256: hex64.nullable(), pendingCertificateIds: z.array(id).max(16) }),
  z.strictObject({ ...base, type: z.literal('csr'), certificateId: id, csrPem: pem('CERTIFICATE REQUEST') }),
  z.strictObject({ ...base, type: z.literal('http01_ready'), requestId: id }),
  /** Renewal of the agent's own certificate, before it expires: the CSR of a fresh identity key. */
  z.strictObject({ ...base, type: z.literal('identity_renewal'), csrPem: pem('CERTIFICATE REQUEST') }),
  z.strictObject({ ...base, type: z.literal('installed'), certificateId: id, fingerprintSha256: hex64 }),
  /** The agent refused or failed to install; the reason is shown in the API. */
  z.strictObject({ ...base, type: z.literal('install_failed'), certificateId: id, code: z.string().max(64), message: z.string().max(2000) }),
  z.strictObject({ ...base, type: z.literal('error'), requestId: id.optional(), code: z.string().max(64), message: z.string().max(2000) }),
  /**
   * What the service on the instance serves (`certplane agent --probe`), after every
   * installation and every probe interval: public certificates only, judged by the plane
   * for this agent's own instance. Nothing in it names an instance or a certificate.
   */
  z.strictObject({ ...base, type: z.literal('served'), probes: z.array(ServedProbe).min(1).max(MAX_PROBES_PER_REPORT) }),
  /** The revocation request of revocation_sign, signed with the certificate's key: a flattened JWS (RFC 7515 §7.2.2) as acme-client makes it. */
  z.strictObject({ ...base, type: z.literal('revocation_signed'), requestId: id, jws: RevocationJws }),
]);
export type AgentMessage = z.infer<typeof AgentMessage>;

/** Decodes one frame with `schema`: size, private-key and shape checks, each with its own code. */
export function decodeMessage<T>(schema: z.ZodType<T>, frame: string | Buffer): T {
  const size = typeof frame === 'string' ? Buffer.byteLength(frame) : frame.length;
  if (size > MAX_MESSAGE_BYTES) throw new CertplaneError(ErrorCode.CHANNEL_MESSAGE_TOO_LARGE, `message of ${size} bytes exceeds the ${MAX_MESSAGE_BYTES}-byte limit`);
  const text = typeof frame === 'string' ? frame : frame.toString('utf8');
  if (carriesPrivateKey(text)) throw new CertplaneError(ErrorCode.CHANNEL_PRIVATE_KEY_REFUSED, 'message contains a PEM private-key block; private keys never travel on the channel');
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new CertplaneError(ErrorCode.CHANNEL_MESSAGE_NOT_JSON, 'message is not JSON');
  }
  refusePrivateKey(json, 'message', ErrorCode.CHANNEL_PRIVATE_KEY_REFUSED);
  const version = (json as { v?: unknown } | null)?.v;
  if (version !== PROTOCOL_VERSION) throw new CertplaneError(ErrorCode.CHANNEL_VERSION_UNSUPPORTED, `protocol version ${JSON.stringify(version)} is not supported (this side speaks ${PROTOCOL_VERSION})`);
  const parsed = schema.safeParse(json);
  if (!parsed.success) {
    throw new CertplaneError(ErrorCode.CHANNEL_MESSAGE_INVALID, `invalid message: ${describeIssues(parsed.error.issues, { whole: 'message' }).join('; ')}`);
  }
  return parsed.data;
}

/** Encodes a message after the same checks the receiver applies, so a bug here fails loudly on the sender. */
export function encodeMessage<T>(schema: z.ZodType<T>, message: T): string {
  const text = JSON.stringify(message);
  decodeMessage(schema, text);
  return text;
}

/**
 * WebSocket close codes used by the channel (4000-4999 are for applications). Those an error
 * decides come from the error catalogue; REVOKED cuts a live session whose certificate was revoked.
 */
export const CloseCode = {
  ...ChannelCloseCode,
  REVOKED: 4003,
  REPLACED: 4009,
  SHUTDOWN: 1001,
} as const;

/**
 * When an agent certificate may be renewed: past two thirds of its lifetime, leaving a third
 * for an agent that was offline. The agent asks from then on and the plane refuses earlier
 * requests, so a stolen key cannot mint a stream of fresh certificates.
 */
export function identityRenewalOpensAt(validity: { notBefore: Date; notAfter: Date }): Date {
  const lifetime = validity.notAfter.getTime() - validity.notBefore.getTime();
  return new Date(validity.notBefore.getTime() + Math.ceil((2 / 3) * lifetime));
}

/** What the agent signs to authenticate: the nonce bound to the channel's purpose. */
export function authPayload(nonce: string): Buffer {
  return Buffer.from(`certplane-agent-auth:v${PROTOCOL_VERSION}:${nonce}`);
}
