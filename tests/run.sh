#!/usr/bin/env bash
# Runs every kfix test on a fresh Debian machine, installing what the tests need first
# (as root: apt packages for the lab, the lab's debootstrapped root filesystem).
#   bash tests/run.sh            # everything: format, lints, unit and lab tests, and a
#                                # bounded fuzz run of every parser (tests/fuzz.sh)
# The lab tests create network namespaces and need root; as non-root they skip.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) -eq 0 ]]; then
  bash tests/lab/install-deps.sh
else
  echo "tests/run.sh: not root: lab tests will be skipped" >&2
fi
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked --all-targets
# The fuzz targets build with the same toolchain (RUSTC_BOOTSTRAP) and run 15 s each.
(cd fuzz && cargo fmt --check)
bash tests/fuzz.sh 15
