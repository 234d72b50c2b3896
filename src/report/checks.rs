//! `kfix check PLAYBOOK...`'s output: per playbook, each host's verdict (a problem, no
//! problem, not applicable, could not tell), as lines or as JSON.

use std::fmt::Write;

use crate::exec::{HostReport, Status};

/// What a check calls a host's status: a plan that would change the host is a problem.
fn word(h: &HostReport) -> &'static str {
    match h.status {
        Status::WouldChange => "problem",
        s => s.as_str(),
    }
}

/// `{"run_id", "checks": [{"playbook", "hosts": [{"host", "status", "reason"}]}]}`.
pub fn json(run_id: &str, all: &[(String, Vec<HostReport>)]) -> serde_json::Value {
    let checks: Vec<serde_json::Value> = all
        .iter()
        .map(|(id, hosts)| {
            let hosts: Vec<serde_json::Value> = hosts
                .iter()
                .map(|h| serde_json::json!({"host": h.host, "status": word(h), "reason": h.reason}))
                .collect();
            serde_json::json!({"playbook": id, "hosts": hosts})
        })
        .collect();
    serde_json::json!({"run_id": run_id, "checks": checks})
}

/// Each playbook, then a line per host: name, verdict (a problem in capitals), reason.
pub fn text(all: &[(String, Vec<HostReport>)]) -> String {
    let mut s = String::new();
    for (pid, hosts) in all {
        let _ = writeln!(s, "{pid}");
        for h in hosts {
            let w = match h.status {
                Status::WouldChange => "PROBLEM",
                _ => word(h),
            };
            let _ = writeln!(
                s,
                "  {:<20} {:<12} {}",
                h.host,
                w,
                h.reason.as_deref().unwrap_or("")
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, status: Status, reason: &str) -> HostReport {
        HostReport {
            host: name.into(),
            status,
            reason: Some(reason.into()),
            steps: vec![],
            duration_ms: 0,
            batch: None,
            verified: vec![],
        }
    }

    #[test]
    fn a_plan_that_would_change_the_host_is_a_problem_in_both_forms() {
        let all = vec![(
            "persist-ip-forward".to_string(),
            vec![
                host("n1", Status::WouldChange, "forwarding is off now"),
                host("n2", Status::Healthy, ""),
            ],
        )];
        let t = text(&all);
        assert!(t.starts_with("persist-ip-forward\n"), "{t}");
        assert!(
            t.contains("n1                   PROBLEM      forwarding is off now"),
            "{t}"
        );
        assert!(t.contains("n2                   healthy"), "{t}");
        let j = json("r1", &all);
        assert_eq!(j["run_id"], "r1");
        assert_eq!(j["checks"][0]["hosts"][0]["status"], "problem");
        assert_eq!(j["checks"][0]["hosts"][1]["status"], "healthy");
    }
}
