import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test, type TestContext } from 'node:test';
import { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { hasCode } from '../../src/errors.js';
import { AwsSecretsManagerStore } from '../../src/secrets/aws.js';
import { ErrorCode } from '../../src/error-catalogue.js';

const PREFIX = 'certplane/test';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

type Body = Record<string, unknown>;

interface ReceivedRequest {
  readonly target: string;
  readonly body: Body;
  readonly authorization: string | undefined;
}

interface Reply {
  readonly status: number;
  readonly body: Body;
}

/** What a test may do before the fake handles a request: change its state, or answer in its place. */
type Interceptor = (target: string, body: Body) => Reply | undefined;

/**
 * A Secrets Manager endpoint on loopback that speaks the AWS JSON 1.1 protocol, keeps
 * secrets in memory and records every request, so tests see exactly what the real SDK sent.
 */
class FakeSecretsManager {
  readonly secrets = new Map<string, string>();
  readonly received: ReceivedRequest[] = [];
  intercept: Interceptor = () => undefined;

  private readonly server = createServer((request, response) => void this.handle(request, response));

  async start(t: TestContext): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    t.after(() => {
      this.server.closeAllConnections();
      return new Promise<void>((resolve) => this.server.close(() => resolve()));
    });
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  get targets(): string[] {
    return this.received.map((request) => request.target);
  }

  private async handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    const target = String(request.headers['x-amz-target'] ?? '');
    const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Body;
    this.received.push({ target, body, authorization: request.headers.authorization });
    const reply = this.intercept(target, body) ?? this.answer(target, body);
    const errorType = reply.body.__type;
    response.writeHead(reply.status, {
      'content-type': 'application/x-amz-json-1.1',
      'x-amzn-requestid': `request-${this.received.length}`,
      ...(typeof errorType === 'string' ? { 'x-amzn-errortype': errorType } : {}),
    });
    response.end(JSON.stringify(reply.body));
  }

  private answer(target: string, body: Body): Reply {
    switch (target) {
      case 'secretsmanager.GetSecretValue': {
        const id = String(body.SecretId);
        const value = this.secrets.get(id);
        if (value === undefined) return failure(400, 'ResourceNotFoundException', "Secrets Manager can't find the specified secret.");
        return ok({ ARN: arnOf(id), Name: id, SecretString: value, VersionId: 'v1', VersionStages: ['AWSCURRENT'], CreatedDate: 1_770_000_000 });
      }
      case 'secretsmanager.CreateSecret': {
        const id = String(body.Name);
        if (this.secrets.has(id)) return failure(400, 'ResourceExistsException', `The operation failed because the secret ${id} already exists.`);
        this.secrets.set(id, String(body.SecretString));
        return ok({ ARN: arnOf(id), Name: id, VersionId: 'v1' });
      }
      case 'secretsmanager.PutSecretValue': {
        const id = String(body.SecretId);
        if (!this.secrets.has(id)) return failure(400, 'ResourceNotFoundException', "Secrets Manager can't find the specified secret.");
        this.secrets.set(id, String(body.SecretString));
        return ok({ ARN: arnOf(id), Name: id, VersionId: 'v2', VersionStages: ['AWSCURRENT'] });
      }
      default:
        return failure(400, 'UnknownOperationException', `The fake does not implement ${target}.`);
    }
  }
}

function ok(body: Body): Reply {
  return { status: 200, body };
}

function failure(status: number, type: string, message: string): Reply {
  return { status, body: { __type: type, message } };
}

function arnOf(id: string): string {
  return `arn:aws:secretsmanager:us-east-1:123456789012:secret:${id}-AbCdEf`;
}

/** A real SDK client pointed at the fake, with one attempt so that failures surface at once. */
async function storeAgainstFake(t: TestContext): Promise<{ store: AwsSecretsManagerStore; fake: FakeSecretsManager }> {
  const fake = new FakeSecretsManager();
  const endpoint = await fake.start(t);
  const client = new SecretsManagerClient({
    endpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: 'AKIDTEST', secretAccessKey: 'test' },
    maxAttempts: 1,
  });
  t.after(() => client.destroy());
  return { store: new AwsSecretsManagerStore(client, PREFIX), fake };
}

