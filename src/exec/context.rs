//! What a host's templates see, and where its data comes from: the inventory host as a
//! target (and the journal's record of it), the template context, the secret values
//! and their masking in a report.

#[allow(unused_imports)]
use super::*;

pub fn target_rec(h: &InvHost) -> TargetRec {
    TargetRec {
        local: h.is_local(),
        address: h.address().to_string(),
        port: h.port(),
        user: h.user().map(str::to_string),
        key_file: h.key_file().map(str::to_string),
        become_: h.become_(),
        become_user: h.become_user().map(str::to_string),
        jump: h.jump_hosts().unwrap_or_default(),
    }
}

/// Where and how to connect, from a journaled target.
pub fn target_from(t: &TargetRec) -> (Target, Become) {
    let target = if t.local {
        Target::Local
    } else {
        Target::Ssh {
            address: t.address.clone(),
            port: t.port,
            user: t.user.clone(),
            key_file: t.key_file.as_ref().map(std::path::PathBuf::from),
            jump: t.jump.clone(),
        }
    };
    (
        target,
        Become {
            enabled: t.become_,
            user: t.become_user.clone(),
        },
    )
}

pub(super) fn target_of(h: &InvHost) -> Target {
    if h.is_local() {
        Target::Local
    } else {
        Target::Ssh {
            address: h.address().to_string(),
            port: h.port(),
            user: h.user().map(str::to_string),
            key_file: h.key_file().map(std::path::PathBuf::from),
            jump: h.jump_hosts().unwrap_or_default(),
        }
    }
}

/// The template context: playbook defaults < inventory vars < extra vars, plus
/// built-ins (facts, inventory_hostname, groups, kfix).
pub fn context(
    pb: &Playbook,
    inv: &InvHost,
    facts: &crate::host::Facts,
    s: &RunSettings,
    gathered: serde_json::Map<String, serde_json::Value>,
) -> minijinja::Value {
    let mut m = serde_json::Map::new();
    for v in &pb.vars {
        m.insert(v.name.clone(), v.default.clone());
    }
    for (k, v) in &inv.vars {
        m.insert(k.clone(), v.clone());
    }
    for (k, v) in &s.config.extra_vars {
        m.insert(k.clone(), v.clone());
    }
    // A gathered variable is what the host says, unless the operator set it (then the
    // gathered value is theirs too).
    for v in pb.vars.iter().filter(|v| v.gathered) {
        if let Some(g) = gathered.get(&v.name) {
            m.insert(v.name.clone(), g.clone());
        }
    }
    m.insert("inventory_hostname".into(), inv.name.clone().into());
    m.insert("groups".into(), serde_json::json!(inv.groups));
    m.insert(
        "facts".into(),
        serde_json::to_value(facts).unwrap_or_default(),
    );
    m.insert(
        "kfix".into(),
        serde_json::json!({"run_id": s.run_id, "playbook": pb.id}),
    );
    m.insert("gathered".into(), serde_json::Value::Object(gathered));
    if let Some(Ok(names)) = s.inventory_hostnames.as_deref() {
        m.insert("inventory_hostnames".into(), serde_json::json!(names));
    }
    minijinja::Value::from(minijinja::value::Serde(serde_json::Value::Object(m)))
}

/// The playbook's `secret: true` variables and those given by `--secret-file`, as
/// (name, value rendered into commands) for this host, so reports and the journal can
/// mask them and no command carries one as an argument.
pub fn secrets(pb: &Playbook, inv: &InvHost, s: &RunSettings) -> Vec<(String, String)> {
    let mut names: Vec<&str> = pb
        .vars
        .iter()
        .filter(|v| v.secret)
        .map(|v| v.name.as_str())
        .collect();
    names.extend(s.config.secret_vars.iter().map(String::as_str));
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .filter_map(|name| {
            let default = pb.vars.iter().find(|v| v.name == name).map(|v| &v.default);
            let val = s
                .config
                .extra_vars
                .get(name)
                .or_else(|| inv.vars.get(name))
                .or(default)?;
            let t = crate::template::json_text(val);
            (!t.is_empty() && !val.is_null()).then(|| (name.to_string(), t))
        })
        .collect()
}

/// Replace every secret value in a report's text with `********`.
pub(super) fn redact(report: &mut HostReport, secrets: &[(String, String)]) {
    if secrets.is_empty() {
        return;
    }
    let mask = |s: &mut String| crate::secrets::mask(s, secrets);
    if let Some(r) = report.reason.as_mut() {
        mask(r);
    }
    for st in report.steps.iter_mut() {
        mask(&mut st.diff);
        st.commands.iter_mut().for_each(mask);
        st.operations.iter_mut().for_each(mask);
        if let Some(r) = st.reason.as_mut() {
            mask(r);
        }
    }
}
