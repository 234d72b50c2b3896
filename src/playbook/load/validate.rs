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
        let content = secret_safe_texts(&s.kind);
        for t in step_texts(&s.kind) {
            cx.secret_ok = content.iter().any(|c| c.pos == t.pos && c.value == t.value);
            check_text(cx, &t, &known);
            cx.secret_ok = false;
        }
        if let StepKind::Command(c) = &s.kind {
            for w in [Some(&c.run), c.unless.as_ref(), c.undo.as_ref()]
                .into_iter()
                .flatten()
            {
                check_shell_scripts(cx, w);
            }
        }
        if let Some(t) = &s.run_on {
            check_text(cx, t, &known);
        }
        if let StepKind::Etcd(e) = &s.kind
            && let Some(api) = &e.api
        {
            match &api.value {
                EtcdApi::Fixed(2 | 3) => {}
                EtcdApi::Template(t) if template::is_template(t) => check_text(
                    cx,
                    &At {
                        pos: api.pos,
                        value: t.clone(),
                    },
                    &known,
                ),
                EtcdApi::Template(t) if matches!(t.as_str(), "2" | "3") => {}
                other => cx.err(
                    api.pos,
                    format!("etcd step `{}`: unknown etcd API {other:?}", s.id),
                    Some("`api: 3` (the default), `api: 2`, or a template giving one".into()),
                ),
            }
        }
        if let StepKind::Etcd(e) = &s.kind
            && e.delete.prefix.is_none()
            && e.delete.keys.is_empty()
        {
            cx.err(
                s.pos,
                format!("etcd step `{}` deletes nothing", s.id),
                Some("give `delete: {prefix: ...}` and/or `delete: {keys: [...]}`".into()),
            );
        }
        if let StepKind::Etcd(e) = &s.kind
            && let (Some(g), Some(_)) = (&e.delete.group_by, &e.delete.group)
        {
            cx.err(
                g.pos,
                format!("etcd step `{}` has both `group` and `group_by`", s.id),
                Some("a key's group comes from one of them: the key's path (`group`) or an expression (`group_by`)".into()),
            );
        }
        if let StepKind::Etcd(e) = &s.kind
            && let Some(g) = &e.delete.group_by
        {
            let mut with_item = known.clone();
            with_item.extend(["key", "value", "json", "listed"].map(String::from));
            check_expr(cx, g, &with_item);
        }
        if let StepKind::Etcd(e) = &s.kind
            && let Some(r) = &e.delete.rewrite
        {
            let mut with_item = known.clone();
            with_item.extend(["key", "value", "json", "listed"].map(String::from));
            if e.delete.group.is_some() || e.delete.group_by.is_some() {
                with_item.extend(["group", "groups", "keys"].map(String::from));
            }
            check_expr(cx, r, &with_item);
        }
        if let StepKind::Etcd(e) = &s.kind
            && let Some(w) = &e.delete.filter
        {
            let mut with_item = known.clone();
            let item: &[&str] = if e.delete.group.is_some() || e.delete.group_by.is_some() {
                &["group", "groups", "keys", "json", "listed"]
            } else {
                &["key", "value", "json", "listed"]
            };
            with_item.extend(item.iter().map(|n| n.to_string()));
            check_expr(cx, w, &with_item);
        }
        if let StepKind::Etcd(e) = &s.kind
            && let Some(g) = &e.delete.group
            && !template::is_template(&g.value)
        {
            match regex::Regex::new(&g.value) {
                Ok(re) if re.captures_len() == 2 => {}
                Ok(_) => cx.err(
                    g.pos,
                    "an etcd `group` regex needs exactly one capture group".to_string(),
                    Some("capture what names the group, e.g. '^/calico/v1/host/([^/]+)/'; use (?:...) for other parentheses".into()),
                ),
                Err(err) => cx.err(
                    g.pos,
                    format!(
                        "invalid regex: {}",
                        err.to_string().lines().last().unwrap_or("")
                    ),
                    None,
                ),
            }
        }
        if let StepKind::Iptables(i) = &s.kind {
            let modes = usize::from(i.rule.is_some())
                + usize::from(i.flush)
                + usize::from(i.policy.is_some());
            if modes != 1 {
                cx.err(
                    s.pos,
                    format!(
                        "iptables step `{}` has {} of `rule`, `flush: true` and `policy`",
                        s.id,
                        if modes == 0 { "none" } else { "more than one" }
                    ),
                    Some("an iptables step does one thing: add or delete a rule, flush, or set a chain's policy; split it into steps".into()),
                );
            }
            if let (Some(rule), None) = (&i.rule, &i.chain) {
                cx.err(
                    rule.pos,
                    format!("iptables step `{}`: a `rule` needs its `chain`", s.id),
                    Some("e.g. `chain: POSTROUTING`".into()),
                );
            }
            if let (Some(policy), None) = (&i.policy, &i.chain) {
                cx.err(
                    policy.pos,
                    format!("iptables step `{}`: a `policy` needs its `chain`", s.id),
                    Some("a built-in chain: `chain: FORWARD`".into()),
                );
            }
        }
        if let StepKind::Route(r) = &s.kind
            && let Some(w) = &r.filter
        {
            check_route_filter(cx, w, &known);
        }
        if let StepKind::Json(j) = &s.kind {
            let mut strings = Vec::new();
            collect_strings(
                &serde_json::Value::Object(j.set.value.clone()),
                &mut strings,
            );
            cx.secret_ok = true;
            for st in strings {
                check_text(
                    cx,
                    &At {
                        pos: j.set.pos,
                        value: st,
                    },
                    &known,
                );
            }
            cx.secret_ok = false;
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

pub(super) fn collect_strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_strings(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| collect_strings(x, out)),
        _ => {}
    }
}

