//! node-problem-detector's custom plugin protocol: a check's outcome as the exit code
//! and the one line of message a plugin gives (`kfix check --npd ID`), and the
//! custom-plugin-monitor configuration that runs it for every playbook (`kfix docs
//! --npd`): detection on the node, as node conditions, without an SSH controller.

use serde_json::{Value, json};

use crate::exec::{HostReport, Status};
use crate::outcome::Exit;
use crate::playbook::Playbook;

/// The plugin protocol's exit codes.
pub const OK: Exit = Exit::Ok;
pub const NON_OK: Exit = Exit::HostProblem;
pub const UNKNOWN: Exit = Exit::CannotTell;

/// node-problem-detector's default `max_output_length`: a longer message is cut there.
pub const MAX_MESSAGE: usize = 80;

/// The exit code and message of one playbook's check on one host: healthy or not
/// applicable is OK, a problem is NonOK, anything that kept kfix from telling (the host
/// unreachable, a command failing) is Unknown.
pub fn verdict(pb: &Playbook, r: &HostReport) -> (Exit, String) {
    let reason = r.reason.as_deref().unwrap_or("");
    let (code, text) = match r.status {
        Status::Healthy => (OK, format!("{}: no problem found", pb.id)),
        Status::Skipped => (OK, format!("{}: not applicable: {reason}", pb.id)),
        Status::WouldChange => (
            NON_OK,
            format!(
                "{}: {}",
                pb.id,
                if reason.is_empty() { &pb.title } else { reason }
            ),
        ),
        _ => (
            UNKNOWN,
            format!("{}: cannot tell ({}): {reason}", pb.id, r.status.as_str()),
        ),
    };
    (code, short(&crate::report::one_line(&text)))
}

/// The line for a check kfix could not start (an unknown playbook, a required variable
/// nobody set, an unreadable inventory: the error itself went to stderr).
pub fn not_checked(id: &str, exit: Exit) -> String {
    let id = if id.is_empty() { "kfix" } else { id };
    short(&crate::report::one_line(&format!(
        "{id}: cannot tell: not checked (exit {}, see stderr)",
        exit.code()
    )))
}

/// At most [`MAX_MESSAGE`] characters, `…` where cut.
fn short(s: &str) -> String {
    if s.chars().count() <= MAX_MESSAGE {
        return s.to_string();
    }
    let mut out: String = s.chars().take(MAX_MESSAGE - 1).collect();
    out.push('…');
    out
}

/// `persist-ip-forward` → `PersistIpForward`.
pub fn camel(id: &str) -> String {
    id.split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// The custom-plugin-monitor configuration: per playbook a node condition
/// `Kfix<Id>Problem`, false by default, set by a permanent rule that runs `kfix check
/// --npd ID` every `interval`. Rules run one at a time (a check is light, and the node's
/// work is not kfix's to crowd).
pub fn monitor_config(pbs: &[Playbook], kfix_path: &str, interval: &str) -> Value {
    let conditions: Vec<Value> = pbs
        .iter()
        .map(|pb| {
            json!({
                "type": format!("Kfix{}Problem", camel(&pb.id)),
                "reason": format!("No{}", camel(&pb.id)),
                "message": format!("kfix {}: no problem found", pb.id),
            })
        })
        .collect();
    let rules: Vec<Value> = pbs
        .iter()
        .map(|pb| {
            json!({
                "type": "permanent",
                "condition": format!("Kfix{}Problem", camel(&pb.id)),
                "reason": camel(&pb.id),
                "path": kfix_path,
                "args": ["check", "--npd", pb.id],
                "timeout": "60s",
            })
        })
        .collect();
    json!({
        "plugin": "custom",
        "pluginConfig": {
            "invoke_interval": interval,
            "timeout": "60s",
            "max_output_length": MAX_MESSAGE,
            "concurrency": 1,
            "enable_message_change_based_condition_update": false,
        },
        "source": "kfix-custom-plugin-monitor",
        "metricsReporting": true,
        "conditions": conditions,
        "rules": rules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_become_condition_names_and_messages_stay_short() {
        assert_eq!(camel("persist-ip-forward"), "PersistIpForward");
        assert_eq!(camel("f12"), "F12");
        let long = "x".repeat(200);
        let s = short(&long);
        assert_eq!(s.chars().count(), MAX_MESSAGE);
        assert!(s.ends_with('…'));
        assert_eq!(short("ok"), "ok");
    }
}
