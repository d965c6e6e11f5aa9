#!/usr/bin/env bash
# Builds the Debian packages from the debug binaries with
# deploy/debian/build.sh, checks their contents, runs lintian if it is
# installed, and, as root with a usable dpkg, installs, checks and purges
# them. Run from anywhere: tests/packages/run.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
fail() { echo "FAIL: $*" >&2; exit 1; }

cargo build --locked -q -p hostwatch-agent -p hostwatch-collector -p hostwatch
target=$(cargo metadata --format-version 1 --no-deps | sed 's/.*"target_directory":"\([^"]*\)".*/\1/')
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# A missing binary is a clear error, not a package without it.
empty=$out/empty; mkdir "$empty"
if msg=$(deploy/debian/build.sh --bin-dir "$empty" --out "$out/none" 2>&1); then
  fail "build.sh succeeded without binaries"
fi
grep -q "no binary $empty/hostwatch-agent" <<<"$msg" || fail "build.sh said: $msg"

HOSTWATCH_DEB_XZ_LEVEL=1 deploy/debian/build.sh --bin-dir "$target/debug" --out "$out/debs" >/dev/null
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
arch=$(dpkg --print-architecture)
deb() { echo "$out/debs/${1}_${version}_${arch}.deb"; }

# check_contents NAME "MODE PATH"...: each listed path with its mode.
check_contents() {
  local name=$1; shift
  local listing; listing=$(dpkg-deb --contents "$(deb "$name")")
  for want in "$@"; do
    local mode=${want%% *} path=${want#* }
    grep -Eq "^$mode root/root +[0-9]+ [0-9-]+ [0-9:]+ \.$path\$" <<<"$listing" \
      || fail "$name: no $mode $path in: $listing"
  done
  local field info; info=$(dpkg-deb --info "$(deb "$name")")
  for field in "Package: $name" "Version: $version" "Architecture: $arch" "Description: "; do
    grep -q "^ $field" <<<"$info" || fail "$name: control lacks $field"
  done
}
check_contents hostwatch-agent "-rwxr-xr-x /usr/bin/hostwatch-agent" \
  "-rw-r--r-- /lib/systemd/system/hostwatch-agent.service" "-rw-r--r-- /etc/hostwatch/agent.toml.example"
check_contents hostwatch-collector "-rwxr-xr-x /usr/bin/hostwatch-collector" \
  "-rw-r--r-- /lib/systemd/system/hostwatch-collector.service" "-rw-r--r-- /etc/hostwatch/collector.toml.example"
check_contents hostwatch "-rwxr-xr-x /usr/bin/hostwatch" "-rw-r--r-- /etc/hostwatch/cli.toml.example"
for role in agent collector; do
  d=$(deb "hostwatch-$role")
  [ "$(dpkg-deb --info "$d" conffiles)" = "/etc/hostwatch/$role.toml.example" ] || fail "$role: conffiles"
  [[ "$(dpkg-deb --field "$d" Depends)" == "adduser, libc6"* ]] || fail "$role: Depends"
  unit=$(dpkg-deb --fsys-tarfile "$d" | tar -xO "./lib/systemd/system/hostwatch-$role.service")
  grep -qx "ExecStart=/usr/bin/hostwatch-$role --config /etc/hostwatch/$role.toml" <<<"$unit" || fail "$role: ExecStart"
  grep -qx "ConditionPathExists=/etc/hostwatch/$role.toml" <<<"$unit" || fail "$role: no condition"
done
[ "$(dpkg-deb --info "$(deb hostwatch)" conffiles)" = /etc/hostwatch/cli.toml.example ] || fail "cli: conffiles"
echo "packages: contents, modes, conffiles and control fields as expected"

if command -v lintian >/dev/null; then
  # Errors fail; warnings and informational tags are shown, not fatal.
  # Overrides: none.
  lint=$(lintian --tag-display-limit 0 "$out"/debs/*.deb 2>&1 || true)
  [ -z "$lint" ] || echo "$lint"
  ! grep -q '^E: ' <<<"$lint" || fail "lintian reports errors"
  echo "packages: lintian found no errors"
else
  echo "packages: lintian NOT RUN (not installed)"
fi

if [ "$(id -u)" != 0 ] || ! dpkg --audit >/dev/null 2>&1; then
  echo "packages: dpkg -i NOT RUN (needs root and a usable dpkg)"
  exit 0
fi
for name in hostwatch-agent hostwatch-collector hostwatch; do
  ! dpkg-query -W "$name" >/dev/null 2>&1 || { echo "packages: dpkg -i NOT RUN ($name is installed here)"; exit 0; }
done
! getent passwd hostwatch >/dev/null || { echo "packages: dpkg -i NOT RUN (a hostwatch user exists here)"; exit 0; }
[ ! -e /etc/hostwatch ] || { echo "packages: dpkg -i NOT RUN (/etc/hostwatch exists here)"; exit 0; }

cleanup() {
  [ -z "${collector_pid:-}" ] || kill "$collector_pid" 2>/dev/null || true
  dpkg --purge hostwatch-agent hostwatch-collector hostwatch >/dev/null 2>&1 || true
  rm -rf "$out"
}
trap cleanup EXIT
dpkg -i "$(deb hostwatch-agent)" "$(deb hostwatch-collector)" "$(deb hostwatch)" >/dev/null
[[ "$(getent passwd hostwatch)" == *:/usr/sbin/nologin ]] || fail "no hostwatch system user without a login shell"
getent group hostwatch >/dev/null || fail "no hostwatch group"
for f in /usr/bin/hostwatch-agent /usr/bin/hostwatch-collector /usr/bin/hostwatch \
  /lib/systemd/system/hostwatch-agent.service /lib/systemd/system/hostwatch-collector.service \
  /etc/hostwatch/agent.toml.example /etc/hostwatch/collector.toml.example /etc/hostwatch/cli.toml.example; do
  [ -e "$f" ] || fail "$f not installed"
done
[ "$(stat -c '%a %U %G' /etc/hostwatch)" = "750 root hostwatch" ] || fail "/etc/hostwatch: $(stat -c '%a %U %G' /etc/hostwatch)"
/usr/bin/hostwatch-agent --version >/dev/null && /usr/bin/hostwatch --version >/dev/null || fail "installed binaries do not run"
for role in agent collector; do
  unit=hostwatch-$role.service
  # Enabled (recorded by deb-systemd-helper even without systemd running) ...
  [ -L "/etc/systemd/system/multi-user.target.wants/$unit" ] || fail "$unit not enabled"
  # ... and not running: nothing configured it.
  [ ! -e "/etc/hostwatch/$role.toml" ] || fail "$role.toml exists after install"
  if [ -d /run/systemd/system ]; then
    ! systemctl is-active --quiet "$unit" || fail "$unit is running before it is configured"
  fi
  ! pgrep -f "^/usr/bin/hostwatch-$role( |$)" >/dev/null || fail "hostwatch-$role is running before it is configured"
done
# An operator's edit of a conffile survives reinstalling (an upgrade).
echo "# edited" >> /etc/hostwatch/agent.toml.example
mkdir -p /var/lib/hostwatch-agent/spool && touch /var/lib/hostwatch-agent/spool/kept
dpkg -i "$(deb hostwatch-agent)" >/dev/null </dev/null
[ "$(tail -1 /etc/hostwatch/agent.toml.example)" = "# edited" ] || fail "upgrade lost the edit"
# Removal keeps configuration and data; purge deletes them and the user.
dpkg --remove hostwatch-agent >/dev/null
[ -e /var/lib/hostwatch-agent/spool/kept ] || fail "remove deleted the agent's state"
# Installed again after a removal: unmasked and enabled again.
dpkg -i "$(deb hostwatch-agent)" >/dev/null </dev/null
[ -L /etc/systemd/system/multi-user.target.wants/hostwatch-agent.service ] || fail "reinstall: not enabled"
[ ! -L /etc/systemd/system/hostwatch-agent.service ] || fail "reinstall: still masked"
dpkg --remove hostwatch-agent >/dev/null
[ -e /etc/hostwatch/agent.toml.example ] || fail "remove deleted the configuration"
[ ! -e /usr/bin/hostwatch-agent ] || fail "remove left the binary"
dpkg --purge hostwatch-agent >/dev/null
[ ! -e /var/lib/hostwatch-agent ] || fail "purge left /var/lib/hostwatch-agent"
getent passwd hostwatch >/dev/null || fail "purging the agent removed the user the collector runs as"
# A new host's one step, install.sh and the package's own: both install
# and run the enroll command (nothing listens on port 1 of 127.0.0.1, so
# it fails there, naming the collector, with the package installed).
pin=sha256:$(printf '0%.0s' {1..64})
if msg=$(HOSTWATCH_ENROLL_TOKEN=t deploy/install.sh agent --deb "$(deb hostwatch-agent)" \
  --collector 127.0.0.1:1 --ca-pin "$pin" 2>&1 </dev/null); then
  fail "install.sh enrolled against nothing"
fi
grep -q "enroll: cannot connect to 127.0.0.1:1" <<<"$msg" || fail "install.sh: $msg"
[ -x /usr/bin/hostwatch-agent ] || fail "install.sh --deb did not install the package"
msg=$(HOSTWATCH_COLLECTOR=127.0.0.1:1 HOSTWATCH_ENROLL_TOKEN=t HOSTWATCH_CA_PIN=$pin \
  dpkg -i "$(deb hostwatch-agent)" 2>&1 </dev/null) || fail "dpkg -i failed with a failed enrollment: $msg"
grep -q "enrollment failed; installed, not enrolled" <<<"$msg" || fail "postinst: $msg"
[ ! -e /var/lib/hostwatch-agent/pki/agent.key ] || fail "a failed enrollment left agent.key"
[ ! -e /etc/hostwatch/agent.toml ] || fail "a failed enrollment left agent.toml"
# Against a real collector (the debug build, on loopback, issuing
# certificates of the shortest lifetime): install.sh enrolls, the key is
# the service user's alone, in the state directory; the agent run as the
# unit runs it renews and saves there.
enroll_for_real() {
  local hw=$target/debug/hostwatch pki=$out/pki listen enroll_port token
  "$hw" certs init --dir "$pki" >"$out/pin" 2>/dev/null
  "$hw" certs issue --role collector --name main --ip 127.0.0.1 --dir "$pki" >/dev/null
  "$hw" certs issue --role operator --name ops --dir "$pki" >/dev/null
  listen=$(free_port) enroll_port=$(free_port)
  printf '%s\n' "listen = \"127.0.0.1:$listen\"" "enroll_listen = \"127.0.0.1:$enroll_port\"" \
    'data_dir = "data"' '[tls]' 'ca = "pki/ca.pem"' 'cert = "pki/collector-main.pem"' \
    'key = "pki/collector-main.key"' '[enroll]' 'issuer_cert = "pki/issuing.pem"' \
    'issuer_key = "pki/issuing.key"' 'cert_lifetime = "10s"' >"$out/collector.toml"
  printf '%s\n' "collector = \"127.0.0.1:$listen\"" '[tls]' 'ca = "pki/ca.pem"' \
    'cert = "pki/operator-ops.pem"' 'key = "pki/operator-ops.key"' >"$out/cli.toml"
  "$target/debug/hostwatch-collector" --config "$out/collector.toml" 2>"$out/collector.log" &
  collector_pid=$!
  # Bounded: the collector may take a moment to listen.
  for _ in $(seq 150); do
    token=$("$hw" --config "$out/cli.toml" token create --enroll 2>/dev/null) && break
    sleep 0.2
  done
  [ -n "$token" ] || fail "no enrollment token: $(cat "$out/collector.log")"
  HOSTWATCH_ENROLL_TOKEN=$token deploy/install.sh agent --deb "$(deb hostwatch-agent)" \
    --collector "127.0.0.1:$enroll_port" --ca-pin "$(cat "$out/pin")" </dev/null >/dev/null \
    || fail "install.sh did not enroll: $(cat "$out/collector.log")"
  enrolled_files
  renew_under_the_unit
  enrolled_files
  kill "$collector_pid"; wait "$collector_pid" || true; collector_pid=
}
# enrolled_files: the agent's key and certificate its user's, in its state
# directory; what it trusts and its configuration root's, in /etc/hostwatch.
enrolled_files() {
  local state=/var/lib/hostwatch-agent owners
  owners=$(stat -c '%n %a %U' $state $state/pki $state/pki/agent.key $state/pki/agent.pem \
    /etc/hostwatch/agent.toml /etc/hostwatch/agent-ca.pem | tr '\n' ';')
  [ "$owners" = "$state 700 hostwatch;$state/pki 700 hostwatch;$state/pki/agent.key 600 hostwatch;$state/pki/agent.pem 644 hostwatch;/etc/hostwatch/agent.toml 644 root;/etc/hostwatch/agent-ca.pem 644 root;" ] \
    || fail "enrolled files: $owners"
  [ ! -e /etc/hostwatch/ca.pem ] || fail "enroll wrote /etc/hostwatch/ca.pem, a collector's file"
}
# renew_under_the_unit: the installed agent as hostwatch-agent.service runs
# it, as far as this machine allows: the hostwatch user, and the file
# system read-only but for its state directory (ProtectSystem=strict,
# StateDirectory=) in a mount namespace of its own, since systemd may not
# be PID 1 here. It renews its 10 s certificate and saves it.
renew_under_the_unit() {
  local log=$out/agent.log before agent_pid
  if ! unshare --mount --propagation private true 2>/dev/null; then
    echo "packages: renewal under the unit's sandbox NOT RUN (no mount namespace here)"
    return
  fi
  before=$(cat /var/lib/hostwatch-agent/pki/agent.pem)
  unshare --mount --propagation private sh -c '
    mount -o remount,bind,ro / &&
    mount --bind /var/lib/hostwatch-agent /var/lib/hostwatch-agent &&
    mount -o remount,bind,rw /var/lib/hostwatch-agent &&
    exec setpriv --reuid=hostwatch --regid=hostwatch --init-groups \
      /usr/bin/hostwatch-agent --config /etc/hostwatch/agent.toml' 2>"$log" </dev/null &
  agent_pid=$!
  # Bounded: renewal comes about 7 s after enrollment.
  for _ in $(seq 300); do
    # (The log may not exist yet in the first round.)
    grep -qs "certificate renewed" "$log" && break
    kill -0 "$agent_pid" 2>/dev/null || break
    sleep 0.2
  done
  kill "$agent_pid" 2>/dev/null || true; wait "$agent_pid" || true
  grep -q "certificate renewed" "$log" || fail "the agent did not renew under the unit's sandbox: $(cat "$log")"
  ! grep -q "could not be saved" "$log" || fail "renewal not saved: $(cat "$log")"
  [ "$(cat /var/lib/hostwatch-agent/pki/agent.pem)" != "$before" ] || fail "agent.pem unchanged after renewal"
}
# free_port: a loopback port nothing answers on (bounded tries).
free_port() {
  local port
  for _ in $(seq 100); do
    port=$(shuf -i 20000-32000 -n 1)
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
  done
  fail "no free port"
}
collector_pid=
enroll_for_real
dpkg --purge hostwatch-agent >/dev/null
dpkg --purge hostwatch-collector hostwatch >/dev/null
! getent passwd hostwatch >/dev/null || fail "purge left the hostwatch user"
! getent group hostwatch >/dev/null || fail "purge left the hostwatch group"
[ ! -e /etc/hostwatch ] || fail "purge left /etc/hostwatch: $(ls -A /etc/hostwatch)"
[ ! -e /lib/systemd/system/hostwatch-agent.service ] || fail "purge left the unit"
[ ! -e /etc/systemd/system/multi-user.target.wants/hostwatch-agent.service ] || fail "purge left the unit enabled"
echo "packages: installed, checked (user, files, units enabled, not running), upgraded, removed, enroll run by install.sh and postinst, enrolled against a collector (key the service user's, in its state directory), renewed as the unit runs the agent, purged"
