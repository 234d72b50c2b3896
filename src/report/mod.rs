//! The reporter: the one place that writes to the terminal. It consumes engine events
//! (progress bar on stderr) and renders results (human text or one JSON document).

pub mod approval;
pub mod checks;
pub mod history;

use crate::text::count;
use std::collections::BTreeMap;
use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::exec::{Event, HostReport, Status, StepStatus};
use crate::plan::Verdict;

/// Write results to stdout. When the reader has gone away (`kfix run … | head`), the
/// rest of the output is dropped and the command carries on: a run that changes hosts
/// must never die half-way because nobody reads its report (kfix ignores SIGPIPE for
/// the commands that reach hosts; see src/main.rs).
pub fn out(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    static GONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if GONE.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let mut o = std::io::stdout().lock();
    if o.write_fmt(args).and_then(|()| o.flush()).is_err() {
        GONE.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// `print!` through [`out`].
#[macro_export]
macro_rules! out {
    ($($t:tt)*) => { $crate::report::out(format_args!($($t)*)) };
}

/// `println!` through [`out`].
#[macro_export]
macro_rules! outln {
    () => { $crate::report::out(format_args!("\n")) };
    ($($t:tt)*) => { $crate::report::out(format_args!("{}\n", format_args!($($t)*))) };
}

/// A JSON document as kfix prints it (pretty), or the failure to write it.
pub fn json_text<T: Serialize + ?Sized>(v: &T) -> Result<String, crate::outcome::Failure> {
    serde_json::to_string_pretty(v).map_err(|e| {
        crate::outcome::Failure::new(
            crate::outcome::Exit::WriteFailed,
            format!("cannot serialise the report: {e}"),
        )
    })
}

/// A command's failure on stderr: the one place a command's error is written.
pub fn failure(f: &crate::outcome::Failure) {
    eprintln!("{f}");
}

/// A line on stderr beside the report: a warning (`warning: …`) or what a command did
/// besides it (`wrote …`, `not applied`).
pub fn note(line: &str) {
    eprintln!("{line}");
}

/// Ask the operator `question` on stderr (`[y/N]` appended) and read the answer from
/// stdin: yes only for y or yes; anything else, or no answer, is no.
pub fn ask(question: &str) -> bool {
    use std::io::{BufRead, Write};
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        return false;
    }
    matches!(line.trim(), "y" | "Y" | "yes" | "YES")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Human,
    Json,
}

/// Whether to use colour on stdout (a terminal, and NO_COLOR unset).
pub fn color() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
}

