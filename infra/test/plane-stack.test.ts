/**
 * The CDK app synthesised without an AWS account: fine-grained assertions on the template
 * (what is reachable from where, what IAM allows, what is encrypted) and cdk-nag's
 * AwsSolutions pack, whose unacknowledged findings make the synthesis throw.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { Validations } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { createApp, type CertplaneApp } from '../lib/app.js';

type Json = Record<string, any>;
const outdirs: string[] = [];
after(() => outdirs.forEach((dir) => rmSync(dir, { recursive: true, force: true })));

/** Synthesises once (cdk-nag included) and returns the stack's template. */
function synth(context: Record<string, unknown> = {}, cloudFormationValidation = false): { template: Template; json: Json; built: CertplaneApp; assets: Json[] } {
  const outdir = mkdtempSync(path.join(tmpdir(), 'certplane-cdk-'));
  outdirs.push(outdir);
  const built = createApp({ outdir, cloudFormationValidation, context });
  const assembly = (() => {
    try {
      return built.app.synth();
    } catch (error) {
      throw new Error(`synthesis failed: ${violationsIn(outdir).join('; ')}`, { cause: error });
    }
  })();
  const json = assembly.getStackByName(built.stack.stackName).template as Json;
  return { template: Template.fromJSON(json), json, built, assets: assembly.getStackByName(built.stack.stackName).assets as Json[] };
}

/** The rule and construct of each finding the validation report holds, so a failure names what to fix. */
function violationsIn(outdir: string): string[] {
  const file = path.join(outdir, 'validation-report.json');
  if (!existsSync(file)) return [];
  const report = JSON.parse(readFileSync(file, 'utf8')) as Json;
  return (report.pluginReports as Json[]).flatMap((plugin) =>
    (plugin.violations as Json[]).map((violation) => `${violation.ruleName} at ${JSON.stringify((violation.violatingConstructs ?? violation.violatingResources ?? []).map((c: Json) => c.constructPath ?? c.resourceLogicalId))}`),
  );
}

/** An ARN or name as the template spells it, with references written <AWS::Region> or <LogicalId> the way cdk-nag does. */
function flatten(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(flatten);
  if (value && typeof value === 'object') {
    const object = value as Json;
    if ('Fn::Join' in object) return (object['Fn::Join'][1] as unknown[]).map((part) => flatten(part)).join(object['Fn::Join'][0]);
    if ('Ref' in object) return `<${object.Ref}>`;
    return Object.fromEntries(Object.entries(object).map(([key, inner]) => [key, flatten(inner)]));
  }
  return value;
}

function resources(json: Json, type: string): [string, Json][] {
  return Object.entries(json.Resources as Json).filter(([, resource]) => resource.Type === type) as [string, Json][];
}

/** CDK derives a logical id from the construct path plus an 8-digit hash (TaskRole -> TaskRole30FC0FBB), generated secrets add a suffix. */
function logicalIdOf(json: Json, type: string, pathId: string): string {
  const pattern = new RegExp(`^${pathId}[0-9A-F]{8}([0-9a-f]{32})?$`);
  const found = Object.entries(json.Resources as Json).filter(([id, resource]) => resource.Type === type && pattern.test(id));
  assert.equal(found.length, 1, `exactly one ${type} named ${pathId}`);
  return found[0]![0];
}

/** Every statement of the policies attached to the role with this logical id. */
function statementsOfRole(json: Json, roleId: string): Json[] {
  return resources(json, 'AWS::IAM::Policy')
    .filter(([, policy]) => (policy.Properties.Roles as Json[]).some((role) => role.Ref === roleId))
    .flatMap(([, policy]) => policy.Properties.PolicyDocument.Statement as Json[])
    .map((statement) => flatten(statement) as Json);
}

const asList = (value: unknown): unknown[] => (Array.isArray(value) ? value : [value]);
const SECRETS_ACTIONS = ['secretsmanager:CreateSecret', 'secretsmanager:GetSecretValue', 'secretsmanager:PutSecretValue'];

