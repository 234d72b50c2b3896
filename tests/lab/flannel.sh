#!/usr/bin/env bash
# A flannel-style data plane across lab hosts, built from the kernel's own parts as
# flannel's vxlan backend programs them (no flanneld): on each host a VXLAN flannel.1
# (VNI 1, port 8472, learning off, local = the host's address), with the lease's
# network address as a /32, and for every other host the permanent neighbour entry,
# FDB entry and onlink route flannel adds per lease; a cni0 bridge holding the host's
# pod subnet; one "pod" (network namespace `pod`, address .2 of the subnet) on a veth
# in cni0; /run/flannel/subnet.env and kube-flannel's 10-flannel.conflist.
#
#   flannel.sh up DIR NETWORK [--bridge docker0] [--whole-network] HOST...
#   e.g. flannel.sh up $D 10.244.0.0/16 h1 h2 h3
#
# NETWORK is a /16; the Nth host named gets lease A.B.N.0/24. Each host also gets two
# services kfix can restart: `flanneld` recreates flannel.1, its entries, subnet.env
# and the CNI config from /etc/kfix-lab/flannel.env; `kubelet` recreates the bridge and
# re-attaches the pod. On a light host (no systemd) they are SysV scripts, `service X
# status` 0 while "running" (started and not stopped); on a systemd host, oneshot units
# (RemainAfterExit). IP forwarding is turned on once, at `up` (a node's own setting,
# not the services'), and filter/nat tables are left as they are: tests add the rules
# of the software they stand for.
#
#   --bridge docker0   the pods' bridge is docker0 (report 001's docker0 + flannel
#                      hosts, no CNI configuration) instead of kube-flannel's cni0;
#                      HOST:docker0 sets it for one host
#   --whole-network    flannel before v0.6: flannel.1 holds the lease's address with the
#                      network's prefix (the kernel routes the whole network on it) and
#                      a permanent neighbour entry per remote pod, as flanneld's L3-miss
#                      handler answered them (report 000's `172.16.0.0/12 dev flannel.1`)
set -euo pipefail
HERE=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
LAB=$HERE/lab.sh

[[ ${1:-} == up && $# -ge 4 ]] || { echo "usage: flannel.sh up DIR NETWORK [--bridge NAME] [--whole-network] HOST..." >&2; exit 2; }
DIR=$2 NETWORK=$3; shift 3
BRIDGE=cni0 MODE=lease
while [[ ${1:-} == --* ]]; do
  case $1 in
    --bridge) BRIDGE=$2; shift 2 ;;
    --whole-network) MODE=network; shift ;;
    *) echo "flannel.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
HOSTS=("$@")
AB=${NETWORK%.*.*}
[[ $NETWORK == "$AB.0.0/16" ]] || { echo "flannel.sh: NETWORK must be A.B.0.0/16" >&2; exit 2; }

# One line per host: its address, its VTEP MAC and its lease number.
peers=()
for i in "${!HOSTS[@]}"; do
  n=$((i + 1))
  ip=$(cat "$DIR/hosts/${HOSTS[$i]%%:*}/ip")
  peers+=("$ip,0e:fa:00:00:00:$(printf %02x "$n"),$n")
done

# The stand-in for flanneld: idempotent, run at start and restart.
FLANNELD='#!/bin/sh
set -e
. /etc/kfix-lab/flannel.env
if ! ip link show dev flannel.1 >/dev/null 2>&1; then
  ip link add flannel.1 address "$VTEP_MAC" type vxlan id 1 local "$LOCAL" dev eth0 dstport 8472 nolearning
