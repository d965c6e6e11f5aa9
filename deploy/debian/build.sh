#!/usr/bin/env bash
# Builds the Debian packages hostwatch-agent, hostwatch-collector and
# hostwatch (the CLI) from already built binaries, with dpkg-deb only
# (no cargo-deb to install). docs/operations.md, "Installing from packages".
#
#   deploy/debian/build.sh [--bin-dir target/release] [--out target/debian]
#
# The agent is best built with `cargo build --profile release-small -p
# hostwatch-agent` (docs/benchmarks.md, "agent"): give its directory with
# --agent-bin-dir, or copy it into --bin-dir.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin_dir=$root/target/release out=$root/target/debian agent_bin_dir=
# xz level: 6 (dpkg-deb's default) for releases; tests ask for 1 (faster).
level=${HOSTWATCH_DEB_XZ_LEVEL:-6}
usage() { echo "usage: build.sh [--bin-dir DIR] [--agent-bin-dir DIR] [--out DIR]" >&2; exit 64; }
while (($#)); do
  case "$1" in
    --bin-dir) bin_dir=${2:?--bin-dir needs a directory}; shift 2;;
    --agent-bin-dir) agent_bin_dir=${2:?--agent-bin-dir needs a directory}; shift 2;;
    --out) out=${2:?--out needs a directory}; shift 2;;
    *) usage;;
  esac
done
agent_bin_dir=${agent_bin_dir:-$bin_dir}
command -v dpkg-deb >/dev/null || { echo "build.sh: dpkg-deb (package dpkg) is needed" >&2; exit 1; }
for b in "$agent_bin_dir/hostwatch-agent" "$bin_dir/hostwatch-collector" "$bin_dir/hostwatch"; do
  [ -x "$b" ] || { echo "build.sh: no binary $b: build it first (cargo build --release)" >&2; exit 1; }
done
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' "$root/Cargo.toml")
[ -n "$version" ] || { echo "build.sh: no version in $root/Cargo.toml [workspace.package]" >&2; exit 1; }
arch=$(dpkg --print-architecture)
license=$(sed -n '/^\[workspace.package\]/,/^\[/s/^license = "\(.*\)"/\1/p' "$root/Cargo.toml")
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# dpkg-shlibdeps looks for a source package's debian/control.
mkdir "$work/debian" && touch "$work/debian/control"
# Maintainer: DEBFULLNAME and DEBEMAIL, as Debian's tools take them.
maintainer="${DEBFULLNAME:-hostwatch} <${DEBEMAIL:-hostwatch@hostwatch.invalid}>"

# package NAME BINARY DEPENDS DESCRIPTION: a tree in $work/NAME with the
# binary and DEBIAN/control; the caller adds the rest, then `finish NAME`.
package() {
  local name=$1 bin=$2 depends=$3 summary=$4 long=$5
  local tree=$work/$name
  install -d -m 0755 "$tree/DEBIAN" "$tree/usr/bin" "$tree/usr/share/doc/$name"
  install -m 0755 "$bin" "$tree/usr/bin/"
  # Debian policy 10.1: binaries are shipped stripped.
  strip --strip-unneeded "$tree/usr/bin/$(basename "$bin")" 2>/dev/null || true
  # The shared libraries it links and their minimum versions.
  local libs
  if command -v dpkg-shlibdeps >/dev/null; then
    libs=$(cd "$work" && dpkg-shlibdeps -O -e "$tree/usr/bin/$(basename "$bin")" 2>/dev/null \
      | sed -n 's/^shlibs:Depends=//p')
  else
    echo "build.sh: no dpkg-shlibdeps (package dpkg-dev): library versions left out of Depends" >&2
    libs="libc6, libgcc-s1"
  fi
  depends=${depends:+$depends, }$libs
  cat > "$tree/usr/share/doc/$name/copyright" <<COPY
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: hostwatch
Source: https://github.com/hostwatch/hostwatch

Files: *
Copyright: the hostwatch authors
License: $license
 On Debian systems the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
COPY
  printf '%s (%s) unstable; urgency=medium\n\n  * Built by deploy/debian/build.sh.\n\n -- %s  %s\n' \
    "$name" "$version" "$maintainer" "$(date -R -u -d @"${SOURCE_DATE_EPOCH:-0}")" | gzip -n -9 > "$tree/usr/share/doc/$name/changelog.gz"
  chmod 0644 "$tree/usr/share/doc/$name/copyright" "$tree/usr/share/doc/$name/changelog.gz"
  {
    echo "Package: $name"
    echo "Version: $version"
    echo "Architecture: $arch"
    echo "Maintainer: $maintainer"
    echo "Section: admin"
    echo "Priority: optional"
    [ -n "$depends" ] && echo "Depends: $depends"
    echo "Homepage: https://github.com/hostwatch/hostwatch"
    echo "Description: $summary"
    echo "$long" | sed 's/^/ /'
  } > "$tree/DEBIAN/control"
}

