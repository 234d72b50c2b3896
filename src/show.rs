//! Runbook pages: a playbook rendered in the usual runbook shape (Meaning, Impact,
//! Diagnosis, Mitigation). `kfix show` prints one; `kfix docs` writes one per playbook.

use std::path::Path;

use crate::playbook::{Playbook, Predicate, Probe, Severity};
use crate::probe::subject_label;

/// What a page's templates are rendered with: each variable's default (what a run
/// without `-e` uses), `<name>` for what is read from the node, and placeholders for
/// what only a run knows (`NODE`, `RUN_ID`).
fn doc_context(pb: &Playbook) -> minijinja::Value {
    let mut m = serde_json::Map::new();
    for v in &pb.vars {
        let shown = if v.secret {
            serde_json::Value::String("<secret>".into())
        } else if v.gathered || v.default.is_null() {
            serde_json::Value::String(format!("<{}>", v.name))
        } else {
            v.default.clone()
        };
        m.insert(v.name.clone(), shown);
    }
    let gathered: serde_json::Map<String, serde_json::Value> = pb
        .gather
        .iter()
        .map(|g| (g.name.clone(), format!("<{}>", g.name).into()))
        .collect();
    m.insert("gathered".into(), serde_json::Value::Object(gathered));
    m.insert(
        "facts".into(),
        serde_json::json!({"hostname": "<hostname>", "kernel": "<kernel>", "arch": "<arch>",
            "os_id": "<os>", "os_version": "<os version>", "systemd": true, "uid": 0}),
    );
    m.insert(
        "kfix".into(),
        serde_json::json!({"run_id": "RUN_ID", "playbook": pb.id}),
    );
    m.insert("inventory_hostname".into(), "NODE".into());
    m.insert("groups".into(), serde_json::json!([]));
    m.insert("inventory_hostnames".into(), serde_json::json!([]));
    m.insert(
        "delegate".into(),
        serde_json::json!({"name": "<control-plane host>", "hostname": "<its hostname>"}),
    );
    minijinja::Value::from(minijinja::value::Serde(serde_json::Value::Object(m)))
}

/// `t` rendered for the page; where a filter cannot work on a placeholder
/// (`<flannel_subnet> | network`), each `{{ expression }}` is shown as `<expression>`.
fn doc(t: &str, cx: &minijinja::Value) -> String {
    if let Ok(r) = crate::template::render(t, cx) {
        return r;
    }
    let mut out = String::new();
    let mut rest = t;
    while let Some(a) = rest.find("{{") {
        let Some(b) = rest[a..].find("}}") else { break };
        out.push_str(&rest[..a]);
        out.push('<');
        out.push_str(rest[a + 2..a + b].trim());
        out.push('>');
        rest = &rest[a + b + 2..];
    }
    out.push_str(rest);
    out
}

fn probe_line(p: &Probe) -> String {
    // A drift probe reads as what the step would do.
    if let crate::playbook::Subject::Drift(id) = &p.subject {
        let what = match p.predicate {
            Predicate::Exists(false) => "would change nothing",
            _ => "would change the node",
        };
        let step = format!("step `{}` {what}", id.value);
        return match &p.name {
            Some(n) => format!("{n} ({step})"),
            None => step,
        };
    }
    let pred = match &p.predicate {
        Predicate::Exists(true) => "exists".to_string(),
        Predicate::Exists(false) => "does not exist".to_string(),
        Predicate::Equals(t) => format!("equals `{}`", t.value),
        Predicate::NotEquals(t) => format!("is not `{}`", t.value),
        Predicate::Matches(t) => format!("matches `{}`", t.value),
        Predicate::NotMatches(t) => format!("does not match `{}`", t.value),
        Predicate::Exit(n) => format!("exits {n}"),
    };
    // A multi-line script reads badly in a list: its name says what it checks.
    let subject = match &p.subject {
        crate::playbook::Subject::Command(w) if multi_line(&w.value.0) => {
            "a shell script in the playbook".to_string()
        }
        _ => subject_label(p),
    };
    match &p.name {
        Some(n) => format!("{n} ({subject} {pred})"),
        None => format!("{subject} {pred}"),
    }
}

/// A command with a multi-line argument (a script).
fn multi_line(argv: &[String]) -> bool {
    argv.iter().any(|a| a.trim_end().contains('\n'))
}

