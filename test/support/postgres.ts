/**
 * A fresh database on the real PostgreSQL server that infra/setup.sh installs and starts,
 * so every suite runs isolated and leaves nothing behind. No skipping: a missing server
 * is a failed set-up, and the message says how to fix it.
 */
import { randomBytes } from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';
import pg from 'pg';

export const TEST_POSTGRES_URL = process.env.CERTPLANE_TEST_POSTGRES_URL ?? 'postgres://certplane:certplane@127.0.0.1:5432/certplane_test';

async function admin<T>(fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const url = new URL(TEST_POSTGRES_URL);
  url.pathname = '/postgres';
  const client = new pg.Client({ connectionString: url.toString(), connectionTimeoutMillis: 5000 });
  try {
    await client.connect();
  } catch (error) {
    throw new Error(`PostgreSQL is not reachable at ${url.host} (${(error as Error).message}); run "bash infra/setup.sh", which installs and starts it`);
  }
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** Creates an empty database; returns its URL and a function that drops it. */
export async function freshPostgresDatabase(prefix = 'certplane_t'): Promise<{ url: string; drop: () => Promise<void> }> {
  const name = `${prefix}_${randomBytes(6).toString('hex')}`;
  await admin((client) => client.query(`CREATE DATABASE ${name}`));
  const url = new URL(TEST_POSTGRES_URL);
  url.pathname = `/${name}`;
  return { url: url.toString(), drop: () => admin((client) => dropDatabase((sql) => client.query(sql), name)) };
}

/**
 * A database of a given name, kept between runs (the agents bench's kept fleet): created
 * when missing, else reused as it is; `drop` removes it.
 */
export async function namedPostgresDatabase(name: string): Promise<{ url: string; created: boolean; drop: () => Promise<void> }> {
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(name)) throw new Error(`"${name}" is not a plain PostgreSQL database name`);
  const created = await admin(async (client) => {
    const { rowCount } = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    if (rowCount) return false;
    await client.query(`CREATE DATABASE ${name}`);
    return true;
  });
  const url = new URL(TEST_POSTGRES_URL);
  url.pathname = `/${name}`;
  return { url: url.toString(), created, drop: () => admin((client) => dropDatabase((sql) => client.query(sql), name)) };
}

/**
 * DROP DATABASE … WITH (FORCE), retried for a few seconds. FORCE has to terminate every
 * backend on the database; an autovacuum worker there makes it fail with 42501 unless the
 * role holds pg_signal_backend (infra/setup.sh grants it), and 55006 when a backend is still
 * going away. Either way a moment later the database drops.
 */
export async function dropDatabase(query: (sql: string) => Promise<unknown>, name: string): Promise<void> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      await query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      return;
    } catch (error) {
      const code = (error as { code?: string }).code;
      if (attempt >= 20 || (code !== '42501' && code !== '55006')) throw error;
      await delay(250);
    }
  }
}

/**
 * The client connections a database has, as the server counts them, once they settle at what
 * `settled` accepts (or after about 10 s, whatever they are then). Read from the server's own
 * database, so the reading connection is not counted.
 */
export async function clientConnections(url: string, settled: (count: number) => boolean): Promise<number> {
  const name = new URL(url).pathname.slice(1);
  return admin(async (client) => {
    for (let tries = 0; ; tries += 1) {
      const [row] = (await client.query<{ count: number }>("SELECT count(*)::int AS count FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'", [name])).rows;
      if (settled(row!.count) || tries >= 500) return row!.count;
      await delay(20);
    }
  });
}
