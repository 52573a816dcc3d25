/**
 * Statements run prepared (prepared.ts) behave as they did unprepared, on each engine: values
 * in and out, errors and their codes, notifications from triggers, durability of a PGlite
 * directory, the transaction lock, and recovery after a failed statement.
 */
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { hasCode } from '../../src/errors.js';
import { ErrorCode } from '../../src/error-catalogue.js';
import { DATABASE_POOL_SIZE } from '../../src/store/types.js';
import { openDatabase, type Database } from '../../src/store/engines.js';
import { cleanups, type Defer } from '../support/cleanups.js';
import { clientConnections, freshPostgresDatabase } from '../support/postgres.js';

const TIMEOUT = { timeout: 60_000 };

interface Engine {
  name: string;
  freshUrl(defer: Defer): Promise<string>;
  pgliteThread?: boolean;
}

const pgliteDirectory = async (defer: Defer) => {
  const directory = await fs.mkdtemp(path.join(os.tmpdir(), 'certplane-prepared-'));
  defer(() => fs.rm(directory, { recursive: true, force: true }));
  return `pglite:${path.join(directory, 'data')}`;
};

const engines: Engine[] = [
  { name: 'pglite inline', freshUrl: pgliteDirectory, pgliteThread: false },
  { name: 'pglite thread', freshUrl: pgliteDirectory, pgliteThread: true },
  {
    name: 'postgres',
    freshUrl: async (defer) => {
      const { url, drop } = await freshPostgresDatabase('certplane_prep');
      defer(drop);
      return url;
    },
  },
];

async function rejectsWith(promise: Promise<unknown>, code: ErrorCode): Promise<Error> {
  let caught: unknown;
  await promise.then(
    () => assert.fail(`expected ${code}`),
    (error: unknown) => {
      caught = error;
    },
  );
  assert.ok(hasCode(caught, code), `expected ${code}, got ${String((caught as Error)?.message ?? caught)}`);
  return caught as Error;
}

/**
 * Another caller's transaction, open once this resolves: it has inserted `first` and holds
 * the engine until `rolledBack()`, which gives statements started meanwhile 200 ms to run
 * (or wait), lets it insert each of `more` and roll back, and asserts it did.
 */
async function heldOpen(db: Database, insert: string, first: number, more: readonly number[] = []): Promise<{ rolledBack(): Promise<void> }> {
  let release!: () => void;
  const holding = new Promise<void>((resolve) => (release = resolve));
  let inside!: () => void;
  const entered = new Promise<void>((resolve) => (inside = resolve));
  const other = db.transaction(async (tx) => {
    await tx.query(insert, [first]);
    inside();
    await holding;
    for (const id of more) await tx.query(insert, [id]);
    throw new Error('rolled back on purpose');
  });
  await entered;
  return {
    rolledBack: async () => {
      await new Promise((resolve) => setTimeout(resolve, 200));
      release();
      await assert.rejects(other, /rolled back on purpose/);
    },
  };
}

