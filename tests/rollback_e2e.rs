//! The run journal and `kfix rollback`: a completed run is undone exactly from its
//! journal; a host changed since the run is refused and left alone; `kfix history`
//! lists and shows runs.

mod common;

use common::{Lab, host, json, require_root};
use serde_json::Value;

fn p(x: &std::path::Path) -> String {
    x.to_str().unwrap().to_string()
}

fn apply(lab: &Lab, playbook: &str, limit: &str) -> Value {
    let (inv, cfg) = (p(&lab.inventory()), p(&lab.ssh_config()));
    json(&lab.kfix(&[
        "run",
        playbook,
        "-i",
        &inv,
        "--ssh-config",
        &cfg,
        "--limit",
        limit,
        "--yes",
        "--output",
        "json",
    ]))
}

#[track_caller]
fn same(got: &str, want: &str, what: &str) {
    if got != want {
        panic!(
            "{what}\n{}",
            similar::TextDiff::from_lines(want, got).unified_diff()
        );
    }
}

#[test]
fn rollback_restores_a_completed_run_and_refuses_drifted_hosts() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(3);
    lab.flannel(&[], &["h1", "h2", "h3"]);
    for h in ["h1", "h2", "h3"] {
        lab.sh(h, "sysctl -qw net.ipv4.ip_forward=0");
        lab.write_file(h, "/etc/sysctl.conf", "net.ipv4.ip_forward=0\n");
    }
    let before: Vec<String> = ["h1", "h2"].iter().map(|h| lab.snapshot(h)).collect();
    let run = apply(&lab, "persist-ip-forward", "h1:h2:h3");
    assert_eq!(run["summary"]["changed"], 3, "{run:#}");
    let id = run["run_id"].as_str().unwrap().to_string();
    let masq = apply(&lab, "service-masquerade", "h2");
    assert_eq!(masq["summary"]["changed"], 1, "{masq:#}");

    // history lists both runs, newest first, and shows one.
    let hist = json(&lab.kfix(&["history", "--output", "json"]));
    assert_eq!(hist[0]["run_id"], masq["run_id"]);
    assert_eq!(hist[1]["run_id"], id.as_str());
    assert_eq!(hist[1]["hosts"]["h1"], "changed");
    let shown = lab.kfix(&["history", &id]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains("playbook persist-ip-forward") && text.contains("+net.ipv4.ip_forward=1"),
        "{text}"
    );

    // The journal holds old contents and the undo commands rollback runs as root: it
    // is private, and one that someone else could have written is not used.
    use std::os::unix::fs::PermissionsExt;
    let state = lab.dir.join("state");
    let journal = state.join("runs").join(format!("{id}.jsonl"));
    let mode = |x: &std::path::Path| std::fs::metadata(x).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        (mode(&state), mode(&state.join("runs")), mode(&journal)),
        (0o700, 0o700, 0o600)
    );
    for (path, open, back) in [
        (&journal, 0o666, 0o600),
        (&state.join("runs"), 0o777, 0o700),
    ] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(open)).unwrap();
        let out = lab.kfix(&["rollback", &id, "--dry-run"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{err}");
        assert!(
            err.contains("could have been written by someone else"),
            "{err}"
        );
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(back)).unwrap();
    }

    // Someone changes h2 after the run: the forwarding setting is edited again.
    lab.sh("h2", "sysctl -qw net.ipv4.ip_forward=0");
    let h2_drifted = lab.snapshot("h2");
    // And on h3 the file the run wrote is edited in place (the runtime value stays).
    lab.sh("h3", "echo '# edited by hand' >> /etc/sysctl.conf");
    let h3_drifted = lab.snapshot("h3");

    // Dry-run: says what it would undo, changes nothing.
    let dry = json(&lab.kfix(&["rollback", &id, "--dry-run", "--output", "json"]));
    let st = |doc: &Value, h: &str| host(doc, h)["status"].as_str().unwrap().to_string();
    assert_eq!(st(&dry, "h1"), "would_roll_back", "{dry:#}");
    assert_eq!(st(&dry, "h2"), "refused", "{dry:#}");
    assert_eq!(st(&dry, "h3"), "refused", "{dry:#}");
    assert!(lab.sh("h1", "cat /proc/sys/net/ipv4/ip_forward").trim() == "1");

    // For real: h1 back to its snapshot; h2 refused and untouched.
    let rb = json(&lab.kfix(&["rollback", &id, "--yes", "--output", "json"]));
    assert_eq!(st(&rb, "h1"), "rolled_back", "{rb:#}");
    assert_eq!(st(&rb, "h2"), "refused", "{rb:#}");
    assert_eq!(st(&rb, "h3"), "refused", "{rb:#}");
    let reason = host(&rb, "h2")["reason"].as_str().unwrap().to_string();
    assert!(
        reason.contains("changed since run") && reason.contains("nothing was undone"),
        "{reason}"
    );
    same(
        &lab.snapshot("h1"),
        &before[0],
        "rollback did not restore h1",
    );
    same(
        &lab.snapshot("h2"),
        &h2_drifted,
        "a refused host was changed",
    );
    same(
        &lab.snapshot("h3"),
        &h3_drifted,
        "a refused host was changed",
    );

    // Once undone, there is nothing left to undo.
    let again = json(&lab.kfix(&[
        "rollback", &id, "--limit", "h1", "--yes", "--output", "json",
    ]));
    assert_eq!(st(&again, "h1"), "nothing_to_undo", "{again:#}");
    // `--limit` takes run's patterns, groups from the inventory the run used; a
    // malformed one selects nothing.
    let grouped = json(&lab.kfix(&[
        "rollback",
        &id,
        "--limit",
        "lab:!h2:!h3",
        "--dry-run",
        "--output",
        "json",
    ]));
    let names: Vec<&str> = grouped["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["host"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["h1"], "{grouped:#}");
    let out = lab.kfix(&["rollback", &id, "--limit", "lab[0", "--yes"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("malformed --limit pattern 'lab[0'"),
        "{out:?}"
    );

    // The masquerade run on h2 is still undoable on its own.
    let rb2 = json(&lab.kfix(&[
        "rollback",
        masq["run_id"].as_str().unwrap(),
        "--yes",
        "--output",
        "json",
    ]));
    assert_eq!(st(&rb2, "h2"), "rolled_back", "{rb2:#}");
    assert_eq!(
        lab.sh("h2", "iptables -t nat -S POSTROUTING"),
        "-P POSTROUTING ACCEPT\n"
    );
    let out = lab.kfix(&["rollback", "no-such-run", "--yes"]);
    assert_eq!(out.status.code(), Some(3));
}

/// An added rule's undo minds that rule only: on a live node kube-proxy rewrites its
/// KUBE-* chains in the same table all the time, and others add rules of their own, and
/// that is no reason to refuse; the rule gone is.
#[test]
fn a_rules_rollback_minds_its_rule_not_the_rest_of_the_table() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(2);
    lab.flannel(&[], &["h1", "h2"]);
    let run = apply(&lab, "service-masquerade", "h1:h2");
    assert_eq!(run["summary"]["changed"], 2, "{run:#}");
    let id = run["run_id"].as_str().unwrap().to_string();
    // h1: another chain of the nat table changes (as kube-proxy's do), and someone adds
    // a rule of their own to POSTROUTING.
    lab.sh(
        "h1",
        "iptables -t nat -N KUBE-SVC-KFIX && iptables -t nat -A KUBE-SVC-KFIX -j RETURN \
         && iptables -t nat -A POSTROUTING -o kfix0 -j ACCEPT",
    );
    // h2: someone deletes the rule the run added.
    lab.sh(
        "h2",
        "iptables -t nat -D POSTROUTING -s 10.250.0.0/16 -d 10.244.0.0/16 -j MASQUERADE",
    );
    let h2_drifted = lab.snapshot("h2");
    let rb = json(&lab.kfix(&["rollback", &id, "--yes", "--output", "json"]));
    assert_eq!(host(&rb, "h1")["status"], "rolled_back", "{rb:#}");
    assert_eq!(
        lab.sh("h1", "iptables -t nat -S POSTROUTING"),
        "-P POSTROUTING ACCEPT\n-A POSTROUTING -o kfix0 -j ACCEPT\n",
        "the run's rule is gone, the other one stays"
    );
    assert_eq!(
        lab.sh("h1", "iptables -t nat -S KUBE-SVC-KFIX"),
        "-N KUBE-SVC-KFIX\n-A KUBE-SVC-KFIX -j RETURN\n",
        "the other chain is left as it is"
    );
    assert_eq!(host(&rb, "h2")["status"], "refused", "{rb:#}");
    same(
        &lab.snapshot("h2"),
        &h2_drifted,
        "a refused host was changed",
    );
}

/// Runs that write the same file (`persist-ip-forward` and `rp-filter-loose` both edit
/// /etc/sysctl.conf, through Debian's 99-sysctl.conf symlink; a third run edits it
/// again) are undone newest first, one at a time: after each, the host is exactly as it
/// was before that run — so every suffix of the history, undone newest first, returns the
/// host to the state before its first run. Undoing the later run rewrites the file (new
/// inode and change time): the earlier run sees the bytes it wrote and goes on.
#[test]
fn a_hosts_run_history_is_undone_newest_first_back_to_each_earlier_state() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(1);
    lab.flannel(&[], &["h1"]);
    lab.sh(
        "h1",
        "sysctl -qw net.ipv4.ip_forward=0 net.ipv4.conf.all.rp_filter=1 net.ipv4.conf.default.rp_filter=1",
    );
    lab.write_file(
        "h1",
        "/etc/sysctl.conf",
        "# local settings\nnet.ipv4.ip_forward = 0\nnet.ipv4.conf.all.rp_filter = 1\nnet.ipv4.conf.default.rp_filter = 1\n",
    );
    let third = lab.dir.join("note-sysctl.yaml");
    std::fs::write(
        &third,
        "id: note-sysctl\ntitle: Note who edited sysctl.conf\nsteps:\n  - id: note\n    file_lines:\n      path: /etc/sysctl.conf\n      lines:\n        - {regexp: '^# edited by', line: '# edited by kfix'}\n",
    )
    .unwrap();
    let mut before = Vec::new();
    let mut ids = Vec::new();
    for pb in [
        "persist-ip-forward",
        "rp-filter-loose",
        third.to_str().unwrap(),
    ] {
        before.push(lab.snapshot("h1"));
        let run = apply(&lab, pb, "h1");
        assert_eq!(run["summary"]["changed"], 1, "{pb}: {run:#}");
        ids.push(run["run_id"].as_str().unwrap().to_string());
    }
    assert_eq!(
        lab.sh("h1", "cat /proc/sys/net/ipv4/ip_forward").trim(),
        "1"
    );
    // The earliest run cannot be undone while later ones still stand on its file.
    let early = json(&lab.kfix(&["rollback", &ids[0], "--dry-run", "--output", "json"]));
    assert_eq!(host(&early, "h1")["status"], "refused", "{early:#}");
    for (i, id) in ids.iter().enumerate().rev() {
        let rb = json(&lab.kfix(&["rollback", id, "--yes", "--output", "json"]));
        assert_eq!(host(&rb, "h1")["status"], "rolled_back", "run {i}: {rb:#}");
        same(
            &lab.snapshot("h1"),
            &before[i],
            &format!("after undoing run {i} ({id}) and the later ones"),
        );
    }
    assert_eq!(
        lab.sh("h1", "cat /proc/sys/net/ipv4/ip_forward").trim(),
        "0"
    );
}
