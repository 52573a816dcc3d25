/**
 * Fleet figures for `npm run bench` (agents connected to one process: agents-scale.ts):
 * - end-to-end issuances per second, CSR from the agent to its installed acknowledgement,
 *   with real agents (in this process) answering http-01 on their own loopback addresses,
 *   beside a bare acme-client loop on the same Pebble.
 */
import https from 'node:https';
import acme from 'acme-client';
import pino from 'pino';
import { AgentClient } from '../../src/agent/client.js';
import { enroll } from '../../src/agent/enroll.js';
import { Http01Responder } from '../../src/agent/http01.js';
import { Installer } from '../../src/agent/install.js';
import { openState } from '../../src/agent/state.js';
import { parseCertificateBundle } from '../../src/chain/index.js';
import { startPebble, type LocalPebble } from '../../src/devenv/pebble.js';
import { createCsr, generateKeyPair } from '../../src/pki/factory.js';
import { scratch } from '../support/cli.js';
import { freePort } from '../support/ports.js';
import { startSimulatedAgent, type SimulatedAgent } from '../support/fleet.js';
import { eventually, startCertplane, type RunningProcess } from '../support/processes.js';

const line = (label: string, value: string) => process.stdout.write(`${label.padEnd(58)} ${value}\n`);

async function startPlane(env: Record<string, string>): Promise<{ plane: RunningProcess; url: string }> {
  const port = await freePort();
  const plane = startCertplane(['serve'], { CERTPLANE_INSECURE_HTTP: '1', CERTPLANE_LISTEN: `127.0.0.1:${port}`, CERTPLANE_LOG_LEVEL: 'warn', ...env });
  const url = `http://127.0.0.1:${port}`;
  await eventually(async () => ((await fetch(`${url}/healthz`)).ok ? true : undefined), 30_000, 100, 'the plane to start');
  return { plane, url };
}

const post = async (url: string, body?: unknown) =>
  (await fetch(url, { method: 'POST', headers: body ? { 'content-type': 'application/json' } : {}, body: body ? JSON.stringify(body) : undefined })).json() as Promise<Record<string, any>>;

/** Issuances per second of a plain acme-client `auto()` loop on `pebble`: the same-run baseline. */
async function bareAcmeRate(pebble: LocalPebble, count: number, prefix: string): Promise<number> {
  acme.axios.defaults.httpsAgent = new https.Agent({ ca: pebble.acmeServerCaPem, keepAlive: true });
  const bare = new acme.Client({ directoryUrl: pebble.directoryUrl, accountKey: await acme.crypto.createPrivateEcdsaKey(), backoffMin: 50, backoffMax: 500 });
  const csrs = await Promise.all(Array.from({ length: count }, async (_, i) => createCsr(await generateKeyPair(), [`${prefix}${i}.bench.test`])));
  const started = performance.now();
  for (const csr of csrs) {
    await bare.auto({
      csr,
      termsOfServiceAgreed: true,
      challengePriority: ['dns-01'],
      skipChallengeVerification: true,
      challengeCreateFn: async (authz, _c, keyAuthorization) => void (await fetch(`${pebble.challtestsrvUrl}/set-txt`, { method: 'POST', body: JSON.stringify({ host: `_acme-challenge.${authz.identifier.value}.`, value: keyAuthorization }) })),
      challengeRemoveFn: async (authz) => void (await fetch(`${pebble.challtestsrvUrl}/clear-txt`, { method: 'POST', body: JSON.stringify({ host: `_acme-challenge.${authz.identifier.value}.` }) })),
    });
  }
  return count / ((performance.now() - started) / 1000);
}

/**
 * A reissue campaign over `count` instances (simulated agents running the real agent
 * code, dns-01 through challtestsrv) with limits too high to bind, beside the bare loop.
 */
