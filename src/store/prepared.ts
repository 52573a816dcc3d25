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
    if (known) return `certplane_${known.index}_${known.generation}`;
    if (this.#names.size >= this.#capacity || sql.length > LONGEST_PREPARED || !PREPARABLE.test(sql)) return undefined;
    const entry = { index: this.#names.size, generation: 0 };
    this.#names.set(sql, entry);
    return `certplane_${entry.index}_${entry.generation}`;
  }

  /**
   * A new name for `sql`: the server refused its prepared plan because a table's columns
   * changed under it (a migration of a newer version, during a rolling upgrade). The next
   * run prepares the text again under the new name; the old one is left unused.
   */
  renew(sql: string): void {
    const known = this.#names.get(sql);
    if (known) known.generation += 1;
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
