/**
 * The floor of certplane's job: the least any implementation of issue 13 must do per
 * certificate beyond what a bare acme-client does, done by hand around the same tuned bare
 * client, so the bench can say how close to the bare client the job itself allows on this
 * machine (docs/testing.md, "The floor of the job").
 *
 * What the job asks for that the bare client does not do, and what the floor does for it,
 * each the cheapest way we know:
 * - The agent makes the key and CSR on the instance and the key never leaves it: the plane
 *   asks over an authenticated channel (one frame), the agent answers with the CSR (one
 *   frame). The channel is a WebSocket over TLS on loopback, one connection per agent,
 *   opened before the clock (certplane's agents are connected before its clock too); the
 *   authentication happened at connect time and costs nothing per certificate.
 * - A crash loses nothing: the agent keeps the pending key durable before its CSR leaves
 *   (written, fsynced, renamed, directory fsynced); the plane keeps the certificate's state
 *   in PostgreSQL, with the lease that keeps a second process from ordering and the order's
 *   URL a successor resumes: four single-row statements, each its own commit (the CSR
 *   accepted with the lease taken, the order's URL, the chain issued with the lease given
 *   back, the agent's acknowledgement).
 * - Every intermediate is verified: each link of the chain is checked with node:crypto by
 *   the plane before delivery and by the agent before it installs.
 * - The chain reaches the agent (one frame), which installs it durably (the chain file
 *   written and fsynced, the pending key renamed beside it, one directory fsync), journals
 *   the install (a line appended and fdatasynced on a journal it keeps open) and
 *   acknowledges (one frame).
 *
 * Left out, so the floor stays a floor: jobs and campaigns, the rate limiter, the CSR's
 * policy check and signature, trust judgements, metrics, logs, the API.
 */
import { X509Certificate } from 'node:crypto';
import { mkdir, open, rename, type FileHandle } from 'node:fs/promises';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import pg from 'pg';
import { WebSocket, WebSocketServer } from 'ws';
import { parsePemBlocks } from '../../src/chain/index.js';
import { createCsr, generateKeyPair, loopbackServerCertificate } from '../../src/pki/factory.js';

/** The floor's hooks around a bare client's certificate: its CSR, its order, its chain. */
export interface JobFloor {
  /** The CSR for certificate `i` named `name`, asked of an agent over the channel (the lease taken as it arrives). */
  csr(i: number, name: string): Promise<string>;
  /** Certificate `i`'s order exists: its URL is recorded. */
  ordered(i: number, orderUrl: string): Promise<void>;
  /** Certificate `i`'s chain: verified, recorded, delivered, installed and acknowledged. */
  issued(i: number, chain: string): Promise<void>;
  close(): Promise<void>;
}

/** The plane's pool, as `certplane serve` opens it by default. */
const POOL_SIZE = 10;
const LEASE_MS = 30_000;

/**
 * A floor on the PostgreSQL database at `databaseUrl` with `agents` agents, each with its
 * own state directory under `dir`, connected before this returns.
 */
