//! Decoding a playbook's YAML tree into the typed model, field by field, recording
//! every problem with its position.

#[allow(unused_imports)]
use super::*;

pub(super) fn decode(cx: &mut Ctx, root: &Node, path: &Path, text: &str) -> Option<Playbook> {
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

pub(super) fn decode_gather(cx: &mut Ctx, node: &Node) -> Vec<Gather> {
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

pub(super) fn decode_rollout(cx: &mut Ctx, node: &Node) -> RolloutSpec {
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

pub(super) fn decode_alerts(cx: &mut Ctx, node: &Node) -> Vec<AlertMatch> {
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

pub(super) fn decode_vars(cx: &mut Ctx, node: &Node) -> Vec<VarDef> {
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
pub(in crate::playbook) struct RawProbe {
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

pub(super) fn decode_probes(cx: &mut Ctx, node: &Node) -> Vec<Probe> {
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

pub(super) fn decode_probe(cx: &mut Ctx, node: &Node) -> Option<Probe> {
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

pub(super) fn decode_steps(cx: &mut Ctx, node: &Node) -> Vec<Step> {
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

pub(super) fn decode_step(cx: &mut Ctx, node: &Node) -> Option<Step> {
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
    macro_rules! decode_kind {
        ($($variant:ident($spec:ty) = $name:literal),* $(,)?) => {
            match kk.as_str().unwrap_or("") {
                $($name => StepKind::$variant(cx.typed(kv)?),)*
                _ => return None,
            }
        };
    }
    let kind = crate::for_each_step_kind!(decode_kind);
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
