//! The fleet benchmark's runner: one lab, fault injection, the tools (kfix, ansible-core,
//! pyinfra, plain ssh) timed in a cgroup each, and verification of every host.
// Shared by the bench (benches/fleet/main.rs) and the smoke test (tests/bench_smoke.rs),
// which each use a part of it.
#![allow(dead_code)]

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The pod network and node network of F2 (the playbook defaults).
const NODE_CIDR: &str = "10.250.0.0/16";
const POD_NETWORK: &str = "172.16.0.0/12";
/// The six host playbooks of FIXES.md F1–F6, for the `kfix check` scan.
const CHECK_PLAYBOOKS: [&str; 6] = [
    "flannel-bogus-route",
    "service-masquerade",
    "persist-ip-forward",
    "raise-nofile-limits",
    "docker-overlay2",
    "reset-flannel-cni",
];
/// Seconds every tool waits for a connection (ssh config, kfix, ansible, pyinfra).
const CONNECT_TIMEOUT: u32 = 30;
const HOST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub type Result<T> = std::result::Result<T, String>;

/// The key exchange the OpenSSH-based tools are configured with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kex {
    /// No KexAlgorithms line: OpenSSH's default order (sntrup761x25519 first).
    Default,
    /// `KexAlgorithms curve25519-sha256` in the ssh config the tool reads.
    Curve25519,
}

impl Kex {
    pub fn parse(s: &str) -> Result<Kex> {
        match s {
            "default" => Ok(Kex::Default),
            "curve25519" => Ok(Kex::Curve25519),
            _ => Err(format!("unknown kex '{s}' (default, curve25519)")),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Kex::Default => "default",
            Kex::Curve25519 => "curve25519",
        }
    }
}

/// What is timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tool {
    /// `kfix run persist-ip-forward service-masquerade` (one invocation), on faulty hosts.
    Kfix,
    /// The same two runs again on the fixed hosts (nothing to do).
    KfixRerun,
    /// `kfix check` of the six host playbooks on faulty hosts (read-only).
    KfixCheck,
    Ansible,
    Pyinfra,
    /// Plain `ssh` fan-out, one connection and one command per host.
    Floor,
}

impl Tool {
    pub const ALL: [Tool; 6] = [
        Tool::Kfix,
        Tool::KfixRerun,
        Tool::KfixCheck,
        Tool::Ansible,
        Tool::Pyinfra,
        Tool::Floor,
    ];
    pub fn parse(s: &str) -> Result<Tool> {
        Tool::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| format!("unknown tool '{s}'"))
    }
    pub fn name(self) -> &'static str {
        match self {
            Tool::Kfix => "kfix",
            Tool::KfixRerun => "kfix_rerun",
            Tool::KfixCheck => "kfix_check",
            Tool::Ansible => "ansible",
            Tool::Pyinfra => "pyinfra",
            Tool::Floor => "floor",
        }
    }
}

impl fmt::Display for Tool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One timed run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sample {
    pub n: usize,
    pub kex: Kex,
    pub tool: Tool,
    pub rep: usize,
    pub wall_s: f64,
    /// user+sys of every process the run started (the cgroup), or of the waited-for
    /// process tree only when no cgroup was available (see `Results::cpu_source`).
    pub cpu_s: f64,
    pub cpu_user_s: f64,
    pub cpu_sys_s: f64,
    /// Peak memory charged to the run's cgroup (every process it started).
    pub peak_mem_bytes: Option<u64>,
    /// Largest max RSS of one waited-for process: kfix's own (ansible/pyinfra: the
    /// largest python process that was waited for).
    pub max_rss_bytes: u64,
    /// CPU seconds the lab hosts' sshd's and everything they ran spent during the run
    /// (the target side; on this machine the same CPUs as the controller).
    #[serde(default)]
    pub host_cpu_s: Option<f64>,
}

/// The machine the numbers come from.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub openssh: String,
    pub kfix: String,
    pub ansible_core: String,
    pub pyinfra: String,
    pub memory_total: String,
    pub load_before: String,
    pub load_after: String,
    /// The source measured: `git describe --always --dirty` of the checkout (empty in
    /// older results and outside a git checkout).
    #[serde(default)]
    pub commit: String,
}

/// Everything one harness invocation measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Results {
    pub command: String,
    pub started: String,
    pub sizes: Vec<usize>,
    pub reps: usize,
    pub machine: Machine,
    /// Where CPU and peak memory come from ("cgroup v1 ...", "cgroup v2", "rusage").
    pub cpu_source: String,
    /// The kex each client negotiated, per configured setting.
    pub negotiated_kex: BTreeMap<String, String>,
    pub samples: Vec<Sample>,
    /// Runs that failed (the tool's error or a host not fixed), when keep_going.
    #[serde(default)]
    pub failures: Vec<String>,
    /// The repetitions each (N, kex, tool) was to have: a cell with fewer samples had
    /// failures. Empty in results older than this field: every cell then had `reps`.
    #[serde(default)]
    pub planned: Vec<Planned>,
    /// What each tool made one host do (`profile_sessions`).
    #[serde(default)]
    pub sessions: Vec<SessionCount>,
}

/// One cell of the sweep and the repetitions it was to have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Planned {
    pub n: usize,
    pub kex: Kex,
    pub tool: Tool,
    pub reps: usize,
}

impl Results {
    /// The repetitions the cell (n, kex, tool) was to have.
    pub fn planned_reps(&self, n: usize, kex: Kex, tool: Tool) -> usize {
        self.planned
            .iter()
            .find(|p| p.n == n && p.kex == kex && p.tool == tool)
            .map_or(self.reps, |p| p.reps)
    }

