#!/usr/bin/env bash
# Installs what `hostwatch-bench` compares against, from Debian packages:
# prometheus-node-exporter (for `hostwatch-bench agent`) and prometheus,
# whose promtool builds TSDB blocks (for `hostwatch-bench storage` and
# `promql`, which also runs the server). The
# benches start their own processes; packaged services, if they start,
# are left alone.
set -euo pipefail
missing=()
command -v prometheus-node-exporter >/dev/null || missing+=(prometheus-node-exporter)
command -v promtool >/dev/null || missing+=(prometheus)
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "prometheus-node-exporter: $(prometheus-node-exporter --version 2>&1 | head -1)"
echo "promtool: $(promtool --version 2>&1 | head -1)"
