/**
 * The two engines of the store's one dialect behind the smallest surface the store needs:
 * parameterised queries that return rows, and transactions. PGlite (PostgreSQL compiled to
 * WebAssembly, in this process) is the embedded default; a PostgreSQL server is the engine
 * for production and for several replicas. Both hand back timestamps as Date, jsonb as
 * parsed values and text[] as string[], so the store maps rows the same way for either.
 */
import { mkdir } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import pg from 'pg';
import { CertplaneError } from '../errors.js';
import { ErrorCode } from '../error-catalogue.js';
import { openPgliteThread, type PgliteThread } from './pglite-thread.js';
import { PglitePrepared } from './pglite-prepared.js';
import { StatementNames } from './prepared.js';
import { DATABASE_POOL_SIZE } from './types.js';

/** What the store's SQL runs against, inside or outside a transaction. */
export interface Queryable {
  /** Runs one statement with $1-style parameters and returns its rows. */
  query<T = Record<string, unknown>>(sql: string, params?: readonly unknown[]): Promise<T[]>;
}

/** An open database of either engine. */
export interface Database extends Queryable {
  readonly engine: 'pglite' | 'postgres';
  /** Where the data lives, with any password redacted: safe for messages and logs. */
  readonly location: string;
  /** Runs `work` in one transaction: committed if it resolves, rolled back if it throws. */
  transaction<T>(work: (tx: Queryable) => Promise<T>): Promise<T>;
  /**
   * LISTENs on `channel` and hands every notification's payload to `onPayload` until the
   * returned function is called. On PostgreSQL the listener has a connection of its own,
   * opened again (with jittered backoff) when it breaks; `onResubscribed` is told each time,
   * because notifications sent meanwhile are lost and the caller must look for itself.
   */
  listen(channel: string, onPayload: (payload: string) => void, onResubscribed: () => void): Promise<() => Promise<void>>;
  /** Releases the connections or the embedded engine; later queries fail with STORE_CLOSED. */
  close(): Promise<void>;
}

/** How a database is opened. */
export interface OpenOptions {
  /**
   * PGlite on a worker thread of its own (the default; pglite-thread.ts says why), or, with
   * false, on the caller's thread, where a profiler or a test counting the engine's
   * statements sees them. No meaning for PostgreSQL.
   */
  pgliteThread?: boolean;
  /** PostgreSQL: connections opened at start and kept (DATABASE_POOL_SIZE in types.ts). No meaning for PGlite. */
  poolSize?: number;
}

const ACCEPTED_FORMS = 'postgres://user:password@host:port/database (or postgresql://), pglite:/path/to/data-directory, or memory:';
/** A server that has not answered a connection attempt in this time is treated as down. */
const CONNECT_TIMEOUT_MS = 10_000;
/** SQLSTATE classes and codes that mean the server, not the statement, is the problem. */
const UNAVAILABLE_STATES = /^(08|53|57P0[1-3]|3D000|28)/;
/** Node's network errnos (ECONNRESET, ETIMEDOUT, ...) and pg's words for a dropped connection or a pool that found none in time. */
const NETWORK_ERRNO = /^E[A-Z]+$/;
const CONNECTION_LOST = /Connection terminated|connection timeout|timeout exceeded when trying to connect/i;
/** Bounds of the listener connection's reconnect delay (full jitter under a doubling ceiling). */
const LISTEN_RETRY_MIN_MS = 250;
const LISTEN_RETRY_MAX_MS = 30_000;
/** A channel name goes into LISTEN as an identifier: only plain lower-case names are accepted. */
const CHANNEL_NAME = /^[a-z_][a-z0-9_]{0,62}$/;
/**
 * pg's own mapping of a parameter to its wire form (null, a string or a Buffer, each mapped
 * to itself again). A named statement's values go through it before pg sees them: when pg's
 * bind cannot map a value it sends Close for the statement's name, which deallocates a
 * prepared statement pg still counts as parsed, and the text then fails on that connection
 * for good (26000).
 */
const { prepareValue } = createRequire(import.meta.url)('pg/lib/utils.js') as { prepareValue(value: unknown): unknown };

/**
 * Opens the database named by `url` and proves it answers. The URL's form picks the
 * engine, so a deployment switches engines by configuration only.
 */
