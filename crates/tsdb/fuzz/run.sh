#!/usr/bin/env bash
# Runs every fuzz target of the store's decoders for a while and prints,
# per target, the executions libFuzzer reports. Installs cargo-fuzz (with
# cargo's own client, pinned by its lock file) under the target directory
# when it is missing; RUSTC_BOOTSTRAP because cargo-fuzz passes nightly
# flags (sanitizers) to the stable compiler.
#
#   crates/tsdb/fuzz/run.sh [SECONDS per target, default 60] [TARGET...]
#
# Crashes are left by libFuzzer in crates/tsdb/fuzz/artifacts/<target>/;
# the script stops at the first target that fails.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$repo/target}
root="$target_dir/cargo-fuzz"
if [ ! -x "$root/bin/cargo-fuzz" ]; then
  cargo install cargo-fuzz --locked --root "$root"
fi
# The sanitizer builds apart from the others (and their lock).
export PATH="$root/bin:$PATH" RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$target_dir/fuzz"
seconds=${1:-60}
shift || true
cd "$here/.."
if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi
for t in "${targets[@]}"; do
  log="$CARGO_TARGET_DIR/$t.log"
  if ! cargo fuzz run "$t" -- -max_total_time="$seconds" >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz target $t failed: see $log and $here/artifacts/$t/" >&2
    exit 1
  fi
  runs=$(grep -o 'Done [0-9]* runs in [0-9]* second(s)' "$log" | tail -1)
  echo "$t: ${runs:-no summary, see $log}"
done
