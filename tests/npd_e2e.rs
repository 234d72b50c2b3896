//! node-problem-detector's custom plugin protocol (issue 24, item 5): `kfix check --npd
//! ID` exits 0 (healthy or not applicable), 1 (problem) or 2 (could not tell) with one
//! short line on stdout, for every shipped playbook on a lab host; `kfix docs --npd`
//! writes a custom-plugin-monitor configuration whose every rule is such a check, and
//! the exact command a rule names runs on a node (here, this machine) by the protocol.

mod common;

use std::process::Command;

use common::{Lab, require_root};
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn shipped() -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(format!("{ROOT}/playbooks"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_suffix(".yaml")
                .map(str::to_string)
        })
        .collect();
    ids.sort();
    ids
}

/// Held to the protocol: a known exit code, exactly one line on stdout, no longer than
/// node-problem-detector's default max_output_length (80), naming the playbook.
#[track_caller]
fn by_the_protocol(id: &str, out: &std::process::Output) -> (i32, String) {
    let code = out.status.code().expect("exit code");
    assert!([0, 1, 2].contains(&code), "{id}: exit {code}");
    let stdout = String::from_utf8(out.stdout.clone()).expect("utf-8");
    let line = stdout.strip_suffix('\n').unwrap_or(&stdout);
    assert!(!line.is_empty() && !line.contains('\n'), "{id}: {stdout:?}");
    assert!(
        line.chars().count() <= 80,
        "{id}: {} chars: {line}",
        line.chars().count()
    );
    assert!(line.starts_with(&format!("{id}: ")), "{id}: {line}");
    (code, line.to_string())
}

fn npd(lab: &Lab, id: &str, limit: &str) -> (i32, String) {
    let inv = lab.inventory();
    let cfg = lab.ssh_config();
    let out = lab.kfix(&[
        "check",
        "--npd",
        id,
        "-i",
        inv.to_str().unwrap(),
        "--ssh-config",
        cfg.to_str().unwrap(),
        "--limit",
        limit,
    ]);
    by_the_protocol(id, &out)
}

#[test]
fn every_playbook_answers_node_problem_detector_by_its_protocol() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(3);
    // h1: forwarding switched off at runtime (report 001's network restart), h2 its
    // healthy twin (on, and persisted); h3 stops answering.
    lab.sh("h1", "sysctl -qw net.ipv4.ip_forward=0");
    lab.sh("h2", "sysctl -qw net.ipv4.ip_forward=1");
    lab.write_file("h2", "/etc/sysctl.conf", "net.ipv4.ip_forward = 1\n");
    for id in shipped() {
        npd(&lab, &id, "h2");
    }
    let (code, line) = npd(&lab, "persist-ip-forward", "h1");
    assert_eq!(code, 1, "{line}");
    assert!(line.contains("forwarding is off"), "{line}");
    assert_eq!(npd(&lab, "persist-ip-forward", "h2").0, 0);
    let (code, line) = npd(&lab, "iscsi-initiator", "h2");
    assert_eq!(code, 0, "{line}");
    assert!(line.contains("not applicable"), "{line}");
    lab.stop_sshd("h3");
    let (code, line) = npd(&lab, "persist-ip-forward", "h3");
    assert_eq!(code, 2, "{line}");
    assert!(line.contains("cannot tell (unreachable)"), "{line}");
    lab.start_sshd("h3");
    // One host, one playbook: more is "cannot tell", never a merged answer.
    let (code, line) = npd(&lab, "persist-ip-forward", "h1:h2");
    assert_eq!(code, 2, "{line}");
    let out = lab.kfix(&["check", "--npd", "persist-ip-forward", "rp-filter-loose"]);
    assert_eq!(out.status.code(), Some(2));
    // What stops kfix before it checks is a line too: Unknown, never an empty message.
    for args in [
        vec!["check", "--npd", "no-such-playbook"],
        vec!["check", "--npd", "persist-ip-forward", "-e", "nosuch=1"],
    ] {
        let out = lab.kfix(&args);
        let id = args[2];
        let (code, line) = by_the_protocol(id, &out);
        assert_eq!(code, 2, "{line}");
        assert!(
            line.contains("cannot tell: not checked (exit 3, see stderr)"),
            "{line}"
        );
    }
}

#[test]
fn the_monitor_configuration_runs_one_check_per_playbook() {
    let out = common::kfix_in(
        std::path::Path::new(ROOT),
        &[
            "docs",
            "--npd",
            "--kfix-path",
            env!("CARGO_BIN_EXE_kfix"),
            "--interval",
            "2m",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg: Value = serde_json::from_slice(&out.stdout).unwrap();
    // What node-problem-detector's config validation requires (custompluginmonitor
    // types: the plugin is "custom", a rule's timeout is within the global one, a
    // permanent rule's condition has a default).
    assert_eq!(cfg["plugin"], "custom");
    assert_eq!(cfg["pluginConfig"]["invoke_interval"], "2m");
    assert_eq!(cfg["pluginConfig"]["max_output_length"], 80);
    let conditions: Vec<&str> = cfg["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    let rules = cfg["rules"].as_array().unwrap();
    let ids = shipped();
    assert_eq!(rules.len(), ids.len());
    for (rule, id) in rules.iter().zip(&ids) {
        assert_eq!(rule["type"], "permanent");
        assert!(
            conditions.contains(&rule["condition"].as_str().unwrap()),
            "{rule}"
        );
        assert_eq!(rule["timeout"], cfg["pluginConfig"]["timeout"]);
        assert_eq!(rule["path"], env!("CARGO_BIN_EXE_kfix"));
        assert_eq!(rule["args"], serde_json::json!(["check", "--npd", id]));
    }
    // node-problem-detector runs [path, args...] on the node: here, this machine, which
    // kfix only reads.
    let rule = &rules[ids.iter().position(|i| i == "persist-ip-forward").unwrap()];
    let args: Vec<&str> = rule["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let out = Command::new(rule["path"].as_str().unwrap())
        .args(&args)
        .env_remove("KFIX_PLAYBOOK_DIR")
        .output()
        .unwrap();
    let (code, _) = by_the_protocol("persist-ip-forward", &out);
    assert!(code == 0 || code == 1, "this machine is readable: {out:?}");
    // A relative path is refused: node-problem-detector needs the plugin's path.
    let out = common::kfix_in(
        std::path::Path::new(ROOT),
        &["docs", "--npd", "--kfix-path", "kfix"],
    );
    assert_eq!(out.status.code(), Some(2));
}