/** CreateSecret and PutSecretValue carry an idempotency token the SDK generates; check it, then compare the rest exactly. */
function withoutGeneratedFields(body: Body): Body {
  const { ClientRequestToken, Description, ...rest } = body;
  assert.match(String(ClientRequestToken), UUID);
  if (Description !== undefined) assert.equal(typeof Description, 'string');
  return rest;
}

test('get of a missing secret returns undefined after one signed GetSecretValue', async (t) => {
  const { store, fake } = await storeAgainstFake(t);

  assert.equal(await store.get('acme-account-abc123'), undefined);

  assert.equal(store.description, `aws-sm:${PREFIX}`);
  assert.deepEqual(fake.received.map(({ target, body }) => ({ target, body })), [
    { target: 'secretsmanager.GetSecretValue', body: { SecretId: 'certplane/test/acme-account-abc123' } },
  ]);
  assert.match(String(fake.received[0]?.authorization), /^AWS4-HMAC-SHA256 Credential=AKIDTEST\/\d{8}\/us-east-1\/secretsmanager\/aws4_request, SignedHeaders=.*x-amz-target.*, Signature=[0-9a-f]{64}$/);
});

test('createIfMissing creates the prefixed secret when it does not exist', async (t) => {
  const { store, fake } = await storeAgainstFake(t);

  assert.equal(await store.createIfMissing('acme-account-abc123', 'account-key-pem'), 'account-key-pem');

  assert.deepEqual(fake.targets, ['secretsmanager.GetSecretValue', 'secretsmanager.CreateSecret']);
  assert.deepEqual(fake.received[0]?.body, { SecretId: 'certplane/test/acme-account-abc123' });
  const createBody = fake.received[1]?.body ?? {};
  assert.equal(typeof createBody.Description, 'string');
  assert.deepEqual(withoutGeneratedFields(createBody), { Name: 'certplane/test/acme-account-abc123', SecretString: 'account-key-pem' });
  assert.equal(fake.secrets.get('certplane/test/acme-account-abc123'), 'account-key-pem');
});

test('createIfMissing returns the stored value and only reads when the secret exists', async (t) => {
  const { store, fake } = await storeAgainstFake(t);
  fake.secrets.set('certplane/test/agent-ca-key', 'existing-ca-key');

  assert.equal(await store.createIfMissing('agent-ca-key', 'new-ca-key'), 'existing-ca-key');

  assert.deepEqual(fake.received.map(({ target, body }) => ({ target, body })), [
    { target: 'secretsmanager.GetSecretValue', body: { SecretId: 'certplane/test/agent-ca-key' } },
  ]);
  assert.equal(fake.secrets.get('certplane/test/agent-ca-key'), 'existing-ca-key');
});

test('createIfMissing returns the value of the replica that won the CreateSecret race', async (t) => {
  const { store, fake } = await storeAgainstFake(t);
  fake.intercept = (target, body) => {
    if (target === 'secretsmanager.CreateSecret') fake.secrets.set(String(body.Name), 'value-from-other-replica');
    return undefined;
  };

  assert.equal(await store.createIfMissing('acme-account-abc123', 'our-value'), 'value-from-other-replica');

  assert.deepEqual(fake.targets, ['secretsmanager.GetSecretValue', 'secretsmanager.CreateSecret', 'secretsmanager.GetSecretValue']);
  assert.deepEqual(withoutGeneratedFields(fake.received[1]?.body ?? {}), { Name: 'certplane/test/acme-account-abc123', SecretString: 'our-value' });
  assert.deepEqual(fake.received[2]?.body, { SecretId: 'certplane/test/acme-account-abc123' });
  assert.equal(fake.secrets.get('certplane/test/acme-account-abc123'), 'value-from-other-replica');
});

