#!/usr/bin/env bash
# Installs what the kfix test lab needs on a Debian 12 machine (as root), then builds the
# lab hosts' root filesystem and the systemd hosts' layer on it (tests/lab/rootfs.sh).
# Idempotent: apt runs only when a package is missing; a finished rootfs is reused.
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")"
[[ $EUID -eq 0 ]] || { echo "install-deps: must run as root" >&2; exit 1; }

# python3 (with its stdlib) is used by `lab.sh snapshot` on the machine.
# prometheus-alertmanager routes alerts to `kfix serve` in its test; prometheus brings
# promtool, which checks and unit-tests the rules `kfix docs --alert-rules` writes.
# dpkg-dev's dpkg-scanpackages indexes the lab's offline apt repository (rootfs.sh).
# chromium renders the `kfix check --all` HTML page in its test.
# systemd-container's systemd-nspawn boots the systemd lab hosts (`lab.sh up --systemd`).
# strace counts the programs a faulty host runs for each tool (tests/bench_smoke.rs).
# rpm's rpmbuild and createrepo-c build the rpm repository of the lab's rpm hosts
# (tests/common/rpm.rs).
PKGS=(debootstrap openssh-client openssh-server iptables iproute2 util-linux procps python3 coreutils dpkg-dev chromium etcd-server etcd-client prometheus-alertmanager prometheus systemd-container strace rpm createrepo-c)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}" >&2
  # Keep package scripts from starting services (notably the machine's own sshd):
  # a policy-rc.d that denies every start, only if none exists, removed afterwards.
  POLICY=/usr/sbin/policy-rc.d
  if [[ ! -e $POLICY ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$POLICY"
    chmod 0755 "$POLICY"
    trap 'rm -f "$POLICY"' EXIT
  fi
  had_sshd=$(dpkg-query -W -f='${Status}' openssh-server 2>/dev/null | grep -c 'install ok installed' || true)
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
  if [[ "$had_sshd" == 0 ]] && command -v systemctl >/dev/null; then
    # Freshly installed by us: the lab runs its own sshd's; don't leave the machine's enabled.
    systemctl disable ssh.service ssh.socket >/dev/null 2>&1 || true
  fi
fi

./rootfs.sh
echo "install-deps: lab dependencies ready" >&2

# --- fleet benchmark (benches/fleet; its smoke test is tests/bench_smoke.rs) ----------------
# ansible-core + pyinfra in a venv from PyPI, the hosts' rootfs with python3, the plot's
# font. Idempotent; a few stamp checks when already done.
bash ../../benches/fleet/setup.sh
