#!/usr/bin/env bash
# The web console in a real browser: installs Debian's chromium and, in a
# virtual environment under the target directory, Python's playwright
# (pointed at that chromium; `playwright install`, which downloads
# browsers, is never run), builds the collector, agent and CLI, then runs
# tests/console/test_console.py against a real collector and agent.
# Screenshots go to $CARGO_TARGET_DIR/console-screenshots (target/ by default).
set -euo pipefail
cd "$(dirname "$0")/../.."

target=${CARGO_TARGET_DIR:-target}
venv="$target/console-venv"

missing=()
command -v chromium >/dev/null || missing+=(chromium)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3 python3-venv)
if ((${#missing[@]} > 0)); then
  echo "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [[ ! -x "$venv/bin/python" ]]; then
  python3 -m venv "$venv"
fi
# client_certificates, which the test signs in with, came in playwright 1.46.
if ! "$venv/bin/python" -c 'import playwright' 2>/dev/null; then
  echo "installing playwright (Python package only)"
  "$venv/bin/python" -m pip install -q 'playwright>=1.46'
fi

# Missing now means the installation failed: the test must not pass without them.
[[ -x /usr/bin/chromium ]] || { echo "FAIL: /usr/bin/chromium is missing" >&2; exit 1; }
"$venv/bin/python" -c 'import playwright' || { echo "FAIL: playwright is missing" >&2; exit 1; }
chromium --version 2>/dev/null | head -n 1
"$venv/bin/python" -m pip show playwright | grep '^Version' | sed 's/^/playwright /'

cargo build --locked -p hostwatch-collector -p hostwatch-agent -p hostwatch
"$venv/bin/python" tests/console/test_console.py \
  --bin-dir "$target/debug" --out "$target/console-screenshots"
