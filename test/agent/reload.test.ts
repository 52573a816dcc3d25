import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runReloadCommand } from '../../src/agent/reload.js';

test('the command sees the given environment and its exit code decides', async () => {
  const ok = await runReloadCommand('test "$CERTPLANE_FINGERPRINT" = abc && test -n "$PATH"', { CERTPLANE_FINGERPRINT: 'abc' }, 5_000);
  assert.deepEqual(ok, { ok: true, exitCode: 0, signal: null, timedOut: false, stderrTail: '' });

  const failed = await runReloadCommand('test "$CERTPLANE_FINGERPRINT" = abc', { CERTPLANE_FINGERPRINT: 'other' }, 5_000);
  assert.equal(failed.ok, false);
  assert.equal(failed.exitCode, 1);
});

test('only the last lines of stderr are kept, and never a private key', async () => {
  const command = [
    'printf -- "-----BEGIN PRIVATE KEY-----\\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\\n-----END PRIVATE KEY-----\\n" >&2',
    'for i in 1 2 3 4 5 6 7 8 9 10 11 12; do echo "complaint $i" >&2; done',
    'exit 4',
  ].join('; ');
  const outcome = await runReloadCommand(command, {}, 5_000);

  assert.equal(outcome.exitCode, 4);
  const lines = outcome.stderrTail.split('\n');
  assert.equal(lines.length, 10);
  assert.equal(lines.at(-1), 'complaint 12');
  assert.doesNotMatch(outcome.stderrTail, /PRIVATE KEY|MIGHAgEA/);

  const leaked = await runReloadCommand('printf -- "-----BEGIN EC PRIVATE KEY-----\\nMHcCAQEEI\\n-----END EC PRIVATE KEY-----\\nafter\\n" >&2; exit 1', {}, 5_000);
  assert.equal(leaked.stderrTail, '[private key removed]\nafter');
});

test('a command that outlives its timeout is killed and reported as timed out', async () => {
  const started = Date.now();
  const outcome = await runReloadCommand('sleep 30', {}, 200);

  assert.equal(outcome.ok, false);
  assert.equal(outcome.timedOut, true);
  assert.equal(outcome.signal, 'SIGKILL');
  assert.ok(Date.now() - started < 5_000, `took ${Date.now() - started} ms`);
});
