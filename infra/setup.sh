#!/usr/bin/env bash
# Set-up for a fresh Debian machine: the system packages certplane's demo and tests use,
# then the exact npm dependency tree (npm ci builds the TypeScript through "prepare").
# Safe to run again: apt-get and npm ci are idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

need_packages=()
command -v pebble >/dev/null 2>&1 || need_packages+=(pebble)
command -v openssl >/dev/null 2>&1 || need_packages+=(openssl)
[ -f /etc/ssl/certs/ca-certificates.crt ] || need_packages+=(ca-certificates)

if [ ${#need_packages[@]} -gt 0 ]; then
  as_root=()
  [ "$(id -u)" -eq 0 ] || as_root=(sudo)
  "${as_root[@]}" apt-get update
  DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y "${need_packages[@]}"
fi

npm ci --no-audit --no-fund
