//! `limits` steps: pam_limits entries (domain type item value) made effective.
//!
//! pam_limits reads limits.conf, then limits.d/*.conf in name order; for the same
//! domain, type and item the last line wins. Conflicting lines are rewritten in place
//! (a `-` line covering both types is split when only one type is managed), missing
//! entries are appended to the main file, comments are left alone. With `only_raise`, a
//! higher value (or `unlimited`) is not a conflict: a limit is never lowered.

use crate::host::{FileInfo, HResult, Host, failed, unified_diff, write_op};
use crate::plan::StepPlan;
use crate::playbook::LimitsSpec;
use crate::quote::Cmd;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    domain: String,
    kind: String,
    item: String,
    value: String,
}

/// The four fields of an active limits line.
fn fields(line: &str) -> Option<[&str; 4]> {
    let body = line.split('#').next().unwrap_or("");
    let mut it = body.split_whitespace();
    let f = [it.next()?, it.next()?, it.next()?, it.next()?];
    Some(f)
}

/// A limits value as a number to compare: `unlimited`, `infinity` and `-1` are the
/// largest; anything unreadable too, so it is never taken for a lower value.
fn magnitude(v: &str) -> u128 {
    match v {
        "unlimited" | "infinity" | "-1" => u128::MAX,
        _ => v.parse::<u128>().unwrap_or(u128::MAX),
    }
}

/// Does `have` satisfy `want`: equal, or (`only_raise`) at least as high?
fn meets(have: &str, want: &str, only_raise: bool) -> bool {
    have == want || (only_raise && magnitude(have) >= magnitude(want))
}

/// Rewrite one file's text so no line contradicts `want`. Returns the new text.
fn rewrite(text: &str, want: &[Entry], only_raise: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let Some([d, t, i, v]) = fields(line) else {
            out.push_str(line);
            continue;
        };
        let find = |kind: &str| {
            want.iter()
                .find(|e| e.domain == d && e.item == i && e.kind == kind)
        };
        let nl = if line.ends_with('\n') { "\n" } else { "" };
        // What the line should say for `kind`: the wanted value, unless the line meets it.
        let target = |kind: &str| match find(kind) {
            Some(e) if !meets(v, &e.value, only_raise) => e.value.as_str(),
            _ => v,
        };
        match t {
            "soft" | "hard" => match find(t) {
                Some(e) if !meets(v, &e.value, only_raise) => {
                    out.push_str(&replace_value(line, &e.value))
                }
                _ => out.push_str(line),
            },
            "-" => {
                let soft = target("soft");
                let mut hard = target("hard");
                // A soft limit above the hard one is refused by setrlimit: keep it below.
                if magnitude(soft) > magnitude(hard) {
                    hard = soft;
                }
                if soft == v && hard == v {
                    out.push_str(line);
                } else if soft == hard {
                    out.push_str(&replace_value(line, soft));
                } else {
                    out.push_str(&format!("{d} soft {i} {soft}\n{d} hard {i} {hard}{nl}"));
                }
            }
            _ => out.push_str(line),
        }
    }
    out
}

/// Replace the fourth field of a limits line, keeping everything around it.
fn replace_value(line: &str, value: &str) -> String {
    let mut field = 0;
    let mut prev_ws = true;
    for (i, c) in line.char_indices() {
        if !c.is_whitespace() && prev_ws {
            field += 1;
            if field == 4 {
                let end = line[i..]
                    .find(char::is_whitespace)
                    .map_or(line.len(), |e| i + e);
                return format!("{}{value}{}", &line[..i], &line[end..]);
            }
        }
        prev_ws = c.is_whitespace();
    }
    line.to_string()
}

/// The last value for (domain, type, item) across files in read order.
fn effective(texts: &[String], d: &str, t: &str, i: &str) -> Option<String> {
    let mut v = None;
    for text in texts {
        for line in text.lines() {
            if let Some([ld, lt, li, lv]) = fields(line)
                && ld == d
                && li == i
                && (lt == t || lt == "-")
            {
                v = Some(lv.to_string());
            }
        }
    }
    v
}

