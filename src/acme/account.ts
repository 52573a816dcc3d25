/**
 * The ACME account: its key lives in the secret store (created on first use, reused
 * after, so every replica and every restart speaks as the same account), and its URL is
 * kept beside it so that later processes skip the newAccount round trip.
 */
import acme from 'acme-client';
import { z } from 'zod';
import { CertplaneError } from '../errors.js';
import { sha256Hex } from '../chain/index.js';
import type { SecretStore } from '../secrets/index.js';
import { ErrorCode } from '../error-catalogue.js';

const storedAccount = z.object({
  directoryUrl: z.string(),
  privateKeyPem: z.string().includes('PRIVATE KEY'),
  accountUrl: z.string().optional(),
});
export type StoredAccount = z.infer<typeof storedAccount>;

/** One account per directory: staging and production never share a key by accident. */
export function accountSecretName(directoryUrl: string): string {
  return `acme-account-${sha256Hex(Buffer.from(directoryUrl)).slice(0, 16)}`;
}

/** Reads the account for `directoryUrl`, creating its key if none exists yet (safe against concurrent replicas). */
export async function loadOrCreateAccount(secrets: SecretStore, directoryUrl: string): Promise<StoredAccount> {
  const name = accountSecretName(directoryUrl);
  const existing = await secrets.get(name);
  const raw =
    existing ??
    (await secrets.createIfMissing(name, JSON.stringify({ directoryUrl, privateKeyPem: (await acme.crypto.createPrivateEcdsaKey('P-256')).toString() })));
  return parseAccount(raw, name);
}

/** Records the account URL once the CA has told it. */
export async function rememberAccountUrl(secrets: SecretStore, account: StoredAccount, accountUrl: string): Promise<StoredAccount> {
  const updated = { ...account, accountUrl };
  await secrets.put(accountSecretName(account.directoryUrl), JSON.stringify(updated));
  return updated;
}

function parseAccount(raw: string, name: string): StoredAccount {
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch {
    json = undefined;
  }
  const parsed = storedAccount.safeParse(json);
  if (!parsed.success) {
    throw new CertplaneError(ErrorCode.ACME_ACCOUNT_CORRUPT, `secret "${name}" does not hold an ACME account (expected JSON with directoryUrl and privateKeyPem); fix or delete it`, { secret: name });
  }
  return parsed.data;
}