    /// Several invocations' results as one (the main sweep, ansible at N <= 200 with
    /// three repetitions, ansible once at N = 500): samples, failures and cells side by
    /// side, the machine and kex of the first, the commands in order. Cells measured
    /// twice keep every sample.
    pub fn merge(parts: Vec<Results>) -> Result<Results> {
        let mut parts = parts.into_iter();
        let mut all = parts.next().ok_or("no results to merge")?;
        all.planned = all.cells();
        for r in parts {
            let (a, b) = (&all.machine, &r.machine);
            if a.nproc != b.nproc || a.cpu_model != b.cpu_model || a.commit != b.commit {
                return Err(format!(
                    "not one sweep: `{}` ran on {} × {} at commit {:?}, `{}` on {} × {} at {:?}",
                    all.command,
                    a.nproc,
                    a.cpu_model,
                    a.commit,
                    r.command,
                    b.nproc,
                    b.cpu_model,
                    b.commit
                ));
            }
            all.planned.extend(r.cells());
            all.command = format!("{}; {}", all.command, r.command);
            all.machine.load_after = r.machine.load_after.clone();
            all.reps = all.reps.max(r.reps);
            all.sizes.extend(&r.sizes);
            all.samples.extend(r.samples);
            all.failures.extend(r.failures);
            for (k, v) in r.negotiated_kex {
                all.negotiated_kex.entry(k).or_insert(v);
            }
            if all.sessions.is_empty() {
                all.sessions = r.sessions;
            }
        }
        all.sizes.sort_unstable();
        all.sizes.dedup();
        Ok(all)
    }

    /// This invocation's cells: as planned, or (older results) each measured cell with
    /// `reps`.
    fn cells(&self) -> Vec<Planned> {
        if !self.planned.is_empty() {
            return self.planned.clone();
        }
        let mut cells: Vec<Planned> = Vec::new();
        for s in &self.samples {
            let c = Planned {
                n: s.n,
                kex: s.kex,
                tool: s.tool,
                reps: self.reps,
            };
            if !cells.contains(&c) {
                cells.push(c);
            }
        }
        cells
    }
}

/// What one tool run made one host's sshd do, counted with strace on it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionCount {
    pub tool: Tool,
    /// SSH connections accepted (sshd re-executes itself with -R for each).
    pub connections: usize,
    /// Sessions: commands sshd started through the user's login shell (`bash -c`).
    pub sessions: usize,
    /// Every program started on the host (successful execve), shells included.
    pub processes: usize,
    /// Those programs, in the order they started (the path execve ran).
    #[serde(default)]
    pub programs: Vec<String>,
}

/// What to run.
pub struct Config {
    pub sizes: Vec<usize>,
    pub reps: usize,
    pub kexes: Vec<Kex>,
    pub tools: Vec<Tool>,
    /// The kfix binary under test.
    pub kfix: PathBuf,
    /// The crate root (lab.sh, playbooks, benches/fleet).
    pub root: PathBuf,
    /// /var/cache/kfix-bench: the venv and the hosts' rootfs (benches/fleet/setup.sh).
    pub cache: PathBuf,
    /// Scratch directory: the lab and every run's files. Must exist and be empty.
    pub work: PathBuf,
    /// The command line, for the record.
    pub command: String,
    /// Record a failed run (a tool's error, a host left unfixed) in `Results::failures`
    /// and go on; otherwise the first failure ends the benchmark.
    pub keep_going: bool,
}

fn log(msg: &str) {
    eprintln!("fleet: {msg}");
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str()
        .ok_or_else(|| format!("not a UTF-8 path: {}", p.display()))
}

fn read(p: &Path) -> Result<String> {
    std::fs::read_to_string(p).map_err(|e| format!("read {}: {e}", p.display()))
}

fn write(p: &Path, s: &str) -> Result<()> {
    std::fs::write(p, s).map_err(|e| format!("write {}: {e}", p.display()))
}

/// Runs a command to completion, failing with its output unless it succeeds.
fn run_ok(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what}: {}\n--- stdout\n{}--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

// --- the lab -------------------------------------------------------------------------

/// A lab brought up by tests/lab/lab.sh on the bench rootfs; torn down on drop.
pub struct Lab {
    root: PathBuf,
    pub dir: PathBuf,
    pub size: usize,
    ctl_ns: String,
    ips: Vec<String>,
    pids: Vec<String>,
    /// The cgroup of every host's sshd (target-side CPU), removed after teardown.
    hosts_cg: Option<PathBuf>,
}

impl Lab {
    pub fn up(root: &Path, rootfs: &Path, dir: &Path, n: usize, cg: &Cgroups) -> Result<Lab> {
        let t = Instant::now();
        run_ok(
            Command::new("bash")
                .arg(root.join("tests/lab/lab.sh"))
                .arg("up")
                .arg(dir)
                .arg(n.to_string())
                .env("KFIX_LAB_ROOTFS", rootfs),
            "lab.sh up",
        )?;
        let mut lab = Lab {
            root: root.to_path_buf(),
            dir: dir.to_path_buf(),
            size: n,
            ctl_ns: String::new(),
            ips: Vec::new(),
            pids: Vec::new(),
            hosts_cg: None,
        };
        // From here on, drop tears the lab down.
        lab.ctl_ns = read(&dir.join("ctl_ns"))?.trim().to_string();
        for i in 1..=n {
            let h = dir.join("hosts").join(format!("h{i}"));
            lab.ips.push(read(&h.join("ip"))?.trim().to_string());
            lab.pids.push(read(&h.join("pid"))?.trim().to_string());
        }
        let mut sshd = Vec::new();
        for i in 1..=n {
            sshd.push(
                read(&dir.join(format!("hosts/h{i}/sshd.pid")))?
                    .trim()
                    .to_string(),
            );
        }
        lab.hosts_cg = cg.hosts_group(&sshd);
        log(&format!(
            "lab of {n} hosts up in {:.1}s",
            t.elapsed().as_secs_f64()
        ));
        // F2's node: flannel's VXLAN device (local: the node's address) and the network
        // and subnet flanneld wrote to subnet.env, which the playbook reads (the node's
        // subnet, NODE_CIDR, is eth0's: the lab's 10.250.0.0/16).
        lab.on_hosts(n, |i| {
            format!(
                "ip link add flannel.1 type vxlan id 1 dstport 8472 nolearning local {} dev eth0 && \
                 ip addr add 172.16.74.0/32 dev flannel.1 && ip link set flannel.1 up && \
                 ip route add {POD_NETWORK} dev flannel.1 metric 100 && mkdir -p /run/flannel && \
                 printf 'FLANNEL_NETWORK={POD_NETWORK}\\nFLANNEL_SUBNET=172.16.74.1/24\\nFLANNEL_MTU=1450\\nFLANNEL_IPMASQ=false\\n' >/run/flannel/subnet.env",
                lab.ips[i]
            )
        })?;
        Ok(lab)
    }

