//! The per-host lock: two runs never change one host at once; the second is told who
//! holds it; a lock left by a run that died is detected and taken over.

mod common;

use common::{Lab, json, require_root};
use serde_json::Value;

const SLOW: &str = "id: slow\ntitle: Slow\nsteps:\n  - id: mark\n    file: {path: /etc/kfix-slow, content: \"{{ inventory_hostname }}\\n\"}\n  - id: wait\n    command: {run: [sleep, '3'], creates: /etc/kfix-never, undo: ['true']}\n";

/// `kfix run PLAYBOOKS… --yes --output json` on the lab: one document, or an array of
/// one per playbook.
fn run_json(lab: &Lab, pbs: &[&str]) -> Value {
    json(&lab.kfix_fleet(&[&["run"], pbs, &["--yes", "--output", "json"]].concat()))
}

#[test]
fn concurrent_runs_on_one_host_serialise() {
    if !require_root() {
        return;
    }
    let lab = std::sync::Arc::new(Lab::up(1));
    let pb = lab.dir.join("slow.yaml");
    std::fs::write(&pb, SLOW).unwrap();
    let pb = pb.to_str().unwrap().to_string();
    let (l2, p2) = (lab.clone(), pb.clone());
    let first = std::thread::spawn(move || run_json(&l2, &[&p2]));
    // The second run starts once the first has written its mark (it holds the lock
    // then, and keeps it through its 3 s step).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while lab.exec("h1", "test -s /etc/kfix-slow").status.code() != Some(0) {
        assert!(
            std::time::Instant::now() < deadline,
            "the first run never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let second = run_json(&lab, &[&pb]);
    let first = first.join().unwrap();
    assert_eq!(first["hosts"][0]["status"], "changed", "{first:#}");
    let h = &second["hosts"][0];
    assert_eq!(h["status"], "failed", "{second:#}");
    let reason = h["reason"].as_str().unwrap();
    let holder = first["run_id"].as_str().unwrap();
    assert!(
        reason.contains("locked by another kfix run") && reason.contains(holder),
        "{reason}"
    );
    // Released when the first run ended: the owner record is cleared (empty or gone).
    assert_eq!(
        lab.exec("h1", "test -s /run/kfix/owner").status.code(),
        Some(1)
    );
}

#[test]
fn a_held_lock_blocks_and_a_stale_one_is_taken_over() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(1);
    lab.sh("h1", "sysctl -qw net.ipv4.ip_forward=0");
    // Another holder (as a crashed-but-alive run would be): flock held by a process in the host.
    lab.sh(
        "h1",
        "mkdir -p /run/kfix && echo 'run OTHER by alice (pid 1)' > /run/kfix/owner && \
         { flock -o /run/kfix/lock sleep 30 </dev/null >/dev/null 2>&1 & echo $! > /run/kfix-test-holder.pid; } && \
         while flock -n /run/kfix/lock true; do sleep 0.05; done",
    );
    let before = lab.snapshot("h1");
    let doc = run_json(&lab, &["persist-ip-forward"]);
    let h = &doc["hosts"][0];
    assert_eq!(h["status"], "failed", "{doc:#}");
    assert!(
        h["reason"].as_str().unwrap().contains("run OTHER by alice"),
        "{doc:#}"
    );
    assert_eq!(lab.snapshot("h1"), before, "a locked host was changed");
    // The holder dies without cleaning up: the lock is free, its owner record stale.
    lab.sh(
        "h1",
        "kill $(cat /run/kfix-test-holder.pid) && rm /run/kfix-test-holder.pid && \
         until flock -n /run/kfix/lock true; do sleep 0.05; done && cat /run/kfix/owner",
    );
    let doc = run_json(&lab, &["persist-ip-forward"]);
    let h = &doc["hosts"][0];
    assert_eq!(h["status"], "changed", "{doc:#}");
    assert!(
        h["reason"]
            .as_str()
            .unwrap()
            .contains("took over a stale lock left by run OTHER by alice"),
        "{doc:#}"
    );
}

/// Records, while it applies, who holds the host's lock.
const WITNESS: &str = "id: witness\ntitle: Witness\nsteps:\n  - id: seen\n    command: {run: [cp, /run/kfix/owner, /etc/kfix-lock-seen], creates: /etc/kfix-lock-seen, undo: [rm, -f, /etc/kfix-lock-seen]}\n";