describe('the default deployment (http-01, ECS Exec on)', () => {
  const { template, json, built } = synth({ 'certplane:imageUri': 'registry.example/certplane:1' }, true);
  const taskRoleId = logicalIdOf(json, 'AWS::IAM::Role', 'TaskRole');

  test('cdk-nag AwsSolutions and CDK template validation pass, and every acknowledgement says why', () => {
    // synth() above throws on any unacknowledged error; here: no acknowledgement is a bare id.
    const acknowledged = built.stack.node
      .findAll()
      .flatMap((construct) => construct.node.metadata.filter((entry) => entry.type === Validations.ACKNOWLEDGED_RULES_METADATA_KEY))
      .flatMap((entry) => Object.entries(entry.data as Record<string, string>));
    const nag = acknowledged.filter(([id]) => id.includes('AwsSolutions-'));
    assert.ok(nag.length >= 8, `cdk-nag acknowledgements found: ${nag.length}`);
    for (const [id, reason] of nag) assert.ok(reason.length >= 40, `${id} needs a reason a reviewer can check, got ${JSON.stringify(reason)}`);
  });

  test('a Network Load Balancer with a TCP listener, no Application Load Balancer anywhere', () => {
    const loadBalancers = resources(json, 'AWS::ElasticLoadBalancingV2::LoadBalancer');
    assert.equal(loadBalancers.length, 1);
    assert.equal(loadBalancers[0]![1].Properties.Type, 'network');
    assert.equal(loadBalancers[0]![1].Properties.Scheme, 'internet-facing');
    const listeners = resources(json, 'AWS::ElasticLoadBalancingV2::Listener');
    assert.deepEqual(listeners.map(([, listener]) => [listener.Properties.Protocol, listener.Properties.Port]), [['TCP', 443]]);
    assert.doesNotMatch(JSON.stringify(json), /"Protocol":"(HTTP|HTTPS|TLS)"/, 'no listener or target group terminates TLS or HTTP before the plane');
  });

  test('the target group passes TCP to the tasks on 8443 and checks /readyz over HTTPS', () => {
    template.hasResourceProperties('AWS::ElasticLoadBalancingV2::TargetGroup', {
      Protocol: 'TCP',
      Port: 8443,
      TargetType: 'ip',
      HealthCheckProtocol: 'HTTPS',
      HealthCheckPath: '/readyz',
      HealthCheckPort: '8443',
    });
  });

  test('PostgreSQL on RDS: encrypted, Multi-AZ, private, TLS forced, generated credentials in Secrets Manager', () => {
    template.hasResourceProperties('AWS::RDS::DBInstance', { Engine: 'postgres', StorageEncrypted: true, MultiAZ: true, PubliclyAccessible: false, DeletionProtection: true });
    template.hasResourceProperties('AWS::RDS::DBParameterGroup', { Parameters: { 'rds.force_ssl': '1' } });
    template.hasResourceProperties('AWS::SecretsManager::Secret', { Name: 'certplane/production-database', GenerateSecretString: { SecretStringTemplate: '{"username":"certplane"}', GenerateStringKey: 'password' } });
  });

  test('only the NLB listener is open to the network; the plane only from the NLB; the database only from the plane', () => {
    const nlbGroup = logicalIdOf(json, 'AWS::EC2::SecurityGroup', 'LoadBalancerSecurityGroup');
    const planeGroup = logicalIdOf(json, 'AWS::EC2::SecurityGroup', 'PlaneSecurityGroup');
    const databaseGroup = logicalIdOf(json, 'AWS::EC2::SecurityGroup', 'DatabaseSecurityGroup');
    const groupId = (value: Json): string | undefined => value?.['Fn::GetAtt']?.[0];
    const ingress = [
      ...resources(json, 'AWS::EC2::SecurityGroup').flatMap(([id, group]) => ((group.Properties.SecurityGroupIngress ?? []) as Json[]).map((rule) => ({ ...rule, group: id }))),
      ...resources(json, 'AWS::EC2::SecurityGroupIngress').map(([, rule]) => ({ ...rule.Properties, group: groupId(rule.Properties.GroupId) })),
    ];
    const described = ingress.map((rule) => [rule.group, rule.CidrIp ?? groupId(rule.SourceSecurityGroupId), rule.IpProtocol, rule.FromPort, rule.ToPort]).sort();
    assert.deepEqual(described, [
      [databaseGroup, planeGroup, 'tcp', 5432, 5432],
      [nlbGroup, '0.0.0.0/0', 'tcp', 443, 443],
      [planeGroup, nlbGroup, 'tcp', 8443, 8443],
    ].sort());
    for (const [, group] of resources(json, 'AWS::EC2::SecurityGroup')) {
      for (const rule of (group.Properties.SecurityGroupEgress ?? []) as Json[]) {
        assert.notEqual(rule.IpProtocol, '-1', `no "all traffic" egress: ${JSON.stringify(rule)}`);
      }
    }
  });

  test('the task role allows exactly the three Secrets Manager calls certplane makes, on PREFIX/* only, and no Route 53', () => {
    const statements = statementsOfRole(json, taskRoleId);
    const secrets = statements.filter((statement) => asList(statement.Action).some((action) => String(action).startsWith('secretsmanager:')));
    assert.equal(secrets.length, 1);
    assert.deepEqual([...asList(secrets[0]!.Action)].sort(), SECRETS_ACTIONS);
    assert.deepEqual(secrets[0]!.Resource, 'arn:<AWS::Partition>:secretsmanager:<AWS::Region>:<AWS::AccountId>:secret:certplane/production/*');
    assert.equal(secrets[0]!.Effect, 'Allow');
    const others = statements.filter((statement) => statement !== secrets[0]);
    assert.deepEqual([...new Set(others.flatMap((statement) => asList(statement.Action)))].sort(), [
      'logs:CreateLogStream',
      'logs:DescribeLogGroups',
      'logs:DescribeLogStreams',
      'logs:PutLogEvents',
      'ssmmessages:CreateControlChannel',
      'ssmmessages:CreateDataChannel',
      'ssmmessages:OpenControlChannel',
      'ssmmessages:OpenDataChannel',
    ], 'besides its secrets, the task role has only the ECS Exec channel and its session log');
    const sessionLogWrites = others.filter((statement) => asList(statement.Action).includes('logs:PutLogEvents'));
    const sessionLogs = logicalIdOf(json, 'AWS::Logs::LogGroup', 'AdminSessionLogs');
    assert.deepEqual(sessionLogWrites.map((statement) => statement.Resource), [`arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:<${sessionLogs}>:*`]);
    assert.doesNotMatch(JSON.stringify(json), /route53:/, 'no Route 53 permission while dns-01 is off');
  });

  test('the execution role reads only the database secret and the listener certificate secret', () => {
    const executionRoleId = logicalIdOf(json, 'AWS::IAM::Role', 'TaskExecutionRole');
    const secretReads = statementsOfRole(json, executionRoleId).filter((statement) => asList(statement.Action).some((action) => String(action).startsWith('secretsmanager:')));
    const secretResources = secretReads.flatMap((statement) => asList(statement.Resource));
    // The attachment's Ref is the generated database secret's ARN.
    const databaseSecret = logicalIdOf(json, 'AWS::SecretsManager::SecretTargetAttachment', 'DatabaseSecretAttachment');
    assert.deepEqual(secretResources.sort(), [
      'arn:<AWS::Partition>:secretsmanager:<AWS::Region>:<AWS::AccountId>:secret:certplane/production-listener-tls-??????',
      `<${databaseSecret}>`,
    ].sort());
  });

  test('the plane is configured for aws-sm, its database over verified TLS, http-01, and gets its secrets from ECS, not its environment', () => {
    const [, taskDefinition] = resources(json, 'AWS::ECS::TaskDefinition')[0]!;
    const container = taskDefinition.Properties.ContainerDefinitions[0] as Json;
    const environment = Object.fromEntries((container.Environment as Json[]).map((variable) => [variable.Name, flatten(variable.Value)]));
    assert.equal(environment.CERTPLANE_SECRETS, 'aws-sm:certplane/production');
    assert.equal(environment.CERTPLANE_CHALLENGE, 'http-01');
    assert.equal(environment.CERTPLANE_DNS_PROVIDER, undefined);
    assert.match(String(JSON.stringify(container.Environment)), /sslmode=verify-full/);
    assert.doesNotMatch(JSON.stringify(container.Environment), /PASSWORD|PRIVATE KEY/);
    assert.deepEqual((container.Secrets as Json[]).map((secret) => secret.Name).sort(), ['CERTPLANE_TLS_CERT_PEM', 'CERTPLANE_TLS_KEY_PEM', 'PGPASSWORD', 'PGUSER']);
    assert.deepEqual(container.Command, ['serve']);
    assert.equal(container.LogConfiguration.LogDriver, 'awslogs');
    assert.equal(container.ReadonlyRootFilesystem, false, 'ECS Exec needs a writable root file system for its agent');
  });

  test('at least two Fargate tasks across two availability zones, ECS Exec on, no public IP', () => {
    template.hasResourceProperties('AWS::ECS::Service', {
      LaunchType: 'FARGATE',
      DesiredCount: 2,
      EnableExecuteCommand: true,
      NetworkConfiguration: { AwsvpcConfiguration: { AssignPublicIp: 'DISABLED' } },
      DeploymentConfiguration: { MinimumHealthyPercent: 100, DeploymentCircuitBreaker: { Enable: true, Rollback: true } },
    });
    const [, service] = resources(json, 'AWS::ECS::Service')[0]!;
    assert.equal(service.Properties.NetworkConfiguration.AwsvpcConfiguration.Subnets.length, 2);
  });

  test('alarms on target health, failing certificates and disconnecting agents, from the plane\'s logs', () => {
    const patterns = resources(json, 'AWS::Logs::MetricFilter').map(([, filter]) => filter.Properties.FilterPattern).sort();
    assert.deepEqual(patterns, [
      '{ $.msg = "agent disconnected" || $.msg = "agent missed its heartbeat, terminating the connection" }',
      '{ $.msg = "certificate failed" }',
      '{ $.msg = "job failed for good after too many attempts" }',
    ]);
    const alarms = resources(json, 'AWS::CloudWatch::Alarm').map(([, alarm]) => alarm.Properties);
    assert.ok(alarms.some((alarm) => alarm.MetricName === 'UnHealthyHostCount' && alarm.Threshold === 0));
    assert.ok(alarms.some((alarm) => alarm.MetricName === 'HealthyHostCount' && alarm.Threshold === 2 && alarm.ComparisonOperator === 'LessThanThreshold'));
    assert.ok(alarms.some((alarm) => alarm.MetricName === 'AgentDisconnections' && alarm.Threshold === 20));
    assert.ok(alarms.some((alarm) => JSON.stringify(alarm.Metrics ?? []).includes('CertificatesFailed')));
    for (const alarm of alarms) assert.equal(alarm.AlarmActions.length, 1, 'every alarm notifies the topic');
    template.hasResourceProperties('AWS::SNS::Topic', { KmsMasterKeyId: {} });
  });
});

