//! A host that becomes unreachable mid-run (its link is cut after a step) is reported
//! `unreachable` with the last completed step, the rest of the fleet goes on, and once
//! the host is back `kfix rollback RUN_ID --limit HOST` converges it.

mod common;

use common::{Lab, require_root};
use serde_json::Value;

const CUT: &str = r#"id: cut
title: Lose the host after one step
steps:
  - id: mark
    file: {path: /etc/kfix-mark, content: "x\n"}
  - id: cut
    command:
      run: [sh, -c, 'if [ "$(hostname)" = h1 ]; then ip link set eth0 down; fi']
      creates: /etc/kfix-never
      undo: ["true"]
  - id: after
    file: {path: /etc/kfix-after, content: "y\n"}
"#;

#[test]
fn a_host_lost_mid_run_is_unreachable_and_rollback_converges_it_later() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(3);
    let before = lab.snapshot("h1");
    let pb = lab.dir.join("cut.yaml");
    std::fs::write(&pb, CUT).unwrap();
    let (inv, cfg) = (lab.inventory(), lab.ssh_config());
    let started = std::time::Instant::now();
    let out = lab.kfix(&[
        "run",
        pb.to_str().unwrap(),
        "-i",
        inv.to_str().unwrap(),
        "--ssh-config",
        cfg.to_str().unwrap(),
        "--command-timeout",
        "40",
        "--max-fail",
        "1",
        "--yes",
        "--output",
        "json",
    ]);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
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
    // The host comes back; rolling the run back on it converges it to where it was.
    lab.sh(
        "h1",
        "ip link set eth0 up && until ip -o link show eth0 | grep -q 'state UP'; do sleep 0.05; done",
    );
    let id = doc["run_id"].as_str().unwrap();
    // The lost run's command channel on h1, which holds its lock, never saw its
    // connection close; its watchdog ends it (and the lock) once it has been idle for
    // channel::IDLE (15 s), well within LOCK_EXPIRY (30 s).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let rb = loop {
        let rb: Value = serde_json::from_slice(
            &lab.kfix(&["rollback", id, "--limit", "h1", "--yes", "--output", "json"])
                .stdout,
        )
        .unwrap();
        let locked = rb["hosts"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("locked by another kfix run"));
        if !locked || std::time::Instant::now() > deadline {
            break rb;
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
    };
    assert_eq!(rb["hosts"][0]["status"], "rolled_back", "{rb:#}");
    assert_eq!(lab.snapshot("h1"), before);
}

/// Ends the host's SSH connection from the host's side (its sshd's processes for the
/// session, as a dropped link or an sshd restart would) the first time the host is
/// read, counting how often it did.
const DROP_ONCE: &str = r#"id: drop-once
title: Lose the connection the first time the host is read
detect:
  - command: [sh, -c, 'if [ ! -e /run/kfix-dropped ]; then echo dropped >> /run/kfix-dropped; pkill -KILL -f "^sshd: root"; sleep 10; fi']
steps:
  - id: mark
    file: {path: /etc/kfix-mark, content: "x\n"}
"#;

#[test]
fn a_host_whose_connection_ends_while_it_is_read_is_read_again_over_a_new_one() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(2);
    let pb = lab.dir.join("drop-once.yaml");
    std::fs::write(&pb, DROP_ONCE).unwrap();
    let pb = pb.to_str().unwrap();
    let dropped = |h: &str| lab.sh(h, "cat /run/kfix-dropped 2>/dev/null || true");
    // `kfix check`: every host's detection holds on the second connection, and the
    // first one really ended (once per host).
    let doc = lab.kfix_json(&["check", pb], None);
    for h in ["h1", "h2"] {
        assert_eq!(
            common::host(&doc["checks"][0], h)["status"],
            "problem",
            "{doc:#}"
        );
        assert_eq!(dropped(h), "dropped\n", "one connection lost on {h}");
    }
    // Planning (`kfix run --dry-run`) does the same.
    for h in ["h1", "h2"] {
        lab.sh(h, "rm /run/kfix-dropped");
    }
    let doc = lab.kfix_json(&["run", pb, "--dry-run"], None);
    for h in ["h1", "h2"] {
        assert_eq!(common::host(&doc, h)["status"], "would_change", "{doc:#}");
        assert_eq!(dropped(h), "dropped\n", "one connection lost on {h}");
    }
}
