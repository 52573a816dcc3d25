import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { hasCode } from '../../src/errors.js';
import { AwsSecretsManagerStore, FileSecretStore, openSecretStore } from '../../src/secrets/index.js';
import { ErrorCode } from '../../src/error-catalogue.js';

test('file:PATH opens a file store in that directory', async (t) => {
  const parent = await fs.mkdtemp(path.join(os.tmpdir(), 'certplane-secrets-spec-'));
  t.after(() => fs.rm(parent, { recursive: true, force: true }));
  const directory = path.join(parent, 'secrets');

  const store = await openSecretStore(`file:${directory}`, {});

  assert.ok(store instanceof FileSecretStore);
  assert.equal(store.description, `file:${directory}`);
  assert.ok((await fs.stat(directory)).isDirectory());
});

test('aws-sm:PREFIX builds the client through the factory it was given', async (t) => {
  const client = new SecretsManagerClient({ region: 'us-east-1', credentials: { accessKeyId: 'AKIDTEST', secretAccessKey: 'test' } });
  t.after(() => client.destroy());
  let factoryCalls = 0;

  const store = await openSecretStore('aws-sm:certplane/production', {
    secretsManagerClient: () => {
      factoryCalls += 1;
      return client;
    },
  });

  assert.ok(store instanceof AwsSecretsManagerStore);
  assert.equal(store.description, 'aws-sm:certplane/production');
  assert.equal(factoryCalls, 1);
});

test('a file: spec never builds an AWS client', async (t) => {
  const directory = await fs.mkdtemp(path.join(os.tmpdir(), 'certplane-secrets-spec-'));
  t.after(() => fs.rm(directory, { recursive: true, force: true }));

  await openSecretStore(`file:${directory}`, {
    secretsManagerClient: () => assert.fail('the AWS client factory must not be called for a file: spec'),
  });
});

test('aws-sm: without a client factory is a wiring error', async () => {
  await assert.rejects(openSecretStore('aws-sm:certplane/production', {}), (error) => hasCode(error, ErrorCode.SECRETS_AWS_CLIENT_MISSING));
});

test('other specs are refused with the accepted forms', async () => {
  for (const spec of ['', '/var/lib/certplane/secrets', 'file:', 'aws-sm:', 'vault:secret/certplane', 'FILE:/tmp/x', ':x']) {
    await assert.rejects(
      openSecretStore(spec, {}),
      (error) => {
        assert.ok(hasCode(error, ErrorCode.SECRETS_INVALID_SPEC), `spec ${JSON.stringify(spec)}`);
        assert.match(error.message, /file:\/path\/to\/directory or aws-sm:prefix/);
        return true;
      },
    );
  }
});
