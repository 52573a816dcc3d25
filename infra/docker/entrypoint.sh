#!/bin/sh
# The image's entrypoint: `certplane "$@"` (CMD is `serve`). On ECS the listener's certificate
# and key arrive from Secrets Manager as CERTPLANE_TLS_CERT_PEM and CERTPLANE_TLS_KEY_PEM;
# certplane reads them from files (so `certplane admin reload-tls` can reread them), so they
# are written with mode 0600 to the paths CERTPLANE_TLS_CERT and CERTPLANE_TLS_KEY name and
# removed from the environment before certplane starts, keeping the key out of /proc/*/environ.
set -eu
if [ -n "${CERTPLANE_TLS_CERT_PEM:-}" ] || [ -n "${CERTPLANE_TLS_KEY_PEM:-}" ]; then
  if [ -z "${CERTPLANE_TLS_CERT_PEM:-}" ] || [ -z "${CERTPLANE_TLS_KEY_PEM:-}" ] || [ -z "${CERTPLANE_TLS_CERT:-}" ] || [ -z "${CERTPLANE_TLS_KEY:-}" ]; then
    echo "entrypoint: CERTPLANE_TLS_CERT_PEM, CERTPLANE_TLS_KEY_PEM, CERTPLANE_TLS_CERT and CERTPLANE_TLS_KEY go together" >&2
    exit 64
  fi
  umask 077
  printf '%s\n' "$CERTPLANE_TLS_CERT_PEM" > "$CERTPLANE_TLS_CERT"
  printf '%s\n' "$CERTPLANE_TLS_KEY_PEM" > "$CERTPLANE_TLS_KEY"
  unset CERTPLANE_TLS_CERT_PEM CERTPLANE_TLS_KEY_PEM
fi
exec node /app/dist/src/cli/main.js "$@"
