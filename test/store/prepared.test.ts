/** Which statements get a prepared name, and a new one after the server refused a stale plan. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isStalePlan, mayBeOutOfDate, MOST_RENEWALS, StatementNames } from '../../src/store/prepared.js';

test('reads and writes are named, the same text always alike; DDL, transaction control and very long texts are not', () => {
  const names = new StatementNames();
  const read = 'SELECT * FROM certificates WHERE id = $1';
  const first = names.nameFor(read);
  assert.match(first ?? '', /^certplane_\d+_\d+$/);
  assert.equal(names.nameFor(read), first);
  for (const sql of ['  insert into t values ($1)', 'UPDATE t SET a = 1', 'DELETE FROM t', 'WITH x AS (SELECT 1) SELECT * FROM x']) assert.ok(names.nameFor(sql), sql);
  assert.notEqual(names.nameFor('UPDATE t SET a = 1'), first);
  for (const sql of ['CREATE TABLE t (a int)', 'ALTER TABLE t ADD COLUMN b int', 'BEGIN', 'COMMIT', 'SET x = 1', 'LISTEN c', `SELECT ${'1, '.repeat(6_000)}1`]) assert.equal(names.nameFor(sql), undefined, sql.slice(0, 40));
});

test('at most the capacity of distinct texts is named; the rest run unnamed', () => {
  const names = new StatementNames(3);
  const given = ['SELECT 1', 'SELECT 2', 'SELECT 3', 'SELECT 4'].map((sql) => names.nameFor(sql));
  assert.deepEqual(given.map((name) => name !== undefined), [true, true, true, false]);
  assert.equal(new Set(given.filter(Boolean)).size, 3);
  assert.equal(names.nameFor('SELECT 1'), given[0], 'a named text keeps its name');
});

test('a renewed text gets a name it never had; only a stale plan (SQLSTATE 0A000 from the plan cache) counts as one', () => {
  const names = new StatementNames();
  const before = names.nameFor('SELECT * FROM t');
  names.renew('SELECT * FROM t', before!);
  const after = names.nameFor('SELECT * FROM t');
  assert.ok(after && after !== before);
  names.renew('SELECT never named', 'certplane_0_0');
  assert.equal(names.nameFor('SELECT 1')?.endsWith('_0'), true);
  // As PostgreSQL and PGlite both report it (the message may be translated; the routine is not).
  assert.ok(isStalePlan(Object.assign(new Error('le plan en cache ne doit pas modifier le type en résultat'), { code: '0A000', routine: 'RevalidateCachedQuery' })));
  assert.ok(!isStalePlan(Object.assign(new Error('FOR UPDATE is not allowed with aggregate functions'), { code: '0A000', routine: 'CheckSelectLocking' })));
  assert.ok(!isStalePlan(Object.assign(new Error('cached plan must not change result type'), { code: '0A000' })));
  assert.ok(!isStalePlan(Object.assign(new Error('x'), { code: '42P01', routine: 'RevalidateCachedQuery' })));
  assert.ok(!isStalePlan(undefined));
});

test('a failure is worth one new preparation when it is a stale plan or an analysis error (class 42), not otherwise', () => {
  assert.ok(mayBeOutOfDate(Object.assign(new Error('cached plan must not change result type'), { code: '0A000', routine: 'RevalidateCachedQuery' })));
  assert.ok(mayBeOutOfDate(Object.assign(new Error('column "state" is of type probe_state but expression is of type text'), { code: '42804' })));
  assert.ok(mayBeOutOfDate(Object.assign(new Error('relation "t" does not exist'), { code: '42P01' })));
  for (const code of ['23505', '22P02', '40001', '0A000', '08006', '42', 'ECONNRESET']) assert.ok(!mayBeOutOfDate(Object.assign(new Error('x'), { code })), code);
  assert.ok(!mayBeOutOfDate(new Error('no code')));
  assert.ok(!mayBeOutOfDate(undefined));
});

test('a text renewed more than MOST_RENEWALS times runs unnamed, so a statement that keeps failing prepares no more', () => {
  const names = new StatementNames();
  const sql = 'SELECT secret FROM refused';
  const seen = new Set<string>();
  for (let renewal = 0; renewal <= MOST_RENEWALS; renewal += 1) {
    const name = names.nameFor(sql);
    assert.ok(name !== undefined && !seen.has(name), `renewal ${renewal}: ${name}`);
    seen.add(name);
    names.renew(sql, name);
  }
  assert.equal(names.nameFor(sql), undefined);
  assert.equal(names.nameFor('SELECT 1')?.endsWith('_0'), true, 'other texts keep their names');
});

test('runs that failed side by side under one name renew it once', () => {
  const names = new StatementNames();
  const sql = 'SELECT * FROM certificates WHERE id = $1';
  const stale = names.nameFor(sql)!;
  for (let connection = 0; connection < 20; connection += 1) names.renew(sql, stale);
  const renewed = names.nameFor(sql);
  assert.ok(renewed !== undefined && renewed !== stale);
  names.renew(sql, stale);
  assert.equal(names.nameFor(sql), renewed, 'a late failure under the old name changes nothing');
});

test('run: named while the text has a name; an out-of-date refusal runs once more outside a transaction, is thrown inside one, and past the renewals runs unnamed', async () => {
  const names = new StatementNames();
  const stale = () => Object.assign(new Error('cached plan must not change result type'), { code: '0A000', routine: 'RevalidateCachedQuery' });
  const calls: string[] = [];
  const unnamed = async () => (calls.push('unnamed'), 'unnamed');
  assert.equal(await names.run('CREATE TABLE t (a int)', false, unnamed, async (name) => name), 'unnamed');
  const first = await names.run('SELECT * FROM t', false, unnamed, async (name) => name);
  let failing = true;
  const once = async (name: string) => {
    calls.push(name);
    if (failing) {
      failing = false;
      throw stale();
    }
    return name;
  };
  const again = await names.run('SELECT * FROM t', false, unnamed, once);
  assert.notEqual(again, first, 'run again under a new name');
  assert.deepEqual(calls.slice(-2), [first, again]);
  failing = true;
  await assert.rejects(names.run('SELECT * FROM t', true, unnamed, once), /cached plan/, 'inside a transaction the refusal is thrown');
  const other = Object.assign(new Error('duplicate key'), { code: '23505' });
  await assert.rejects(names.run('SELECT * FROM t', false, unnamed, async () => Promise.reject(other)), /duplicate key/, 'any other failure is thrown as it is');
  // Each run renews once (its retry fails under the new name and is thrown), until the text has none left.
  let outcome = 'thrown';
  for (let run = 0; run <= MOST_RENEWALS + 1 && outcome !== 'unnamed'; run += 1) {
    outcome = await names.run('SELECT * FROM t', false, unnamed, async () => Promise.reject(stale())).catch(() => 'thrown');
  }
  assert.equal(outcome, 'unnamed', 'past the renewals the retry runs unnamed, not under a name the text no longer has');
  assert.equal(names.nameFor('SELECT * FROM t'), undefined);
});
