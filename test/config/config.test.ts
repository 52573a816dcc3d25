import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CertplaneError } from '../../src/errors.js';
import { LETS_ENCRYPT_PRODUCTION, loadConfig } from '../../src/config/config.js';
import { ErrorCode } from '../../src/error-catalogue.js';

const invalid = (env: Record<string, string>, variable: string) =>
  assert.throws(() => loadConfig(env), (e: unknown) => e instanceof CertplaneError && e.code === ErrorCode.CONFIG_INVALID && e.message.includes(variable));

test('defaults: Let\'s Encrypt production, ISRG Root X1, no fallback, system trust store, file secrets', () => {
  const config = loadConfig({});
  assert.equal(config.acme.directoryUrl, LETS_ENCRYPT_PRODUCTION);
  assert.deepEqual(config.chain.preferences, ['ISRG Root X1']);
  assert.equal(config.chain.fallback, 'none');
  assert.equal(config.chain.trustStore, 'system');
  assert.equal(config.secrets, 'file:./data/secrets');
  assert.equal(config.dns.provider, 'none');
});

test('preferred chains: JSON array or comma-separated list, order kept', () => {
  assert.deepEqual(loadConfig({ CERTPLANE_PREFERRED_CHAINS: '["Root YR", "ISRG Root X1"]' }).chain.preferences, ['Root YR', 'ISRG Root X1']);
  assert.deepEqual(loadConfig({ CERTPLANE_PREFERRED_CHAINS: 'ISRG Root X2, ISRG Root X1' }).chain.preferences, ['ISRG Root X2', 'ISRG Root X1']);
  invalid({ CERTPLANE_PREFERRED_CHAINS: '["unterminated' }, 'CERTPLANE_PREFERRED_CHAINS');
  invalid({ CERTPLANE_PREFERRED_CHAINS: '[]' }, 'CERTPLANE_PREFERRED_CHAINS');
  invalid({ CERTPLANE_PREFERRED_CHAINS: 'ISRG Root X1,,' }, 'CERTPLANE_PREFERRED_CHAINS');
  invalid({ CERTPLANE_PREFERRED_CHAINS: '[1, 2]' }, 'CERTPLANE_PREFERRED_CHAINS');
});

test('every bad variable is named', () => {
  invalid({ CERTPLANE_ACME_DIRECTORY: 'ftp://ca.example/dir' }, 'CERTPLANE_ACME_DIRECTORY');
  invalid({ CERTPLANE_SECRETS: 'vault:x' }, 'CERTPLANE_SECRETS');
  invalid({ CERTPLANE_DNS_PROVIDER: 'cloudflare' }, 'CERTPLANE_DNS_PROVIDER');
  invalid({ CERTPLANE_DNS_PROVIDER: 'challtestsrv' }, 'CERTPLANE_CHALLTESTSRV_URL');
  invalid({ CERTPLANE_CHAIN_FALLBACK: 'yes' }, 'CERTPLANE_CHAIN_FALLBACK');
  invalid({ CERTPLANE_DISTRUSTED_SPKI: 'abc' }, 'CERTPLANE_DISTRUSTED_SPKI');
  assert.throws(
    () => loadConfig({ CERTPLANE_SECRETS: 'x', CERTPLANE_DNS_PROVIDER: 'y' }),
    (e: unknown) => e instanceof CertplaneError && e.message.includes('CERTPLANE_SECRETS') && e.message.includes('CERTPLANE_DNS_PROVIDER'),
  );
});

test('distrust pins accept hex and base64, normalized to hex', () => {
  const config = loadConfig({ CERTPLANE_DISTRUSTED_SPKI: 'sha256/Vjs8r4z+80wjNcr1YKepWQboSIRi63WsWXhIMN+eWys=, 56:3b:3c:af:8c:fe:f3:4c:23:35:ca:f5:60:a7:a9:59:06:e8:48:84:62:eb:75:ac:59:78:48:30:df:9e:5b:2b' });
  assert.deepEqual(config.chain.extraDistrustedSpki, [
    '563b3caf8cfef34c2335caf560a7a95906e8488462eb75ac59784830df9e5b2b',
    '563b3caf8cfef34c2335caf560a7a95906e8488462eb75ac59784830df9e5b2b',
  ]);
});

