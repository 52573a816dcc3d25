/**
 * Secrets in AWS Secrets Manager: the production backend, shared by every replica of the
 * management plane. The client comes from the composition root so that region, endpoint
 * and credentials are configured in one place and tests can point it at a local endpoint.
 */
import {
  CreateSecretCommand,
  GetSecretValueCommand,
  type GetSecretValueCommandOutput,
  PutSecretValueCommand,
  ResourceExistsException,
  ResourceNotFoundException,
  type SecretsManagerClient,
} from '@aws-sdk/client-secrets-manager';
import { CertplaneError } from '../errors.js';
import { assertValidSecretName, type SecretStore } from './store.js';
import { ErrorCode } from '../error-catalogue.js';

/** Characters AWS accepts in a secret name, minus a leading or trailing '/', which would make ids like "a//b". */
const SECRET_ID_PREFIX = /^[A-Za-z0-9_+=.@-]+(\/[A-Za-z0-9_+=.@-]+)*$/;

/** Keeps secret `name` under the id `${prefix}/${name}`, so one account can hold several installations apart. */
export class AwsSecretsManagerStore implements SecretStore {
  readonly description: string;

  constructor(
    private readonly client: SecretsManagerClient,
    private readonly prefix: string,
  ) {
    if (!SECRET_ID_PREFIX.test(prefix)) {
      throw new CertplaneError(
        ErrorCode.SECRETS_INVALID_SPEC,
        `AWS Secrets Manager prefix ${JSON.stringify(prefix)} is invalid: use letters, digits and _+=.@- in segments separated by single '/', for example "certplane/production".`,
        { prefix },
      );
    }
    this.description = `aws-sm:${prefix}`;
  }

  async get(name: string): Promise<string | undefined> {
    const secretId = this.secretIdOf(name);
    let output: GetSecretValueCommandOutput;
    try {
      output = await this.client.send(new GetSecretValueCommand({ SecretId: secretId }));
    } catch (error) {
      if (error instanceof ResourceNotFoundException) return undefined;
      throw awsError('GetSecretValue', secretId, error);
    }
    if (output.SecretString === undefined) {
      throw new CertplaneError(
        ErrorCode.SECRETS_AWS,
        `AWS secret ${secretId} holds a binary value, but certplane stores text; replace it with a SecretString value or delete it.`,
        { secretId },
      );
    }
    return output.SecretString;
  }

  async createIfMissing(name: string, value: string): Promise<string> {
    const existing = await this.get(name);
    if (existing !== undefined) return existing;
    const secretId = this.secretIdOf(name);
    try {
      await this.create(secretId, value);
      return value;
    } catch (error) {
      if (!(error instanceof ResourceExistsException)) throw awsError('CreateSecret', secretId, error);
    }
    const winner = await this.get(name);
    if (winner === undefined) {
      throw new CertplaneError(
        ErrorCode.SECRETS_AWS,
        `AWS secret ${secretId} was reported to exist but could not be read; check whether it is scheduled for deletion, then retry.`,
        { secretId },
      );
    }
    return winner;
  }

  async put(name: string, value: string): Promise<void> {
    const secretId = this.secretIdOf(name);
    try {
      await this.putValue(secretId, value);
      return;
    } catch (error) {
      if (!(error instanceof ResourceNotFoundException)) throw awsError('PutSecretValue', secretId, error);
    }
    try {
      await this.create(secretId, value);
      return;
    } catch (error) {
      if (!(error instanceof ResourceExistsException)) throw awsError('CreateSecret', secretId, error);
    }
    try {
      await this.putValue(secretId, value);
    } catch (error) {
      throw awsError('PutSecretValue', secretId, error);
    }
  }

  private secretIdOf(name: string): string {
    assertValidSecretName(name);
    return `${this.prefix}/${name}`;
  }

  private async create(secretId: string, value: string): Promise<void> {
    await this.client.send(
      new CreateSecretCommand({ Name: secretId, SecretString: value, Description: 'Managed by certplane; changing it by hand can lock certplane out of its ACME account or agents.' }),
    );
  }

  private async putValue(secretId: string, value: string): Promise<void> {
    await this.client.send(new PutSecretValueCommand({ SecretId: secretId, SecretString: value }));
  }
}

/**
 * Names the operation, the secret id and AWS's error name (AccessDeniedException,
 * ThrottlingException, ...), which is what an operator needs to fix IAM or quotas; the
 * value being written is never part of it.
 */
function awsError(operation: string, secretId: string, error: unknown): CertplaneError {
  const errorName = error instanceof Error ? nameOf(error) : 'UnknownError';
  const awsMessage = error instanceof Error && error.message !== '' ? `: ${error.message}` : '';
  return new CertplaneError(
    ErrorCode.SECRETS_AWS,
    `AWS Secrets Manager ${operation} on ${secretId} failed with ${errorName}${awsMessage}. Check the IAM permissions, region and endpoint of the secretsmanager client.`,
    { operation, secretId, errorName },
    { cause: error },
  );
}

/** Network failures surface as Node system errors named just "Error"; their code (ECONNREFUSED, ...) says more. */
function nameOf(error: Error): string {
  if (error.name !== 'Error') return error.name;
  return 'code' in error && typeof error.code === 'string' ? error.code : error.name;
}