export async function openDatabase(url: string, options: OpenOptions = {}): Promise<Database> {
  if (/^postgres(ql)?:\/\//.test(url)) {
    if (!URL.canParse(url)) {
      throw new CertplaneError(ErrorCode.STORE_INVALID_URL, `Database URL ${redactUrl(url)} is not a well-formed URL; check the host, the port and any percent-escapes in it.`, { url: redactUrl(url) });
    }
    return openPostgres(url, options.poolSize ?? DATABASE_POOL_SIZE.default);
  }
  const thread = options.pgliteThread ?? true;
  if (url === 'memory:') return openPglite(undefined, 'memory:', thread);
  if (url.startsWith('pglite:') && url.length > 'pglite:'.length) {
    const directory = path.resolve(url.slice('pglite:'.length));
    return openPglite(directory, `pglite:${directory}`, thread);
  }
  throw new CertplaneError(ErrorCode.STORE_INVALID_URL, `Database URL ${redactUrl(url)} is not one certplane understands; use ${ACCEPTED_FORMS}.`, { url: redactUrl(url) });
}

/**
 * `url` with any password (in the user-info part or a `password` query parameter) replaced
 * by ***, because URLs end up in error messages and logs and passwords must not.
 */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password !== '') parsed.password = '***';
    if (parsed.searchParams.has('password')) parsed.searchParams.set('password', '***');
    return parsed.toString();
  } catch {
    return url.replace(/(\/\/[^/@:]*:)[^@]*@/, '$1***@').replace(/([?&]password=)[^&]*/gi, '$1***');
  }
}

async function openPostgres(url: string, poolSize: number): Promise<Database> {
  const location = redactUrl(url);
  if (!Number.isInteger(poolSize) || poolSize < DATABASE_POOL_SIZE.min || poolSize > DATABASE_POOL_SIZE.max) {
    throw new CertplaneError(ErrorCode.CONFIG_INVALID, `CERTPLANE_DATABASE_POOL_SIZE: a pool of ${poolSize} connections is not one certplane opens; give a whole number from ${DATABASE_POOL_SIZE.min} to ${DATABASE_POOL_SIZE.max}.`, { variable: 'CERTPLANE_DATABASE_POOL_SIZE', poolSize });
  }
  // min = max: none is closed for being idle, so a burst waits for no new connection (nor
  // pays the server for one). One that breaks is dropped, and opened again when work needs it.
  const pool = new pg.Pool({ connectionString: url, max: poolSize, min: poolSize, connectionTimeoutMillis: CONNECT_TIMEOUT_MS });
  // A connection that breaks while idle is discarded by the pool; the next query opens a
  // new one or fails with its own error. Without a listener the event would crash the process.
  pool.on('error', () => undefined);
  // pg-pool listens for a client's errors only while the client is idle, and pool.query only
  // until its query's callback. A server that ends a connection (57P01 on a restart or
  // pg_terminate_backend) between those, or twice, made the client emit an error nobody
  // heard, and the process crashed (seen once in the suite). Every client keeps a listener:
  // the pool drops a broken client when it is next released or found idle, and a query on
  // it fails as STORE_UNAVAILABLE.
  pool.on('connect', (client) => client.on('error', () => undefined));
  try {
    const first = await pool.connect();
    try {
      await first.query('SELECT 1');
    } catch (error) {
      first.release(error as Error);
      throw error;
    }
    // Asked for while the first is still out, so that each is a new connection.
    warmUp(pool, poolSize - 1);
    first.release();
  } catch (error) {
    await pool.end();
    throw new CertplaneError(
      ErrorCode.STORE_UNAVAILABLE,
      `Cannot connect to PostgreSQL at ${location}: ${describe(error)}. Check that the server is running and that the URL's host, port, user, password and database are right.`,
      { location },
      { cause: error },
    );
  }
  // Statements prepared once per connection (prepared.ts); one refused because a migration
  // changed its table (mayBeOutOfDate) is prepared again, and run again unless a transaction
  // it aborted must fail.
  const names = new StatementNames();
  const run = <T>(on: pg.Pool | pg.PoolClient, sql: string, params: readonly unknown[] | undefined, inTransaction: boolean): Promise<T[]> =>
    names.run(
      sql,
      inTransaction,
      async () => (await on.query(sql, params && [...params])).rows as T[],
      async (name) => (await on.query({ name, text: sql, values: params?.map(prepareValue) })).rows as T[],
    );
  return guarded('postgres', location, {
    query: <T>(sql: string, params?: readonly unknown[]) => run<T>(pool, sql, params, false),
    transaction: async (work) => {
      const client = await pool.connect();
      let broken: Error | undefined;
      // A statement given this transaction after it ended would run on the released client,
      // inside whichever transaction holds it by then.
      let ended = false;
      const inside = <T>(sql: string, params?: readonly unknown[]) => {
        if (ended) return Promise.reject(new Error('Transaction is closed'));
        return run<T>(client, sql, params, true);
      };
      try {
        await client.query('BEGIN');
        const result = await work({ query: inside });
        await client.query('COMMIT');
        return result;
      } catch (error) {
        await client.query('ROLLBACK').catch((rollbackError: Error) => {
          broken = rollbackError;
        });
        throw error;
      } finally {
        ended = true;
        client.release(broken);
      }
    },
    listen: (channel, onPayload, onResubscribed) => listenOnPostgres(url, channel, onPayload, onResubscribed),
    close: () => pool.end(),
  });
}

