/**
 * A layer-4 (TCP) load balancer on loopback, the way the design deploys several plane
 * processes behind one address: every new connection goes to a random backend that
 * accepts it (one that refuses, killed or restarting, is skipped), bytes pass through
 * untouched (TLS and WebSockets end at the plane), and `cut` drops a random share of the
 * open connections, so agents reconnect and land on a random process.
 */
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';

export interface Balancer {
  /** http://127.0.0.1:PORT */
  readonly url: string;
  /** Connections open through the balancer now. */
  open(): number;
  /** Where connections went, by backend port: how many agents each process has seen. */
  readonly routed: ReadonlyMap<number, number>;
  /** Destroys each open connection with probability `fraction`; returns how many it cut. */
  cut(fraction: number): number;
  close(): Promise<void>;
}

const CONNECT_TIMEOUT_MS = 5_000;

export async function startBalancer(backendPorts: readonly number[]): Promise<Balancer> {
  const pairs = new Set<{ client: Socket; upstream: Socket }>();
  const routed = new Map<number, number>();

  const dial = (port: number): Promise<Socket> =>
    new Promise((resolve, reject) => {
      const upstream = connect({ host: '127.0.0.1', port, timeout: CONNECT_TIMEOUT_MS });
      upstream.once('connect', () => {
        upstream.setTimeout(0);
        resolve(upstream);
      });
      upstream.once('timeout', () => upstream.destroy(new Error(`backend ${port} did not accept within ${CONNECT_TIMEOUT_MS} ms`)));
      upstream.once('error', reject);
    });

  const server = createServer({ pauseOnConnect: true }, (client) => {
    client.on('error', () => undefined);
    void (async () => {
      for (const port of [...backendPorts].sort(() => Math.random() - 0.5)) {
        const upstream = await dial(port).catch(() => undefined);
        if (!upstream) continue;
        if (client.destroyed) return void upstream.destroy();
        routed.set(port, (routed.get(port) ?? 0) + 1);
        const pair = { client, upstream };
        pairs.add(pair);
        const end = () => {
          pairs.delete(pair);
          client.destroy();
          upstream.destroy();
        };
        upstream.on('error', end).on('close', end);
        client.on('close', end);
        client.pipe(upstream);
        upstream.pipe(client);
        client.resume();
        return;
      }
      client.destroy();
    })();
  });
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;

  return {
    url: `http://127.0.0.1:${port}`,
    open: () => pairs.size,
    routed,
    cut(fraction) {
      let cut = 0;
      for (const { client, upstream } of [...pairs]) {
        if (Math.random() >= fraction) continue;
        client.destroy();
        upstream.destroy();
        cut += 1;
      }
      return cut;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const { client, upstream } of pairs) {
          client.destroy();
          upstream.destroy();
        }
        server.close(() => resolve());
      }),
  };
}