    pub fn ip(&self, i: usize) -> &str {
        &self.ips[i]
    }

    /// Runs `script(i)` with sh inside hosts h1..h`n` (their namespaces and root, as
    /// lab.sh exec does, without its per-call bash), 8 at a time. Fails listing every
    /// host whose script failed, with its output.
    pub fn on_hosts(&self, n: usize, script: impl Fn(usize) -> String + Sync) -> Result<()> {
        let failures = std::sync::Mutex::new(Vec::new());
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        if i >= n {
                            break;
                        }
                        let out = Command::new("nsenter")
                            .args([
                                "-t",
                                &self.pids[i],
                                "-n",
                                "-m",
                                "-u",
                                "-p",
                                "-r",
                                "-w",
                                "--",
                            ])
                            .args(["env", "-i", &format!("PATH={HOST_PATH}"), "LC_ALL=C"])
                            .args(["sh", "-c", &script(i)])
                            .stdin(Stdio::null())
                            .output();
                        let msg = match out {
                            Ok(o) if o.status.success() => continue,
                            Ok(o) => format!(
                                "h{}: {}{}",
                                i + 1,
                                String::from_utf8_lossy(&o.stdout),
                                String::from_utf8_lossy(&o.stderr)
                            ),
                            Err(e) => format!("h{}: nsenter: {e}", i + 1),
                        };
                        if let Ok(mut f) = failures.lock() {
                            f.push(msg);
                        }
                    }
                });
            }
        });
        let mut failures = failures.into_inner().map_err(|e| e.to_string())?;
        if failures.is_empty() {
            return Ok(());
        }
        failures.sort();
        let count = failures.len();
        failures.truncate(10);
        Err(format!(
            "{count} host(s) failed:\n{}",
            failures.join("\n").trim_end()
        ))
    }

    /// `ip netns exec CTL cmd...` with stdout returned.
    fn ctl(&self, args: &[&str]) -> Result<String> {
        run_ok(
            Command::new("ip")
                .args(["netns", "exec", &self.ctl_ns])
                .args(args),
            &format!("in the controller netns: {}", args.join(" ")),
        )
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let out = Command::new("bash")
            .arg(self.root.join("tests/lab/lab.sh"))
            .arg("down")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(o) if o.status.success() => log(&format!("lab of {} hosts down", self.size)),
            Ok(o) => log(&format!(
                "lab.sh down {} failed: {}",
                self.dir.display(),
                String::from_utf8_lossy(&o.stderr)
            )),
            Err(e) => log(&format!("lab.sh down {}: {e}", self.dir.display())),
        }
        if let Some(d) = &self.hosts_cg {
            for _ in 0..50 {
                if std::fs::remove_dir(d).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

// --- faults and verification ------------------------------------------------------------

/// Both faults, as the playbooks detect them: ip_forward off now and set nowhere that
/// `sysctl --system` reads (F3), and no MASQUERADE rule node -> pod network (F2). Then
/// checks that the host is faulty.
fn inject_script() -> String {
    format!(
        r#"set -e
sysctl -qw net.ipv4.ip_forward=0
for f in /etc/sysctl.conf /etc/sysctl.d/*.conf; do
  # Not through symlinks (99-sysctl.conf -> ../sysctl.conf): sed -i would replace them.
  if [ -f "$f" ] && [ ! -L "$f" ]; then sed -i '/^[[:space:]]*net\.ipv4\.ip_forward[[:space:]]*=/d' "$f"; fi
done
while iptables -t nat -D POSTROUTING -s {NODE_CIDR} -d {POD_NETWORK} -j MASQUERADE 2>/dev/null; do :; done
{PERSISTED}
[ "$(cat /proc/sys/net/ipv4/ip_forward)" = 0 ] || {{ echo "ip_forward still on"; exit 1; }}
[ -z "$(persisted)" ] || {{ echo "ip_forward still persisted: $(persisted)"; exit 1; }}
! iptables -t nat -C POSTROUTING -s {NODE_CIDR} -d {POD_NETWORK} -j MASQUERADE 2>/dev/null || {{ echo "rule still there"; exit 1; }}
"#
    )
}

/// The value `sysctl --system` would give net.ipv4.ip_forward, read-only: the .conf files
/// of its directories (first directory wins per file name), in file-name order, then
/// /etc/sysctl.conf; the last assignment wins. Empty when nothing sets it.
const PERSISTED: &str = r#"persisted() {
  files=$(seen=" "
    for d in /etc/sysctl.d /run/sysctl.d /usr/local/lib/sysctl.d /usr/lib/sysctl.d /lib/sysctl.d; do
      for f in "$d"/*.conf; do
        [ -e "$f" ] || continue
        b=${f##*/}
        case $seen in *" $b "*) continue ;; esac
        seen="$seen$b "
        printf '%s %s\n' "$b" "$f"
      done
    done | sort | cut -d' ' -f2)
  v=
  for f in $files /etc/sysctl.conf; do
    [ -r "$f" ] || continue
    x=$(sed -n 's/^[[:space:]]*net\.ipv4\.ip_forward[[:space:]]*=[[:space:]]*\([^[:space:]]*\).*/\1/p' "$f" | tail -n 1)
    [ -z "$x" ] || v=$x
  done
  echo "$v"
}"#;

/// Exits non-zero, saying why, unless the host is fixed: ip_forward 1 now and after
/// `sysctl --system`, exactly one MASQUERADE rule.
fn verify_script() -> String {
    format!(
        r#"{PERSISTED}
fail=0
now=$(cat /proc/sys/net/ipv4/ip_forward)
[ "$now" = 1 ] || {{ echo "ip_forward is $now"; fail=1; }}
p=$(persisted)
[ "$p" = 1 ] || {{ echo "ip_forward persisted as '$p'"; fail=1; }}
rules=$(iptables -t nat -S POSTROUTING | grep -cxF -- '-A POSTROUTING -s {NODE_CIDR} -d {POD_NETWORK} -j MASQUERADE' || true)
[ "$rules" = 1 ] || {{ echo "$rules MASQUERADE rules"; fail=1; }}
exit $fail
"#
    )
}

