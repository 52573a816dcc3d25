#!/usr/bin/env bash
# Builds the agent's self-contained distribution: one tarball a customer instance unpacks
# and installs with no clone of this repository, no npm and no build tools, only node >= 20.
#
#   certplane-agent-VERSION/
#     certplane-agent.cjs       the agent and every dependency it uses, bundled by esbuild
#     certplane-agent.service   the hardened systemd unit (install.sh fills in node's path)
#     install.sh                install, upgrade (--upgrade) and uninstall (--uninstall)
#
# One bundled file rather than a tarball of node_modules: the agent's dependency tree is
# small once the plane's (AWS SDK, PGlite, Fastify) is left out, a single file cannot be
# half-upgraded, and nothing is resolved from the instance's own node_modules.
# Usage: infra/agent/build-dist.sh [OUT_DIR]   (default infra/dist/agent); `npm --prefix infra run agent-dist`
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:-$root/infra/dist/agent}"
version="$(node -p "require('$root/package.json').version")"
name="certplane-agent-$version"
esbuild="$root/infra/node_modules/.bin/esbuild"
[ -x "$esbuild" ] || { echo "build-dist: $esbuild is missing: run npm ci --prefix infra (infra/setup.sh does)" >&2; exit 1; }

rm -rf "${out:?}/$name" "$out/$name.tar.gz"
mkdir -p "$out/$name"
"$esbuild" "$root/src/cli/agent-main.ts" --bundle --platform=node --target=node20 --format=cjs \
  --outfile="$out/$name/certplane-agent.cjs" --log-level=warning
chmod 0755 "$out/$name/certplane-agent.cjs"
install -m 0644 "$here/certplane-agent.service" "$out/$name/certplane-agent.service"
install -m 0755 "$here/install.sh" "$out/$name/install.sh"
tar -C "$out" -czf "$out/$name.tar.gz" "$name"
echo "$out/$name.tar.gz"
