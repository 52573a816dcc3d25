/**
 * The two engines of the store's one dialect behind the smallest surface the store needs:
 * parameterised queries that return rows, and transactions. PGlite (PostgreSQL compiled to
 * WebAssembly, in this process) is the embedded default; a PostgreSQL server is the engine
 * for production and for several replicas. Both hand back timestamps as Date, jsonb as
 * parsed values and text[] as string[], so the store maps rows the same way for either.
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import pg from 'pg';
import { CertplaneError } from '../errors.js';

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
  /** Releases the connections or the embedded engine; later queries fail with STORE_CLOSED. */
  close(): Promise<void>;
}

const ACCEPTED_FORMS = 'postgres://user:password@host:port/database (or postgresql://), pglite:/path/to/data-directory, or memory:';
/** Enough for 10 concurrent requests per replica; more connections mostly add contention on one server. */
const POOL_SIZE = 10;
/** A server that has not answered a connection attempt in this time is treated as down. */
const CONNECT_TIMEOUT_MS = 10_000;
/** SQLSTATE classes and codes that mean the server, not the statement, is the problem. */
const UNAVAILABLE_STATES = /^(08|53|57P0[1-3]|3D000|28)/;
/** Node's network errnos (ECONNRESET, ETIMEDOUT, ...) and pg's words for a dropped connection or a pool that found none in time. */
const NETWORK_ERRNO = /^E[A-Z]+$/;
const CONNECTION_LOST = /Connection terminated|connection timeout|timeout exceeded when trying to connect/i;

/**
 * Opens the database named by `url` and proves it answers. The URL's form picks the
 * engine, so a deployment switches engines by configuration only.
 */
export async function openDatabase(url: string): Promise<Database> {
  if (/^postgres(ql)?:\/\//.test(url)) {
    if (!URL.canParse(url)) {
      throw new CertplaneError('STORE_INVALID_URL', `Database URL ${redactUrl(url)} is not a well-formed URL; check the host, the port and any percent-escapes in it.`, { url: redactUrl(url) });
    }
    return openPostgres(url);
  }
  if (url === 'memory:') return openPglite(undefined, 'memory:');
  if (url.startsWith('pglite:') && url.length > 'pglite:'.length) {
    const directory = path.resolve(url.slice('pglite:'.length));
    return openPglite(directory, `pglite:${directory}`);
  }
  throw new CertplaneError('STORE_INVALID_URL', `Database URL ${redactUrl(url)} is not one certplane understands; use ${ACCEPTED_FORMS}.`, { url: redactUrl(url) });
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

async function openPostgres(url: string): Promise<Database> {
  const location = redactUrl(url);
  const pool = new pg.Pool({ connectionString: url, max: POOL_SIZE, connectionTimeoutMillis: CONNECT_TIMEOUT_MS });
  // A connection that breaks while idle is discarded by the pool; the next query opens a
  // new one or fails with its own error. Without a listener the event would crash the process.
  pool.on('error', () => undefined);
  try {
    await pool.query('SELECT 1');
  } catch (error) {
    await pool.end();
    throw new CertplaneError(
      'STORE_UNAVAILABLE',
      `Cannot connect to PostgreSQL at ${location}: ${describe(error)}. Check that the server is running and that the URL's host, port, user, password and database are right.`,
      { location },
      { cause: error },
    );
  }
  return guarded('postgres', location, {
    query: async <T>(sql: string, params?: readonly unknown[]) => (await pool.query(sql, params && [...params])).rows as T[],
    transaction: async (work) => {
      const client = await pool.connect();
      let broken: Error | undefined;
      try {
        await client.query('BEGIN');
        const result = await work({ query: async <T>(sql: string, params?: readonly unknown[]) => (await client.query(sql, params && [...params])).rows as T[] });
        await client.query('COMMIT');
        return result;
      } catch (error) {
        await client.query('ROLLBACK').catch((rollbackError: Error) => {
          broken = rollbackError;
        });
        throw error;
      } finally {
        client.release(broken);
      }
    },
    close: () => pool.end(),
  });
}

async function openPglite(directory: string | undefined, location: string): Promise<Database> {
  let db: PGlite;
  try {
    if (directory !== undefined) await mkdir(directory, { recursive: true });
    db = await PGlite.create(directory);
  } catch (error) {
    throw new CertplaneError(
      'STORE_UNAVAILABLE',
      `Cannot open the embedded database at ${location}: ${describe(error)}. Check that the directory is writable and that no other process has it open.`,
      { location },
      { cause: error },
    );
  }
  const engine = db;
  return guarded('pglite', location, {
    query: async <T>(sql: string, params?: readonly unknown[]) => (await engine.query<T>(sql, params && [...params])).rows,
    transaction: (work) => engine.transaction((tx) => work({ query: async <T>(sql: string, params?: readonly unknown[]) => (await tx.query<T>(sql, params && [...params])).rows })),
    close: () => engine.close(),
  });
}

interface RawDatabase extends Queryable {
  transaction<T>(work: (tx: Queryable) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

/** Adds what both engines share: refusal after close, and driver errors turned into STORE_ codes. */
function guarded(engine: Database['engine'], location: string, raw: RawDatabase): Database {
  let closed = false;
  const ensureOpen = () => {
    if (closed) throw new CertplaneError('STORE_CLOSED', `The store at ${location} was closed; open a new one.`, { location });
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
    return new CertplaneError('STORE_CONFLICT', `A record with the same key already exists (constraint ${details.constraint}).`, details, { cause: error });
  }
  if (sqlState === '23503') {
    return new CertplaneError('STORE_NOT_FOUND', `A record this one refers to does not exist (constraint ${details.constraint}).`, details, { cause: error });
  }
  // Class 22 is "data exception": a value the caller supplied (a NUL byte, a date out of range).
  if (sqlState?.startsWith('22')) {
    return new CertplaneError('STORE_INVALID_VALUE', `The database cannot store a value given: ${describe(error)} (SQLSTATE ${sqlState}).`, details, { cause: error });
  }
  const unavailable = sqlState === undefined ? (typeof code === 'string' && NETWORK_ERRNO.test(code)) || CONNECTION_LOST.test(describe(error)) : UNAVAILABLE_STATES.test(sqlState);
  if (unavailable) {
    return new CertplaneError('STORE_UNAVAILABLE', `Lost the database at ${location}: ${describe(error)}. Check that the server is running and reachable.`, details, { cause: error });
  }
  return new CertplaneError('STORE_QUERY_FAILED', `The database at ${location} refused a statement: ${describe(error)}${sqlState === undefined ? '' : ` (SQLSTATE ${sqlState})`}.`, details, { cause: error });
}

/** The cause's own words; an AggregateError (one per address tried) has none of its own. */
function describe(error: unknown): string {
  if (error instanceof AggregateError && error.message === '') return error.errors.map(describe).join('; ');
  if (error instanceof Error) return error.message || error.name;
  return String(error);
}