// --- measurement -------------------------------------------------------------------------

/// Where a timed run's processes are accounted.
#[derive(Clone, Debug)]
pub enum Cgroups {
    /// cgroup v2 with the cpu and memory controllers: cpu.stat, memory.peak.
    V2(PathBuf),
    /// cgroup v1 cpuacct and memory hierarchies (parents: the runner's own groups).
    V1 { cpuacct: PathBuf, memory: PathBuf },
    /// Neither: only the rusage of the waited-for process tree.
    None,
}

impl Cgroups {
    /// Finds a usable parent for per-run groups by trying to create and remove one.
    fn detect() -> Cgroups {
        let own = read(Path::new("/proc/self/cgroup")).unwrap_or_default();
        let path_of = |ctrl: &str| -> Option<String> {
            own.lines().find_map(|l| {
                let mut parts = l.splitn(3, ':');
                let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
                ctrls
                    .split(',')
                    .any(|c| c == ctrl)
                    .then(|| path.to_string())
            })
        };
        let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers");
        if let Ok(ctrls) = read(v2) {
            let own2 = own
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .unwrap_or("/");
            let parent = Path::new("/sys/fs/cgroup").join(own2.trim_start_matches('/'));
            if ctrls.split_whitespace().any(|c| c == "cpu")
                && ctrls.split_whitespace().any(|c| c == "memory")
                && Self::try_mkdir(&parent)
            {
                return Cgroups::V2(parent);
            }
        }
        if let (Some(c), Some(m)) = (path_of("cpuacct"), path_of("memory")) {
            let ctrl_dir = |name: &str| -> Option<PathBuf> {
                ["cpuacct", "cpu,cpuacct", "cpuacct,cpu", "memory"]
                    .iter()
                    .filter(|d| d.contains(name))
                    .map(|d| Path::new("/sys/fs/cgroup").join(d))
                    .find(|d| d.is_dir())
            };
            if let (Some(cd), Some(md)) = (ctrl_dir("cpuacct"), ctrl_dir("memory")) {
                let cpuacct = cd.join(c.trim_start_matches('/'));
                let memory = md.join(m.trim_start_matches('/'));
                if Self::try_mkdir(&cpuacct) && Self::try_mkdir(&memory) {
                    return Cgroups::V1 { cpuacct, memory };
                }
            }
        }
        Cgroups::None
    }

    fn try_mkdir(parent: &Path) -> bool {
        let p = parent.join(format!("kfix-bench-probe-{}", std::process::id()));
        let ok = std::fs::create_dir(&p).is_ok();
        let _ = std::fs::remove_dir(&p);
        ok
    }

    fn describe(&self) -> String {
        match self {
            Cgroups::V2(_) => "cgroup v2 per timed run (cpu.stat usage_usec, memory.peak)".into(),
            Cgroups::V1 { .. } => "cgroup v1 per timed run (cpuacct.usage_user/_sys, memory.max_usage_in_bytes: RSS plus page cache and kernel memory the run charged)".into(),
            Cgroups::None => "no cgroup available: rusage of the waited-for process tree (misses daemonized ssh masters)".into(),
        }
    }

