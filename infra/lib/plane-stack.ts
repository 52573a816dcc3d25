/**
 * The management plane on AWS: stateless tasks on ECS Fargate in two or more availability
 * zones, PostgreSQL on RDS (Multi-AZ, encrypted), secrets in Secrets Manager under one
 * prefix, and a Network Load Balancer that passes TCP through, because the plane
 * terminates mutual TLS itself and an HTTP load balancer would strip the client
 * certificates agents and on-call engineers authenticate with.
 *
 * Fargate rather than an Auto Scaling group: no hosts to patch or harden, ECS Exec gives
 * the admin console without SSH or an open port, and rolling deployments with a circuit
 * breaker come with the service.
 */
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ArnFormat, CfnOutput, Duration, RemovalPolicy, Stack, Validations, type StackProps } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as cloudwatchActions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as elbv2 from 'aws-cdk-lib/aws-elasticloadbalancingv2';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as rds from 'aws-cdk-lib/aws-rds';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as snsSubscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import type { Construct } from 'constructs';
import type { PlaneSettings } from './settings.js';

/** The repository root, whose Dockerfile builds the plane's image. */
export const REPOSITORY_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const CONTAINER_NAME = 'plane';
/** Written by the image's entrypoint from the listener secret; also holds the admin socket. */
const RUN_DIR = '/run/certplane';
const DATABASE_NAME = 'certplane';
const DATABASE_PORT = 5432;

export interface PlaneStackProps extends StackProps {
  readonly settings: PlaneSettings;
}

export class PlaneStack extends Stack {
  readonly taskRole: iam.Role;
  readonly loadBalancer: elbv2.NetworkLoadBalancer;

