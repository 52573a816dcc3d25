/**
 * A bound on the TLS handshakes the listener has in progress. Node accepts one connection
 * per turn of the event loop (libuv 1.45 and later), but nothing bounds the handshakes
 * already started: in a storm the agents answer late (their own machines are busy), their
 * replies arrive together, and the plane does the TLS work of all of them in one turn of
 * the loop (about 1.6 ms of CPU per full handshake here). With 10,000 agents redialling
 * after a restart such turns lasted seconds: timers and authentications waited behind them,
 * agents gave up their handshakes and dialled again, which cost the plane the same work
 * once more. Here a storm becomes a queue instead: accepted connections wait unread (the
 * server is created with `pauseOnConnect`) and are handed to the TLS server when a
 * handshake ends, through its documented `connection` event.
 */
import type { Socket } from 'node:net';
import type { Server as TlsServer, TLSSocket } from 'node:tls';

export interface HandshakeLimits {
  /**
   * Handshakes in progress at once: the longest turn a storm can cause is about this many
   * handshakes' work. A handshake holds its place while its client answers, so too few
   * places leave the plane idle behind slow clients.
   */
  readonly concurrent: number;
  /**
   * A connection that waited longer than this is closed unread: its agent has probably given
   * up (the agent's own limit is 15 s for TLS, HTTP upgrade and all), and serving it would
   * cost a handshake nobody reads. The agent dials again after its backoff.
   */
  readonly maxWaitMs: number;
  /** A handshake not finished by then is abandoned (tls.Server's handshakeTimeout), so a silent client cannot hold a place for long. */
  readonly timeoutMs: number;
}

/**
 * 256 handshakes are about 0.4 s of one core here. With 64, a 10,000-agent storm kept the
 * loop's longest turn under 0.7 s, but the plane sat mostly idle behind agents slow to
 * answer. The waits are below the agent's 15 s.
 */
export const DEFAULT_HANDSHAKE_LIMITS: HandshakeLimits = { concurrent: 256, maxWaitMs: 10_000, timeoutMs: 10_000 };

/** The queue in front of the TLS server. */
export interface HandshakeQueue {
  /** Closes the connections still waiting, and every one accepted from now on (the listener is closing). */
  close(): void;
}

/**
 * Puts `server`'s handshakes behind a queue. The server must have been created with
 * `pauseOnConnect: true` (so that a waiting connection is not read) and with
 * `handshakeTimeout` set to `limits.timeoutMs`. A handshake ends for the queue when the
 * server emits `secureConnection` or `tlsClientError`, which it does exactly once for every
 * connection it was handed (a peer that goes away mid-handshake is a `tlsClientError`).
 */
export function limitHandshakes(server: TlsServer, limits: HandshakeLimits, now: () => number = () => performance.now()): HandshakeQueue {
  // The TLS server's own listener, which wraps the connection in a TLSSocket and starts reading it.
  const startHandshake = server.listeners('connection') as ((socket: Socket) => void)[];
  server.removeAllListeners('connection');
  let queue: { socket: Socket; since: number }[] = [];
  let head = 0;
  let inProgress = 0;
  let closed = false;
  const finished = new WeakSet<TLSSocket>();

  const pump = () => {
    while (inProgress < limits.concurrent && head < queue.length) {
      const next = queue[head]!;
      head += 1;
      if (next.socket.destroyed) continue;
      if (now() - next.since > limits.maxWaitMs) {
        next.socket.destroy();
        continue;
      }
      inProgress += 1;
      for (const listener of startHandshake) listener.call(server, next.socket);
    }
    // Drop the served part of the queue once it is most of it, so a long storm does not keep every socket it has seen.
    if (head > 1024 && head * 2 > queue.length) {
      queue = queue.slice(head);
      head = 0;
    }
  };
  const settle = (socket: TLSSocket) => {
    if (finished.has(socket)) return;
    finished.add(socket);
    inProgress = Math.max(0, inProgress - 1);
    pump();
  };

  server.on('connection', (socket: Socket) => {
    if (closed) {
      socket.destroy();
      return;
    }
    queue.push({ socket, since: now() });
    pump();
  });
  server.on('secureConnection', settle);
  server.on('tlsClientError', (_error: Error, socket: TLSSocket) => settle(socket));

  return {
    close() {
      closed = true;
      for (let i = head; i < queue.length; i += 1) queue[i]!.socket.destroy();
      queue = [];
      head = 0;
    },
  };
}
