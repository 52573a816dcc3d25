/**
 * Statements prepared once per connection. The store runs the same few dozen statements for
 * every certificate; parsed, analysed and planned each time, that work was most of what a
 * statement cost (on PGlite, inside the plane's own process: about 3 times the execution of a
 * simple indexed read). A statement of the store's own is given a name the first time it runs;
 * each connection prepares it under that name once, and runs it from then on. Both engines
 * keep PostgreSQL's plan cache rules: a statement is planned again when a table it reads
 * changes, and its first five runs get plans of their own before a generic plan is weighed.
 */

/** Statements worth preparing: plain reads and writes, not DDL nor transaction control. */
const PREPARABLE = /^\s*(?:SELECT|INSERT|UPDATE|DELETE|WITH)\b/i;

/**
 * How many distinct texts get names. The store's statements are a bounded set (some are
 * built from the fields a call sets), so this is never reached by the store itself; it
 * bounds what each connection keeps if a caller of the raw query runs ever-new texts.
 */
export const PREPARED_CAPACITY = 256;

/** A text longer than this (a campaign's batch of 1,000 rows, say) is run unnamed. */
const LONGEST_PREPARED = 16_384;

/**
 * How many times one text is prepared anew before it runs unnamed for good. Each renewal
 * leaves the old statement prepared on every connection that had it; a text that keeps
 * failing with an analysis error (a permission refused at each run, say) would otherwise
 * prepare one more on each failure for as long as the connection lives.
 */
export const MOST_RENEWALS = 16;

/** The names of one database's prepared statements; one per database, shared by its connections. */
export class StatementNames {
  readonly #names = new Map<string, { index: number; generation: number }>();
  readonly #capacity: number;

  constructor(capacity = PREPARED_CAPACITY) {
    this.#capacity = capacity;
  }

  /** The name `sql` is prepared under, or undefined to run it unnamed. */
  nameFor(sql: string): string | undefined {
    const known = this.#names.get(sql);
    if (known) return known.generation > MOST_RENEWALS ? undefined : `certplane_${known.index}_${known.generation}`;
    if (this.#names.size >= this.#capacity || sql.length > LONGEST_PREPARED || !PREPARABLE.test(sql)) return undefined;
    const entry = { index: this.#names.size, generation: 0 };
    this.#names.set(sql, entry);
    return `certplane_${entry.index}_${entry.generation}`;
  }

  /**
   * Runs `sql` one of an engine's two ways: `named(name)` while the text has a name,
   * `unnamed()` otherwise. A named run refused as out of date (mayBeOutOfDate) renews the
   * name and, outside a transaction, runs once more (under the new name, or unnamed past
   * MOST_RENEWALS). Inside one the refusal has aborted the transaction, so it is thrown, and
   * the caller's next attempt prepares the text anew.
   */
  async run<T>(sql: string, inTransaction: boolean, unnamed: () => Promise<T>, named: (name: string) => Promise<T>): Promise<T> {
    const name = this.nameFor(sql);
    if (name === undefined) return unnamed();
    try {
      return await named(name);
    } catch (error) {
      if (!mayBeOutOfDate(error)) throw error;
      this.renew(sql, name);
      if (inTransaction) throw error;
      const renewed = this.nameFor(sql);
      return renewed === undefined ? unnamed() : named(renewed);
    }
  }

  /**
   * A new name for `sql`, which failed as `failed`: the server refused it as prepared because
   * a table changed under it (a migration of a newer version, during a rolling upgrade;
   * mayBeOutOfDate). The next run prepares the text again under the new name; the old one is
   * left unused. Runs that failed under a name already replaced (side by side on several
   * connections) change nothing, so a burst counts once. After MOST_RENEWALS the text runs
   * unnamed.
   */
  renew(sql: string, failed: string): void {
    const known = this.#names.get(sql);
    if (known && failed === `certplane_${known.index}_${known.generation}`) known.generation += 1;
  }
}

/**
 * The error PostgreSQL gives a prepared statement whose result columns changed since it was
 * prepared. SQLSTATE 0A000 is shared with other unsupported features, and the message is
 * translated under lc_messages, so the server's routine (plancache.c) tells it apart.
 */
export function isStalePlan(error: unknown): boolean {
  const e = error as { code?: unknown; routine?: unknown } | undefined;
  return e?.code === '0A000' && e.routine === 'RevalidateCachedQuery';
}

/**
 * Whether a prepared statement's failure may be its preparation gone out of date, so that
 * the text is worth preparing again and (outside a transaction) running once more: a stale
 * plan, or an error of class 42 (the statement's analysis failed). PostgreSQL analyses a
 * prepared statement again after a migration with the parameter types fixed when it was
 * prepared, so a column changed from text to an enum refuses its text parameter (42804)
 * where the same text prepared now infers the enum. A statement that is wrong in itself
 * fails its new preparation with the same error, and that error is what the caller gets.
 */
export function mayBeOutOfDate(error: unknown): boolean {
  const code = (error as { code?: unknown } | undefined)?.code;
  return isStalePlan(error) || (typeof code === 'string' && /^42[0-9A-Z]{3}$/.test(code));
}
