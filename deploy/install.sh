#!/usr/bin/env bash
# Installs hostwatch on this machine, from a Debian package
# (deploy/debian/build.sh) or from a release build: binaries in
# /usr/local/bin, systemd units, a dedicated user, and /etc/hostwatch with
# the example configurations (existing files are kept).
#
#   cargo build --release                                  # collector, CLI
#   cargo build --profile release-small -p hostwatch-agent # the agent, built for size
#   sudo deploy/install.sh agent       # on every monitored host
#   sudo deploy/install.sh collector   # on the collector host
#
# A new agent host in one step: install the package and enroll it (the
# token is passed to hostwatch-agent in its environment, not its arguments):
#
#   sudo deploy/install.sh agent --deb hostwatch-agent_VERSION_ARCH.deb \
#     --collector collector.example.com:7071 --token T --ca-pin sha256:HEX
# (or HOSTWATCH_ENROLL_TOKEN=T in the environment instead of --token).
#
# Certificates otherwise: put the CA and this machine's certificate and
# key where <role>.toml's [tls] names them; an agent's certificate and key
# in /var/lib/hostwatch-agent/pki, the agent's, so that it can renew them
# (see docs/operations.md, "Deploying").
set -euo pipefail
usage() {
  echo "usage: install.sh agent|collector [--deb FILE] [--collector HOST:PORT --token T --ca-pin sha256:HEX]" >&2
  exit 64
}
role=${1:-}
case "$role" in agent|collector) shift;; *) usage;; esac
deb= collector= token= ca_pin=
while (($#)); do
  case "$1" in
    --deb) deb=${2:-}; [ -n "$deb" ] || usage; shift 2;;
    --collector) collector=${2:-}; [ -n "$collector" ] || usage; shift 2;;
    --token) token=${2:-}; [ -n "$token" ] || usage; shift 2;;
    --ca-pin) ca_pin=${2:-}; [ -n "$ca_pin" ] || usage; shift 2;;
    *) usage;;
  esac
done
enroll=
# HOSTWATCH_ENROLL_TOKEN in the environment keeps the token out of `ps`.
if [ -n "$collector$ca_pin" ] && [ -z "$token" ]; then token=${HOSTWATCH_ENROLL_TOKEN:-}; fi
if [ -n "$collector$token$ca_pin" ]; then
  [ "$role" = agent ] || { echo "install.sh: --collector, --token and --ca-pin enroll an agent" >&2; exit 64; }
  [ -n "$collector" ] && [ -n "$token" ] && [ -n "$ca_pin" ] \
    || { echo "install.sh: enrolling needs all of --collector, --token and --ca-pin" >&2; exit 64; }
  enroll=yes
fi

# enroll_agent: the one enroll command (the key and certificate given to
# the service's user, in /var/lib/hostwatch-agent/pki where it renews
# them), then the service started (it is configured now).
enroll_agent() {
  local agent=$1
  HOSTWATCH_ENROLL_TOKEN=$token "$agent" enroll --collector "$collector" \
    --ca-pin "$ca_pin" --dir /etc/hostwatch --user hostwatch
  if [ -d /run/systemd/system ]; then
    systemctl enable --now hostwatch-agent
  else
    echo "enrolled; systemd is not running here: start hostwatch-agent by hand"
  fi
}

if [ -n "$deb" ]; then
  [ -f "$deb" ] || { echo "install.sh: no package $deb" >&2; exit 1; }
  dpkg -i "$deb"
  [ -z "$enroll" ] || enroll_agent /usr/bin/hostwatch-agent
  exit 0
fi

here=$(cd "$(dirname "$0")" && pwd)
# The agent ships in the size-optimised profile: its memory target (8 MiB
# steady RSS) is met only there (docs/benchmarks.md, "agent").
if [ "$role" = agent ]; then
  profile=release-small build="cargo build --profile release-small -p hostwatch-agent"
else
  profile=release build="cargo build --release"
fi
bin="$here/../target/$profile/hostwatch-$role"
[ -x "$bin" ] || { echo "no $bin: run '$build' first" >&2; exit 1; }

getent group hostwatch >/dev/null || groupadd --system hostwatch
getent passwd hostwatch >/dev/null || useradd --system --gid hostwatch --home-dir /nonexistent --shell /usr/sbin/nologin hostwatch
install -m 0755 "$bin" /usr/local/bin/
install -m 0755 "$here/../target/release/hostwatch" /usr/local/bin/ 2>/dev/null || true
install -d -m 0750 -o root -g hostwatch /etc/hostwatch
[ -e "/etc/hostwatch/$role.toml" ] || install -m 0640 -o root -g hostwatch "$here/$role.toml" /etc/hostwatch/
install -m 0644 "$here/systemd/hostwatch-$role.service" /etc/systemd/system/
[ ! -d /run/systemd/system ] || systemctl daemon-reload
if [ -n "$enroll" ]; then
  enroll_agent /usr/local/bin/hostwatch-agent
  exit 0
fi
echo "installed hostwatch-$role; add certificates to /etc/hostwatch (keys: mode 0640, group hostwatch),"
echo "edit /etc/hostwatch/$role.toml, then: systemctl enable --now hostwatch-$role"
