/**
 * The plane's image, checked without a Docker engine (none runs here): the Dockerfile's
 * structure, that everything it copies exists and passes .dockerignore, and the
 * entrypoint and health check scripts run for real with a stand-in `node` and server.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { REPOSITORY_ROOT } from '../lib/plane-stack.js';

const run = promisify(execFile);
const scratch: string[] = [];
after(() => scratch.forEach((dir) => rmSync(dir, { recursive: true, force: true })));

interface Instruction {
  readonly keyword: string;
  readonly args: string;
  readonly stage: number;
}

/** Instructions in order, continuation lines joined and comments dropped, each with the index of its stage. */
function parseDockerfile(text: string): Instruction[] {
  const logical = text.replace(/\\\n/g, ' ').split('\n').map((line) => line.trim()).filter((line) => line !== '' && !line.startsWith('#'));
  let stage = -1;
  return logical.map((line) => {
    const [keyword, ...rest] = line.split(/\s+/);
    if (keyword!.toUpperCase() === 'FROM') stage += 1;
    return { keyword: keyword!.toUpperCase(), args: rest.join(' '), stage };
  });
}

const dockerfile = parseDockerfile(readFileSync(path.join(REPOSITORY_ROOT, 'Dockerfile'), 'utf8'));
const dockerignore = readFileSync(path.join(REPOSITORY_ROOT, '.dockerignore'), 'utf8').split('\n').map((line) => line.trim()).filter((line) => line !== '' && !line.startsWith('#'));
const lastStage = Math.max(...dockerfile.map((instruction) => instruction.stage));
const runtime = dockerfile.filter((instruction) => instruction.stage === lastStage);
const only = (keyword: string): Instruction => {
  const found = runtime.filter((instruction) => instruction.keyword === keyword);
  assert.equal(found.length, 1, `one ${keyword} in the runtime stage`);
  return found[0]!;
};

describe('the Dockerfile', () => {
  test('is multi-stage: compiled in a build stage, the runtime stage gets the pruned production tree and the compiled sources only', () => {
    const froms = dockerfile.filter((instruction) => instruction.keyword === 'FROM');
    assert.ok(froms.length >= 2);
    assert.match(froms[0]!.args, / AS build$/);
    const build = dockerfile.filter((instruction) => instruction.stage === 0).map((instruction) => `${instruction.keyword} ${instruction.args}`);
    assert.ok(build.some((line) => /^RUN npm ci\b/.test(line)), 'npm ci from the lock file');
    assert.ok(build.some((line) => /tsc -p tsconfig\.json && npm prune --omit=dev/.test(line)), 'compiled, then pruned to production dependencies');
    const copiesFromBuild = runtime.filter((instruction) => instruction.keyword === 'COPY' && instruction.args.startsWith('--from=build')).map((instruction) => instruction.args.split(/\s+/)[1]);
    assert.deepEqual(copiesFromBuild.sort(), ['/build/dist/src', '/build/node_modules', '/build/package.json']);
    assert.ok(!runtime.some((instruction) => instruction.keyword === 'RUN' && /npm (ci|install)/.test(instruction.args)), 'no dependency install in the runtime stage');
  });

  test('every file it copies from the context exists and is not excluded by .dockerignore', () => {
    const sources = dockerfile
      .filter((instruction) => instruction.keyword === 'COPY' && !instruction.args.startsWith('--from='))
      .flatMap((instruction) => instruction.args.split(/\s+/).filter((word) => !word.startsWith('--')).slice(0, -1));
    assert.ok(sources.length >= 5);
    for (const source of sources) {
      assert.ok(existsSync(path.join(REPOSITORY_ROOT, source)), `${source} exists`);
      assert.ok(!dockerignore.some((pattern) => source === pattern || source.startsWith(`${pattern}/`)), `${source} is not in .dockerignore`);
    }
    for (const excluded of ['node_modules', 'dist', 'test', 'infra/node_modules', '.git']) assert.ok(dockerignore.includes(excluded), `.dockerignore keeps ${excluded} out`);
  });

  test('runs as a non-root user, starts `certplane serve` through the entrypoint, and has a HEALTHCHECK', () => {
    const user = only('USER').args;
    assert.match(user, /^certplane(:certplane)?$/);
    assert.ok(runtime.some((instruction) => instruction.keyword === 'RUN' && /useradd --system --uid 10001/.test(instruction.args)));
    assert.deepEqual(JSON.parse(only('ENTRYPOINT').args), ['/usr/local/bin/certplane-entrypoint']);
    assert.deepEqual(JSON.parse(only('CMD').args), ['serve']);
    assert.ok(runtime.some((instruction) => instruction.keyword === 'COPY' && instruction.args === 'infra/docker/entrypoint.sh /usr/local/bin/certplane-entrypoint'));
    const entrypoint = readFileSync(path.join(REPOSITORY_ROOT, 'infra/docker/entrypoint.sh'), 'utf8').trim().split('\n');
    assert.equal(entrypoint.at(-1), 'exec node /app/dist/src/cli/main.js "$@"');
    assert.ok(existsSync(path.join(REPOSITORY_ROOT, 'src/cli/main.ts')), 'dist/src/cli/main.js is compiled from src/cli/main.ts');
    assert.match(only('HEALTHCHECK').args, /CMD \["node", "\/app\/healthcheck\.mjs"\]$/);
    assert.match(only('ENV').args, /CERTPLANE_ADMIN_SOCKET=\/run\/certplane\/admin\.sock/);
  });
});

