/**
 * The listener serves a bounded number of TLS handshakes at once (src/api/handshakes.ts):
 * in a storm of agents dialling together, handshakes begun and not finished stay under the
 * limit while the others wait unread, and a connection that waited too long is closed
 * unread. Real TLS over loopback; the storm's clients run in another process, which holds
 * its own loop once every ClientHello is sent, as loaded agents answer late in a storm.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { connect as connectTcp, type Socket } from 'node:net';
import { connect as connectTls, type Server as TlsServer, type TLSSocket } from 'node:tls';
import { after, describe, test } from 'node:test';
import type { HandshakeLimits } from '../../src/api/handshakes.js';
import { loopbackServerCertificate } from '../../src/pki/factory.js';
import { startTestPlane, type TestPlane } from '../support/plane.js';

const STORM = 80;

/**
 * Dials `count` TLS connections at once from a child process, which stops answering for a
 * second once every connection has sent its ClientHello; resolves with how many finished
 * their handshake.
 */
function storm(port: number, count: number): Promise<{ secure: number; errors: string[] }> {
  const script = `
    const tls = require('node:tls');
    const [port, count] = process.argv.slice(1).map(Number);
    let connected = 0, ended = 0, secure = 0; const errors = [];
    const end = () => { if (++ended === count) { console.log(JSON.stringify({ secure, errors })); process.exit(0); } };
    for (let i = 0; i < count; i++) {
      const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => { secure++; socket.destroy(); end(); });
      socket.on('connect', () => { if (++connected === count) setImmediate(() => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1000)); });
      socket.on('error', (error) => { errors.push(error.message); end(); });
    }
  `;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', script, String(port), String(count)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    child.on('error', reject);
    child.on('exit', () => {
      try {
        resolve(JSON.parse(out.trim()));
      } catch {
        reject(new Error(`the storm's process printed ${JSON.stringify(out)}`));
      }
    });
  });
}

/**
 * The most handshakes the server had begun (it derived its first key for the connection,
 * on the client's ClientHello) and not yet finished, at any moment.
 */
function mostInProgress(server: TlsServer): () => number {
  const begun = new WeakSet<TLSSocket>();
  const ended = new WeakSet<TLSSocket>();
  let inProgress = 0;
  let most = 0;
  server.on('keylog', (_line: Buffer, socket: TLSSocket) => {
    if (begun.has(socket)) return;
    begun.add(socket);
    inProgress += 1;
    most = Math.max(most, inProgress);
  });
  const end = (socket: TLSSocket) => {
    if (!begun.has(socket) || ended.has(socket)) return;
    ended.add(socket);
    inProgress -= 1;
  };
  server.on('secureConnection', end);
  server.on('tlsClientError', (_error: Error, socket: TLSSocket) => end(socket));
  return () => most;
}

describe('TLS handshakes served at once by the listener', async () => {
  const listener = await loopbackServerCertificate('certplane handshake test CA');
  const planes: TestPlane[] = [];
  const start = async (handshakes: HandshakeLimits) => {
    const plane = await startTestPlane({ tls: { certPem: listener.certPem, keyPem: listener.keyPem }, handshakes });
    planes.push(plane);
    return { plane, server: plane.app.server as unknown as TlsServer, port: Number(new URL(plane.url).port) };
  };
  after(async () => {
    for (const plane of planes) await plane.close();
  });

  test(`a storm of ${STORM} agents answering late: at most 4 handshakes in progress, and all of them complete`, async () => {
    const { server, port } = await start({ concurrent: 4, maxWaitMs: 60_000, timeoutMs: 60_000 });
    const most = mostInProgress(server);
    const result = await storm(port, STORM);
    assert.deepEqual(result, { secure: STORM, errors: [] });
    assert.equal(most(), 4);
  });

  test('the same storm with room for all: most handshakes are in progress together (what the limit prevents)', async () => {
    const { server, port } = await start({ concurrent: 10_000, maxWaitMs: 60_000, timeoutMs: 60_000 });
    const most = mostInProgress(server);
    const result = await storm(port, STORM);
    assert.equal(result.secure, STORM, JSON.stringify(result));
    assert.ok(most() >= STORM / 2, `at most ${most()} in progress`);
  });

  test('a connection that waited longer than maxWaitMs for its turn is closed unread; the next one is served', async () => {
    const { port } = await start({ concurrent: 1, maxWaitMs: 300, timeoutMs: 1500 });
    // A client that never says anything holds the only place until the handshake timeout.
    const silent: Socket = connectTcp({ host: '127.0.0.1', port });
    const silentClosed = new Promise<number>((resolve) => silent.on('close', () => resolve(performance.now())));
    silent.on('error', () => undefined);
    await new Promise((resolve) => silent.once('connect', resolve));
    await new Promise((resolve) => setTimeout(resolve, 100));
    const dial = () =>
      new Promise<{ secure: boolean; ms: number }>((resolve) => {
        const began = performance.now();
        const socket = connectTls({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => {
          socket.destroy();
          resolve({ secure: true, ms: performance.now() - began });
        });
        socket.on('error', () => resolve({ secure: false, ms: performance.now() - began }));
        socket.on('close', () => resolve({ secure: false, ms: performance.now() - began }));
      });
    const queued = await dial();
    const silentClosedAt = await silentClosed;
    assert.equal(queued.secure, false, 'served after waiting longer than maxWaitMs');
    assert.ok(queued.ms >= 1000, `closed after ${Math.round(queued.ms)} ms, before the silent client's place was free`);
    assert.ok(silentClosedAt > 0);
    const next = await dial();
    assert.equal(next.secure, true, 'a connection that did not wait is served');
  });
});