  constructor(scope: Construct, id: string, props: PlaneStackProps) {
    super(scope, id, props);
    const { settings } = props;

    const vpc = new ec2.Vpc(this, 'Vpc', {
      maxAzs: settings.maxAzs,
      natGateways: settings.natGateways,
      subnetConfiguration: [
        { name: 'public', subnetType: ec2.SubnetType.PUBLIC, cidrMask: 24 },
        { name: 'plane', subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS, cidrMask: 24 },
        { name: 'database', subnetType: ec2.SubnetType.PRIVATE_ISOLATED, cidrMask: 24 },
      ],
      flowLogs: { rejected: { trafficType: ec2.FlowLogTrafficType.REJECT } },
    });

    // Three groups, no "allow all outbound": each hop names the next one.
    const loadBalancerGroup = new ec2.SecurityGroup(this, 'LoadBalancerSecurityGroup', { vpc, allowAllOutbound: false, description: 'certplane NLB: the TCP listener only' });
    const planeGroup = new ec2.SecurityGroup(this, 'PlaneSecurityGroup', { vpc, allowAllOutbound: false, description: 'certplane tasks: from the NLB; to the database and HTTPS' });
    const databaseGroup = new ec2.SecurityGroup(this, 'DatabaseSecurityGroup', { vpc, allowAllOutbound: false, description: 'certplane PostgreSQL: from the plane only' });
    for (const cidr of settings.allowedCidrs) {
      loadBalancerGroup.addIngressRule(ec2.Peer.ipv4(cidr), ec2.Port.tcp(settings.listenerPort), 'agents and on-call engineers (mutual TLS in the plane)');
    }
    loadBalancerGroup.addEgressRule(planeGroup, ec2.Port.tcp(settings.containerPort), 'to the plane, and its /readyz health check');
    planeGroup.addIngressRule(loadBalancerGroup, ec2.Port.tcp(settings.containerPort), 'from the NLB only');
    planeGroup.addEgressRule(databaseGroup, ec2.Port.tcp(DATABASE_PORT), 'to PostgreSQL');
    planeGroup.addEgressRule(ec2.Peer.anyIpv4(), ec2.Port.tcp(443), 'ACME CA, Secrets Manager, Route 53, ECR, CloudWatch, SSM (ECS Exec)');
    databaseGroup.addIngressRule(planeGroup, ec2.Port.tcp(DATABASE_PORT), 'from the plane only');

    // The database's log group is made here, with its retention, rather than by RDS (unlimited) or a retention Lambda.
    const databaseIdentifier = `${this.stackName}-database`.toLowerCase();
    const databaseLogs = new logs.LogGroup(this, 'DatabaseLogs', { logGroupName: `/aws/rds/instance/${databaseIdentifier}/postgresql`, retention: settings.logRetentionDays as logs.RetentionDays, removalPolicy: RemovalPolicy.RETAIN });
    const database = new rds.DatabaseInstance(this, 'Database', {
      instanceIdentifier: databaseIdentifier,
      engine: rds.DatabaseInstanceEngine.postgres({ version: rds.PostgresEngineVersion.VER_17 }),
      instanceType: new ec2.InstanceType(settings.databaseInstanceType),
      vpc,
      vpcSubnets: { subnetType: ec2.SubnetType.PRIVATE_ISOLATED },
      securityGroups: [databaseGroup],
      port: DATABASE_PORT,
      multiAz: true,
      storageEncrypted: true,
      allocatedStorage: settings.databaseAllocatedStorageGiB,
      databaseName: DATABASE_NAME,
      // Outside the plane's prefix: the plane receives it from ECS at start, it never reads it through the SDK.
      credentials: rds.Credentials.fromGeneratedSecret('certplane', { secretName: `${settings.secretsPrefix}-database` }),
      backupRetention: Duration.days(settings.databaseBackupRetentionDays),
      deletionProtection: settings.deletionProtection,
      removalPolicy: settings.deletionProtection ? RemovalPolicy.SNAPSHOT : RemovalPolicy.DESTROY,
      cloudwatchLogsExports: ['postgresql'],
      autoMinorVersionUpgrade: true,
      publiclyAccessible: false,
      parameterGroup: new rds.ParameterGroup(this, 'DatabaseParameters', {
        engine: rds.DatabaseInstanceEngine.postgres({ version: rds.PostgresEngineVersion.VER_17 }),
        parameters: { 'rds.force_ssl': '1' },
      }),
    });

    database.node.addDependency(databaseLogs);

    const listenerTls = secretsmanager.Secret.fromSecretNameV2(this, 'ListenerTls', settings.listenerTlsSecretName);

    const logGroup = new logs.LogGroup(this, 'PlaneLogs', { retention: settings.logRetentionDays as logs.RetentionDays, removalPolicy: RemovalPolicy.RETAIN });

    // Admin console sessions (ECS Exec) are recorded in their own log group: who ran which command is audit material.
    const adminSessionLogs = new logs.LogGroup(this, 'AdminSessionLogs', { retention: settings.logRetentionDays as logs.RetentionDays, removalPolicy: RemovalPolicy.RETAIN });
    const cluster = new ecs.Cluster(this, 'Cluster', {
      vpc,
      containerInsightsV2: ecs.ContainerInsights.ENABLED,
      executeCommandConfiguration: { logging: ecs.ExecuteCommandLogging.OVERRIDE, logConfiguration: { cloudWatchLogGroup: adminSessionLogs } },
    });

    this.taskRole = new iam.Role(this, 'TaskRole', { assumedBy: new iam.ServicePrincipal('ecs-tasks.amazonaws.com'), description: 'certplane plane: its Secrets Manager prefix, and its Route 53 zone when dns-01 is on' });
    this.taskRole.addToPolicy(planeSecretsStatement(this, settings.secretsPrefix));
    if (settings.route53HostedZoneId) {
      for (const statement of route53Statements(this, settings.route53HostedZoneId)) this.taskRole.addToPolicy(statement);
    }

    const taskDefinition = new ecs.FargateTaskDefinition(this, 'Task', {
      cpu: settings.cpu,
      memoryLimitMiB: settings.memoryMiB,
      taskRole: this.taskRole,
      runtimePlatform: { operatingSystemFamily: ecs.OperatingSystemFamily.LINUX, cpuArchitecture: ecs.CpuArchitecture.X86_64 },
      volumes: [{ name: 'run' }],
    });
    const image = settings.imageUri
      ? ecs.ContainerImage.fromRegistry(settings.imageUri)
      : ecs.ContainerImage.fromAsset(REPOSITORY_ROOT, { file: 'Dockerfile' });
    const container = taskDefinition.addContainer(CONTAINER_NAME, {
      image,
      command: ['serve'],
      logging: ecs.LogDrivers.awsLogs({ logGroup, streamPrefix: 'plane' }),
      readonlyRootFilesystem: !settings.ecsExec,
      portMappings: [{ containerPort: settings.containerPort, protocol: ecs.Protocol.TCP }],
      environment: planeEnvironment(settings, database),
      secrets: {
        PGUSER: ecs.Secret.fromSecretsManager(database.secret!, 'username'),
        PGPASSWORD: ecs.Secret.fromSecretsManager(database.secret!, 'password'),
        CERTPLANE_TLS_CERT_PEM: ecs.Secret.fromSecretsManager(listenerTls, 'certificate'),
        CERTPLANE_TLS_KEY_PEM: ecs.Secret.fromSecretsManager(listenerTls, 'privateKey'),
      },
      healthCheck: {
        command: ['CMD', 'node', '/app/healthcheck.mjs'],
        interval: Duration.seconds(15),
        timeout: Duration.seconds(5),
        retries: 3,
        startPeriod: Duration.seconds(30),
      },
    });
    container.addMountPoints({ sourceVolume: 'run', containerPath: RUN_DIR, readOnly: false });

    const service = new ecs.FargateService(this, 'Service', {
      cluster,
      taskDefinition,
      desiredCount: settings.desiredCount,
      minHealthyPercent: 100,
      maxHealthyPercent: 200,
      vpcSubnets: { subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS },
      securityGroups: [planeGroup],
      assignPublicIp: false,
      enableExecuteCommand: settings.ecsExec,
      circuitBreaker: { rollback: true },
      availabilityZoneRebalancing: ecs.AvailabilityZoneRebalancing.ENABLED,
    });

    this.loadBalancer = new elbv2.NetworkLoadBalancer(this, 'LoadBalancer', {
      vpc,
      internetFacing: settings.internetFacing,
      vpcSubnets: { subnetType: settings.internetFacing ? ec2.SubnetType.PUBLIC : ec2.SubnetType.PRIVATE_WITH_EGRESS },
      securityGroups: [loadBalancerGroup],
      crossZoneEnabled: true,
    });
    const listener = this.loadBalancer.addListener('Tcp', { port: settings.listenerPort, protocol: elbv2.Protocol.TCP });
    const targetGroup = listener.addTargets('Plane', {
      port: settings.containerPort,
      protocol: elbv2.Protocol.TCP,
      targets: [service.loadBalancerTarget({ containerName: CONTAINER_NAME, containerPort: settings.containerPort })],
      deregistrationDelay: Duration.seconds(30),
      // /readyz answers without a client certificate and says whether the database is reachable.
      healthCheck: { protocol: elbv2.Protocol.HTTPS, path: '/readyz', port: String(settings.containerPort), interval: Duration.seconds(10), healthyThresholdCount: 2, unhealthyThresholdCount: 2 },
    });

    this.#alarms(settings, { targetGroup, logGroup, database, service });

    new CfnOutput(this, 'LoadBalancerDnsName', { value: this.loadBalancer.loadBalancerDnsName, description: 'Point the public DNS name (certplane:publicUrl) at this' });
    new CfnOutput(this, 'ClusterName', { value: cluster.clusterName, description: 'For aws ecs execute-command (the admin console)' });
    new CfnOutput(this, 'ServiceName', { value: service.serviceName });
    new CfnOutput(this, 'DatabaseSecretArn', { value: database.secret!.secretArn });

    this.#suppressions(settings, { loadBalancerGroup, taskDefinition, adminSessionLogs });
  }

