#!/usr/bin/env bash
# Installs hostwatch on this machine from a release build: binaries in
# /usr/local/bin, systemd units, a dedicated user, and /etc/hostwatch with
# the example configurations (existing files are kept).
#
#   cargo build --release                                  # collector, CLI
#   cargo build --profile release-small -p hostwatch-agent # the agent, built for size
#   sudo deploy/install.sh agent       # on every monitored host
#   sudo deploy/install.sh collector   # on the collector host
#
# Certificates: put ca.pem and this machine's certificate and key in
# /etc/hostwatch (see docs/operations.md, "Deploying").
set -euo pipefail
role=${1:?usage: install.sh agent|collector}
case "$role" in agent|collector) ;; *) echo "usage: install.sh agent|collector" >&2; exit 64;; esac
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
systemctl daemon-reload
echo "installed hostwatch-$role; add certificates to /etc/hostwatch (keys: mode 0640, group hostwatch),"
echo "edit /etc/hostwatch/$role.toml, then: systemctl enable --now hostwatch-$role"
