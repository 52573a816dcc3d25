/**
 * A recording relay between agents and the management plane: plain HTTP is forwarded
 * untouched, and each WebSocket frame is recorded in both directions before being passed
 * on. Tests use it to prove what travelled on the channel, from outside both processes.
 */
import { createServer, request, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import WebSocket, { WebSocketServer } from 'ws';

export interface RecordedFrame {
  readonly direction: 'to-server' | 'to-agent';
  readonly text: string;
}

export interface ChannelRecorder {
  readonly url: string;
  readonly frames: RecordedFrame[];
  close(): Promise<void>;
}

export async function startChannelRecorder(target: string): Promise<ChannelRecorder> {
  const upstream = new URL(target);
  const frames: RecordedFrame[] = [];
  const server: Server = createServer((req, res) => {
    const forward = request({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    forward.on('error', () => {
      res.writeHead(502);
      res.end();
    });
    req.pipe(forward);
  });
  const wss = new WebSocketServer({ noServer: true });
  server.on('upgrade', (req: IncomingMessage, socket, head) => {
    wss.handleUpgrade(req, socket, head, (agentSide) => {
      const serverSide = new WebSocket(`ws://${upstream.host}${req.url ?? '/'}`);
      const early: WebSocket.RawData[] = [];
      agentSide.on('message', (data) => {
        frames.push({ direction: 'to-server', text: data.toString() });
        if (serverSide.readyState === WebSocket.OPEN) serverSide.send(data.toString());
        else early.push(data);
      });
      serverSide.on('open', () => early.splice(0).forEach((d) => serverSide.send(d.toString())));
      serverSide.on('message', (data) => {
        frames.push({ direction: 'to-agent', text: data.toString() });
        if (agentSide.readyState === WebSocket.OPEN) agentSide.send(data.toString());
      });
      const closeBoth = () => {
        agentSide.terminate();
        serverSide.terminate();
      };
      agentSide.on('close', closeBoth);
      serverSide.on('close', closeBoth);
      agentSide.on('error', closeBoth);
      serverSide.on('error', closeBoth);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    frames,
    close: async () => {
      for (const client of wss.clients) client.terminate();
      wss.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