/**
 * Opens `count` connections in the background and leaves them idle in the pool. A failure
 * (the server's connection limit, a timeout) is dropped: the pool opens connections when
 * queries need them anyway. Closing the pool meanwhile waits for the ones still opening,
 * which the pool then closes as they are released.
 */
function warmUp(pool: pg.Pool, count: number): void {
  for (let i = 0; i < count; i += 1) {
    pool.connect().then(
      (client) => client.release(),
      () => undefined,
    );
  }
}

/**
 * A client outside the pool, because a LISTEN belongs to its connection. When the
 * connection breaks (the server restarted, a network cut) it is opened again after a
 * jittered, doubling delay, and `onResubscribed` tells the caller that notifications in
 * between are lost.
 */
async function listenOnPostgres(url: string, channel: string, onPayload: (payload: string) => void, onResubscribed: () => void): Promise<() => Promise<void>> {
  if (!CHANNEL_NAME.test(channel)) throw new CertplaneError(ErrorCode.STORE_INVALID_VALUE, `${channel} is not a notification channel name certplane uses`);
  let stopped = false;
  let client: pg.Client | undefined;
  let retry: NodeJS.Timeout | undefined;
  let failures = 0;
  const open = async (): Promise<void> => {
    const next = new pg.Client({ connectionString: url, connectionTimeoutMillis: CONNECT_TIMEOUT_MS });
    next.on('notification', (message) => {
      if (message.channel === channel && message.payload) onPayload(message.payload);
    });
    next.on('error', () => lost(next));
    next.on('end', () => lost(next));
    client = next;
    await next.connect();
    await next.query(`LISTEN ${channel}`);
    failures = 0;
  };
  const lost = (broken: pg.Client) => {
    if (stopped || client !== broken || retry) return;
    client = undefined;
    void broken.end().catch(() => undefined);
    failures += 1;
    const ceiling = Math.min(LISTEN_RETRY_MAX_MS, LISTEN_RETRY_MIN_MS * 2 ** Math.min(failures, 16));
    retry = setTimeout(() => {
      retry = undefined;
      if (stopped) return;
      open().then(onResubscribed, () => client && lost(client));
    }, Math.round(Math.random() * ceiling));
    retry.unref();
  };
  await open().catch((error: unknown) => {
    void client?.end().catch(() => undefined);
    throw translate(error, redactUrl(url));
  });
  return async () => {
    stopped = true;
    clearTimeout(retry);
    await client?.end().catch(() => undefined);
  };
}

async function openPglite(directory: string | undefined, location: string, thread: boolean): Promise<Database> {
  let engine: PgliteThread | PGlite;
  try {
    if (directory !== undefined) await mkdir(directory, { recursive: true });
    engine = thread ? await openPgliteThread(directory, location) : await PGlite.create(directory);
  } catch (error) {
    throw new CertplaneError(
      ErrorCode.STORE_UNAVAILABLE,
      `Cannot open the embedded database at ${location}: ${describe(error)}. Check that the directory is writable and that no other process has it open.`,
      { location },
      { cause: error },
    );
  }
  const listenOn = (channel: string, onPayload: (payload: string) => void) => {
    if (!CHANNEL_NAME.test(channel)) throw new CertplaneError(ErrorCode.STORE_INVALID_VALUE, `${channel} is not a notification channel name certplane uses`);
    return engine.listen(channel, onPayload);
  };
  if (!(engine instanceof PGlite)) {
    const onThread = engine;
    return guarded('pglite', location, {
      query: (sql, params) => onThread.query(sql, params),
      transaction: (work) => onThread.transaction(work),
      // In this process: nothing to lose, so never resubscribed.
      listen: async (channel, onPayload) => listenOn(channel, onPayload),
      close: () => onThread.close(),
    });
  }
  const inline = engine;
  const prepared = new PglitePrepared(inline);
  return guarded('pglite', location, {
    query: <T>(sql: string, params?: readonly unknown[]) => prepared.query<T>(sql, params),
    transaction: (work) => inline.transaction((tx) => work({ query: <T>(sql: string, params?: readonly unknown[]) => prepared.query<T>(sql, params, tx) })),
    listen: async (channel, onPayload) => {
      const unlisten = await listenOn(channel, onPayload);
      return async () => {
        if (!inline.closed) await unlisten();
      };
    },
    close: () => inline.close(),
  });
}