/// The runbook page of a playbook, as Markdown.
pub fn runbook(pb: &Playbook) -> String {
    let id = &pb.id;
    let cx = doc_context(pb);
    let mut s = format!("# {}\n\n", pb.title);
    let alerts: Vec<String> = pb
        .alerts
        .iter()
        .map(|a| {
            let labels: Vec<String> = a
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{v}\""))
                .collect();
            if labels.is_empty() {
                format!("`{}`", a.alertname)
            } else {
                format!("`{}{{{}}}`", a.alertname, labels.join(","))
            }
        })
        .collect();
    // The catalogue is in the repository: a link from the page (docs/runbooks/).
    let source = match pb.source.strip_prefix("docs/catalogue.md ") {
        Some(rest) => format!("[catalogue](../catalogue.md) {rest}"),
        None => pb.source.clone(),
    };
    s.push_str(&format!(
        "Playbook `{id}` · severity {} · source: {source}\n",
        pb.severity.as_str(),
    ));
    if !alerts.is_empty() {
        s.push_str(&format!("\nAlerts: {}\n", alerts.join(", ")));
    }
    s.push_str(&format!("\n## Meaning\n\n{}\n", pb.summary.trim()));
    s.push_str("\n## Impact\n\n");
    let level = match pb.severity {
        Severity::Critical => "Critical",
        Severity::Warning => "Warning",
        Severity::Info => "Informational",
    };
    match &pb.impact {
        Some(i) => s.push_str(&format!("{level}: {}", i.trim())),
        None => s.push_str(match pb.severity {
            Severity::Critical => {
                "Critical: workloads on the node are affected now (traffic to or from its pods fails)."
            }
            Severity::Warning => {
                "Warning: the node degrades, or will fail under load or after the next restart."
            }
            Severity::Info => "Informational.",
        }),
    }
    s.push('\n');
    if pb.disruptive {
        s.push_str("\nThe fix is **disruptive**: it restarts workloads on the node. Drain the node first; kfix rolls it out canary-first.\n");
    }
    s.push_str("\n## Diagnosis\n\n");
    if !pb.preconditions.is_empty() {
        s.push_str("Applies to a node when:\n\n");
        for p in &pb.preconditions {
            s.push_str(&format!("- {}\n", doc(&probe_line(p), &cx)));
        }
        s.push('\n');
    }
    match &pb.detect {
        Some(d) => {
            s.push_str("The problem is present when any of these holds:\n\n");
            for p in d {
                s.push_str(&format!("- {}\n", doc(&probe_line(p), &cx)));
            }
        }
        None => s.push_str("The problem is present when any step below would change the node.\n"),
    }
    if !pb.diagnosis.is_empty() {
        s.push_str("\nTo confirm by hand, on the node:\n\n");
        for d in &pb.diagnosis {
            s.push_str(&format!(
                "```\n{}\n```\n{}\n\n",
                doc(&d.run.value, &cx).trim_end(),
                d.shows.trim()
            ));
        }
    }
    s.push_str(&format!(
        "\nCheck the alerting node (read-only):\n\n```\nkfix check {id} -i INVENTORY --limit NODE\n```\n"
    ));
    s.push_str("\n## Mitigation\n\n");
    if let Some(r) = &pb.remedy {
        s.push_str(&format!("kfix detects this but has no safe automatic fix (`kfix run {id}` refuses). Remedy:\n\n{}\n", r.trim()));
    } else {
        s.push_str(&format!(
            "Review the exact changes, then apply them (the run verifies, and rolls back on failure):\n\n```\nkfix run {id} -i INVENTORY --limit NODE --dry-run\nkfix run {id} -i INVENTORY --limit NODE\n```\n\nWhat it does:\n\n"
        ));
        for (i, st) in pb.steps.iter().enumerate() {
            let what = doc(&st.kind.spec().describe(), &cx);
            let name = st
                .name
                .as_deref()
                .map(|n| format!("{n}: "))
                .unwrap_or_default();
            s.push_str(&format!("{}. {name}{what}", i + 1));
            if let Some(w) = &st.when {
                s.push_str(&format!(" (when `{}`)", w.value));
            }
            if let Some(r) = &st.run_on {
                s.push_str(&format!(
                    " — on the first reachable `{}` host (`run_on`)",
                    doc(&r.value, &cx)
                ));
            }
            if let Some(w) = &st.irreversible {
                s.push_str(&format!(" — irreversible: {w}"));
            }
            s.push('\n');
        }
        if !pb.verify.is_empty() {
            s.push_str("\nVerified afterwards:\n\n");
            for p in &pb.verify {
                let when = p
                    .when
                    .as_ref()
                    .map(|w| format!(" (when `{}`)", w.value))
                    .unwrap_or_default();
                s.push_str(&format!("- {}{when}\n", doc(&probe_line(p), &cx)));
            }
        }
        if !pb.follow_up.is_empty() {
            s.push_str("\nAfterwards, by hand:\n\n");
            for f in &pb.follow_up {
                s.push_str(&format!("- {}\n", doc(f, &cx).trim()));
            }
        }
        s.push_str(
            "\nUndo a run later (refused on nodes changed since): `kfix rollback RUN_ID`.\n",
        );
    }
    if !pb.vars.is_empty() {
        s.push_str("\nVariables (each overridable with `-e NAME=VALUE` or inventory vars; what is read from the node is shown above as `<name>`):\n\n| name | default | meaning |\n|---|---|---|\n");
        for v in &pb.vars {
            let def = if v.secret {
                "(secret)".to_string()
            } else if v.gathered {
                "read from the node".to_string()
            } else {
                format!("`{}`", v.default)
            };
            let choices = if v.choices.is_empty() {
                String::new()
            } else {
                let c: Vec<String> = v
                    .choices
                    .iter()
                    .map(|c| format!("`{}`", crate::template::json_text(c)))
                    .collect();
                format!(" (one of {})", c.join(", "))
            };
            s.push_str(&format!(
                "| `{}` | {def}{choices} | {} |\n",
                v.name,
                v.description.as_deref().unwrap_or("")
            ));
        }
    }
    s
}