fi
ip link set flannel.1 mtu 1450
if [ "$MODE" = network ]; then ip addr replace "$AB.$N.0/16" dev flannel.1; else ip addr replace "$AB.$N.0/32" dev flannel.1; fi
ip link set flannel.1 up
for p in $PEERS; do
  ip=${p%%,*}; rest=${p#*,}; mac=${rest%%,*}; m=${rest#*,}
  [ "$m" = "$N" ] && continue
  bridge fdb replace "$mac" dev flannel.1 dst "$ip" self permanent
  if [ "$MODE" = network ]; then
    # The remote pod (.2) and the remote flannel.1 address (.0), as L3 misses added them.
    ip neigh replace "$AB.$m.2" lladdr "$mac" dev flannel.1 nud permanent
    ip neigh replace "$AB.$m.0" lladdr "$mac" dev flannel.1 nud permanent
  else
    ip neigh replace "$AB.$m.0" lladdr "$mac" dev flannel.1 nud permanent
    ip route replace "$AB.$m.0/24" via "$AB.$m.0" dev flannel.1 onlink
  fi
done
mkdir -p /run/flannel
printf "FLANNEL_NETWORK=%s\nFLANNEL_SUBNET=%s\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n" "$NETWORK" "$AB.$N.1/24" >/run/flannel/subnet.env
[ "$BRIDGE" = cni0 ] || exit 0
mkdir -p /etc/cni/net.d
[ -e /etc/cni/net.d/10-flannel.conflist ] || cat >/etc/cni/net.d/10-flannel.conflist <<EOF
{
  "name": "cbr0",
  "cniVersion": "0.3.1",
  "plugins": [
    {
      "type": "flannel",
      "delegate": {
        "hairpinMode": true,
        "isDefaultGateway": true
      }
    },
    {
      "type": "portmap",
      "capabilities": {
        "portMappings": true
      }
    }
  ]
}
EOF
'

# The stand-in for kubelet with the bridge CNI plugin: cni0 and the node's pod.
KUBELET='#!/bin/sh
set -e
. /etc/kfix-lab/flannel.env
if ! ip link show dev "$BRIDGE" >/dev/null 2>&1; then
  ip link add "$BRIDGE" type bridge
fi
ip addr replace "$AB.$N.1/24" dev "$BRIDGE"
ip link set "$BRIDGE" mtu 1450 up
[ -e /run/netns/pod ] || ip netns add pod
if ! ip link show dev vethpod >/dev/null 2>&1; then
  ip link add vethpod mtu 1450 type veth peer name eth0 netns pod
fi
ip link set vethpod master "$BRIDGE" up
ip -n pod link set lo up
ip -n pod link set eth0 mtu 1450 up
ip -n pod addr replace "$AB.$N.2/24" dev eth0
ip -n pod route replace default via "$AB.$N.1"
'

# A systemd host's units for the same stand-ins.
UNIT='[Unit]
Description=NAME stand-in (kfix lab, tests/lab/flannel.sh)
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/kfix-lab-NAME
'

# /etc/init.d/NAME: start/restart run the stand-in; status: started and not stopped.
INITD='#!/bin/sh
mkdir -p /run/kfix-lab
case "$1" in
  start|restart) /usr/local/sbin/kfix-lab-NAME && touch /run/kfix-lab/NAME.running ;;
  stop) rm -f /run/kfix-lab/NAME.running ;;
  status) [ -e /run/kfix-lab/NAME.running ] ;;
  *) echo "usage: $0 start|stop|restart|status" >&2; exit 2 ;;
esac
'

for i in "${!HOSTS[@]}"; do
  h=${HOSTS[$i]%%:*} n=$((i + 1)) bridge=$BRIDGE
  [[ ${HOSTS[$i]} == *:* ]] && bridge=${HOSTS[$i]#*:}
  ip=$(cat "$DIR/hosts/$h/ip")
  env="AB=$AB
N=$n
MODE=$MODE
BRIDGE=$bridge
NETWORK=$NETWORK
LOCAL=$ip
VTEP_MAC=0e:fa:00:00:00:$(printf %02x "$n")
PEERS=\"${peers[*]}\"
"
  bash "$LAB" exec "$DIR" "$h" -- bash -euc '
    mkdir -p /etc/kfix-lab /usr/local/sbin
    printf %s "$1" >/etc/kfix-lab/flannel.env
    printf %s "$2" >/usr/local/sbin/kfix-lab-flanneld
    printf %s "$3" >/usr/local/sbin/kfix-lab-kubelet
    chmod 0755 /usr/local/sbin/kfix-lab-flanneld /usr/local/sbin/kfix-lab-kubelet
    sysctl -qw net.ipv4.ip_forward=1
    if [ -d /run/systemd/system ]; then
      for s in flanneld kubelet; do printf %s "$5" | sed "s/NAME/$s/g" >/etc/systemd/system/$s.service; done
      systemctl daemon-reload
      systemctl start flanneld.service kubelet.service
    else
      mkdir -p /etc/init.d
      for s in flanneld kubelet; do printf %s "$4" | sed "s/NAME/$s/g" >/etc/init.d/$s; done
      chmod 0755 /etc/init.d/flanneld /etc/init.d/kubelet
      service flanneld start
      service kubelet start
    fi
  ' _ "$env" "$FLANNELD" "$KUBELET" "$INITD" "$UNIT"
done