  /** Health of the targets from the NLB's view, and what the plane's own logs say about certificates and agents. */
  #alarms(settings: PlaneSettings, parts: { targetGroup: elbv2.NetworkTargetGroup; logGroup: logs.LogGroup; database: rds.DatabaseInstance; service: ecs.FargateService }): void {
    // CloudWatch alarms may publish to an encrypted topic only with a customer-managed key it is allowed to use.
    const topicKey = new kms.Key(this, 'AlarmTopicKey', { enableKeyRotation: true, description: 'certplane alarm topic', removalPolicy: RemovalPolicy.DESTROY });
    topicKey.grant(new iam.ServicePrincipal('cloudwatch.amazonaws.com'), 'kms:Decrypt', 'kms:GenerateDataKey*');
    const topic = new sns.Topic(this, 'Alarms', { masterKey: topicKey, enforceSSL: true, displayName: 'certplane alarms' });
    if (settings.alarmEmail) topic.addSubscription(new snsSubscriptions.EmailSubscription(settings.alarmEmail));
    const action = new cloudwatchActions.SnsAction(topic);

    const fromLogs = (id: string, pattern: string, metricName: string): cloudwatch.Metric => {
      new logs.MetricFilter(this, id, { logGroup: parts.logGroup, filterPattern: logs.FilterPattern.literal(pattern), metricNamespace: 'certplane', metricName, metricValue: '1', defaultValue: 0 });
      return new cloudwatch.Metric({ namespace: 'certplane', metricName, statistic: 'Sum', period: Duration.minutes(5) });
    };

