/** The stack a start-up pushes onto: closed last-started first, every step even when one fails, and only once. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { hasCode } from '../src/errors.js';
import { StartedResources } from '../src/started-resources.js';
import { ErrorCode } from '../src/error-catalogue.js';

test('closes in reverse order of start, runs every close even when one fails, then reports the failures', async () => {
  const closed: string[] = [];
  const started = new StartedResources();
  started.add('store', () => void closed.push('store'));
  started.add('listener', async () => {
    closed.push('listener');
    throw new Error('EBUSY');
  });
  started.add('admin socket', async () => void closed.push('admin socket'));
  await assert.rejects(started.closeAll(), (error) => hasCode(error, ErrorCode.SHUTDOWN_INCOMPLETE) && error.message.includes('listener (EBUSY)'));
  assert.deepEqual(closed, ['admin socket', 'listener', 'store']);
  await started.closeAll();
  assert.deepEqual(closed, ['admin socket', 'listener', 'store'], 'a second call closes nothing again');
});
