#!/usr/bin/env node
/**
 * The CDK app: `npx cdk synth` / `npx cdk deploy` in infra/. Parameters are CDK context
 * keys certplane:* (lib/settings.ts, docs/deploy.md); cdk-nag's AwsSolutions pack checks
 * the result on every synth, so a finding fails the synth instead of reaching an account.
 */
import { createApp } from '../lib/app.js';

createApp().app.synth();
