/**
 * The agent's served-chain probe against real servers on loopback: a TLS server that
 * answers per SNI, one that sends its root too, a PostgreSQL-style server that negotiates
 * TLS after an SSLRequest (and ones that refuse or cheat), and endpoints that cannot be
 * probed at all. What comes back is what the service sent, as DER, or why there was nothing.
 */
import assert from 'node:assert/strict';
import { createServer as createTcpServer, type AddressInfo, type Server as TcpServer, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { TLSSocket, createSecureContext, createServer as createTlsServer, type Server as TlsServer } from 'node:tls';
import pino from 'pino';
import { ServedProber, parseProbeTarget, probeOnce, type ProbeTarget } from '../../src/agent/probe.js';
import { MAX_PROBES_PER_REPORT } from '../../src/channel/protocol.js';
import { parseCertificateBundle } from '../../src/chain/index.js';
import { intermediate, leaf, root } from '../support/hierarchies.js';

/** PEM for OpenSSL, which wants each block on lines of its own. */
const pem = (...certs: { pem: string }[]) => certs.map((c) => `${c.pem.trim()}\n`).join('');
const fingerprints = (certificates: readonly string[]) => certificates.map((der) => parseCertificateBundle(`-----BEGIN CERTIFICATE-----\n${der}\n-----END CERTIFICATE-----\n`)[0]!.fingerprintSha256);
const listen = async <S extends TcpServer>(server: S): Promise<S & { target: (protocol?: 'tls' | 'postgres') => ProbeTarget }> => {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return Object.assign(server, { target: (protocol: 'tls' | 'postgres' = 'tls') => parseProbeTarget(`${protocol === 'postgres' ? 'postgres://' : ''}127.0.0.1:${port}`)! });
};
const close = (server: TcpServer) => new Promise<void>((resolve) => server.close(() => resolve()));

describe('the served-chain probe', async () => {
  const ca = await root('Probe Test Root');
  const issuing = await intermediate('Probe Test CA', ca);
  const db = await leaf(issuing, ['db.example.test']);
  const other = await leaf(issuing, ['other.example.test']);
  const fp = (c: { pem: string }) => parseCertificateBundle(c.pem)[0]!.fingerprintSha256;
  const servers: TcpServer[] = [];
  let tls: TlsServer & { target: (protocol?: 'tls' | 'postgres') => ProbeTarget };

  before(async () => {
    const otherContext = createSecureContext({ cert: pem(other.cert, issuing), key: other.key.privateKeyPem });
    tls = await listen(createTlsServer({ cert: pem(db.cert, issuing), key: db.key.privateKeyPem, SNICallback: (name, done) => done(null, name === 'other.example.test' ? otherContext : undefined) }, (socket) => socket.end()));
    servers.push(tls);
  });
  // Not waited for: a connection TLS took over from a plain socket (the PostgreSQL case) never tells its server it closed.
  after(() => servers.forEach((server) => server.close()));

  test('targets: HOST:PORT, [IPv6]:PORT and postgres://HOST:PORT; nothing else', () => {
    assert.deepEqual(parseProbeTarget('db.example.test:5432'), { host: 'db.example.test', port: 5432, protocol: 'tls', label: 'db.example.test:5432' });
    assert.deepEqual(parseProbeTarget('[::1]:443'), { host: '::1', port: 443, protocol: 'tls', label: '[::1]:443' });
    assert.deepEqual(parseProbeTarget('postgres://127.0.0.1:5432'), { host: '127.0.0.1', port: 5432, protocol: 'postgres', label: 'postgres://127.0.0.1:5432' });
    for (const bad of ['db.example.test', ':443', 'db:0', 'db:65536', '[nothost]:443', '::1:443', 'https://db:443', 'db:443/path', 'db :443']) assert.equal(parseProbeTarget(bad), undefined, bad);
  });

  test('the certificates the service sends, leaf first, under the SNI asked for; none of the agent\'s roots is added', async () => {
    const probed = await probeOnce(tls.target(), 'db.example.test');
    assert.ok('certificates' in probed, JSON.stringify(probed));
    assert.deepEqual(fingerprints(probed.certificates), [fp(db.cert), fp(issuing)]);
    assert.deepEqual([probed.target, probed.sni], [tls.target().label, 'db.example.test']);
    const named = await probeOnce(tls.target(), 'other.example.test');
    assert.ok('certificates' in named);
    assert.equal(fingerprints(named.certificates)[0], fp(other.cert), 'another name, another certificate: SNI reached the server');
    const unnamed = await probeOnce(tls.target(), null);
    assert.ok('certificates' in unnamed);
    assert.equal(fingerprints(unnamed.certificates)[0], fp(db.cert));
  });

  test('a root sent by the service ends the chain: self-issued certificates do not loop', async () => {
    const withRoot = await listen(createTlsServer({ cert: pem(db.cert, issuing, ca), key: db.key.privateKeyPem }, (socket) => socket.end()));
    servers.push(withRoot);
    const probed = await probeOnce(withRoot.target(), null);
    assert.ok('certificates' in probed);
    assert.deepEqual(fingerprints(probed.certificates), [fp(db.cert), fp(issuing), fp(ca)]);
  });

  test('a leaf larger than a report holds is reported as such, never sent', async () => {
    const huge = await leaf(issuing, Array.from({ length: 700 }, (_, i) => `name-${i}.a-rather-long-label.example.test`));
    assert.ok(parseCertificateBundle(huge.cert.pem)[0]!.der.length * 4 / 3 > 16 * 1024);
    const server = await listen(createTlsServer({ cert: pem(huge.cert, issuing), key: huge.key.privateKeyPem }, (socket) => socket.end()));
    servers.push(server);
    const probed = await probeOnce(server.target(), null);
    assert.ok('unreachable' in probed, 'a report must still encode');
    assert.equal(probed.unreachable.code, 'E2BIG');
  });

  test('unreachable: a closed port, a server that never answers, one that speaks no TLS', async () => {
    const closedPort = await listen(createTcpServer());
    const closedTarget = closedPort.target();
    await close(closedPort);
    const refused = await probeOnce(closedTarget, null);
    assert.ok('unreachable' in refused);
    assert.equal(refused.unreachable.code, 'ECONNREFUSED');
    const silent = await listen(createTcpServer(() => undefined));
    servers.push(silent);
    const slow = await probeOnce(silent.target(), null, 300);
    assert.ok('unreachable' in slow);
    assert.deepEqual([slow.unreachable.code, slow.unreachable.message], ['ETIMEDOUT', 'no TLS handshake within 300 ms']);
    const plain = await listen(createTcpServer((socket) => socket.end('HTTP/1.1 400 Bad Request\r\n\r\n')));
    servers.push(plain);
    const notTls = await probeOnce(plain.target(), null, 5000);
    assert.ok('unreachable' in notTls, JSON.stringify(notTls));
  });

  test('postgres://: an SSLRequest, "S", then the handshake; "N" or "S" with bytes after it is unreachable, never a handshake', async () => {
    const secureContext = createSecureContext({ cert: pem(db.cert, issuing), key: db.key.privateKeyPem });
    const requests: Buffer[] = [];
    const postgres = (answer: Buffer) =>
      listen(
        createTcpServer((socket: Socket) => {
          socket.once('data', (request: Buffer) => {
            requests.push(request);
            socket.write(answer);
            if (answer.equals(Buffer.from('S'))) new TLSSocket(socket, { isServer: true, secureContext }).on('error', () => undefined);
            else socket.end();
          });
        }),
      );
    const accepting = await postgres(Buffer.from('S'));
    const refusing = await postgres(Buffer.from('N'));
    const cheating = await postgres(Buffer.from('Sxx'));
    servers.push(accepting, refusing, cheating);
    const probed = await probeOnce(accepting.target('postgres'), 'db.example.test');
    assert.ok('certificates' in probed, JSON.stringify(probed));
    assert.deepEqual(fingerprints(probed.certificates), [fp(db.cert), fp(issuing)]);
    assert.equal(probed.target, accepting.target('postgres').label);
    assert.deepEqual(requests[0], Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]), 'PostgreSQL\'s SSLRequest');
    const off = await probeOnce(refusing.target('postgres'), null);
    assert.ok('unreachable' in off);
    assert.equal(off.unreachable.code, 'ENOTLS');
    const injected = await probeOnce(cheating.target('postgres'), null);
    assert.ok('unreachable' in injected);
    assert.equal(injected.unreachable.code, 'EPROTO');
    const plainTls = await probeOnce(tls.target('postgres'), null, 2000);
    assert.ok('unreachable' in plainTls, 'a TLS server is no PostgreSQL server');
  });

  test('every target under every name (no wildcard, no IP address), at most one report\'s worth; no name at all probes once without SNI', async () => {
    const logger = pino({ level: 'silent' });
    const named = await new ServedProber({ targets: [tls.target()], names: async () => ['db.example.test', '*.example.test', '127.0.0.1', 'other.example.test'], logger }).probeAll();
    assert.deepEqual(named.map((p) => p.sni), ['db.example.test', 'other.example.test']);
    assert.deepEqual(named.map((p) => ('certificates' in p ? fingerprints(p.certificates)[0] : null)), [fp(db.cert), fp(other.cert)]);
    const unnamed = await new ServedProber({ targets: [tls.target()], names: async () => [], logger }).probeAll();
    assert.deepEqual(unnamed.map((p) => p.sni), [null]);
    const many = await new ServedProber({ targets: [tls.target(), tls.target()], names: async () => Array.from({ length: 40 }, (_, i) => `n${i}.example.test`), logger }).probeAll();
    assert.equal(many.length, MAX_PROBES_PER_REPORT);
    assert.ok(many.every((p) => 'certificates' in p));
  });
});
