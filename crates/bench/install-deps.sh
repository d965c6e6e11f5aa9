#!/usr/bin/env bash
# Installs what `hostwatch-bench` compares against, from Debian packages:
# prometheus-node-exporter (for `hostwatch-bench agent`). The bench starts
# its own node_exporter on a loopback port; the packaged service, if it
# starts, is left alone.
set -euo pipefail
if command -v prometheus-node-exporter >/dev/null; then
  echo "prometheus-node-exporter: $(prometheus-node-exporter --version 2>&1 | head -1)"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus-node-exporter >/dev/null
echo "prometheus-node-exporter: $(prometheus-node-exporter --version 2>&1 | head -1)"
