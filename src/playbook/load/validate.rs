//! Validating a decoded playbook: templates and the names they read, step ids, regexes,
//! shell scripts, where a secret may go, each kind's own rules.

#[allow(unused_imports)]
use super::*;

/// Checks across the whole playbook: ids, templates, regexes, undo coverage.
pub(super) fn validate(cx: &mut Ctx, pb: &Playbook) {
    let mut known: BTreeSet<String> = template::BUILTIN_NAMES
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut seen_vars = BTreeSet::new();
    for v in &pb.vars {
        if !seen_vars.insert(v.name.clone()) {
            cx.err(
                v.pos,
                format!("variable `{}` is declared twice", v.name),
                None,
            );
        }
        known.insert(v.name.clone());
        if v.gathered && !v.default.is_null() {
            cx.err(
                v.pos,
                format!(
                    "`{}` is gathered from each host (`gather: {}`): it has no default",
                    v.name, v.name
                ),
                Some(format!(
                    "remove the default; where a site keeps the value elsewhere, set it with `-e {}=...` or in the inventory",
                    v.name
                )),
            );
        }
    }
    let gathered_vars: BTreeSet<&str> = pb
        .vars
        .iter()
        .filter(|v| v.gathered)
        .map(|v| v.name.as_str())
        .collect();
    let mut ids = BTreeSet::new();
    for s in &pb.steps {
        if !ids.insert(s.id.clone()) {
            cx.err(
                s.pos,
                format!("step id `{}` is used twice", s.id),
                Some("step ids must be unique".into()),
            );
        }
        if !s.kind.has_undo() && s.irreversible.is_none() {
            cx.err(
                s.pos,
                format!("step `{}` cannot be undone", s.id),
                Some("add `undo:` to the command, or `irreversible: \"<why>\"`".into()),
            );
        }
        if let Some(w) = &s.when {
            check_expr(cx, w, &known);
        }
        let content = s.kind.spec().secret_safe_texts();
        for t in s.kind.spec().texts() {
            cx.secret_ok = content.iter().any(|c| c.pos == t.pos && c.value == t.value);
            check_text(cx, &t, &known);
            cx.secret_ok = false;
        }
        s.kind.spec().check(
            &s.id,
            s.pos,
            &mut KindChecks {
                cx: &mut *cx,
                known: &known,
            },
        );
        if let Some(t) = &s.run_on {
            check_text(cx, t, &known);
        }
    }
    for d in &pb.diagnosis {
        check_text(cx, &d.run, &known);
    }
    for p in &pb.preconditions {
        for t in probe_texts(p) {
            let names = template::check(&t.value).unwrap_or_default();
            if let Some(n) = names
                .iter()
                .find(|n| *n == "gathered" || gathered_vars.contains(n.as_str()))
            {
                cx.err(
                    t.pos,
                    format!(
                        "a precondition cannot use `{n}`: values are gathered after preconditions"
                    ),
                    Some("check the file or command it comes from instead, or move the check to `detect`".into()),
                );
            }
        }
    }
    for g in &pb.gather {
        match &g.source {
            GatherSource::File(t) => check_text(cx, t, &known),
            GatherSource::Command(w) => {
                for t in words_texts(w) {
                    check_text(cx, &t, &known);
                }
                check_shell_scripts(cx, w);
            }
            GatherSource::Value(t) => check_text(cx, t, &known),
        }
        if let Some(r) = &g.regex
            && !template::is_template(&r.value)
        {
            match regex::Regex::new(&r.value) {
                Ok(re) if re.captures_len() < 2 => cx.err(
                    r.pos,
                    "the regex needs a capture group: its first group is the value",
                    Some("e.g. 'FLANNEL_SUBNET=(\\S+)'".into()),
                ),
                Ok(_) => {}
                Err(e) => cx.err(
                    r.pos,
                    format!(
                        "invalid regex: {}",
                        e.to_string().lines().last().unwrap_or("")
                    ),
                    None,
                ),
            }
        }
    }
    let all_probes = pb
        .preconditions
        .iter()
        .chain(pb.detect.iter().flatten())
        .chain(pb.verify.iter())
        .chain(pb.steps.iter().flat_map(|s| s.only_if.iter()));
    for p in all_probes {
        for t in probe_texts(p) {
            check_text(cx, &t, &known);
        }
        if let Subject::Command(w) = &p.subject {
            check_shell_scripts(cx, w);
        }
        if let Subject::Route {
            filter: Some(w), ..
        } = &p.subject
        {
            check_route_filter(cx, w, &known);
        }
        if let Some(w) = &p.when {
            check_expr(cx, w, &known);
        }
        if let Subject::Drift(t) = &p.subject
            && !ids.contains(&t.value)
        {
            let options: Vec<&str> = ids.iter().map(String::as_str).collect();
            cx.err(
                t.pos,
                format!("`drift` names no step `{}`", t.value),
                Some(suggest(&t.value, &options)),
            );
        }
        if let Predicate::Matches(t) | Predicate::NotMatches(t) = &p.predicate
            && !template::is_template(&t.value)
            && let Err(e) = regex::Regex::new(&t.value)
        {
            cx.err(
                t.pos,
                format!(
                    "invalid regex: {}",
                    e.to_string().lines().last().unwrap_or("")
                ),
                None,
            );
        }
    }
}

/// A route's `where`: an expression that also sees `route`.
pub(super) fn check_route_filter(cx: &mut Ctx, w: &Text, known: &BTreeSet<String>) {
    let mut with_route = known.clone();
    with_route.insert("route".to_string());
    check_expr(cx, w, &with_route);
}