    const alarms: cloudwatch.Alarm[] = [
      new cloudwatch.Alarm(this, 'TargetsUnhealthy', {
        alarmDescription: 'A plane task fails its /readyz health check on the NLB (database unreachable, or the task is down).',
        metric: parts.targetGroup.metrics.unHealthyHostCount({ period: Duration.minutes(1), statistic: 'Maximum' }),
        threshold: 0,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluationPeriods: 3,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      }),
      new cloudwatch.Alarm(this, 'TargetsBelowDesired', {
        alarmDescription: `Fewer than ${settings.desiredCount} healthy plane tasks behind the NLB: the plane has lost its redundancy.`,
        metric: parts.targetGroup.metrics.healthyHostCount({ period: Duration.minutes(1), statistic: 'Minimum' }),
        threshold: settings.desiredCount,
        comparisonOperator: cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
        evaluationPeriods: 5,
        treatMissingData: cloudwatch.TreatMissingData.BREACHING,
      }),
      new cloudwatch.Alarm(this, 'CertificatesFailing', {
        alarmDescription: 'The plane gave up on a certificate ("certificate failed" or "job failed for good" in its logs); see `certplane admin` and the audit trail.',
        metric: new cloudwatch.MathExpression({
          expression: 'failed + givenUp',
          usingMetrics: {
            failed: fromLogs('CertificateFailedFilter', '{ $.msg = "certificate failed" }', 'CertificatesFailed'),
            givenUp: fromLogs('JobGivenUpFilter', '{ $.msg = "job failed for good after too many attempts" }', 'JobsGivenUp'),
          },
          period: Duration.minutes(5),
        }),
        threshold: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        evaluationPeriods: 1,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      }),
      new cloudwatch.Alarm(this, 'AgentsDisconnecting', {
        alarmDescription: `${settings.agentDisconnectAlarmThreshold} or more agent disconnections within 5 minutes: a network change, an expired listener certificate or a bad release is cutting agents off.`,
        metric: fromLogs('AgentDisconnectedFilter', '{ $.msg = "agent disconnected" || $.msg = "agent missed its heartbeat, terminating the connection" }', 'AgentDisconnections'),
        threshold: settings.agentDisconnectAlarmThreshold,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        evaluationPeriods: 1,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      }),
      new cloudwatch.Alarm(this, 'DatabaseCpuHigh', {
        alarmDescription: 'The database is CPU-bound.',
        metric: parts.database.metricCPUUtilization({ period: Duration.minutes(5) }),
        threshold: 80,
        evaluationPeriods: 3,
      }),
      new cloudwatch.Alarm(this, 'DatabaseStorageLow', {
        alarmDescription: 'Less than 2 GiB of database storage left.',
        metric: parts.database.metricFreeStorageSpace({ period: Duration.minutes(5) }),
        threshold: 2 * 1024 ** 3,
        comparisonOperator: cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
        evaluationPeriods: 1,
      }),
      new cloudwatch.Alarm(this, 'PlaneMemoryHigh', {
        alarmDescription: 'Plane tasks use more than 85% of their memory.',
        metric: parts.service.metricMemoryUtilization({ period: Duration.minutes(5) }),
        threshold: 85,
        evaluationPeriods: 3,
      }),
    ];
    for (const alarm of alarms) alarm.addAlarmAction(action);
  }

  /** Every finding of cdk-nag's AwsSolutions pack this design accepts, each with its reason. */
  #suppressions(settings: PlaneSettings, parts: { loadBalancerGroup: ec2.SecurityGroup; taskDefinition: ecs.FargateTaskDefinition; adminSessionLogs: logs.LogGroup }): void {
    const acknowledge = (scope: Construct, id: string, reason: string): void => Validations.of(scope).acknowledge({ id, reason });
    acknowledge(this, 'AwsSolutions-ECS2', 'The environment holds non-secret configuration only (URLs, prefix, ports); secrets come through the container definition\'s secrets from Secrets Manager.');
    acknowledge(this, 'AwsSolutions-RDS6', 'The plane authenticates with a generated password injected by ECS from Secrets Manager; IAM database authentication would need token refresh inside the pg pool, which certplane does not do.');
    acknowledge(this, 'AwsSolutions-RDS11', 'The default port is kept on purpose: only the plane\'s security group reaches the database, and a non-standard port adds no protection.');
    acknowledge(this, 'AwsSolutions-SMG4', 'The database password is read by the tasks at start; rotating it needs a rolling restart of the service (docs/deploy.md), so automatic rotation is off rather than breaking running tasks.');
    acknowledge(this, 'AwsSolutions-ELB2', 'NLB access logs exist only for TLS listeners; this listener is TCP passthrough because the plane terminates mutual TLS itself, and the plane logs every request to CloudWatch Logs.');
    if (settings.allowedCidrs.includes('0.0.0.0/0')) {
      acknowledge(parts.loadBalancerGroup, 'AwsSolutions-EC23', 'Agents on customer instances connect from anywhere; the listener requires a client certificate issued by the agent CA (mutual TLS in the plane). Narrow it with certplane:allowedCidrs.');
    }
    // cdk-nag names a resource by its template form, where the ARN's tokens read <AWS::Partition> and so on.
    acknowledge(this.taskRole, `AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:secretsmanager:<AWS::Region>:<AWS::AccountId>:secret:${settings.secretsPrefix}/*]`, 'certplane creates and reads secrets named PREFIX/NAME (src/secrets/aws.ts); the wildcard is that namespace and nothing else.');
    if (settings.route53HostedZoneId) {
      acknowledge(this.taskRole, 'AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:route53:::change/*]', 'route53:GetChange takes a change id known only after ChangeResourceRecordSets; change ids are not tied to a zone.');
    }
    if (settings.ecsExec) {
      const sessionLogsId = this.resolve(this.getLogicalId(parts.adminSessionLogs.node.defaultChild as logs.CfnLogGroup)) as string;
      acknowledge(this.taskRole, `AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:<${sessionLogsId}>:*]`, 'ECS Exec writes each admin console session to its own log stream in the AdminSessionLogs group; the wildcard is the streams of that one group.');
      acknowledge(this.taskRole, 'AwsSolutions-IAM5[Resource::*]', 'ECS Exec (the admin console) needs the ssmmessages channel actions and logs:DescribeLogGroups, which CDK grants on *; the session log writes are scoped to the AdminSessionLogs group.');
    }
    acknowledge(parts.taskDefinition, 'AwsSolutions-IAM5[Resource::*]', 'ecr:GetAuthorizationToken has no resource-level permissions; CDK scopes the rest of the execution role to the image repository, the log group and the two injected secrets.');
  }
}

