//! Step delegation (`run_on`) on real lab hosts: a step planned and applied on the
//! first reachable control-plane host while fixing others, its templates seeing the
//! fixed host's facts; the run's own rollback and `kfix rollback` undo it there.

mod common;

use common::{Lab, require_root};
use serde_json::Value;

const DELEGATED: &str = r#"id: delegated
title: One step on the control plane for each fixed node
steps:
  - id: record
    run_on: kube_control_plane
    file:
      path: "/etc/kfix-nodes/{{ facts.hostname }}"
      content: "node={{ inventory_hostname }} via={{ delegate.name }} cp={{ delegate.hostname }}\n"
  - id: local
    file: {path: /etc/kfix-local, content: "fixed\n"}
verify:
  - {file: /etc/kfix-local, matches: '(?m)^fixed$'}
"#;

fn inventory(lab: &Lab) -> String {
    let base = std::fs::read_to_string(lab.inventory()).unwrap();
    let path = lab.dir.join("delegation.ini");
    std::fs::write(&path, format!("{base}\n[kube_control_plane]\nh1\nh3\n")).unwrap();
    path.to_str().unwrap().to_string()
}

fn kfix(lab: &Lab, args: &[&str]) -> Value {
    let out = lab.kfix(args);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn run(lab: &Lab, inv: &str, pb: &str, limit: &str, extra: &[&str]) -> Value {
    let cfg = lab.ssh_config();
    let mut args = vec![
        "run",
        pb,
        "-i",
        inv,
        "--ssh-config",
        cfg.to_str().unwrap(),
        "--limit",
        limit,
        "--output",
        "json",
    ];
    args.extend_from_slice(extra);
    kfix(lab, &args)
}

fn host<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == name)
        .unwrap_or_else(|| panic!("no host {name} in {doc:#}"))
}

#[test]
fn a_delegated_step_runs_and_is_undone_on_the_control_plane() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(3);
    let inv = inventory(&lab);
    lab.sh("h1", "mkdir -p /etc/kfix-nodes");
    let name = |h: &str| lab.sh(h, "uname -n").trim().to_string();
    let (n1, n2, n3) = (name("h1"), name("h2"), name("h3"));
    let pb = lab.dir.join("delegated.yaml");
    std::fs::write(&pb, DELEGATED).unwrap();
    let pb = pb.to_str().unwrap();
    let before: Vec<String> = ["h1", "h2", "h3"].iter().map(|h| lab.snapshot(h)).collect();

    // Dry-run: each fixed host's `record` step runs on h1, with its own hostname.
    let dry = run(&lab, &inv, pb, "h2:h3", &["--dry-run"]);
    for (h, n) in [("h2", &n2), ("h3", &n3)] {
        let st = &host(&dry, h)["steps"][0];
        assert_eq!(st["run_on"], "h1", "{dry:#}");
        let diff = st["diff"].as_str().unwrap();
        assert!(
            diff.contains(&format!("/etc/kfix-nodes/{n}"))
                && diff.contains(&format!("node={h} via=h1 cp={n1}")),
            "{diff}"
        );
        assert!(host(&dry, h)["steps"][1].get("run_on").is_none(), "{dry:#}");
    }
    let human = lab.kfix(&[
        "run",
        pb,
        "-i",
        &inv,
        "--ssh-config",
        lab.ssh_config().to_str().unwrap(),
        "--limit",
        "h2",
        "--dry-run",
    ]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("record [file] (runs on h1)"), "{text}");
    for (i, h) in ["h1", "h2", "h3"].iter().enumerate() {
        assert_eq!(lab.snapshot(h), before[i], "dry-run changed {h}");
    }

    // Apply: the records land on h1 (not on the fixed hosts), the local file on each.
    let done = run(&lab, &inv, pb, "h2:h3", &["--yes"]);
    assert_eq!(done["summary"]["changed"], 2, "{done:#}");
    for (h, n) in [("h2", &n2), ("h3", &n3)] {
        assert_eq!(
            lab.sh("h1", &format!("cat /etc/kfix-nodes/{n}")),
            format!("node={h} via=h1 cp={n1}\n")
        );
        assert_eq!(lab.sh(h, "cat /etc/kfix-local"), "fixed\n");
        assert_eq!(lab.sh(h, "ls -A /etc/kfix-nodes 2>/dev/null || true"), "");
    }
    assert_eq!(lab.sh("h1", "ls /etc/kfix-local 2>/dev/null || true"), "");
    let id = done["run_id"].as_str().unwrap().to_string();

    // The journal records where each operation ran.
    let hist = lab.kfix(&["history", &id]);
    assert!(hist.status.success());

    // Second run: nothing to do.
    let again = run(&lab, &inv, pb, "h2:h3", &["--yes"]);
    for h in ["h2", "h3"] {
        assert_eq!(host(&again, h)["status"], "healthy", "{again:#}");
    }

    // kfix rollback undoes the delegated operations on h1 and the rest on h2/h3.
    let rb = kfix(&lab, &["rollback", &id, "--yes", "--output", "json"]);
    for h in ["h2", "h3"] {
        assert_eq!(host(&rb, h)["status"], "rolled_back", "{rb:#}");
        let ops = host(&rb, h)["operations"].to_string();
        assert!(ops.contains("on `h1`"), "{ops}");
    }
    for (i, h) in ["h1", "h2", "h3"].iter().enumerate() {
        assert_eq!(lab.snapshot(h), before[i], "rollback left {h} changed");
    }

    // A failing verification rolls the delegated step back on h1 in the run itself.
    let failing = lab.dir.join("delegated-fail.yaml");
    std::fs::write(&failing, DELEGATED.replace("(?m)^fixed$", "(?m)^never$")).unwrap();
    let failed = run(&lab, &inv, failing.to_str().unwrap(), "h2", &["--yes"]);
    assert_eq!(host(&failed, "h2")["status"], "failed", "{failed:#}");
    assert_eq!(host(&failed, "h2")["steps"][0]["status"], "rolled_back");
    for (i, h) in ["h1", "h2", "h3"].iter().enumerate() {
        assert_eq!(
            lab.snapshot(h),
            before[i],
            "in-run rollback left {h} changed"
        );
    }

    // The first reachable host of the pattern: with h1 down, h3 takes the step.
    lab.stop_sshd("h1");
    let dry = run(&lab, &inv, pb, "h2", &["--dry-run"]);
    assert_eq!(host(&dry, "h2")["steps"][0]["run_on"], "h3", "{dry:#}");
    // No reachable host: the fixed host fails with every reason, nothing applied.
    lab.stop_sshd("h3");
    let none = run(&lab, &inv, pb, "h2", &["--dry-run"]);
    let reason = host(&none, "h2")["reason"].as_str().unwrap().to_string();
    assert!(
        reason.contains("run_on `kube_control_plane`: no reachable host")
            && reason.contains("h1:")
            && reason.contains("h3:"),
        "{reason}"
    );
    lab.start_sshd("h1");
    lab.start_sshd("h3");
}
