#!/usr/bin/env bash
# Installs the certplane agent on this instance from the unpacked distribution (run as root):
#
#   ./install.sh --server https://plane.example.com --token-file /root/token [--server-ca ca.pem]
#                [--group postgres] [--http01-port 80] [--reload-command-file reload.sh]
#   ./install.sh --upgrade      replace the program and the unit, keep settings and state
#   ./install.sh --uninstall [--purge]   stop and remove it (--purge: its state and keys too)
#
# Creates the system user certplane-agent, /etc/certplane-agent/agent.env (the settings),
# /var/lib/certplane-agent (mode 0700, the state and live/ certificates), moves the enrollment
# token into the state directory (0600; the agent deletes it once spent), installs
# /opt/certplane-agent/certplane-agent.cjs and the hardened unit, and starts it.
# --root DIR installs into DIR as if it were / and neither creates the user nor calls
# systemctl: for packaging and for the tests.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root=""
mode=install
purge=0
server=""
token_file=""
server_ca=""
group=""
http01_port=""
reload_file=""
usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --server) server="$2"; shift 2 ;;
    --token-file) token_file="$2"; shift 2 ;;
    --server-ca) server_ca="$2"; shift 2 ;;
    --group) group="$2"; shift 2 ;;
    --http01-port) http01_port="$2"; shift 2 ;;
    --reload-command-file) reload_file="$2"; shift 2 ;;
    --root) root="$(cd "$2" && pwd)"; shift 2 ;;
    --upgrade) mode=upgrade; shift ;;
    --uninstall) mode=uninstall; shift ;;
    --purge) purge=1; shift ;;
    -h|--help) usage 0 ;;
    *) echo "install.sh: unknown option $1" >&2; usage ;;
  esac
done

user=certplane-agent
prefix="$root/opt/certplane-agent"
config="$root/etc/certplane-agent"
state="$root/var/lib/certplane-agent"
unit_dir="$root/etc/systemd/system"
unit="$unit_dir/certplane-agent.service"
real_system() { [ -z "$root" ]; }
systemctl_() { if real_system; then systemctl "$@"; fi; }

if [ "$mode" = uninstall ]; then
  systemctl_ disable --now certplane-agent.service || true
  rm -rf "$prefix" "$unit" "$unit.d"
  systemctl_ daemon-reload
  if [ "$purge" = 1 ]; then
    rm -rf "$config" "$state"
    if real_system && id "$user" >/dev/null 2>&1; then userdel "$user"; fi
    echo "certplane agent removed with its settings, state and keys"
  else
    echo "certplane agent removed; settings in $config and state in $state are kept (--purge removes them)"
  fi
  exit 0
fi

node_path="$(command -v node || true)"
if [ -z "$node_path" ] || ! "$node_path" -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)'; then
  echo "install.sh: the agent needs node 20 or newer on PATH (Debian/Ubuntu: apt-get install nodejs, or NodeSource)" >&2
  exit 1
fi

install_program() {
  install -d -m 0755 "$prefix" "$unit_dir"
  install -m 0755 "$here/certplane-agent.cjs" "$prefix/certplane-agent.cjs"
  sed "s|@NODE@|$node_path|" "$here/certplane-agent.service" > "$unit.tmp"
  chmod 0644 "$unit.tmp"
  mv "$unit.tmp" "$unit"
}

if [ "$mode" = upgrade ]; then
  [ -f "$config/agent.env" ] || { echo "install.sh: nothing to upgrade: $config/agent.env is missing; install first" >&2; exit 1; }
  install_program
  systemctl_ daemon-reload
  systemctl_ try-restart certplane-agent.service
  echo "certplane agent upgraded; settings and state kept"
  exit 0
fi

[ -n "$server" ] || { echo "install.sh: --server is required" >&2; usage; }
case "$server" in https://*|http://*) ;; *) echo "install.sh: --server must be an https:// URL" >&2; exit 2 ;; esac
if [ -n "$http01_port" ] && ! [[ "$http01_port" =~ ^[0-9]+$ ]]; then echo "install.sh: --http01-port must be a number" >&2; exit 2; fi

if real_system && ! id "$user" >/dev/null 2>&1; then
  useradd --system --home-dir /var/lib/certplane-agent --no-create-home --shell /usr/sbin/nologin "$user"
fi
if real_system && [ -n "$group" ]; then
  # The agent gives live/ to this group, which it can only do as a member of it.
  usermod -a -G "$group" "$user"
fi
owner() { if real_system; then chown "$user:$user" "$@"; fi; }

install_program
install -d -m 0755 "$config"
install -d -m 0700 "$state"
owner "$state"

options=()
if [ -n "$server_ca" ]; then install -m 0644 "$server_ca" "$config/server-ca.pem"; options+=(--server-ca /etc/certplane-agent/server-ca.pem); fi
if [ -n "$group" ]; then options+=(--group "$group"); fi
if [ -n "$http01_port" ]; then options+=(--http01-port "$http01_port"); fi
if [ -n "$reload_file" ]; then install -m 0755 "$reload_file" "$config/reload"; options+=(--reload-command /etc/certplane-agent/reload); fi
umask 022
{
  echo "# certplane agent settings, read by certplane-agent.service (systemctl restart certplane-agent after a change)."
  echo "CERTPLANE_SERVER=$server"
  echo "CERTPLANE_AGENT_OPTIONS=${options[*]}"
} > "$config/agent.env"

if [ -n "$http01_port" ] && [ "$http01_port" -lt 1024 ]; then
  # Only a port below 1024 needs a capability, and then only this one.
  install -d -m 0755 "$unit.d"
  printf '[Service]\nCapabilityBoundingSet=CAP_NET_BIND_SERVICE\nAmbientCapabilities=CAP_NET_BIND_SERVICE\n' > "$unit.d/http01-port.conf"
fi

if [ -n "$token_file" ]; then
  install -m 0600 "$token_file" "$state/enrollment-token"
  owner "$state/enrollment-token"
  rm -f "$token_file"
fi

systemctl_ daemon-reload
systemctl_ enable --now certplane-agent.service
echo "certplane agent installed: journalctl -u certplane-agent shows it enrolling"
