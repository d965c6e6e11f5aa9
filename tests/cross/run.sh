#!/usr/bin/env bash
# The agent compiles for macOS and FreeBSD: `cargo check` of
# hostwatch-agent for x86_64-apple-darwin and x86_64-unknown-freebsd, so
# that its Linux-only code stays behind cfg(target_os = "linux")
# (ARCHITECTURE.md). Nothing is linked or run.
#
# Installs what it needs, each step bounded in time and failing with a
# message that says which: the two targets' standard library (rustup),
# and, for macOS, Zig from PyPI (the ziglang package) with cargo-zigbuild:
# ring's build script compiles C for the target, and macOS's C headers
# (TargetConditionals.h) come with no Linux compiler; Zig ships them.
# FreeBSD's C is compiled by the machine's gcc.
set -euo pipefail
cd "$(dirname "$0")/../.."

targets=(x86_64-apple-darwin x86_64-unknown-freebsd)
fail() {
  echo "--- cross check: $*" >&2
  exit 1
}

installed=$(rustup target list --installed)
for target in "${targets[@]}"; do
  if ! grep -qx "$target" <<<"$installed"; then
    timeout 300 rustup target add "$target" \
      || fail "cannot install the standard library of $target with rustup (within 300 s)"
  fi
done

venv="${HOSTWATCH_CROSS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/hostwatch-cross}"
if [[ ! -x "$venv/bin/cargo-zigbuild" || ! -x "$venv/bin/python-zig" ]]; then
  timeout 60 python3 -m venv "$venv" || fail "cannot make a Python venv in $venv"
  timeout 300 "$venv/bin/pip" install -q ziglang==0.15.1 cargo-zigbuild==0.20.1 \
    || fail "cannot install ziglang and cargo-zigbuild from PyPI (within 300 s)"
fi
export PATH="$venv/bin:$PATH"

echo "--- cargo check -p hostwatch-agent --target x86_64-unknown-freebsd"
timeout 1800 cargo check --locked -p hostwatch-agent --target x86_64-unknown-freebsd \
  || fail "hostwatch-agent does not compile for x86_64-unknown-freebsd"
echo "--- cargo zigbuild check -p hostwatch-agent --target x86_64-apple-darwin"
timeout 1800 cargo-zigbuild check --locked -p hostwatch-agent --target x86_64-apple-darwin \
  || fail "hostwatch-agent does not compile for x86_64-apple-darwin"
