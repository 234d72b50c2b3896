//! The life cycle every shipped playbook's lab test goes through (check, dry-run,
//! apply, second run, a later run editing the same files and both undone newest first,
//! a forced verify failure's rollback, a skipped host), and the kfix JSON helpers
//! those tests share.

use super::{Lab, host};
use serde_json::Value;

pub fn out_json(o: &std::process::Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "kfix did not print JSON ({e})\nstatus: {:?}\nstdout:\n{}\nstderr:\n{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

/// `kfix <verb> <playbook> -i <lab> --ssh-config <lab> --output json <extra>`.
pub fn kfix_json(lab: &Lab, verb: &str, playbook: &str, extra: &[&str]) -> Value {
    let inv = lab.inventory();
    let cfg = lab.ssh_config();
    let mut args = vec![
        verb,
        playbook,
        "-i",
        inv.to_str().unwrap(),
        "--ssh-config",
        cfg.to_str().unwrap(),
        "--output",
        "json",
    ];
    args.extend_from_slice(extra);
    out_json(&lab.kfix(&args))
}

/// Assert two snapshots are equal, printing only the lines that differ.
#[track_caller]
pub fn assert_same(got: &str, want: &str, what: &str) {
    if got != want {
        let diff = similar::TextDiff::from_lines(want, got)
            .unified_diff()
            .context_radius(1)
            .to_string();
        panic!("{what}\n{diff}");
    }
}

pub fn status(doc: &Value, name: &str) -> String {
    host(doc, name)["status"].as_str().unwrap_or("").to_string()
}

pub fn check_status(doc: &Value, name: &str) -> String {
    host(&doc["checks"][0], name)["status"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// A copy of a shipped playbook with one more verify probe that always fails.
pub fn failing_copy(lab: &Lab, id: &str) -> String {
    let src = std::fs::read_to_string(format!(
        "{}/playbooks/{id}.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let last_key = src
        .lines()
        .rfind(|l| !l.is_empty() && !l.starts_with([' ', '-', '#']))
        .unwrap_or("");
    assert_eq!(last_key, "verify:", "verify is the last section of {id}");
    let path = lab.dir.join(format!("{id}-forced-failure.yaml"));
    std::fs::write(
        &path,
        format!(
            "{}\n  - name: forced verify failure (test)\n    path: /kfix-test-forced-failure\n",
            src.trim_end()
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

/// The whole life cycle of a playbook on three hosts: `bad` and `bad2` have the fault,
/// `good` does not. `after` asserts the fixed state of `bad`.
pub fn lifecycle(lab: &Lab, id: &str, vars: &[&str], after: impl Fn(&Lab, &str)) {
    lifecycle_of(lab, id, vars, true, &[], true, after)
}

/// `changes_the_host`: false for a fix whose change is elsewhere (a cluster datastore);
/// `after` then checks the change itself. `rollback_keeps`: paths the rollback is known
/// to leave changed (the caller asserts what they hold). `undo_history`: also undo the
/// run with `kfix rollback` after a later run edited the same files (false only where
/// the lab cannot start what the rollback restarts).
pub fn lifecycle_of(
    lab: &Lab,
    id: &str,
    vars: &[&str],
    changes_the_host: bool,
    rollback_keeps: &[&str],
    undo_history: bool,
    after: impl Fn(&Lab, &str),
) {
    let (bad, good, bad2) = ("h1", "h2", "h3");
    let before_bad = lab.snapshot_excluding(bad, rollback_keeps);
    // check: detects the fault on the faulty hosts only.
    let mut extra = vars.to_vec();
    let doc = kfix_json(lab, "check", id, &extra);
    assert_eq!(check_status(&doc, bad), "problem", "{doc:#}");
    assert_eq!(check_status(&doc, bad2), "problem", "{doc:#}");
    assert_eq!(check_status(&doc, good), "healthy", "{doc:#}");

    // dry-run: shows the change, changes nothing anywhere.
    let before: Vec<String> = [bad, good, bad2].iter().map(|h| lab.snapshot(h)).collect();
    let before_bad2 = lab.snapshot_excluding(bad2, rollback_keeps);
    extra.push("--dry-run");
    let dry = kfix_json(lab, "run", id, &extra);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(status(&dry, bad), "would_change", "{dry:#}");
    assert_eq!(status(&dry, good), "healthy", "{dry:#}");
    let planned = host(&dry, bad)["steps"].clone();
    assert!(
        planned
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["verdict"] == "change" && !s["diff"].as_str().unwrap().is_empty()),
        "{dry:#}"
    );
    for (h, b) in [bad, good, bad2].iter().zip(&before) {
        assert_same(&lab.snapshot(h), b, &format!("dry-run changed {h}"));
    }

    // apply on `bad`: exactly the planned steps, verify passes.
    let mut apply: Vec<&str> = vars.to_vec();
    apply.extend(["--yes", "--limit", bad]);
    let run = kfix_json(lab, "run", id, &apply);
    assert_eq!(status(&run, bad), "changed", "{run:#}");
    // The run id names backup paths; otherwise the diffs are identical.
    let norm = |doc: &Value, s: &Value| {
        s["diff"]
            .as_str()
            .unwrap()
            .replace(doc["run_id"].as_str().unwrap(), "RUN")
    };
    for (p, a) in planned
        .as_array()
        .unwrap()
        .iter()
        .zip(host(&run, bad)["steps"].as_array().unwrap())
    {
        assert_eq!(
            norm(&dry, p),
            norm(&run, a),
            "apply did what the dry-run showed"
        );
        let expect = if p["verdict"] == "no_change" {
            "unchanged"
        } else {
            "applied"
        };
        assert_eq!(a["status"], expect, "{run:#}");
    }
    assert_eq!(run["summary"]["changed"], 1);
    after(lab, bad);
    if changes_the_host {
        assert_ne!(lab.snapshot(bad), before[0]);
    }
    assert_same(
        &lab.snapshot(good),
        &before[1],
        "a host outside --limit was touched",
    );

    // second run: nothing to do.
    let fixed = lab.snapshot(bad);
    let again = kfix_json(lab, "run", id, &apply);
    assert_eq!(status(&again, bad), "healthy", "{again:#}");
    assert_same(
        &lab.snapshot(bad),
        &fixed,
        "the second run changed something",
    );

    // A later run edits every file this run wrote; both undone newest first: the host
    // is as it was before this run.
    if undo_history {
        undo_history_with_a_later_edit(
            lab,
            bad,
            run["run_id"].as_str().unwrap(),
            &before_bad,
            rollback_keeps,
        );
    }

    // forced verify failure on `bad2`: everything applied is undone exactly.
    let failing = failing_copy(lab, id);
    let mut args: Vec<&str> = vars.to_vec();
    args.extend(["--yes", "--limit", bad2]);
    let rb = kfix_json(lab, "run", &failing, &args);
    assert_eq!(status(&rb, bad2), "failed", "{rb:#}");
    assert!(
        host(&rb, bad2)["reason"]
            .as_str()
            .unwrap()
            .contains("verify failed"),
        "{rb:#}"
    );
    assert!(
        host(&rb, bad2)["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["status"] == "rolled_back"),
        "{rb:#}"
    );
    assert_same(
        &lab.snapshot_excluding(bad2, rollback_keeps),
        &before_bad2,
        "rollback did not restore the snapshot",
    );
}

/// The files `run_id` wrote on `host`, from its journal (each file write journals its
/// path and the digest of the bytes).
pub fn files_written(lab: &Lab, run_id: &str, host: &str) -> Vec<String> {
    let journal = lab.dir.join("state/runs").join(format!("{run_id}.jsonl"));
    let mut paths: Vec<String> = std::fs::read_to_string(&journal)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["type"] == "op" && r["host"] == host && r["on"].is_null())
        .filter_map(|r| r["wrote"]["path"].as_str().map(str::to_string))
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

/// A host's run history undone newest first (issue: runs that write the same file):
/// after `run_id`, a later run appends a line to every file it wrote (as another
/// playbook editing the same files would); `kfix rollback` of the later run, then of
/// `run_id`, must leave `host` as `before` (its snapshot before `run_id`, without
/// `keeps`). A run that wrote no file is skipped.
pub fn undo_history_with_a_later_edit(
    lab: &Lab,
    host: &str,
    run_id: &str,
    before: &str,
    keeps: &[&str],
) {
    undo_history_with_a_later_edit_seen(lab, host, run_id, before, keeps, str::to_string)
}

/// [`undo_history_with_a_later_edit`], comparing only what `view` keeps of the
/// snapshots (a playbook whose restart leaves state a rollback cannot bring back).
pub fn undo_history_with_a_later_edit_seen(
    lab: &Lab,
    host: &str,
    run_id: &str,
    before: &str,
    keeps: &[&str],
    view: impl Fn(&str) -> String,
) {
    let files = files_written(lab, run_id, host);
    if files.is_empty() {
        return;
    }
    let mut pb =
        String::from("id: later-edit\ntitle: A later run editing the same files\nsteps:\n");
    for (i, f) in files.iter().enumerate() {
        pb.push_str(&format!(
            "  - id: edit-{i}\n    file_lines:\n      path: '{f}'\n      lines:\n        - {{regexp: '^# a later run$', line: '# a later run'}}\n"
        ));
    }
    let path = lab.dir.join("later-edit.yaml");
    std::fs::write(&path, pb).unwrap();
    let later = kfix_json(
        lab,
        "run",
        path.to_str().unwrap(),
        &["--yes", "--limit", host],
    );
    assert_eq!(status(&later, host), "changed", "{later:#}");
    for id in [later["run_id"].as_str().unwrap(), run_id] {
        let out = lab.kfix(&["rollback", id, "--yes", "--limit", host, "--output", "json"]);
        let doc = out_json(&out);
        assert_eq!(
            status(&doc, host),
            "rolled_back",
            "undoing {id} ({files:?}): {doc:#}"
        );
    }
    assert_same(
        &view(&lab.snapshot_excluding(host, keeps)),
        &view(before),
        &format!("after undoing a later edit of {files:?} and then run {run_id}"),
    );
}

/// A host failing the precondition is skipped and untouched.
pub fn skipped(lab: &Lab, id: &str, host_name: &str, vars: &[&str]) {
    let before = lab.snapshot(host_name);
    let mut args = vars.to_vec();
    args.extend(["--yes", "--limit", host_name]);
    let doc = kfix_json(lab, "run", id, &args);
    assert_eq!(
        status(&doc, host_name),
        "skipped",
        "{}",
        host(&doc, host_name)
    );
    assert!(
        host(&doc, host_name)["reason"]
            .as_str()
            .unwrap()
            .starts_with("precondition not met"),
        "{doc:#}"
    );
    assert_same(
        &lab.snapshot(host_name),
        &before,
        "a skipped host was changed",
    );
}