test('empty variables count as unset', () => {
  assert.equal(loadConfig({ CERTPLANE_DNS_PROVIDER: '' }).dns.provider, 'none');
});

test('names per certificate: the CA\'s 100 by default, lower limits accepted, anything else named', () => {
  assert.equal(loadConfig({}).acme.maxNamesPerCertificate, 100);
  assert.equal(loadConfig({ CERTPLANE_MAX_NAMES_PER_CERTIFICATE: '25' }).acme.maxNamesPerCertificate, 25);
  for (const bad of ['0', '101', '2.5', 'many', '-1']) invalid({ CERTPLANE_MAX_NAMES_PER_CERTIFICATE: bad }, 'CERTPLANE_MAX_NAMES_PER_CERTIFICATE');
});

test('database pool: 8 connections by default, 1 to 200 accepted, anything else named', () => {
  assert.equal(loadConfig({}).server.databasePoolSize, 8);
  assert.equal(loadConfig({ CERTPLANE_DATABASE_POOL_SIZE: '1' }).server.databasePoolSize, 1);
  assert.equal(loadConfig({ CERTPLANE_DATABASE_POOL_SIZE: '200' }).server.databasePoolSize, 200);
  for (const bad of ['0', '201', '2.5', 'abc', '-8']) invalid({ CERTPLANE_DATABASE_POOL_SIZE: bad }, 'CERTPLANE_DATABASE_POOL_SIZE');
});

test('leases and shutdown grace: 60 s and 10 s by default, configurable within bounds, anything else named', () => {
  const defaults = loadConfig({}).server;
  assert.equal(defaults.leaseMs, 60_000);
  assert.equal(defaults.shutdownGraceMs, 10_000);
  const set = loadConfig({ CERTPLANE_LEASE_MS: '15000', CERTPLANE_SHUTDOWN_GRACE_MS: '0' }).server;
  assert.equal(set.leaseMs, 15_000);
  assert.equal(set.shutdownGraceMs, 0, 'no grace: stop in-flight orders and release their leases at once');
  invalid({ CERTPLANE_LEASE_MS: '1000' }, 'CERTPLANE_LEASE_MS');
  invalid({ CERTPLANE_SHUTDOWN_GRACE_MS: '-1' }, 'CERTPLANE_SHUTDOWN_GRACE_MS');
  invalid({ CERTPLANE_SHUTDOWN_GRACE_MS: 'soon' }, 'CERTPLANE_SHUTDOWN_GRACE_MS');
});

test('metrics listener: unset by default, HOST:PORT when set, refused when malformed or the main listener\'s own address', () => {
  assert.equal(loadConfig({}).server.metricsListen, undefined);
  assert.deepEqual(loadConfig({ CERTPLANE_METRICS_LISTEN: '10.0.0.5:9464' }).server.metricsListen, { host: '10.0.0.5', port: 9464 });
  assert.deepEqual(loadConfig({ CERTPLANE_METRICS_LISTEN: '[::1]:9464' }).server.metricsListen, { host: '::1', port: 9464 });
  for (const bad of ['9464', 'metrics', '10.0.0.5:', '10.0.0.5:70000', 'http://10.0.0.5:9464']) invalid({ CERTPLANE_METRICS_LISTEN: bad }, 'CERTPLANE_METRICS_LISTEN');
  invalid({ CERTPLANE_METRICS_LISTEN: '127.0.0.1:8443' }, 'CERTPLANE_METRICS_LISTEN');
  invalid({ CERTPLANE_LISTEN: '0.0.0.0:9000', CERTPLANE_METRICS_LISTEN: '10.0.0.5:9000' }, 'CERTPLANE_METRICS_LISTEN');
  assert.deepEqual(loadConfig({ CERTPLANE_LISTEN: '127.0.0.1:9000', CERTPLANE_METRICS_LISTEN: '127.0.0.2:9000' }).server.metricsListen, { host: '127.0.0.2', port: 9000 });
});
