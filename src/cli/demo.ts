/**
 * `certplane demo`: the main job on embedded defaults. Starts a local Pebble with
 * alternate roots, prefers one of the alternates (so the default chain is the wrong
 * answer), trusts only that root, issues one certificate through the same composition
 * root production uses, and prints how every offered chain was judged.
 */
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { explainReport, explainSelection, parseCertificateBundle } from '../chain/index.js';
import { loadConfig } from '../config/config.js';
import { composeIssuer } from '../compose.js';
import { createCsr, generateKeyPair } from '../pki/factory.js';
import { startPebble } from '../devenv/pebble.js';
import { createLogger } from '../log/logger.js';
import { ExitCode, parse, usageError, type Io } from './args.js';
import { writeAtomically } from './issue.js';

const USAGE = 'usage: certplane demo [--alternate-roots N] [--out-dir DIR] [--hostname NAME]';

export async function demo(args: string[], io: Io): Promise<number> {
  const { values } = parse(args, { 'alternate-roots': { type: 'string' }, 'out-dir': { type: 'string' }, hostname: { type: 'string' } }, USAGE);
  const alternateRoots = Number(values['alternate-roots'] ?? '2');
  if (!Number.isInteger(alternateRoots) || alternateRoots < 1 || alternateRoots > 5) throw usageError('--alternate-roots must be an integer from 1 to 5', USAGE);
  const outDir = resolve(values['out-dir'] ?? 'data/demo');
  const hostname = values.hostname ?? 'db1.demo.certplane.test';
  await mkdir(outDir, { recursive: true, mode: 0o700 });

  io.stdout.write(`starting Pebble with ${alternateRoots} alternate root(s) on loopback...\n`);
  const pebble = await startPebble({ alternateRoots });
  try {
    const roots = (await pebble.roots()).map((pem) => parseCertificateBundle(pem, 'Pebble root')[0]!);
    const preferred = roots[roots.length - 1]!;
    const trustStorePath = join(outDir, 'trust-store.pem');
    await writeFile(trustStorePath, preferred.pem);
    io.stdout.write(`Pebble offers chains to: ${roots.map((r) => `"${r.subjectCN}"`).join(', ')}\npreferring the alternate "${preferred.subjectCN}", the only root in the trust store\n\n`);

    const config = loadConfig({
      ...io.env,
      CERTPLANE_ACME_DIRECTORY: pebble.directoryUrl,
      CERTPLANE_ACME_CA_CERTS: pebble.acmeServerCaPath,
      CERTPLANE_PREFERRED_CHAINS: JSON.stringify([preferred.subjectCN]),
      CERTPLANE_TRUST_STORE: trustStorePath,
      CERTPLANE_SECRETS: `file:${join(outDir, 'secrets')}`,
      CERTPLANE_DNS_PROVIDER: 'challtestsrv',
      CERTPLANE_CHALLTESTSRV_URL: pebble.challtestsrvUrl,
      CERTPLANE_LOG_LEVEL: io.env.CERTPLANE_LOG_LEVEL ?? 'warn',
    });
    const issuer = await composeIssuer(config, createLogger(config.logLevel, io.stderr));

    // The instance's side: its key is made here and written only to the instance's directory.
    const key = await generateKeyPair();
    const result = await issuer.issue(await createCsr(key, [hostname]));
    await writeAtomically(join(outDir, 'privkey.pem'), key.privateKeyPem, 0o600);
    await chmod(join(outDir, 'privkey.pem'), 0o600);
    await writeAtomically(join(outDir, 'fullchain.pem'), result.fullchainPem);

    const files = result.offeredChainsPem.map((_, i) => (i === 0 ? 'default chain' : `alternate ${i}`));
    io.stdout.write(`chains offered by the CA:\n${explainSelection(result.selection, files)}\n\n`);
    io.stdout.write(`chain report for ${hostname}:\n${explainReport(result.report)}\n\n`);
    io.stdout.write(`wrote ${join(outDir, 'fullchain.pem')} and ${join(outDir, 'privkey.pem')}\n`);
    io.stdout.write(`check it yourself: npx certplane chain verify ${join(outDir, 'fullchain.pem')} --trust ${trustStorePath} --hostname ${hostname}\n`);
    return ExitCode.OK;
  } finally {
    await pebble.stop();
  }
}
