//! Test harness for the real multi-host lab (tests/lab/lab.sh): hosts are sshd's in their
//! own network, mount and UTS namespaces; kfix runs in the lab's controller namespace.
#![allow(dead_code)]

pub mod playbook;
pub mod rpm;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The lab CLI.
pub fn lab_sh() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lab/lab.sh")
}

/// True when the lab can run (root). On a non-root dev machine prints a skip line and
/// returns false so the test can `return` early; in CI (root) lab tests always run.
pub fn require_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("");
    if euid == "0" {
        return true;
    }
    eprintln!("skipping lab test: needs root (the lab creates network namespaces)");
    false
}

/// The kfix binary under test, run on this machine (no lab) in `cwd`, with no
/// KFIX_PLAYBOOK_DIR from the environment and NO_COLOR=1.
pub fn kfix_in(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kfix"))
        .args(args)
        .current_dir(cwd)
        .env_remove("KFIX_PLAYBOOK_DIR")
        .env("NO_COLOR", "1")
        .output()
        .expect("run kfix")
}

/// A fresh, unique directory under the temp dir (no tempfile crate here).
pub fn unique_dir(prefix: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("{prefix}-{}-{n}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// kfix's JSON document on stdout; a panic with both streams when there is none.
pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON on stdout ({e})\n{}", show(out)))
}

fn show(out: &Output) -> String {
    format!(
        "exit: {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A running lab: hosts h1..hN. Dropping it tears the lab down and removes its directory.
pub struct Lab {
    pub dir: PathBuf,
    pub hosts: Vec<String>,
}

impl Lab {
    /// Brings up `n` hosts. Assumes tests/lab/install-deps.sh has been run.
    pub fn up(n: usize) -> Lab {
        Lab::up_with_systemd(n, &[])
    }

    /// Brings up `n` hosts; those named in `systemd` (e.g. `["h2"]`) boot systemd
    /// (`lab.sh up --systemd`: systemd-nspawn, sshd as a unit, docker.io installed but
    /// not started).
    pub fn up_with_systemd(n: usize, systemd: &[&str]) -> Lab {
        let dir = unique_dir("kfix-lab");
        let mut cmd = Command::new("bash");
        cmd.arg(lab_sh()).arg("up").arg(&dir).arg(n.to_string());
        if !systemd.is_empty() {
            cmd.arg("--systemd").arg(systemd.join(","));
        }
        let out = cmd.stdin(Stdio::null()).output().expect("run lab.sh up");
        if !out.status.success() {
            // lab.sh cleans up after a failed `up`; make sure, then drop the dir.
            let _ = Command::new("bash")
                .arg(lab_sh())
                .arg("down")
                .arg(&dir)
                .output();
            let _ = std::fs::remove_dir_all(&dir);
            panic!(
                "lab.sh up {} {n} {systemd:?} failed\n{}",
                dir.display(),
                show(&out)
            );
        }
        Lab {
            dir,
            hosts: (1..=n).map(|i| format!("h{i}")).collect(),
        }
    }

    /// Runs `lab.sh <args>` with stdin closed.
    pub fn lab(&self, args: &[&str]) -> Output {
        self.lab_with_input(args, None)
    }

    fn lab_with_input(&self, args: &[&str], input: Option<&[u8]>) -> Output {
        let (cmd, rest) = args.split_first().expect("lab.sh subcommand");
        let mut c = Command::new("bash");
        c.arg(lab_sh()).arg(cmd).arg(&self.dir).args(rest);
        match input {
            None => c.stdin(Stdio::null()).output().expect("run lab.sh"),
            Some(bytes) => {
                use std::io::Write;
                let mut child = c
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("run lab.sh");
                let mut stdin = child.stdin.take().expect("stdin");
                let bytes = bytes.to_vec();
                let writer = std::thread::spawn(move || {
                    let _ = stdin.write_all(&bytes);
                });
                let out = child.wait_with_output().expect("wait lab.sh");
                let _ = writer.join();
                out
            }
        }
    }

    /// `bash -c script` inside `host` (its network namespace, filesystem and hostname, as
    /// root, clean environment). Does not check the exit status.
    pub fn exec(&self, host: &str, script: &str) -> Output {
        self.lab(&["exec", host, "--", "bash", "-c", script])
    }

    /// Like `exec`, with `input` on the script's stdin.
    pub fn exec_with_input(&self, host: &str, script: &str, input: &[u8]) -> Output {
        self.lab_with_input(&["exec", host, "--", "bash", "-c", script], Some(input))
    }

    /// `exec`, asserting success; returns stdout.
    pub fn sh(&self, host: &str, script: &str) -> String {
        let out = self.exec(host, script);
        assert!(out.status.success(), "on {host}: {script}\n{}", show(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes `content` to `path` on `host` (creating parent dirs).
    pub fn write_file(&self, host: &str, path: &str, content: &str) {
        let script = r#"mkdir -p "$(dirname "$1")" && cat >"$1""#;
        let out = self.lab_with_input(
            &["exec", host, "--", "bash", "-c", script, "_", path],
            Some(content.as_bytes()),
        );
        assert!(
            out.status.success(),
            "write {path} on {host}\n{}",
            show(&out)
        );
    }

    /// Canonical text dump of the host's state (routes, links, addresses, iptables
    /// filter/nat, net sysctls, files under /etc /run/flannel /var/lib/docker /var/lib/kfix).
    pub fn snapshot(&self, host: &str) -> String {
        self.snapshot_excluding(host, &[])
    }

    /// `snapshot` without files matching these paths (a path excludes everything under it;
    /// globs allowed).
    pub fn snapshot_excluding(&self, host: &str, exclude: &[&str]) -> String {
        let mut args = vec!["snapshot", host];
        for e in exclude {
            args.push("--exclude");
            args.push(e);
        }
        let out = self.lab(&args);
        assert!(out.status.success(), "snapshot {host}\n{}", show(&out));
        String::from_utf8(out.stdout).expect("snapshot is utf-8")
    }

    /// Runs a command in the controller network namespace (where kfix runs).
    pub fn ctl(&self, cmd: &[&str]) -> Output {
        let mut args = vec!["ctl", "--"];
        args.extend_from_slice(cmd);
        self.lab(&args)
    }

    /// The real ssh client from the controller namespace, with the lab's ssh_config.
    pub fn ssh(&self, host: &str, command: &str) -> Output {
        let cfg = self.ssh_config();
        let ip = self.ip(host);
        self.ctl(&["ssh", "-F", cfg.to_str().expect("utf-8 path"), &ip, command])
    }

    /// The kfix binary under test, run in the controller netns, cwd = the crate root,
    /// NO_COLOR=1, stdin closed.
    pub fn kfix(&self, args: &[&str]) -> Output {
        self.kfix_command(args)
            .output()
            .expect("run kfix in the lab's ctl netns")
    }

    /// The same, in the background with stdout and stderr piped (for tests that signal
    /// it or watch the hosts while it works). `ip netns exec` execs kfix: the child's pid
    /// is kfix's.
    pub fn spawn_kfix(&self, args: &[&str]) -> std::process::Child {
        self.kfix_command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kfix in the lab's ctl netns")
    }

    /// `kfix ARGS… -i INVENTORY --ssh-config SSH_CONFIG`: [`Lab::kfix`] against this
    /// lab's hosts.
    pub fn kfix_fleet(&self, args: &[&str]) -> Output {
        self.kfix_command(args)
            .args(self.fleet_flags())
            .output()
            .expect("run kfix in the lab's ctl netns")
    }

    /// `kfix ARGS… -i INVENTORY --ssh-config CFG --output json` against `inventory` (the
    /// lab's own with None), its JSON document parsed (see [`json`]).
    pub fn kfix_json(&self, args: &[&str], inventory: Option<&Path>) -> serde_json::Value {
        let inventory = inventory.map_or_else(|| self.inventory(), Path::to_path_buf);
        let out = self
            .kfix_command(args)
            .arg("-i")
            .arg(inventory)
            .arg("--ssh-config")
            .arg(self.ssh_config())
            .args(["--output", "json"])
            .output()
            .expect("run kfix in the lab's ctl netns");
        json(&out)
    }

    /// [`Lab::spawn_kfix`] against this lab's hosts (see [`Lab::kfix_fleet`]).
    pub fn spawn_kfix_fleet(&self, args: &[&str]) -> std::process::Child {
        self.kfix_command(args)
            .args(self.fleet_flags())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kfix in the lab's ctl netns")
    }

    fn fleet_flags(&self) -> [std::ffi::OsString; 4] {
        [
            "-i".into(),
            self.inventory().into(),
            "--ssh-config".into(),
            self.ssh_config().into(),
        ]
    }

    fn kfix_command(&self, args: &[&str]) -> Command {
        let ctl = std::fs::read_to_string(self.dir.join("ctl_ns")).expect("ctl_ns");
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ctl.trim(), env!("CARGO_BIN_EXE_kfix")])
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("NO_COLOR", "1")
            // Run journals stay inside the lab's directory.
            .env("KFIX_STATE_DIR", self.dir.join("state"))
            .stdin(Stdio::null());
        c
    }

    pub fn stop_sshd(&self, host: &str) {
        let out = self.lab(&["stop-sshd", host]);
        assert!(out.status.success(), "stop-sshd {host}\n{}", show(&out));
    }

    pub fn start_sshd(&self, host: &str) {
        let out = self.lab(&["start-sshd", host]);
        assert!(out.status.success(), "start-sshd {host}\n{}", show(&out));
    }

    /// A flannel-style data plane (tests/lab/flannel.sh) on `hosts` in 10.244.0.0/16:
    /// the Nth gets lease 10.244.N.0/24 and a pod at 10.244.N.2 (netns `pod`). `opts`:
    /// `--whole-network`, `--bridge docker0`; a host written `hN:docker0` has docker0
    /// as its pods' bridge.
    pub fn flannel(&self, opts: &[&str], hosts: &[&str]) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lab/flannel.sh");
        let out = Command::new("bash")
            .arg(script)
            .arg("up")
            .arg(&self.dir)
            .arg("10.244.0.0/16")
            .args(opts)
            .args(hosts)
            .stdin(Stdio::null())
            .output()
            .expect("run flannel.sh");
        assert!(out.status.success(), "flannel.sh {hosts:?}\n{}", show(&out));
    }

    /// Makes `host`'s `ip` behave like iproute2 before 4.14 (CentOS 7's 3.10) towards
    /// JSON: `-j` is refused with that version's message, anything else runs as usual.
    pub fn old_iproute(&self, host: &str) {
        self.sh(
            host,
            r#"mv /usr/bin/ip /usr/bin/ip.real && cat >/usr/bin/ip <<'WRAPPER'
#!/bin/sh
for a in "$@"; do
  case $a in -j|-js|-jso|-json|-[a-z]*j*) echo 'Option "-j" is unknown, try "ip -help".' >&2; exit 255 ;; esac
done
exec /usr/bin/ip.real "$@"
WRAPPER
chmod 0755 /usr/bin/ip && ! ip -j route show >/dev/null 2>&1 && ip route show >/dev/null"#,
        );
    }

    /// Makes `host` an rpm host as kfix sees it: dnf (in the lab's rootfs) is its package
    /// manager, dpkg's tools are hidden (dpkg-query.real: the snapshot still reads
    /// dpkg's state), os-release is CentOS 7's, and the rpm repository built from
    /// `spec` (tests/common/rpm.rs) is its only repository.
    pub fn rpm_host(&self, host: &str, spec: &str) {
        let repo = rpm::build_repo(&self.dir, spec);
        let out = self.exec_with_input(
            host,
            "mkdir -p /srv/kfix-rpm-repo && tar -C /srv/kfix-rpm-repo -xf -",
            &repo,
        );
        assert!(out.status.success(), "{}", show(&out));
        self.sh(
            host,
            r#"mv /usr/bin/dpkg-query /usr/bin/dpkg-query.real && mv /usr/bin/apt-get /usr/bin/apt-get.real
rm -f /etc/os-release && cat >/etc/os-release <<'OS'
NAME="CentOS Linux"
VERSION="7 (Core)"
ID="centos"
ID_LIKE="rhel fedora"
VERSION_ID="7"
PRETTY_NAME="CentOS Linux 7 (Core)"
OS
mkdir -p /etc/yum.repos.d && printf '[kfix-lab]
name=kfix lab
baseurl=file:///srv/kfix-rpm-repo
gpgcheck=0
' >/etc/yum.repos.d/kfix-lab.repo
! command -v dpkg-query && command -v dnf"#,
        );
    }

    /// One ping from `host`'s pod (netns `pod`) to `to`: ping's verdict line (`64 bytes
    /// from …`, `From X icmp_seq=1 Destination Host Prohibited`) or "no answer".
    pub fn pod_ping(&self, host: &str, to: &str) -> String {
        let out = self.exec(host, &format!("ip netns exec pod ping -n -c1 -W1 {to}"));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .filter(|l| !l.trim().is_empty())
            .unwrap_or("no answer")
            .trim()
            .to_string()
    }

    /// Ansible INI inventory: group `[lab]`, one line per host.
    pub fn inventory(&self) -> PathBuf {
        self.dir.join("inventory.ini")
    }

    /// ssh_config with strict host keys against the lab's known_hosts.
    pub fn ssh_config(&self) -> PathBuf {
        self.dir.join("ssh_config")
    }

    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    pub fn identity(&self) -> PathBuf {
        self.dir.join("id_ed25519")
    }

    pub fn ip(&self, host: &str) -> String {
        let p = self.dir.join("hosts").join(host).join("ip");
        std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("no host {host} ({}: {e})", p.display()))
            .trim()
            .to_string()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        match Command::new("bash")
            .arg(lab_sh())
            .arg("down")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .output()
        {
            Ok(out) if out.status.success() => {
                let _ = std::fs::remove_dir_all(&self.dir);
            }
            // Keep the dir for a post-mortem; never panic in drop (may be unwinding).
            Ok(out) => eprintln!("lab.sh down {} failed\n{}", self.dir.display(), show(&out)),
            Err(e) => eprintln!("lab.sh down {}: {e}", self.dir.display()),
        }
    }
}

/// Single-quotes `s` for a POSIX shell.
/// A run's SSH control directory (`$TMPDIR/kfix-RUNID-RANDOM`), while it exists.
#[allow(dead_code)]
pub fn control_dir_of(run_id: &str) -> Option<PathBuf> {
    let prefix = format!("kfix-{run_id}-");
    std::fs::read_dir(std::env::temp_dir())
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix))
        })
}

pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A real etcd (Debian's etcd-server) in the lab's controller namespace, killed on drop.
pub struct Etcd {
    child: std::process::Child,
    ctl: String,
    pub url: String,
    /// With TLS: the directory holding ca.crt, client.crt and client.key.
    pub pki: Option<std::path::PathBuf>,
}

/// A CA, a server certificate for etcd's address and a client certificate, made with
/// openssl in `dir` (as a site's etcd PKI: clients must present a certificate).
fn etcd_pki(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    let script = r#"set -e
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=etcd-ca -keyout ca.key -out ca.crt
for who in server client; do
  openssl req -newkey rsa:2048 -nodes -subj "/CN=etcd-$who" -keyout $who.key -out $who.csr
  printf 'subjectAltName=IP:10.250.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' >$who.ext
  openssl x509 -req -in $who.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile $who.ext -out $who.crt
done"#;
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl: {}", show(&out));
}

impl Etcd {
    pub fn start(lab: &Lab) -> Etcd {
        Etcd::start_with(lab, false)
    }

    /// etcd serving clients over TLS only, requiring a client certificate.
    pub fn start_tls(lab: &Lab) -> Etcd {
        Etcd::start_with(lab, true)
    }

    /// The TLS flags of etcdctl for `api` (2 or 3), or none.
    fn tls_flags(&self, api: u8) -> Vec<String> {
        let Some(p) = &self.pki else {
            return Vec::new();
        };
        let f = |n: &str| p.join(n).display().to_string();
        if api == 2 {
            vec![
                format!("--ca-file={}", f("ca.crt")),
                format!("--cert-file={}", f("client.crt")),
                format!("--key-file={}", f("client.key")),
            ]
        } else {
            vec![
                format!("--cacert={}", f("ca.crt")),
                format!("--cert={}", f("client.crt")),
                format!("--key={}", f("client.key")),
            ]
        }
    }

    fn start_with(lab: &Lab, tls: bool) -> Etcd {
        let ctl = std::fs::read_to_string(lab.dir.join("ctl_ns"))
            .unwrap()
            .trim()
            .to_string();
        let pki = tls.then(|| lab.dir.join("etcd-pki"));
        let mut server_tls: Vec<String> = Vec::new();
        if let Some(p) = &pki {
            etcd_pki(p);
            let f = |n: &str| p.join(n).display().to_string();
            server_tls = vec![
                format!("--cert-file={}", f("server.crt")),
                format!("--key-file={}", f("server.key")),
                format!("--trusted-ca-file={}", f("ca.crt")),
                "--client-cert-auth".to_string(),
            ];
        }
        let url = format!("{}://10.250.0.1:2379", if tls { "https" } else { "http" });
        let data = lab.dir.join("etcd");
        let child = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &ctl,
                "etcd",
                "--name",
                "lab",
                "--data-dir",
                data.to_str().unwrap(),
            ])
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args([
                "--listen-peer-urls",
                "http://127.0.0.1:2380",
                "--initial-advertise-peer-urls",
                "http://127.0.0.1:2380",
            ])
            .args(["--initial-cluster", "lab=http://127.0.0.1:2380"])
            // The v2 API too: old flannel keeps its leases there.
            .arg("--enable-v2")
            .args(&server_tls)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("etcd (tests/lab/install-deps.sh installs etcd-server)");
        let etcd = Etcd {
            child,
            ctl,
            url,
            pki,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !etcd.ctl_etcdctl(&["endpoint", "health"]).status.success() {
            assert!(std::time::Instant::now() < deadline, "etcd did not start");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        etcd
    }

    pub fn ctl_etcdctl(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ctl,
                "etcdctl",
                &format!("--endpoints={}", self.url),
            ])
            .args(self.tls_flags(3))
            .args(args)
            .output()
            .unwrap()
    }

    pub fn get(&self, key: &str) -> String {
        String::from_utf8_lossy(&self.ctl_etcdctl(&["get", key, "--print-value-only"]).stdout)
            .into_owned()
    }

    pub fn put(&self, key: &str, value: &str) {
        assert!(self.ctl_etcdctl(&["put", key, value]).status.success());
    }
}

