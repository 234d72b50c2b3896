#!/usr/bin/env bash
# Prepares what the fleet benchmark needs besides the test lab (as root, idempotent, fast
# when already done):
#   VENV    a Python venv with ansible-core and pyinfra from PyPI (pinned below)
#   ROOTFS  a copy of the lab's host root filesystem plus Debian's full python3 standard
#           library: ansible's modules need json, zipfile, ... on the target and the lab
#           rootfs has python3-minimal only. kfix, pyinfra and plain ssh do not need it.
# Also the plot's font (fonts-dejavu-core, from apt if missing).
# Run tests/lab/install-deps.sh first (it builds the lab rootfs this copies).
#   bash benches/fleet/setup.sh
set -euo pipefail
BENCH_CACHE=${KFIX_BENCH_CACHE:-/var/cache/kfix-bench}
VENV=$BENCH_CACHE/venv
ROOTFS=$BENCH_CACHE/rootfs
LAB_ROOTFS=${KFIX_LAB_ROOTFS_BASE:-/var/cache/kfix-lab/rootfs}
ANSIBLE_CORE_VERSION=2.19.14
PYINFRA_VERSION=3.10.0
ROOTFS_VERSION=1
MIRROR=$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)
MIRROR=${MIRROR:-http://deb.debian.org/debian}
LOG=$BENCH_CACHE/setup.log

[[ $EUID -eq 0 ]] || { echo "fleet setup: must run as root" >&2; exit 1; }
mkdir -p "$BENCH_CACHE"

# --- the plot's font (benches/fleet/report.rs) ---------------------------------------------
if [[ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]]; then
  echo "fleet setup: installing fonts-dejavu-core" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends fonts-dejavu-core >>"$LOG" 2>&1 || {
    apt-get update -q >>"$LOG" 2>&1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends fonts-dejavu-core >>"$LOG" 2>&1; }
fi

# --- the venv -------------------------------------------------------------------------
want="ansible-core==$ANSIBLE_CORE_VERSION pyinfra==$PYINFRA_VERSION"
if [[ ! -f $VENV/.kfix-bench-stamp || "$(cat "$VENV/.kfix-bench-stamp")" != "$want" ]]; then
  echo "fleet setup: installing $want into $VENV" >&2
  [[ -x $VENV/bin/python ]] || python3 -m venv "$VENV"
  # shellcheck disable=SC2086 # $want is two requirement words
  "$VENV/bin/pip" install -q --disable-pip-version-check $want >>"$LOG" 2>&1 || {
    tail -n 20 "$LOG" >&2; exit 1; }
  echo "$want" >"$VENV/.kfix-bench-stamp"
fi

# --- the hosts' root filesystem ---------------------------------------------------------
[[ -f $LAB_ROOTFS/.kfix-lab-stamp ]] || {
  echo "fleet setup: no lab rootfs at $LAB_ROOTFS (run tests/lab/install-deps.sh)" >&2; exit 1; }
stamp="$(cat "$LAB_ROOTFS/.kfix-lab-stamp")/$ROOTFS_VERSION"
if [[ ! -f $ROOTFS/.kfix-bench-stamp || "$(cat "$ROOTFS/.kfix-bench-stamp")" != "$stamp" ]]; then
  echo "fleet setup: building $ROOTFS (lab rootfs + python3; one time)" >&2
  T=$ROOTFS.tmp
  rm -rf --one-file-system "$T"
  cp -a "$LAB_ROOTFS" "$T"
  # apt from the machine's mirror, in a private mount namespace; the copy's own apt
  # sources (the lab's offline repository) are restored afterwards.
  unshare --mount --propagation private -- bash -euo pipefail -c '
    T=$1 MIRROR=$2
    mount -t proc proc "$T/proc"
    mount --bind /dev "$T/dev"
    mount -t tmpfs tmpfs "$T/run"
    mount -t tmpfs tmpfs "$T/tmp"
    printf "#!/bin/sh\nexit 101\n" >"$T/usr/sbin/policy-rc.d"
    chmod 0755 "$T/usr/sbin/policy-rc.d"
    echo "deb $MIRROR bookworm main" >"$T/etc/apt/sources.list.d/kfix-bench.list"
    chroot "$T" apt-get update -q
    chroot "$T" env DEBIAN_FRONTEND=noninteractive apt-get install -q -y --no-install-recommends python3
    rm -f "$T/usr/sbin/policy-rc.d" "$T/etc/apt/sources.list.d/kfix-bench.list"
    rm -rf "$T"/var/lib/apt/lists/*
    chroot "$T" apt-get update -q
    chroot "$T" apt-get clean
    chroot "$T" python3 -c "import json, zipfile, base64, tempfile, shutil, selectors"
  ' _ "$T" "$MIRROR" >>"$LOG" 2>&1 || { tail -n 30 "$LOG" >&2; exit 1; }
  echo "$stamp" >"$T/.kfix-bench-stamp"
  rm -rf --one-file-system "$ROOTFS"
  mv "$T" "$ROOTFS"
fi
echo "fleet setup: ready ($VENV, $ROOTFS)" >&2
