/**
 * The embedded engine on a thread of its own (see pglite-thread.ts for why): PGlite opened
 * here, and every statement, transaction and LISTEN the main thread asks for run against it.
 * Requests are answered by id; a transaction stays open between requests until the main
 * thread ends it, and PGlite's own lock keeps every other statement waiting meanwhile, as
 * it does on one thread.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { PGlite, type Transaction } from '@electric-sql/pglite';
import type { FromWorker, ToWorker, WorkerError } from './pglite-thread.js';
import { PglitePrepared } from './pglite-prepared.js';

const port = parentPort!;
const send = (message: FromWorker) => port.postMessage(message);

/** A driver error as the main thread's translation reads it: message, SQLSTATE, constraint. */
function serialised(error: unknown): WorkerError {
  const e = error as { name?: unknown; message?: unknown; code?: unknown; constraint?: unknown };
  return {
    name: typeof e?.name === 'string' ? e.name : 'Error',
    message: typeof e?.message === 'string' ? e.message : String(error),
    ...(typeof e?.code === 'string' ? { code: e.code } : {}),
    ...(typeof e?.constraint === 'string' ? { constraint: e.constraint } : {}),
  };
}

/** Thrown inside a transaction the main thread ends without committing: PGlite rolls back. */
const ROLLBACK = Symbol('rollback');

// A failure to open is said once, as the answer to opening; nothing is served then, the
// thread ends by itself and the main thread has its answer.
const opened = await PGlite.create((workerData as { directory?: string }).directory).catch((error: unknown) => {
  send({ kind: 'failed', error: serialised(error) });
  return undefined;
});
if (opened) serve(opened);

/** Answers the main thread's requests against the open engine, then says it is ready. */
function serve(db: PGlite): void {
  const transactions = new Map<number, { tx: Transaction; end: (request: { id: number; commit: boolean }) => void }>();
  const listening = new Map<string, () => Promise<void>>();
  let nextTransaction = 1;
  const prepared = new PglitePrepared(db);

  /** Answers request `id` with what `work` gives; a value that cannot cross the thread is answered as an error, not lost. */
  const answer = (id: number, work: () => Promise<unknown>) =>
    work()
      .then(
        (value) => send({ kind: 'answer', id, ok: true, value }),
        (error: unknown) => send({ kind: 'answer', id, ok: false, error: serialised(error) }),
      )
      .catch((error: unknown) => send({ kind: 'answer', id, ok: false, error: serialised(error) }));

  function begin(id: number): void {
    const txId = nextTransaction++;
    let begun = false;
    let ending: { id: number; commit: boolean } | undefined;
    db.transaction(async (tx) => {
      begun = true;
      const ended = new Promise<{ id: number; commit: boolean }>((resolve) => transactions.set(txId, { tx, end: resolve }));
      send({ kind: 'answer', id, ok: true, value: txId });
      ending = await ended;
      transactions.delete(txId);
      if (!ending.commit) throw ROLLBACK;
    }).then(
      () => send({ kind: 'answer', id: ending!.id, ok: true, value: null }),
      (error: unknown) => {
        transactions.delete(txId);
        // BEGIN itself failed: the request that asked for it hears why. Otherwise the end does.
        if (!begun) send({ kind: 'answer', id, ok: false, error: serialised(error) });
        else if (error === ROLLBACK) send({ kind: 'answer', id: ending!.id, ok: true, value: null });
        else if (ending) send({ kind: 'answer', id: ending.id, ok: false, error: serialised(error) });
      },
    );
  }

  port.on('message', (request: ToWorker) => {
    switch (request.kind) {
      case 'query': {
        const tx = request.tx === undefined ? undefined : transactions.get(request.tx)?.tx;
        void answer(request.id, async () => {
          if (request.tx !== undefined && !tx) throw new Error(`transaction ${request.tx} is not open`);
          return prepared.query(request.sql, request.params, tx);
        });
        return;
      }
      case 'begin':
        begin(request.id);
        return;
      case 'end': {
        const open = transactions.get(request.tx);
        if (open) open.end({ id: request.id, commit: request.commit });
        else send({ kind: 'answer', id: request.id, ok: false, error: { name: 'Error', message: `transaction ${request.tx} is not open` } });
        return;
      }
      case 'listen':
        void answer(request.id, async () => {
          if (listening.has(request.channel)) return null;
          listening.set(request.channel, await db.listen(request.channel, (payload) => send({ kind: 'notify', channel: request.channel, payload })));
          return null;
        });
        return;
      case 'unlisten':
        void answer(request.id, async () => {
          const unlisten = listening.get(request.channel);
          listening.delete(request.channel);
          if (unlisten && !db.closed) await unlisten();
          return null;
        });
        return;
      case 'close':
        void answer(request.id, async () => {
          if (!db.closed) await db.close();
          return null;
        });
        return;
    }
  });

  send({ kind: 'ready' });
}
