/**
 * openapi.yaml is generated from the route schemas, never written by hand: the same zod
 * objects that validate requests describe them. `npm run openapi` rewrites the file and
 * a test fails when the committed copy is stale.
 */
import pino from 'pino';
import { Registry } from 'prom-client';
import type { AgentCa } from '../fleet/ca.js';
import type { Store } from '../store/types.js';
import { buildApi } from './app.js';

/** Only the route table is needed to describe the API, so no dependency is ever called here. */
const unused = <T>(name: string): T =>
  new Proxy({}, {
    get: () => {
      throw new Error(`${name} is not available while rendering the OpenAPI document`);
    },
  }) as T;

/** The OpenAPI 3.1 document of the management plane, as YAML. */
export async function renderOpenApi(): Promise<string> {
  const app = await buildApi({
    store: unused<Store>('store'),
    coordinator: unused('coordinator'),
    revocations: unused('revocations'),
    campaigns: unused('campaigns'),
    cursors: unused('cursors'),
    sessions: unused('sessions'),
    ca: unused<AgentCa>('agent CA'),
    trust: unused('trust'),
    trustEvaluation: unused('trust evaluation'),
    metrics: new Registry(),
    logger: pino({ level: 'silent' }),
    clock: () => new Date(0),
    enrollmentTtlMs: 0,
  });
  await app.ready();
  const yaml = app.swagger({ yaml: true });
  await app.close();
  return yaml;
}
