/**
 * Configuration changes in the audit trail: a node's first start, a restart with the same
 * settings (nothing recorded), a restart with other settings (exactly those recorded),
 * and never a database password. On a real PGlite store.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { auditConfiguration, configurationChanges, summarizeConfiguration } from '../../src/config/changes.js';
import { loadConfig } from '../../src/config/config.js';
import { openStore, type Store } from '../../src/store/index.js';

let store: Store;
before(async () => {
  store = await openStore('memory:');
});
after(() => store.close());

const base = { CERTPLANE_DATABASE_URL: 'postgres://certplane:s3cret-pw@db.internal:5432/certplane', CERTPLANE_INSECURE_HTTP: '1' };

test('the summary flattens every setting and hides the database password', () => {
  const summary = summarizeConfiguration(loadConfig(base));
  assert.equal(summary['server.databaseUrl'], 'postgres://certplane:***@db.internal:5432/certplane');
  assert.equal(summary['server.insecureHttp'], true);
  assert.deepEqual(summary['chain.preferences'], ['ISRG Root X1']);
  assert.ok(!JSON.stringify(summary).includes('s3cret-pw'));
  assert.equal(summarizeConfiguration(loadConfig({ CERTPLANE_DATABASE_URL: 'pglite:/var/lib/certplane/db', CERTPLANE_INSECURE_HTTP: '1' }))['server.databaseUrl'], 'pglite:/var/lib/certplane/db');
  const inQuery = summarizeConfiguration(loadConfig({ CERTPLANE_DATABASE_URL: 'postgres://certplane@db.internal/certplane?password=s3cret-pw', CERTPLANE_INSECURE_HTTP: '1' }));
  assert.ok(!JSON.stringify(inQuery).includes('s3cret-pw'), 'a password in the query string reached the summary');
});

test('changes list exactly the settings that differ, added and removed ones included', () => {
  assert.deepEqual(configurationChanges({ a: 1, b: ['x'], c: 'same' }, { a: 2, b: ['x'], c: 'same', d: null }), { a: { from: 1, to: 2 }, d: { from: undefined, to: null } });
  assert.deepEqual(configurationChanges({ a: 1 }, { a: 1 }), {});
});

test('a node records its first start, nothing on a restart with the same settings, and only the changed settings after a change', async () => {
  const who = { node: 'plane-1 127.0.0.1:8443', actor: 'service:certplane' };
  const first = await auditConfiguration(store.audit, loadConfig(base), who);
  assert.ok(first && first.includes('server.databaseUrl'));
  assert.equal(await auditConfiguration(store.audit, loadConfig(base), who), undefined);
  const changed = await auditConfiguration(store.audit, loadConfig({ ...base, CERTPLANE_PREFERRED_CHAINS: 'ISRG Root X2, ISRG Root X1', CERTPLANE_LOG_LEVEL: 'debug' }), who);
  assert.deepEqual(changed, ['chain.preferences', 'logLevel']);
  // Another node with the same settings has its own history.
  assert.ok(await auditConfiguration(store.audit, loadConfig(base), { ...who, node: 'plane-2 127.0.0.1:8443' }));

  const entries = (await store.audit.list(10)).filter((e) => e.action === 'config.change');
  assert.equal(entries.length, 3);
  const latest = await store.audit.latest('config.change', who.node);
  assert.equal(latest?.actor, 'service:certplane');
  assert.equal(latest?.reason, 'started with settings that differ from the ones last recorded');
  assert.deepEqual((latest?.details as any).changed['chain.preferences'], { from: ['ISRG Root X1'], to: ['ISRG Root X2', 'ISRG Root X1'] });
  const stored = await store.query<{ details: string }>("SELECT details::text AS details FROM audit_log WHERE action = 'config.change'");
  for (const row of stored) assert.ok(!row.details.includes('s3cret-pw'), 'a database password reached the audit trail');
});
