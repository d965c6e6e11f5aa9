#!/usr/bin/env bash
# Forwarding into real receivers: installs Debian's prometheus (2.42 on
# bookworm) and victoria-metrics (1.79, single node) if missing, then runs
# tests/tests/remote_write.rs, which starts both on loopback and checks
# that a collector forwards every stored sample to them across a SIGKILL.
set -euo pipefail
cd "$(dirname "$0")/../.."

missing=()
command -v prometheus >/dev/null || missing+=(prometheus)
command -v victoria-metrics >/dev/null || missing+=(victoria-metrics)
if ((${#missing[@]} > 0)); then
  echo "installing ${missing[*]}"
  apt-get update -qq
  # The packages' own services are not used (nor started without
  # systemd): the test starts its own servers over temporary directories.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
prometheus --version 2>&1 | head -n 1
victoria-metrics -version 2>&1 | head -n 1

cargo test --locked -p hostwatch-tests --test remote_write -- --include-ignored --nocapture