/// Write one page per playbook into `out` (plus an index); return the files written.
pub fn write_pages(pbs: &[Playbook], out: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(out)?;
    let mut written = Vec::new();
    let mut index = String::from(
        "# Runbooks\n\nGenerated by `kfix docs` from the playbooks; do not edit by hand.\n\n| runbook | severity | alerts |\n|---|---|---|\n",
    );
    for pb in pbs {
        let file = out.join(format!("{}.md", pb.id));
        std::fs::write(&file, runbook(pb))?;
        written.push(file);
        let alerts: Vec<&str> = pb.alerts.iter().map(|a| a.alertname.as_str()).collect();
        index.push_str(&format!(
            "| [{}]({}.md) | {} | {} |\n",
            pb.title,
            pb.id,
            pb.severity.as_str(),
            alerts.join(", ")
        ));
    }
    let file = out.join("README.md");
    std::fs::write(&file, index)?;
    written.push(file);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shipped playbook's page is one an on-call engineer can follow: templates
    /// rendered (a default, or `<name>` for what is read from the node), the impact of
    /// this problem, commands to confirm it by hand, no internal wording, and links
    /// only to files in the repository.
    #[test]
    fn every_runbook_page_reads_without_the_playbook() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for f in crate::playbook::discover(&root.join("playbooks")) {
            let pb = crate::playbook::load(&f).unwrap_or_else(|e| panic!("{e}"));
            let page = runbook(&pb);
            let id = &pb.id;
            assert!(
                !page.contains("{{") && !page.contains("{%"),
                "{id}: a template is left:\n{page}"
            );
            let impact = pb
                .impact
                .as_deref()
                .unwrap_or_else(|| panic!("{id}: no impact"));
            assert!(page.contains(impact.trim()), "{id}");
            assert!(
                !pb.diagnosis.is_empty() && page.contains("To confirm by hand, on the node:"),
                "{id}: no commands to confirm it by hand"
            );
            // Every list item is one line whose code spans close on it (a script
            // spread over lines would break the list).
            for line in page
                .lines()
                .filter(|l| l.starts_with("- ") || l.starts_with(|c: char| c.is_ascii_digit()))
            {
                assert!(
                    line.matches('`').count() % 2 == 0,
                    "{id}: an unclosed code span: {line}"
                );
            }
            for internal in ["FIXES.md", "seed", " drift ", "`where`"] {
                assert!(
                    !page.contains(internal),
                    "{id}: `{internal}` on the page:\n{page}"
                );
            }
            let mut rest = page.as_str();
            while let Some(i) = rest.find("](") {
                let tail = &rest[i + 2..];
                let target = &tail[..tail.find(')').unwrap_or(0)];
                if !target.starts_with("http") {
                    let file = root.join("docs/runbooks").join(target);
                    assert!(
                        file.exists(),
                        "{id}: link to {target}, which is not in the repository"
                    );
                }
                rest = tail;
            }
            if pb.disruptive {
                assert!(page.contains("**disruptive**"), "{id}");
            }
        }
    }
}
