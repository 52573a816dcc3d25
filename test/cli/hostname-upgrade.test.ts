/**
 * Upgrading a database from before hostname ownership (schema version 6): `certplane serve`
 * starts, gives each name to the oldest instance that listed it, and says at start-up which
 * names later instances list without owning, instead of failing or staying silent.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { openDatabase } from '../../src/store/engines.js';
import { MIGRATIONS, migrate } from '../../src/store/migrations.js';
import { scratch } from '../support/cli.js';
import { freePort } from '../support/ports.js';
import { logEvents, startCertplane } from '../support/processes.js';

test('serve on a database where two instances list one name: starts, and warns which instance does not own it', { timeout: 120_000 }, async (t) => {
  const dir = await scratch('certplane-upgrade-');
  t.after(() => dir.remove());
  const url = `pglite:${dir.path('data')}`;
  const db = await openDatabase(url);
  await migrate(db, MIGRATIONS.filter((migration) => migration.version < 6));
  const insert = async (name: string, at: string) =>
    (await db.query<{ id: string }>("INSERT INTO instances (id, name, hostnames, cluster, key_algorithm, created_at) VALUES (gen_random_uuid(), $1, ARRAY['b.example'], $1, 'ecdsa-p256', $2::timestamptz) RETURNING id", [name, at]))[0]!.id;
  const older = await insert('us-1', '2026-01-01T00:00:00Z');
  const newer = await insert('eu-1', '2026-02-01T00:00:00Z');
  await db.close();

  const serve = startCertplane(['serve'], {
    CERTPLANE_INSECURE_HTTP: '1',
    CERTPLANE_LISTEN: `127.0.0.1:${await freePort()}`,
    CERTPLANE_DATABASE_URL: url,
    CERTPLANE_SECRETS: `file:${dir.path('secrets')}`,
    CERTPLANE_ACME_DIRECTORY: 'https://127.0.0.1:1/directory',
    CERTPLANE_LOG_LEVEL: 'info',
  });
  t.after(() => serve.stop());
  await serve.waitForLine((line) => line.includes('management plane listening'), 90_000);
  const warning = logEvents(serve.lines).find((event) => typeof event.msg === 'string' && event.msg.includes('hostnames an older instance owns'));
  assert.ok(warning, `no warning among:\n${serve.lines.join('\n')}`);
  assert.equal(warning.level, 40);
  assert.deepEqual(warning.unowned, [{ instanceId: newer, name: 'b.example' }]);
  assert.ok(!JSON.stringify(warning).includes(older), 'the owner is not the one to warn about');
});
