#!/usr/bin/env bash
# Builds (once) the Debian root filesystem that every lab host overlays.
# Idempotent: a finished rootfs carries a stamp file and is reused.
set -euo pipefail
ROOTFS=${KFIX_LAB_ROOTFS:-/var/cache/kfix-lab/rootfs}
SUITE=${KFIX_LAB_SUITE:-bookworm}
MIRROR=${KFIX_LAB_MIRROR:-$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
STAMP_VERSION=5
# Downloaded into the rootfs's offline apt repository, not installed (see below).
REPO_PACKAGES=(open-iscsi)
PACKAGES=iproute2,iptables,procps,openssh-server,openssh-client,sudo,kmod,init-system-helpers,python3-minimal,etcd-client
if [[ -f "$ROOTFS/.kfix-lab-stamp" && "$(cat "$ROOTFS/.kfix-lab-stamp")" == "$STAMP_VERSION" ]]; then
  exit 0
fi
command -v debootstrap >/dev/null || { echo "lab: debootstrap missing (tests/lab/install-deps.sh installs it)" >&2; exit 1; }
rm -rf "$ROOTFS.tmp"
mkdir -p "$(dirname "$ROOTFS")"
echo "lab: debootstrapping $SUITE into $ROOTFS (one time, a few minutes)" >&2
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOTFS.tmp" "$MIRROR" >"$(dirname "$ROOTFS")/debootstrap.log" 2>&1 || {
  tail -n 30 "$(dirname "$ROOTFS")/debootstrap.log" >&2; exit 1; }
R="$ROOTFS.tmp"
# The lab's sshd: key auth only, no DNS lookups, root allowed by key.
cat >"$R/etc/ssh/sshd_config.d/kfix-lab.conf" <<'CONF'
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
UsePAM no
MaxStartups 200:30:400
MaxSessions 64
CONF
rm -f "$R"/etc/ssh/ssh_host_*
# An unprivileged operator with passwordless sudo, for become tests.
chroot "$R" useradd -m -s /bin/bash kfixop
echo 'kfixop ALL=(ALL) NOPASSWD:ALL' >"$R/etc/sudoers.d/kfixop"
chmod 0440 "$R/etc/sudoers.d/kfixop"
# Debian's own layout that F3 must respect.
[[ -L "$R/etc/sysctl.d/99-sysctl.conf" ]] || ln -sf ../sysctl.conf "$R/etc/sysctl.d/99-sysctl.conf"
# An offline apt repository: lab hosts have no route to a mirror, so their apt knows
# only /srv/kfix-lab-repo, holding what playbooks install (F13's open-iscsi) with its
# dependencies as this rootfs resolves them. `apt-get install` then runs for real.
chroot "$R" apt-get clean
chroot "$R" apt-get install -q --download-only -y --no-install-recommends "${REPO_PACKAGES[@]}" \
  >>"$(dirname "$ROOTFS")/debootstrap.log" 2>&1
mkdir -p "$R/srv/kfix-lab-repo"
mv "$R"/var/cache/apt/archives/*.deb "$R/srv/kfix-lab-repo/"
(cd "$R/srv/kfix-lab-repo" && dpkg-scanpackages --multiversion . >Packages 2>/dev/null)
echo 'deb [trusted=yes] file:/srv/kfix-lab-repo ./' >"$R/etc/apt/sources.list"
rm -rf "$R"/var/lib/apt/lists/*
chroot "$R" apt-get update -q >>"$(dirname "$ROOTFS")/debootstrap.log" 2>&1
chroot "$R" apt-get clean
echo "$STAMP_VERSION" >"$R/.kfix-lab-stamp"
rm -rf "$ROOTFS"
mv "$R" "$ROOTFS"
echo "lab: rootfs ready" >&2