describe('dns-01 through Route 53', () => {
  const { json } = synth({ 'certplane:imageUri': 'registry.example/certplane:1', 'certplane:route53HostedZoneId': 'Z0123456789ABCDEFGHIJ', 'certplane:ecsExec': false });
  const taskRoleId = logicalIdOf(json, 'AWS::IAM::Role', 'TaskRole');

  test('Route 53 permissions name the configured hosted zone, TXT _acme-challenge records only, and GetChange', () => {
    const route53 = statementsOfRole(json, taskRoleId).filter((statement) => asList(statement.Action).some((action) => String(action).startsWith('route53:')));
    assert.deepEqual(
      route53.map((statement) => ({ Action: statement.Action, Resource: statement.Resource, Condition: statement.Condition })),
      [
        {
          Action: 'route53:ChangeResourceRecordSets',
          Resource: 'arn:<AWS::Partition>:route53:::hostedzone/Z0123456789ABCDEFGHIJ',
          Condition: {
            'ForAllValues:StringEquals': { 'route53:ChangeResourceRecordSetsRecordTypes': ['TXT'] },
            'ForAllValues:StringLike': { 'route53:ChangeResourceRecordSetsNormalizedRecordNames': ['_acme-challenge.*'] },
          },
        },
        { Action: 'route53:ListResourceRecordSets', Resource: 'arn:<AWS::Partition>:route53:::hostedzone/Z0123456789ABCDEFGHIJ', Condition: undefined },
        { Action: 'route53:GetChange', Resource: 'arn:<AWS::Partition>:route53:::change/*', Condition: undefined },
      ],
    );
    assert.doesNotMatch(JSON.stringify(json), /ListHostedZones/, 'a configured zone id needs no zone lookup');
  });

  test('the plane is configured for dns-01 in that zone, and without ECS Exec its root file system is read-only', () => {
    const [, taskDefinition] = resources(json, 'AWS::ECS::TaskDefinition')[0]!;
    const container = taskDefinition.Properties.ContainerDefinitions[0] as Json;
    const environment = Object.fromEntries((container.Environment as Json[]).map((variable) => [variable.Name, variable.Value]));
    assert.equal(environment.CERTPLANE_CHALLENGE, 'dns-01');
    assert.equal(environment.CERTPLANE_DNS_PROVIDER, 'route53');
    assert.equal(environment.CERTPLANE_ROUTE53_HOSTED_ZONE_ID, 'Z0123456789ABCDEFGHIJ');
    assert.equal(container.ReadonlyRootFilesystem, true);
    assert.doesNotMatch(JSON.stringify(json), /ssmmessages:/);
    assert.deepEqual([...new Set(statementsOfRole(json, taskRoleId).flatMap((statement) => asList(statement.Action)))].sort(), [
      'route53:ChangeResourceRecordSets',
      'route53:GetChange',
      'route53:ListResourceRecordSets',
      ...SECRETS_ACTIONS,
    ].sort());
  });
});

