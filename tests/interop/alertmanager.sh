#!/usr/bin/env bash
# Interop with a real Alertmanager: installs Debian's prometheus-alertmanager
# if missing, starts it on loopback, runs a collector (whose rule fires at
# once) and an agent, and checks through Alertmanager's API that the alert
# arrived with its labels. Bounded: gives up after $INTEROP_TIMEOUT seconds.
set -euo pipefail
cd "$(dirname "$0")/../.."

timeout_s=${INTEROP_TIMEOUT:-60}
need=()
command -v prometheus-alertmanager >/dev/null || need+=(prometheus-alertmanager)
command -v curl >/dev/null || need+=(curl)
if ((${#need[@]})); then
  echo "installing ${need[*]}"
  apt-get update -qq
  # The package's own service is not used (nor started without systemd).
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

cargo build --locked -q --bin hostwatch --bin hostwatch-collector --bin hostwatch-agent
bin="${CARGO_TARGET_DIR:-target}/debug"

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  echo "interop: $*" >&2
  for log in "$work"/*.log; do echo "--- $log" >&2; tail -n 20 "$log" >&2; done
  exit 1
}

# A free loopback port: one nothing answers on.
free_port() {
  local port
  for port in $(shuf -i 20000-60000 -n 50); do
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return
    fi
  done
  fail "no free port"
}
am_port=$(free_port)
collector_port=$(free_port)

cat >"$work/alertmanager.yml" <<YAML
route:
  receiver: blackhole
  group_wait: 1s
receivers:
  - name: blackhole
YAML
prometheus-alertmanager --config.file="$work/alertmanager.yml" --storage.path="$work/am-data" \
  --web.listen-address="127.0.0.1:$am_port" --cluster.listen-address= >"$work/alertmanager.log" 2>&1 &
pids+=($!)

"$bin/hostwatch" certs init --dir "$work/pki" >/dev/null
"$bin/hostwatch" certs issue --role collector --name interop --dns localhost --ip 127.0.0.1 --dir "$work/pki" >/dev/null
"$bin/hostwatch" certs issue --role agent --name interop-host --dir "$work/pki" >/dev/null

cat >"$work/collector.toml" <<TOML
listen = "127.0.0.1:$collector_port"
data_dir = "data"
[tls]
ca = "pki/ca.pem"
cert = "pki/collector-interop.pem"
key = "pki/collector-interop.key"
[alerting]
default_rules = false
[[alerting.rules]]
name = "interop_memory"
kind = "threshold"
metric = "host_memory_available_bytes"
op = ">"
raise = 0.0
labels = { team = "interop", severity = "info" }
annotations = { summary = "{{ host }} has {{ value | bytes }} available" }
[[alerting.hooks]]
name = "alertmanager"
kind = "alertmanager"
url = "http://127.0.0.1:$am_port"
TOML
cat >"$work/agent.toml" <<TOML
collector = "127.0.0.1:$collector_port"
server_name = "localhost"
interval = "1s"
state_dir = "agent-state"
[tls]
ca = "pki/ca.pem"
cert = "pki/agent-interop-host.pem"
key = "pki/agent-interop-host.key"
TOML
"$bin/hostwatch-collector" --config "$work/collector.toml" >"$work/collector.log" 2>&1 &
pids+=($!)
"$bin/hostwatch-agent" --config "$work/agent.toml" >"$work/agent.log" 2>&1 &
pids+=($!)

deadline=$((SECONDS + timeout_s))
while ((SECONDS < deadline)); do
  alerts=$(curl -fsS "http://127.0.0.1:$am_port/api/v2/alerts" 2>/dev/null || true)
  if [[ $alerts == *'"alertname":"interop_memory"'* && $alerts == *'"team":"interop"'* \
     && $alerts == *'"host":"interop-host"'* && $alerts == *'"state":"active"'* ]]; then
    [[ $alerts == *'"summary":"interop-host has '* ]] || fail "annotations missing: $alerts"
    echo "interop: Alertmanager holds the alert with its labels and annotations"
    exit 0
  fi
  sleep 1
done
fail "no alert in Alertmanager after ${timeout_s}s: ${alerts:-}"
