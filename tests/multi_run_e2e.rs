//! `kfix run A B`: several playbooks over one connection per host, each its own run id
//! and journal; and a run whose report reader goes away still finishes every host.

mod common;

use common::{Lab, require_root};

/// Both faults of the fleet benchmark: ip_forward off now and set nowhere (F3), no
/// MASQUERADE rule for the node's own traffic to the pod network, on a flannel node
/// (F2; tests/lab/flannel.sh).
fn make_faulty(lab: &Lab, h: &str) {
    lab.sh(
        h,
        "sysctl -qw net.ipv4.ip_forward=0 && sed -i '/ip_forward/d' /etc/sysctl.conf",
    );
}

fn fixed(lab: &Lab, h: &str) -> bool {
    lab.sh(h, "cat /proc/sys/net/ipv4/ip_forward").trim() == "1"
        && lab
            .exec(
                h,
                "iptables -t nat -C POSTROUTING -s 10.250.0.0/16 -d 10.244.0.0/16 -j MASQUERADE",
            )
            .status
            .success()
}

/// Connections each host's sshd accepted so far (sshd -D -e logs each to the lab).
fn accepted(lab: &Lab, h: &str) -> usize {
    let log =
        std::fs::read_to_string(lab.dir.join("hosts").join(h).join("sshd.log")).unwrap_or_default();
    log.matches("Accepted publickey").count()
}

/// Two lab hosts with both faults (None when not root: the test is skipped).
fn faulty_lab() -> Option<Lab> {
    if !require_root() {
        return None;
    }
    let lab = Lab::up(2);
    lab.flannel(&[], &["h1", "h2"]);
    for h in ["h1", "h2"] {
        make_faulty(&lab, h);
    }
    Some(lab)
}

/// The benchmark's job: both playbooks in one invocation, no confirmation.
const RUN_BOTH: &[&str] = &["run", "persist-ip-forward", "service-masquerade", "--yes"];

#[test]
fn two_playbooks_share_one_connection_per_host_and_roll_back_separately() {
    let Some(lab) = faulty_lab() else {
        return;
    };
    let before: Vec<String> = ["h1", "h2"].iter().map(|h| lab.snapshot(h)).collect();
    let conns: Vec<usize> = ["h1", "h2"].iter().map(|h| accepted(&lab, h)).collect();
    let out = lab.kfix_fleet(&[RUN_BOTH, &["--output", "json"]].concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let runs = doc.as_array().expect("one document per playbook");
    let ids: Vec<&str> = runs
        .iter()
        .map(|r| r["playbook"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["persist-ip-forward", "service-masquerade"]);
    let run_ids: Vec<String> = runs
        .iter()
        .map(|r| r["run_id"].as_str().unwrap().to_string())
        .collect();
    assert_ne!(run_ids[0], run_ids[1], "each playbook is its own run");
    for r in runs {
        for h in r["hosts"].as_array().unwrap() {
            assert_eq!(h["status"], "changed", "{h}");
        }
        assert!(r["journal"].is_string(), "every real run is journaled");
    }
    for (h, n) in ["h1", "h2"].iter().zip(&conns) {
        assert!(fixed(&lab, h), "{h} fixed");
        assert_eq!(
            accepted(&lab, h) - n,
            1,
            "{h}: one SSH connection for both playbooks"
        );
    }

    // Each run rolls back on its own, in reverse order; the hosts end as they began.
    for id in run_ids.iter().rev() {
        let out = lab.kfix(&["rollback", id, "--yes"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "rollback {id}\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    for (h, b) in ["h1", "h2"].iter().zip(&before) {
        assert_eq!(&lab.snapshot(h), b, "{h} restored");
    }
}

#[test]
fn a_run_whose_report_reader_goes_away_still_finishes_every_host() {
    let Some(lab) = faulty_lab() else {
        return;
    };
    // Human output: written while the run goes on.
    let mut child = lab.spawn_kfix_fleet(RUN_BOTH);
    drop(child.stdout.take()); // nobody reads the report
    let out = child.wait_with_output().expect("kfix ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "no SIGPIPE death, no panic\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    for h in ["h1", "h2"] {
        assert!(fixed(&lab, h), "{h} fixed although the report went nowhere");
    }
}
