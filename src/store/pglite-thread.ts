/**
 * PGlite on a worker thread. The embedded engine is PostgreSQL compiled to WebAssembly: on
 * the plane's own thread, every statement's parse, plan and execution runs on the event loop
 * that also serves the API, the agents' channels and the ACME client, so one core bounds the
 * whole plane (the 1,000-instance campaign ran at 25.6/s with the plane's thread at 40 ms of
 * CPU per certificate, 16 of them the engine's). On a thread of its own the engine uses the
 * second core, and a long statement no longer stalls the channels.
 *
 * The surface is the engines' own (query, transaction, listen, close); rows and parameters
 * cross by structured clone, which keeps Date, Uint8Array, arrays and parsed JSON as they are.
 * A worker that dies fails everything waiting and everything after with STORE_UNAVAILABLE.
 */
import { Worker } from 'node:worker_threads';
import { CertplaneError } from '../errors.js';
import { ErrorCode } from '../error-catalogue.js';
import type { Queryable } from './engines.js';

/** A driver error as it crosses the thread: what `translate` in engines.ts reads. */
export interface WorkerError {
  name: string;
  message: string;
  code?: string;
  constraint?: string;
}

export type ToWorker =
  | { kind: 'query'; id: number; sql: string; params?: unknown[]; tx?: number }
  | { kind: 'begin'; id: number }
  | { kind: 'end'; id: number; tx: number; commit: boolean }
  | { kind: 'listen'; id: number; channel: string }
  | { kind: 'unlisten'; id: number; channel: string }
  | { kind: 'close'; id: number };

/** What `ToWorker` leaves out of each request: its id, given by the sender. */
type Request = ToWorker extends infer R ? (R extends { id: number } ? Omit<R, 'id'> : never) : never;

export type FromWorker =
  | { kind: 'ready' }
  | { kind: 'failed'; error: WorkerError }
  | { kind: 'answer'; id: number; ok: true; value: unknown }
  | { kind: 'answer'; id: number; ok: false; error: WorkerError }
  | { kind: 'notify'; channel: string; payload: string };

/** An error from the worker with the fields the engines' translation reads. */
function revived(error: WorkerError): Error {
  return Object.assign(new Error(error.message), { name: error.name, ...(error.code ? { code: error.code } : {}), ...(error.constraint ? { constraint: error.constraint } : {}) });
}

export interface PgliteThread {
  query<T>(sql: string, params?: readonly unknown[]): Promise<T[]>;
  transaction<T>(work: (tx: Queryable) => Promise<T>): Promise<T>;
  listen(channel: string, onPayload: (payload: string) => void): Promise<() => Promise<void>>;
  close(): Promise<void>;
}

/**
 * Opens PGlite on `directory` (in memory when undefined) on a worker thread. Rejects with
 * the engine's own error when it cannot open (a directory another process holds, say).
 */