/// `s` with every character a terminal or a log reader would act on shown as text
/// instead: control characters (`\e[1A\e[2K` would erase the line above, `\r` rewrite
/// this one, a `\n` forge a log line) and the bidirectional overrides that reorder what
/// is seen (`U+202E`). Host files, command output and alert labels pass through here.
/// `keep_newlines`: a multi-line text (a diff) keeps its line breaks and tabs.
pub fn printable(s: &str, keep_newlines: bool) -> String {
    let hidden = |c: char| {
        (c.is_control() && !(keep_newlines && (c == '\n' || c == '\t')))
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !s.chars().any(hidden) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\x1b' => out.push_str("\\e"),
            c if hidden(c) => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out
}

/// [`printable`] for one line (a table cell, a log field).
pub fn line(s: &str) -> String {
    printable(s, false)
}

/// A reason on one line: ssh's several lines (and a hint's) joined by `; `, then
/// [`line`].
pub fn one_line(s: &str) -> String {
    let joined: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    line(&joined.join("; "))
}

/// A `+`/`-` diff line coloured (green, red; file headers bold, hunk headers cyan)
/// when `on` (colour: a terminal, NO_COLOR unset).
fn diff_line(l: &str, on: bool) -> String {
    let code = if l.starts_with("+++") || l.starts_with("---") {
        "1"
    } else if l.starts_with('+') {
        "32"
    } else if l.starts_with('-') {
        "31"
    } else if l.starts_with("@@") {
        "36"
    } else {
        return l.to_string();
    };
    paint_if(on, l, code)
}

fn paint(s: &str, code: &str) -> String {
    paint_if(color(), s, code)
}

fn paint_if(on: bool, s: &str, code: &str) -> String {
    if on {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_string()
    }
}

fn status_word(s: Status) -> String {
    let code = match s {
        Status::Healthy | Status::Changed => "32",
        Status::Skipped | Status::NotAttempted => "2",
        Status::WouldChange => "33",
        Status::Failed | Status::RollbackFailed | Status::Unreachable => "31;1",
    };
    paint(s.as_str(), code)
}

/// Consume events until the channel closes. On a terminal: a progress bar per phase on
/// stderr (one line per batch, the hosts in flight). Without one: plain lines.
pub async fn progress(mut rx: mpsc::UnboundedReceiver<Event>, quiet: bool) {
    let tty = std::io::stderr().is_terminal();
    let mut bar: Option<ProgressBar> = None;
    let mut in_flight: Vec<String> = Vec::new();
    let (mut done, mut total) = (0usize, 0usize);
    let say = |s: String| {
        if !quiet && !tty {
            eprintln!("{s}");
        }
    };
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Phase { name, hosts } => {
                if let Some(b) = bar.take() {
                    b.finish_and_clear();
                }
                (done, total) = (0, hosts);
                in_flight.clear();
                if quiet || !tty || hosts == 0 {
                    continue;
                }
                let b =
                    ProgressBar::with_draw_target(Some(hosts as u64), ProgressDrawTarget::stderr());
                let style = ProgressStyle::with_template(
                    "{spinner} {prefix:>9} [{bar:30}] {pos}/{len} hosts {elapsed} {wide_msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
                b.set_style(style);
                b.set_prefix(name);
                b.enable_steady_tick(std::time::Duration::from_millis(120));
                bar = Some(b);
            }
            Event::Batch { batch, of, hosts } => {
                let msg = format!("batch {batch}/{of}: {}", count(hosts, "host"));
                match &bar {
                    Some(b) => b.println(msg),
                    None => say(msg),
                }
            }
            Event::Pause { secs } => {
                let msg = format!("pausing {secs}s before the next batch");
                match &bar {
                    Some(b) => b.println(msg),
                    None => say(msg),
                }
            }
            Event::HostStarted { host } => {
                in_flight.push(line(&host));
                if let Some(b) = &bar {
                    b.set_message(in_flight_msg(&in_flight));
                }
            }
            Event::HostDone { report } => {
                in_flight.retain(|h| *h != line(&report.host));
                done += 1;
                match &bar {
                    Some(b) => {
                        b.inc(1);
                        b.set_message(in_flight_msg(&in_flight));
                    }
                    None => say(format!(
                        "[{done}/{total}] {} {}",
                        line(&report.host),
                        report.status.as_str()
                    )),
                }
            }
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
}

fn in_flight_msg(v: &[String]) -> String {
    match v.len() {
        0 => String::new(),
        1..=3 => v.join(", "),
        n => format!("{}, ... (+{})", v[..3].join(", "), n - 3),
    }
}

/// The JSON document of a run (`--output json`).
#[derive(Serialize)]
pub struct RunDoc<'a> {
    pub run_id: &'a str,
    pub playbook: &'a str,
    pub dry_run: bool,
    pub hosts: &'a [HostReport],
    pub summary: BTreeMap<&'static str, usize>,
    /// Batches, timings and why the rollout halted (real runs that applied).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<&'a crate::exec::Rollout>,
    /// The run journal (real runs that applied).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal: Option<String>,
}

pub fn summary(hosts: &[HostReport]) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for h in hosts {
        *m.entry(h.status.as_str()).or_insert(0) += 1;
    }
    m
}

