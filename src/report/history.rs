//! `kfix history`'s output: the table of recorded runs, one run's journal, or both as
//! JSON.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::journal::Record;
use crate::rollback::RunInfo;

/// The runs as JSON: each run's header, and its records when one run was asked for.
pub fn json(runs: &[(RunInfo, Vec<Record>)], with_records: bool) -> serde_json::Value {
    let doc: Vec<serde_json::Value> = runs
        .iter()
        .map(|(info, records)| {
            let mut v = serde_json::to_value(info).unwrap_or_default();
            if with_records {
                v["records"] = serde_json::to_value(records).unwrap_or_default();
            }
            v
        })
        .collect();
    serde_json::Value::Array(doc)
}

/// How a run ended, host statuses counted: `3 changed, 1 failed`.
fn result(info: &RunInfo) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for st in info.hosts.values() {
        *counts.entry(st.as_str()).or_insert(0) += 1;
    }
    let mut result: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    if !info.finished {
        result.push("(did not finish: the controller stopped)".into());
    }
    result.join(", ")
}

/// One line per run under a header.
pub fn table(runs: &[(RunInfo, Vec<Record>)]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<25} {:<12} {:<26} {:>5}  RESULT",
        "RUN", "OPERATOR", "PLAYBOOK", "HOSTS"
    );
    for (info, _) in runs {
        let _ = writeln!(
            s,
            "{:<25} {:<12} {:<26} {:>5}  {}",
            info.run_id,
            info.operator,
            info.playbook,
            info.hosts.len(),
            result(info)
        );
    }
    s
}

/// One run: its header, each planned diff, each operation's outcome and undo, each
/// host's end, and the result.
pub fn run(info: &RunInfo, records: &[Record]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "run {}  playbook {} (sha256 {})  by {}",
        info.run_id,
        info.playbook,
        &info.playbook_hash[..12.min(info.playbook_hash.len())],
        info.operator
    );
    let _ = writeln!(
        s,
        "inventory {}  limit {}",
        info.inventory.as_deref().unwrap_or("(local host)"),
        info.limit.as_deref().unwrap_or("(all)")
    );
    for r in records {
        match r {
            Record::Plan {
                host, step, diff, ..
            } => {
                let _ = writeln!(s, "\n{host} {step}:");
                for l in diff.lines() {
                    let _ = writeln!(s, "    {l}");
                }
            }
            Record::OpDone {
                host,
                index,
                ok,
                error,
                ..
            } => {
                let what = if *ok {
                    "ok".to_string()
                } else {
                    format!("FAILED: {}", error.as_deref().unwrap_or(""))
                };
                let _ = writeln!(s, "  {host} op #{index}: {what}");
            }
            Record::Undone {
                host,
                index,
                ok,
                by,
                ..
            } => {
                let _ = writeln!(
                    s,
                    "  {host} op #{index}: undone by {by}{}",
                    if *ok { "" } else { " (FAILED)" }
                );
            }
            Record::HostDone {
                host,
                status,
                reason,
            } => {
                let _ = writeln!(s, "  {host}: {status} {}", reason.as_deref().unwrap_or(""));
            }
            _ => {}
        }
    }
    let _ = writeln!(s, "\nresult: {}", result(info));
    s
}
