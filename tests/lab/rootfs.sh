#!/usr/bin/env bash
# Builds (once) the Debian root filesystems of the lab's hosts:
#   ROOTFS         what every light host overlays (sshd, iproute2, iptables, ...: no systemd)
#   SYSTEMD_LAYER  an overlay layer on top of ROOTFS for systemd hosts (`lab.sh up
#                  --systemd`): systemd, dbus, Debian's docker.io. Light hosts never see it.
# Idempotent: each finished tree carries a stamp file and is reused. The layer's stamp
# names the base stamp it was built on, so a rebuilt base also rebuilds the layer.
set -euo pipefail
ROOTFS=${KFIX_LAB_ROOTFS:-/var/cache/kfix-lab/rootfs}
SYSTEMD_LAYER=${KFIX_LAB_SYSTEMD_LAYER:-$(dirname "$ROOTFS")/systemd-layer}
SUITE=${KFIX_LAB_SUITE:-bookworm}
MIRROR=${KFIX_LAB_MIRROR:-$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
STAMP_VERSION=7
SYSTEMD_STAMP_VERSION=1
# Downloaded into the rootfs's offline apt repository, not installed (see below).
REPO_PACKAGES=(open-iscsi)
PACKAGES=iproute2,iptables,iputils-ping,procps,openssh-server,openssh-client,sudo,kmod,init-system-helpers,python3-minimal,etcd-client,dnf,rpm
# Installed into the systemd layer only.
SYSTEMD_PACKAGES=(systemd systemd-sysv dbus docker.io)
LOG="$(dirname "$ROOTFS")/debootstrap.log"

build_base() {
  command -v debootstrap >/dev/null || { echo "lab: debootstrap missing (tests/lab/install-deps.sh installs it)" >&2; exit 1; }
  rm -rf "$ROOTFS.tmp"
  mkdir -p "$(dirname "$ROOTFS")"
  echo "lab: debootstrapping $SUITE into $ROOTFS (one time, a few minutes)" >&2
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOTFS.tmp" "$MIRROR" >"$LOG" 2>&1 || {
    tail -n 30 "$LOG" >&2; exit 1; }
  local R="$ROOTFS.tmp"
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
    >>"$LOG" 2>&1
  mkdir -p "$R/srv/kfix-lab-repo"
  mv "$R"/var/cache/apt/archives/*.deb "$R/srv/kfix-lab-repo/"
  (cd "$R/srv/kfix-lab-repo" && dpkg-scanpackages --multiversion . >Packages 2>/dev/null)
  echo 'deb [trusted=yes] file:/srv/kfix-lab-repo ./' >"$R/etc/apt/sources.list"
  rm -rf "$R"/var/lib/apt/lists/*
  chroot "$R" apt-get update -q >>"$LOG" 2>&1
  chroot "$R" apt-get clean
  echo "$STAMP_VERSION" >"$R/.kfix-lab-stamp"
  rm -rf "$ROOTFS"
  mv "$R" "$ROOTFS"
  echo "lab: rootfs ready" >&2
}

# The systemd layer is the upper directory of an overlay on ROOTFS in which apt installed
# SYSTEMD_PACKAGES (from the mirror, in a private mount namespace; ROOTFS itself is only
# read). Lab hosts stack it: lowerdir=SYSTEMD_LAYER:ROOTFS.
build_systemd_layer() {
  local T="$SYSTEMD_LAYER.tmp"
  rm -rf "$T"
  mkdir -p "$T/upper" "$T/work" "$T/merged"
  echo "lab: installing ${SYSTEMD_PACKAGES[*]} into the systemd layer $SYSTEMD_LAYER (one time)" >&2
  unshare --mount --propagation private -- bash -euo pipefail -c '
    R=$1 T=$2 M=$2/merged MIRROR=$3 SUITE=$4; shift 4
    mount -t overlay overlay -o "lowerdir=$R,upperdir=$T/upper,workdir=$T/work" "$M"
    mount -t proc proc "$M/proc"
    mount --bind /dev "$M/dev"
    mount -t tmpfs tmpfs "$M/run"
    mount -t tmpfs tmpfs "$M/tmp"
    # No service may start while packages install (there is no init in a chroot anyway).
    printf "#!/bin/sh\nexit 101\n" >"$M/usr/sbin/policy-rc.d"
    chmod 0755 "$M/usr/sbin/policy-rc.d"
    echo "deb $MIRROR $SUITE main" >"$M/etc/apt/sources.list.d/kfix-build.list"
    chroot "$M" apt-get update -q
    chroot "$M" env DEBIAN_FRONTEND=noninteractive apt-get install -q -y --no-install-recommends "$@"
    rm -f "$M/usr/sbin/policy-rc.d" "$M/etc/apt/sources.list.d/kfix-build.list"
    rm -rf "$M"/var/lib/apt/lists/*
    chroot "$M" apt-get update -q
    chroot "$M" apt-get clean

    # sshd as the systemd unit ssh.service, with the one host key the lab writes.
    echo "HostKey /etc/ssh/ssh_host_ed25519_key" >"$M/etc/ssh/sshd_config.d/kfix-lab-systemd.conf"
    # Tests start the docker they need; a booted host runs only systemd, journald, dbus
    # and sshd. No gettys (there is no console to log in on), no periodic apt/fstrim jobs.
    for u in docker.service docker.socket containerd.service apt-daily.timer apt-daily-upgrade.timer \
             dpkg-db-backup.timer e2scrub_all.timer fstrim.timer e2scrub_reap.service; do
      chroot "$M" systemctl disable "$u" >/dev/null 2>&1 || true
    done
    for u in console-getty.service getty@.service systemd-firstboot.service; do
      chroot "$M" systemctl mask "$u" >/dev/null 2>&1
    done
    chroot "$M" systemctl enable ssh.service >/dev/null 2>&1
  ' _ "$ROOTFS" "$T" "$MIRROR" "$SUITE" "${SYSTEMD_PACKAGES[@]}" >>"$LOG" 2>&1 || {
    tail -n 30 "$LOG" >&2; exit 1; }
  # The build also copied up files it merely touched; a stamp records the base it fits.
  echo "$STAMP_VERSION/$SYSTEMD_STAMP_VERSION" >"$T/upper/.kfix-lab-systemd-stamp"
  rm -rf "$SYSTEMD_LAYER"
  mv "$T/upper" "$SYSTEMD_LAYER"
  rm -rf "$T"
  echo "lab: systemd layer ready" >&2
}

if [[ ! -f "$ROOTFS/.kfix-lab-stamp" || "$(cat "$ROOTFS/.kfix-lab-stamp")" != "$STAMP_VERSION" ]]; then
  build_base
fi
if [[ ! -f "$SYSTEMD_LAYER/.kfix-lab-systemd-stamp" ||
      "$(cat "$SYSTEMD_LAYER/.kfix-lab-systemd-stamp")" != "$STAMP_VERSION/$SYSTEMD_STAMP_VERSION" ]]; then
  build_systemd_layer
fi
