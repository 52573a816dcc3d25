/**
 * Revoking an agent through the admin socket, end to end: a real agent channel
 * (WebSocket) is cut off with 4003 at once, its reconnection is refused by authentication,
 * and the revocation is in the audit trail.
 */
import assert from 'node:assert/strict';
import { sign } from 'node:crypto';
import { once } from 'node:events';
import { createConnection } from 'node:net';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { startAdminSocket, type AdminSocket } from '../../src/admin/index.js';
import { CHANNEL_PATH, PROTOCOL_VERSION, authPayload } from '../../src/agents/protocol.js';
import { parseCertificateBundle } from '../../src/chain/index.js';
import { scratch } from '../support/cli.js';
import { enrollTestAgent, startTestPlane, type EnrolledAgent, type TestPlane } from '../support/plane.js';

/** `promise`, or a failure naming `what` after `ms`: a channel that never closes fails the test instead of hanging it. */
async function within<T>(promise: Promise<T>, what: string, ms = 5000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms)));
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** One request over a fresh connection to the admin socket. */
async function adminRequest(path: string, command: string, args: Record<string, unknown>): Promise<any> {
  const socket = createConnection(path);
  await once(socket, 'connect');
  socket.setEncoding('utf8');
  socket.write(`${JSON.stringify({ command, args, actor: 'oncall' })}\n`);
  let received = '';
  for await (const chunk of socket) {
    received += chunk;
    if (received.includes('\n')) break;
  }
  socket.destroy();
  return JSON.parse(received.slice(0, received.indexOf('\n')));
}

describe('admin revoke-agent', () => {
  let plane: TestPlane;
  let dir: Awaited<ReturnType<typeof scratch>>;
  let admin: AdminSocket;
  /** Every channel opened, ended even when an assertion fails first. */
  const channels: WebSocket[] = [];

  before(async () => {
    plane = await startTestPlane({ authTimeoutMs: 2000 });
    dir = await scratch('certplane-admin-agents-');
    admin = await startAdminSocket({ path: dir.path('admin.sock'), deps: plane.adminDeps });
  });
  after(async () => {
    for (const socket of channels) socket.terminate();
    await admin?.close();
    await plane?.close();
    await dir.remove();
  });

  const enrolled = (name: string) => enrollTestAgent(plane, name);

  /** Opens a channel, authenticates, and resolves with the first frame after the hello (welcome, or nothing when refused). */
  const authenticate = async (agent: EnrolledAgent) => {
    const socket = new WebSocket(`${plane.url.replace('http', 'ws')}${CHANNEL_PATH}`);
    channels.push(socket);
    const closed = new Promise<{ code: number; reason: string; at: number }>((resolve) => socket.on('close', (code, reason) => resolve({ code, reason: reason.toString(), at: performance.now() })));
    const frames: any[] = [];
    const welcome = new Promise<void>((resolve) =>
      socket.on('message', (data) => {
        const frame = JSON.parse(data.toString());
        frames.push(frame);
        if (frame.type === 'hello') {
          const signature = sign('sha256', authPayload(frame.nonce), agent.keyPem).toString('base64');
          socket.send(JSON.stringify({ v: PROTOCOL_VERSION, type: 'auth', certificatePem: agent.certificatePem, signature, agentVersion: 'test' }));
        }
        if (frame.type === 'welcome') resolve();
      }),
    );
    return { socket, closed, welcome, frames };
  };

  test('revoke-agent --instance cuts the channel off with 4003 within a second; reconnection is refused with AGENT_REVOKED', async () => {
    const agent = await enrolled('revokee');
    const bystander = await enrolled('bystander');
    const channel = await authenticate(agent);
    await within(channel.welcome, 'welcome');
    const other = await authenticate(bystander);
    await within(other.welcome, 'welcome');
    const thumbprint = parseCertificateBundle(agent.certificatePem)[0]!.fingerprintSha256;

    const listed = await adminRequest(admin.path, 'list-agents', {});
    assert.equal(listed.data.agents.find((a: any) => a.thumbprint === thumbprint).connected, true);

    const response = await adminRequest(admin.path, 'revoke-agent', { instanceId: agent.instanceId, reason: 'instance compromised' });
    const answeredAt = performance.now();
    assert.equal(response.ok, true, JSON.stringify(response));
    assert.deepEqual(response.data, { instanceId: agent.instanceId, revoked: [thumbprint], disconnected: 1 });
    const closed = await within(channel.closed, 'the channel closing after the revocation', 1000);
    assert.equal(closed.code, 4003);
    assert.match(closed.reason, /AGENT_REVOKED/);
    assert.ok(closed.at - answeredAt < 1000);
    assert.equal(other.socket.readyState, WebSocket.OPEN, 'another agent was disconnected too');

    const again = await authenticate(agent);
    const refused = await within(again.closed, 'the refusal of the reconnection');
    assert.equal(refused.code, 4001);
    assert.match(refused.reason, /AGENT_REVOKED/);
    assert.equal(again.frames.some((f) => f.type === 'welcome'), false);

    const after = await adminRequest(admin.path, 'list-agents', {});
    const row = after.data.agents.find((a: any) => a.thumbprint === thumbprint);
    assert.equal(row.connected, false);
    assert.notEqual(row.revokedAt, null);
    const audit = await adminRequest(admin.path, 'audit', { limit: 10 });
    const entry = audit.data.entries.find((e: any) => e.action === 'agent.revoke');
    assert.deepEqual([entry.actor, entry.target, entry.reason], ['admin-socket:oncall', agent.instanceId, 'instance compromised']);
  });

  test('revoke-agent by thumbprint; an unknown thumbprint or instance is ADMIN_NOT_FOUND; a second revocation changes nothing', async () => {
    const agent = await enrolled('by-thumbprint');
    const channel = await authenticate(agent);
    await within(channel.welcome, 'welcome');
    const thumbprint = parseCertificateBundle(agent.certificatePem)[0]!.fingerprintSha256;
    const response = await adminRequest(admin.path, 'revoke-agent', { thumbprint: `sha256:${thumbprint}`, reason: 'rotating' });
    assert.equal(response.ok, true, JSON.stringify(response));
    assert.equal((await within(channel.closed, 'the channel closing after the revocation')).code, 4003);
    const twice = await adminRequest(admin.path, 'revoke-agent', { instanceId: agent.instanceId, reason: 'again' });
    assert.deepEqual(twice.data.revoked, []);
    assert.match(twice.text, /nothing to revoke/);
    assert.equal((await adminRequest(admin.path, 'revoke-agent', { thumbprint: 'ab'.repeat(32), reason: 'x' })).code, 'ADMIN_NOT_FOUND');
    assert.equal((await adminRequest(admin.path, 'revoke-agent', { instanceId: '00000000-0000-4000-8000-000000000000', reason: 'x' })).code, 'ADMIN_NOT_FOUND');
    assert.equal((await adminRequest(admin.path, 'revoke-agent', { instanceId: agent.instanceId })).code, 'ADMIN_BAD_ARGUMENTS');
  });
});
