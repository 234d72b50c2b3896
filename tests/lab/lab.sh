#!/usr/bin/env bash
# kfix test lab: N "hosts" that are real sshd's, each in its own network namespace, mount
# namespace (overlayfs over a shared Debian rootfs), UTS namespace and PID namespace, all
# on one bridge in a controller namespace. Nothing is changed in the machine's root network namespace
# or its /etc. See tests/lab/README.md.
#
#   lab.sh up DIR N [--systemd hA,hB]  create hosts h1..hN, state in DIR; the named ones
#                                    boot systemd (systemd-nspawn -b) instead of a bare sshd
#   lab.sh exec DIR hN -- CMD...     run CMD inside host hN (its netns, mounts, root, hostname, PIDs)
#   lab.sh ctl DIR -- CMD...         run CMD in the controller netns (where kfix runs)
#   lab.sh snapshot DIR hN [--exclude PATH|GLOB]...   canonical text dump of hN's state
#   lab.sh stop-sshd DIR hN          stop hN's sshd (host stays up: exec/snapshot still work)
#   lab.sh start-sshd DIR hN         start it again and wait until it accepts connections
#   lab.sh down DIR                  tear everything down (idempotent)
set -euo pipefail

ROOTFS=${KFIX_LAB_ROOTFS:-/var/cache/kfix-lab/rootfs}
SYSTEMD_LAYER=${KFIX_LAB_SYSTEMD_LAYER:-$(dirname "$ROOTFS")/systemd-layer}
SELF=$(readlink -f "${BASH_SOURCE[0]}")
HOST_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH="$PATH:/usr/sbin:/sbin"

die() { echo "lab: $*" >&2; exit 1; }
usage() { sed -n '7,14p' "$SELF" | sed 's/^# \{0,1\}//' >&2; exit 2; }

# --- helpers shared by the subcommands -----------------------------------------------

# abs_dir DIR: absolute, symlink-free path (DIR must exist).
abs_dir() { (cd "$1" 2>/dev/null && pwd -P) || die "no such lab dir: $1"; }
lab_id() { printf '%s' "$1" | sha1sum | cut -c1-6; }
ctl_ns() { echo "kfx-$1-c"; }
host_ns() { echo "kfx-$1-$2"; }
host_ip() { local i=$1; echo "10.250.$((i / 200)).$((i % 200 + 10))"; }
# Fixed link-layer addresses, so the lab's neighbour entries can be written up front:
# host i's eth0, and the controller's bridge.
host_mac() { local i=$1; printf '02:6b:66:%02x:%02x:%02x' $((i >> 16 & 255)) $((i >> 8 & 255)) $((i & 255)); }
BRIDGE_MAC=02:6b:66:ff:ff:01

# ns_inode NSNAME: inode of the named netns ("" if absent).
ns_inode() { stat -L -c %i "/run/netns/$1" 2>/dev/null || true; }

# pid_in_ns PID NSNAME: true if PID is alive, not a zombie, and lives in netns NSNAME.
# Guards every kill/nsenter against a recycled PID.
pid_in_ns() {
  local pid=$1 ino want
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  want=$(ns_inode "$2"); [[ -n "$want" ]] || return 1
  ino=$(stat -L -c %i "/proc/$pid/ns/net" 2>/dev/null) || return 1
  [[ "$ino" == "$want" ]] || return 1
  [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]]
}

# host_pid DIR ID HOST: pid of the process that *is* the host (nsenter target), or die.
host_pid() {
  local dir=$1 id=$2 h=$3 pid
  [[ -d "$dir/hosts/$h" ]] || die "no host $h in lab $dir"
  pid=$(cat "$dir/hosts/$h/pid" 2>/dev/null || true)
  pid_in_ns "$pid" "$(host_ns "$id" "$h")" || die "host $h is not running (see $dir/hosts/$h/sshd.log)"
  echo "$pid"
}