interface RawDatabase extends Queryable {
  transaction<T>(work: (tx: Queryable) => Promise<T>): Promise<T>;
  listen: Database['listen'];
  close(): Promise<void>;
}

/** Adds what both engines share: refusal after close, and driver errors turned into STORE_ codes. */
function guarded(engine: Database['engine'], location: string, raw: RawDatabase): Database {
  let closed = false;
  const ensureOpen = () => {
    if (closed) throw new CertplaneError(ErrorCode.STORE_CLOSED, `The store at ${location} was closed; open a new one.`, { location });
  };
  const translating = (tx: Queryable): Queryable => ({
    query: async <T>(sql: string, params?: readonly unknown[]) => {
      try {
        return await tx.query<T>(sql, params);
      } catch (error) {
        throw translate(error, location);
      }
    },
  });
  return {
    engine,
    location,
    query: async <T>(sql: string, params?: readonly unknown[]) => {
      ensureOpen();
      return translating(raw).query<T>(sql, params);
    },
    transaction: async (work) => {
      ensureOpen();
      try {
        return await raw.transaction((tx) => work(translating(tx)));
      } catch (error) {
        throw translate(error, location);
      }
    },
    listen: async (channel, onPayload, onResubscribed) => {
      ensureOpen();
      return raw.listen(channel, onPayload, onResubscribed);
    },
    close: async () => {
      if (closed) return;
      closed = true;
      await raw.close();
    },
  };
}

/** Maps a driver error to a stable STORE_ code; CertplaneErrors from the store itself pass through. */
function translate(error: unknown, location: string): CertplaneError {
  if (error instanceof CertplaneError) return error;
  const code = (error as { code?: unknown }).code;
  const sqlState = typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
  const constraint = (error as { constraint?: unknown }).constraint;
  const details = { location, sqlState, constraint: typeof constraint === 'string' ? constraint : undefined };
  if (sqlState === '23505') {
    return new CertplaneError(ErrorCode.STORE_CONFLICT, `A record with the same key already exists (constraint ${details.constraint}).`, details, { cause: error });
  }
  if (sqlState === '23503') {
    return new CertplaneError(ErrorCode.STORE_NOT_FOUND, `A record this one refers to does not exist (constraint ${details.constraint}).`, details, { cause: error });
  }
  // Class 22 is "data exception": a value the caller supplied (a NUL byte, a date out of range).
  if (sqlState?.startsWith('22')) {
    return new CertplaneError(ErrorCode.STORE_INVALID_VALUE, `The database cannot store a value given: ${describe(error)} (SQLSTATE ${sqlState}).`, details, { cause: error });
  }
  const unavailable = sqlState === undefined ? (typeof code === 'string' && NETWORK_ERRNO.test(code)) || CONNECTION_LOST.test(describe(error)) : UNAVAILABLE_STATES.test(sqlState);
  if (unavailable) {
    return new CertplaneError(ErrorCode.STORE_UNAVAILABLE, `Lost the database at ${location}: ${describe(error)}. Check that the server is running and reachable.`, details, { cause: error });
  }
  return new CertplaneError(ErrorCode.STORE_QUERY_FAILED, `The database at ${location} refused a statement: ${describe(error)}${sqlState === undefined ? '' : ` (SQLSTATE ${sqlState})`}.`, details, { cause: error });
}

/** The cause's own words; an AggregateError (one per address tried) has none of its own. */
function describe(error: unknown): string {
  if (error instanceof AggregateError && error.message === '') return error.errors.map(describe).join('; ');
  if (error instanceof Error) return error.message || error.name;
  return String(error);
}
