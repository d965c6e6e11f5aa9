#!/usr/bin/env bash
# Installs what the e-mail hook's tests (crates/alerting/tests/email.rs)
# run against: Python's aiosmtpd, a real SMTP server with STARTTLS, SMTPS
# and AUTH, in a virtual environment under the target directory
# ($CARGO_TARGET_DIR, target/ by default), where the tests look for it.
set -euo pipefail
cd "$(dirname "$0")/../../../.."

target=${CARGO_TARGET_DIR:-target}
venv="$target/smtp-venv"

if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  echo "installing python3-venv"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3 python3-venv >/dev/null
fi
if [[ ! -x "$venv/bin/python" ]]; then
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import aiosmtpd' 2>/dev/null; then
  echo "installing aiosmtpd into $venv"
  "$venv/bin/python" -m pip install -q 'aiosmtpd>=1.4,<2'
fi
# Missing now means the installation failed: the tests must not skip.
"$venv/bin/python" -c 'import aiosmtpd; print("aiosmtpd", aiosmtpd.__version__)'
