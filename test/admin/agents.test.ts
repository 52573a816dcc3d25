/**
 * Revoking an agent through the admin socket, end to end: a real agent channel
 * (WebSocket) is cut off with 4003 at once, its reconnection is refused by authentication,
 * and the revocation is in the audit trail. Revocation also reaches the certificates an
 * agent renewed, including those minted while it runs, on PGlite and on PostgreSQL.
 */
import assert from 'node:assert/strict';
import { sign } from 'node:crypto';
import { once } from 'node:events';
import { createConnection } from 'node:net';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { startAdminSocket, type AdminSocket } from '../../src/admin/index.js';
import { CHANNEL_PATH, PROTOCOL_VERSION, authPayload, identityRenewalOpensAt } from '../../src/channel/protocol.js';
import { parseCertificateBundle } from '../../src/chain/index.js';
import { createCsr, generateKeyPair } from '../../src/pki/factory.js';
import { scratch } from '../support/cli.js';
import { enrollTestAgent, openAgentChannel, startTestPlane, type EnrolledAgent, type TestPlane } from '../support/plane.js';
import { freshPostgresDatabase } from '../support/postgres.js';
import { eventually } from '../support/processes.js';
import { ErrorCode } from '../../src/error-catalogue.js';

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
    assert.equal((await adminRequest(admin.path, 'revoke-agent', { thumbprint: 'ab'.repeat(32), reason: 'x' })).code, ErrorCode.ADMIN_NOT_FOUND);
    assert.equal((await adminRequest(admin.path, 'revoke-agent', { instanceId: '00000000-0000-4000-8000-000000000000', reason: 'x' })).code, ErrorCode.ADMIN_NOT_FOUND);
    assert.equal((await adminRequest(admin.path, 'revoke-agent', { instanceId: agent.instanceId })).code, ErrorCode.ADMIN_BAD_ARGUMENTS);
  });
});

const DAY = 86_400_000;
const thumbprintOf = (certificatePem: string) => parseCertificateBundle(certificatePem)[0]!.fingerprintSha256;

/** An identity an agent could authenticate with: its key and certificate. */
interface Identity {
  readonly keyPem: string;
  readonly certificatePem: string;
}

