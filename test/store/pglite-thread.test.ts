/**
 * PGlite on its worker thread behaves as PGlite on the caller's thread: the same rows for
 * the same statements (timestamps as Date, jsonb parsed, text[] as arrays, bytea as bytes),
 * transactions that commit or roll back and keep other statements waiting, the same stable
 * codes for refused statements, notifications, and refusal after close. An open store does
 * not keep a finished process alive, and a statement under way does.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { openDatabase, type Database } from '../../src/store/engines.js';
import { ErrorCode } from '../../src/error-catalogue.js';
import { eventually } from '../support/processes.js';

const TIMEOUT = { timeout: 60_000 };
const enginesUrl = pathToFileURL(new URL('../../src/store/engines.js', import.meta.url).pathname).href;

async function both<T>(work: (db: Database) => Promise<T>): Promise<{ thread: T; inline: T }> {
  const [onThread, inline] = await Promise.all([openDatabase('memory:'), openDatabase('memory:', { pgliteThread: false })]);
  try {
    return { thread: await work(onThread), inline: await work(inline) };
  } finally {
    await Promise.all([onThread.close(), inline.close()]);
  }
}

describe('PGlite on a worker thread', () => {
  test('returns the rows the engine on this thread returns, types included', TIMEOUT, async () => {
    const at = new Date('2026-12-03T07:00:00.123Z');
    const { thread, inline } = await both((db) =>
      db.query('SELECT $1::timestamptz AS at, $2::jsonb AS doc, $3::text[] AS names, $4::bytea AS bytes, NULL::text AS nothing, 42::int AS n', [
        at,
        JSON.stringify({ reason: 'RateLimited', retryAt: 1 }),
        ['a.example', 'b.example'],
        new Uint8Array([0, 1, 254, 255]),
      ]),
    );
    assert.deepEqual(thread, inline);
    const row = thread[0] as Record<string, unknown>;
    assert.ok(row.at instanceof Date);
    assert.equal((row.at as Date).getTime(), at.getTime());
    assert.deepEqual(row.doc, { reason: 'RateLimited', retryAt: 1 });
    assert.deepEqual(row.names, ['a.example', 'b.example']);
    assert.deepEqual([...(row.bytes as Uint8Array)], [0, 1, 254, 255]);
    assert.equal(row.nothing, null);
  });

  test('a transaction commits, rolls back when its work throws, and keeps other statements waiting until it ends', TIMEOUT, async () => {
    const db = await openDatabase('memory:');
    try {
      await db.query('CREATE TABLE t (id int PRIMARY KEY)');
      const order: string[] = [];
      let outside: Promise<unknown> | undefined;
      await db.transaction(async (tx) => {
        await tx.query('INSERT INTO t VALUES (1)');
        outside = db.query('INSERT INTO t VALUES (2)').then(() => order.push('outside'));
        await new Promise((resolve) => setTimeout(resolve, 100));
        order.push('transaction');
      });
      await outside;
      assert.deepEqual(order, ['transaction', 'outside']);
      await assert.rejects(
        db.transaction(async (tx) => {
          await tx.query('INSERT INTO t VALUES (3)');
          throw new Error('changed my mind');
        }),
        /changed my mind/,
      );
      assert.deepEqual(await db.query('SELECT id FROM t ORDER BY id'), [{ id: 1 }, { id: 2 }]);
    } finally {
      await db.close();
    }
  });

  test('refused statements carry the stable codes, inside a transaction or not', TIMEOUT, async () => {
    const db = await openDatabase('memory:');
    try {
      await db.query('CREATE TABLE u (id int CONSTRAINT u_pk PRIMARY KEY)');
      await db.query('INSERT INTO u VALUES (1)');
      await assert.rejects(db.query('INSERT INTO u VALUES (1)'), (e: any) => e.code === ErrorCode.STORE_CONFLICT && e.details.constraint === 'u_pk' && e.details.sqlState === '23505');
      await assert.rejects(
        db.transaction((tx) => tx.query('SELEC 1')),
        (e: any) => e.code === ErrorCode.STORE_QUERY_FAILED && e.details.sqlState === '42601',
      );
      // Still usable after a refused transaction.
      assert.deepEqual(await db.query('SELECT count(*)::int AS n FROM u'), [{ n: 1 }]);
    } finally {
      await db.close();
    }
  });

  test('notifications reach every listener of the channel, and none after it unlistens', TIMEOUT, async () => {
    const db = await openDatabase('memory:');
    try {
      const heard: string[] = [];
      const never = () => assert.fail('never resubscribed in this process');
      const unlisten = await db.listen('certplane_agent_work', (payload) => heard.push(`a:${payload}`), never);
      const unlistenOther = await db.listen('certplane_agent_work', (payload) => heard.push(`b:${payload}`), never);
      await db.query("SELECT pg_notify('certplane_agent_work', 'first')");
      await eventually(async () => (heard.length === 2 ? true : undefined), 5_000, 20, 'the notification');
      await unlisten();
      await db.query("SELECT pg_notify('certplane_agent_work', 'second')");
      await eventually(async () => (heard.length === 3 ? true : undefined), 5_000, 20, 'the second notification');
      await unlistenOther();
      await db.query("SELECT pg_notify('certplane_agent_work', 'third')");
      await db.query('SELECT 1');
      assert.deepEqual(heard.sort(), ['a:first', 'b:first', 'b:second']);
    } finally {
      await db.close();
    }
  });

  test('after close, every call is refused with STORE_CLOSED', TIMEOUT, async () => {
    const db = await openDatabase('memory:');
    await db.close();
    await assert.rejects(db.query('SELECT 1'), (e: any) => e.code === ErrorCode.STORE_CLOSED);
    await assert.rejects(db.transaction((tx) => tx.query('SELECT 1')), (e: any) => e.code === ErrorCode.STORE_CLOSED);
  });

  test('a directory PGlite cannot open is STORE_UNAVAILABLE, and the process lives on', TIMEOUT, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'certplane-bad-pglite-'));
    try {
      await writeFile(join(dir, 'PG_VERSION'), 'garbage\n');
      const script = `const { openDatabase } = await import(${JSON.stringify(enginesUrl)});
        await openDatabase(${JSON.stringify(`pglite:${dir}`)}).then(() => process.stdout.write('opened'), (e) => process.stdout.write(e.code));
        await new Promise((resolve) => setTimeout(resolve, 500));
        process.stdout.write(' alive');`;
      const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000 });
      assert.equal(child.stdout, `${ErrorCode.STORE_UNAVAILABLE} alive`, child.stderr);
      assert.equal(child.status, 0, child.stderr);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('a parameter that cannot cross to the thread is refused, and holds nothing', TIMEOUT, () => {
    const script = `const { openDatabase } = await import(${JSON.stringify(enginesUrl)});
      const db = await openDatabase('memory:');
      await db.query('SELECT $1::text AS t', [() => 1]).then(() => process.stdout.write('accepted'), (e) => process.stdout.write(e.code));
      const rows = await db.query('SELECT 2 AS two');
      process.stdout.write(' ' + rows[0].two);`;
    const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(child.signal, null, `killed after 30 s: the refused statement held the process (${child.stderr})`);
    assert.equal(child.stdout, `${ErrorCode.STORE_QUERY_FAILED} 2`, child.stderr);
  });

  test('the thread opens under node options a worker refuses when given explicitly (a heap size)', TIMEOUT, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'certplane-heap-'));
    try {
      const script = join(dir, 'open.mjs');
      await writeFile(
        script,
        `const { openDatabase } = await import(${JSON.stringify(enginesUrl)});
        const db = await openDatabase('memory:');
        process.stdout.write(String((await db.query('SELECT 3 AS three'))[0].three));
        await db.close();`,
      );
      const child = spawnSync(process.execPath, ['--max-old-space-size=512', script], { encoding: 'utf8', timeout: 30_000 });
      assert.equal(child.stdout, '3', child.stderr);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('an open store does not hold a finished process, and a statement under way does', TIMEOUT, () => {
    const script = `const { openDatabase } = await import(${JSON.stringify(enginesUrl)});
      const db = await openDatabase('memory:');
      const rows = await db.query('SELECT pg_sleep(0.3), 7 AS seven');
      process.stdout.write(String(rows[0].seven));`;
    const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(child.signal, null, `the process was killed after 30 s: the open store held it (${child.stderr})`);
    assert.equal(child.status, 0, child.stderr);
    assert.equal(child.stdout, '7');
  });
});
