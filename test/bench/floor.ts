/**
 * A lean reference for certplane's job: the tuned bare acme-client with a lean version of the
 * durable work and the channel the job needs per certificate done around it by hand, so
 * the bench can show how much of certplane's CPU the job's mandatory parts explain and how
 * much is certplane's own (docs/testing.md, "A lean reference for the job").
 *
 * It is neither a proven lower bound nor an upper one: it does some work more simply than
 * the issue would allow (it stores one chain, checks links by signature only, keeps no jobs,
 * no rate limiter, no CSR check, no trust judgement, no metrics, no logs), and some more
 * than the issue strictly asks (four unbatched commits, the pending key fsynced). What it
 * does per certificate:
 * - The agent makes the key and CSR on the instance and the key never leaves it: the plane
 *   asks over a WebSocket over TLS on loopback (one frame), the agent answers with the CSR
 *   (one frame). The agents run in a process of their own (floor-agents.ts), as certplane's
 *   simulated agents run in a process other than the plane's, one connection each, opened
 *   before the clock.
 * - The agent keeps the pending key durable before its CSR leaves (written, fsynced,
 *   renamed, directory fsynced, while the CSR is signed), so an agent that stops before
 *   the chain arrives can still install it.
 * - The plane keeps the certificate's state in PostgreSQL in four single-row statements,
 *   each its own commit: the CSR accepted with a lease taken, the order's URL (what a
 *   successor resumes; committed beside the challenge, so a crash before it costs a second
 *   order), the chain issued with the lease given back, the agent's acknowledgement.
 * - Each link of the chain is checked by signature with node:crypto, by the plane before
 *   delivery and by the agent before it installs.
 * - The chain reaches the agent (one frame), which writes and fsyncs it beside the pending
 *   key renamed live (one directory fsync), journals the install (a line fdatasynced on a
 *   journal it keeps open) and acknowledges (one frame).
 */
import { writeFile } from 'node:fs/promises';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { WebSocketServer, type WebSocket } from 'ws';
import { loopbackServerCertificate } from '../../src/pki/factory.js';
import { DATABASE_POOL_SIZE } from '../../src/store/types.js';
import { startNodeScript, type RunningProcess } from '../support/processes.js';
import { verifyLinks, type FloorFrame } from './floor-agents.js';

/** The reference's hooks around a bare client's certificate: its CSR, its order, its chain. */
export interface JobFloor {
  /** The agents' process, whose CPU the bench counts beside its own. */
  readonly agents: RunningProcess;
  /** The CSR for certificate `i` named `name`, asked of an agent over the channel (the lease taken as it arrives). */
  csr(i: number, name: string): Promise<string>;
  /** Certificate `i`'s order exists: its URL is recorded. */
  ordered(i: number, orderUrl: string): Promise<void>;
  /** Certificate `i`'s chain: verified, recorded, delivered, installed and acknowledged. */
  issued(i: number, chain: string): Promise<void>;
  close(): Promise<void>;
}

const LEASE_MS = 30_000;
/** How long the plane side waits for an agent's answer before the run fails. */
const ANSWER_TIMEOUT_MS = 60_000;
const AGENTS_SCRIPT = fileURLToPath(new URL('./floor-agents.js', import.meta.url));

/**
 * The reference on the PostgreSQL database at `databaseUrl`, with `agents` agents in a
 * process of their own, each with a state directory under `dir`, connected before this returns.
 */
