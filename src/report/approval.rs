//! `kfix approve`'s view of a run that waits for approval: what the server's
//! `GET /runs/ID` says, read into types (fields kfix does not show are ignored), and the
//! plan shown to the approver.

use std::fmt::Write;

use serde::Deserialize;

use super::{line, printable};

/// A run record as `kfix serve` returns it (src/serve/store.rs `RunRecord`).
#[derive(Debug, Default, Deserialize)]
pub struct Run {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub alertname: String,
    #[serde(default)]
    pub playbook: String,
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub state: String,
    /// The digest an approval must name (none: nothing to approve).
    pub plan_digest: Option<String>,
    pub plan: Option<Plan>,
}

/// The host's plan (a host report).
#[derive(Debug, Default, Deserialize)]
pub struct Plan {
    #[serde(default)]
    pub steps: Vec<Step>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Step {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub verdict: String,
    #[serde(default)]
    pub diff: String,
    #[serde(default)]
    pub commands: Vec<String>,
}

/// The run, each step that changes the host with its diff and commands, and the digest.
/// Everything the server sent is escaped before it reaches the terminal.
pub fn text(run: &Run) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "run {}  alert {}  playbook {}  host {}  state {}",
        line(&run.id),
        line(&run.alertname),
        line(&run.playbook),
        line(&run.host),
        line(&run.state)
    );
    let steps = run.plan.iter().flat_map(|p| &p.steps);
    for st in steps.filter(|s| s.verdict != "no_change" && s.verdict != "not_needed") {
        let _ = writeln!(out, "  {} {}", line(&st.id), line(&st.verdict));
        for l in printable(&st.diff, true).lines() {
            let _ = writeln!(out, "      {l}");
        }
        for c in &st.commands {
            let _ = writeln!(out, "      $ {}", line(c));
        }
    }
    let _ = writeln!(
        out,
        "plan digest: {}",
        line(run.plan_digest.as_deref().unwrap_or("?"))
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_approver_sees_changing_steps_escaped_and_the_digest() {
        let run: Run = serde_json::from_value(serde_json::json!({
            "id": "r1", "alertname": "KfixNodeIpForwardingDisabled", "playbook": "persist-ip-forward",
            "host": "n1", "state": "awaiting_approval", "plan_digest": "ab12",
            "plan": {"steps": [
                {"id": "keep", "verdict": "no_change", "diff": "", "commands": []},
                {"id": "fix", "verdict": "change", "diff": "-0\n+1\x1b[2J", "commands": ["sysctl -w x=1"]}
            ], "status": "would_change"},
            "unknown_field": 1
        }))
        .expect("a record");
        let t = text(&run);
        assert!(
            t.starts_with("run r1  alert KfixNodeIpForwardingDisabled"),
            "{t}"
        );
        assert!(!t.contains("keep"), "unchanged steps are not shown: {t}");
        assert!(t.contains("  fix change\n      -0\n"), "{t}");
        assert!(!t.contains('\x1b'), "escaped: {t:?}");
        assert!(t.contains("      $ sysctl -w x=1\n"), "{t}");
        assert!(t.ends_with("plan digest: ab12\n"), "{t}");
    }
}
