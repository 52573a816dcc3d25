/**
 * The floor's agents (floor.ts), in a process of their own as certplane's simulated agents
 * are in a process other than the plane's: `node floor-agents.js URL CA_PEM_FILE DIR COUNT`
 * opens COUNT connections to the floor's channel at URL, each agent with its own state
 * directory under DIR, and prints "ready" once all are open. Each request is answered, or
 * refused with why (a `failed` frame), never left unanswered.
 */
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, open, rename, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { WebSocket } from 'ws';
import { parsePemBlocks } from '../../src/chain/index.js';
import { createCsr, generateKeyPair } from '../../src/pki/factory.js';

/** A frame of the floor's channel. */
export interface FloorFrame {
  readonly type: 'csr_request' | 'csr' | 'deliver' | 'installed' | 'failed';
  readonly id: number;
  readonly name?: string;
  readonly csr?: string;
  readonly chain?: string;
  readonly message?: string;
}

/** Each certificate's link to its issuer checked by signature (the root's own is the trust anchor's business). */
export function verifyLinks(chain: string): void {
  const certificates = parsePemBlocks(chain).map((block) => new X509Certificate(block.der));
  for (let n = 0; n + 1 < certificates.length; n += 1) {
    if (!certificates[n]!.verify(certificates[n + 1]!.publicKey)) throw new Error(`floor: link ${n} of the chain does not verify`);
  }
}

/** One agent: its channel, its state directory and a journal it keeps open. */
async function startFloorAgent(url: string, caPem: string, dir: string): Promise<void> {
  await mkdir(join(dir, 'live'), { recursive: true });
  await mkdir(join(dir, 'pending'), { recursive: true });
  const journal = await open(join(dir, 'journal.log'), 'a', 0o600);
  const socket = new WebSocket(url, { ca: caPem });
  await new Promise((resolve, reject) => (socket.once('open', resolve), socket.once('error', reject)));
  socket.on('message', (data) => {
    const frame = JSON.parse(data.toString()) as FloorFrame;
    const answer = frame.type === 'csr_request' ? pending(dir, frame.id, frame.name!) : install(dir, journal, frame.id, frame.chain!);
    void answer.then(
      (reply) => socket.send(JSON.stringify(reply)),
      (error: unknown) => socket.send(JSON.stringify({ type: 'failed', id: frame.id, message: (error as Error).message } satisfies FloorFrame)),
    );
  });
}

/** A fresh key and its CSR; the key is durable as pending before the CSR leaves. */
async function pending(dir: string, id: number, name: string): Promise<FloorFrame> {
  const key = await generateKeyPair();
  const [csr] = await Promise.all([createCsr(key, [name]), writeDurably(join(dir, 'pending'), `${id}.key`, key.privateKeyPem)]);
  return { type: 'csr', id, csr };
}

/** The chain checked, written beside the pending key renamed live, both made durable by one directory fsync, the install journalled. */
async function install(dir: string, journal: FileHandle, id: number, chain: string): Promise<FloorFrame> {
  verifyLinks(chain);
  const live = join(dir, 'live');
  await writeDurably(live, `${id}.crt`, chain, { syncDirectory: false });
  await rename(join(dir, 'pending', `${id}.key`), join(live, `${id}.key`));
  await syncDirectory(live);
  await journal.write(`${JSON.stringify({ at: new Date().toISOString(), event: 'installed', id })}\n`);
  await journal.datasync();
  return { type: 'installed', id };
}

/** `name` in `dir` written under a temporary name, fsynced and renamed into place; the directory fsynced unless the caller does it. */
async function writeDurably(dir: string, name: string, data: string, options = { syncDirectory: true }): Promise<void> {
  const temporary = join(dir, `.${name}.tmp`);
  const handle = await open(temporary, 'w', 0o600);
  try {
    await handle.writeFile(data, 'utf8');
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(temporary, join(dir, name));
  if (options.syncDirectory) await syncDirectory(dir);
}

async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

if (process.argv[1]?.endsWith('floor-agents.js')) {
  const [url, caPath, dir, count] = process.argv.slice(2) as [string, string, string, string];
  const caPem = readFileSync(caPath, 'utf8');
  await Promise.all(Array.from({ length: Number(count) }, (_, n) => startFloorAgent(url, caPem, join(dir, `agent-${n}`))));
  process.stdout.write('ready\n');
  process.on('SIGTERM', () => process.exit(0));
}
