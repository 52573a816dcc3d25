/**
 * Pending keys: one fresh private key per certificate request, generated and kept on the
 * instance. Only the CSR leaves; the key waits in DIR/pending/ until the verified chain
 * for it arrives and the installer moves it to live/.
 */
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { sha256Hex } from '../chain/index.js';
import { CertplaneError } from '../errors.js';
import { createCsr, type KeyAlgorithm } from '../pki/factory.js';
import { generateSigningKey, keyAlgorithmOf, type SigningKey } from '../pki/request.js';
import { createFileAtomic, PRIVATE_FILE_MODE, readFileIfExists, removeFilesDurably, type AgentState } from './state.js';
import { ErrorCode } from '../error-catalogue.js';

/** Narrow enough to be a safe file name on any file system, whatever the network sent. */
const CERTIFICATE_ID = /^[A-Za-z0-9-]{1,64}$/;
const PENDING_SUFFIX = '.key.pem';

/**
 * The pending-key file for `certificateId`. Certificate ids come from the network, so they
 * are checked before they become part of a path: "../live/privkey" must never be a name.
 */
export function pendingKeyPath(state: AgentState, certificateId: string): string {
  if (!CERTIFICATE_ID.test(certificateId)) {
    throw new CertplaneError(
      ErrorCode.AGENT_BAD_CERTIFICATE_ID,
      `Certificate id ${JSON.stringify(certificateId.slice(0, 80))} is not 1 to 64 letters, digits or hyphens; the agent refuses it as a file name. Check the management plane's certificate ids.`,
      { certificateId: certificateId.slice(0, 80) },
    );
  }
  return path.join(state.pendingDir, `${certificateId}${PENDING_SUFFIX}`);
}

/**
 * Generates a key of `algorithm` for `certificateId`, keeps it pending (0600, written
 * atomically) and returns a CSR for `hostnames`. When a key is already pending for that id
 * (the plane asked again after a reconnect), that key is reused: a second key would orphan
 * the CSR the plane may already have sent to the CA.
 */
export async function createPendingKey(state: AgentState, certificateId: string, algorithm: KeyAlgorithm, hostnames: readonly string[]): Promise<{ csrPem: string }> {
  const file = pendingKeyPath(state, certificateId);
  const existing = await readFileIfExists(file);
  if (existing !== null) return { csrPem: await createCsr(await importPendingKey(existing, certificateId, algorithm), hostnames) };
  // The CSR is signed while the fresh key is made durable; it is sent only once the key is on disk.
  const fresh = await generateSigningKey(algorithm);
  rememberSpki(fresh.privateKeyPem, sha256Hex(fresh.spkiDer));
  const [stored, csrPem] = await Promise.all([storeFreshKey(file, certificateId, algorithm, fresh), createCsr(fresh, hostnames)]);
  return { csrPem: stored === fresh ? csrPem : await createCsr(stored, hostnames) };
}

/** Drops the pending key of an abandoned request; a key whose certificate will never come has no use. */
export async function discardPendingKey(state: AgentState, certificateId: string): Promise<void> {
  await removeFilesDurably([pendingKeyPath(state, certificateId)]);
}

/** The pending key's PEM and SPKI SHA-256, or null: the installer matches the delivered leaf against it. */
export async function readPendingKey(state: AgentState, certificateId: string): Promise<{ pem: string; spkiSha256: string } | null> {
  const pem = await readFileIfExists(pendingKeyPath(state, certificateId));
  return pem === null ? null : { pem, spkiSha256: spkiSha256OfPrivateKeyPem(pem) };
}

/** Ids with a pending key, for the status the agent reports so the plane knows which requests are still open here. */
export async function listPendingCertificateIds(state: AgentState): Promise<string[]> {
  const entries = await fs.readdir(state.pendingDir);
  return entries
    .filter((entry) => entry.endsWith(PENDING_SUFFIX))
    .map((entry) => entry.slice(0, -PENDING_SUFFIX.length))
    .filter((id) => CERTIFICATE_ID.test(id))
    .sort();
}

/**
 * SHA-256 of the public half's SubjectPublicKeyInfo: how a key is compared with a certificate
 * without exposing it. Remembered by the SHA-256 of the key's exact PEM text (never the
 * text itself), at most SPKI_REMEMBERED: decoding a private key's PEM costs OpenSSL about a
 * millisecond of CPU (2026-12-04, a campaign's agents), and each key is looked at when its
 * certificate is installed and again when the next one replaces it.
 */
export function spkiSha256OfPrivateKeyPem(pem: string): string {
  const textSha256 = sha256Hex(Buffer.from(pem));
  const known = SPKI_OF_KEY_TEXT.get(textSha256);
  if (known !== undefined) return known;
  const spkiSha256 = sha256Hex(createPublicKey(pem).export({ type: 'spki', format: 'der' }));
  rememberSpki(pem, spkiSha256, textSha256);
  return spkiSha256;
}

const SPKI_OF_KEY_TEXT = new Map<string, string>();
const SPKI_REMEMBERED = 4096;

function rememberSpki(pem: string, spkiSha256: string, textSha256 = sha256Hex(Buffer.from(pem))): void {
  SPKI_OF_KEY_TEXT.set(textSha256, spkiSha256);
  if (SPKI_OF_KEY_TEXT.size > SPKI_REMEMBERED) SPKI_OF_KEY_TEXT.delete(SPKI_OF_KEY_TEXT.keys().next().value as string);
}

/** Stores `fresh` as the pending key, or returns the key another request stored first. */
async function storeFreshKey(file: string, certificateId: string, algorithm: KeyAlgorithm, fresh: SigningKey): Promise<SigningKey> {
  if (await createFileAtomic(file, fresh.privateKeyPem, PRIVATE_FILE_MODE)) return fresh;
  const winner = await readFileIfExists(file);
  if (winner === null) {
    throw new CertplaneError(ErrorCode.AGENT_PENDING_KEY_CONFLICT, `The pending key for certificate ${certificateId} was discarded while it was being created; the management plane should ask for the CSR again.`, { certificateId });
  }
  return importPendingKey(winner, certificateId, algorithm);
}

async function importPendingKey(pem: string, certificateId: string, algorithm: KeyAlgorithm): Promise<SigningKey> {
  const privateKey = createPrivateKey(pem);
  const found = keyAlgorithmOf(privateKey);
  if (found !== algorithm) {
    throw new CertplaneError(
      ErrorCode.AGENT_PENDING_KEY_CONFLICT,
      `A ${found ?? 'differently typed'} key is already pending for certificate ${certificateId}, but ${algorithm} was requested; cancel the request (which discards the pending key) and request the certificate again.`,
      { certificateId, pendingAlgorithm: found ?? null, requestedAlgorithm: algorithm },
    );
  }
  return { algorithm, privateKey, privateKeyPem: pem, spkiDer: createPublicKey(privateKey).export({ type: 'spki', format: 'der' }) };
}