/** The only Secrets Manager rights of the plane: the three calls of src/secrets/aws.ts on PREFIX/*. */
export function planeSecretsStatement(stack: Stack, prefix: string): iam.PolicyStatement {
  return new iam.PolicyStatement({
    sid: 'CertplaneSecrets',
    actions: ['secretsmanager:GetSecretValue', 'secretsmanager:CreateSecret', 'secretsmanager:PutSecretValue'],
    resources: [stack.formatArn({ service: 'secretsmanager', resource: 'secret', resourceName: `${prefix}/*`, arnFormat: ArnFormat.COLON_RESOURCE_NAME })],
  });
}

/**
 * What src/acme/dns/route53.ts calls when the hosted zone is configured: reading and
 * changing TXT records named _acme-challenge.* in that zone, and waiting for the change.
 * ListHostedZonesByName is not granted because a configured zone id skips the lookup.
 */
export function route53Statements(stack: Stack, hostedZoneId: string): iam.PolicyStatement[] {
  const zoneArn = `arn:${stack.partition}:route53:::hostedzone/${hostedZoneId}`;
  return [
    new iam.PolicyStatement({
      sid: 'CertplaneDns01Change',
      actions: ['route53:ChangeResourceRecordSets'],
      resources: [zoneArn],
      conditions: {
        'ForAllValues:StringEquals': { 'route53:ChangeResourceRecordSetsRecordTypes': ['TXT'] },
        'ForAllValues:StringLike': { 'route53:ChangeResourceRecordSetsNormalizedRecordNames': ['_acme-challenge.*'] },
      },
    }),
    new iam.PolicyStatement({ sid: 'CertplaneDns01Read', actions: ['route53:ListResourceRecordSets'], resources: [zoneArn] }),
    new iam.PolicyStatement({ sid: 'CertplaneDns01Wait', actions: ['route53:GetChange'], resources: [`arn:${stack.partition}:route53:::change/*`] }),
  ];
}

