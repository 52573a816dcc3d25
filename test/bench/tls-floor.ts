/**
 * The floor under the plane's memory per agent: a bare Node HTTPS server asking for client
 * certificates, with a ws WebSocketServer on it and nothing else, holding `count` WebSocket
 * connections made with a client certificate, as the agents' are. Prints the bare server's
 * RSS per connection, which the plane's (agents-scale.ts) is to be read beside:
 * `node dist/test/bench/tls-floor.js [count]` (default 1000). The server runs in a process of
 * its own (this file, with `serve` as its argument), so its RSS is its own.
 */
import { fork } from 'node:child_process';
import { createServer } from 'node:https';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { WebSocket, WebSocketServer } from 'ws';
import { EKU, generateKeyPair, issueCertificate, loopbackServerCertificate } from '../../src/pki/factory.js';

if (process.argv[2] === 'serve') {
  const { cert, key } = JSON.parse(process.env.TLS_FLOOR_SERVER as string) as { cert: string; key: string };
  const server = createServer({ cert, key, requestCert: true, rejectUnauthorized: false });
  const wss = new WebSocketServer({ noServer: true });
  server.on('upgrade', (request, socket, head) => {
    (request.socket as import('node:tls').TLSSocket).getPeerCertificate();
    wss.handleUpgrade(request, socket, head, (ws) => ws.send('hello'));
  });
  server.listen(0, '127.0.0.1', () => process.send?.((server.address() as { port: number }).port));
  process.on('disconnect', () => process.exit(0));
} else {
  const count = Number(process.argv[2] ?? 1000);
  const listener = await loopbackServerCertificate('tls floor CA');
  const clientKey = await generateKeyPair();
  const client = await issueCertificate({ subject: 'CN=floor', key: clientKey, extendedKeyUsage: [EKU.clientAuth] });
  const child = fork(fileURLToPath(import.meta.url), ['serve'], { env: { ...process.env, TLS_FLOOR_SERVER: JSON.stringify({ cert: listener.certPem, key: listener.keyPem }) } });
  const port = await new Promise<number>((resolve) => child.once('message', (message) => resolve(message as number)));
  const rss = async () => Number(/VmRSS:\s+(\d+)/.exec(await readFile(`/proc/${child.pid}/status`, 'utf8'))?.[1] ?? 0);
  await new Promise((resolve) => setTimeout(resolve, 500));
  const before = await rss();
  const sockets: WebSocket[] = [];
  for (let i = 0; i < count; i += 50) {
    await Promise.all(
      Array.from({ length: Math.min(50, count - i) }, () => {
        const socket = new WebSocket(`wss://127.0.0.1:${port}/`, { cert: client.pem, key: clientKey.privateKeyPem, ca: listener.caPem, handshakeTimeout: 30_000 });
        sockets.push(socket);
        return new Promise<void>((resolve, reject) => {
          socket.once('message', () => resolve());
          socket.once('error', reject);
        });
      }),
    );
  }
  await new Promise((resolve) => setTimeout(resolve, 3000));
  const after = await rss();
  process.stdout.write(`bare HTTPS + ws server, ${count} WebSocket connections with client certificates: RSS ${(before / 1024).toFixed(0)} -> ${(after / 1024).toFixed(0)} MiB, ${((after - before) / count).toFixed(1)} KiB per connection\n`);
  for (const socket of sockets) socket.terminate();
  child.disconnect();
  child.kill();
}
