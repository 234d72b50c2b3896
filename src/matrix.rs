//! The fleet scan matrix of `kfix check --all`: hosts × problems, as text (folded when
//! wider than the terminal), JSON, or a self-contained HTML page.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::exec::{HostScan, Status};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Cell {
    Present,
    Unknown,
    Healthy,
    NotApplicable,
}

impl Cell {
    fn of(s: Status) -> Cell {
        match s {
            Status::WouldChange | Status::Changed => Cell::Present,
            Status::Healthy => Cell::Healthy,
            Status::Skipped => Cell::NotApplicable,
            Status::Failed
            | Status::RollbackFailed
            | Status::Unreachable
            | Status::NotAttempted => Cell::Unknown,
        }
    }

    fn mark(self) -> &'static str {
        match self {
            Cell::Present => "X",
            Cell::Unknown => "?",
            Cell::Healthy => ".",
            Cell::NotApplicable => "-",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct CellReport {
    pub state: Cell,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub host: String,
    pub cells: BTreeMap<String, CellReport>,
    /// Remote round trips the scan of this host took, the commands they carried
    /// (probes issued at the same moment travel as one batch) and the sessions they
    /// opened (one command channel carries every round trip).
    pub round_trips: u64,
    pub commands: u64,
    pub sessions: u64,
}

/// The whole matrix, ready to render.
#[derive(Clone, Debug, Serialize)]
pub struct Matrix {
    pub run_id: String,
    pub playbooks: Vec<String>,
    /// Worst hosts first: most problems present, then most unknown, then by name.
    pub hosts: Vec<Row>,
    /// Per playbook: how many hosts have the problem.
    pub totals: BTreeMap<String, usize>,
    /// Per playbook: how many hosts could not be checked.
    pub unknown: BTreeMap<String, usize>,
}

impl Matrix {
    pub fn build(run_id: &str, playbooks: &[String], per_host: Vec<HostScan>) -> Matrix {
        let mut hosts: Vec<Row> = per_host
            .into_iter()
            .map(|scan| Row {
                host: scan.host,
                round_trips: scan.traffic.round_trips,
                commands: scan.traffic.commands,
                sessions: scan.traffic.sessions,
                cells: playbooks
                    .iter()
                    .zip(scan.reports)
                    .map(|(pb, r)| {
                        let state = Cell::of(r.status);
                        // A cell shows no status of its own: an unreachable host's
                        // reason says so.
                        let reason =
                            matches!(state, Cell::Present | Cell::Unknown | Cell::NotApplicable)
                                .then_some(r.reason)
                                .flatten()
                                .map(|why| match r.status {
                                    Status::Unreachable => format!("unreachable: {why}"),
                                    _ => why,
                                });
                        (pb.clone(), CellReport { state, reason })
                    })
                    .collect(),
            })
            .collect();
        let count = |r: &Row, c: Cell| r.cells.values().filter(|x| x.state == c).count();
        hosts.sort_by(|a, b| {
            count(b, Cell::Present)
                .cmp(&count(a, Cell::Present))
                .then(count(b, Cell::Unknown).cmp(&count(a, Cell::Unknown)))
                .then(a.host.cmp(&b.host))
        });
        let per = |c: Cell| -> BTreeMap<String, usize> {
            playbooks
                .iter()
                .map(|pb| {
                    (
                        pb.clone(),
                        hosts
                            .iter()
                            .filter(|h| h.cells.get(pb).is_some_and(|x| x.state == c))
                            .count(),
                    )
                })
                .collect()
        };
        Matrix {
            run_id: run_id.to_string(),
            playbooks: playbooks.to_vec(),
            totals: per(Cell::Present),
            unknown: per(Cell::Unknown),
            hosts,
        }
    }

    pub fn any_problem(&self) -> bool {
        self.totals.values().any(|n| *n > 0) || self.unknown.values().any(|n| *n > 0)
    }

    /// The table, or — when it would be wider than `width` columns — one line per problem.
    pub fn render_text(&self, width: usize) -> String {
        let hw = self
            .hosts
            .iter()
            .map(|h| h.host.chars().count())
            .max()
            .unwrap_or(4)
            .max(4);
        let table_width = hw + self.playbooks.iter().map(|p| p.len() + 2).sum::<usize>();
        let mut out = String::new();
        if table_width <= width {
            out.push_str(&format!("{:<hw$}", "HOST"));
            for p in &self.playbooks {
                out.push_str(&format!("  {p}"));
            }
            out.push('\n');
            for h in &self.hosts {
                out.push_str(&format!("{:<hw$}", h.host));
                for p in &self.playbooks {
                    let m = h.cells.get(p).map_or(" ", |c| c.state.mark());
                    out.push_str(&format!("  {m:^w$}", w = p.len()));
                }
                out.push('\n');
            }
            out.push_str(&format!("{:<hw$}", "PROBLEM"));
            for p in &self.playbooks {
                out.push_str(&format!("  {:^w$}", self.totals[p], w = p.len()));
            }
            out.push_str("\n\nX problem present   . healthy   - not applicable   ? unknown (see --output json)\n");
        } else {
            for p in &self.playbooks {
                let with: Vec<String> = self
                    .hosts
                    .iter()
                    .filter(|h| h.cells.get(p).is_some_and(|c| c.state == Cell::Present))
                    .map(|h| crate::report::line(&h.host))
                    .collect();
                let unknown = self.unknown[p];
                let unk = if unknown > 0 {
                    format!("; {unknown} unknown")
                } else {
                    String::new()
                };
                if with.is_empty() {
                    out.push_str(&format!("{p}: 0 hosts{unk}\n"));
                } else {
                    out.push_str(&format!(
                        "{p}: {} ({}){unk}\n",
                        crate::text::count(with.len(), "host"),
                        crate::text::list_some(&with, 5)
                    ));
                }
            }
        }
        // One line per host when every playbook it could not check says the same (an
        // unreachable host), else one per playbook; at most 10, then how many more.
        let unknown: Vec<String> = self
            .hosts
            .iter()
            .flat_map(|h| {
                let cells: Vec<(&String, &str)> = h
                    .cells
                    .iter()
                    .filter(|(_, c)| c.state == Cell::Unknown)
                    .map(|(p, c)| (p, c.reason.as_deref().unwrap_or("")))
                    .collect();
                let host = crate::report::line(&h.host);
                match cells.first() {
                    Some((_, why)) if cells.len() > 1 && cells.iter().all(|(_, r)| r == why) => {
                        vec![format!(
                            "  {host} / {}: {}",
                            crate::text::count(cells.len(), "playbook"),
                            crate::report::one_line(why)
                        )]
                    }
                    _ => cells
                        .iter()
                        .map(|(p, why)| format!("  {host} / {p}: {}", crate::report::one_line(why)))
                        .collect(),
                }
            })
            .collect();
        if !unknown.is_empty() {
            out.push_str("\nunknown:\n");
            for l in unknown.iter().take(10) {
                out.push_str(l);
                out.push('\n');
            }
            if unknown.len() > 10 {
                out.push_str(&format!("  … and {} more\n", unknown.len() - 10));
            }
        }
        out
    }

    /// A self-contained HTML page (no external assets): when and where the scan ran,
    /// the colour-coded matrix (each playbook with its severity and a link to its
    /// runbook), and every problem and unknown written out with its reason — what is
    /// on the page is what prints and what a screenshot shows, nothing only on hover.
    pub fn render_html(&self, page: &Page) -> String {
        let esc = |s: &str| {
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;")
        };
        let sev = |p: &str| page.severity.get(p).map_or("", String::as_str);
        let runbook = |p: &str| match &page.runbook_base {
            Some(base) => format!("<a href=\"{}\">{}</a>", esc(&runbook_url(base, p)), esc(p)),
            None => esc(p),
        };
        let mut rows = String::new();
        let mut findings = String::new();
        for h in &self.hosts {
            rows.push_str(&format!("<tr><th scope=\"row\">{}</th>", esc(&h.host)));
            for p in &self.playbooks {
                let (class, text, reason) = match h.cells.get(p) {
                    Some(c) => {
                        let (class, text) = match c.state {
                            Cell::Present => ("present", "problem"),
                            Cell::Unknown => ("unknown", "unknown"),
                            Cell::Healthy => ("healthy", "healthy"),
                            Cell::NotApplicable => ("na", "n/a"),
                        };
                        (class, text, c.reason.clone().unwrap_or_default())
                    }
                    None => ("na", "", String::new()),
                };
                rows.push_str(&format!(
                    "<td class=\"{class}\" data-host=\"{}\" data-playbook=\"{}\" title=\"{}\">{text}</td>",
                    esc(&h.host),
                    esc(p),
                    esc(&reason)
                ));
                if matches!(class, "present" | "unknown") {
                    findings.push_str(&format!(
                        "<tr class=\"{class}\"><th scope=\"row\">{}</th><td>{}</td><td class=\"sev-{}\">{}</td><td>{text}</td><td class=\"reason\">{}</td></tr>\n",
                        esc(&h.host),
                        runbook(p),
                        esc(sev(p)),
                        esc(sev(p)),
                        esc(&crate::report::one_line(&reason))
                    ));
                }
            }
            rows.push_str("</tr>\n");
        }
        let head: String = self
            .playbooks
            .iter()
            .map(|p| {
                format!(
                    "<th scope=\"col\">{}<br><span class=\"sev sev-{}\">{}</span></th>",
                    runbook(p),
                    esc(sev(p)),
                    esc(sev(p))
                )
            })
            .collect();
        let totals: String = self
            .playbooks
            .iter()
            .map(|p| {
                format!(
                    "<td class=\"total\" data-playbook=\"{}\">{}</td>",
                    esc(p),
                    self.totals[p]
                )
            })
            .collect();
        let findings = if findings.is_empty() {
            "<p id=\"findings\">No problem found, and every host answered.</p>".to_string()
        } else {
            format!(
                "<table id=\"findings\"><thead><tr><th>host</th><th>playbook</th><th>severity</th><th>found</th><th>why</th></tr></thead>\n<tbody>\n{findings}</tbody></table>"
            )
        };
        let runbooks = match &page.runbook_base {
            Some(base) => format!(
                "Playbook names link to their runbooks under <code>{}</code>.",
                esc(base)
            ),
            None => "Each playbook's runbook: <code>kfix show ID</code> (or pass --runbook-base-url to link them here).".to_string(),
        };
        format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>kfix check --all {run}</title>\n<style>\
body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;margin-bottom:1.5em}}\
th,td{{border:1px solid #ccc;padding:.35em .7em;text-align:center;font-size:14px}}th[scope=row]{{text-align:left}}\
td.present{{background:#d9534f;color:#fff;font-weight:bold}}td.unknown{{background:#f0ad4e}}\
td.healthy{{background:#dff0d8;color:#3c763d}}td.na{{background:#f5f5f5;color:#999}}td.total{{font-weight:bold}}\
.sev{{font-weight:normal;font-size:12px}}.sev-critical{{color:#a94442;font-weight:bold}}.sev-warning{{color:#8a6d3b}}\
#findings td,#findings th{{text-align:left}}#findings td.reason{{white-space:pre-wrap;word-break:break-word;max-width:50em}}\
tr.present th{{border-left:4px solid #d9534f}}tr.unknown th{{border-left:4px solid #f0ad4e}}\
@media print{{@page{{size:landscape;margin:1cm}}body{{margin:0}}th,td{{font-size:9px;padding:.2em .35em}}\
a{{color:inherit;text-decoration:none}}tr{{break-inside:avoid}}*{{-webkit-print-color-adjust:exact;print-color-adjust:exact}}}}\
</style></head><body>\n<h1>Known problems by host</h1>\n<p>kfix check --all, run <code>{run}</code>, \
at <time datetime=\"{iso}\">{when}</time>, inventory <code>{inv}</code>: {hosts}, {pbs}. {runbooks}</p>\n\
<table id=\"matrix\"><thead><tr><th>host</th>{head}</tr></thead>\n<tbody>\n{rows}</tbody>\n\
<tfoot><tr><th scope=\"row\">hosts with the problem</th>{totals}</tr></tfoot></table>\n\
<h2>What was found</h2>\n{findings}\n</body></html>\n",
            run = esc(&self.run_id),
            iso = esc(&page.when_iso()),
            when = esc(&page.when_text()),
            inv = esc(page.inventory.as_deref().unwrap_or("(the local host)")),
            hosts = crate::text::count(self.hosts.len(), "host"),
            pbs = crate::text::count(self.playbooks.len(), "playbook"),
        )
    }
}

/// What the HTML page says besides the matrix: when and on which inventory the scan
/// ran, each playbook's severity, where the runbooks are published.
#[derive(Clone, Debug, Default)]
pub struct Page {
    /// The scan's start, as its run id names it (`20261205T034134.917-…`).
    pub run_id: String,
    pub inventory: Option<String>,
    pub severity: BTreeMap<String, String>,
    pub runbook_base: Option<String>,
}

impl Page {
    fn stamp(&self) -> Option<[&str; 6]> {
        let r = &self.run_id;
        let get = |a: usize, b: usize| {
            r.get(a..b)
                .filter(|s| s.bytes().all(|c| c.is_ascii_digit()))
        };
        (r.get(8..9) == Some("T")).then_some(())?;
        Some([
            get(0, 4)?,
            get(4, 6)?,
            get(6, 8)?,
            get(9, 11)?,
            get(11, 13)?,
            get(13, 15)?,
        ])
    }

    /// `2026-12-05 03:41:34 UTC`.
    pub fn when_text(&self) -> String {
        match self.stamp() {
            Some([y, mo, d, h, mi, s]) => format!("{y}-{mo}-{d} {h}:{mi}:{s} UTC"),
            None => self.run_id.clone(),
        }
    }

    /// `2026-12-05T03:41:34Z`.
    pub fn when_iso(&self) -> String {
        match self.stamp() {
            Some([y, mo, d, h, mi, s]) => format!("{y}-{mo}-{d}T{h}:{mi}:{s}Z"),
            None => String::new(),
        }
    }
}

/// The width of the terminal on stdout, if it is one.
pub fn terminal_width() -> Option<usize> {
    // SAFETY: TIOCGWINSZ fills a winsize struct we own; a failing call leaves it zeroed.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_col > 0).then_some(ws.ws_col as usize)
}

/// The runbook page of a playbook under `base`.
pub fn runbook_url(base: &str, id: &str) -> String {
    format!("{}/{id}.md", base.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::HostReport;

    fn scan(host: &str, statuses: &[Status]) -> HostScan {
        HostScan {
            host: host.into(),
            reports: statuses.iter().map(|s| r(host, *s)).collect(),
            traffic: Default::default(),
        }
    }

    fn r(host: &str, status: Status) -> HostReport {
        HostReport {
            host: host.into(),
            status,
            reason: Some("why".into()),
            steps: Vec::new(),
            duration_ms: 0,
            batch: None,
            verified: Vec::new(),
        }
    }

    #[test]
    fn worst_hosts_first_with_totals_and_folding() {
        let pbs = vec!["aaa".to_string(), "bbb".to_string()];
        let m = Matrix::build(
            "RUN",
            &pbs,
            vec![
                scan("n1", &[Status::Healthy, Status::Skipped]),
                scan("n2", &[Status::WouldChange, Status::WouldChange]),
                scan("n3", &[Status::Unreachable, Status::WouldChange]),
            ],
        );
        assert_eq!(
            m.hosts.iter().map(|h| h.host.as_str()).collect::<Vec<_>>(),
            vec!["n2", "n3", "n1"]
        );
        assert_eq!(m.totals["aaa"], 1);
        assert_eq!(m.totals["bbb"], 2);
        assert_eq!(
            m.render_text(100),
            "HOST  aaa  bbb\nn2     X    X \nn3     ?    X \nn1     .    - \nPROBLEM   1    2 \n\n\
             X problem present   . healthy   - not applicable   ? unknown (see --output json)\n\nunknown:\n  n3 / aaa: unreachable: why\n"
        );
        assert_eq!(
            m.render_text(10),
            "aaa: 1 host (n2); 1 unknown\nbbb: 2 hosts (n2, n3)\n\nunknown:\n  n3 / aaa: unreachable: why\n"
        );
        let page = Page {
            run_id: "20261205T034134.917-e788".into(),
            inventory: Some("inventory/prod.ini".into()),
            severity: [("aaa".to_string(), "critical".to_string())].into(),
            runbook_base: None,
        };
        let html = m.render_html(&page);
        assert!(html.contains("<td class=\"present\" data-host=\"n2\" data-playbook=\"aaa\""));
        assert!(!html.contains("http"), "self-contained");
        assert!(
            html.contains("<time datetime=\"2026-12-05T03:41:34Z\">2026-12-05 03:41:34 UTC</time>")
        );
        assert!(html.contains("inventory <code>inventory/prod.ini</code>: 3 hosts, 2 playbooks"));
        assert!(html.contains("<span class=\"sev sev-critical\">critical</span>"));
        // The unknown cell's reason is written out, not only in a tooltip.
        assert!(html.contains("<tr class=\"unknown\"><th scope=\"row\">n3</th><td>aaa</td><td class=\"sev-critical\">critical</td><td>unknown</td><td class=\"reason\">unreachable: why</td></tr>"), "{html}");
        let linked = m.render_html(&Page {
            runbook_base: Some("https://rb.example/kfix".into()),
            ..page
        });
        assert!(linked.contains("<a href=\"https://rb.example/kfix/aaa.md\">aaa</a>"));
    }

    #[test]
    fn a_host_no_playbook_could_check_for_one_reason_is_one_line() {
        let pbs: Vec<String> = (0..14).map(|i| format!("p{i:02}")).collect();
        let down = vec![Status::Unreachable; 14];
        let mut hosts = vec![scan("down", &down)];
        // Twelve hosts unknown for different reasons each: the list stops at ten.
        for i in 0..12 {
            let mut h = scan(&format!("h{i:02}"), &[Status::Unreachable]);
            h.reports[0].reason = Some(format!("reason {i}\nsecond line"));
            hosts.push(h);
        }
        let m = Matrix::build("RUN", &pbs, hosts);
        let text = m.render_text(10);
        assert!(
            text.contains("\n  down / 14 playbooks: unreachable: why\n"),
            "{text}"
        );
        assert_eq!(text.matches("down /").count(), 1, "{text}");
        assert!(
            text.contains("  h00 / p00: unreachable: reason 0; second line\n"),
            "{text}"
        );
        assert!(text.ends_with("  … and 3 more\n"), "{text}");
    }
}