    /// Fresh groups for one run; returns their `cgroup.procs` files.
    fn create(&self, name: &str) -> Result<Vec<PathBuf>> {
        let dirs: Vec<PathBuf> = match self {
            Cgroups::V2(p) => vec![p.join(name)],
            Cgroups::V1 { cpuacct, memory } => vec![cpuacct.join(name), memory.join(name)],
            Cgroups::None => vec![],
        };
        for d in &dirs {
            std::fs::create_dir(d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
        }
        Ok(dirs.iter().map(|d| d.join("cgroup.procs")).collect())
    }

    /// (user s, sys s, peak memory bytes) of the group.
    fn read(&self, name: &str) -> Result<Option<(f64, f64, u64)>> {
        let num = |p: PathBuf| -> Result<u64> {
            read(&p)?
                .trim()
                .parse::<u64>()
                .map_err(|e| format!("{}: {e}", p.display()))
        };
        match self {
            Cgroups::V2(p) => {
                let d = p.join(name);
                let stat = read(&d.join("cpu.stat"))?;
                let field = |k: &str| -> f64 {
                    stat.lines()
                        .find_map(|l| l.strip_prefix(k))
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .unwrap_or(0.0)
                        / 1e6
                };
                let peak = num(d.join("memory.peak"))?;
                Ok(Some((field("user_usec "), field("system_usec "), peak)))
            }
            Cgroups::V1 { cpuacct, memory } => {
                let c = cpuacct.join(name);
                let user = num(c.join("cpuacct.usage_user"))? as f64 / 1e9;
                let sys = num(c.join("cpuacct.usage_sys"))? as f64 / 1e9;
                let peak = num(memory.join(name).join("memory.max_usage_in_bytes"))?;
                Ok(Some((user, sys, peak)))
            }
            Cgroups::None => Ok(None),
        }
    }

    /// A group holding every lab host's sshd (and so every session and command they
    /// start), for the target side's CPU time. None when it cannot be made.
    fn hosts_group(&self, sshd_pids: &[String]) -> Option<PathBuf> {
        let dir = match self {
            Cgroups::V2(p) => p.join(format!("kfix-bench-hosts-{}", std::process::id())),
            Cgroups::V1 { cpuacct, .. } => {
                cpuacct.join(format!("kfix-bench-hosts-{}", std::process::id()))
            }
            Cgroups::None => return None,
        };
        std::fs::create_dir(&dir).ok()?;
        for pid in sshd_pids {
            if std::fs::write(dir.join("cgroup.procs"), pid).is_err() {
                let _ = std::fs::remove_dir(&dir);
                return None;
            }
        }
        Some(dir)
    }

    /// CPU seconds (user+sys) a group has used so far.
    fn usage(&self, dir: &Path) -> Option<f64> {
        match self {
            Cgroups::V2(_) => read(&dir.join("cpu.stat"))
                .ok()?
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .map(|us| us / 1e6),
            Cgroups::V1 { .. } => read(&dir.join("cpuacct.usage"))
                .ok()?
                .trim()
                .parse::<f64>()
                .ok()
                .map(|ns| ns / 1e9),
            Cgroups::None => None,
        }
    }

    /// Kills what the run left behind in its group (ssh ControlMasters started by the
    /// tool: every process in the group was started by this run) and removes the groups.
    fn remove(&self, name: &str) {
        let dirs: Vec<PathBuf> = match self {
            Cgroups::V2(p) => vec![p.join(name)],
            Cgroups::V1 { cpuacct, memory } => vec![cpuacct.join(name), memory.join(name)],
            Cgroups::None => vec![],
        };
        let Some(first) = dirs.first() else { return };
        let procs = first.join("cgroup.procs");
        for round in 0..60 {
            let pids: Vec<i32> = read(&procs)
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect();
            if pids.is_empty() {
                break;
            }
            let sig = if round < 30 {
                libc::SIGTERM
            } else {
                libc::SIGKILL
            };
            for pid in pids {
                // SAFETY: kill(2) with a pid read from this run's own cgroup.
                unsafe {
                    libc::kill(pid, sig);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for d in dirs.iter().rev() {
            for _ in 0..50 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// One timed command's measurements.
struct Measured {
    wall_s: f64,
    user_s: f64,
    sys_s: f64,
    peak_mem_bytes: Option<u64>,
    max_rss_bytes: u64,
    exit_code: i32,
}

/// Runs `script` with sh in the lab's controller netns, inside fresh cgroups, with
/// stdout and stderr to `out`/`err`; measures wall time from spawn to exit.
fn measure(
    cg: &Cgroups,
    ctl_ns: &str,
    script: &str,
    env: &[(&str, String)],
    cwd: &Path,
    out: &Path,
    err: &Path,
) -> Result<Measured> {
    static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let name = format!(
        "kfix-bench-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    );
    let procs = cg.create(&name)?;
    let procs_words: Vec<String> = procs
        .iter()
        .map(|p| path_str(p).map(str::to_string))
        .collect::<Result<_>>()?;
    let file = |p: &Path| std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()));
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"for f in $KFB_PROCS; do echo $$ >"$f"; done; exec ip netns exec "$KFB_NS" sh -c "$KFB_SCRIPT""#)
        .env("KFB_PROCS", procs_words.join(" "))
        .env("KFB_NS", ctl_ns)
        .env("KFB_SCRIPT", script)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(file(out)?)
        .stderr(file(err)?);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let t0 = Instant::now();
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            cg.remove(&name);
            return Err(format!("spawn sh: {e}"));
        }
    };
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child, with valid pointers; `child` is not waited on
    // elsewhere (std's Child does not reap on drop).
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let wall_s = t0.elapsed().as_secs_f64();
    if r != pid {
        cg.remove(&name);
        return Err(format!("wait4: {}", std::io::Error::last_os_error()));
    }
    let group = cg.read(&name);
    cg.remove(&name);
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let (user_s, sys_s, peak) = match group? {
        Some((u, s, p)) => (u, s, Some(p)),
        None => (tv(ru.ru_utime), tv(ru.ru_stime), None),
    };
    let exit_code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    Ok(Measured {
        wall_s,
        user_s,
        sys_s,
        peak_mem_bytes: peak,
        max_rss_bytes: ru.ru_maxrss as u64 * 1024,
        exit_code,
    })
}

// --- the tools -----------------------------------------------------------------------------

/// Files for one fleet size and kex: inventories and ssh configs.
struct Targets {
    n: usize,
    kex: Kex,
    ssh_config: PathBuf,
    inventory: PathBuf,
    pyinfra_inventory: PathBuf,
    ansible_cfg: PathBuf,
    ips: Vec<String>,
}

fn targets(cfg: &Config, lab: &Lab, n: usize, kex: Kex) -> Result<Targets> {
    let dir = cfg.work.join(format!("n{n}-{}", kex.name()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let base = read(&lab.dir.join("ssh_config"))?;
    let ssh_config = dir.join("ssh_config");
    let kex_line = match kex {
        Kex::Default => "",
        // Before `Host *`: applies to every host, whatever the rest of the file says.
        Kex::Curve25519 => "KexAlgorithms curve25519-sha256\n",
    };
    // Every tool gets CONNECT_TIMEOUT (the lab's file says 5 s): 200 simultaneous
    // handshakes on 2 shared CPUs can take longer than that. The first value wins.
    write(
        &ssh_config,
        &format!("{kex_line}ConnectTimeout {CONNECT_TIMEOUT}\n{base}"),
    )?;
    let key = lab.dir.join("id_ed25519");
    let key = path_str(&key)?;
    let ips: Vec<String> = (0..n).map(|i| lab.ip(i).to_string()).collect();
    let mut ini = String::from("[lab]\n");
    let mut py = String::from("lab = [\n");
    for (i, ip) in ips.iter().enumerate() {
        ini.push_str(&format!(
            "h{} ansible_host={ip} ansible_user=root ansible_ssh_private_key_file={key}\n",
            i + 1
        ));
        py.push_str(&format!(
            "    (\"h{}\", {{\"ssh_hostname\": \"{ip}\"}}),\n",
            i + 1
        ));
    }
    py.push_str("]\n");
    // pyinfra reads the same ssh config (user, key, known_hosts, strict checking); it
    // has no KexAlgorithms (paramiko chooses; see negotiated_kex in the results).
    py.insert_str(
        0,
        &format!(
            "# Generated by the fleet benchmark.\n\
             _data = {{\"ssh_config_file\": {cfgfile:?}, \"ssh_key\": {key:?}, \"ssh_user\": \"root\", \
             \"ssh_known_hosts_file\": {kh:?}, \"ssh_strict_host_key_checking\": \"yes\"}}\n",
            cfgfile = path_str(&ssh_config)?,
            kh = path_str(&lab.dir.join("known_hosts"))?,
        ),
    );
    py.push_str("lab = [(name, {**_data, **data}) for name, data in lab]\n");
    let inventory = dir.join("inventory.ini");
    write(&inventory, &ini)?;
    let pyinfra_inventory = dir.join("inventory.py");
    write(&pyinfra_inventory, &py)?;
    // ansible tuned as the issue asks: forks = N, pipelining, ControlPersist, no facts,
    // strict host keys against the lab's known_hosts (through the same ssh config),
    // the target's python given (no interpreter discovery round trip).
    let cp = dir.join("cp");
    std::fs::create_dir_all(&cp).map_err(|e| format!("{}: {e}", cp.display()))?;
    let ansible_cfg = dir.join("ansible.cfg");
    write(
        &ansible_cfg,
        &format!(
            "# Generated by the fleet benchmark.\n\
             [defaults]\n\
             inventory = {inv}\n\
             forks = {n}\n\
             gathering = explicit\n\
             host_key_checking = True\n\
             interpreter_python = /usr/bin/python3\n\
             timeout = {CONNECT_TIMEOUT}\n\
             retry_files_enabled = False\n\
             local_tmp = {tmp}\n\
             [ssh_connection]\n\
             pipelining = True\n\
             ssh_args = -F {cfgfile} -o ControlMaster=auto -o ControlPersist=60s\n\
             control_path_dir = {cp}\n",
            inv = path_str(&inventory)?,
            tmp = path_str(&dir.join("ansible-tmp"))?,
            cfgfile = path_str(&ssh_config)?,
            cp = path_str(&cp)?,
        ),
    )?;
    Ok(Targets {
        n,
        kex,
        ssh_config,
        inventory,
        pyinfra_inventory,
        ansible_cfg,
        ips,
    })
}

/// The environment every tool runs with: kfix's playbooks and a scratch state dir, and
/// ansible's own files in the scratch dir.
fn tool_env(cfg: &Config) -> Result<[(&'static str, String); 4]> {
    Ok([
        ("NO_COLOR", "1".to_string()),
        (
            "KFIX_PLAYBOOK_DIR",
            path_str(&cfg.root.join("playbooks"))?.to_string(),
        ),
        (
            "KFIX_STATE_DIR",
            path_str(&cfg.work.join("kfix-state"))?.to_string(),
        ),
        (
            "ANSIBLE_HOME",
            path_str(&cfg.work.join("ansible-home"))?.to_string(),
        ),
    ])
}

/// The shell script that is timed for `tool`.
fn tool_script(cfg: &Config, t: &Targets, tool: Tool, run_dir: &Path) -> Result<String> {
    let q = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let kfix = q(path_str(&cfg.kfix)?);
    let common = format!(
        "-i {} --ssh-config {} --forks {} --connect-timeout {CONNECT_TIMEOUT} --output json",
        q(path_str(&t.inventory)?),
        q(path_str(&t.ssh_config)?),
        t.n
    );
    let out = |name: &str| -> Result<String> { Ok(q(path_str(&run_dir.join(name))?)) };
    let venv = cfg.cache.join("venv/bin");
    let fleet = cfg.root.join("benches/fleet");
    Ok(match tool {
        Tool::Kfix | Tool::KfixRerun => format!(
            "{kfix} run persist-ip-forward service-masquerade {common} --yes >{}",
            out("run.json")?
        ),
        Tool::KfixCheck => format!(
            "{kfix} check {} {common} >{}; test $? -le 1",
            CHECK_PLAYBOOKS.join(" "),
            out("check.json")?
        ),
        Tool::Ansible => format!(
            "ANSIBLE_CONFIG={} {} {}",
            q(path_str(&t.ansible_cfg)?),
            q(path_str(&venv.join("ansible-playbook"))?),
            q(path_str(&fleet.join("ansible/fix.yml"))?)
        ),
        Tool::Pyinfra => format!(
            "{} -y --parallel {} {} {}",
            q(path_str(&venv.join("pyinfra"))?),
            t.n,
            q(path_str(&t.pyinfra_inventory)?),
            q(path_str(&fleet.join("pyinfra/fix.py"))?)
        ),
        Tool::Floor => format!(
            "bash {} {} {}",
            q(path_str(&fleet.join("floor.sh"))?),
            q(path_str(&t.ssh_config)?),
            t.ips.join(" ")
        ),
    })
}

/// Checks a kfix JSON document: every one of the `n` hosts has status `want`.
fn check_kfix_run(path: &Path, n: usize, want: &str) -> Result<()> {
    let doc: serde_json::Value =
        serde_json::from_str(&read(path)?).map_err(|e| format!("{}: {e}", path.display()))?;
    let runs = doc.as_array().map(Vec::as_slice).unwrap_or(&[]);
    let ids: Vec<&str> = runs.iter().filter_map(|r| r["playbook"].as_str()).collect();
    if ids != ["persist-ip-forward", "service-masquerade"] {
        return Err(format!("{}: runs of {ids:?}", path.display()));
    }
    for run in runs {
        let hosts = run["hosts"]
            .as_array()
            .ok_or_else(|| format!("{}: no hosts", path.display()))?;
        let bad: Vec<String> = hosts
            .iter()
            .filter(|h| h["status"] != want)
            .map(|h| format!("{} {} ({})", h["host"], h["status"], h["reason"]))
            .collect();
        if hosts.len() != n || !bad.is_empty() {
            return Err(format!(
                "{} ({}): {} hosts, want {n} {want}; others: {}",
                path.display(),
                run["playbook"],
                hosts.len(),
                bad.join("; ")
            ));
        }
    }
    Ok(())
}

/// Checks `kfix check`'s document: every host checked, both injected faults found.
fn check_kfix_check(path: &Path, n: usize) -> Result<()> {
    let doc: serde_json::Value =
        serde_json::from_str(&read(path)?).map_err(|e| format!("{}: {e}", path.display()))?;
    let checks = doc["checks"]
        .as_array()
        .ok_or_else(|| format!("{}: no checks", path.display()))?;
    if checks.len() != CHECK_PLAYBOOKS.len() {
        return Err(format!(
            "{}: {} playbooks checked",
            path.display(),
            checks.len()
        ));
    }
    for c in checks {
        let id = c["playbook"].as_str().unwrap_or("");
        let hosts = c["hosts"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        let faulty = id == "persist-ip-forward" || id == "service-masquerade";
        let bad: Vec<String> = hosts
            .iter()
            .filter(|h| {
                let s = h["status"].as_str().unwrap_or("");
                if faulty {
                    s != "problem"
                } else {
                    !matches!(s, "problem" | "healthy" | "skipped")
                }
            })
            .map(|h| format!("{} {} ({})", h["host"], h["status"], h["reason"]))
            .collect();
        if hosts.len() != n || !bad.is_empty() {
            return Err(format!(
                "{}: {id}: {} hosts of {n}; unexpected: {}",
                path.display(),
                hosts.len(),
                bad.join("; ")
            ));
        }
    }
    Ok(())
}

/// The kex each client negotiates with h1, per setting.
fn negotiated_kex(cfg: &Config, lab: &Lab, t: &Targets) -> Result<Vec<(String, String)>> {
    let cfgfile = path_str(&t.ssh_config)?;
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.ctl_ns,
            "ssh",
            "-v",
            "-n",
            "-F",
            cfgfile,
        ])
        .args([lab.ip(0), "true"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ssh -v: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let openssh = stderr
        .lines()
        .find_map(|l| l.strip_prefix("debug1: kex: algorithm: "))
        .unwrap_or("?")
        .to_string();
    let mut v = vec![(
        format!("openssh ({}): kfix, ansible, floor", t.kex.name()),
        openssh,
    )];
    if cfg.tools.contains(&Tool::Pyinfra) {
        let py = lab.ctl(&[
            path_str(&cfg.cache.join("venv/bin/python"))?,
            path_str(&cfg.root.join("benches/fleet/pyinfra/kex_probe.py"))?,
            lab.ip(0),
            path_str(&lab.dir.join("known_hosts"))?,
            path_str(&lab.dir.join("id_ed25519"))?,
        ])?;
        v.push((
            format!("paramiko ({}): pyinfra", t.kex.name()),
            py.trim().to_string(),
        ));
    }
    Ok(v)
}

fn first_line(cmd: &mut Command) -> String {
    cmd.stdin(Stdio::null())
        .output()
        .ok()
        .map(|o| {
            let s = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&s)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

fn loadavg() -> String {
    read(Path::new("/proc/loadavg"))
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn machine(cfg: &Config) -> Machine {
    let cpuinfo = read(Path::new("/proc/cpuinfo")).unwrap_or_default();
    let venv = cfg.cache.join("venv/bin");
    Machine {
        nproc: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        cpu_model: cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            .unwrap_or_default(),
        kernel: first_line(Command::new("uname").arg("-r")),
        openssh: first_line(Command::new("ssh").arg("-V")),
        kfix: first_line(Command::new(&cfg.kfix).arg("--version")),
        ansible_core: first_line(Command::new(venv.join("ansible")).arg("--version")),
        pyinfra: first_line(Command::new(venv.join("pyinfra")).arg("--version")),
        memory_total: read(Path::new("/proc/meminfo"))
            .unwrap_or_default()
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("MemTotal:"))
            .map(|v| v.trim().to_string())
            .unwrap_or_default(),
        load_before: loadavg(),
        load_after: String::new(),
        commit: first_line(
            Command::new("git")
                .args(["describe", "--always", "--dirty"])
                .current_dir(&cfg.root),
        ),
    }
}

/// Counts, per tool, the SSH connections, sessions and processes it makes one faulty
/// host run: a lab of one host, strace following that host's sshd during the tool's run.
pub fn profile_sessions(cfg: &Config) -> Result<Vec<SessionCount>> {
    let cg = Cgroups::None;
    let lab = Lab::up(
        &cfg.root,
        &cfg.cache.join("rootfs"),
        &cfg.work.join("profile-lab"),
        1,
        &cg,
    )?;
    let kex = *cfg.kexes.last().ok_or("no kex")?;
    let t = targets(cfg, &lab, 1, kex)?;
    let sshd = read(&lab.dir.join("hosts/h1/sshd.pid"))?.trim().to_string();
    let mut counts = Vec::new();
    for &tool in &cfg.tools {
        let run_dir = cfg.work.join(format!("profile-{tool}"));
        std::fs::create_dir_all(&run_dir).map_err(|e| format!("{}: {e}", run_dir.display()))?;
        if tool == Tool::KfixRerun {
            lab.on_hosts(1, |_| verify_script())?;
        } else {
            lab.on_hosts(1, |_| inject_script())?;
        }
        let trace = run_dir.join("strace");
        let mut strace = Command::new("strace")
            .args([
                "-f",
                "-qq",
                "-s",
                "24",
                "-e",
                "trace=execve",
                "-e",
                "signal=none",
            ])
            .arg("-o")
            .arg(&trace)
            .args(["-p", &sshd])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("strace: {e}"))?;
        std::thread::sleep(Duration::from_millis(500));
        let script = tool_script(cfg, &t, tool, &run_dir)?;
        let env = tool_env(cfg)?;
        let m = measure(
            &cg,
            &lab.ctl_ns,
            &script,
            &env,
            &run_dir,
            &run_dir.join("stdout"),
            &run_dir.join("stderr"),
        );
        std::thread::sleep(Duration::from_millis(500));
        // SAFETY: SIGTERM to the strace this function started (it detaches and exits).
        unsafe {
            libc::kill(strace.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = strace.wait();
        let m = m?;
        if m.exit_code != 0 {
            return Err(format!(
                "profiling {tool}: exit {} ({})",
                m.exit_code,
                run_dir.display()
            ));
        }
        let text = read(&trace)?;
        let ok: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("execve(") && l.trim_end().ends_with("= 0"))
            .collect();
        counts.push(SessionCount {
            tool,
            connections: ok.iter().filter(|l| l.contains("\"-R\"")).count(),
            sessions: ok
                .iter()
                .filter(|l| l.contains("[\"bash\", \"-c\""))
                .count(),
            processes: ok.len(),
            programs: ok
                .iter()
                .filter_map(|l| l.split("execve(\"").nth(1))
                .filter_map(|rest| rest.split('"').next())
                .map(str::to_string)
                .collect(),
        });
        log(&format!("sessions on one host: {:?}", counts.last()));
    }
    Ok(counts)
}

/// Runs the whole benchmark: one lab of the largest size, every size, kex, repetition
/// and tool; every fixing run verified on every host. `on_sample` sees each sample as
/// it is measured (progress, partial results).
pub fn run(cfg: &Config, mut on_sample: impl FnMut(&Results)) -> Result<Results> {
    let max = *cfg.sizes.iter().max().ok_or("no sizes")?;
    let cg = Cgroups::detect();
    let mut results = Results {
        command: cfg.command.clone(),
        started: first_line(Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])),
        sizes: cfg.sizes.clone(),
        reps: cfg.reps,
        machine: machine(cfg),
        cpu_source: cg.describe(),
        ..Results::default()
    };
    for &n in &cfg.sizes {
        for &kex in &cfg.kexes {
            for &tool in &cfg.tools {
                results.planned.push(Planned {
                    n,
                    kex,
                    tool,
                    reps: cfg.reps,
                });
            }
        }
    }
    log(&format!("measuring with {}", results.cpu_source));
    let lab = Lab::up(
        &cfg.root,
        &cfg.cache.join("rootfs"),
        &cfg.work.join("lab"),
        max,
        &cg,
    )?;
    let env = tool_env(cfg)?;
    let mut sizes = cfg.sizes.clone();
    sizes.sort_unstable();
    for &n in &sizes {
        for &kex in &cfg.kexes {
            let t = targets(cfg, &lab, n, kex)?;
            if n == sizes[0] {
                for (k, v) in negotiated_kex(cfg, &lab, &t)? {
                    log(&format!("kex {k}: {v}"));
                    results.negotiated_kex.insert(k, v);
                }
            }
            for rep in 0..cfg.reps {
                for &tool in &cfg.tools {
                    let what = format!("N={n} kex={} rep={rep} {tool}", kex.name());
                    let attempt = || -> Result<Sample> {
                        let run_dir = cfg
                            .work
                            .join(format!("n{n}-{}", kex.name()))
                            .join(format!("{tool}-{rep}"));
                        std::fs::create_dir_all(&run_dir)
                            .map_err(|e| format!("{}: {e}", run_dir.display()))?;
                        // Fresh faults, except for the idempotent rerun: that needs the
                        // hosts kfix just fixed (it follows Tool::Kfix).
                        if tool == Tool::KfixRerun {
                            lab.on_hosts(n, |_| verify_script())
                                .map_err(|e| format!("{tool} needs fixed hosts: {e}"))?;
                        } else {
                            lab.on_hosts(n, |_| inject_script())
                                .map_err(|e| format!("injecting the faults: {e}"))?;
                        }
                        let script = tool_script(cfg, &t, tool, &run_dir)?;
                        let host_usage = || lab.hosts_cg.as_ref().and_then(|d| cg.usage(d));
                        let host_before = host_usage();
                        let m = measure(
                            &cg,
                            &lab.ctl_ns,
                            &script,
                            &env,
                            &run_dir,
                            &run_dir.join("stdout"),
                            &run_dir.join("stderr"),
                        )?;
                        let host_cpu_s = match (host_before, host_usage()) {
                            (Some(a), Some(b)) => Some(b - a),
                            _ => None,
                        };
                        let tail = || {
                            let e = read(&run_dir.join("stderr")).unwrap_or_default();
                            let o = read(&run_dir.join("stdout")).unwrap_or_default();
                            let last = |s: &str| {
                                let l: Vec<&str> = s.lines().collect();
                                l[l.len().saturating_sub(15)..].join("\n")
                            };
                            format!(
                                "--- stdout (end)\n{}\n--- stderr (end)\n{}",
                                last(&o),
                                last(&e)
                            )
                        };
                        if m.exit_code != 0 {
                            // kfix's JSON says which hosts failed and why.
                            let p = run_dir.join("run.json");
                            let hosts = if p.exists() {
                                check_kfix_run(&p, n, "changed").err().unwrap_or_default()
                            } else {
                                String::new()
                            };
                            return Err(format!(
                                "{what}: exit {} (files in {})\n{hosts}\n{}",
                                m.exit_code,
                                run_dir.display(),
                                tail()
                            ));
                        }
                        match tool {
                            Tool::Kfix | Tool::KfixRerun => {
                                let want = if tool == Tool::Kfix {
                                    "changed"
                                } else {
                                    "healthy"
                                };
                                check_kfix_run(&run_dir.join("run.json"), n, want)?;
                            }
                            Tool::KfixCheck => check_kfix_check(&run_dir.join("check.json"), n)?,
                            _ => {}
                        }
                        if tool != Tool::KfixCheck {
                            lab.on_hosts(n, |_| verify_script())
                                .map_err(|e| format!("hosts not fixed: {e}\n{}", tail()))?;
                        }
                        log(&format!(
                            "{what}: {:.2}s wall, {:.2}s cpu, {:.2}s hosts' cpu, peak {} MiB, max rss {} MiB",
                            m.wall_s,
                            m.user_s + m.sys_s,
                            host_cpu_s.unwrap_or(f64::NAN),
                            m.peak_mem_bytes.map(|b| b >> 20).unwrap_or(0),
                            m.max_rss_bytes >> 20
                        ));
                        Ok(Sample {
                            n,
                            kex,
                            tool,
                            rep,
                            wall_s: m.wall_s,
                            cpu_s: m.user_s + m.sys_s,
                            cpu_user_s: m.user_s,
                            cpu_sys_s: m.sys_s,
                            peak_mem_bytes: m.peak_mem_bytes,
                            max_rss_bytes: m.max_rss_bytes,
                            host_cpu_s,
                        })
                    };
                    match attempt() {
                        Ok(sample) => results.samples.push(sample),
                        Err(e) if cfg.keep_going => {
                            log(&format!("FAILED {what}: {e}"));
                            results.failures.push(format!("{what}: {e}"));
                        }
                        Err(e) => return Err(format!("{what}: {e}")),
                    }
                    results.machine.load_after = loadavg();
                    on_sample(&results);
                }
            }
        }
    }
    drop(lab);
    results.machine.load_after = loadavg();
    Ok(results)
}