describe('the image\'s scripts', () => {
  test('the entrypoint writes the listener certificate and key from the environment with mode 0600 and removes them from certplane\'s environment', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'certplane-entrypoint-'));
    scratch.push(dir);
    // A stand-in for node: reports its arguments and the environment it was given.
    writeFileSync(path.join(dir, 'node'), '#!/bin/sh\necho "args: $*"\nenv | grep "^CERTPLANE_" | sort\n');
    chmodSync(path.join(dir, 'node'), 0o755);
    const key = String(generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' })).trimEnd();
    const { stdout } = await run('sh', [path.join(REPOSITORY_ROOT, 'infra/docker/entrypoint.sh'), 'serve'], {
      env: { PATH: `${dir}:/usr/bin:/bin`, CERTPLANE_TLS_CERT_PEM: 'CERT', CERTPLANE_TLS_KEY_PEM: key, CERTPLANE_TLS_CERT: path.join(dir, 'tls.crt'), CERTPLANE_TLS_KEY: path.join(dir, 'tls.key') },
    });
    assert.match(stdout, /^args: \/app\/dist\/src\/cli\/main\.js serve$/m);
    assert.doesNotMatch(stdout, /_PEM=/, 'the PEM variables are gone before certplane starts');
    assert.equal(readFileSync(path.join(dir, 'tls.key'), 'utf8'), `${key}\n`);
    assert.equal(statSync(path.join(dir, 'tls.key')).mode & 0o777, 0o600);
    assert.equal(readFileSync(path.join(dir, 'tls.crt'), 'utf8'), 'CERT\n');
  });

  test('the entrypoint refuses half a listener configuration', async () => {
    await assert.rejects(run('sh', [path.join(REPOSITORY_ROOT, 'infra/docker/entrypoint.sh'), 'serve'], { env: { PATH: '/usr/bin:/bin', CERTPLANE_TLS_KEY_PEM: 'KEY' } }), (error: Error & { code?: number; stderr?: string }) => {
      assert.equal(error.code, 64);
      assert.match(String(error.stderr), /go together/);
      return true;
    });
  });

  test('the health check passes on /readyz 200 and fails on 503', async () => {
    let status = 200;
    const server = createServer((request, response) => {
      response.statusCode = request.url === '/readyz' ? status : 404;
      response.end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const port = (server.address() as AddressInfo).port;
      const env = { ...process.env, CERTPLANE_LISTEN: `127.0.0.1:${port}`, CERTPLANE_INSECURE_HTTP: '1' };
      const check = path.join(REPOSITORY_ROOT, 'infra/docker/healthcheck.mjs');
      await run(process.execPath, [check], { env });
      status = 503;
      await assert.rejects(run(process.execPath, [check], { env }));
    } finally {
      server.close();
    }
  });
});