for (const engine of engines) {
  const open = async (defer: Defer, url?: string): Promise<{ db: Database; url: string }> => {
    const at = url ?? (await engine.freshUrl(defer));
    const db = await openDatabase(at, { pgliteThread: engine.pgliteThread ?? true });
    defer(() => db.close());
    return { db, url: at };
  };

  test(`${engine.name}: values of every type the store uses go in and come back alike, twice (prepared on the second run)`, TIMEOUT, async (t) => {
    const { db } = await open(cleanups(t));
    await db.query('CREATE TABLE probe (id int PRIMARY KEY, label text, names text[], at timestamptz, doc jsonb, raw bytea, flag boolean, big bigint, amount numeric)');
    const at = new Date('2026-12-03T14:00:00.123Z');
    const insert = 'INSERT INTO probe (id, label, names, at, doc, raw, flag, big, amount) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id, label';
    for (const id of [1, 2]) {
      assert.deepEqual(await db.query(insert, [id, 42, ['a', 'b,c', 'd"e', null], at, { nested: { list: [1, 'x'] }, quote: "it's" }, Buffer.from([0, 1, 255]), false, '9007199254740993', '12.50']), [{ id, label: '42' }]);
    }
    assert.deepEqual(await db.query('INSERT INTO probe (id, label, names, doc) VALUES ($1, $2, $3, $4) RETURNING label, names, doc', [3, null, undefined, null]), [{ label: null, names: null, doc: null }]);
    const read = 'SELECT id, label, names, at, doc, raw, flag, big, amount FROM probe WHERE id = ANY($1) ORDER BY id';
    for (const _ of [1, 2]) {
      const rows = await db.query<Record<string, unknown>>(read, [[1, 2]]);
      assert.equal(rows.length, 2);
      for (const row of rows) {
        assert.equal(row.label, '42');
        assert.deepEqual(row.names, ['a', 'b,c', 'd"e', null]);
        assert.equal((row.at as Date).getTime(), at.getTime());
        assert.deepEqual(row.doc, { nested: { list: [1, 'x'] }, quote: "it's" });
        assert.deepEqual([...(row.raw as Uint8Array)], [0, 1, 255]);
        assert.equal(row.flag, false);
        assert.equal(String(row.big), '9007199254740993');
        assert.equal(row.amount, '12.50');
      }
    }
    assert.deepEqual(await db.query('SELECT id FROM probe WHERE id = $1', [99]), [], 'an empty result');
    assert.deepEqual(await db.query('UPDATE probe SET flag = $1 WHERE id = $2', [true, 1]), [], 'a write without RETURNING');
    assert.deepEqual(await db.query('DELETE FROM probe WHERE id = $1 RETURNING flag', [1]), [{ flag: true }]);
  });

  test(`${engine.name}: a hostile string stays a value`, TIMEOUT, async (t) => {
    const { db } = await open(cleanups(t));
    await db.query('CREATE TABLE probe (id int PRIMARY KEY, label text)');
    const hostile = "x'); DROP TABLE probe; -- $1 \\ \u2028 E'\\x00'";
    for (const id of [1, 2]) await db.query('INSERT INTO probe VALUES ($1, $2)', [id, hostile]);
    assert.deepEqual(await db.query('SELECT label FROM probe WHERE label = $1 ORDER BY id', [hostile]), [{ label: hostile }, { label: hostile }]);
  });

  test(`${engine.name}: errors keep their codes and constraints, and the next statement runs (in and out of transactions)`, TIMEOUT, async (t) => {
    const { db } = await open(cleanups(t));
    await db.query('CREATE TABLE parent (id int PRIMARY KEY)');
    await db.query('CREATE TABLE child (id int PRIMARY KEY, parent int REFERENCES parent (id), n int)');
    const addParent = 'INSERT INTO parent VALUES ($1)';
    const addChild = 'INSERT INTO child VALUES ($1, $2, $3)';
    await db.query(addParent, [1]);
    for (const _ of [1, 2]) {
      const conflict = await rejectsWith(db.query(addParent, [1]), ErrorCode.STORE_CONFLICT);
      assert.match(conflict.message, /parent_pkey/);
      const missing = await rejectsWith(db.query(addChild, [1, 7, 0]), ErrorCode.STORE_NOT_FOUND);
      assert.match(missing.message, /child_parent_fkey/);
      await rejectsWith(db.query(addChild, [1, 1, 'not a number']), ErrorCode.STORE_INVALID_VALUE);
      await rejectsWith(db.query('INSERT INTO parent VALUES ($1) RETURNING id', ['\u0000']), ErrorCode.STORE_INVALID_VALUE);
      assert.deepEqual(await db.query('SELECT id FROM parent WHERE id = $1', [1]), [{ id: 1 }]);
    }
    await rejectsWith(
      db.transaction(async (tx) => {
        await tx.query(addParent, [2]);
        await tx.query(addParent, [1]);
      }),
      ErrorCode.STORE_CONFLICT,
    );
    assert.deepEqual(await db.query('SELECT id FROM parent ORDER BY id'), [{ id: 1 }], 'the failed transaction rolled back');
    assert.deepEqual(await db.transaction((tx) => tx.query(addParent + ' RETURNING id', [3])), [{ id: 3 }]);
  });

  test(`${engine.name}: a statement whose preparation fails runs once its table exists`, TIMEOUT, async (t) => {
    const { db } = await open(cleanups(t));
    const read = 'SELECT id FROM later WHERE id = $1';
    await rejectsWith(db.query(read, [1]), ErrorCode.STORE_QUERY_FAILED);
    await rejectsWith(db.transaction((tx) => tx.query(read, [1])), ErrorCode.STORE_QUERY_FAILED);
    await db.query('CREATE TABLE later (id int)');
    await db.query('INSERT INTO later VALUES ($1)', [1]);
    assert.deepEqual(await db.query(read, [1]), [{ id: 1 }]);
    assert.deepEqual(await db.transaction((tx) => tx.query(read, [1])), [{ id: 1 }]);
  });

  test(`${engine.name}: a NOTIFY from a trigger of a prepared write reaches the listener`, TIMEOUT, async (t) => {
    const { db } = await open(cleanups(t));
    await db.query('CREATE TABLE probe (id int PRIMARY KEY)');
    await db.query("CREATE FUNCTION probe_notify() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_notify('probe_channel', NEW.id::text); RETURN NEW; END $$");
    await db.query('CREATE TRIGGER probe_notify AFTER INSERT ON probe FOR EACH ROW EXECUTE FUNCTION probe_notify()');
    const heard: string[] = [];
    const unlisten = await db.listen('probe_channel', (payload) => heard.push(payload), () => undefined);
    t.after(unlisten);
    const insert = 'INSERT INTO probe VALUES ($1)';
    await db.query(insert, [1]);
    await db.query(insert, [2]);
    await db.transaction((tx) => tx.query(insert, [3]));
    const deadline = Date.now() + 5_000;
    while (heard.length < 3 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    assert.deepEqual(heard.sort(), ['1', '2', '3']);
  });

  test(`${engine.name}: prepared writes survive closing and opening again`, TIMEOUT, async (t) => {
    const defer = cleanups(t);
    const first = await open(defer);
    await first.db.query('CREATE TABLE probe (id int PRIMARY KEY)');
    for (const id of [1, 2]) await first.db.query('INSERT INTO probe VALUES ($1)', [id]);
    await first.db.transaction((tx) => tx.query('INSERT INTO probe VALUES ($1)', [3]));
    await first.db.close();
    const again = await open(defer, first.url);
    assert.deepEqual(await again.db.query('SELECT id FROM probe ORDER BY id'), [{ id: 1 }, { id: 2 }, { id: 3 }]);
  });

  test(`${engine.name}: a transaction's handle used after it ended does not run inside another transaction`, TIMEOUT, async (t) => {
    const { db } = await open(cleanups(t));
    await db.query('CREATE TABLE probe (id int PRIMARY KEY)');
    const insert = 'INSERT INTO probe VALUES ($1)';
    await db.query(insert, [0]);
    let leaked: { query: Database['query'] } | undefined;
    await db.transaction(async (tx) => {
      leaked = tx;
      await tx.query(insert, [1]);
    });
    const other = await heldOpen(db, insert, 10);
    const late = leaked!.query(insert, [2]).then(
      () => 'ran',
      () => 'refused',
    );
    await other.rolledBack();
    const outcome = await late;
    const ids = (await db.query<{ id: number }>('SELECT id FROM probe ORDER BY id')).map((row) => row.id);
    // Either refused, or run on its own after the other transaction: never rolled back with it.
    if (outcome === 'ran') assert.deepEqual(ids, [0, 1, 2]);
    else assert.deepEqual(ids, [0, 1]);
  });

  test(`${engine.name}: a prepared statement outside a transaction never runs inside another caller's open transaction`, TIMEOUT, async (t) => {
    const { db } = await open(cleanups(t));
    await db.query('CREATE TABLE probe (id int PRIMARY KEY)');
    const insert = 'INSERT INTO probe VALUES ($1)';
    await db.query(insert, [0]);
    await db.query(insert, [1]);
    const other = await heldOpen(db, insert, 10, [11]);
    const outside = Promise.all([db.query(insert, [2]), db.query('SELECT id FROM probe WHERE id = $1', [10])]);
    await other.rolledBack();
    const [, seen] = await outside;
    assert.deepEqual(seen, [], 'the read outside saw nothing of the open transaction');
    assert.deepEqual((await db.query<{ id: number }>('SELECT id FROM probe ORDER BY id')).map((row) => row.id), [0, 1, 2]);
  });

  test(`${engine.name}: a value that cannot be serialised fails its statement alone; the statement runs after it, in and out of a transaction`, TIMEOUT, async (t) => {
    const { db } = await open(cleanups(t));
    await db.query('CREATE TABLE probe (id int PRIMARY KEY, doc jsonb)');
    await db.query("INSERT INTO probe VALUES (1, '{}')");
    const write = 'UPDATE probe SET doc = $1 WHERE id = $2 RETURNING doc';
    const unserialisable: Record<string, unknown> = { label: 'loops' };
    unserialisable.self = unserialisable;
    for (const round of [1, 2, 3]) {
      assert.deepEqual(await db.query(write, [{ round }, 1]), [{ doc: { round } }]);
      await assert.rejects(db.query(write, [unserialisable, 1]));
      assert.deepEqual(await db.query(write, [{ round, after: true }, 1]), [{ doc: { round, after: true } }], `round ${round}`);
    }
    const inside = await db.transaction(async (tx) => {
      await tx.query(write, [{ inside: 1 }, 1]);
      await assert.rejects(tx.query(write, [unserialisable, 1]));
      return tx.query(write, [{ inside: 2 }, 1]);
    });
    assert.deepEqual(inside, [{ doc: { inside: 2 } }]);
  });

  test(`${engine.name}: a statement prepared before a migration changed a column's type runs after it (its parameter's type is inferred again)`, TIMEOUT, async (t) => {
    const { db } = await open(cleanups(t));
    await db.query('CREATE TABLE probe (id int PRIMARY KEY, state text NOT NULL)');
    await db.query("INSERT INTO probe SELECT n, 'pending' FROM generate_series(1, 16) AS n");
    const write = 'UPDATE probe SET state = $1 WHERE id = $2';
    const everyConnection = (state: string) => Promise.all(Array.from({ length: 16 }, (_, index) => db.query(write, [state, index + 1])));
    // Side by side, so that on PostgreSQL every pooled connection prepares it.
    await everyConnection('pending');
    await everyConnection('pending');
    // A newer version's migration: the column becomes an enum. The prepared text's $1 was text.
    await db.query("CREATE TYPE probe_state AS ENUM ('pending', 'issued')");
    await db.query('ALTER TABLE probe ALTER COLUMN state TYPE probe_state USING state::probe_state');
    await everyConnection('issued');
    assert.deepEqual(await db.query("SELECT count(*)::int AS n FROM probe WHERE state = 'issued'"), [{ n: 16 }]);
    // In a transaction the refused statement aborts it, as a stale plan does; the next attempt runs.
    await db.query("ALTER TABLE probe ALTER COLUMN state TYPE text USING state::text");
    await db.query('DROP TYPE probe_state');
    await db.query("CREATE TYPE probe_state AS ENUM ('pending', 'issued', 'installed')");
    await db.query('ALTER TABLE probe ALTER COLUMN state TYPE probe_state USING state::probe_state');
    const inTransaction = () => db.transaction((tx) => tx.query(write + ' RETURNING state', ['installed', 1]));
    await Promise.allSettled([inTransaction()]);
    assert.deepEqual(await inTransaction(), [{ state: 'installed' }]);
  });
}

test('postgres: connections the server dropped are replaced and prepare their statements again', TIMEOUT, async (t) => {
  const defer = cleanups(t);
  const { url, drop } = await freshPostgresDatabase('certplane_prep');
  defer(drop);
  const db = await openDatabase(url);
  defer(() => db.close());
  await db.query('CREATE TABLE probe (id int PRIMARY KEY)');
  await db.query('INSERT INTO probe VALUES (1)');
  const read = 'SELECT id FROM probe WHERE id = $1';
  const everyConnection = () => Promise.allSettled(Array.from({ length: 16 }, () => db.query(read, [1])));
  for (const outcome of await everyConnection()) assert.deepEqual(outcome.status === 'fulfilled' && outcome.value, [{ id: 1 }]);
  // The pool opens its connections in the background; under load they may still be logging
  // in (not yet counted for this database), so wait until all of them are up to be dropped.
  await clientConnections(url, (open) => open >= DATABASE_POOL_SIZE.default);
  const [{ dropped } = { dropped: 0 }] = await db.query<{ dropped: number }>('SELECT count(*)::int AS dropped FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()) AS ended');
  assert.ok(dropped > 0, 'connections were dropped');
  await new Promise((resolve) => setTimeout(resolve, 500));
  // A dropped connection still in use fails as unavailable; none answers wrongly.
  for (const outcome of await everyConnection()) {
    if (outcome.status === 'fulfilled') assert.deepEqual(outcome.value, [{ id: 1 }]);
    else assert.ok(hasCode(outcome.reason, ErrorCode.STORE_UNAVAILABLE), String(outcome.reason));
  }
  for (const outcome of await everyConnection()) assert.deepEqual(outcome.status === 'fulfilled' ? outcome.value : String(outcome.reason), [{ id: 1 }]);
  assert.deepEqual(await db.transaction((tx) => tx.query(read, [1])), [{ id: 1 }]);
});