impl Etcd {
    /// Every key under `prefix` with its exact value bytes (from `get -w json`).
    pub fn dump(&self, prefix: &str) -> Vec<(String, Vec<u8>)> {
        use base64::Engine;
        let out = self.ctl_etcdctl(&["get", "--prefix", "-w", "json", "--", prefix]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let b64 = |v: &serde_json::Value| {
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap_or(""))
                .unwrap()
        };
        doc["kvs"]
            .as_array()
            .map(|kvs| {
                kvs.iter()
                    .map(|kv| {
                        (
                            String::from_utf8(b64(&kv["key"])).unwrap(),
                            b64(&kv["value"]),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `ETCDCTL_API=2 etcdctl ARGS` in the controller namespace.
    pub fn v2(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ctl,
                "env",
                "ETCDCTL_API=2",
                "etcdctl",
            ])
            .arg(format!("--endpoints={}", self.url))
            .args(self.tls_flags(2))
            .args(args)
            .output()
            .unwrap()
    }

    /// Every v2 key under `dir`, with its value and TTL (0: none).
    pub fn dump_v2(&self, dir: &str) -> Vec<(String, String, i64)> {
        let out = self.v2(&["-o", "json", "ls", "--recursive", dir]);
        if !out.status.success() {
            return Vec::new();
        }
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut all = Vec::new();
        let mut todo = vec![doc["node"].clone()];
        while let Some(n) = todo.pop() {
            if n["dir"].as_bool().unwrap_or(false) {
                todo.extend(n["nodes"].as_array().cloned().unwrap_or_default());
            } else {
                all.push((
                    n["key"].as_str().unwrap().to_string(),
                    n["value"].as_str().unwrap().to_string(),
                    n["ttl"].as_i64().unwrap_or(0),
                ));
            }
        }
        all.sort();
        all
    }

    /// Put exact bytes (on etcdctl's stdin, so any byte goes).
    pub fn put_bytes(&self, key: &str, value: &[u8]) {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ctl, "etcdctl"])
            .arg(format!("--endpoints={}", self.url))
            .args(self.tls_flags(3))
            .args(["put", "--", key])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(value).unwrap();
        assert!(child.wait().unwrap().success());
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Host `name`'s entry in a kfix JSON document's `hosts` (a run, a rollback, a check).
pub fn host<'a>(doc: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doc["hosts"]
        .as_array()
        .and_then(|a| a.iter().find(|h| h["host"] == name))
        .unwrap_or_else(|| panic!("no host {name} in {doc:#}"))
}
