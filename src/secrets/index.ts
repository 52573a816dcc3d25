/**
 * Turns the CERTPLANE_SECRETS setting into a store, so the composition root chooses a
 * backend with one call and no other room ever names a backend.
 */
import type { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { CertplaneError } from '../errors.js';
import { AwsSecretsManagerStore } from './aws.js';
import { FileSecretStore } from './file.js';
import type { SecretStore } from './store.js';
import { ErrorCode } from '../error-catalogue.js';

export { AwsSecretsManagerStore } from './aws.js';
export { FileSecretStore, readPrivateFile } from './file.js';
export { assertValidSecretName, type SecretStore } from './store.js';

/**
 * What backends need from outside. The AWS client is a factory so that it, and its
 * credential chain, is only built when the spec actually asks for AWS.
 */
export interface SecretStoreDependencies {
  readonly secretsManagerClient?: () => SecretsManagerClient;
}

const ACCEPTED_FORMS = 'file:/path/to/directory or aws-sm:prefix (for example aws-sm:certplane/production)';

/** Opens the store named by `spec`: `file:PATH` or `aws-sm:PREFIX`. */
export async function openSecretStore(spec: string, deps: SecretStoreDependencies): Promise<SecretStore> {
  const separator = spec.indexOf(':');
  const scheme = spec.slice(0, separator);
  const location = spec.slice(separator + 1);
  if (separator > 0 && location !== '') {
    if (scheme === 'file') return FileSecretStore.open(location);
    if (scheme === 'aws-sm') return new AwsSecretsManagerStore(awsClient(deps), location);
  }
  throw new CertplaneError(ErrorCode.SECRETS_INVALID_SPEC, `CERTPLANE_SECRETS=${JSON.stringify(spec)} is not a secret store; use ${ACCEPTED_FORMS}.`, { spec });
}

function awsClient(deps: SecretStoreDependencies): SecretsManagerClient {
  if (deps.secretsManagerClient === undefined) {
    throw new CertplaneError(
      ErrorCode.SECRETS_AWS_CLIENT_MISSING,
      'CERTPLANE_SECRETS asks for AWS Secrets Manager but no SecretsManagerClient was provided; the composition root must pass deps.secretsManagerClient.',
    );
  }
  return deps.secretsManagerClient();
}
