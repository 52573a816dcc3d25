// The container's HEALTHCHECK: GET /readyz on the plane's own port. /readyz needs no client
// certificate, and the listener's certificate names the public host, not 127.0.0.1, so
// this probe checks readiness, not the certificate (the NLB's health check does the same).
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';

const listen = process.env.CERTPLANE_LISTEN ?? '127.0.0.1:8443';
const port = Number(listen.slice(listen.lastIndexOf(':') + 1));
const insecure = process.env.CERTPLANE_INSECURE_HTTP === '1';
const send = insecure ? httpRequest : httpsRequest;
const req = send({ host: '127.0.0.1', port, path: '/readyz', timeout: 4000, rejectUnauthorized: false }, (res) => {
  res.resume();
  process.exit(res.statusCode === 200 ? 0 : 1);
});
req.on('timeout', () => req.destroy(new Error('timeout')));
req.on('error', () => process.exit(1));
req.end();
