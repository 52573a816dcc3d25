#!/usr/bin/env bash
# Set-up for a fresh Debian machine: the system packages certplane's demo and tests use
# (promtool among them, without a running Prometheus server),
# a running PostgreSQL server with the test role and database, then the exact npm
# dependency tree (npm ci builds the TypeScript through "prepare"), and infra/'s own tree.
# Safe to run again: apt-get and npm ci are idempotent, and every PostgreSQL step checks
# before it acts.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root=()
[ "$(id -u)" -eq 0 ] || as_root=(sudo)

# The newest PostgreSQL major version whose server binary is installed, or nothing.
postgres_major_version() {
  local binary
  for binary in /usr/lib/postgresql/*/bin/postgres; do
    if [ -x "$binary" ]; then basename "$(dirname "$(dirname "$binary")")"; fi
  done | sort -n | tail -n 1
}

need_packages=()
command -v pebble >/dev/null 2>&1 || need_packages+=(pebble)
command -v openssl >/dev/null 2>&1 || need_packages+=(openssl)
[ -f /etc/ssl/certs/ca-certificates.crt ] || need_packages+=(ca-certificates)
# The agent's and the plane's systemd units are checked with systemd-analyze verify (test/deploy).
command -v systemd-analyze >/dev/null 2>&1 || need_packages+=(systemd)
if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ -z "$(postgres_major_version)" ]; then
  need_packages+=(postgresql)
fi

if [ ${#need_packages[@]} -gt 0 ]; then
  "${as_root[@]}" apt-get update
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${need_packages[@]}"
fi

# Pebble built from Debian's source with the fix of its store's lock-order deadlock, which
# concurrent orders met in the campaign tests and the bench (infra/pebble/build.sh).
bash infra/pebble/build.sh

# promtool checks and unit-tests infra/monitoring's alert rules (test/monitoring); it comes
# with Debian's prometheus package, whose server must not run here (it would listen on
# port 9090 of every interface). Under systemd the unit is masked before the install, so the
# package's postinst cannot start it (a mask made here is one its postinst leaves alone);
# under another init its init script is stopped and disabled at once.
if ! command -v promtool >/dev/null 2>&1; then
  systemd_running=0
  [ -d /run/systemd/system ] && systemd_running=1
  [ "$systemd_running" -eq 0 ] || "${as_root[@]}" systemctl mask prometheus.service
  [ ${#need_packages[@]} -gt 0 ] || "${as_root[@]}" apt-get update
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus
  if [ "$systemd_running" -eq 0 ] && [ -x /etc/init.d/prometheus ]; then
    "${as_root[@]}" /etc/init.d/prometheus stop >/dev/null 2>&1 || true
    "${as_root[@]}" update-rc.d prometheus disable >/dev/null 2>&1 || true
  fi
fi

# The store's tests need a real server on 127.0.0.1:5432 (Debian's default for the first
# cluster), role certplane with password certplane, and database certplane_test.
pg_version="$(postgres_major_version)"
if [ -z "$pg_version" ]; then
  echo "setup: no PostgreSQL server under /usr/lib/postgresql/*/bin even after installing postgresql" >&2
  exit 1
fi
pg_main_cluster_port() {
  pg_lsclusters -h | awk -v version="$pg_version" '$1 == version && $2 == "main" { print $3 }'
}
[ -n "$(pg_main_cluster_port)" ] || "${as_root[@]}" pg_createcluster "$pg_version" main
pg_port="$(pg_main_cluster_port)"
if [ "$pg_port" != 5432 ]; then
  echo "setup: PostgreSQL cluster $pg_version/main listens on port $pg_port, the tests expect 5432: set port = 5432 in /etc/postgresql/$pg_version/main/postgresql.conf, or point CERTPLANE_TEST_POSTGRES_URL at it" >&2
  exit 1
fi
"${as_root[@]}" pg_ctlcluster "$pg_version" main status >/dev/null 2>&1 || "${as_root[@]}" pg_ctlcluster "$pg_version" main start

# psql runs as the postgres superuser, from / because it may not enter this checkout.
as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then (cd / && runuser -u postgres -- "$@"); else (cd / && sudo -u postgres "$@"); fi
}
for _ in $(seq 1 30); do
  as_postgres pg_isready -q -p "$pg_port" && break
  sleep 1
done
as_postgres psql -X -q -v ON_ERROR_STOP=1 -p "$pg_port" -d postgres <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'certplane') THEN CREATE ROLE certplane; END IF;
END $$;
ALTER ROLE certplane LOGIN CREATEDB PASSWORD 'certplane';
-- The tests drop their databases WITH (FORCE); an autovacuum worker busy on one can only be
-- terminated by a role with pg_signal_backend (otherwise 42501 and a failed clean-up).
GRANT pg_signal_backend TO certplane;
SELECT 'CREATE DATABASE certplane_test OWNER certplane'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'certplane_test') \gexec
SQL

npm ci --no-audit --no-fund
# infra/ is its own package (the CDK app, cdk-nag, esbuild for the agent's distribution), so
# none of it reaches the service's dependencies; `npm test` runs its tests too.
npm ci --prefix infra --no-audit --no-fund