export async function benchCampaign(count: number): Promise<void> {
  const dir = await scratch('certplane-bench-campaign-');
  const pebble = await startPebble({ alternateRoots: 1 });
  const preferred = parseCertificateBundle((await pebble.roots())[1]!)[0]!;
  const trustPath = await dir.write('root.pem', preferred.pem);
  const { plane, url } = await startPlane({
    CERTPLANE_DATABASE_URL: 'memory:',
    CERTPLANE_SECRETS: `file:${dir.path('secrets')}`,
    CERTPLANE_ACME_DIRECTORY: pebble.directoryUrl,
    CERTPLANE_ACME_CA_CERTS: pebble.acmeServerCaPath,
    CERTPLANE_PREFERRED_CHAINS: JSON.stringify([preferred.subjectCN]),
    CERTPLANE_TRUST_STORE: trustPath,
    CERTPLANE_DNS_PROVIDER: 'challtestsrv',
    CERTPLANE_CHALLTESTSRV_URL: pebble.challtestsrvUrl,
    CERTPLANE_CHALLENGE: 'dns-01',
    CERTPLANE_SCHEDULER_INTERVAL_MS: '100',
    CERTPLANE_RATE_LIMITS: JSON.stringify({ newOrders: { capacity: 100_000, refillPerSecond: 1000 }, certificatesPerDomain: { capacity: 100_000, refillPerSecond: 1000 } }),
  });
  const agents: SimulatedAgent[] = [];
  try {
    for (let i = 0; i < count; i += 1) {
      const instance = await post(`${url}/v1/instances`, { name: `k${i}`, hostnames: [`k${i}.bench.test`], autoIssue: false });
      agents.push(await startSimulatedAgent({ server: url, token: instance.enrollmentToken, stateDir: dir.path(`agent-${i}`), trustAnchors: [preferred] }));
    }
    await eventually(async () => {
      for (const agent of agents) if (!((await (await fetch(`${url}/v1/instances/${agent.instanceId}`)).json()) as any).agent.connected) return undefined;
      return true;
    }, 60_000, 100, 'agents to connect');
    const bareRate = await bareAcmeRate(pebble, count, 'campaign-bare');
    const started = performance.now();
    const campaign = await post(`${url}/v1/reissues`, { selector: { all: true }, reason: 'bench' });
    await eventually(async () => {
      const status = (await (await fetch(`${url}/v1/reissues/${campaign.id}`)).json()) as any;
      if (status.counts.failed > 0) throw new Error(`${status.counts.failed} failed`);
      return status.state === 'done' ? true : undefined;
    }, 600_000, 100, 'the campaign to finish');
    const rate = count / ((performance.now() - started) / 1000);
    process.stdout.write(`\nreissue campaign, ${count} instances, limits not binding (simulated agents, dns-01)\n`);
    line(`  baseline: bare acme-client auto() loop, same Pebble`, `${bareRate.toFixed(2)} /s`);
    line(`  certplane campaign: request to every agent's acknowledgement`, `${rate.toFixed(2)} /s  (${(rate / bareRate).toFixed(2)} x baseline)`);
  } finally {
    await Promise.all(agents.map((a) => a.client.stop()));
    await plane.stop();
    await pebble.stop();
    await dir.remove();
  }
}

/** End-to-end issuance through real agents against local Pebble, beside bare acme-client on the same Pebble. */
export async function benchEndToEnd(agentCount: number): Promise<void> {
  const dir = await scratch('certplane-bench-e2e-');
  const pebble: LocalPebble = await startPebble({ alternateRoots: 2 });
  const preferred = parseCertificateBundle((await pebble.roots())[1]!)[0]!;
  const trustPath = await dir.write('root.pem', preferred.pem);
  const { plane, url } = await startPlane({
    CERTPLANE_DATABASE_URL: 'memory:',
    CERTPLANE_SECRETS: `file:${dir.path('secrets')}`,
    CERTPLANE_ACME_DIRECTORY: pebble.directoryUrl,
    CERTPLANE_ACME_CA_CERTS: pebble.acmeServerCaPath,
    CERTPLANE_PREFERRED_CHAINS: JSON.stringify([preferred.subjectCN]),
    CERTPLANE_TRUST_STORE: trustPath,
  });
  const logger = pino({ level: 'silent' });
  const running: { client: AgentClient; http01: Http01Responder }[] = [];
  try {
    const instanceIds: string[] = [];
    for (let i = 0; i < agentCount; i += 1) {
      const host = `e2e${i}.bench.test`;
      const address = `127.0.1.${i + 1}`;
      await pebble.resolve(host, address);
      const instance = await post(`${url}/v1/instances`, { name: host, hostnames: [host], autoIssue: false });
      const state = await openState(dir.path(`agent-${i}`));
      const identity = await enroll(state, url, instance.enrollmentToken);
      const http01 = new Http01Responder({ host: address, port: pebble.http01Port });
      await http01.start();
      const client = new AgentClient({ state, identity, installer: new Installer({ state, trustAnchors: [preferred], logger }), http01, logger });
      client.start();
      running.push({ client, http01 });
      instanceIds.push(instance.id);
    }
    await eventually(async () => {
      for (const id of instanceIds) if (!((await (await fetch(`${url}/v1/instances/${id}`)).json()) as any).agent.connected) return undefined;
      return true;
    }, 30_000, 100, 'agents to connect');

    const bareRate = await bareAcmeRate(pebble, agentCount, 'bare');

    const started = performance.now();
    await Promise.all(instanceIds.map((id) => post(`${url}/v1/instances/${id}/issue`)));
    await eventually(async () => {
      for (const id of instanceIds) {
        const view = (await (await fetch(`${url}/v1/instances/${id}`)).json()) as any;
        if (view.certificate?.status === 'failed') throw new Error(view.certificate.lastError);
        if (view.certificate?.status !== 'installed') return undefined;
      }
      return true;
    }, 300_000, 50, 'every agent to install');
    const rate = agentCount / ((performance.now() - started) / 1000);
    process.stdout.write(`\nend-to-end issuance: CSR from the agent to its installed acknowledgement (${agentCount} agents, http-01 by the agents)\n`);
    line(`  baseline: bare acme-client auto() loop, same Pebble`, `${bareRate.toFixed(2)} /s`);
    line(`  certplane: plane + agents, issued concurrently`, `${rate.toFixed(2)} /s  (${(rate / bareRate).toFixed(2)} x baseline)`);
  } finally {
    for (const { client, http01 } of running) {
      await client.stop();
      await http01.stop();
    }
    await plane.stop();
    await pebble.stop();
    await dir.remove();
  }
}
