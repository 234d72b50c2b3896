#!/usr/bin/env bash
# The fleet benchmark's floor: plain OpenSSH fan-out, one connection and one command per
# host, all hosts at once, doing the same fix as the playbooks (ip_forward on now and in
# /etc/sysctl.conf; the MASQUERADE rule, added only if missing). Fails if any host fails.
#   floor.sh SSH_CONFIG IP...
set -euo pipefail
cfg=$1
shift
fix='sysctl -qw net.ipv4.ip_forward=1 &&
{ grep -qE "^[[:space:]]*net\.ipv4\.ip_forward[[:space:]]*=[[:space:]]*1[[:space:]]*$" /etc/sysctl.conf ||
  echo "net.ipv4.ip_forward = 1" >>/etc/sysctl.conf; } &&
{ iptables -t nat -C POSTROUTING -s 10.250.0.0/16 -d 172.16.0.0/12 -j MASQUERADE 2>/dev/null ||
  iptables -t nat -A POSTROUTING -s 10.250.0.0/16 -d 172.16.0.0/12 -j MASQUERADE; }'
pids=()
for ip in "$@"; do
  # -n: stdin from /dev/null, so a background ssh cannot read the caller's input.
  ssh -n -F "$cfg" "$ip" "$fix" &
  pids+=($!)
done
failed=0
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || { echo "floor: ${*:$((i + 1)):1} failed" >&2; failed=1; }
done
exit "$failed"
