# syntax=docker/dockerfile:1
# The management plane's image: `docker build -t certplane .` then
#   docker run --read-only -v certplane-run:/run/certplane -p 8443:8443 \
#     -e CERTPLANE_DATABASE_URL=postgres://... -e CERTPLANE_SECRETS=aws-sm:certplane/production \
#     -e CERTPLANE_TLS_CERT_PEM="$(cat tls.crt)" -e CERTPLANE_TLS_KEY_PEM="$(cat tls.key)" certplane
# State lives only in PostgreSQL and Secrets Manager; /run/certplane holds the listener's
# certificate and key (written by the entrypoint) and the admin socket, so the root file
# system can be read-only. infra/ (the CDK app) builds and deploys it; docs/deploy.md.

FROM node:20-bookworm-slim AS build
WORKDIR /build
COPY package.json package-lock.json ./
# --ignore-scripts: "prepare" would compile before the sources are copied.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
# Only src/: the image has no tests. tsc's include names test/ too, and finds nothing there.
RUN npx tsc -p tsconfig.json && npm prune --omit=dev --no-audit --no-fund

FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production \
    CERTPLANE_LISTEN=0.0.0.0:8443 \
    CERTPLANE_ADMIN_SOCKET=/run/certplane/admin.sock \
    CERTPLANE_TLS_CERT=/run/certplane/tls.crt \
    CERTPLANE_TLS_KEY=/run/certplane/tls.key \
    NODE_EXTRA_CA_CERTS=/app/rds-global-bundle.pem
# Amazon RDS's CA bundle, so the database URL's sslmode=verify-full can check the RDS certificate.
ADD --chmod=0644 https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem /app/rds-global-bundle.pem
RUN groupadd --system --gid 10001 certplane \
 && useradd --system --uid 10001 --gid certplane --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin certplane \
 && install -d -o certplane -g certplane -m 0700 /run/certplane
WORKDIR /app
COPY --from=build /build/package.json ./package.json
COPY --from=build /build/node_modules ./node_modules
COPY --from=build /build/dist/src ./dist/src
COPY infra/docker/entrypoint.sh /usr/local/bin/certplane-entrypoint
COPY infra/docker/healthcheck.mjs /app/healthcheck.mjs
USER certplane:certplane
EXPOSE 8443
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 CMD ["node", "/app/healthcheck.mjs"]
ENTRYPOINT ["/usr/local/bin/certplane-entrypoint"]
CMD ["serve"]
