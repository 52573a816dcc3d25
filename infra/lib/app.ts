/**
 * The CDK app as a function, so the command line (bin/certplane.ts) and the tests build
 * exactly the same thing: the stack plus cdk-nag's AwsSolutions pack, whose unacknowledged
 * findings make the synthesis throw.
 */
import { App, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { PlaneStack } from './plane-stack.js';
import { readSettings } from './settings.js';

export interface CertplaneApp {
  readonly app: App;
  readonly stack: PlaneStack;
}

/**
 * `context`, `outdir` and `cloudFormationValidation` are for tests; the command line passes
 * none of them and reads cdk.json and `-c`. CDK's built-in template validation costs most of
 * a synthesis' time, so tests run it on one variant only.
 */
export function createApp(options: { context?: Record<string, unknown>; outdir?: string; cloudFormationValidation?: boolean } = {}): CertplaneApp {
  const app = new App({
    ...(options.context ? { context: options.context } : {}),
    ...(options.outdir ? { outdir: options.outdir } : {}),
    ...(options.cloudFormationValidation === false ? { builtinCloudFormationValidation: false } : {}),
  });
  const stack = new PlaneStack(app, String(app.node.tryGetContext('certplane:stackName') ?? 'Certplane'), {
    settings: readSettings(app.node),
    env: { account: process.env.CDK_DEFAULT_ACCOUNT, region: process.env.CDK_DEFAULT_REGION },
  });
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app, { verbose: true }));
  return { app, stack };
}