export async function openPgliteThread(directory: string | undefined, location: string): Promise<PgliteThread> {
  // A worker inherits the process's node options, except that it refuses --input-type (for
  // code given on the command line); given explicitly, the list would refuse more (heap sizes,
  // --expose-gc), so it is given only to leave --input-type out.
  const inputType = process.execArgv.some((option) => option.startsWith('--input-type'));
  const worker = new Worker(new URL('./pglite-worker.js', import.meta.url), {
    workerData: { directory },
    ...(inputType ? { execArgv: process.execArgv.filter((option) => !option.startsWith('--input-type')) } : {}),
  });
  // Listened to from the start: a worker's 'error' with no listener would crash the process.
  let opened = false;
  let closed = false;
  const pending = new Map<number, { resolve: (value: unknown) => void; reject: (error: unknown) => void }>();
  const listeners = new Map<string, Set<(payload: string) => void>>();
  let nextId = 1;
  let gone: Error | undefined;
  const settleAll = (error: Error) => {
    gone ??= error;
    for (const { reject } of pending.values()) reject(gone);
    pending.clear();
  };
  const unavailable = (why: string) =>
    closed
      ? new CertplaneError(ErrorCode.STORE_CLOSED, `The store at ${location} was closed; open a new one.`, { location })
      : new CertplaneError(ErrorCode.STORE_UNAVAILABLE, `The embedded database at ${location} stopped (${why}); restart the process.`, { location });

  const started = new Promise<void>((resolve, reject) => {
    worker.on('error', (error) => (opened ? settleAll(unavailable(error.message)) : reject(error)));
    worker.on('exit', (code) => (opened ? settleAll(unavailable(`its thread exited with code ${code}`)) : reject(new Error(`the database thread exited with code ${code} before it opened`))));
    worker.once('message', (message: FromWorker) => {
      if (message.kind === 'ready') resolve();
      else if (message.kind === 'failed') reject(revived(message.error));
      else reject(new Error(`the database thread said ${message.kind} before it opened`));
    });
  });
  try {
    await started;
  } catch (error) {
    await worker.terminate();
    throw error;
  }
  opened = true;
  worker.on('message', (message: FromWorker) => {
    if (message.kind === 'notify') {
      for (const onPayload of listeners.get(message.channel) ?? []) {
        // One listener's failure is its own: the others still hear the notification.
        try {
          onPayload(message.payload);
        } catch {
          // The listener reports its own failures; nothing here can act on one.
        }
      }
      return;
    }
    if (message.kind !== 'answer') return;
    const waiting = pending.get(message.id);
    if (!waiting) return;
    pending.delete(message.id);
    if (pending.size === 0) worker.unref();
    if (message.ok) waiting.resolve(message.value);
    else waiting.reject(revived(message.error));
  });

  // The thread holds the process only while an answer is awaited, like a socket with a request
  // in flight: an idle open store does not keep a process that is otherwise done. (After the
  // listeners above: attaching one refs the worker again.)
  worker.unref();
  const ask = <T>(request: Request): Promise<T> => {
    if (gone) return Promise.reject(gone);
    const id = nextId++;
    return new Promise<T>((resolve, reject) => {
      if (pending.size === 0) worker.ref();
      pending.set(id, { resolve: resolve as (value: unknown) => void, reject });
      try {
        worker.postMessage({ ...request, id } as ToWorker);
      } catch (error) {
        // A parameter structured clone cannot copy (a function, a symbol): refused here, and
        // nothing is left waiting that would hold the process.
        pending.delete(id);
        if (pending.size === 0) worker.unref();
        reject(error);
      }
    });
  };
  const query = <T>(sql: string, params: readonly unknown[] | undefined, tx?: number) =>
    ask<T[]>({ kind: 'query', sql, ...(params ? { params: [...params] } : {}), ...(tx === undefined ? {} : { tx }) });

  return {
    query: (sql, params) => query(sql, params),
    transaction: async <T>(work: (tx: Queryable) => Promise<T>) => {
      const tx = await ask<number>({ kind: 'begin' });
      let result: T;
      try {
        result = await work({ query: <R>(sql: string, params?: readonly unknown[]) => query<R>(sql, params, tx) });
      } catch (error) {
        await ask({ kind: 'end', tx, commit: false }).catch(() => undefined);
        throw error;
      }
      await ask({ kind: 'end', tx, commit: true });
      return result;
    },
    // One LISTEN per channel on the thread, any number of listeners here, as PGlite allows.
    listen: async (channel, onPayload) => {
      const mine = (payload: string) => onPayload(payload);
      const existing = listeners.get(channel);
      if (existing) existing.add(mine);
      else {
        listeners.set(channel, new Set([mine]));
        await ask({ kind: 'listen', channel }).catch((error: unknown) => {
          listeners.delete(channel);
          throw error;
        });
      }
      return async () => {
        const set = listeners.get(channel);
        if (!set?.delete(mine) || set.size > 0) return;
        listeners.delete(channel);
        if (!gone) await ask({ kind: 'unlisten', channel });
      };
    },
    close: async () => {
      closed = true;
      if (!gone) await ask({ kind: 'close' }).catch(() => undefined);
      gone ??= new CertplaneError(ErrorCode.STORE_CLOSED, `The store at ${location} was closed; open a new one.`, { location });
      await worker.terminate();
    },
  };
}