pub(super) fn probe_texts(p: &Probe) -> Vec<Text> {
    let mut v = match &p.subject {
        Subject::Sysctl(t)
        | Subject::SysctlPersisted(t)
        | Subject::Link(t)
        | Subject::Path(t)
        | Subject::File(t) => {
            vec![t.clone()]
        }
        Subject::Drift(_) => vec![],
        Subject::Command(w) => words_texts(w),
        Subject::Route {
            dest,
            dev,
            not_dev,
            table,
            ..
        } => {
            let mut v = vec![dest.clone()];
            v.extend([dev, not_dev, table].into_iter().flatten().cloned());
            v
        }
        Subject::Iptables { table, chain, rule } => {
            let mut v = vec![table.clone(), chain.clone()];
            v.extend(words_texts(rule));
            v
        }
        Subject::IptablesChain { table, chain } => vec![table.clone(), chain.clone()],
        Subject::Trace(t) => {
            let t = &t.value;
            let mut v = vec![
                t.table.clone(),
                t.chain.clone(),
                t.src.clone(),
                t.dst.clone(),
            ];
            v.extend(
                [&t.in_if, &t.out, &t.proto, &t.dport, &t.mark]
                    .into_iter()
                    .flatten()
                    .cloned(),
            );
            v
        }
    };
    match &p.predicate {
        Predicate::Equals(t)
        | Predicate::NotEquals(t)
        | Predicate::Matches(t)
        | Predicate::NotMatches(t) => v.push(t.clone()),
        Predicate::Exists(_) | Predicate::Exit(_) => {}
    }
    v
}

/// A template inside the script of `sh -c` (or bash, dash…) is shell code, whatever the
/// value: refused unless it goes through `shell_quote`. Values go after the script.
pub(super) fn check_shell_scripts(cx: &mut Ctx, w: &At<Words>) {
    for i in template::shell_scripts(&w.value.0) {
        if let Some(expr) = template::unquoted_in_shell_script(&w.value.0[i]) {
            cx.err(
                w.pos,
                format!("`{{{{ {expr} }}}}` inside a shell script: its value would run as shell code"),
                Some(format!(
                    "pass the value as an argument and read it as \"$1\": [sh, -c, 'test -e \"/x/$1\"', sh, \"{{{{ {expr} }}}}\"]; or, where a script must hold it, `{{{{ {expr} | shell_quote }}}}`"
                )),
            );
        }
    }
}

/// Where a secret would leak: its value in an argument, a path, a condition, a report
/// (anything but stdin or a file's content), or transformed by a filter or expression
/// (masking finds a secret by its literal value only).
pub(super) fn leak(cx: &mut Ctx, pos: Pos, name: &str) {
    let mut d = Diagnostic::at(
        cx.file,
        cx.text,
        pos,
        format!(
            "secret variable `{name}` is used where its value can leak (an argument, a path, a condition, or an expression other than a bare `{{{{ {name} }}}}`)"
        ),
    );
    d.hint = Some(format!(
        "a secret goes only into a command step's `stdin:` or a file's content (`file` content, a `file_lines` line, a `json` value), as `{{{{ {name} }}}}` alone"
    ));
    cx.leaks.entry(name.to_string()).or_default().push(d);
}

pub(super) fn check_names(
    cx: &mut Ctx,
    pos: Pos,
    names: BTreeSet<String>,
    known: &BTreeSet<String>,
) {
    cx.used.extend(names.iter().cloned());
    if !cx.secret_ok {
        for n in &names {
            leak(cx, pos, n);
        }
    }
    for n in names {
        if !known.contains(&n) {
            let options: Vec<&str> = known.iter().map(String::as_str).collect();
            let hint = match suggest(&n, &options) {
                s if s.starts_with("did you mean") => s,
                _ => format!("declare it under `vars:` (with a default), or pass `-e {n}=...`"),
            };
            cx.err(pos, format!("undefined variable `{n}`"), Some(hint));
        }
    }
}

pub(super) fn check_text(cx: &mut Ctx, t: &Text, known: &BTreeSet<String>) {
    match template::check(&t.value) {
        Ok(names) => {
            if cx.secret_ok {
                for n in template::names_not_bare(&t.value, &names) {
                    leak(cx, t.pos, &n);
                }
            }
            check_names(cx, t.pos, names, known)
        }
        Err(e) => cx.err(
            t.pos,
            format!("bad template: {e}"),
            Some("templates use minijinja (Jinja2) syntax: {{ var }}".into()),
        ),
    }
}

pub(super) fn check_expr(cx: &mut Ctx, t: &Text, known: &BTreeSet<String>) {
    match template::check_expr(&t.value) {
        Ok(names) => check_names(cx, t.pos, names, known),
        Err(e) => cx.err(t.pos, format!("bad `when` expression: {e}"), None),
    }
}

/// The loader's checks as a step kind asks for them (see `KindSpec::check`).
struct KindChecks<'a, 'c> {
    cx: &'a mut Ctx<'c>,
    known: &'a BTreeSet<String>,
}

impl LoadChecks for KindChecks<'_, '_> {
    fn error(&mut self, pos: Pos, message: String, hint: Option<String>) {
        self.cx.err(pos, message, hint);
    }

    fn text(&mut self, t: &Text) {
        check_text(self.cx, t, self.known);
    }

    fn secret_text(&mut self, t: &Text) {
        self.cx.secret_ok = true;
        check_text(self.cx, t, self.known);
        self.cx.secret_ok = false;
    }

    fn expr(&mut self, t: &Text, names: &[&str]) {
        let mut with_item = self.known.clone();
        with_item.extend(names.iter().map(|n| n.to_string()));
        check_expr(self.cx, t, &with_item);
    }

    fn shell_scripts(&mut self, w: &At<Words>) {
        check_shell_scripts(self.cx, w);
    }
}
