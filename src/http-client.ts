/**
 * One HTTP(S) request to the management plane from its clients (the agent's enrollment,
 * the on-call CLI), with the TLS material they bring: node:https because fetch takes no
 * client certificate or private CA. Rejects with the transport's error; callers give it
 * their own code.
 */
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';

export interface ClientTls {
  readonly cert?: string;
  readonly key?: string;
  readonly ca?: string;
}

export function sendHttp(url: URL, options: { method: string; headers?: Record<string, string>; body?: string; tls?: ClientTls; timeoutMs?: number }): Promise<{ status: number; text: string }> {
  const https = url.protocol === 'https:';
  const send = https ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = send(url, { method: options.method, headers: options.headers ?? {}, timeout: options.timeoutMs ?? 30_000, ...(https ? options.tls : {}) }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${(options.timeoutMs ?? 30_000) / 1000} s`)));
    req.on('error', reject);
    req.end(options.body);
  });
}
