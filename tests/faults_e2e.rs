//! Fault injection on the real lab. Gated playbooks stop a run at a chosen point (a step
//! boundary, the middle of a step, the verification) so the fault lands exactly there:
//! - the controller gets SIGKILL, SIGINT, or SIGINT twice at each point: no remote
//!   command, ssh process or control socket outlives it for long (remote commands die on
//!   the host after their timeout, masters within their 30 s idle limit, and the next kfix
//!   removes a dead run's control directory), the host lock is free again, and
//!   `kfix rollback` restores every host to its snapshot;
//! - a host's sshd (listener and sessions) is killed after a step: the host is
//!   `unreachable` with its last completed step, the rest of the fleet goes on, and once
//!   sshd is back `kfix rollback --limit` converges it.

mod common;

use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Lab, require_root};
use serde_json::Value;

fn s(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A step boundary (after `file`), the middle of a step (`partial` has written half of
/// its change), and the verification (every step applied). Each gate marks that it is
/// reached, then waits for its /run/kfix-go-GATE.
const GATED: &str = r#"id: gated
title: Gated steps for fault injection
steps:
  - id: file
    file: {path: /etc/kfix-fault-a, content: "a\n"}
  - id: boundary
    command:
      run: [sh, -c, 'touch /run/kfix-at-boundary; while [ ! -e /run/kfix-go-boundary ]; do sleep 0.05; done']
      creates: /etc/kfix-never
      undo: ["true"]
  - id: sysctl
    sysctl: {key: net.ipv4.conf.all.rp_filter, value: "2", persist: false}
  - id: partial
    command:
      run: [sh, -c, 'echo half > /etc/kfix-fault-b; touch /run/kfix-at-partial; while [ ! -e /run/kfix-go-partial ]; do sleep 0.05; done; echo full >> /etc/kfix-fault-b']
      creates: /etc/kfix-fault-b
      undo: [rm, -f, /etc/kfix-fault-b]
  - id: iptables
    iptables: {table: filter, chain: INPUT, rule: "-s 10.99.0.0/16 -j ACCEPT", insert: true}
verify:
  - name: verification gate
    command: [sh, -c, 'touch /run/kfix-at-verify; while [ ! -e /run/kfix-go-verify ]; do sleep 0.05; done']
"#;

/// Inode of a named network namespace (the lab's are under /run/netns).
fn netns_inode(name: &str) -> u64 {
    std::fs::metadata(format!("/run/netns/{name}"))
        .expect("lab netns")
        .ino()
}

/// PIDs of processes in network namespace `ns` whose command line contains `needle`.
fn procs_in(ns: &str, needle: &str) -> Vec<u32> {
    let want = netns_inode(ns);
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(meta) = std::fs::metadata(format!("/proc/{pid}/ns/net")) else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        if meta.ino() == want && cmd.contains(needle) {
            v.push(pid);
        }
    }
    v
}

fn ns_names(lab: &Lab) -> (String, String) {
    let ctl = std::fs::read_to_string(lab.dir.join("ctl_ns")).unwrap();
    let ctl = ctl.trim().to_string();
    let prefix = ctl.trim_end_matches("-c").to_string();
    (ctl, prefix)
}

fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(pid: u32, sig: &str) {
    assert!(
        Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
}

/// The only run journal's id.
fn run_ids(lab: &Lab) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(lab.dir.join("state/runs"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_suffix(".jsonl")
                .map(str::to_string)
        })
        .collect();
    ids.sort();
    ids
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    Kill,
    Interrupt,
    InterruptTwice,
}

#[test]
fn a_controller_killed_or_interrupted_anywhere_leaves_nothing_and_rolls_back() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(2);
    let hosts = ["h1", "h2"];
    let (ctl, prefix) = ns_names(&lab);
    let pb = lab.dir.join("gated.yaml");
    std::fs::write(&pb, GATED).unwrap();
    let before: Vec<String> = hosts.iter().map(|h| lab.snapshot(h)).collect();
    let (inv, cfg) = (lab.inventory(), lab.ssh_config());
    for gate in ["boundary", "partial", "verify"] {
        for fault in [Fault::Kill, Fault::Interrupt, Fault::InterruptTwice] {
            let case = format!("{fault:?} at {gate}");
            let runs_before = run_ids(&lab).len();
            // Only this case's gate holds the run.
            for h in hosts {
                lab.sh(h, &format!("touch /run/kfix-go-boundary /run/kfix-go-partial /run/kfix-go-verify && rm /run/kfix-go-{gate}"));
            }
            let child = lab.spawn_kfix(&[
                "run",
                s(&pb),
                "-i",
                s(&inv),
                "--ssh-config",
                s(&cfg),
                "--command-timeout",
                // A dead controller's commands end on the host after 4 + 2 s; an
                // interrupted run keeps working, so its gate may wait longer.
                if matches!(fault, Fault::Interrupt) {
                    "60"
                } else {
                    "4"
                },
                "--yes",
                "--output",
                "json",
            ]);
            let pid = child.id();
            wait_for(
                &format!("{case}: both hosts at the gate"),
                Duration::from_secs(60),
                || {
                    hosts.iter().all(|h| {
                        lab.exec(h, &format!("test -e /run/kfix-at-{gate}"))
                            .status
                            .success()
                    })
                },
            );
            let ids = run_ids(&lab);
            assert_eq!(ids.len(), runs_before + 1, "{case}");
            let run_id = ids.last().unwrap().clone();
            let control_dir = common::control_dir_of(&run_id)
                .unwrap_or_else(|| panic!("{case}: the run's control directory"));
            match fault {
                Fault::Kill => signal(pid, "-KILL"),
                Fault::Interrupt => {
                    signal(pid, "-INT");
                    // Running hosts finish: let the gates go.
                    std::thread::sleep(Duration::from_millis(300));
                    for h in hosts {
                        lab.sh(h, &format!("touch /run/kfix-go-{gate}"));
                    }
                }
                Fault::InterruptTwice => {
                    signal(pid, "-INT");
                    std::thread::sleep(Duration::from_millis(300));
                    signal(pid, "-INT");
                }
            }
            let out = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr).to_string();
            match fault {
                Fault::Kill => assert_eq!(out.status.code(), None, "{case}"),
                Fault::InterruptTwice => {
                    assert_eq!(out.status.code(), Some(130), "{case}: {stderr}")
                }
                Fault::Interrupt => {
                    // The hosts finished (the run was already applying them) and the
                    // summary was printed.
                    let doc: Value = serde_json::from_slice(&out.stdout)
                        .unwrap_or_else(|e| panic!("{case}: {e}: {stderr}"));
                    for h in doc["hosts"].as_array().unwrap() {
                        assert_eq!(h["status"], "changed", "{case}: {doc:#}");
                    }
                    assert!(!control_dir.exists(), "{case}: control dir removed at exit");
                }
            }
            // Nothing of the run outlives it for long: remote commands are bounded on
            // the host by their timeout (4 s) + 2 s grace, then the masters exit within
            // their 30 s idle limit.
            wait_for(
                &format!("{case}: remote commands of the dead run to end"),
                Duration::from_secs(60),
                || {
                    hosts
                        .iter()
                        .all(|h| procs_in(&format!("{prefix}-{h}"), "kfix-go").is_empty())
                },
            );
            wait_for(
                &format!("{case}: ssh processes in the controller netns to exit"),
                Duration::from_secs(60),
                || procs_in(&ctl, "ssh").is_empty(),
            );
            // The next kfix (the rollback) removes the dead run's control directory, takes
            // the lock (released when the run's connection went) and restores every host.
            let rb = lab.kfix(&["rollback", &run_id, "--yes", "--output", "json"]);
            let doc: Value = serde_json::from_slice(&rb.stdout)
                .unwrap_or_else(|e| panic!("{case}: {e}: {}", String::from_utf8_lossy(&rb.stderr)));
            for h in doc["hosts"].as_array().unwrap() {
                assert_eq!(h["status"], "rolled_back", "{case}: {doc:#}");
            }
            assert!(!control_dir.exists(), "{case}: stale control dir removed");
            for (h, snap) in hosts.iter().zip(&before) {
                lab.sh(h, "rm -f /run/kfix-at-* /run/kfix-go-*");
                assert_eq!(&lab.snapshot(h), snap, "{case}: {h} restored");
            }
        }
    }
}

