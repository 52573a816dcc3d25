/**
 * The deployment's parameters, read from CDK context (cdk.json, or `-c certplane:NAME=VALUE`)
 * and checked before anything is synthesised: a typo in a prefix or a zone id would
 * otherwise become an IAM policy that grants the wrong thing, found only in production.
 */
import type { Node } from 'constructs';

/** What the stack is built from; docs/deploy.md lists every context key. */
export interface PlaneSettings {
  /** CERTPLANE_SECRETS=aws-sm:PREFIX: the plane reads and writes exactly PREFIX/* and nothing else. */
  readonly secretsPrefix: string;
  /** Secret holding the listener's certificate and key as JSON {"certificate","privateKey"}, created by the operator. */
  readonly listenerTlsSecretName: string;
  /** An image already in a registry; without it the image is built from the repository's Dockerfile. */
  readonly imageUri: string | undefined;
  readonly desiredCount: number;
  readonly cpu: number;
  readonly memoryMiB: number;
  /** Port agents and on-call engineers connect to on the load balancer. */
  readonly listenerPort: number;
  /** Port the plane listens on inside its task. */
  readonly containerPort: number;
  /** Who may open a TCP connection to the listener; mutual TLS authenticates them after that. */
  readonly allowedCidrs: readonly string[];
  readonly internetFacing: boolean;
  /** The https:// URL agents are told to use (CERTPLANE_PUBLIC_URL), usually a DNS name on the load balancer. */
  readonly publicUrl: string | undefined;
  readonly acmeDirectory: string | undefined;
  readonly acmeEmail: string | undefined;
  /** Set: dns-01 through Route 53 in this hosted zone, and IAM for that zone only. Unset: http-01 through the agents. */
  readonly route53HostedZoneId: string | undefined;
  readonly databaseInstanceType: string;
  readonly databaseAllocatedStorageGiB: number;
  readonly databaseBackupRetentionDays: number;
  readonly deletionProtection: boolean;
  readonly maxAzs: number;
  readonly natGateways: number;
  readonly logRetentionDays: number;
  /** ECS Exec for the admin console; it needs a writable root file system for the SSM agent, so it and a read-only one exclude each other. */
  readonly ecsExec: boolean;
  readonly alarmEmail: string | undefined;
  /** Agent disconnections within five minutes that page someone: a fleet dropping at once, not one reboot. */
  readonly agentDisconnectAlarmThreshold: number;
}

const CONTEXT_PREFIX = 'certplane:';
/** The character set certplane's own prefix check accepts (src/secrets/aws.ts), so IAM and the plane agree. */
const SECRETS_PREFIX = /^[A-Za-z0-9_+=.@-]+(\/[A-Za-z0-9_+=.@-]+)*$/;
const HOSTED_ZONE_ID = /^Z[A-Z0-9]{1,31}$/;
const CIDR = /^(\d{1,3}\.){3}\d{1,3}\/\d{1,2}$/;

/** Reads every `certplane:*` context key; throws one error naming each bad value. */
export function readSettings(node: Node): PlaneSettings {
  const problems: string[] = [];
  const raw = (name: string): unknown => node.tryGetContext(`${CONTEXT_PREFIX}${name}`);
  const text = (name: string, fallback?: string, pattern?: RegExp): string | undefined => {
    const value = raw(name);
    if (value === undefined || value === '') return fallback;
    if (typeof value !== 'string' || (pattern && !pattern.test(value))) {
      problems.push(`${CONTEXT_PREFIX}${name}: ${JSON.stringify(value)} is not valid${pattern ? ` (expected ${pattern})` : ''}`);
      return fallback;
    }
    return value;
  };
  const integer = (name: string, fallback: number, min: number, max: number): number => {
    const value = raw(name);
    if (value === undefined) return fallback;
    const parsed = typeof value === 'number' ? value : Number(value);
    if (!Number.isInteger(parsed) || parsed < min || parsed > max) {
      problems.push(`${CONTEXT_PREFIX}${name}: ${JSON.stringify(value)} must be an integer from ${min} to ${max}`);
      return fallback;
    }
    return parsed;
  };
  const flag = (name: string, fallback: boolean): boolean => {
    const value = raw(name);
    if (value === undefined) return fallback;
    if (value === true || value === 'true') return true;
    if (value === false || value === 'false') return false;
    problems.push(`${CONTEXT_PREFIX}${name}: ${JSON.stringify(value)} must be true or false`);
    return fallback;
  };
  const list = (name: string, fallback: readonly string[], pattern: RegExp): readonly string[] => {
    const value = raw(name);
    if (value === undefined) return fallback;
    const items = Array.isArray(value) ? value : typeof value === 'string' ? value.split(',').map((item) => item.trim()) : [value];
    const bad = items.filter((item) => typeof item !== 'string' || !pattern.test(item));
    if (items.length === 0 || bad.length > 0) {
      problems.push(`${CONTEXT_PREFIX}${name}: ${JSON.stringify(value)} must be a non-empty list matching ${pattern}`);
      return fallback;
    }
    return items as string[];
  };

  const secretsPrefix = text('secretsPrefix', 'certplane/production', SECRETS_PREFIX) as string;
  const settings: PlaneSettings = {
    secretsPrefix,
    listenerTlsSecretName: text('listenerTlsSecretName', `${secretsPrefix}-listener-tls`, SECRETS_PREFIX) as string,
    imageUri: text('imageUri'),
    desiredCount: integer('desiredCount', 2, 2, 20),
    cpu: integer('cpu', 512, 256, 4096),
    memoryMiB: integer('memoryMiB', 1024, 512, 30_720),
    listenerPort: integer('listenerPort', 443, 1, 65_535),
    containerPort: integer('containerPort', 8443, 1024, 65_535),
    allowedCidrs: list('allowedCidrs', ['0.0.0.0/0'], CIDR),
    internetFacing: flag('internetFacing', true),
    publicUrl: text('publicUrl', undefined, /^https:\/\/[^/\s]+\/?$/),
    acmeDirectory: text('acmeDirectory', undefined, /^https:\/\/\S+$/),
    acmeEmail: text('acmeEmail', undefined, /^[^@\s]+@[^@\s]+$/),
    route53HostedZoneId: text('route53HostedZoneId', undefined, HOSTED_ZONE_ID),
    databaseInstanceType: text('databaseInstanceType', 't4g.medium', /^[a-z0-9]+\.[a-z0-9]+$/) as string,
    databaseAllocatedStorageGiB: integer('databaseAllocatedStorageGiB', 20, 20, 65_536),
    databaseBackupRetentionDays: integer('databaseBackupRetentionDays', 14, 1, 35),
    deletionProtection: flag('deletionProtection', true),
    maxAzs: integer('maxAzs', 2, 2, 6),
    natGateways: integer('natGateways', 2, 1, 6),
    logRetentionDays: integer('logRetentionDays', 90, 1, 3653),
    ecsExec: flag('ecsExec', true),
    alarmEmail: text('alarmEmail', undefined, /^[^@\s]+@[^@\s]+$/),
    agentDisconnectAlarmThreshold: integer('agentDisconnectAlarmThreshold', 20, 1, 1_000_000),
  };
  if (settings.listenerTlsSecretName.startsWith(`${secretsPrefix}/`)) {
    problems.push(`${CONTEXT_PREFIX}listenerTlsSecretName: must not be under ${secretsPrefix}/, which is certplane's own namespace`);
  }
  if (problems.length > 0) throw new Error(`invalid CDK context:\n  ${problems.join('\n  ')}`);
  return settings;
}
