#!/usr/bin/env bash
# Builds the Pebble every local test and bench runs: Debian's pebble 2.4.0 source, with
# Debian's own patches and store-lock-order.patch, which takes the store's three reads that
# wait for an order's or authorization's lock (newOrder's scan of every authorization, and
# an order's status by id or by account) out of the store's read lock. Debian's binary
# deadlocks in the first under concurrent orders (docs/testing.md, "A Pebble without the
# newOrder deadlock"); the other two have the same lock order. Debian's Go and
# Go libraries build it; the sources are checked against the SHA-256 sums Debian's .dsc
# gives, fetched from deb.debian.org's pool and, when that fails, snapshot.debian.org (or the
# pools named in CERTPLANE_DEBIAN_POOLS, space-separated). Installed as $PEBBLE_PATCHED;
# src/devenv/pebble.ts prefers /usr/local/libexec/certplane/pebble, the default, to PATH's
# pebble. pebble-challtestsrv stays Debian's. Safe to run again: a build already made from
# this patch is kept.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
PEBBLE_PATCHED="${PEBBLE_PATCHED:-/usr/local/libexec/certplane/pebble}"
stamp="$PEBBLE_PATCHED.source-sha256"
want="$(cat "$here/build.sh" "$here/store-lock-order.patch" | sha256sum | cut -d' ' -f1)"
if [ -x "$PEBBLE_PATCHED" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi

as_root=()
[ "$(id -u)" -eq 0 ] || as_root=(sudo)
packages=(golang-go golang-github-letsencrypt-challtestsrv-dev golang-github-miekg-dns-dev golang-gopkg-square-go-jose.v2-dev curl ca-certificates patch xz-utils)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  "${as_root[@]}" apt-get update
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
pools="${CERTPLANE_DEBIAN_POOLS:-http://deb.debian.org/debian/pool https://snapshot.debian.org/archive/debian/20240601T000000Z/pool}"
fetch() {
  for pool in $pools; do
    if ! curl --fail --silent --show-error --location --retry 3 -o "$work/$1" "$pool/main/p/pebble/$1"; then
      echo "pebble: $1 not found at $pool" >&2
    elif echo "$2  $work/$1" | sha256sum --check --quiet; then
      return 0
    else
      echo "pebble: $1 from $pool does not match Debian's SHA-256 sum" >&2
    fi
  done
  echo "pebble: $1 could not be downloaded, with Debian's sum, from any of: $pools" >&2
  return 1
}
fetch pebble_2.4.0+ds1.orig.tar.xz ea0cc1f521a34e029905e6fdbf7d6c21c1956178fb0e4a4df0bb893cc3881d97
fetch pebble_2.4.0+ds1-2.debian.tar.xz 564374ed6c9c55d4e6b7d86c1fa459f6f39092b056a63e659dc6e8402dbe9743

source="$work/gopath/src/github.com/letsencrypt/pebble"
mkdir -p "$source"
tar -xJf "$work/pebble_2.4.0+ds1.orig.tar.xz" -C "$source" --strip-components=1
tar -xJf "$work/pebble_2.4.0+ds1-2.debian.tar.xz" -C "$source"
while read -r debian_patch; do
  [ -z "$debian_patch" ] || patch --quiet -d "$source" -p1 < "$source/debian/patches/$debian_patch"
done < "$source/debian/patches/series"
patch --quiet -d "$source" -p1 < "$here/store-lock-order.patch"

# GOPATH mode over Debian's Go libraries, as Debian's own build (dh-golang) does.
(cd "$source" && GO111MODULE=off GOPATH="$work/gopath:/usr/share/gocode" GOCACHE="$work/cache" GOFLAGS= go build -o "$work/pebble" ./cmd/pebble)
"${as_root[@]}" install -D -m 0755 "$work/pebble" "$PEBBLE_PATCHED"
echo "$want" | "${as_root[@]}" tee "$stamp" >/dev/null
echo "pebble: built with store-lock-order.patch into $PEBBLE_PATCHED"