const AFTER_ONE: &str = r#"id: sshd-dies
title: Lose sshd after one step
steps:
  - id: mark
    file: {path: /etc/kfix-mark, content: "x\n"}
  - id: gate
    command:
      run: [sh, -c, 'if [ "$(hostname)" = h1 ]; then touch /run/kfix-at-gate; while [ ! -e /run/kfix-go ]; do sleep 0.05; done; fi']
      creates: /etc/kfix-never
      undo: ["true"]
  - id: after
    file: {path: /etc/kfix-after, content: "y\n"}
"#;

#[test]
fn a_host_whose_sshd_dies_mid_run_is_unreachable_and_converges_later() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(3);
    let (_, prefix) = ns_names(&lab);
    let h1_ns = format!("{prefix}-h1");
    let before = lab.snapshot("h1");
    let pb = lab.dir.join("sshd-dies.yaml");
    std::fs::write(&pb, AFTER_ONE).unwrap();
    let (inv, cfg) = (lab.inventory(), lab.ssh_config());
    let started = Instant::now();
    let child = lab.spawn_kfix(&[
        "run",
        s(&pb),
        "-i",
        s(&inv),
        "--ssh-config",
        s(&cfg),
        "--max-fail",
        "1",
        "--yes",
        "--output",
        "json",
    ]);
    wait_for("h1 at the gate", Duration::from_secs(60), || {
        lab.exec("h1", "test -e /run/kfix-at-gate").status.success()
    });
    // Kill h1's sshd: the listener and every session (all started by the lab's sshd).
    for p in procs_in(&h1_ns, "sshd") {
        let _ = Command::new("kill")
            .args(["-KILL", &p.to_string()])
            .status();
    }
    for p in procs_in(&h1_ns, "kfix-go") {
        let _ = Command::new("kill").arg(p.to_string()).status();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "within the timeouts"
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let host = |n: &str| common::host(&doc, n);
    assert_eq!(host("h1")["status"], "unreachable", "{doc:#}");
    let reason = host("h1")["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("last completed step: `mark`"), "{reason}");
    for h in ["h2", "h3"] {
        assert_eq!(host(h)["status"], "changed", "the rest goes on: {doc:#}");
    }
    assert_eq!(lab.sh("h1", "cat /etc/kfix-mark"), "x\n", "half-changed");
    // sshd comes back; the rollback converges h1.
    lab.start_sshd("h1");
    let id = doc["run_id"].as_str().unwrap();
    let rb: Value = serde_json::from_slice(
        &lab.kfix(&["rollback", id, "--limit", "h1", "--yes", "--output", "json"])
            .stdout,
    )
    .unwrap();
    assert_eq!(rb["hosts"][0]["status"], "rolled_back", "{rb:#}");
    lab.sh("h1", "rm -f /run/kfix-at-gate");
    assert_eq!(lab.snapshot("h1"), before);
}
