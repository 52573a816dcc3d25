/**
 * An HTTPS reverse proxy in front of Pebble's ACME listener that adds what Pebble 2.4
 * lacks: a renewalInfo resource (RFC 9773) and meta.profiles in the directory. It forwards
 * every request unchanged, Host header included: Pebble builds the URLs in its answers
 * and checks each JWS "url" header against the Host it receives, so the client sees the
 * proxy's URLs and its signatures stay valid. Every JWS POST's decoded payload is
 * recorded by path, so tests assert what the real acme-client put on the wire.
 */
import { Agent, createServer, request, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { loopbackServerCertificate } from '../../src/pki/factory.js';

/** What GET /renewal-info/{certId} answers for one certificate. */
export interface RenewalWindow {
  readonly start: Date;
  readonly end: Date;
  /** The Retry-After header, verbatim (seconds or an HTTP date); omitted when undefined. */
  readonly retryAfter?: string;
  readonly explanationUrl?: string;
}

/** One JWS POST as the proxy saw it: the decoded payload, null for POST-as-GET. */
export interface RecordedPost {
  readonly path: string;
  readonly payload: unknown;
  /** Pebble's answer status, once it answered: 201 for a created order, 400 for a rejected nonce. */
  status?: number;
}

/** Where Pebble is and which extensions to pretend it has: tests vary these to see what the client sends. */
export interface AcmeProxyOptions {
  /** Pebble's directory URL, https://127.0.0.1:PORT/dir. */
  readonly upstreamDirectoryUrl: string;
  /** The CA that signed Pebble's listener. */
  readonly upstreamCaPem: string;
  /** meta.profiles to advertise; none when omitted. */
  readonly profiles?: Record<string, string>;
  /** Advertise renewalInfo in the directory (default true). */
  readonly renewalInfo?: boolean;
}

/** The running proxy: what to hand the ACME client, and what the client sent through it. */
export interface AcmeProxy {
  /** https://127.0.0.1:PORT/dir, to give the ACME client instead of Pebble's. */
  readonly directoryUrl: string;
  /** https://127.0.0.1:PORT/renewal-info, as advertised in the directory. */
  readonly renewalInfoUrl: string;
  /** The CA of the proxy's own listener certificate. */
  readonly caPem: string;
  /** Every JWS POST in arrival order. */
  readonly posts: readonly RecordedPost[];
  /** Every certId asked for at /renewal-info, in order, known or not. */
  readonly renewalInfoRequests: readonly string[];
  /** The decoded payloads POSTed to `path` (e.g. "/order-plz"), in order. */
  payloadsTo(path: string): unknown[];
  /** How many POSTs to `path` Pebble answered 201 Created: orders it really made, not nonce rejections retried. */
  createdAt(path: string): number;
  /** Makes /renewal-info/{certId} answer 200 with this window; unknown certIds answer 404. */
  setRenewalWindow(certId: string, window: RenewalWindow): void;
  close(): Promise<void>;
}

const MAX_BODY_BYTES = 1024 * 1024;
const MAX_RECORDED_POSTS = 10_000;
const UPSTREAM_TIMEOUT_MS = 10_000;
const RENEWAL_INFO_PATH = '/renewal-info';

/** Starts the proxy on 127.0.0.1 with a listener certificate from a CA of its own. */
export async function startAcmeProxy(options: AcmeProxyOptions): Promise<AcmeProxy> {
  const upstream = new URL(options.upstreamDirectoryUrl);
  const upstreamAgent = new Agent({ ca: options.upstreamCaPem, keepAlive: true, maxSockets: 16 });
  const listener = await loopbackServerCertificate('certplane test ACME proxy CA');
  const posts: RecordedPost[] = [];
  const renewalInfoRequests: string[] = [];
  const windows = new Map<string, RenewalWindow>();
  let origin = '';

  const forward = (req: IncomingMessage, res: ServerResponse, body: Buffer, rewrite?: (answer: Buffer) => Buffer, answered?: (status: number) => void): void => {
    const headers = { ...req.headers, ...(rewrite ? { 'accept-encoding': 'identity' } : {}) };
    const outgoing = request(
      { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers, agent: upstreamAgent, timeout: UPSTREAM_TIMEOUT_MS },
      (answer) => {
        answered?.(answer.statusCode ?? 502);
        if (!rewrite) {
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          answer.pipe(res);
          return;
        }
        readBody(answer)
          .then((raw) => {
            const rewritten = answer.statusCode === 200 ? rewrite(raw) : raw;
            res.writeHead(answer.statusCode ?? 502, { ...answer.headers, 'content-length': String(rewritten.length) });
            res.end(rewritten);
          })
          .catch((error: Error) => fail(res, 502, `rewriting Pebble's answer: ${error.message}`));
      },
    );
    outgoing.on('timeout', () => outgoing.destroy(new Error(`Pebble did not answer within ${UPSTREAM_TIMEOUT_MS} ms`)));
    outgoing.on('error', (error) => fail(res, 502, error.message));
    outgoing.end(body);
  };

  const addExtensions = (raw: Buffer): Buffer => {
    const directory = JSON.parse(raw.toString('utf8')) as Record<string, unknown> & { meta?: Record<string, unknown> };
    if (options.renewalInfo ?? true) directory.renewalInfo = `${origin}${RENEWAL_INFO_PATH}`;
    if (options.profiles) directory.meta = { ...directory.meta, profiles: options.profiles };
    return Buffer.from(JSON.stringify(directory));
  };

  const serveRenewalInfo = (certId: string, res: ServerResponse): void => {
    renewalInfoRequests.push(certId);
    const window = windows.get(certId);
    if (!window) return fail(res, 404, `no renewal information for ${certId}`);
    res.writeHead(200, { 'content-type': 'application/json', ...(window.retryAfter === undefined ? {} : { 'retry-after': window.retryAfter }) });
    res.end(
      JSON.stringify({
        suggestedWindow: { start: window.start.toISOString(), end: window.end.toISOString() },
        ...(window.explanationUrl ? { explanationURL: window.explanationUrl } : {}),
      }),
    );
  };

  const route = (req: IncomingMessage, res: ServerResponse, body: Buffer): void => {
    const path = new URL(req.url ?? '/', origin).pathname;
    if (req.method === 'GET' && path.startsWith(`${RENEWAL_INFO_PATH}/`)) return serveRenewalInfo(decodeURIComponent(path.slice(RENEWAL_INFO_PATH.length + 1)), res);
    let post: RecordedPost | undefined;
    if (req.method === 'POST') {
      if (posts.length >= MAX_RECORDED_POSTS) return fail(res, 503, `the proxy recorded ${MAX_RECORDED_POSTS} POSTs already; a test that needs more is not bounded`);
      post = { path, payload: decodeJwsPayload(body) };
      posts.push(post);
    }
    forward(req, res, body, req.method === 'GET' && path === upstream.pathname ? addExtensions : undefined, (status) => {
      if (post) post.status = status;
    });
  };

  const server: Server = createServer({ cert: listener.certPem, key: listener.keyPem }, (req, res) => {
    readBody(req, MAX_BODY_BYTES)
      .then(
        (body) => route(req, res, body),
        (error: Error) => fail(res, 413, error.message),
      )
      .catch((error: Error) => fail(res, 500, error.message));
  });
  server.requestTimeout = UPSTREAM_TIMEOUT_MS * 2;
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
  origin = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;

  return {
    directoryUrl: `${origin}${upstream.pathname}`,
    renewalInfoUrl: `${origin}${RENEWAL_INFO_PATH}`,
    caPem: listener.caPem,
    posts,
    renewalInfoRequests,
    payloadsTo: (path) => posts.filter((post) => post.path === path).map((post) => post.payload),
    createdAt: (path) => posts.filter((post) => post.path === path && post.status === 201).length,
    setRenewalWindow: (certId, window) => void windows.set(certId, window),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
        upstreamAgent.destroy();
      }),
  };
}

/** The JWS payload (RFC 7515 flattened JSON, base64url) as JSON; null for POST-as-GET; the raw body when it is not a JWS. */
function decodeJwsPayload(body: Buffer): unknown {
  try {
    const { payload } = JSON.parse(body.toString('utf8')) as { payload: string };
    return payload === '' ? null : JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
  } catch {
    return body.toString('utf8');
  }
}

function readBody(stream: IncomingMessage, limit = Number.POSITIVE_INFINITY): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    stream.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        stream.pause();
        reject(new Error(`request body over ${limit} bytes`));
        return;
      }
      chunks.push(chunk);
    });
    stream.on('end', () => resolve(Buffer.concat(chunks)));
    stream.on('error', reject);
  });
}

function fail(res: ServerResponse, status: number, detail: string): void {
  if (res.headersSent) return void res.destroy();
  res.writeHead(status, { 'content-type': 'application/problem+json' });
  res.end(JSON.stringify({ type: 'urn:ietf:params:acme:error:malformed', detail }));
}

