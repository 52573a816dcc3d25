/**
 * Served-chain reports over a real channel against an in-process plane: an honest report
 * is judged and shown in the API; a lying or hostile agent cannot do harm. Malformed,
 * oversized or over-counted reports close only their own connection, a report can only
 * speak for the agent's own instance, certificates that are not certificates are judged
 * and never crash anything, the agent's text is stored escaped, and a flood is judged at
 * a bounded rate with the connection kept.
 */
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { MAX_PROBES_PER_REPORT, MAX_SERVED_CHAIN } from '../../src/channel/protocol.js';
import { parseCertificateBundle, type Certificate } from '../../src/chain/index.js';
import { ErrorCode } from '../../src/error-catalogue.js';
import { createLogger } from '../../src/log/logger.js';
import { intermediate, leaf, pem, root } from '../support/hierarchies.js';
import { advance } from '../support/lifecycle.js';
import { enrollTestAgent, openAgentChannel, startTestPlane, type AgentChannel, type EnrolledAgent, type TestPlane } from '../support/plane.js';

const BURST = 5;

describe('served-chain reports on the agent channel', async () => {
  const trusted = await root('Served Test Root');
  const ca = await intermediate('Served Test CA', trusted);
  const elsewhere = await root('A Root No Client Holds');
  const elsewhereCa = await intermediate('Served Test CA', elsewhere);
  const [trustedRoot] = parseCertificateBundle(trusted.pem);
  let plane: TestPlane;
  const logged: string[] = [];
  const ignored: string[] = [];

  before(async () => {
    const out = new PassThrough();
    out.on('data', (chunk: Buffer) => logged.push(chunk.toString()));
    plane = await startTestPlane({ logger: createLogger('info', out), trustProfiles: () => [{ name: 'default', anchors: [trustedRoot!] }], servedBurst: BURST, servedRejected: (code) => ignored.push(code) });
  });
  after(() => plane.close());

  const der = (...certs: { pem: string }[]) => certs.flatMap((c) => parseCertificateBundle(c.pem).map((x: Certificate) => x.der.toString('base64')));
  const view = async (instanceId: string) => (await plane.app.inject({ method: 'GET', url: `/v1/instances/${instanceId}` })).json();

  /** An instance with an installed certificate (its leaf under the trusted CA) and an authenticated channel. */
  const installedInstance = async (name: string) => {
    const agent = await enrollTestAgent(plane, name);
    const server = await leaf(ca, [`${name}.example.com`]);
    const fingerprintSha256 = parseCertificateBundle(server.cert.pem)[0]!.fingerprintSha256;
    const issued = await plane.app.inject({ method: 'POST', url: `/v1/instances/${agent.instanceId}/issue` });
    await advance(plane.store, issued.json().certificateId, 'installed', { fingerprintSha256, fullchainPem: pem(server.cert, ca), installedAt: new Date() });
    const channel = await openAgentChannel(plane, agent);
    await channel.next('welcome');
    return { agent, server, fingerprintSha256, channel };
  };

  /** Sends a report and waits until the plane stored a judgement newer than `since` (or fails after 5 s). */
  const report = async (channel: AgentChannel, agent: EnrolledAgent, probes: unknown[]) => {
    const before = (await plane.store.served.of([agent.instanceId])).get(agent.instanceId)?.checkedAt.getTime() ?? 0;
    channel.send({ type: 'served', probes });
    for (let i = 0; i < 250; i += 1) {
      const stored = (await plane.store.served.of([agent.instanceId])).get(agent.instanceId);
      if (stored && stored.checkedAt.getTime() > before) return view(agent.instanceId);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.fail('no judgement stored');
  };

  test('before any report an instance is unchecked; the installed chain is match with its anchor, another leaf is stale, in the instance and in the list', async () => {
    const { agent, server, fingerprintSha256, channel } = await installedInstance('served-honest');
    assert.deepEqual((await view(agent.instanceId)).served, { status: 'unchecked', checkedAt: null, fingerprintSha256: null, anchor: null, problems: [] });
    const matched = await report(channel, agent, [{ target: '127.0.0.1:5432', sni: 'served-honest.example.com', certificates: der(server.cert, ca) }]);
    assert.deepEqual([matched.served.status, matched.served.fingerprintSha256, matched.served.anchor, matched.served.problems], ['match', fingerprintSha256, 'Served Test Root', []]);
    assert.equal(matched.agent.installedFingerprintSha256, fingerprintSha256, 'what the agent installed is what it acknowledged (or reports in status), never a probe');
    const old = await leaf(ca, ['served-honest.example.com']);
    const stale = await report(channel, agent, [{ target: '127.0.0.1:5432', sni: 'served-honest.example.com', certificates: der(old.cert, ca) }]);
    assert.equal(stale.served.status, 'stale');
    assert.equal(stale.agent.installedFingerprintSha256, fingerprintSha256, 'a probe of another leaf does not change what the agent installed');
    assert.deepEqual(stale.served.problems.map((p: any) => [p.code, p.target, p.sni]), [[ErrorCode.SERVED_STALE, '127.0.0.1:5432', 'served-honest.example.com']]);
    const listed = (await plane.app.inject({ method: 'GET', url: '/v1/instances?limit=500' })).json().items.find((i: any) => i.id === agent.instanceId);
    assert.equal(listed.served.status, 'stale');
    channel.socket.close();
  });

  test('the right leaf on a chain to a root no profile of the instance holds is wrong-chain', async () => {
    const { agent, server, channel } = await installedInstance('served-wrong-chain');
    const judged = await report(channel, agent, [{ target: 'db:5432', sni: null, certificates: der(server.cert, elsewhereCa) }]);
    assert.equal(judged.served.status, 'wrong-chain');
    assert.deepEqual(judged.served.problems.map((p: any) => p.code), [ErrorCode.SERVED_CHAIN_UNVERIFIED]);
    channel.socket.close();
  });

  test('malformed, oversized and over-counted reports close only their own connection, and change nothing stored', async () => {
    const { agent, server, channel: healthy } = await installedInstance('served-hostile');
    await report(healthy, agent, [{ target: '127.0.0.1:5432', sni: null, certificates: der(server.cert, ca) }]);
    const storedBefore = (await plane.store.served.of([agent.instanceId])).get(agent.instanceId);
    const good = der(server.cert, ca);
    const probe = { target: '127.0.0.1:5432', sni: null, certificates: good };
    const cases: [string, unknown, RegExp][] = [
      ['no probe', { probes: [] }, /CHANNEL_MESSAGE_INVALID/],
      ['too many probes', { probes: Array.from({ length: MAX_PROBES_PER_REPORT + 1 }, () => ({ ...probe, certificates: [good[0]] })) }, /CHANNEL_MESSAGE_INVALID/],
      ['too long a chain', { probes: [{ ...probe, certificates: Array.from({ length: MAX_SERVED_CHAIN + 1 }, () => good[0]) }] }, /CHANNEL_MESSAGE_INVALID/],
      ['a certificate larger than any certificate', { probes: [{ ...probe, certificates: ['A'.repeat(16 * 1024 + 4)] }] }, /CHANNEL_MESSAGE_INVALID/],
      ['a certificate that is not base64', { probes: [{ ...probe, certificates: ['not base64!'] }] }, /CHANNEL_MESSAGE_INVALID/],
      ['naming another instance', { instanceId: '00000000-0000-4000-8000-000000000000', probes: [probe] }, /CHANNEL_MESSAGE_INVALID/],
      ['a field of its own in a probe', { probes: [{ ...probe, certificateId: 'x' }] }, /CHANNEL_MESSAGE_INVALID/],
      ['a target that is no HOST:PORT', { probes: [{ ...probe, target: 'db\n| forged row:5432' }] }, /CHANNEL_MESSAGE_INVALID/],
      ['an SNI that is no host name', { probes: [{ ...probe, sni: 'a b' }] }, /CHANNEL_MESSAGE_INVALID/],
      ['both certificates and unreachable', { probes: [{ ...probe, unreachable: { code: 'X', message: 'y' } }] }, /CHANNEL_MESSAGE_INVALID/],
      ['a private key in an error message', { probes: [{ target: 'a:1', sni: null, unreachable: { code: 'X', message: '-----BEGIN PRIVATE KEY-----\nMII=\n-----END PRIVATE KEY-----' } }] }, /CHANNEL_PRIVATE_KEY_REFUSED/],
    ];
    for (const [what, message, reason] of cases) {
      const hostile = await openAgentChannel(plane, agent);
      await hostile.next('welcome');
      hostile.send({ type: 'served', ...(message as object) });
      const closed = await hostile.closed;
      assert.equal(closed.code, 4000, what);
      assert.match(closed.reason, reason, what);
    }
    const oversized = await openAgentChannel(plane, agent);
    await oversized.next('welcome');
    oversized.send({ type: 'served', probes: Array.from({ length: MAX_PROBES_PER_REPORT }, () => ({ ...probe, certificates: Array.from({ length: MAX_SERVED_CHAIN }, () => 'A'.repeat(16 * 1024)) })) });
    assert.equal((await oversized.closed).code, 1009, 'larger than a channel message may be');
    assert.deepEqual((await plane.store.served.of([agent.instanceId])).get(agent.instanceId), storedBefore);
    // Each hostile connection replaced the healthy one (same agent); the plane still answers a fresh one.
    const again = await openAgentChannel(plane, agent);
    await again.next('welcome');
    assert.equal((await report(again, agent, [probe])).served.status, 'match');
    again.socket.close();
    healthy.socket.close();
  });

  test('a report speaks for the agent\'s own instance only: another instance\'s certificate makes the liar stale and leaves the other as it was', async () => {
    const victim = await installedInstance('served-victim');
    const liar = await installedInstance('served-liar');
    await report(victim.channel, victim.agent, [{ target: 'v:1', sni: null, certificates: der(victim.server.cert, ca) }]);
    const lied = await report(liar.channel, liar.agent, [{ target: 'v:1', sni: 'served-victim.example.com', certificates: der(victim.server.cert, ca) }]);
    assert.equal(lied.served.status, 'stale');
    const untouched = await view(victim.agent.instanceId);
    assert.deepEqual([untouched.served.status, untouched.served.fingerprintSha256], ['match', victim.fingerprintSha256]);
    victim.channel.socket.close();
    liar.channel.socket.close();
  });

  test('bytes that are no certificate are judged, never crash: garbage as the leaf is stale, garbage after the leaf a wrong chain; the agent\'s text is stored escaped', async () => {
    const { agent, server, channel } = await installedInstance('served-garbage');
    const garbage = Buffer.from('3082ffff0102030405', 'hex').toString('base64');
    assert.equal((await report(channel, agent, [{ target: 'g:1', sni: null, certificates: [garbage] }])).served.status, 'stale');
    const afterLeaf = await report(channel, agent, [{ target: 'g:1', sni: null, certificates: [der(server.cert)[0], garbage] }]);
    assert.equal(afterLeaf.served.status, 'wrong-chain');
    assert.deepEqual(afterLeaf.served.problems.map((p: any) => p.code), [ErrorCode.CHAIN_UNPARSABLE_CERTIFICATE]);
    const down = await report(channel, agent, [{ target: 'g:1', sni: null, unreachable: { code: 'ECONNREFUSED', message: 'refused\n| forged | row |\u001b[31m' } }]);
    assert.equal(down.served.status, 'unreachable');
    const message: string = down.served.problems[0].message;
    assert.ok(!/[\n\u001b]/.test(message), message);
    assert.match(message, /refused\\n\| forged/);
    assert.equal(channel.socket.readyState, WebSocket.OPEN);
    channel.socket.close();
  });

  test('a flood is judged at a bounded rate: past the burst, reports are ignored and counted, and the connection stays open', async () => {
    const { agent, server, channel } = await installedInstance('served-flood');
    const judgedLines = () => logged.join('').split('\n').filter((line) => line.includes('served chain judged') && line.includes(agent.instanceId)).length;
    const before = judgedLines();
    const ignoredBefore = ignored.length;
    for (let i = 0; i < BURST * 4; i += 1) channel.send({ type: 'served', probes: [{ target: 'f:1', sni: null, certificates: der(server.cert, ca) }] });
    for (let i = 0; i < 250 && judgedLines() - before + ignored.length - ignoredBefore < BURST * 4; i += 1) await new Promise((resolve) => setTimeout(resolve, 20));
    const judged = judgedLines() - before;
    assert.ok(judged >= BURST && judged <= BURST + 2, `judged ${judged} of ${BURST * 4}`);
    assert.equal(judged + ignored.length - ignoredBefore, BURST * 4);
    assert.ok(ignored.slice(ignoredBefore).every((code) => code === ErrorCode.CHANNEL_SERVED_REPORT_TOO_FREQUENT));
    assert.equal(channel.socket.readyState, WebSocket.OPEN);
    assert.equal((await view(agent.instanceId)).served.status, 'match');
    channel.socket.close();
  });
});
