/**
 * A fresh database on the real PostgreSQL server that infra/setup.sh installs and starts,
 * so every suite runs isolated and leaves nothing behind. No skipping: a missing server
 * is a failed set-up, and the message says how to fix it.
 */
import { randomBytes } from 'node:crypto';
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
  return { url: url.toString(), drop: () => admin((client) => client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)).then(() => undefined) };
}