for (const engine of ['pglite', 'postgres'] as const) {
  describe(`admin revoke-agent and identity renewal (${engine})`, () => {
    let plane: TestPlane;
    let dir: Awaited<ReturnType<typeof scratch>>;
    let admin: AdminSocket;
    let database: Awaited<ReturnType<typeof freshPostgresDatabase>> | undefined;
    /** How far ahead of the system's the plane's clock runs. */
    let offset = 0;

    before(async () => {
      database = engine === 'postgres' ? await freshPostgresDatabase() : undefined;
      // No minimum interval between renewals, so a renewal loop mints as fast as the plane allows.
      plane = await startTestPlane({ authTimeoutMs: 2000, renewalMinIntervalMs: 0, clock: () => new Date(Date.now() + offset), storeUrl: database?.url ?? 'memory:' });
      dir = await scratch('certplane-admin-renewal-');
      admin = await startAdminSocket({ path: dir.path('admin.sock'), deps: plane.adminDeps });
    });
    after(async () => {
      await admin?.close();
      await plane?.close();
      await dir?.remove();
      await database?.drop();
    });

    /** An enrolled agent, with the plane's clock moved a day into its certificate's renewal window. */
    const enrolledInWindow = async (name: string) => {
      offset = 0;
      const agent = await enrollTestAgent(plane, `${name}-${engine}`);
      offset = identityRenewalOpensAt(parseCertificateBundle(agent.certificatePem)[0]!).getTime() - Date.now() + DAY;
      return agent;
    };

    /** One connection that authenticates as `identity` and asks for a renewal: the new identity, or undefined when refused or cut off. */
    const renewOnce = async (identity: Identity): Promise<Identity | undefined> => {
      const channel = await openAgentChannel(plane, identity);
      try {
        await channel.next('welcome', 5000);
        const key = await generateKeyPair();
        channel.send({ type: 'identity_renewal', csrPem: await createCsr(key, ['certplane-agent']) });
        const answer = await channel.next(['identity_renewed', 'identity_renewal_refused'], 5000);
        return answer.type === 'identity_renewed' ? { keyPem: key.privateKeyPem, certificatePem: answer.certificatePem } : undefined;
      } catch {
        return undefined;
      } finally {
        channel.socket.terminate();
      }
    };

    /** Asserts that `identity` is refused at authentication as revoked: no welcome, close 4001 AGENT_REVOKED. */
    const assertRefused = async (identity: Identity, what: string) => {
      const channel = await openAgentChannel(plane, identity);
      const closed = await within(channel.closed, `the refusal of ${what}`);
      assert.equal(closed.code, 4001, `${what}: ${closed.reason}`);
      assert.match(closed.reason, /AGENT_REVOKED/, what);
      assert.equal(channel.frames.some((f) => f.type === 'welcome'), false, `${what} was welcomed`);
    };

    test('revoke-agent --instance during a renewal loop: afterwards no certificate of the instance authenticates', async () => {
      const agent = await enrolledInWindow('loop');
      const minted: Identity[] = [];
      let revoked = false;
      let refusedAfterRevocation = 0;
      // One connection after another renews from the enrolled certificate, as a stolen key would.
      // One at a time: the plane keeps one session per instance, so concurrent connections only
      // replace each other's sessions, and on a slow database none of them gets an answer.
      const worker = async () => {
        for (let round = 0; round < 200 && refusedAfterRevocation < 8; round += 1) {
          const renewed = await renewOnce(agent);
          if (renewed) minted.push(renewed);
          else if (revoked) refusedAfterRevocation += 1;
        }
      };
      const loop = worker();
      await eventually(async () => (minted.length >= 2 ? true : undefined), 90_000, 10, 'renewals under way');
      const response = await adminRequest(admin.path, 'revoke-agent', { instanceId: agent.instanceId, reason: 'key stolen, renewing in a loop' });
      revoked = true;
      assert.equal(response.ok, true, JSON.stringify(response));
      await loop;

      const rows = await plane.store.query<{ fingerprint_sha256: string; revoked_at: Date | null }>('SELECT fingerprint_sha256, revoked_at FROM agent_certificates WHERE instance_id = $1', [agent.instanceId]);
      assert.ok(rows.length >= 1 + minted.length);
      assert.deepEqual(rows.filter((row) => row.revoked_at === null).map((row) => row.fingerprint_sha256), [], 'certificates of the instance left valid');
      for (const identity of [agent, ...minted]) await assertRefused(identity, `sha256:${thumbprintOf(identity.certificatePem)}`);
    });

    test('a renewed certificate never used is replaced by the next renewal: one valid successor at most', async () => {
      const agent = await enrolledInWindow('lost-reply');
      const lost = await renewOnce(agent);
      const kept = await renewOnce(agent);
      assert.ok(lost && kept);
      await assertRefused(lost, 'the replaced successor');
      const live = await openAgentChannel(plane, kept);
      await live.next('welcome');
      live.socket.close();
      const valid = await plane.store.query<{ fingerprint_sha256: string }>('SELECT fingerprint_sha256 FROM agent_certificates WHERE instance_id = $1 AND revoked_at IS NULL AND superseded_at IS NULL', [agent.instanceId]);
      assert.deepEqual(valid.map((row) => row.fingerprint_sha256), [thumbprintOf(kept.certificatePem)]);
    });

    test('revoking the enrolled certificate by thumbprint revokes the certificates renewed from it, used or not', async () => {
      const agent = await enrolledInWindow('chain');
      const renewed = await renewOnce(agent);
      assert.ok(renewed, 'the renewal inside the window');
      const unused = await renewOnce(renewed);
      assert.equal(unused, undefined, 'a fresh certificate is not in its renewal window');

      // The renewed certificate in use supersedes the one it was renewed from.
      const live = await openAgentChannel(plane, renewed);
      await live.next('welcome');
      const stale = await openAgentChannel(plane, agent);
      const refused = await within(stale.closed, 'the refusal of the superseded certificate');
      assert.equal(refused.code, 4001);
      assert.match(refused.reason, /AGENT_REVOKED.*superseded/);
      const listed = await adminRequest(admin.path, 'list-agents', {});
      const row = listed.data.agents.find((a: any) => a.thumbprint === thumbprintOf(agent.certificatePem));
      assert.notEqual(row.supersededAt, null);
      assert.equal(listed.data.agents.find((a: any) => a.thumbprint === thumbprintOf(renewed.certificatePem)).renewedFrom, thumbprintOf(agent.certificatePem));

      const response = await adminRequest(admin.path, 'revoke-agent', { thumbprint: thumbprintOf(agent.certificatePem), reason: 'the enrolled key leaked' });
      assert.equal(response.ok, true, JSON.stringify(response));
      assert.deepEqual(new Set(response.data.revoked), new Set([thumbprintOf(agent.certificatePem), thumbprintOf(renewed.certificatePem)]));
      assert.equal(response.data.disconnected, 1);
      assert.equal((await within(live.closed, 'the renewed certificate\'s channel closing')).code, 4003);
      await assertRefused(renewed, 'the renewed certificate');
      await assertRefused(agent, 'the enrolled certificate');

      // Not used yet: a successor waiting for its agent is revoked with its predecessor all the same.
      const other = await enrolledInWindow('chain-unused');
      const waiting = await renewOnce(other);
      assert.ok(waiting);
      const second = await adminRequest(admin.path, 'revoke-agent', { thumbprint: thumbprintOf(other.certificatePem), reason: 'the enrolled key leaked' });
      assert.deepEqual(new Set(second.data.revoked), new Set([thumbprintOf(other.certificatePem), thumbprintOf(waiting.certificatePem)]));
      await assertRefused(waiting, 'the unused renewed certificate');
    });
  });
}