# wait_tcp CTLNS TIMEOUT IP...: wait until every IP accepts TCP on port 22 (checked
# from inside the controller netns). Prints the IPs that never came up; fails if any.
wait_tcp() {
  local ctl=$1 timeout=$2; shift 2
  ip netns exec "$ctl" bash -c '
    deadline=$((SECONDS + $1)); shift; pending=("$@")
    while ((${#pending[@]})); do
      left=()
      for ip in "${pending[@]}"; do
        timeout 2 bash -c "exec 3<>/dev/tcp/$ip/22" 2>/dev/null || left+=("$ip")
      done
      pending=("${left[@]+"${left[@]}"}")
      ((${#pending[@]})) || break
      ((SECONDS < deadline)) || { echo "${pending[*]}"; exit 1; }
      sleep 0.1
    done' _ "$timeout" "$@"
}

# write_identity DIR hN MERGED N: the host's name, /etc/hosts, ssh host key and the lab's
# authorized key, written into the overlay's upper layer (never the machine's /etc).
# Needs /proc and /dev in MERGED (chroot ssh-keygen, usermod).
write_identity() {
  local dir=$1 h=$2 m=$3 n=$4 j home uid gid
  echo "$h" >"$m/etc/hostname"
  {
    printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' "$h"
    printf '10.250.0.1\tctl\n'
    # Arithmetic in place of host_ip's subshell: N hosts each writing N lines would
    # otherwise fork N² times while the lab starts (10⁶ at N = 1000).
    for ((j = 1; j <= n; j++)); do printf '10.250.%d.%d\th%d\n' $((j / 200)) $((j % 200 + 10)) "$j"; done
  } >"$m/etc/hosts"
  if [[ ! -e "$m/etc/ssh/ssh_host_ed25519_key" ]]; then
    # ed25519 only: `ssh-keygen -A` costs ~0.25 s CPU per host for the RSA key.
    chroot "$m" ssh-keygen -q -t ed25519 -N '' -C "root@$h" -f /etc/ssh/ssh_host_ed25519_key
  fi
  cp "$m/etc/ssh/ssh_host_ed25519_key.pub" "$dir/hosts/$h/hostkey.pub"
  # useradd leaves kfixop's password as "!" (locked); with UsePAM no sshd refuses even key
  # logins for locked accounts. "*" = no password, but not locked.
  grep -q '^kfixop:\*:' "$m/etc/shadow" || chroot "$m" usermod -p '*' kfixop
  for home in /root /home/kfixop; do
    uid=$(stat -c %u "$m$home"); gid=$(stat -c %g "$m$home")
    install -d -m 0700 -o "$uid" -g "$gid" "$m$home/.ssh"
    install -m 0600 -o "$uid" -g "$gid" "$dir/id_ed25519.pub" "$m$home/.ssh/authorized_keys"
  done
}

# record_self FILE: write this process's PID as the machine numbers it (the redirection
# is opened by this bash itself, and /proc here is the machine's, not the host's) into
# FILE, atomically: readers poll for it.
record_self() {
  local me
  read -r me _ </proc/self/stat && echo "$me" >"$1.tmp" && mv "$1.tmp" "$1"
}

# --- the host's own process (runs inside the host netns + a private mount/UTS/PID ns) --
#
# Process layout per host (all PIDs recorded in DIR/hosts/hN/, as the machine numbers
# them: the host has a PID namespace of its own, where this bash is PID 1, so that the
# host's `pgrep` and /proc see its own processes only, as on a real node):
#   supervisor.pid  this bash: mounts the filesystem, then starts/reaps sshd on request;
#                   when it ends, the kernel ends everything else in the host
#   pid             `sleep infinity` chrooted into the host root: the nsenter target that
#                   *is* the host (its netns, mount ns, UTS ns, PID ns, root and cwd). It
#                   outlives sshd, so exec/snapshot work while sshd is stopped.
#   sshd.pid        `sshd -D -e` chrooted into the host root, port 22 (log: sshd.log)
host_main() {
  local dir=$1 i=$2 n=$3
  local h="h$i" hd="$dir/hosts/h$i" m="$dir/hosts/h$i/merged" ip
  ip=$(host_ip "$i")
  record_self "$hd/supervisor.pid"

  ip addr add "$ip/16" dev eth0
  ip link set eth0 up
  ip link set lo up
  # The controller's address, resolved once and for good: permanent entries are not
  # counted against the kernel's neighbour-table limit (gc_thresh3, shared by every
  # network namespace), which a lab of 1000 hosts would otherwise exceed.
  ip neigh replace 10.250.0.1 lladdr "$BRIDGE_MAC" dev eth0 nud permanent
  echo "$h" >/proc/sys/kernel/hostname

  mkdir -p "$hd/upper" "$hd/work" "$m"
  mount -t overlay overlay -o "lowerdir=$ROOTFS,upperdir=$hd/upper,workdir=$hd/work" "$m"
  mount -t proc proc "$m/proc"
  mount -t sysfs sysfs "$m/sys"          # fresh sysfs: /sys/class/net = this netns's links
  mount --bind /dev "$m/dev"             # non-recursive: pts/shm below get their own mounts
  mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts "$m/dev/pts"
  mount --bind "$m/dev/pts/ptmx" "$m/dev/ptmx"
  mount -t tmpfs -o mode=1777 tmpfs "$m/dev/shm"
  mount -t tmpfs -o mode=0755 tmpfs "$m/run"
  mount -t tmpfs -o mode=1777 tmpfs "$m/tmp"
  mkdir -p "$m/run/sshd" "$m/run/lock" && chmod 0755 "$m/run/sshd"

  write_identity "$dir" "$h" "$m" "$n"

  # $! is a PID of the host's namespace (what this bash kills and waits for); each
  # child records its PID as the machine sees it before it becomes the program.
  local holder sshd=""
  (record_self "$hd/pid" && exec chroot "$m" /bin/sleep infinity) &
  holder=$!

  start_sshd() {
    if [[ -n "$sshd" ]] && kill -0 "$sshd" 2>/dev/null; then return 0; fi
    (record_self "$hd/sshd.pid" && exec chroot "$m" /usr/sbin/sshd -D -e -h /etc/ssh/ssh_host_ed25519_key) &
    sshd=$!
  }
  stop_all() {
    trap - TERM INT USR1
    kill -TERM "$holder" ${sshd:+"$sshd"} 2>/dev/null || true
    wait || true   # reap them here rather than leaving zombies to init
    exit 0
  }
  trap start_sshd USR1
  trap stop_all TERM INT
  start_sshd
  # `wait` returns early when a trapped signal arrives; bash reaps sshd whenever it exits.
  while kill -0 "$holder" 2>/dev/null; do wait "$holder" || true; done
  stop_all
}

# --- a systemd host (runs inside the host netns + a private mount/UTS ns) ---------------
#
#   supervisor.pid  this bash: mounts the root, boots it with systemd-nspawn, waits
#   nspawn.pid      systemd-nspawn; TERM = orderly shutdown of the container (`down` uses it)
#   pid             the container's PID 1 (systemd): the nsenter target (all its namespaces)
#   sshd.log        this setup's errors and the container's console (boot messages)
# sshd is the container's ssh.service. /var/lib is a bind of DIR/hosts/hN/varlib (a copy
# of the image's /var/lib on a real filesystem): docker's overlay2 refuses an overlayfs
# backing, and F5 renames /var/lib/docker, so the docker data root must not be a mount.
# The container lives in cgroups of its own (lab_cgroups), never shared with another host.

# lab_cgroups ID hN: the host's cgroup in each hierarchy nspawn and systemd use (cgroup2
# and the v1 name=systemd one), under a lab-owned kfix-lab/ directory.
lab_cgroups() {
  awk '$3 == "cgroup2" || ($3 == "cgroup" && $4 ~ /(^|,)name=systemd(,|$)/) {print $2}' /proc/self/mounts |
    while read -r mnt; do echo "$mnt/kfix-lab/$(host_ns "$1" "$2")"; done
}

shost_main() {
  local dir=$1 i=$2 n=$3
  local h="h$i" hd="$dir/hosts/h$i" m="$dir/hosts/h$i/merged" ip id cg
  ip=$(host_ip "$i"); id=$(lab_id "$dir")
  record_self "$hd/supervisor.pid"

  ip addr add "$ip/16" dev eth0
  ip link set eth0 up
  ip link set lo up
  # The controller's address, resolved once and for good: permanent entries are not
  # counted against the kernel's neighbour-table limit (gc_thresh3, shared by every
  # network namespace), which a lab of 1000 hosts would otherwise exceed.
  ip neigh replace 10.250.0.1 lladdr "$BRIDGE_MAC" dev eth0 nud permanent
  echo "$h" >/proc/sys/kernel/hostname

  mkdir -p "$hd/upper" "$hd/work" "$hd/varlib" "$m"
  mount -t overlay overlay -o "lowerdir=$SYSTEMD_LAYER:$ROOTFS,upperdir=$hd/upper,workdir=$hd/work" "$m"
  mount -t proc proc "$m/proc"
  mount --bind /dev "$m/dev"
  write_identity "$dir" "$h" "$m" "$n"
  umount "$m/dev" "$m/proc"
  cp -a "$m/var/lib/." "$hd/varlib/"

  local k
  for cg in $(lab_cgroups "$id" "$h"); do
    # Another lab's `down` may remove an empty kfix-lab/ between the two mkdirs: retry.
    for ((k = 0; k < 5; k++)); do mkdir -p "$cg" 2>/dev/null && break; done
    echo "$BASHPID" >"$cg/cgroup.procs"
  done
  # nspawn keeps state under /run/systemd/nspawn and cannot remove it where /run is not
  # a tmpfs: give it a private /run (this mount namespace only).
  mount -t tmpfs -o mode=0755 tmpfs /run

  local nspawn leader=""
  SYSTEMD_NSPAWN_API_VFS_WRITABLE=network SYSTEMD_NSPAWN_LOCK=0 \
    systemd-nspawn --quiet --boot --directory="$m" --machine="$(host_ns "$id" "$h")" --hostname="$h" \
      --register=no --keep-unit --settings=no --console=passive \
      --resolv-conf=off --timezone=off --link-journal=no \
      --network-namespace-path="/proc/$$/ns/net" --capability=CAP_NET_ADMIN,CAP_NET_RAW \
      --bind="$hd/varlib:/var/lib" </dev/null &
  nspawn=$!
  echo "$nspawn" >"$hd/nspawn.pid"
  trap 'kill -TERM "$nspawn" 2>/dev/null || true' TERM INT
  # The container's PID 1 is nspawn's child that has exec'd systemd.
  for ((k = 0; k < 200; k++)); do
    for leader in $(cat "/proc/$nspawn/task/$nspawn/children" 2>/dev/null || true); do
      [[ "$(readlink "/proc/$leader/exe" 2>/dev/null)" == */systemd ]] && break 2
    done
    leader=""
    kill -0 "$nspawn" 2>/dev/null || break
    sleep 0.05
  done
  [[ -n "$leader" ]] || { kill -TERM "$nspawn" 2>/dev/null || true; wait || true; exit 1; }
  echo "$leader" >"$hd/pid.tmp" && mv "$hd/pid.tmp" "$hd/pid"
  # `wait` returns early when a trapped signal arrives.
  while kill -0 "$nspawn" 2>/dev/null; do wait "$nspawn" || true; done
}

# --- subcommands -------------------------------------------------------------------

cmd_up() {
  [[ $# -eq 2 || ($# -eq 4 && "$3" == "--systemd") ]] || usage
  local dir=$1 n=$2 id ctl i h
  # A Linux bridge takes at most 1023 ports (BR_MAX_PORTS), one per host.
  [[ "$n" =~ ^[1-9][0-9]*$ ]] && ((n <= 1023)) || die "N must be 1..1023, got '$n'"
  [[ $EUID -eq 0 ]] || die "must run as root"
  [[ -f "$ROOTFS/.kfix-lab-stamp" ]] || die "no rootfs at $ROOTFS (run tests/lab/install-deps.sh)"
  local -A sd=()
  local starters=()
  if [[ $# -eq 4 ]]; then
    local names
    IFS=, read -r -a names <<<"$4"
    for h in "${names[@]}"; do
      [[ "$h" =~ ^h([1-9][0-9]*)$ ]] && ((BASH_REMATCH[1] <= n)) || die "--systemd: no host '$h' in h1..h$n"
      sd[$h]=1
    done
    [[ "$(cut -d/ -f1 "$SYSTEMD_LAYER/.kfix-lab-systemd-stamp" 2>/dev/null)" == "$(cat "$ROOTFS/.kfix-lab-stamp")" ]] ||
      die "no systemd layer for this rootfs at $SYSTEMD_LAYER (run tests/lab/install-deps.sh)"
    command -v systemd-nspawn >/dev/null || die "systemd-nspawn missing (tests/lab/install-deps.sh installs it)"
  fi
  mkdir -p "$dir"
  dir=$(abs_dir "$dir"); id=$(lab_id "$dir"); ctl=$(ctl_ns "$id")
  [[ -z "$(ns_inode "$ctl")" ]] || die "lab $dir is already up (lab.sh down $dir first)"
  local t0=$SECONDS

  # On any failure: show what the hosts said, then tear down what was built.
  LAB_UP_DIR=$dir
  trap 'rc=$?; trap - EXIT; if ((rc)); then up_failed "$LAB_UP_DIR"; fi; exit $rc' EXIT

  rm -rf --one-file-system "$dir/hosts"
  mkdir -p "$dir/hosts"
  echo "$id" >"$dir/id"
  rm -f "$dir/id_ed25519" "$dir/id_ed25519.pub"
  ssh-keygen -q -t ed25519 -N '' -C "kfix-lab-$id" -f "$dir/id_ed25519"

  # Namespaces, in one `ip` process each; veths are created inside the ctl netns with
  # the peer moved straight into the host netns (never in the root netns).
  {
    echo "netns add $ctl"
    for ((i = 1; i <= n; i++)); do echo "netns add $(host_ns "$id" "h$i")"; done
  } | ip -batch -
  echo "$ctl" >"$dir/ctl_ns"
  {
    echo "link set lo up"
    echo "link add br0 address $BRIDGE_MAC type bridge stp_state 0 forward_delay 0"
    echo "addr add 10.250.0.1/16 dev br0"
    echo "link set br0 up"
    for ((i = 1; i <= n; i++)); do
      echo "link add vh$i type veth peer name eth0 address $(host_mac "$i") netns $(host_ns "$id" "h$i")"
      echo "link set vh$i master br0 up"
      # Permanent, like the host's entry for the controller (see host_main).
      echo "neigh replace $(host_ip "$i") lladdr $(host_mac "$i") dev br0 nud permanent"
    done
  } | ip -n "$ctl" -batch -

  for ((i = 1; i <= n; i++)); do
    h="h$i"
    mkdir -p "$dir/hosts/$h"
    host_ip "$i" >"$dir/hosts/$h/ip"
    # A systemd host enters its netns with nsenter: `ip netns exec` would remount /sys
    # without the cgroup hierarchies nspawn needs.
    # A light host's supervisor is PID 1 of a PID namespace of its own (unshare stays
    # as its parent; --kill-child: the host ends with it). A systemd host's namespaces
    # are nspawn's.
    local enter=(ip netns exec "$(host_ns "$id" "$h")") main=__host pidns=(--pid --fork --kill-child)
    if [[ -n "${sd[$h]:-}" ]]; then
      enter=(nsenter --net="/run/netns/$(host_ns "$id" "$h")") main=__shost pidns=()
      : >"$dir/hosts/$h/systemd"
    fi
    "${enter[@]}" unshare --mount --uts "${pidns[@]}" --propagation private -- \
      bash "$SELF" "$main" "$dir" "$i" "$n" </dev/null >"$dir/hosts/$h/sshd.log" 2>&1 &
    # What started the host (the supervisor records its own PID): gone = failed to start.
    starters[i]=$!
  done

  # Wait for every host: holder pid recorded, then port 22 open.
  local deadline=$((SECONDS + 60)) ips=()
  for ((i = 1; i <= n; i++)); do
    h="h$i"
    until [[ -s "$dir/hosts/$h/pid" && -s "$dir/hosts/$h/hostkey.pub" ]]; do
      kill -0 "${starters[i]}" 2>/dev/null || die "host $h failed to start"
      ((SECONDS < deadline)) || die "host $h did not start within 60s"
      sleep 0.05
    done
    ips+=("$(host_ip "$i")")
  done
  local down_ips
  down_ips=$(wait_tcp "$ctl" $((${#sd[@]} ? 60 : 20)) "${ips[@]}") || die "sshd not reachable on: $down_ips"
  # systemd hosts: wait until boot has finished (no job left), so tests see settled units.
  local state
  for h in "${!sd[@]}"; do
    state=$(timeout 60 nsenter -t "$(host_pid "$dir" "$id" "$h")" -a -- \
      env -i PATH="$HOST_PATH" systemctl is-system-running --wait 2>&1) || true
    [[ "$state" == running ]] || echo "lab: $h booted $state" >&2
  done

  # Client-side files.
  for ((i = 1; i <= n; i++)); do
    echo "$(host_ip "$i") $(cut -d' ' -f1,2 "$dir/hosts/h$i/hostkey.pub")"
  done >"$dir/known_hosts"
  cat >"$dir/ssh_config" <<EOF
Host *
  UserKnownHostsFile $dir/known_hosts
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  IdentityFile $dir/id_ed25519
  IdentitiesOnly yes
  User root
  BatchMode yes
  ConnectTimeout 5
  LogLevel ERROR
EOF
  {
    echo "[lab]"
    for ((i = 1; i <= n; i++)); do
      echo "h$i ansible_host=$(host_ip "$i") ansible_user=root ansible_ssh_private_key_file=$dir/id_ed25519"
    done
  } >"$dir/inventory.ini"
  trap - EXIT
  echo "lab: $n host(s) up in $dir (id $id, ctl netns $ctl, ${#sd[@]} with systemd, $((SECONDS - t0))s)" >&2
}

up_failed() {
  local dir=$1 f
  echo "lab: up failed; host logs:" >&2
  for f in "$dir"/hosts/*/sshd.log; do
    [[ -s "$f" ]] || continue
    echo "--- $f" >&2; tail -n 20 "$f" >&2
  done
  cmd_down "$dir" || true
}

cmd_exec() {
  [[ $# -ge 4 && "$3" == "--" ]] || usage
  local dir id h=$2 pid; dir=$(abs_dir "$1"); id=$(lab_id "$dir"); shift 3
  pid=$(host_pid "$dir" "$id" "$h")
  # A light host: its network, mount, UTS and PID namespaces (what runs here is one of
  # the host's processes). A systemd host is a container: all of its namespaces.
  local ns=(-n -m -u -p); [[ ! -e "$dir/hosts/$h/systemd" ]] || ns=(-a)
  exec nsenter -t "$pid" "${ns[@]}" -r -w -- \
    env -i PATH="$HOST_PATH" HOME=/root USER=root LOGNAME=root LANG=C.UTF-8 "$@"
}

cmd_ctl() {
  [[ $# -ge 3 && "$2" == "--" ]] || usage
  local dir; dir=$(abs_dir "$1"); shift 2
  local ctl; ctl=$(ctl_ns "$(lab_id "$dir")")
  [[ -n "$(ns_inode "$ctl")" ]] || die "lab $dir is not up"
  exec ip netns exec "$ctl" "$@"
}

cmd_stop_sshd() {
  [[ $# -eq 2 ]] || usage
  local dir id h=$2 pid i
  dir=$(abs_dir "$1"); id=$(lab_id "$dir"); host_pid "$dir" "$id" "$h" >/dev/null
  if [[ -e "$dir/hosts/$h/systemd" ]]; then
    (cmd_exec "$dir" "$h" -- systemctl stop ssh.service)
    return
  fi
  pid=$(cat "$dir/hosts/$h/sshd.pid" 2>/dev/null || true)
  pid_in_ns "$pid" "$(host_ns "$id" "$h")" || return 0
  kill -TERM "$pid"
  for ((i = 0; i < 50; i++)); do pid_in_ns "$pid" "$(host_ns "$id" "$h")" || return 0; sleep 0.1; done
  die "sshd of $h (pid $pid) did not stop"
}

cmd_start_sshd() {
  [[ $# -eq 2 ]] || usage
  local dir id h=$2 sup
  dir=$(abs_dir "$1"); id=$(lab_id "$dir"); host_pid "$dir" "$id" "$h" >/dev/null
  if [[ -e "$dir/hosts/$h/systemd" ]]; then
    (cmd_exec "$dir" "$h" -- systemctl start ssh.service)
  else
    sup=$(cat "$dir/hosts/$h/supervisor.pid")
    pid_in_ns "$sup" "$(host_ns "$id" "$h")" || die "host $h has no supervisor"
    kill -USR1 "$sup"
  fi
  wait_tcp "$(ctl_ns "$id")" 20 "$(cat "$dir/hosts/$h/ip")" >/dev/null || die "sshd of $h did not come back"
}

cmd_snapshot() {
  [[ $# -ge 2 ]] || usage
  local dir id h=$2 pid; dir=$(abs_dir "$1"); id=$(lab_id "$dir"); shift 2
  local excludes=()
  while [[ $# -gt 0 ]]; do
    case $1 in
      --exclude) [[ $# -ge 2 ]] || usage; excludes+=("$2"); shift 2 ;;
      *) usage ;;
    esac
  done
  pid=$(host_pid "$dir" "$id" "$h")
  local py=/usr/bin/python3; [[ -x $py ]] || py=python3
  "$py" - "$pid" "$HOST_PATH" "${excludes[@]+"${excludes[@]}"}" <<'PY'
import fnmatch, json, subprocess, sys

pid, host_path, excludes = sys.argv[1], sys.argv[2], sys.argv[3:]

def run(*cmd, ok=(0,)):
    # A host whose `ip` refuses -j as old iproute2 does (tests/common Lab::old_iproute)
    # keeps the real one as ip.real, an rpm host (Lab::rpm_host) its hidden dpkg-query
    # as dpkg-query.real: the snapshot reads with those.
    if cmd[0] in ("ip", "dpkg-query"):
        cmd = ("sh", "-c", 'p=/usr/bin/$0.real; [ -x "$p" ] || p=$0; exec "$p" "$@"', cmd[0]) + cmd[1:]
    p = subprocess.run(
        ["nsenter", "-t", pid, "-n", "-m", "-u", "-p", "-r", "-w", "--",
         "env", "-i", "PATH=" + host_path, "LC_ALL=C", *cmd],
        stdin=subprocess.DEVNULL, capture_output=True)
    if p.returncode not in ok:
        sys.exit("lab: snapshot: %s failed (%d): %s" % (" ".join(cmd), p.returncode, p.stderr.decode(errors="replace")))
    return p.stdout.decode(errors="surrogateescape")

out = []
def section(name, lines):
    out.append("## " + name)
    out.extend(lines)
    out.append("")

# Routes (every table; `table all` lists IPv4 and IPv6) and policy rules. Left out: the
# IPv6 link-local and multicast routes the kernel adds by itself (some only after DAD).
def auto_v6(l):
    w = l.split()
    if w and w[0] in ("local", "multicast", "anycast", "broadcast", "unicast"):
        w = w[1:]
    return bool(w) and (w[0].startswith("fe80:") or w[0] == "ff00::/8") and "proto kernel" in l
# "linkdown" is carrier state (derived), not configuration.
section("routes", sorted(l.rstrip().replace(" linkdown", "") for l in run("ip", "route", "show", "table", "all").splitlines()
                         if l.strip() and not auto_v6(l)))
section("rules", [l.rstrip() for l in run("ip", "rule", "show").splitlines() if l.strip()])

# Links: stable attributes only (no ifindex, counters, operstate, timers, netnsid), and no
# state the kernel derives from carrier or ports (LOWER_UP/NO-CARRIER, a bridge's ids).
DERIVED_FLAGS = {"LOWER_UP", "NO-CARRIER", "DORMANT", "M-DOWN"}
DERIVED_DATA = {"bridge_id", "root_id", "root_port", "root_path_cost", "topology_change", "topology_change_detected"}
def scalars(d):
    if not d:
        return None
    return {k: v for k, v in d.items()
            if not k.endswith("_timer") and k not in DERIVED_DATA and not isinstance(v, (dict, list))}
lines = []
for l in sorted(json.loads(run("ip", "-d", "-j", "link", "show") or "[]"), key=lambda l: l["ifname"]):
    li = l.get("linkinfo") or {}
    rec = {
        "kind": li.get("info_kind"),
        "slave_kind": li.get("info_slave_kind"),
        "flags": sorted(f for f in l.get("flags", []) if f not in DERIVED_FLAGS),
        "mtu": l.get("mtu"),
        "master": l.get("master"),
        "link": l.get("link"),
        "address": l.get("address"),
        "alias": l.get("ifalias"),
        "info_data": scalars(li.get("info_data")),
        "slave_data": scalars(li.get("info_slave_data")),
    }
    rec = {k: v for k, v in rec.items() if v not in (None, [], {})}
    lines.append(l["ifname"] + " " + json.dumps(rec, sort_keys=True))
section("links", lines)

# Addresses: per link, family/local/prefix/scope/broadcast/label. IPv6 link-local (fe80::/10)
# addresses are left out: the kernel adds them asynchronously after a link comes up.
lines = []
for l in sorted(json.loads(run("ip", "-j", "addr", "show") or "[]"), key=lambda l: l["ifname"]):
    for a in l.get("addr_info", []):
        if a.get("family") == "inet6" and a.get("scope") == "link":
            continue
        s = "%s %s %s/%s scope %s" % (l["ifname"], a.get("family"), a.get("local"), a.get("prefixlen"), a.get("scope"))
        if a.get("broadcast"):
            s += " brd " + a["broadcast"]
        if a.get("label") and a["label"] != l["ifname"]:
            s += " label " + a["label"]
        lines.append(s)
section("addresses", sorted(lines))

# iptables: `-S` is canonical, has no counters, and shows an absent table (nft backend,
# fresh netns) the same as an empty one with ACCEPT policies.
for table in ("filter", "nat"):
    section("iptables " + table, [l for l in run("iptables", "-w", "-t", table, "-S").splitlines() if l.strip()])

# sysctls of this netns.
section("sysctl", sorted(l.rstrip() for l in run(
    "sysctl", "-a", "--pattern", r"^net\.(ipv4\.|ipv6\.conf\.all\.)", ok=(0, 255)).splitlines() if " = " in l))

# Packages dpkg has on disk (name, status, version); "not-installed" records are left out
# (dpkg keeps some after a purge, as it does for packages it merely heard of).
section("packages", sorted(l for l in run(
    "dpkg-query", "-W", "-f", "${db:Status-Abbrev} ${binary:Package} ${Version}\\n").splitlines()
    if l.strip() and l[1] != "n"))

# Packages rpm has (the lab's rpm hosts install with dnf).
section("rpm packages", sorted(l for l in run(
    "sh", "-c", "command -v rpm >/dev/null || exit 0; rpm -qa --qf '%{NAME} %{VERSION}-%{RELEASE}\\n' 2>/dev/null").splitlines()
    if l.strip()))

# Files: type, mode, owner, sha256 (regular files) or target (symlinks).
DIRS = ["/etc", "/run/flannel", "/var/lib/docker", "/var/lib/kfix"]
script = r'''
for d in "$@"; do [ -e "$d" ] || continue
  find "$d" -xdev -printf '%y\0%#m\0%u:%g\0%p\0%l\0'
done
printf '\001'
for d in "$@"; do [ -e "$d" ] || continue
  find "$d" -xdev -type f -print0 | xargs -0r sha256sum -z
done
'''
raw = run("bash", "-c", script, "_", *DIRS)
meta, _, sums = raw.partition("\x01")
digest = {}
for rec in sums.split("\0"):
    if rec:
        h, _, path = rec.partition("  ")
        digest[path] = h
f = meta.split("\0")
def excluded(path):
    for pat in excludes:
        p = pat.rstrip("/") or "/"
        if path == p or path.startswith(p + "/") or fnmatch.fnmatchcase(path, pat):
            return True
    return False
lines = []
for k in range(0, len(f) - 4, 5):
    typ, mode, owner, path, target = f[k:k + 5]
    if excluded(path):
        continue
    s = "%s %s %s %s" % (typ, mode, owner, path)
    if typ == "f":
        s += " sha256=" + digest.get(path, "?")
    elif typ == "l":
        s += " -> " + target
    lines.append(s)
section("files " + " ".join(DIRS) + (" (excluding " + " ".join(excludes) + ")" if excludes else ""),
        sorted(lines, key=lambda s: s.split(" ", 3)[3]))
sys.stdout.write("\n".join(out))
PY
}

# lab_pids ID: PIDs of all live processes inside this lab's network namespaces (one
# `stat` over /proc, so teardown stays fast with many hosts).
lab_pids() {
  local id=$1 nsfiles=(/run/netns/kfx-"$id"-*)
  [[ -e "${nsfiles[0]}" ]] || return 0
  local -A inos=()
  local ino path pid
  while read -r ino _; do inos[$ino]=1; done < <(stat -L -c '%i %n' "${nsfiles[@]}" 2>/dev/null || true)
  while read -r ino path; do
    [[ -n "${inos[$ino]:-}" ]] || continue
    pid=${path#/proc/}; pid=${pid%%/*}
    [[ "$pid" != "$$" && "$pid" != "$BASHPID" ]] || continue
    if [[ "$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null)" != Z ]]; then echo "$pid"; fi
  done < <(stat -L -c '%i %n' /proc/[0-9]*/ns/net 2>/dev/null || true)
}

cmd_down() {
  [[ $# -eq 1 ]] || usage
  [[ -d "$1" ]] || return 0
  local dir id ns p f i
  dir=$(abs_dir "$1"); id=$(lab_id "$dir")

  # Kill the recorded PIDs (supervisor, holder, sshd of each host), then whatever else
  # still runs inside this lab's network namespaces (ssh sessions on the hosts, ssh
  # ControlMasters of kfix in the ctl netns): all of it was started by or through the lab.
  # Every PID is taken from a scan for processes in the lab's own netns, so a recycled
  # PID in a stale pid file can never hit an unrelated process.
  # systemd hosts first: TERM to nspawn shuts the container down in order (its PID 1
  # would take a plain TERM as "re-execute"); KILL below if it takes over 10 s.
  local nspawns=()
  for f in "$dir"/hosts/*/nspawn.pid; do
    p=$(cat "$f" 2>/dev/null || true)
    ns=$(host_ns "$id" "$(basename "$(dirname "$f")")")
    if pid_in_ns "$p" "$ns"; then kill -TERM "$p" 2>/dev/null || true; nspawns+=("$p:$ns"); fi
  done
  for ((i = 0; i < 100 && ${#nspawns[@]}; i++)); do
    local left=()
    for f in "${nspawns[@]}"; do pid_in_ns "${f%%:*}" "${f#*:}" && left+=("$f"); done
    nspawns=("${left[@]+"${left[@]}"}")
    ((${#nspawns[@]})) && sleep 0.1
  done

  local -A recorded=()
  for f in "$dir"/hosts/*/supervisor.pid "$dir"/hosts/*/pid "$dir"/hosts/*/sshd.pid "$dir"/hosts/*/nspawn.pid; do
    p=$(cat "$f" 2>/dev/null || true)
    if [[ "$p" =~ ^[0-9]+$ ]]; then recorded[$p]=1; fi
  done
  local pids=() first=() rest=()
  mapfile -t pids < <(lab_pids "$id")
  for p in "${pids[@]+"${pids[@]}"}"; do
    if [[ -n "${recorded[$p]:-}" ]]; then first+=("$p"); else rest+=("$p"); fi
  done
  if ((${#pids[@]})); then
    ((${#rest[@]} == 0)) || kill -TERM "${rest[@]}" 2>/dev/null || true
    ((${#first[@]} == 0)) || kill -TERM "${first[@]}" 2>/dev/null || true
    for ((i = 0; i < 30; i++)); do
      mapfile -t pids < <(lab_pids "$id")
      ((${#pids[@]})) || break
      sleep 0.1
    done
    ((${#pids[@]} == 0)) || kill -KILL "${pids[@]}" 2>/dev/null || true
  fi
  # The systemd hosts' cgroups (empty now; removed deepest first).
  local cg
  for f in "$dir"/hosts/*/systemd; do
    [[ -e "$f" ]] || continue
    for cg in $(lab_cgroups "$id" "$(basename "$(dirname "$f")")"); do
      [[ -d "$cg" ]] || continue
      for ((i = 0; i < 30; i++)); do
        find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
        [[ -d "$cg" ]] || break
        sleep 0.1
      done
      rmdir "$(dirname "$cg")" 2>/dev/null || true   # kfix-lab/, unless another lab uses it
    done
  done
  while read -r ns _; do
    [[ "$ns" == "kfx-$id-"* ]] && { ip netns del "$ns" 2>/dev/null || true; }
  done < <(ip netns list 2>/dev/null || true)

  # Mounts live in the hosts' private mount namespaces and vanish with them; unmount
  # anything under DIR that still shows up in ours (deepest first).
  awk -v d="$dir/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r |
    while read -r p; do umount -l "$p" 2>/dev/null || true; done
  rm -rf --one-file-system "$dir/hosts" "$dir/ctl_ns"
}

# --- dispatch ---------------------------------------------------------------------
[[ $# -ge 1 ]] || usage
cmd=$1; shift
case $cmd in
  up) cmd_up "$@" ;;
  down) cmd_down "$@" ;;
  exec) cmd_exec "$@" ;;
  ctl) cmd_ctl "$@" ;;
  snapshot) cmd_snapshot "$@" ;;
  stop-sshd) cmd_stop_sshd "$@" ;;
  start-sshd) cmd_start_sshd "$@" ;;
  __host) host_main "$@" ;;
  __shost) shost_main "$@" ;;
  *) usage ;;
esac
