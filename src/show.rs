//! `kfix show`: a playbook rendered as a readable runbook.

use crate::playbook::{Playbook, Predicate, Probe, StepKind};
use crate::probe::subject_label;

fn probe_line(p: &Probe) -> String {
    let pred = match &p.predicate {
        Predicate::Exists(true) => "exists".to_string(),
        Predicate::Exists(false) => "does not exist".to_string(),
        Predicate::Equals(t) => format!("equals `{}`", t.value),
        Predicate::NotEquals(t) => format!("is not `{}`", t.value),
        Predicate::Matches(t) => format!("matches /{}/", t.value),
        Predicate::NotMatches(t) => format!("does not match /{}/", t.value),
        Predicate::Exit(n) => format!("exits {n}"),
    };
    match &p.name {
        Some(n) => format!("{n}: {} {pred}", subject_label(p)),
        None => format!("{} {pred}", subject_label(p)),
    }
}

pub fn runbook(pb: &Playbook) -> String {
    let mut s = format!("# {} — {}\n\n", pb.id, pb.title);
    if !pb.summary.is_empty() {
        s.push_str(&format!("{}\n\n", pb.summary.trim()));
    }
    s.push_str(&format!(
        "severity: {:?}   source: {}\n",
        pb.severity, pb.source
    ));
    if !pb.alerts.is_empty() {
        let names: Vec<String> = pb
            .alerts
            .iter()
            .map(|a| {
                let labels: Vec<String> = a
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{v}\""))
                    .collect();
                if labels.is_empty() {
                    a.alertname.clone()
                } else {
                    format!("{}{{{}}}", a.alertname, labels.join(","))
                }
            })
            .collect();
        s.push_str(&format!("alerts: {}\n", names.join(", ")));
    }
    s.push_str(&format!(
        "file: {} (sha256 {})\n",
        pb.file.display(),
        &pb.hash[..12.min(pb.hash.len())]
    ));
    if pb.disruptive {
        s.push_str("disruptive: yes (roll out canary-first; drain the node first)\n");
    }
    if !pb.vars.is_empty() {
        s.push_str("\n## Variables\n");
        for v in &pb.vars {
            let def = if v.secret {
                "(secret)".to_string()
            } else {
                v.default.to_string()
            };
            s.push_str(&format!(
                "- {} = {def}{}\n",
                v.name,
                v.description
                    .as_ref()
                    .map(|d| format!("  — {d}"))
                    .unwrap_or_default()
            ));
        }
    }
    let section = |s: &mut String, title: &str, probes: &[Probe]| {
        if !probes.is_empty() {
            s.push_str(&format!("\n## {title}\n"));
            for p in probes {
                s.push_str(&format!("- {}\n", probe_line(p)));
            }
        }
    };
    section(&mut s, "Applies when (preconditions)", &pb.preconditions);
    match &pb.detect {
        Some(d) => section(&mut s, "Problem present when any of", d),
        None => s.push_str("\n## Problem present when\n- any step would change the host\n"),
    }
    s.push_str("\n## Steps\n");
    for (i, st) in pb.steps.iter().enumerate() {
        let what = match &st.kind {
            StepKind::Route(r) => format!("route {} {:?}", r.dest.value, r.state).to_lowercase(),
            StepKind::Iptables(r) => format!(
                "iptables -t {} {}",
                r.table.value,
                r.rule
                    .as_ref()
                    .map(|w| w.value.0.join(" "))
                    .unwrap_or_else(|| if r.flush {
                        "flush".into()
                    } else {
                        "policy".into()
                    })
            ),
            StepKind::Sysctl(r) => format!("sysctl {} = {}", r.key.value, r.value.value),
            StepKind::Limits(r) => format!("limits: {} entries", r.entries.len()),
            StepKind::FileLines(r) => format!("lines in {}", r.path.value),
            StepKind::Json(r) => format!("json keys in {}", r.path.value),
            StepKind::File(r) => format!("file {}", r.path.value),
            StepKind::Path(r) => match r.state {
                crate::playbook::PathState::Absent => {
                    format!("make {} absent (moved aside, kept for undo)", r.path.value)
                }
            },
            StepKind::Link(r) => format!("link {} {:?}", r.name.value, r.state).to_lowercase(),
            StepKind::Service(r) => {
                format!("service {} {:?}", r.name.value, r.state).to_lowercase()
            }
            StepKind::Command(r) => format!("command `{}`", r.run.value.0.join(" ")),
        };
        s.push_str(&format!(
            "{}. {} — {}{}\n",
            i + 1,
            st.id,
            st.name.as_deref().unwrap_or(&what),
            if st.name.is_some() {
                format!(" ({what})")
            } else {
                String::new()
            }
        ));
        if let Some(w) = &st.when {
            s.push_str(&format!("   when: {}\n", w.value));
        }
        if let Some(w) = &st.irreversible {
            s.push_str(&format!("   irreversible: {w}\n"));
        }
    }
    section(&mut s, "Verified by", &pb.verify);
    if let Some(r) = &pb.remedy {
        s.push_str(&format!(
            "\n## Remedy (detection only: kfix does not apply it)\n{}\n",
            r.trim()
        ));
    }
    s.push_str(&format!("\n## Run\n    kfix check {id} -i INVENTORY --limit NODE\n    kfix run {id} -i INVENTORY --limit NODE --dry-run\n    kfix run {id} -i INVENTORY --limit NODE\n", id = pb.id));
    s
}