# daemon NAME ROLE: the unit (ExecStart in /usr/bin), the example
# configuration as a conffile, and the maintainer scripts.
daemon() {
  local name=$1 role=$2 tree=$work/$1
  install -d -m 0755 "$tree/lib/systemd/system" "$tree/etc/hostwatch"
  sed 's#/usr/local/bin/#/usr/bin/#' "$root/deploy/systemd/$name.service" > "$tree/lib/systemd/system/$name.service"
  chmod 0644 "$tree/lib/systemd/system/$name.service"
  install -m 0644 "$root/deploy/$role.toml" "$tree/etc/hostwatch/$role.toml.example"
  echo "/etc/hostwatch/$role.toml.example" > "$tree/DEBIAN/conffiles"
  for script in postinst prerm postrm; do
    sed "s/@ROLE@/$role/g" "$here/$script" > "$tree/DEBIAN/$script"
    chmod 0755 "$tree/DEBIAN/$script"
  done
}

finish() {
  local name=$1
  chmod 0644 "$work/$name/DEBIAN/control"
  [ -e "$work/$name/DEBIAN/conffiles" ] && chmod 0644 "$work/$name/DEBIAN/conffiles"
  local size
  size=$(du -sk --exclude=DEBIAN "$work/$name" | cut -f1)
  sed -i "/^Homepage:/i Installed-Size: $size" "$work/$name/DEBIAN/control"
  dpkg-deb --root-owner-group -Zxz -z"$level" --build "$work/$name" "$out/${name}_${version}_${arch}.deb" >/dev/null
  echo "$out/${name}_${version}_${arch}.deb"
}

package hostwatch-agent "$agent_bin_dir/hostwatch-agent" "adduser" \
  "hostwatch agent: samples this host and streams to the collector" \
  "Samples CPU, memory, disks, file systems, network and processes and
streams them over mutual TLS 1.3 to a hostwatch collector. The service
starts once /etc/hostwatch/agent.toml exists: \`hostwatch-agent enroll\`
writes it with the host's certificate."
daemon hostwatch-agent agent
finish hostwatch-agent

package hostwatch-collector "$bin_dir/hostwatch-collector" "adduser" \
  "hostwatch collector: stores hosts' samples and answers operators" \
  "Receives the agents' samples, stores them, evaluates alert rules and
answers PromQL queries (gRPC and a Prometheus-compatible HTTP API). The
service starts once /etc/hostwatch/collector.toml exists."
daemon hostwatch-collector collector
finish hostwatch-collector

package hostwatch "$bin_dir/hostwatch" "" \
  "command-line client of hostwatch for operators" \
  "Queries a hostwatch collector, manages certificates, enrollment
tokens, hosts and alerts."
install -d -m 0755 "$work/hostwatch/etc/hostwatch"
install -m 0644 "$root/deploy/cli.toml" "$work/hostwatch/etc/hostwatch/cli.toml.example"
echo "/etc/hostwatch/cli.toml.example" > "$work/hostwatch/DEBIAN/conffiles"
finish hostwatch
