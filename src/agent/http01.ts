/**
 * Answers ACME http-01 validation on the instance itself, for hostnames whose DNS the
 * operator does not control: the plane relays the token and key authorization over the
 * channel, the CA fetches them here. Responses live in memory only, since a challenge
 * outlives neither the order nor the agent process.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { CertplaneError } from '../errors.js';
import { ErrorCode } from '../error-catalogue.js';

const CHALLENGE_PATH = '/.well-known/acme-challenge/';
/** RFC 8555 tokens are base64url; the bound keeps a hostile request from costing anything. */
const TOKEN = /^[A-Za-z0-9_-]{1,256}$/;
const BASE64URL = /^[A-Za-z0-9_-]+$/;
/** Validators fetch a few bytes; anything slower is not a validator. */
const REQUEST_TIMEOUT_MS = 10_000;

/** Where to listen; port 0 asks the kernel for a free port (tests), the CA itself always comes to port 80. */
export interface Http01ListenOptions {
  readonly host: string;
  readonly port: number;
}

/** Serves /.well-known/acme-challenge/TOKEN for the tokens the plane asked for, and nothing else. */
export class Http01Responder {
  private readonly responses = new Map<string, string>();
  private server: Server | undefined;

  constructor(private readonly listen: Http01ListenOptions) {}

  /**
   * Starts answering for `token`. The key authorization must be "TOKEN.THUMBPRINT"
   * (RFC 8555 section 8.1): a mismatched pair would only fail validation later, at the CA,
   * with a far less helpful message.
   */
  serve(token: string, keyAuthorization: string): void {
    assertToken(token);
    const thumbprint = keyAuthorization.startsWith(`${token}.`) ? keyAuthorization.slice(token.length + 1) : '';
    if (!BASE64URL.test(thumbprint) || thumbprint.length > 256) {
      throw new CertplaneError(
        ErrorCode.AGENT_BAD_KEY_AUTHORIZATION,
        `The key authorization for token ${token} is not "<token>.<base64url account-key thumbprint>"; the plane sent a mismatched challenge and should retry it.`,
        { token },
      );
    }
    this.responses.set(token, keyAuthorization);
  }

  /** Stops answering for `token` once the CA has validated (or the order is gone); unknown tokens are ignored. */
  withdraw(token: string): void {
    this.responses.delete(token);
  }

  /** Listens on the configured address and returns the bound one (the real port when 0 was asked). */
  async start(): Promise<Http01ListenOptions> {
    const server = createServer((request, response) => this.answer(request, response));
    server.requestTimeout = REQUEST_TIMEOUT_MS;
    server.headersTimeout = REQUEST_TIMEOUT_MS;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.listen.port, this.listen.host, () => {
        server.off('error', reject);
        resolve();
      });
    }).catch((cause: NodeJS.ErrnoException) => {
      throw new CertplaneError(
        ErrorCode.AGENT_HTTP01_LISTEN_FAILED,
        `The http-01 responder could not listen on ${this.listen.host}:${this.listen.port} (${cause.code ?? cause.message}); free the port or grant the agent the right to bind it (e.g. CAP_NET_BIND_SERVICE for port 80).`,
        { host: this.listen.host, port: this.listen.port, errno: cause.code ?? null },
        { cause },
      );
    });
    this.server = server;
    const address = server.address() as AddressInfo;
    return { host: address.address, port: address.port };
  }

  /** Closes the listener and any kept-alive connection, so stopping never waits on a client. */
  async stop(): Promise<void> {
    const server = this.server;
    if (server === undefined) return;
    this.server = undefined;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeAllConnections();
    await closed;
  }

  private answer(request: IncomingMessage, response: ServerResponse): void {
    if (request.method !== 'GET' && request.method !== 'HEAD') {
      response.writeHead(405, { Allow: 'GET, HEAD', 'Content-Type': 'text/plain' }).end('method not allowed\n');
      return;
    }
    const pathname = (request.url ?? '').split('?')[0] ?? '';
    if (!pathname.startsWith(CHALLENGE_PATH)) {
      response.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found\n');
      return;
    }
    const token = pathname.slice(CHALLENGE_PATH.length);
    if (!TOKEN.test(token)) {
      response.writeHead(400, { 'Content-Type': 'text/plain' }).end('malformed token\n');
      return;
    }
    const keyAuthorization = this.responses.get(token);
    if (keyAuthorization === undefined) {
      response.writeHead(404, { 'Content-Type': 'text/plain' }).end('unknown token\n');
      return;
    }
    response.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': Buffer.byteLength(keyAuthorization) }).end(request.method === 'GET' ? keyAuthorization : undefined);
  }
}

function assertToken(token: string): void {
  if (!TOKEN.test(token)) {
    throw new CertplaneError(
      ErrorCode.AGENT_BAD_CHALLENGE_TOKEN,
      `Challenge token ${JSON.stringify(token.slice(0, 80))} is not 1 to 256 base64url characters; the agent serves only RFC 8555 tokens.`,
      { token: token.slice(0, 80) },
    );
  }
}
