/**
 * Counting the statements a step sends to PGlite, the embedded engine, for tests that assert
 * what a step costs the database: a statement is a round trip on PostgreSQL and a parse and
 * plan on either. Every query counts, inside a transaction or not, and a transaction adds its
 * BEGIN and COMMIT. Counts every PGlite of this process while `work` runs: run nothing else
 * meanwhile.
 */
import { PGlite, type Transaction } from '@electric-sql/pglite';

type Query = PGlite['query'];
type TransactionOf = PGlite['transaction'];

export async function statementsOf<T>(work: () => Promise<T>): Promise<{ result: T; statements: string[] }> {
  const statements: string[] = [];
  const prototype = PGlite.prototype as { query: Query; transaction: TransactionOf };
  const { query, transaction } = prototype;
  const counted = (sql: string) => statements.push(sql.replace(/\s+/g, ' ').trim());
  prototype.query = function (this: PGlite, sql, ...rest) {
    counted(sql);
    return query.call(this, sql, ...rest);
  } as Query;
  prototype.transaction = function (this: PGlite, callback) {
    counted('BEGIN');
    const inside = (tx: Transaction) =>
      callback(
        new Proxy(tx, {
          get(target, property, receiver) {
            const value = Reflect.get(target, property, receiver);
            if (property === 'query') return (sql: string, ...rest: unknown[]) => (counted(sql), (value as (...a: unknown[]) => unknown).call(target, sql, ...rest));
            return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
          },
        }),
      );
    return transaction.call(this, inside).finally(() => counted('COMMIT'));
  } as TransactionOf;
  try {
    return { result: await work(), statements };
  } finally {
    prototype.query = query;
    prototype.transaction = transaction;
  }
}
