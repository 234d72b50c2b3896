//! Reading a playbook file: YAML → typed [`Playbook`], reporting every problem at once.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::model::*;
use crate::diag::{Diagnostic, Diagnostics, Pos};
use crate::template;
use crate::yaml::{self, At, Kind, Node};

pub(super) const TOP_KEYS: &[&str] = &[
    "id",
    "title",
    "summary",
    "severity",
    "source",
    "alerts",
    "auto_apply",
    "disruptive",
    "vars",
    "preconditions",
    "detect",
    "steps",
    "verify",
    "rollout",
    "remedy",
    "gather",
    "impact",
    "diagnosis",
    "follow_up",
];
pub(super) const STEP_COMMON: &[&str] = &[
    "id",
    "name",
    "irreversible",
    "when",
    "only_if",
    "timeout",
    "run_on",
];
pub(super) const PROBE_SUBJECTS: &[&str] = &[
    "sysctl",
    "sysctl_persisted",
    "command",
    "link",
    "path",
    "file",
    "route",
    "iptables",
    "iptables_chain",
    "trace",
    "drift",
];

/// Collects diagnostics for one file.
struct Ctx<'a> {
    file: &'a Path,
    text: &'a str,
    errors: Vec<Diagnostic>,
    /// Every variable name a template or expression reads.
    used: BTreeSet<String>,
    /// The text being checked is one where a secret may go (stdin, file content).
    secret_ok: bool,
    /// See [`Playbook::secret_leaks`].
    leaks: BTreeMap<String, Vec<Diagnostic>>,
}

impl Ctx<'_> {
    fn err(&mut self, pos: Pos, msg: impl Into<String>, hint: Option<String>) {
        let mut d = Diagnostic::at(self.file, self.text, pos, msg);
        d.hint = hint;
        self.errors.push(d);
    }

    fn yaml_err(&mut self, e: yaml::Error, fallback: Pos, hint: Option<String>) {
        let hint = hint.or_else(|| hint_for(&e.message));
        self.err(e.pos.unwrap_or(fallback), e.message, hint);
    }

    /// Deserialize a node into `T`, recording an error on failure.
    fn typed<'n, T: Deserialize<'n>>(&mut self, node: &'n Node) -> Option<T> {
        match yaml::from_node::<T>(node) {
            Ok(v) => Some(v),
            Err(e) => {
                self.yaml_err(e, node.pos, None);
                None
            }
        }
    }
}

/// A hint for serde's common messages.
fn hint_for(message: &str) -> Option<String> {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (field, expected) = rest.split_once('`')?;
        let options: Vec<&str> = expected
            .split('`')
            .enumerate()
            .filter(|(i, _)| i % 2 == 1)
            .map(|(_, s)| s)
            .collect();
        return Some(suggest(field, &options));
    }
    if message.starts_with("unknown variant `") {
        return Some("use one of the values listed above".to_string());
    }
    None
}

/// "did you mean `x`?" when a close match exists, else the list of valid names.
pub fn suggest(given: &str, options: &[&str]) -> String {
    let best = options
        .iter()
        .map(|o| (levenshtein(given, o), *o))
        .min()
        .filter(|(d, o)| *d <= 2.max(o.len() / 3));
    match best {
        Some((_, o)) => format!("did you mean `{o}`?"),
        None => format!("expected one of: {}", options.join(", ")),
    }
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let v = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
            cur.push(v);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Load and validate a playbook. Every problem in the file is reported together.
pub fn load(path: &Path) -> Result<Playbook, Diagnostics> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Diagnostics(vec![
            Diagnostic::file(path, format!("cannot read playbook: {e}"))
                .with_hint("pass a playbook file, or an id from `kfix list`"),
        ])
    })?;
    parse(path, &text)
}

/// Playbooks larger than this are refused before parsing: a real one is a few KiB.
pub const MAX_PLAYBOOK_BYTES: usize = 1024 * 1024;

/// Parse playbook text (named `path` in diagnostics).
pub fn parse(path: &Path, text: &str) -> Result<Playbook, Diagnostics> {
    if text.len() > MAX_PLAYBOOK_BYTES {
        return Err(Diagnostics(vec![
            Diagnostic::file(
                path,
                format!(
                    "playbook is larger than {} MiB ({} bytes)",
                    MAX_PLAYBOOK_BYTES / 1024 / 1024,
                    text.len()
                ),
            )
            .with_hint("a playbook describes one fix; move data into files on the host"),
        ]));
    }
    let mut cx = Ctx {
        file: path,
        text,
        errors: Vec::new(),
        used: BTreeSet::new(),
        secret_ok: false,
        leaks: BTreeMap::new(),
    };
    let root = match yaml::parse(text) {
        Ok(n) => n,
        Err(e) => {
            cx.yaml_err(
                e,
                Pos { line: 1, col: 1 },
                Some("the playbook is not valid YAML".into()),
            );
            return Err(Diagnostics(cx.errors));
        }
    };
    let pb = decode(&mut cx, &root, path, text).map(|mut pb| {
        let names: BTreeSet<String> = pb.gather.iter().map(|g| g.name.clone()).collect();
        for v in pb.vars.iter_mut() {
            v.gathered = names.contains(&v.name);
        }
        pb
    });
    let pb = pb.and_then(|pb| {
        validate(&mut cx, &pb);
        let mut pb = pb;
        pb.uses_inventory_hostnames = cx.used.contains("inventory_hostnames");
        for v in pb.vars.iter().filter(|v| v.secret) {
            for d in cx.leaks.get(&v.name).into_iter().flatten() {
                cx.errors.push(d.clone());
            }
        }
        pb.secret_leaks = std::mem::take(&mut cx.leaks);
        cx.errors.is_empty().then_some(pb)
    });
    cx.errors.sort_by_key(|d| d.pos);
    cx.errors
        .dedup_by(|a, b| a.pos == b.pos && a.message == b.message);
    match pb {
        Some(pb) => Ok(pb),
        None => Err(Diagnostics(cx.errors)),
    }
}