pub(super) fn words_texts(w: &At<Words>) -> Vec<Text> {
    w.value
        .0
        .iter()
        .map(|s| At {
            pos: w.pos,
            value: s.clone(),
        })
        .collect()
}

/// A step's texts that are written to a file or fed on stdin: the only places a
/// secret may go.
pub(super) fn secret_safe_texts(k: &StepKind) -> Vec<Text> {
    match k {
        StepKind::File(f) => vec![f.content.clone()],
        StepKind::FileLines(f) => f
            .lines
            .iter()
            .filter_map(|l| l.value.line.clone())
            .collect(),
        StepKind::Command(c) => c.stdin.iter().cloned().collect(),
        _ => Vec::new(),
    }
}

pub(super) fn step_texts(k: &StepKind) -> Vec<Text> {
    let mut v: Vec<Text> = Vec::new();
    let opt = |t: &Option<Text>, v: &mut Vec<Text>| {
        if let Some(t) = t {
            v.push(t.clone());
        }
    };
    match k {
        StepKind::Route(r) => {
            v.push(r.dest.clone());
            for t in [&r.dev, &r.not_dev, &r.via, &r.table] {
                opt(t, &mut v);
            }
        }
        StepKind::Iptables(i) => {
            v.push(i.table.clone());
            opt(&i.chain, &mut v);
            opt(&i.policy, &mut v);
            if let Some(r) = &i.rule {
                v.extend(words_texts(r));
            }
        }
        StepKind::Sysctl(s) => {
            v.push(s.key.clone());
            v.push(s.value.clone());
            opt(&s.file, &mut v);
        }
        StepKind::Limits(l) => {
            opt(&l.file, &mut v);
            opt(&l.dropin_dir, &mut v);
            for e in &l.entries {
                let e = &e.value;
                v.extend([
                    e.domain.clone(),
                    e.kind.clone(),
                    e.item.clone(),
                    e.value.clone(),
                ]);
            }
        }
        StepKind::FileLines(f) => {
            v.push(f.path.clone());
            for l in &f.lines {
                opt(&l.value.line, &mut v);
                opt(&l.value.regexp, &mut v);
                opt(&l.value.replace, &mut v);
            }
        }
        StepKind::Package(p) => v.push(p.name.clone()),
        StepKind::Json(j) => {
            v.push(j.path.clone());
            v.extend(j.unset.iter().cloned());
        }
        StepKind::File(f) => {
            v.push(f.path.clone());
            v.push(f.content.clone());
            opt(&f.mode, &mut v);
        }
        StepKind::Path(p) => {
            v.push(p.path.clone());
            opt(&p.aside_to, &mut v);
        }
        StepKind::Link(l) => {
            v.push(l.name.clone());
            opt(&l.kind, &mut v);
            v.extend(l.args.iter().cloned());
        }
        StepKind::Service(s) => v.push(s.name.clone()),
        StepKind::Command(c) => {
            v.extend(words_texts(&c.run));
            for w in [&c.unless, &c.undo].into_iter().flatten() {
                v.extend(words_texts(w));
            }
            opt(&c.creates, &mut v);
            opt(&c.stdin, &mut v);
        }
        StepKind::Etcd(e) => {
            v.push(e.endpoints.clone());
            for t in [&e.cacert, &e.cert, &e.key, &e.delete.prefix] {
                opt(t, &mut v);
            }
            v.extend(e.delete.keys.iter().cloned());
        }
    }
    v
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
