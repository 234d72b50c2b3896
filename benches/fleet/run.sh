#!/usr/bin/env bash
# The fleet benchmark: kfix vs ansible-core vs pyinfra vs plain ssh on a lab of N light
# hosts (tests/lab), every run verified on every host. Writes benches/fleet/results/
# latest.json and fleet.png and regenerates the tables in docs/performance.md.
# As root:
#   bash benches/fleet/run.sh [--sizes 10,50,100,200] [--reps 3] [--kex default,curve25519]
#                             [--tools kfix,kfix_rerun,kfix_check,ansible,pyinfra,floor]
#   bash benches/fleet/run.sh --render benches/fleet/results/latest.json   # docs + plot only
#   bash benches/fleet/run.sh --render a.json,b.json --out merged.json      # several runs as one
# Other options: cargo bench --bench fleet -- --help.
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.."
[[ $EUID -eq 0 ]] || { echo "fleet: must run as root (the lab creates namespaces)" >&2; exit 1; }

[[ -f ${KFIX_LAB_ROOTFS_BASE:-/var/cache/kfix-lab/rootfs}/.kfix-lab-stamp ]] || bash tests/lab/install-deps.sh
bash benches/fleet/setup.sh

work=$(mktemp -d /tmp/kfix-fleet.XXXXXX)
# The harness tears its labs down itself; this is for an interrupted run. A failed run
# keeps its files (each tool's output) for a post-mortem.
cleanup() {
  local rc=$?
  bash tests/lab/lab.sh down "$work/lab" >/dev/null 2>&1 || true
  bash tests/lab/lab.sh down "$work/profile-lab" >/dev/null 2>&1 || true
  if ((rc == 0)); then rm -rf --one-file-system "$work"; else echo "fleet: files kept in $work" >&2; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "fleet: load average $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs (other work on the machine distorts the numbers)" >&2
KFIX_BENCH_COMMAND="bash benches/fleet/run.sh${*:+ $*}" \
  cargo bench --bench fleet -- --work "$work" "$@"
