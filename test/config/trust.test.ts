import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { loadConfig } from '../../src/config/config.js';
import { LiveTrust, loadTrustSettings } from '../../src/config/trust.js';
import { CertplaneError } from '../../src/errors.js';
import { scratch } from '../support/cli.js';
import { letsEncrypt2021 } from '../support/hierarchies.js';
import { ErrorCode } from '../../src/error-catalogue.js';

const refusedWith = (code: string, pattern: RegExp) => (error: unknown) => error instanceof CertplaneError && error.code === code && pattern.test(error.message);

describe('trust settings: profiles, preferences and distrust list from the environment and the trust file', async () => {
  const dir = await scratch('certplane-trust-settings-');
  after(() => dir.remove());
  const le = await letsEncrypt2021();
  const x1 = await dir.write('x1.pem', le.isrgX1.pem);
  const dst = await dir.write('dst.pem', le.dst.pem);
  const chainOf = (env: Record<string, string>) => loadConfig(env).chain;

  test('CERTPLANE_TRUST_PROFILES adds named profiles beside default (CERTPLANE_TRUST_STORE); names and shape are checked', async () => {
    const settings = await loadTrustSettings(chainOf({ CERTPLANE_TRUST_STORE: x1, CERTPLANE_TRUST_PROFILES: JSON.stringify({ 'old-android': dst }) }));
    assert.deepEqual(settings.profiles.map((p) => [p.name, p.anchors.map((a) => a.subjectCN)]), [['default', ['ISRG Root X1']], ['old-android', ['DST Root CA X3']]]);
    for (const bad of ['{"Legacy":"/x.pem"}', '["a"]', '{"default":"/x.pem"}', 'not json']) {
      assert.throws(() => loadConfig({ CERTPLANE_TRUST_PROFILES: bad }), refusedWith(ErrorCode.CONFIG_INVALID, /CERTPLANE_TRUST_PROFILES/), bad);
    }
  });

  test('a preference list none of whose roots any profile holds is refused, naming it; a single unheld preference is only reported', async () => {
    await assert.rejects(loadTrustSettings(chainOf({ CERTPLANE_TRUST_STORE: dst, CERTPLANE_PREFERRED_CHAINS: 'ISRG Root X1' })), refusedWith(ErrorCode.TRUST_PREFERENCES_UNTRUSTED, /no trust profile holds any preferred root \("ISRG Root X1"\)/));
    const settings = await loadTrustSettings(chainOf({ CERTPLANE_TRUST_STORE: dst, CERTPLANE_PREFERRED_CHAINS: 'ISRG Root X1, DST Root CA X3' }));
    assert.deepEqual(settings.unheldPreferences, ['ISRG Root X1']);
    const lenient = await loadTrustSettings(chainOf({ CERTPLANE_TRUST_STORE: dst, CERTPLANE_PREFERRED_CHAINS: 'ISRG Root X1' }), { requireHeldPreference: false });
    assert.deepEqual(lenient.unheldPreferences, ['ISRG Root X1'], 'the one-shot issue leaves the refusal to selection');
  });

  test('the trust file overrides profiles, preferences and distrust list, and a reload re-reads it and the PEM files; a bad reload keeps the settings in force', async () => {
    const file = await dir.write('trust.json', JSON.stringify({ profiles: { clients: x1 }, preferredChains: ['ISRG Root X1'] }));
    const live = await LiveTrust.load(chainOf({ CERTPLANE_TRUST_STORE: x1, CERTPLANE_TRUST_FILE: file, CERTPLANE_PREFERRED_CHAINS: 'Nobody' }));
    const first = live.current();
    assert.deepEqual(first.profiles.map((p) => p.name), ['default', 'clients']);
    assert.deepEqual(first.preferences, ['ISRG Root X1']);

    await dir.write('x1.pem', le.isrgX1.pem + le.dst.pem);
    await dir.write('trust.json', JSON.stringify({ profiles: { clients: dst }, preferredChains: ['ISRG Root X1', 'DST Root CA X3'], distrustedSpki: [`sha256/${Buffer.from('a'.repeat(64), 'hex').toString('base64')}`] }));
    const { previous, current } = await live.reload();
    assert.equal(previous, first);
    assert.notEqual(current.fingerprint, first.fingerprint);
    assert.deepEqual(current.profiles.map((p) => [p.name, p.anchors.length]), [['default', 2], ['clients', 1]]);
    assert.ok(current.distrustedSpkiSha256.has('a'.repeat(64)));

    await dir.write('trust.json', JSON.stringify({ preferredChains: ['Nobody At All'] }));
    await assert.rejects(live.reload(), refusedWith(ErrorCode.TRUST_PREFERENCES_UNTRUSTED, /"Nobody At All"/));
    assert.equal(live.current(), current, 'the refused reload changed nothing');
    await dir.write('trust.json', '{"preferredChains": "ISRG Root X1"}');
    await assert.rejects(live.reload(), refusedWith(ErrorCode.TRUST_FILE_INVALID, /CERTPLANE_TRUST_FILE/));
    assert.equal(live.current(), current);
  });
});
