//! Fleet rollouts on the lab: a mixed fleet of 50 real hosts, canary batches, the
//! failure budget, rollback of a whole run, a kubespray inventory with --limit patterns,
//! a controller killed with SIGKILL and one interrupted with SIGINT.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::playbook::failing_copy;
use common::{Lab, json, require_root};
use serde_json::Value;

fn s(p: &std::path::Path) -> String {
    p.to_str().unwrap().to_string()
}

fn kfix(lab: &Lab, args: &[&str]) -> Value {
    let (inv, cfg) = (s(&lab.inventory()), s(&lab.ssh_config()));
    let mut a = vec![
        args[0],
        args[1],
        "-i",
        &inv,
        "--ssh-config",
        &cfg,
        "--output",
        "json",
    ];
    a.extend_from_slice(&args[2..]);
    json(&lab.kfix(&a))
}

fn statuses(doc: &Value) -> BTreeMap<String, String> {
    doc["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["host"].as_str().unwrap().to_string(),
                h["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn count(doc: &Value, status: &str) -> u64 {
    doc["summary"][status].as_u64().unwrap_or(0)
}

fn range(a: usize, b: usize) -> Vec<String> {
    (a..=b).map(|i| format!("h{i}")).collect()
}

/// In every listed host at once (one `lab.sh exec` per host, in parallel threads).
fn on_all(lab: &Lab, hosts: &[String], script: &str) {
    std::thread::scope(|sc| {
        for h in hosts {
            sc.spawn(move || lab.sh(h, script));
        }
    });
}

fn snapshots(lab: &Lab, hosts: &[String]) -> BTreeMap<String, String> {
    std::thread::scope(|sc| {
        let hs: Vec<_> = hosts
            .iter()
            .map(|h| (h.clone(), sc.spawn(move || lab.snapshot(h))))
            .collect();
        hs.into_iter()
            .map(|(h, t)| (h, t.join().unwrap()))
            .collect()
    })
}

#[track_caller]
fn same_snapshots(got: &BTreeMap<String, String>, want: &BTreeMap<String, String>, what: &str) {
    for (h, w) in want {
        let g = &got[h];
        if g != w {
            panic!(
                "{what}: {h} differs\n{}",
                similar::TextDiff::from_lines(w, g).unified_diff()
            );
        }
    }
}

/// A flannel node as far as F1 reads it: its device, flannel's route for the network on
/// it, and the network and subnet flanneld wrote to subnet.env.
const FLANNEL: &str = "ip link add flannel.1 type bridge && ip link set flannel.1 up && ip route add 172.16.0.0/12 dev flannel.1 metric 100 && \
    mkdir -p /run/flannel && printf 'FLANNEL_NETWORK=172.16.0.0/12\\nFLANNEL_SUBNET=172.16.74.1/24\\n' >/run/flannel/subnet.env";
const STRAY: &str = "ip route add 172.16.0.0/12 dev eth0 proto static metric 0";

#[test]
fn a_mixed_fleet_of_50_hosts() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(50);
    let (faulty, healthy, no_flannel, down) =
        (range(1, 35), range(36, 44), range(45, 48), range(49, 50));
    on_all(&lab, &faulty, &format!("{FLANNEL} && {STRAY}"));
    on_all(&lab, &healthy, FLANNEL);
    for h in &down {
        lab.stop_sshd(h);
    }
    let all = range(1, 48);
    let before = snapshots(&lab, &all);

    // Every host gets the right status.
    let dry = kfix(&lab, &["run", "flannel-bogus-route", "--dry-run"]);
    let st = statuses(&dry);
    for h in &faulty {
        assert_eq!(st[h], "would_change", "{h}");
    }
    for h in &healthy {
        assert_eq!(st[h], "healthy", "{h}");
    }
    for h in &no_flannel {
        assert_eq!(st[h], "skipped", "{h}");
    }
    for h in &down {
        assert_eq!(st[h], "unreachable", "{h}");
    }
    assert_eq!(
        dry["summary"],
        serde_json::json!({"would_change": 35, "healthy": 9, "skipped": 4, "unreachable": 2})
    );

    // A canary that fails halts the rollout: the rest is not attempted, nothing changed.
    let failing = failing_copy(&lab, "flannel-bogus-route");
    let doc = kfix(&lab, &["run", &failing, "--serial", "1,100%", "--yes"]);
    assert_eq!(count(&doc, "failed"), 1, "{doc:#}");
    assert_eq!(count(&doc, "not_attempted"), 34, "{doc:#}");
    assert_eq!(statuses(&doc)["h1"], "failed");
    assert_eq!(
        doc["rollout"]["batches"].as_array().unwrap().len(),
        1,
        "{doc:#}"
    );
    assert!(
        doc["rollout"]["halted"]
            .as_str()
            .unwrap()
            .contains("1 of 35 hosts failed"),
        "{doc:#}"
    );
    same_snapshots(&snapshots(&lab, &all), &before, "after a halted canary");

    // The failure budget is counted across batches and halts at the right count.
    let doc = kfix(
        &lab,
        &[
            "run",
            &failing,
            "--serial",
            "1,5",
            "--max-fail",
            "3",
            "--forks",
            "1",
            "--yes",
        ],
    );
    assert_eq!(count(&doc, "failed"), 4, "{doc:#}");
    assert_eq!(count(&doc, "not_attempted"), 31, "{doc:#}");
    let st = statuses(&doc);
    for h in range(1, 4) {
        assert_eq!(st[&h], "failed", "{h}");
    }
    for h in range(5, 35) {
        assert_eq!(st[&h], "not_attempted", "{h}");
    }
    assert!(
        doc["rollout"]["halted"]
            .as_str()
            .unwrap()
            .contains("4 of 35 hosts failed, over the failure budget (--max-fail 3)"),
        "{doc:#}"
    );
    same_snapshots(&snapshots(&lab, &all), &before, "after a halted budget");

    // The real thing, in canary-first batches; then the whole run rolled back.
    let doc = kfix(
        &lab,
        &[
            "run",
            "flannel-bogus-route",
            "--serial",
            "1,10%,100%",
            "--yes",
        ],
    );
    assert_eq!(count(&doc, "changed"), 35, "{doc:#}");
    let sizes: Vec<usize> = doc["rollout"]["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["hosts"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, vec![1, 4, 30]);
    assert_eq!(common::host(&doc, "h1")["batch"], 1);
    for h in &faulty {
        assert_eq!(
            lab.sh(h, "ip route show exact 172.16.0.0/12").trim(),
            "172.16.0.0/12 dev flannel.1 scope link metric 100"
        );
    }
    let id = doc["run_id"].as_str().unwrap().to_string();
    let rb = json(&lab.kfix(&["rollback", &id, "--yes", "--output", "json"]));
    assert_eq!(
        rb["summary"],
        serde_json::json!({"rolled_back": 35}),
        "{rb:#}"
    );
    same_snapshots(&snapshots(&lab, &all), &before, "after kfix rollback");
}

#[test]
fn a_kubespray_inventory_and_limit_patterns() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(7);
    let key = s(&lab.identity());
    let mut inv = String::from("[all]\n");
    for (i, name) in ["cp1", "cp2", "cp3", "node1", "node2", "node3", "node4"]
        .iter()
        .enumerate()
    {
        inv.push_str(&format!(
            "{name} ansible_host={} ip={} ansible_user=root ansible_ssh_private_key_file={key}\n",
            lab.ip(&format!("h{}", i + 1)),
            lab.ip(&format!("h{}", i + 1))
        ));
    }
    inv.push_str("\n[kube_control_plane]\ncp[1:3]\n\n[etcd]\ncp1\ncp2\ncp3\n\n[kube_node]\nnode[1:4]\n\n[calico_rr]\n\n[k8s_cluster:children]\nkube_control_plane\nkube_node\ncalico_rr\n");
    let path = lab.dir.join("kubespray.ini");
    std::fs::write(&path, inv).unwrap();
    let list = lab.dir.join("canary.txt");
    std::fs::write(&list, "node2\nnode4\n").unwrap();
    let cases: &[(&str, &[&str])] = &[
        (
            "k8s_cluster",
            &["cp1", "cp2", "cp3", "node1", "node2", "node3", "node4"],
        ),
        ("kube_node", &["node1", "node2", "node3", "node4"]),
        ("k8s_cluster:!etcd", &["node1", "node2", "node3", "node4"]),
        ("kube_control_plane:&etcd:!cp2", &["cp1", "cp3"]),
        ("kube_node[0:1],cp1", &["cp1", "node1", "node2"]),
        ("node*", &["node1", "node2", "node3", "node4"]),
    ];
    let at_file = format!("@{}", s(&list));
    let mut all_cases: Vec<(&str, &[&str])> = cases.to_vec();
    all_cases.push((&at_file, &["node2", "node4"]));
    for (pattern, want) in all_cases {
        let doc = lab.kfix_json(
            &["check", "persist-ip-forward", "--limit", pattern],
            Some(std::path::Path::new(&s(&path))),
        );
        let mut got: Vec<String> = doc["checks"][0]["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["host"].as_str().unwrap().to_string())
            .collect();
        got.sort();
        assert_eq!(got, want.to_vec(), "--limit {pattern}");
        // Every selected host was reached over SSH with the kubespray connection vars.
        assert!(
            doc["checks"][0]["hosts"]
                .as_array()
                .unwrap()
                .iter()
                .all(|h| h["status"] != "unreachable"),
            "{doc:#}"
        );
    }
    let out = lab.kfix(&[
        "inventory",
        "-i",
        &s(&path),
        "--limit",
        "etcd",
        "--output",
        "json",
    ]);
    let doc = json(&out);
    assert_eq!(doc.as_array().unwrap().len(), 3);
    assert!(
        doc[0]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g == "k8s_cluster")
    );
    assert_eq!(
        doc[0]["vars"]["ansible_ssh_private_key_file"],
        key.as_str(),
        "a key *file* path is not a secret"
    );
}

const SLOW: &str = "id: slow\ntitle: Slow\nsteps:\n  - id: mark\n    file: {path: /etc/kfix-slow, content: \"{{ inventory_hostname }}\\n\"}\n  - id: wait\n    command: {run: [sleep, '1'], creates: /etc/kfix-slow-done, undo: ['true']}\n  - id: done\n    file: {path: /etc/kfix-slow-done, content: \"done\\n\"}\n";

/// Poll (bounded) until some host has finished the slow playbook.
fn wait_until_done_on_some_host(lab: &Lab, hosts: &[String]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if hosts
            .iter()
            .any(|h| lab.exec(h, "test -e /etc/kfix-slow-done").status.success())
        {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("no host finished within 60s");
}

fn journal_ids(lab: &Lab) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(lab.dir.join("state/runs"))
        .map(|d| {
            d.flatten()
                .map(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .trim_end_matches(".jsonl")
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn a_run_killed_with_sigkill_is_fully_undone_by_rollback() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(8);
    let hosts = range(1, 8);
    let before = snapshots(&lab, &hosts);
    let pb = lab.dir.join("slow.yaml");
    std::fs::write(&pb, SLOW).unwrap();
    let (inv, cfg) = (s(&lab.inventory()), s(&lab.ssh_config()));
    let child = lab.spawn_kfix(&[
        "run",
        &s(&pb),
        "-i",
        &inv,
        "--ssh-config",
        &cfg,
        "--forks",
        "2",
        "--yes",
    ]);
    // Let a host finish, then kill the controller mid-run.
    wait_until_done_on_some_host(&lab, &hosts);
    let pid = child.id();
    // The kfix process is the child of `ip netns exec`, which execs it: same pid.
    assert!(
        Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let touched: Vec<&String> = hosts
        .iter()
        .filter(|h| lab.exec(h, "test -e /etc/kfix-slow").status.success())
        .collect();
    assert!(
        !touched.is_empty() && touched.len() < hosts.len(),
        "the kill should land mid-run: {touched:?}"
    );
    let ids = journal_ids(&lab);
    assert_eq!(ids.len(), 1);
    let hist = json(&lab.kfix(&["history", "--output", "json"]));
    assert_eq!(hist[0]["finished"], false, "{hist:#}");
    let rb = json(&lab.kfix(&["rollback", &ids[0], "--yes", "--output", "json"]));
    assert!(
        rb["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["status"] == "rolled_back" || h["status"] == "nothing_to_undo"),
        "{rb:#}"
    );
    same_snapshots(
        &snapshots(&lab, &hosts),
        &before,
        "after rolling back a killed run",
    );
}

#[test]
fn sigint_stops_new_hosts_and_prints_the_summary() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(6);
    let pb = lab.dir.join("slow.yaml");
    std::fs::write(&pb, SLOW).unwrap();
    let (inv, cfg) = (s(&lab.inventory()), s(&lab.ssh_config()));
    let child = lab.spawn_kfix(&[
        "run",
        &s(&pb),
        "-i",
        &inv,
        "--ssh-config",
        &cfg,
        "--forks",
        "1",
        "--yes",
        "--output",
        "json",
    ]);
    wait_until_done_on_some_host(&lab, &range(1, 6));
    assert!(
        Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("interrupted"));
    let doc = json(&out);
    let st = statuses(&doc);
    let changed = st.values().filter(|v| *v == "changed").count();
    let stopped = st.values().filter(|v| *v == "not_attempted").count();
    assert!(
        changed >= 1 && stopped >= 1 && changed + stopped == 6,
        "{doc:#}"
    );
    assert!(
        doc["rollout"]["halted"]
            .as_str()
            .unwrap()
            .contains("interrupted"),
        "{doc:#}"
    );
    for (h, v) in &st {
        // A host that changed finished every step; one not attempted was not touched.
        let marked = lab.exec(h, "test -e /etc/kfix-slow-done").status.success();
        assert_eq!(marked, v == "changed", "{h} {v}");
    }
}
