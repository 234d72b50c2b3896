#!/usr/bin/env bash
# What starting one program costs on a lab host: each command run 200 times in a loop
# inside host h1 of a one-host lab, wall time per run (the loop is alone on the machine,
# so this is the fork + exec + the program's own work). Not part of the sweep; the
# numbers back docs/performance.md's "What limits kfix at scale".
#
#   bash benches/fleet/program-cost.sh [WORKDIR]
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
lab=$here/tests/lab/lab.sh
if [[ $# -ge 1 ]]; then work=$1; made=; else work=$(mktemp -d /tmp/kfix-program-cost.XXXXXX); made=1; fi
trap 'bash "$lab" down "$work" >/dev/null 2>&1 || true; [[ -z $made ]] || rm -rf "$work"' EXIT
bash "$lab" up "$work" 1 >/dev/null 2>&1 || { echo "program-cost: cannot start the lab (tests/lab/install-deps.sh?)" >&2; exit 1; }
bash "$lab" exec "$work" h1 -- bash -s <<'SCRIPT'
per() { # NAME CMD...: microseconds per run of CMD (200 runs)
  local name=$1 a b i; shift
  a=$(date +%s%N)
  for i in $(seq 200); do "$@" >/dev/null 2>&1; done
  b=$(date +%s%N)
  printf '%-28s %5d us\n' "$name" $(( (b - a) / 200000 ))
}
per 'true' /bin/true
per 'cat /proc/sys/...' cat /proc/sys/net/ipv4/ip_forward
per 'stat -L -c ...' stat -L -c '%a %u %g %s' -- /etc/sysctl.conf
per 'uname -n -r -m' uname -n -r -m
per 'id -u' id -u
per 'iptables -t nat -C' iptables -w -t nat -C POSTROUTING -s 192.0.2.0/24 -j MASQUERADE
per 'iptables -t nat -S' iptables -w -t nat -S
per 'ip -d -j link show dev lo' ip -d -j link show dev lo
per 'sh -c :' sh -c :
per 'bash -c :' bash -c :
sh -c 'a=$(date +%s%N); i=0; while [ $i -lt 1000 ]; do ( : ); i=$((i + 1)); done
  b=$(date +%s%N); printf "%-28s %5d us\n" "subshell ( : ) in sh" $(( (b - a) / 1000000 ))'
SCRIPT
