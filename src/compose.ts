/**
 * The composition root: the one place that reads configuration, opens files, builds SDK
 * clients and wires the rooms together. Every room receives what it needs as arguments
 * and never reaches for a global, so tests can build the same graph from their own parts.
 */
import { Route53Client } from '@aws-sdk/client-route-53';
import { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import type { Logger } from 'pino';
import { AcmeIssuer } from './acme/issuer.js';
import { ChalltestsrvDnsProvider } from './acme/dns/challtestsrv.js';
import type { DnsProvider } from './acme/dns/provider.js';
import { Route53DnsProvider } from './acme/dns/route53.js';
import { Dns01Solver, type ChallengeSolver } from './acme/solver.js';
import type { Config } from './config/config.js';
import { distrustedKeys, loadTrustStore, readText } from './config/trust.js';
import { openSecretStore } from './secrets/index.js';

/** Builds the DNS provider CERTPLANE_DNS_PROVIDER names, or none. */
export function dnsProviderFor(config: Config): DnsProvider | undefined {
  switch (config.dns.provider) {
    case 'challtestsrv':
      return new ChalltestsrvDnsProvider(config.dns.challtestsrvUrl as string);
    case 'route53':
      return new Route53DnsProvider({ client: new Route53Client({}), hostedZoneId: config.dns.route53HostedZoneId });
    case 'none':
      return undefined;
  }
}

/** Everything a one-shot issuance needs, built from configuration. */
export async function composeIssuer(config: Config, logger: Logger, extraSolvers: readonly ChallengeSolver[] = []): Promise<AcmeIssuer> {
  const trust = await loadTrustStore(config.chain.trustStore);
  logger.debug({ trustStore: trust.source, anchors: trust.anchors.length }, 'trust store loaded');
  const secrets = await openSecretStore(config.secrets, { secretsManagerClient: () => new SecretsManagerClient({}) });
  const dns = dnsProviderFor(config);
  return new AcmeIssuer({
    directoryUrl: config.acme.directoryUrl,
    serverCaPem: config.acme.serverCaCertsPath ? await readText(config.acme.serverCaCertsPath, 'CERTPLANE_ACME_CA_CERTS') : undefined,
    contactEmail: config.acme.contactEmail,
    secrets,
    solvers: [...(dns ? [new Dns01Solver(dns)] : []), ...extraSolvers],
    chainPolicy: {
      preferences: config.chain.preferences,
      fallback: config.chain.fallback,
      trustAnchors: trust.anchors,
      distrustedSpkiSha256: distrustedKeys(config.chain.extraDistrustedSpki),
    },
    logger,
  });
}
