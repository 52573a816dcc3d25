/**
 * Counting the statements a step sends to PGlite, the embedded engine, for tests that assert
 * what a step costs the database: a statement is a round trip on PostgreSQL and a run of the
 * engine on either. Every statement the store runs counts (through pglite-prepared.ts, which
 * every store on PGlite runs its statements through, prepared or not), inside a transaction
 * or not, and a transaction adds its BEGIN and COMMIT. Counts every PGlite store of this
 * process (opened with `pgliteThread: false`) while `work` runs: run nothing else meanwhile.
 */
import { PGlite } from '@electric-sql/pglite';
import { PglitePrepared } from '../../src/store/pglite-prepared.js';

type Query = PglitePrepared['query'];
type TransactionOf = PGlite['transaction'];

export async function statementsOf<T>(work: () => Promise<T>): Promise<{ result: T; statements: string[] }> {
  const statements: string[] = [];
  const prepared = PglitePrepared.prototype as { query: Query };
  const engine = PGlite.prototype as { transaction: TransactionOf };
  const { query } = prepared;
  const { transaction } = engine;
  const counted = (sql: string) => statements.push(sql.replace(/\s+/g, ' ').trim());
  prepared.query = function (this: PglitePrepared, sql, ...rest) {
    counted(sql);
    return query.call(this, sql, ...rest);
  } as Query;
  engine.transaction = function (this: PGlite, callback) {
    counted('BEGIN');
    return transaction.call(this, callback).finally(() => counted('COMMIT'));
  } as TransactionOf;
  try {
    return { result: await work(), statements };
  } finally {
    prepared.query = query;
    engine.transaction = transaction;
  }
}
