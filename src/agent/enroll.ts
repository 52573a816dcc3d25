/**
 * First start of an agent: make the identity key on the instance, send only its CSR
 * with the one-time token, and keep the agent certificate that comes back. From then on
 * the agent authenticates with that certificate and the token is spent.
 */
import { z } from 'zod';
import { CertplaneError } from '../errors.js';
import { sendHttp } from '../http-client.js';
import { createCsr, generateKeyPair } from '../pki/factory.js';
import { explainConnectError } from './connect-errors.js';
import { writeIdentity, type AgentIdentity, type AgentState } from './state.js';
import { ErrorCode } from '../error-catalogue.js';

const EnrollResponse = z.object({ instanceId: z.string(), certificatePem: z.string(), caPem: z.string(), server: z.url().optional() });

/** Enrolls against `server` with `token`; writes and returns the new identity. */
export async function enroll(state: AgentState, server: string, token: string, serverCaPem?: string): Promise<AgentIdentity> {
  const key = await generateKeyPair('ecdsa-p256');
  const csrPem = await createCsr(key, ['certplane-agent']);
  const { status, body } = await postJson(new URL('/v1/agents/enroll', server), { token, csrPem }, serverCaPem);
  if (status !== 201) {
    const problem = safeJson(body) as { code?: string; message?: string } | undefined;
    throw new CertplaneError(ErrorCode.AGENT_ENROLL_FAILED, `enrollment refused by ${server} (HTTP ${status}): ${problem?.code ?? ''} ${problem?.message ?? body.slice(0, 200)}`.trim());
  }
  const parsed = EnrollResponse.safeParse(safeJson(body));
  if (!parsed.success) throw new CertplaneError(ErrorCode.AGENT_ENROLL_FAILED, `enrollment answer from ${server} is not what an agent expects`);
  // The plane may name the address agents should use from now on (CERTPLANE_PUBLIC_URL: NAT, proxies).
  const identity: AgentIdentity = { keyPem: key.privateKeyPem, certificatePem: parsed.data.certificatePem, caPem: parsed.data.caPem, instanceId: parsed.data.instanceId, server: parsed.data.server ?? server, configuredServer: server };
  await writeIdentity(state, identity);
  return identity;
}

async function postJson(url: URL, body: unknown, ca?: string): Promise<{ status: number; body: string }> {
  const data = JSON.stringify(body);
  const { status, text } = await sendHttp(url, { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(data)) }, body: data, tls: ca ? { ca } : {} }).catch((cause: Error) => {
    throw explainConnectError(cause, url, { serverCaGiven: ca !== undefined }) ?? new CertplaneError(ErrorCode.AGENT_ENROLL_FAILED, `cannot reach ${url.origin} to enroll: ${cause.message}`, {}, { cause });
  });
  return { status, body: text };
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