export async function startJobFloor(options: { databaseUrl: string; agents: number; dir: string }): Promise<JobFloor> {
  const pool = new pg.Pool({ connectionString: options.databaseUrl, max: POOL_SIZE, min: POOL_SIZE });
  await pool.query(`CREATE TABLE IF NOT EXISTS floor_certificates (
    id integer PRIMARY KEY, status text NOT NULL, csr_pem text, order_url text, fullchain_pem text,
    lease_owner text, lease_until timestamptz, updated_at timestamptz NOT NULL DEFAULT now())`);
  const tls = await loopbackServerCertificate('certplane bench floor CA');
  const server = createServer({ cert: tls.certPem, key: tls.keyPem });
  const wss = new WebSocketServer({ server });
  const planeSide: WebSocket[] = [];
  const answers = new Map<string, (frame: Frame) => void>();
  wss.on('connection', (socket) => {
    planeSide.push(socket);
    socket.on('message', (data) => {
      const frame = JSON.parse(data.toString()) as Frame;
      answers.get(`${frame.type} ${frame.id}`)?.(frame);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `wss://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const agents = await Promise.all(Array.from({ length: options.agents }, (_, n) => startFloorAgent(url, tls.caPem, join(options.dir, `floor-agent-${n}`))));
  while (planeSide.length < options.agents) await new Promise((resolve) => setTimeout(resolve, 10));
  const ask = (i: number, frame: Frame, answer: Frame['type']) =>
    new Promise<Frame>((resolve) => {
      answers.set(`${answer} ${frame.id}`, (got) => (answers.delete(`${answer} ${frame.id}`), resolve(got)));
      planeSide[i % planeSide.length]!.send(JSON.stringify(frame));
    });
  return {
    csr: async (i, name) => {
      const { csr } = await ask(i, { type: 'csr_request', id: i, name }, 'csr');
      await pool.query(
        `INSERT INTO floor_certificates (id, status, csr_pem, lease_owner, lease_until) VALUES ($1, 'issuing', $2, 'floor', now() + $3 * interval '1 millisecond')
         ON CONFLICT (id) DO UPDATE SET status = 'issuing', csr_pem = $2, lease_owner = 'floor', lease_until = excluded.lease_until, updated_at = now()`,
        [i, csr, LEASE_MS],
      );
      return csr!;
    },
    ordered: async (i, orderUrl) => {
      await pool.query(`UPDATE floor_certificates SET order_url = $2, updated_at = now() WHERE id = $1 AND lease_owner = 'floor'`, [i, orderUrl]);
    },
    issued: async (i, chain) => {
      verifyLinks(chain);
      await pool.query(`UPDATE floor_certificates SET status = 'issued', fullchain_pem = $2, lease_owner = NULL, lease_until = NULL, updated_at = now() WHERE id = $1 AND lease_owner = 'floor'`, [i, chain]);
      await ask(i, { type: 'deliver', id: i, chain }, 'installed');
      await pool.query(`UPDATE floor_certificates SET status = 'installed', updated_at = now() WHERE id = $1 AND status = 'issued'`, [i]);
    },
    close: async () => {
      await Promise.all(agents.map((agent) => agent.close()));
      for (const socket of planeSide) socket.terminate();
      await new Promise<void>((resolve) => wss.close(() => resolve()));
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await pool.end();
    },
  };
}

interface Frame {
  readonly type: 'csr_request' | 'csr' | 'deliver' | 'installed';
  readonly id: number;
  readonly name?: string;
  readonly csr?: string;
  readonly chain?: string;
}

/** Each certificate's link to its issuer checked by signature (the root's own is the trust anchor's business). */
function verifyLinks(chain: string): void {
  const certificates = parsePemBlocks(chain).map((block) => new X509Certificate(block.der));
  for (let n = 0; n + 1 < certificates.length; n += 1) {
    if (!certificates[n]!.verify(certificates[n + 1]!.publicKey)) throw new Error(`floor: link ${n} of a chain does not verify`);
  }
}

/** One agent: its channel, its state directory and a journal it keeps open. */
async function startFloorAgent(url: string, caPem: string, dir: string): Promise<{ close(): Promise<void> }> {
  await mkdir(join(dir, 'live'), { recursive: true });
  await mkdir(join(dir, 'pending'), { recursive: true });
  const journal = await open(join(dir, 'journal.log'), 'a', 0o600);
  const socket = new WebSocket(url, { ca: caPem });
  await new Promise((resolve, reject) => (socket.once('open', resolve), socket.once('error', reject)));
  socket.on('message', (data) => {
    const frame = JSON.parse(data.toString()) as Frame;
    const answer = frame.type === 'csr_request' ? pending(dir, frame.id, frame.name!) : install(dir, journal, frame.id, frame.chain!);
    void answer.then((reply) => socket.send(JSON.stringify(reply)));
  });
  return {
    close: async () => {
      socket.terminate();
      await journal.close();
    },
  };
}

/** A fresh key kept durably as pending, then its CSR. */
async function pending(dir: string, id: number, name: string): Promise<Frame> {
  const key = await generateKeyPair();
  await writeDurably(join(dir, 'pending', `${id}.key`), key.privateKeyPem);
  await syncDirectory(join(dir, 'pending'));
  return { type: 'csr', id, csr: await createCsr(key, [name]) };
}

/** The chain checked, written beside the pending key renamed live, both made durable, the install journalled. */
async function install(dir: string, journal: FileHandle, id: number, chain: string): Promise<Frame> {
  verifyLinks(chain);
  const live = join(dir, 'live');
  await writeDurably(join(live, `${id}.crt`), chain);
  await rename(join(dir, 'pending', `${id}.key`), join(live, `${id}.key`));
  await syncDirectory(live);
  await journal.write(`${JSON.stringify({ at: new Date().toISOString(), event: 'installed', id })}\n`);
  await journal.datasync();
  return { type: 'installed', id };
}

/** The file written under a temporary name, fsynced and renamed into place (the caller fsyncs the directory). */
async function writeDurably(file: string, data: string): Promise<void> {
  const temporary = `${file}.tmp`;
  const handle = await open(temporary, 'w', 0o600);
  try {
    await handle.writeFile(data, 'utf8');
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(temporary, file);
}

async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