test('put replaces an existing secret with PutSecretValue only', async (t) => {
  const { store, fake } = await storeAgainstFake(t);
  fake.secrets.set('certplane/test/agent-ca-key', 'old');

  await store.put('agent-ca-key', 'new');

  assert.deepEqual(fake.targets, ['secretsmanager.PutSecretValue']);
  assert.deepEqual(withoutGeneratedFields(fake.received[0]?.body ?? {}), { SecretId: 'certplane/test/agent-ca-key', SecretString: 'new' });
  assert.equal(await store.get('agent-ca-key'), 'new');
});

test('put creates a secret that does not exist yet', async (t) => {
  const { store, fake } = await storeAgainstFake(t);

  await store.put('agent-ca-key', 'first');

  assert.deepEqual(fake.targets, ['secretsmanager.PutSecretValue', 'secretsmanager.CreateSecret']);
  assert.deepEqual(withoutGeneratedFields(fake.received[1]?.body ?? {}), { Name: 'certplane/test/agent-ca-key', SecretString: 'first' });
  assert.equal(fake.secrets.get('certplane/test/agent-ca-key'), 'first');
});

test('AccessDeniedException becomes SECRETS_AWS naming the error and secret id, never the value', async (t) => {
  const { store, fake } = await storeAgainstFake(t);
  fake.intercept = (target) =>
    target === 'secretsmanager.PutSecretValue'
      ? failure(400, 'AccessDeniedException', 'User: arn:aws:iam::123456789012:user/ci is not authorized to perform: secretsmanager:PutSecretValue')
      : undefined;

  await assert.rejects(store.put('agent-ca-key', 'very-secret-ca-key'), (error) => {
    assert.ok(hasCode(error, ErrorCode.SECRETS_AWS));
    assert.match(error.message, /AccessDeniedException/);
    assert.match(error.message, /certplane\/test\/agent-ca-key/);
    assert.equal(error.details.errorName, 'AccessDeniedException');
    assert.ok(!JSON.stringify(error.toJSON()).includes('very-secret-ca-key'));
    return true;
  });
  assert.deepEqual(fake.targets, ['secretsmanager.PutSecretValue']);
});

test('a 500 from Secrets Manager becomes SECRETS_AWS naming the error, never the value', async (t) => {
  const { store, fake } = await storeAgainstFake(t);
  fake.intercept = (target) => (target === 'secretsmanager.CreateSecret' ? failure(500, 'InternalServiceError', 'An error occurred on the server side.') : undefined);

  await assert.rejects(store.createIfMissing('acme-account-abc123', 'very-secret-account-key'), (error) => {
    assert.ok(hasCode(error, ErrorCode.SECRETS_AWS));
    assert.match(error.message, /InternalServiceError/);
    assert.match(error.message, /CreateSecret on certplane\/test\/acme-account-abc123/);
    assert.ok(!JSON.stringify(error.toJSON()).includes('very-secret-account-key'));
    return true;
  });
  assert.deepEqual(fake.targets, ['secretsmanager.GetSecretValue', 'secretsmanager.CreateSecret']);
});

test('invalid names are refused before any request is sent', async (t) => {
  const { store, fake } = await storeAgainstFake(t);

  await assert.rejects(store.get('../other-service/key'), (error) => hasCode(error, ErrorCode.SECRETS_INVALID_NAME));
  await assert.rejects(store.put('a/b', 'value'), (error) => hasCode(error, ErrorCode.SECRETS_INVALID_NAME));

  assert.deepEqual(fake.received, []);
});

test('a prefix that would produce malformed secret ids is refused', () => {
  const client = new SecretsManagerClient({ region: 'us-east-1', credentials: { accessKeyId: 'AKIDTEST', secretAccessKey: 'test' } });
  try {
    for (const prefix of ['', 'certplane/', '/certplane', 'a//b', 'has space']) {
      assert.throws(() => new AwsSecretsManagerStore(client, prefix), (error) => hasCode(error, ErrorCode.SECRETS_INVALID_SPEC), prefix);
    }
  } finally {
    client.destroy();
  }
});