fn decode(cx: &mut Ctx, root: &Node, path: &Path, text: &str) -> Option<Playbook> {
    let start = Pos { line: 1, col: 1 };
    let Some(entries) = root.entries() else {
        cx.err(
            root.pos,
            format!("a playbook is a mapping, found {}", root.type_name()),
            Some("start with `id:`, `title:` and `steps:`".into()),
        );
        return None;
    };
    let mut id = None;
    let mut title = None;
    let mut summary = String::new();
    let mut severity = Severity::Warning;
    let mut source = String::new();
    let mut alerts = Vec::new();
    let mut disruptive = false;
    let mut auto_apply = false;
    let mut vars = Vec::new();
    let mut preconditions = Vec::new();
    let mut detect = None;
    let mut steps = None;
    let mut verify = Vec::new();
    let mut rollout = RolloutSpec::default();
    let mut remedy = None;
    let mut gather = Vec::new();
    let mut impact = None;
    let mut diagnosis = Vec::new();
    let mut follow_up = Vec::new();
    for (k, v) in entries {
        let key = k.as_str().unwrap_or("");
        match key {
            "id" => id = cx.typed::<At<String>>(v),
            "title" => title = cx.typed::<String>(v),
            "summary" => summary = cx.typed::<String>(v).unwrap_or_default(),
            "severity" => severity = cx.typed(v).unwrap_or(severity),
            "source" => source = cx.typed::<String>(v).unwrap_or_default(),
            "alerts" => alerts = decode_alerts(cx, v),
            "disruptive" => disruptive = cx.typed(v).unwrap_or(false),
            "auto_apply" => auto_apply = cx.typed(v).unwrap_or(false),
            "vars" => vars = decode_vars(cx, v),
            "preconditions" => preconditions = decode_probes(cx, v),
            "detect" => detect = Some(decode_probes(cx, v)),
            "steps" => steps = Some(decode_steps(cx, v)),
            "verify" => verify = decode_probes(cx, v),
            "rollout" => rollout = decode_rollout(cx, v),
            "remedy" => remedy = cx.typed::<String>(v),
            "gather" => gather = decode_gather(cx, v),
            "impact" => impact = cx.typed::<String>(v),
            "diagnosis" => diagnosis = cx.typed::<Vec<DiagnosisStep>>(v).unwrap_or_default(),
            "follow_up" => follow_up = cx.typed::<Vec<String>>(v).unwrap_or_default(),
            _ => cx.err(
                k.pos,
                format!(
                    "unknown playbook field `{}`",
                    k.scalar_text().unwrap_or_default()
                ),
                Some(suggest(key, TOP_KEYS)),
            ),
        }
    }
    if id.is_none() && !entries.iter().any(|(k, _)| k.as_str() == Some("id")) {
        cx.err(
            start,
            "missing field `id`",
            Some("add `id: my-fix` (lowercase letters, digits, dashes)".into()),
        );
    }
    if title.is_none() && !entries.iter().any(|(k, _)| k.as_str() == Some("title")) {
        cx.err(
            start,
            "missing field `title`",
            Some("add a one-line `title:`".into()),
        );
    }
    if steps.is_none() && remedy.is_none() {
        cx.err(
            start,
            "missing field `steps`",
            Some("a playbook needs at least one step (or, for detection only, a `remedy:`)".into()),
        );
    }
    let id = id?;
    if !id
        .value
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        || id.value.is_empty()
    {
        cx.err(
            id.pos,
            format!("invalid playbook id `{}`", id.value),
            Some("use lowercase letters, digits and dashes".into()),
        );
    }
    Some(Playbook {
        file: path.to_path_buf(),
        hash: hex(&Sha256::digest(text.as_bytes())),
        id: id.value,
        title: title?,
        summary,
        severity,
        source,
        alerts,
        auto_apply,
        disruptive,
        vars,
        preconditions,
        detect,
        steps: steps.unwrap_or_default(),
        verify,
        rollout,
        remedy,
        gather,
        impact,
        diagnosis,
        follow_up,
        uses_inventory_hostnames: false,
        secret_leaks: BTreeMap::new(),
    })
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_gather(cx: &mut Ctx, node: &Node) -> Vec<Gather> {
    let Some(entries) = node.entries() else {
        cx.err(
            node.pos,
            format!(
                "`gather` is a mapping of names to sources, found {}",
                node.type_name()
            ),
            None,
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, v) in entries {
        let Some(name) = k
            .as_str()
            .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        else {
            cx.err(
                k.pos,
                "a gathered value's name uses letters, digits and `_`",
                None,
            );
            continue;
        };
        let Some(raw) = cx.typed::<RawGather>(v) else {
            continue;
        };
        let source = match (raw.file, raw.command, raw.value) {
            (Some(f), None, None) => GatherSource::File(f),
            (None, Some(c), None) => GatherSource::Command(c),
            (None, None, Some(t)) => GatherSource::Value(t),
            _ => {
                cx.err(
                    v.pos,
                    format!("`{name}` needs exactly one of `file`, `command` or `value`"),
                    None,
                );
                continue;
            }
        };
        out.push(Gather {
            name: name.to_string(),
            pos: k.pos,
            source,
            regex: raw.regex,
        });
    }
    out
}

fn decode_rollout(cx: &mut Ctx, node: &Node) -> RolloutSpec {
    let spec: RolloutSpec = cx.typed(node).unwrap_or_default();
    type Check = fn(&str) -> Result<(), String>;
    let checks: [(&Option<At<String>>, Check); 4] = [
        (&spec.serial, |s| {
            crate::rollout::Serial::parse(s).map(|_| ())
        }),
        (&spec.max_fail, |s| {
            crate::rollout::MaxFail::parse(s).map(|_| ())
        }),
        (&spec.max_fail_per_batch, |s| {
            crate::rollout::MaxFail::parse(s).map(|_| ())
        }),
        (&spec.pause, |s| {
            crate::rollout::parse_duration(s).map(|_| ())
        }),
    ];
    for (v, check) in checks {
        if let Some(v) = v
            && let Err(e) = check(&v.value)
        {
            cx.err(
                v.pos,
                e,
                Some("e.g. `serial: \"1,10%,100%\"`, `max_fail: \"5%\"`, `pause: 30s`".into()),
            );
        }
    }
    spec
}

fn decode_alerts(cx: &mut Ctx, node: &Node) -> Vec<AlertMatch> {
    let Kind::Seq(items) = &node.kind else {
        cx.err(
            node.pos,
            format!("`alerts` is a list, found {}", node.type_name()),
            None,
        );
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|n| match &n.kind {
            Kind::Str(s) => Some(AlertMatch {
                alertname: s.clone(),
                labels: Default::default(),
            }),
            _ => cx.typed::<AlertMatch>(n),
        })
        .collect()
}

fn decode_vars(cx: &mut Ctx, node: &Node) -> Vec<VarDef> {
    let Some(entries) = node.entries() else {
        cx.err(
            node.pos,
            format!(
                "`vars` is a mapping of names to defaults, found {}",
                node.type_name()
            ),
            None,
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, v) in entries {
        let Some(name) = k.as_str() else {
            cx.err(k.pos, "a variable name must be a string", None);
            continue;
        };
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || name.starts_with(|c: char| c.is_ascii_digit())
        {
            cx.err(
                k.pos,
                format!("invalid variable name `{name}`"),
                Some("use letters, digits and `_`".into()),
            );
            continue;
        }
        if template::BUILTIN_NAMES.contains(&name) {
            cx.err(
                k.pos,
                format!("`{name}` is a built-in name and cannot be a variable"),
                None,
            );
            continue;
        }
        // The long form: {default:, description:, secret:}
        let long = v.entries().is_some_and(|m| {
            !m.is_empty()
                && m.iter().all(|(k, _)| {
                    matches!(
                        k.as_str(),
                        Some("default" | "description" | "secret" | "choices")
                    )
                })
        });
        let mut def = VarDef {
            name: name.to_string(),
            pos: k.pos,
            default: v.to_json(),
            description: None,
            secret: false,
            choices: Vec::new(),
            gathered: false,
        };
        if long {
            def.default = v
                .get("default")
                .map_or(serde_json::Value::Null, Node::to_json);
            def.description = v.get("description").and_then(|d| cx.typed(d));
            def.secret = v.get("secret").and_then(|d| cx.typed(d)).unwrap_or(false);
            if let Some(c) = v.get("choices") {
                match c.to_json() {
                    serde_json::Value::Array(a) if !a.is_empty() => def.choices = a,
                    _ => cx.err(
                        c.pos,
                        format!("`{name}`: `choices` is a list of the values it may take"),
                        None,
                    ),
                }
                if !def.default.is_null()
                    && !def.choices.is_empty()
                    && !def.choices.contains(&def.default)
                {
                    cx.err(
                        v.get("default").map_or(k.pos, |d| d.pos),
                        format!("`{name}`: the default is not one of its `choices`"),
                        None,
                    );
                }
            }
        }
        out.push(def);
    }
    out
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProbe {
    name: Option<String>,
    when: Option<Text>,
    sysctl: Option<Text>,
    sysctl_persisted: Option<Text>,
    command: Option<At<Words>>,
    link: Option<Text>,
    path: Option<Text>,
    file: Option<Text>,
    route: Option<Text>,
    iptables: Option<At<Words>>,
    iptables_chain: Option<Text>,
    trace: Option<At<TraceSpec>>,
    drift: Option<Text>,
    // modifiers
    within: Option<At<bool>>,
    #[serde(rename = "where")]
    filter: Option<Text>,
    dev: Option<Text>,
    not_dev: Option<Text>,
    table: Option<Text>,
    chain: Option<Text>,
    // predicates
    exists: Option<At<bool>>,
    equals: Option<Text>,
    not_equals: Option<Text>,
    matches: Option<Text>,
    not_matches: Option<Text>,
    exit: Option<At<i32>>,
}

fn decode_probes(cx: &mut Ctx, node: &Node) -> Vec<Probe> {
    let Kind::Seq(items) = &node.kind else {
        cx.err(
            node.pos,
            format!("expected a list of probes, found {}", node.type_name()),
            None,
        );
        return Vec::new();
    };
    items.iter().filter_map(|n| decode_probe(cx, n)).collect()
}

fn decode_probe(cx: &mut Ctx, node: &Node) -> Option<Probe> {
    let raw: RawProbe = cx.typed(node)?;
    let pos = node.pos;
    let present: Vec<&str> = PROBE_SUBJECTS
        .iter()
        .copied()
        .filter(|k| node.get(k).is_some())
        .collect();
    if present.len() != 1 {
        let msg = if present.is_empty() {
            "a probe needs one subject".to_string()
        } else {
            format!("a probe has one subject, found {}", present.join(" and "))
        };
        cx.err(
            pos,
            msg,
            Some(format!("subjects: {}", PROBE_SUBJECTS.join(", "))),
        );
        return None;
    }
    let mut misplaced = |name: &str, v: &Option<Text>, allowed: bool| {
        if let (Some(t), false) = (v, allowed) {
            cx.err(
                t.pos,
                format!("`{name}` does not apply to a `{}` probe", present[0]),
                None,
            );
        }
    };
    let is_route = raw.route.is_some();
    let is_ipt = raw.iptables.is_some() || raw.iptables_chain.is_some();
    misplaced("dev", &raw.dev, is_route);
    misplaced("where", &raw.filter, is_route);
    misplaced("not_dev", &raw.not_dev, is_route);
    misplaced("table", &raw.table, is_route || is_ipt);
    misplaced("chain", &raw.chain, raw.iptables.is_some());
    if let (Some(w), false) = (&raw.within, is_route) {
        cx.err(w.pos, "`within` applies only to a `route` probe", None);
    }
    let filter = || Text {
        pos,
        value: "filter".to_string(),
    };
    let subject = if let Some(t) = raw.sysctl {
        Subject::Sysctl(t)
    } else if let Some(t) = raw.sysctl_persisted {
        Subject::SysctlPersisted(t)
    } else if let Some(c) = raw.command {
        Subject::Command(c)
    } else if let Some(t) = raw.link {
        Subject::Link(t)
    } else if let Some(t) = raw.path {
        Subject::Path(t)
    } else if let Some(t) = raw.file {
        Subject::File(t)
    } else if let Some(dest) = raw.route {
        Subject::Route {
            dest,
            within: raw.within.is_some_and(|w| w.value),
            dev: raw.dev,
            not_dev: raw.not_dev,
            table: raw.table,
            filter: raw.filter,
        }
    } else if let Some(rule) = raw.iptables {
        let Some(chain) = raw.chain else {
            cx.err(
                pos,
                "an `iptables` probe needs `chain`",
                Some("e.g. `chain: POSTROUTING`".into()),
            );
            return None;
        };
        Subject::Iptables {
            table: raw.table.unwrap_or_else(filter),
            chain,
            rule,
        }
    } else if let Some(chain) = raw.iptables_chain {
        Subject::IptablesChain {
            table: raw.table.unwrap_or_else(filter),
            chain,
        }
    } else if let Some(t) = raw.trace {
        Subject::Trace(t)
    } else if let Some(t) = raw.drift {
        Subject::Drift(t)
    } else {
        return None;
    };
    let mut preds = Vec::new();
    if let Some(b) = raw.exists {
        preds.push(Predicate::Exists(b.value));
    }
    if let Some(t) = raw.equals {
        preds.push(Predicate::Equals(t));
    }
    if let Some(t) = raw.not_equals {
        preds.push(Predicate::NotEquals(t));
    }
    if let Some(t) = raw.matches {
        preds.push(Predicate::Matches(t));
    }
    if let Some(t) = raw.not_matches {
        preds.push(Predicate::NotMatches(t));
    }
    if let Some(e) = raw.exit {
        if !matches!(subject, Subject::Command(_)) {
            cx.err(e.pos, "`exit` applies only to a `command` probe", None);
        }
        preds.push(Predicate::Exit(e.value));
    }
    if preds.len() > 1 {
        cx.err(
            pos,
            "a probe has at most one predicate",
            Some("predicates: exists, equals, not_equals, matches, not_matches, exit".into()),
        );
        return None;
    }
    let predicate = preds.pop().unwrap_or(match subject {
        Subject::Command(_) => Predicate::Exit(0),
        _ => Predicate::Exists(true),
    });
    Some(Probe {
        pos,
        name: raw.name,
        when: raw.when,
        subject,
        predicate,
    })
}

fn decode_steps(cx: &mut Ctx, node: &Node) -> Vec<Step> {
    let Kind::Seq(items) = &node.kind else {
        cx.err(
            node.pos,
            format!("`steps` is a list, found {}", node.type_name()),
            None,
        );
        return Vec::new();
    };
    if items.is_empty() {
        cx.err(
            node.pos,
            "`steps` is empty",
            Some("a playbook needs at least one step".into()),
        );
    }
    items.iter().filter_map(|n| decode_step(cx, n)).collect()
}

fn decode_step(cx: &mut Ctx, node: &Node) -> Option<Step> {
    let Some(entries) = node.entries() else {
        cx.err(
            node.pos,
            format!("a step is a mapping, found {}", node.type_name()),
            None,
        );
        return None;
    };
    let mut id = None;
    let mut name = None;
    let mut irreversible = None;
    let mut when = None;
    let mut only_if = Vec::new();
    let mut timeout = None;
    let mut run_on = None;
    let mut kind: Option<(&Node, &Node)> = None;
    let mut ok = true;
    for (k, v) in entries {
        let key = k.as_str().unwrap_or("");
        match key {
            "id" => id = cx.typed::<At<String>>(v),
            "name" => name = cx.typed::<String>(v),
            "irreversible" => irreversible = cx.typed::<String>(v),
            "when" => when = cx.typed::<Text>(v),
            "only_if" => only_if = decode_probes(cx, v),
            "timeout" => timeout = cx.typed::<u64>(v),
            "run_on" => run_on = cx.typed::<Text>(v),
            _ if STEP_KINDS.contains(&key) => {
                if let Some((first, _)) = kind {
                    cx.err(
                        k.pos,
                        format!(
                            "a step has one kind, found `{}` and `{key}`",
                            first.as_str().unwrap_or("")
                        ),
                        Some("split it into two steps".into()),
                    );
                    ok = false;
                } else {
                    kind = Some((k, v));
                }
            }
            _ => {
                let mut options: Vec<&str> = STEP_COMMON.to_vec();
                options.extend_from_slice(STEP_KINDS);
                cx.err(
                    k.pos,
                    format!("unknown step field `{key}`"),
                    Some(suggest(key, &options)),
                );
                ok = false;
            }
        }
    }
    let Some(id) = id else {
        if !entries.iter().any(|(k, _)| k.as_str() == Some("id")) {
            cx.err(
                node.pos,
                "missing field `id` in step",
                Some("give every step a unique `id:`".into()),
            );
        }
        return None;
    };
    let Some((kk, kv)) = kind else {
        if ok {
            cx.err(
                node.pos,
                format!("step `{}` has no kind", id.value),
                Some(format!("add one of: {}", STEP_KINDS.join(", "))),
            );
        }
        return None;
    };
    let kind = match kk.as_str().unwrap_or("") {
        "route" => StepKind::Route(cx.typed(kv)?),
        "iptables" => StepKind::Iptables(cx.typed(kv)?),
        "sysctl" => StepKind::Sysctl(cx.typed(kv)?),
        "limits" => StepKind::Limits(cx.typed(kv)?),
        "file_lines" => StepKind::FileLines(cx.typed(kv)?),
        "json" => StepKind::Json(cx.typed(kv)?),
        "file" => StepKind::File(cx.typed(kv)?),
        "path" => StepKind::Path(cx.typed(kv)?),
        "link" => StepKind::Link(cx.typed(kv)?),
        "service" => StepKind::Service(cx.typed(kv)?),
        "package" => StepKind::Package(cx.typed(kv)?),
        "command" => StepKind::Command(cx.typed(kv)?),
        "etcd" => StepKind::Etcd(cx.typed(kv)?),
        _ => return None,
    };
    if !ok {
        return None;
    }
    Some(Step {
        pos: node.pos,
        id: id.value,
        name,
        irreversible,
        when,
        only_if,
        timeout,
        run_on,
        kind,
    })
}

/// Checks across the whole playbook: ids, templates, regexes, undo coverage.
fn validate(cx: &mut Ctx, pb: &Playbook) {
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
fn check_route_filter(cx: &mut Ctx, w: &Text, known: &BTreeSet<String>) {
    let mut with_route = known.clone();
    with_route.insert("route".to_string());
    check_expr(cx, w, &with_route);
}

fn collect_strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_strings(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| collect_strings(x, out)),
        _ => {}
    }
}

fn words_texts(w: &At<Words>) -> Vec<Text> {
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
fn secret_safe_texts(k: &StepKind) -> Vec<Text> {
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

fn step_texts(k: &StepKind) -> Vec<Text> {
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

fn probe_texts(p: &Probe) -> Vec<Text> {
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
fn check_shell_scripts(cx: &mut Ctx, w: &At<Words>) {
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
fn leak(cx: &mut Ctx, pos: Pos, name: &str) {
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

fn check_names(cx: &mut Ctx, pos: Pos, names: BTreeSet<String>, known: &BTreeSet<String>) {
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

fn check_text(cx: &mut Ctx, t: &Text, known: &BTreeSet<String>) {
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

fn check_expr(cx: &mut Ctx, t: &Text, known: &BTreeSet<String>) {
    match template::check_expr(&t.value) {
        Ok(names) => check_names(cx, t.pos, names, known),
        Err(e) => cx.err(t.pos, format!("bad `when` expression: {e}"), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> String {
        match parse(Path::new("pb.yaml"), text) {
            Ok(_) => panic!("expected errors"),
            Err(d) => d.to_string(),
        }
    }

    const GOOD: &str = "id: demo
title: Demo
vars:
  iface: flannel.1
steps:
  - id: s1
    link: {name: \"{{ iface }}\", state: absent}
";

    #[test]
    fn a_huge_playbook_is_refused_before_parsing() {
        let huge = format!("{GOOD}summary: \"{}\"\n", "x".repeat(MAX_PLAYBOOK_BYTES));
        let e = errors(&huge);
        assert!(e.contains("playbook is larger than 1 MiB"), "{e}");
        assert!(e.contains("hint:"), "{e}");
    }

    #[test]
    fn a_secret_goes_only_bare_into_stdin_or_file_content() {
        let ok = "id: demo
title: Demo
vars:
  pw: {default: '', secret: true}
steps:
  - id: f
    file: {path: /etc/x, content: \"pw={{ pw }}\\n\"}
  - id: l
    file_lines: {path: /etc/y, lines: [{regexp: '^pw=', line: 'pw={{ pw }}'}]}
  - id: c
    command: {run: [sh, -c, 'cat >/etc/z'], stdin: '{{ pw }}', creates: /etc/z, undo: [rm, -f, /etc/z]}
";
        let pb = parse(Path::new("pb.yaml"), ok).expect("valid");
        assert!(!pb.secret_leaks.contains_key("pw"), "{:?}", pb.secret_leaks);
        for (from, to) in [
            (
                "content: \"pw={{ pw }}\\n\"",
                "content: \"pw={{ pw | reverse }}\"",
            ),
            (
                "stdin: '{{ pw }}'",
                "stdin: '{{ pw|replace(\"\", \" \") }}'",
            ),
            ("path: /etc/x", "path: '/etc/{{ pw }}'"),
            (
                "run: [sh, -c, 'cat >/etc/z']",
                "run: [sh, -c, 'cat >\"$1\"', sh, '{{ pw }}']",
            ),
            ("regexp: '^pw='", "regexp: '^{{ pw }}'"),
            ("  - id: f\n", "  - id: f\n    when: pw == 'x'\n"),
        ] {
            assert!(ok.contains(from), "{from}");
            let e = errors(&ok.replace(from, to));
            assert!(
                e.contains("secret variable `pw` is used where its value can leak"),
                "{to}: {e}"
            );
            assert!(e.contains("hint: a secret goes only into"), "{e}");
        }
        // Not declared secret: accepted, and the leaks are known for --secret-file.
        let plain = ok
            .replace(", secret: true", "")
            .replace("path: /etc/x", "path: '/etc/{{ pw }}'");
        let pb = parse(Path::new("pb.yaml"), &plain).expect("valid");
        assert_eq!(pb.secret_leaks["pw"].len(), 1);
        assert!(
            pb.secret_leaks["pw"][0].to_string().contains("pb.yaml:7:"),
            "{}",
            pb.secret_leaks["pw"][0]
        );
    }

    #[test]
    fn a_template_inside_a_shell_script_is_refused_unless_shell_quoted() {
        let text = "id: demo
title: Demo
vars:
  v: x
detect:
  - command: [sh, -c, 'test -e /x/{{ v }}']
    exit: 0
steps:
  - id: s1
    command:
      run: [bash, -ec, 'echo {{ v }}']
      unless: [timeout, '5', sh, -c, 'test -e /x/{{ v }}']
      undo: [sh, -c, 'rm -f /x/\"$1\"', sh, '{{ v }}']
";
        let e = errors(text);
        assert_eq!(e.matches("inside a shell script").count(), 3, "{e}");
        assert!(e.contains("hint: pass the value as an argument"), "{e}");
        assert!(e.contains("shell_quote"), "{e}");
        // As arguments, or quoted by the filter: accepted.
        let ok = text
            .replace("'test -e /x/{{ v }}'", "'test -e \"/x/$1\"', sh, '{{ v }}'")
            .replace("'echo {{ v }}'", "'echo {{ v | shell_quote }}'");
        parse(Path::new("pb.yaml"), &ok).expect("valid");
    }

    #[test]
    fn run_on_is_a_step_field_checked_like_any_template() {
        let text = "id: demo
title: Demo
steps:
  - id: s1
    run_on: kube_control_plane
    file: {path: \"/etc/x/{{ facts.hostname }}\", content: \"{{ delegate.name }}\"}
";
        let pb = parse(Path::new("pb.yaml"), text).expect("valid");
        assert_eq!(
            pb.steps[0].run_on.as_ref().map(|t| t.value.as_str()),
            Some("kube_control_plane")
        );
        let e = errors(&text.replace("kube_control_plane", "\"{{ nope }}\""));
        assert!(e.contains("nope"), "{e}");
        let e = errors(&text.replace("run_on", "run_onn"));
        assert!(e.contains("unknown step field `run_onn`"), "{e}");
        assert!(e.contains("run_on"), "{e}");
    }

    #[test]
    fn an_etcd_step_names_what_it_deletes_and_filters_by_key_value_json() {
        let text = "id: demo
title: Demo
steps:
  - id: s1
    etcd:
      endpoints: http://127.0.0.1:2379
      delete:
        prefix: /calico/
        where: \"json.node == facts.hostname and key is startingwith(value)\"
";
        parse(Path::new("pb.yaml"), text).expect("valid");
        let e = errors(&text.replace("facts.hostname", "nodez"));
        assert!(e.contains("nodez"), "{e}");
        let e = errors(&text.replace("        prefix: /calico/\n", "").replace(
            "        where: \"json.node == facts.hostname and key is startingwith(value)\"\n",
            "        keys: []\n",
        ));
        assert!(e.contains("etcd step `s1` deletes nothing"), "{e}");
        assert!(e.contains("hint:"), "{e}");
    }

    #[test]
    fn a_gathered_variable_comes_from_the_node_and_has_no_default() {
        let ok = "id: g\ntitle: G\nvars:\n  net:\n    description: the network\n\
                  gather:\n  net: {file: /run/flannel/subnet.env, regex: 'NET=(\\S+)'}\n  \
                  sub: {value: \"{{ net | network }}\"}\n\
                  steps:\n  - id: s\n    route: {dest: \"{{ net }}\", within: true, where: \"route.dev != 'x'\", state: absent}\n";
        let pb = parse(Path::new("g.yaml"), ok).expect("valid");
        assert!(pb.vars[0].gathered);
        // A default would be one site's value, applied wherever the read finds nothing.
        let defaulted = ok.replace(
            "    description: the network\n",
            "    default: 10.244.0.0/16\n",
        );
        let e = errors(&defaulted);
        assert!(
            e.contains("`net` is gathered from each host (`gather: net`): it has no default"),
            "{e}"
        );
        assert!(e.contains("set it with `-e net=...`"), "{e}");
        // Preconditions run before anything is gathered.
        let early = ok.replace(
            "steps:",
            "preconditions:\n  - {path: \"{{ net }}\"}\nsteps:",
        );
        assert!(
            errors(&early).contains("a precondition cannot use `net`"),
            "{}",
            errors(&early)
        );
        // A route's `where` is an expression that sees `route`; a probe's `when` too is
        // checked before any host.
        let bad_where = ok.replace("route.dev != 'x'", "rout.dev != 'x'");
        assert!(errors(&bad_where).contains("undefined variable `rout`"));
        let bad_when = ok.replace(
            "steps:",
            "verify:\n  - {path: /x, when: \"nosuch\"}\nsteps:",
        );
        assert!(errors(&bad_when).contains("undefined variable `nosuch`"));
    }

    #[test]
    fn an_etcd_group_needs_one_capture_and_its_where_sees_the_group() {
        let pb = |group: &str, filter: &str| {
            format!(
                "id: demo\ntitle: Demo\nsteps:\n  - id: s1\n    etcd:\n      endpoints: http://127.0.0.1:2379\n      delete:\n        prefix: /calico\n        group: '{group}'\n        where: \"{filter}\"\n"
            )
        };
        let ok = pb(
            "^/calico/(?:bgp/)?v1/host/([^/]+)/",
            "group in groups and keys and json and listed",
        );
        parse(Path::new("pb.yaml"), &ok).expect("valid");
        let none = errors(&pb("^/calico/v1/host/", "group != ''"));
        assert!(none.contains("exactly one capture group"), "{none}");
        let two = errors(&pb("^/calico/(v1|bgp)/host/([^/]+)/", "group != ''"));
        assert!(
            two.contains("exactly one capture group") && two.contains("(?:"),
            "{two}"
        );
        let bad = errors(&pb("^/calico/(", "group != ''"));
        assert!(bad.contains("invalid regex"), "{bad}");
        // A group's `where` sees the group, not one key.
        let key = errors(&pb("^/calico/v1/host/([^/]+)/", "key != ''"));
        assert!(key.contains("key"), "{key}");
    }

    #[test]
    fn an_etcd_group_by_and_rewrite_are_checked_at_load() {
        let pb = |extra: &str| {
            format!(
                "id: demo\ntitle: Demo\nsteps:\n  - id: s1\n    etcd:\n      endpoints: http://127.0.0.1:2379\n{extra}      delete:\n        prefix: /calico/\n        group_by: \"key | calico_owner(json)\"\n        where: \"group in groups and keys and json and listed\"\n        rewrite: \"json | calico_release_block(['ipip-tunnel-addr-' ~ group]) if key is startingwith('/calico/ipam/') else none\"\n"
            )
        };
        parse(Path::new("pb.yaml"), &pb("")).expect("valid");
        parse(Path::new("pb.yaml"), &pb("      api: 2\n")).expect("valid on v2 too");
        let both = errors(&pb("").replace(
            "        group_by:",
            "        group: '^/calico/([^/]+)'\n        group_by:",
        ));
        assert!(both.contains("both `group` and `group_by`"), "{both}");
        // `group_by` sees one key, not a group.
        let bad = errors(&pb("").replace("key | calico_owner(json)", "group | calico_owner(json)"));
        assert!(bad.contains("group"), "{bad}");
        let unknown = errors(&pb("").replace("else none", "else nothing_here"));
        assert!(unknown.contains("nothing_here"), "{unknown}");
    }

    #[test]
    fn a_variable_s_choices_are_a_list_holding_its_default() {
        let pb = |choices: &str| {
            format!(
                "id: demo\ntitle: Demo\nvars:\n  mode:\n    default: auto\n    choices: {choices}\nsteps:\n  - id: s\n    link: {{name: \"x{{{{ mode }}}}\", state: absent}}\n"
            )
        };
        let ok = parse(Path::new("pb.yaml"), &pb("[auto, v3]")).expect("valid");
        assert_eq!(ok.vars[0].choices.len(), 2);
        let missing = errors(&pb("[v3, v1]"));
        assert!(
            missing.contains("the default is not one of its `choices`"),
            "{missing}"
        );
        let scalar = errors(&pb("v3"));
        assert!(scalar.contains("`choices` is a list"), "{scalar}");
    }

    #[test]
    fn an_iptables_step_does_one_thing_and_names_its_chain() {
        let pb = |spec: &str| {
            format!("id: demo\ntitle: Demo\nsteps:\n  - id: s\n    iptables: {{{spec}}}\n")
        };
        parse(Path::new("pb.yaml"), &pb("chain: FORWARD, rule: -j ACCEPT")).expect("valid");
        parse(Path::new("pb.yaml"), &pb("flush: true")).expect("a whole table");
        let two = errors(&pb("chain: FORWARD, rule: -j ACCEPT, policy: ACCEPT"));
        assert!(
            two.contains("more than one of `rule`, `flush: true` and `policy`"),
            "{two}"
        );
        let none = errors(&pb("chain: FORWARD"));
        assert!(none.contains("has none of"), "{none}");
        let chainless = errors(&pb("rule: -j ACCEPT"));
        assert!(
            chainless.contains("a `rule` needs its `chain`"),
            "{chainless}"
        );
        let policy = errors(&pb("policy: ACCEPT"));
        assert!(policy.contains("a `policy` needs its `chain`"), "{policy}");
    }

    #[test]
    fn a_playbook_reading_inventory_hostnames_says_so() {
        let pb = parse(Path::new("pb.yaml"), GOOD).expect("valid");
        assert!(!pb.uses_inventory_hostnames);
        let text = GOOD.replace(
            "state: absent}",
            "state: absent}\n    when: \"facts.hostname in inventory_hostnames\"",
        );
        let pb = parse(Path::new("pb.yaml"), &text).expect("valid");
        assert!(pb.uses_inventory_hostnames);
    }

    #[test]
    fn a_good_playbook_loads() {
        let pb = parse(Path::new("pb.yaml"), GOOD).expect("valid");
        assert_eq!(pb.id, "demo");
        assert_eq!(pb.steps.len(), 1);
        assert_eq!(pb.vars[0].default, serde_json::json!("flannel.1"));
    }

    #[test]
    fn every_error_is_reported_at_once_with_position_and_hint() {
        let text = "id: demo
title: Demo
stepz: []
vars:
  iface: eth0
steps:
  - id: s1
    link: {name: \"{{ ifac }}\", stat: absent}
  - id: s2
    sysctl: {key: net.ipv4.ip_forward, value: 1, persist: maybe}
  - id: s3
    routes: {dest: 10.0.0.0/8}
";
        assert_eq!(
            errors(text),
            "error: unknown playbook field `stepz`
 --> pb.yaml:3:1
  |
3 | stepz: []
  | ^^^^^
  = hint: did you mean `steps`?

error: unknown field `stat`, expected one of `name`, `state`, `kind`, `args`
 --> pb.yaml:8:32
  |
8 |     link: {name: \"{{ ifac }}\", stat: absent}
  |                                ^^^^
  = hint: did you mean `state`?

error: invalid type: string \"maybe\", expected a boolean
  --> pb.yaml:10:59
   |
10 |     sysctl: {key: net.ipv4.ip_forward, value: 1, persist: maybe}
   |                                                           ^^^^^

error: unknown step field `routes`
  --> pb.yaml:12:5
   |
12 |     routes: {dest: 10.0.0.0/8}
   |     ^^^^^^
   = hint: did you mean `route`?

error: 4 problems found"
        );
    }

    #[test]
    fn templates_are_checked_before_any_host() {
        let text = "id: demo
title: Demo
vars:
  iface: eth0
steps:
  - id: s1
    link: {name: \"{{ ifac }}\", state: absent}
  - id: s2
    link: {name: \"{{ iface \", state: absent}
";
        let e = errors(text);
        assert!(
            e.contains("error: undefined variable `ifac`\n --> pb.yaml:7:18"),
            "{e}"
        );
        assert!(e.contains("= hint: did you mean `iface`?"), "{e}");
        assert!(e.contains("error: bad template: syntax error"), "{e}");
        assert!(e.contains("--> pb.yaml:9:18"), "{e}");
    }

    #[test]
    fn missing_fields_and_bad_yaml() {
        assert_eq!(
            errors("title: x\n"),
            "error: missing field `id`
 --> pb.yaml:1:1
  |
1 | title: x
  | ^^^^^
  = hint: add `id: my-fix` (lowercase letters, digits, dashes)

error: missing field `steps`
 --> pb.yaml:1:1
  |
1 | title: x
  | ^^^^^
  = hint: a playbook needs at least one step (or, for detection only, a `remedy:`)

error: 2 problems found"
        );
        let e = errors("id: x\ntitle: [unclosed\n");
        assert!(e.starts_with("error: "), "{e}");
        assert!(e.contains("pb.yaml:"), "{e}");
        assert!(e.contains("hint: the playbook is not valid YAML"), "{e}");
    }

    #[test]
    fn undo_is_required_for_commands() {
        let text = "id: demo\ntitle: Demo\nsteps:\n  - id: c\n    command: {run: [true]}\n";
        let e = errors(text);
        assert!(
            e.starts_with("error: step `c` cannot be undone\n --> pb.yaml:4:5"),
            "{e}"
        );
        assert!(
            e.contains("hint: add `undo:` to the command, or `irreversible: \"<why>\"`"),
            "{e}"
        );
    }

    #[test]
    fn probes_have_one_subject_and_one_predicate() {
        let text = "id: demo\ntitle: Demo\ndetect:\n  - {sysctl: a.b, link: x}\n  - {sysctl: a.b, equals: '1', matches: '1'}\n  - {drift: nope}\nsteps:\n  - id: s\n    link: {name: x, state: absent}\n";
        let e = errors(text);
        assert!(
            e.contains("error: a probe has one subject, found sysctl and link"),
            "{e}"
        );
        assert!(
            e.contains("error: a probe has at most one predicate"),
            "{e}"
        );
        assert!(e.contains("error: `drift` names no step `nope`"), "{e}");
    }

    #[test]
    fn every_shipped_playbook_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks");
        let files = crate::playbook::discover(&dir);
        assert!(files.len() >= 6);
        for f in files {
            if let Err(e) = load(&f) {
                panic!("{}: {e}", f.display());
            }
        }
    }
}
