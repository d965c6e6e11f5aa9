#!/usr/bin/env bash
# Compatibility with Prometheus itself: installs Debian's
# prometheus package (prometheus and promtool, 2.42 on bookworm) if
# missing, then runs the harness in tests/tests/compat.rs, which loads the
# same samples into Prometheus and a hostwatch collector and compares
# their HTTP APIs' answers to every query of tests/compat/queries.txt, and
# tests/tests/promtool.rs, promtool as a client of a collector and
# `promtool check metrics` on the collector's and the agent's /metrics.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  echo "installing prometheus"
  apt-get update -qq
  # The package's own service is not used (nor started without systemd):
  # the harness starts its own server on loopback over a temporary dir.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
prometheus --version 2>&1 | head -n 1

cargo test --locked -p hostwatch-tests --test compat --test promtool -- --include-ignored --nocapture