/** certplane's configuration (README, src/config/config.ts) for this deployment; no secret in here. */
function planeEnvironment(settings: PlaneSettings, database: rds.DatabaseInstance): Record<string, string> {
  return {
    CERTPLANE_SECRETS: `aws-sm:${settings.secretsPrefix}`,
    // User and password come from PGUSER/PGPASSWORD (ECS secrets), which node-postgres reads when the URL has none.
    CERTPLANE_DATABASE_URL: `postgres://${database.dbInstanceEndpointAddress}:${database.dbInstanceEndpointPort}/${DATABASE_NAME}?sslmode=verify-full`,
    CERTPLANE_LISTEN: `0.0.0.0:${settings.containerPort}`,
    CERTPLANE_TLS_CERT: `${RUN_DIR}/tls.crt`,
    CERTPLANE_TLS_KEY: `${RUN_DIR}/tls.key`,
    CERTPLANE_ADMIN_SOCKET: `${RUN_DIR}/admin.sock`,
    ...(settings.publicUrl ? { CERTPLANE_PUBLIC_URL: settings.publicUrl } : {}),
    ...(settings.acmeDirectory ? { CERTPLANE_ACME_DIRECTORY: settings.acmeDirectory } : {}),
    ...(settings.acmeEmail ? { CERTPLANE_ACME_EMAIL: settings.acmeEmail } : {}),
    ...(settings.route53HostedZoneId
      ? { CERTPLANE_CHALLENGE: 'dns-01', CERTPLANE_DNS_PROVIDER: 'route53', CERTPLANE_ROUTE53_HOSTED_ZONE_ID: settings.route53HostedZoneId }
      : { CERTPLANE_CHALLENGE: 'http-01' }),
  };
}
