/**
 * A stand-in for the service on an instance (the database server), run as a process of its
 * own by end-to-end tests: an HTTPS server on loopback that serves the agent's installed
 * pair and loads it again only when told to (SIGHUP), as a server whose reload the agent's
 * --reload-command triggers. Until a pair is installed it serves a placeholder; while an
 * override chain file exists it serves that chain with the live key (a server configured
 * with the wrong intermediate).
 *
 * usage: node tls-service.js LIVE_DIR PLACEHOLDER_CERT PLACEHOLDER_KEY OVERRIDE_CHAIN PORT
 */
import { createHash, X509Certificate } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:https';
import { join } from 'node:path';

const [liveDir, placeholderCert, placeholderKey, overrideChain, port] = process.argv.slice(2) as [string, string, string, string, string];

function load(): { cert: string; key: string; source: string } {
  const live = { cert: join(liveDir, 'fullchain.pem'), key: join(liveDir, 'privkey.pem') };
  if (!existsSync(live.cert)) return { cert: readFileSync(placeholderCert, 'utf8'), key: readFileSync(placeholderKey, 'utf8'), source: 'placeholder' };
  const key = readFileSync(live.key, 'utf8');
  if (existsSync(overrideChain)) return { cert: readFileSync(overrideChain, 'utf8'), key, source: 'override' };
  return { cert: readFileSync(live.cert, 'utf8'), key, source: 'live' };
}

/** One line per (re)load, with the leaf served, for the test to wait on. */
function announce(event: string, loaded: { cert: string; source: string }): void {
  const leaf = new X509Certificate(loaded.cert);
  process.stdout.write(`${JSON.stringify({ event, source: loaded.source, fingerprintSha256: createHash('sha256').update(leaf.raw).digest('hex') })}\n`);
}

const first = load();
const server = createServer({ cert: first.cert, key: first.key }, (_request, response) => response.end('ok\n'));
process.on('SIGHUP', () => {
  const loaded = load();
  server.setSecureContext({ cert: loaded.cert, key: loaded.key });
  announce('reloaded', loaded);
});
process.on('SIGTERM', () => {
  server.close();
  server.closeAllConnections();
  process.exit(0);
});
server.listen(Number(port), '127.0.0.1', () => announce('listening', first));