describe('the image from the repository Dockerfile, and the guard rails', () => {
  test('without certplane:imageUri the image is built from the repository root\'s Dockerfile', () => {
    const { built } = synth({ 'certplane:allowedCidrs': '198.51.100.0/24' });
    const manifest = JSON.parse(readFileSync(path.join(built.app.outdir, `${built.stack.stackName}.assets.json`), 'utf8')) as Json;
    const images = Object.values(manifest.dockerImages as Json) as Json[];
    assert.equal(images.length, 1);
    assert.equal(images[0]!.source.dockerFile, 'Dockerfile');
    // The staged build context is what .dockerignore lets through: sources and lock file, no installed or built trees.
    const context = path.join(built.app.outdir, images[0]!.source.directory as string);
    for (const needed of ['Dockerfile', 'package.json', 'package-lock.json', 'tsconfig.json', 'src/cli/main.ts', 'infra/docker/entrypoint.sh', 'infra/docker/healthcheck.mjs']) {
      assert.ok(existsSync(path.join(context, needed)), `${needed} is in the image's build context`);
    }
    for (const left of ['node_modules', 'dist', 'test', 'infra/node_modules', 'infra/dist']) {
      assert.ok(!existsSync(path.join(context, left)), `${left} is not in the image's build context`);
    }
  });

  test('cdk-nag is wired in: an unencrypted queue added to the stack fails the synthesis', () => {
    const built = createApp({ outdir: mkdtempSync(path.join(tmpdir(), 'certplane-cdk-')), cloudFormationValidation: false, context: { 'certplane:imageUri': 'registry.example/certplane:1' } });
    outdirs.push(built.app.outdir);
    new sqs.Queue(built.stack, 'Unchecked', { encryption: sqs.QueueEncryption.UNENCRYPTED });
    assert.throws(() => built.app.synth(), /Validation failed/);
    const violations = violationsIn(built.app.outdir);
    assert.ok(violations.some((violation) => violation.startsWith('AwsSolutions-SQS3')), violations.join('\n'));
    assert.deepEqual(violations.filter((violation) => !violation.includes('/Unchecked/')), [], 'nothing but the queue is reported');
  });

  test('context values that would widen IAM or break the plane are refused before synthesis', () => {
    assert.throws(() => createApp({ context: { 'certplane:secretsPrefix': 'certplane/*' } }), /certplane:secretsPrefix/);
    assert.throws(() => createApp({ context: { 'certplane:route53HostedZoneId': '*' } }), /certplane:route53HostedZoneId/);
    assert.throws(() => createApp({ context: { 'certplane:desiredCount': 1 } }), /certplane:desiredCount: 1 must be an integer from 2/);
    assert.throws(() => createApp({ context: { 'certplane:listenerTlsSecretName': 'certplane/production/tls' } }), /certplane's own namespace/);
  });
});