fn summary_line(hosts: &[HostReport]) -> String {
    let mut v: Vec<(Status, usize)> = Vec::new();
    for h in hosts {
        match v.iter_mut().find(|(s, _)| *s == h.status) {
            Some(e) => e.1 += 1,
            None => v.push((h.status, 1)),
        }
    }
    v.sort();
    v.iter()
        .map(|(s, n)| format!("{n} {}", status_word(*s)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The per-host plan or result in human form.
pub fn render_hosts(hosts: &[HostReport], verbose: bool) -> String {
    let mut out = String::new();
    for h in hosts {
        out.push_str(&format!(
            "{}  {}",
            paint(&line(&h.host), "1"),
            status_word(h.status)
        ));
        if let Some(r) = &h.reason {
            out.push_str(&format!("  {}", one_line(r)));
        }
        out.push('\n');
        let show_steps = verbose
            || matches!(
                h.status,
                Status::WouldChange
                    | Status::Changed
                    | Status::Failed
                    | Status::RollbackFailed
                    | Status::Unreachable
            );
        if !show_steps {
            continue;
        }
        for st in &h.steps {
            if matches!(st.verdict, Verdict::NoChange | Verdict::NotNeeded) && !verbose {
                continue;
            }
            let verdict = match st.verdict {
                Verdict::Change => paint("change", "33"),
                Verdict::NoChange => "no change".to_string(),
                Verdict::Unknown => paint("unknown", "35"),
                Verdict::NotNeeded => "not needed".to_string(),
            };
            let status = match st.status {
                StepStatus::Planned | StepStatus::Unchanged => String::new(),
                other => format!(
                    " -> {}",
                    serde_json::to_value(other)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default()
                ),
            };
            let on = st
                .run_on
                .as_ref()
                .map(|h| format!(" (runs on {h})"))
                .unwrap_or_default();
            out.push_str(&format!(
                "  {} [{}]{on} {verdict}{status}\n",
                line(&st.id),
                st.kind
            ));
            if let Some(r) = &st.reason {
                out.push_str(&format!("      ({})\n", one_line(r)));
            }
            if let Some(r) = &st.irreversible {
                out.push_str(&format!(
                    "      {} {}\n",
                    paint("irreversible:", "31"),
                    line(r)
                ));
            }
            if let Some(n) = &st.note {
                out.push_str(&format!("      {} {}\n", paint("note:", "33"), line(n)));
            }
            let on = color();
            for l in printable(&st.diff, true).lines() {
                out.push_str(&format!("      {}\n", diff_line(l, on)));
            }
            if verbose {
                for c in &st.operations {
                    out.push_str(&format!("      {}\n", line(c)));
                }
            }
        }
        for v in &h.verified {
            out.push_str(&format!("  {} {}\n", paint("verified:", "32"), line(v)));
        }
    }
    out
}

/// The end-of-run table: host, status, changed steps, duration, reason; grouped by status.
pub fn render_table(hosts: &[HostReport]) -> String {
    let mut rows: Vec<&HostReport> = hosts.iter().collect();
    // Grouped by status, the ones that need attention last, next to the summary.
    rows.sort_by(|a, b| a.status.cmp(&b.status).then(a.host.cmp(&b.host)));
    let changed = |h: &HostReport| {
        h.steps
            .iter()
            .filter(|s| {
                matches!(s.status, StepStatus::Applied | StepStatus::RolledBack)
                    || (s.status == StepStatus::Planned
                        && matches!(s.verdict, Verdict::Change | Verdict::Unknown))
            })
            .count()
    };
    let w = rows
        .iter()
        .map(|h| line(&h.host).chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!(
        "{:<w$}  {:<15}  {:>7}  {:>8}  {}\n",
        "HOST", "STATUS", "CHANGES", "TIME", "REASON"
    );
    for h in rows {
        let st = h.status.as_str();
        let pad = 15usize.saturating_sub(st.len());
        out.push_str(&format!(
            "{:<w$}  {}{}  {:>7}  {:>7.1}s  {}\n",
            line(&h.host),
            status_word(h.status),
            " ".repeat(pad),
            changed(h),
            h.duration_ms as f64 / 1000.0,
            one_line(h.reason.as_deref().unwrap_or(""))
        ));
    }
    out.push_str(&format!("\nsummary: {}\n", summary_line(hosts)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_hosts_and_alerts_say_cannot_act_on_the_terminal_or_forge_lines() {
        // A diff line that would erase the line above and rewrite its own, a reason with
        // a forged log line, a name reordered by a bidi override.
        let diff = "-old\n+new\x1b[1A\x1b[2K+harmless\r+x\u{202e}txt.exe\n";
        assert_eq!(
            printable(diff, true),
            "-old\n+new\\e[1A\\e[2K+harmless\\r+x\\u{202e}txt.exe\n"
        );
        assert_eq!(
            line("ok\napproved run=x by=admin"),
            "ok\\napproved run=x by=admin"
        );
        assert_eq!(line("plain: 10.0.0.1 ünïcode"), "plain: 10.0.0.1 ünïcode");
        let h = HostReport {
            host: "n1\x1b]0;pwned\x07".into(),
            status: Status::Failed,
            reason: Some("ssh: \x1b[2Kgone\nsecond line".into()),
            steps: vec![],
            duration_ms: 5,
            batch: None,
            verified: vec![],
        };
        for text in [
            render_hosts(std::slice::from_ref(&h), true),
            render_table(&[h]),
        ] {
            assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text:?}");
            assert!(text.contains("n1\\e]0;pwned\\u{7}"), "{text}");
            // One line per host: ssh's second line joins the first.
            assert!(text.contains("gone; second line"), "{text}");
        }
    }

    #[test]
    fn diff_lines_are_coloured_only_when_colour_is_on() {
        assert_eq!(diff_line("+new", true), "\x1b[32m+new\x1b[0m");
        assert_eq!(diff_line("-old", true), "\x1b[31m-old\x1b[0m");
        assert_eq!(diff_line("--- a/etc/x", true), "\x1b[1m--- a/etc/x\x1b[0m");
        assert_eq!(diff_line("@@ -1 +1 @@", true), "\x1b[36m@@ -1 +1 @@\x1b[0m");
        assert_eq!(diff_line(" same", true), " same");
        assert_eq!(diff_line("+new", false), "+new");
        assert_eq!(count(1, "host"), "1 host");
        assert_eq!(count(0, "host"), "0 hosts");
        assert_eq!(
            one_line("ssh: a\n  b\n\n = hint: c"),
            "ssh: a; b; = hint: c"
        );
    }
}
