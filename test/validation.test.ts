import assert from 'node:assert/strict';
import { test } from 'node:test';
import Fastify from 'fastify';
import { serializerCompiler, validatorCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { validateAdminArgs } from '../src/admin/index.js';
import { AgentMessage, decodeMessage } from '../src/channel/protocol.js';
import { errorHandler } from '../src/api/errors.js';
import { loadConfig } from '../src/config/config.js';
import { CertplaneError } from '../src/errors.js';
import { describeIssues } from '../src/validation.js';

const schema = z.strictObject({ name: z.string().min(1), limits: z.strictObject({ capacity: z.number() }) });

test('each problem is one "where: what" line, the path dotted below the input, an unknown field named by its own path', () => {
  const parsed = schema.safeParse({ name: '', limits: { capacity: 'ten', burst: 5 } });
  assert.ok(!parsed.success);
  const lines = describeIssues(parsed.error.issues, { under: 'body', whole: 'body' });
  assert.equal(lines.length, 3);
  assert.match(lines[0]!, /^body\.name: .*>=1 characters/);
  assert.match(lines[1]!, /^body\.limits\.capacity: .*expected number/);
  assert.equal(lines[2], 'body.limits.burst: not a known field');
  assert.deepEqual(describeIssues(z.string().safeParse(3).error!.issues, { whole: 'request' }).map((line) => line.split(':')[0]), ['request']);
  assert.deepEqual(describeIssues(schema.safeParse({ name: 'x', limits: { capacity: 1 }, extra: 1 }).error!.issues, { whole: 'value', unknownField: 'not a rate limit field' }), ['extra: not a rate limit field']);
});

test('configuration, the API, the channel and the admin console all describe a refusal the same way', async () => {
  const refusal = (run: () => unknown): CertplaneError => {
    try {
      run();
    } catch (error) {
      if (error instanceof CertplaneError) return error;
      throw error;
    }
    throw new Error('not refused');
  };
  assert.match(refusal(() => loadConfig({ CERTPLANE_LISTEN: 'nowhere' })).message, /\n {2}CERTPLANE_LISTEN: must be HOST:PORT/);
  assert.match(refusal(() => decodeMessage(AgentMessage, JSON.stringify({ v: 1, type: 'http01_ready', requestId: '', extra: 1 }))).message, /^invalid message: requestId: .*; extra: not a known field$/);
  assert.match(refusal(() => validateAdminArgs('list-agents', { bogus: 1 })).message, /^list-agents: bogus: not a known field$/);

  const app = Fastify({ logger: false }).withTypeProvider<ZodTypeProvider>();
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  app.setErrorHandler(errorHandler);
  app.post('/probe', { schema: { body: schema } }, async () => ({}));
  try {
    const reply = await app.inject({ method: 'POST', url: '/probe', payload: { name: 'x', limits: { capacity: 1, burst: 2 } } });
    assert.equal(reply.statusCode, 400);
    assert.deepEqual(reply.json().details.problems, ['body.limits.burst: not a known field']);
  } finally {
    await app.close();
  }
});