/// The pid that took the host's lock (from /proc/locks, by the lock file's device and
/// inode), or "" when it is free. /proc/locks prints the device as MAJOR:MINOR in hex,
/// each at least two digits: an overlay's anonymous device has minors past 255 once
/// enough labs have come and gone, so they are read apart (`%Hd`, `%Ld`), never
/// decoded from `%d`. Read from this machine's /proc, not the host's: the lock was taken
/// by `flock(1)`, which has exited, and a PID namespace other than the machine's lists
/// no lock whose taker is gone (each lab host has one of its own).
fn holder(lab: &Lab, host: &str) -> String {
    let key = lab.exec(
        host,
        "printf '%02x:%02x:%s' $(stat -c '%Hd %Ld %i' /run/kfix/lock)",
    );
    if !key.status.success() {
        return String::new();
    }
    let key = String::from_utf8_lossy(&key.stdout).into_owned();
    let locks = std::fs::read_to_string("/proc/locks").expect("/proc/locks");
    locks
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(1) == Some(&"FLOCK") && f.get(5) == Some(&key.as_str()))
                .then(|| format!("{}\n", f[4]))
        })
        .collect()
}

/// `first` and then [`WITNESS`], written as playbooks in the lab's directory: the
/// arguments of `kfix run`.
fn then_witness(lab: &Lab, first: &str) -> [String; 2] {
    [("first.yaml", first), ("witness.yaml", WITNESS)].map(|(name, text)| {
        let path = lab.dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    })
}

/// `kfix run FIRST WITNESS` went through under one lock: both playbooks changed every
/// host, the witness on h1 applied under the lock the first playbook's run took (no gap
/// in which another run could slip in), and the lock went with the command (no holder,
/// owner record cleared).
fn assert_one_lock_throughout(lab: &Lab, doc: &Value) {
    let runs = doc.as_array().expect("one document per playbook");
    for r in runs {
        for h in r["hosts"].as_array().unwrap() {
            assert_eq!(h["status"], "changed", "{r:#}");
        }
    }
    let first = runs[0]["run_id"].as_str().unwrap();
    let seen = lab.sh("h1", "cat /etc/kfix-lock-seen");
    assert!(seen.contains(first), "held by {seen:?}, not by {first}");
    assert!(holder(lab, "h1").trim().is_empty(), "released at the end");
    assert_eq!(
        lab.exec("h1", "test -s /run/kfix/owner").status.code(),
        Some(1),
        "owner record cleared at the end"
    );
}

#[test]
fn run_a_b_holds_one_lock_from_the_first_playbook_to_the_end() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(1);
    let [slow, witness] = then_witness(&lab, SLOW);
    let doc = run_json(&lab, &[&slow, &witness]);
    assert_one_lock_throughout(&lab, &doc);
}

/// h1 is done with the first playbook at once; h2 takes 28 s over it.
const WAIT_ON_H2: &str = "id: wait-on-h2\ntitle: Wait on h2\nsteps:\n  - id: wait\n    command: {run: [sh, -c, 'if [ \"$(hostname)\" = h2 ]; then sleep 28; fi'], creates: /etc/kfix-never, undo: ['true']}\n";

#[test]
fn a_lock_kept_while_the_fleet_catches_up_outlives_the_channels_idle_bound() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(2);
    let [wait, witness] = then_witness(&lab, WAIT_ON_H2);
    let run = lab.spawn_kfix_fleet(&["run", &wait, &witness, "--yes", "--output", "json"]);
    // h1 waits for h2 with its lock kept for the second playbook: its command channel
    // holds it and stays idle far longer than the watchdog's idle bound (15 s), which
    // the controller's no-op requests keep from ending it.
    let locked_at = std::time::Instant::now();
    let early = loop {
        let pid = holder(&lab, "h1");
        if !pid.trim().is_empty() {
            break pid;
        }
        assert!(
            locked_at.elapsed() < std::time::Duration::from_secs(20),
            "h1 is locked while it waits"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    // Past the idle bound (15 s) by a margin: what the test is about, not a wait for
    // something to happen.
    std::thread::sleep(std::time::Duration::from_secs(20));
    assert_eq!(holder(&lab, "h1"), early, "the same shell holds it 25 s in");
    assert_one_lock_throughout(&lab, &json(&run.wait_with_output().unwrap()));
}