pub async fn plan(id: &str, s: &LimitsSpec, h: &Host) -> HResult<StepPlan> {
    let main = h
        .render_opt(&s.file)?
        .unwrap_or_else(|| "/etc/security/limits.conf".into());
    let dropins = h
        .render_opt(&s.dropin_dir)?
        .unwrap_or_else(|| "/etc/security/limits.d".into());
    let mut want = Vec::new();
    for e in &s.entries {
        let e = &e.value;
        let kind = h.render(&e.kind)?;
        let entry = Entry {
            domain: h.render(&e.domain)?,
            item: h.render(&e.item)?,
            value: h.render(&e.value)?,
            kind: kind.clone(),
        };
        match kind.as_str() {
            "soft" | "hard" => want.push(entry),
            "-" => {
                want.push(Entry {
                    kind: "soft".into(),
                    ..entry.clone()
                });
                want.push(Entry {
                    kind: "hard".into(),
                    ..entry
                });
            }
            other => {
                return failed(h.at(
                    e.kind.pos,
                    &format!("limit type `{other}` is not soft, hard or -"),
                ));
            }
        }
    }
    let listing = h
        .run(&Cmd::script(
            r#"for f in "$1"/*.conf; do [ -f "$f" ] && printf '%s\n' "$f"; done; true"#,
            [dropins.clone()],
        ))
        .await?;
    let mut paths = vec![main.clone()];
    let mut names: Vec<String> = listing.stdout().lines().map(str::to_string).collect();
    names.sort();
    paths.extend(names);
    let mut files: Vec<(String, Option<FileInfo>, String)> = Vec::new();
    for p in paths {
        let info = h.read_file(&p).await?;
        let text = info
            .as_ref()
            .map(|i| String::from_utf8_lossy(&i.content).into_owned())
            .unwrap_or_default();
        files.push((p, info, text));
    }
    let mut new_texts: Vec<String> = files
        .iter()
        .map(|(_, _, t)| rewrite(t, &want, s.only_raise))
        .collect();
    let mut missing = String::new();
    for e in &want {
        let now = effective(&new_texts, &e.domain, &e.kind, &e.item);
        if !now.is_some_and(|v| meets(&v, &e.value, s.only_raise)) {
            missing.push_str(&format!("{} {} {} {}\n", e.domain, e.kind, e.item, e.value));
        }
    }
    if !missing.is_empty() {
        let t = &mut new_texts[0];
        if !t.is_empty() && !t.ends_with('\n') {
            t.push('\n');
        }
        t.push_str(&missing);
    }
    let mut ops = Vec::new();
    let mut diff = String::new();
    for ((path, info, old), new) in files.iter().zip(&new_texts) {
        if old != new {
            let real = info.as_ref().map_or(path.clone(), |i| i.real_path.clone());
            diff.push_str(&unified_diff(&real, old, new));
            ops.push(write_op(path, info.as_ref(), new.as_bytes(), None));
            h.predict_file(&real, Some(new.clone().into_bytes()), None);
        }
    }
    if ops.is_empty() {
        return Ok(StepPlan::no_change(id, "limits", None));
    }
    Ok(StepPlan::change(id, "limits", diff, ops))
}

impl super::Plan for LimitsSpec {
    async fn plan(&self, step: &crate::playbook::Step, h: &Host) -> HResult<StepPlan> {
        plan(&step.id, self, h).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(d: &str, t: &str, i: &str, v: &str) -> Entry {
        Entry {
            domain: d.into(),
            kind: t.into(),
            item: i.into(),
            value: v.into(),
        }
    }

    #[test]
    fn conflicting_lines_are_rewritten_comments_kept() {
        let text = "# root soft nofile 1024\nroot  soft   nofile   1024\n*\t-\tnofile\t4096\n* soft nproc 100 # low\n";
        let want = vec![
            e("root", "soft", "nofile", "102400"),
            e("*", "soft", "nofile", "102400"),
            e("*", "soft", "nproc", "8192"),
        ];
        assert_eq!(
            rewrite(text, &want, false),
            "# root soft nofile 1024\nroot  soft   nofile   102400\n*\t-\tnofile\t102400\n* soft nproc 8192 # low\n",
            "the `-` line's hard limit goes up with its soft one (setrlimit refuses soft > hard)"
        );
    }

    /// Only raising: a higher value, `unlimited`, or a `-` line above the wanted value
    /// stays; a lower one is raised (CentOS 7's 20-nproc.conf, a site's 1048576).
    #[test]
    fn only_raising_keeps_what_is_higher() {
        let text = "*          soft    nproc     4096\nroot       soft    nproc     unlimited\n* hard nofile 1048576\n* soft nofile 1024\n* - core 0\n";
        let want = vec![
            e("*", "soft", "nproc", "8192"),
            e("root", "soft", "nproc", "8192"),
            e("*", "soft", "nofile", "102400"),
            e("*", "hard", "nofile", "102400"),
        ];
        assert_eq!(
            rewrite(text, &want, true),
            "*          soft    nproc     8192\nroot       soft    nproc     unlimited\n* hard nofile 1048576\n* soft nofile 102400\n* - core 0\n"
        );
        let dash = "* - nofile 65536\n";
        assert_eq!(
            rewrite(dash, &[e("*", "soft", "nofile", "102400")], true),
            "* - nofile 102400\n",
            "never a soft limit above the hard one"
        );
        assert!(meets("unlimited", "102400", true) && !meets("unlimited", "102400", false));
    }

    #[test]
    fn effective_takes_the_last_line() {
        let texts = vec![
            "* soft nofile 102400\n".to_string(),
            "* - nofile 1024\n".to_string(),
        ];
        assert_eq!(
            effective(&texts, "*", "soft", "nofile").as_deref(),
            Some("1024")
        );
        assert_eq!(
            effective(&texts, "*", "hard", "nofile").as_deref(),
            Some("1024")
        );
        assert_eq!(effective(&texts, "root", "hard", "nofile"), None);
    }
}