export async function startJobFloor(options: { databaseUrl: string; agents: number; dir: string }): Promise<JobFloor> {
  const pool = new pg.Pool({ connectionString: options.databaseUrl, max: DATABASE_POOL_SIZE.default, min: DATABASE_POOL_SIZE.default });
  // A connection the server drops is an error on the pool; unheard, it would end the bench.
  pool.on('error', (error) => process.stderr.write(`floor: a PostgreSQL connection failed: ${error.message}\n`));
  await pool.query(`CREATE TABLE IF NOT EXISTS floor_certificates (
    id integer PRIMARY KEY, status text NOT NULL, csr_pem text, order_url text, fullchain_pem text,
    lease_owner text, lease_until timestamptz, updated_at timestamptz NOT NULL DEFAULT now())`);
  const tls = await loopbackServerCertificate('certplane bench floor CA');
  const server = createServer({ cert: tls.certPem, key: tls.keyPem });
  const wss = new WebSocketServer({ server });
  const planeSide: WebSocket[] = [];
  const answers = new Map<number, (frame: FloorFrame) => void>();
  wss.on('connection', (socket) => {
    planeSide.push(socket);
    socket.on('message', (data) => {
      const frame = JSON.parse(data.toString()) as FloorFrame;
      answers.get(frame.id)?.(frame);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const caPath = `${options.dir}.ca.pem`;
  await writeFile(caPath, tls.caPem);
  const agents = startNodeScript(AGENTS_SCRIPT, [`wss://127.0.0.1:${(server.address() as AddressInfo).port}`, caPath, options.dir, String(options.agents)], { UV_THREADPOOL_SIZE: '64' });
  const close = async () => {
    await agents.stop();
    for (const socket of planeSide) socket.terminate();
    await new Promise<void>((resolve) => wss.close(() => resolve()));
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await pool.end();
  };
  try {
    await agents.waitForLine((line) => line === 'ready');
    while (planeSide.length < options.agents) await new Promise((resolve) => setTimeout(resolve, 10));
  } catch (error) {
    await close();
    throw error;
  }
  /** Sends `frame` to certificate `i`'s agent and waits for its `answer`; a refusal or no answer in time fails the run. */
  const ask = (i: number, frame: FloorFrame, answer: FloorFrame['type']) =>
    new Promise<FloorFrame>((resolve, reject) => {
      const timer = setTimeout(() => settle({ type: 'failed', id: i, message: `no ${answer} frame within ${ANSWER_TIMEOUT_MS} ms` }), ANSWER_TIMEOUT_MS);
      const settle = (got: FloorFrame) => {
        clearTimeout(timer);
        answers.delete(i);
        if (got.type === answer) resolve(got);
        else reject(new Error(`floor: certificate ${i}'s agent answered ${got.type}${got.message ? `: ${got.message}` : ''}`));
      };
      answers.set(i, settle);
      planeSide[i % planeSide.length]!.send(JSON.stringify(frame));
    });
  // The bench numbers each run's certificates from 0; the reference numbers them across runs, so no run meets an earlier one's rows or files.
  const ids = new Map<number, number>();
  let nextId = 0;
  const idOf = (i: number) => ids.get(i) ?? Number.NaN;
  return {
    agents,
    csr: async (i, name) => {
      const id = nextId++;
      ids.set(i, id);
      const { csr } = await ask(id, { type: 'csr_request', id, name }, 'csr');
      await pool.query(
        `INSERT INTO floor_certificates (id, status, csr_pem, lease_owner, lease_until) VALUES ($1, 'issuing', $2, 'floor', now() + $3 * interval '1 millisecond')
         ON CONFLICT (id) DO UPDATE SET status = 'issuing', csr_pem = $2, lease_owner = 'floor', lease_until = excluded.lease_until, updated_at = now()`,
        [id, csr, LEASE_MS],
      );
      return csr!;
    },
    ordered: async (i, orderUrl) => {
      await pool.query(`UPDATE floor_certificates SET order_url = $2, updated_at = now() WHERE id = $1 AND lease_owner = 'floor'`, [idOf(i), orderUrl]);
    },
    issued: async (i, chain) => {
      const id = idOf(i);
      verifyLinks(chain);
      await pool.query(`UPDATE floor_certificates SET status = 'issued', fullchain_pem = $2, lease_owner = NULL, lease_until = NULL, updated_at = now() WHERE id = $1 AND lease_owner = 'floor'`, [id, chain]);
      await ask(id, { type: 'deliver', id, chain }, 'installed');
      await pool.query(`UPDATE floor_certificates SET status = 'installed', updated_at = now() WHERE id = $1 AND status = 'issued'`, [id]);
    },
    close,
  };
}
