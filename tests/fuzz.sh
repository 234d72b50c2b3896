#!/usr/bin/env bash
# Builds every cargo-fuzz target (fuzz/) and runs each for a bounded time, on a corpus
# seeded from the shipped playbooks, inventories and webhook samples. A panic, a hang
# (-timeout) or runaway memory (-rss_limit_mb) fails the script with the input saved
# under fuzz/artifacts/. Stable Rust builds the targets with RUSTC_BOOTSTRAP=1.
#   bash tests/fuzz.sh [SECONDS_PER_TARGET] [--asan]     # default 15 s, no sanitizer
# tests/run.sh runs it with the default; longer runs: docs/safety.md ("Fuzzing").
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-15}
sanitizer=none
[[ "${2:-}" == --asan ]] && sanitizer=address
if ! command -v cargo-fuzz >/dev/null; then
  cargo install cargo-fuzz --locked --version 0.13.2
fi
export RUSTC_BOOTSTRAP=1
corpus=$(mktemp -d)
trap 'rm -rf "$corpus"' EXIT
mkdir -p "$corpus/playbook" "$corpus/inventory" "$corpus/webhook"
cp playbooks/*.yaml "$corpus/playbook/"
cp inventory/* "$corpus/inventory/"
cp fuzz/seeds/webhook/* "$corpus/webhook/"
cd fuzz
cargo fuzz build --sanitizer "$sanitizer"
for t in playbook inventory webhook; do
  echo "fuzz: $t for ${secs}s" >&2
  if ! cargo fuzz run --sanitizer "$sanitizer" "$t" "$corpus/$t" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=1024 -max_len=262144 >"$corpus/$t.log" 2>&1; then
    tail -n 60 "$corpus/$t.log" >&2
    echo "fuzz: $t found a failing input (fuzz/artifacts/$t/)" >&2
    exit 1
  fi
  grep -E '^Done' "$corpus/$t.log" >&2 || true
done
