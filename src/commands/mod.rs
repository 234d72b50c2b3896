//! The subcommands: shared set-up (targets, settings, the run id, confirmation) here,
//! one file per group of commands.

pub mod catalog;
pub mod check;
pub mod history;
pub mod run;
pub mod serve;

#[allow(unused_imports)]
pub(crate) use std::collections::BTreeMap;
#[allow(unused_imports)]
pub(crate) use std::io::{BufRead, IsTerminal, Write};
#[allow(unused_imports)]
pub(crate) use std::path::PathBuf;
#[allow(unused_imports)]
pub(crate) use std::sync::Arc;
#[allow(unused_imports)]
pub(crate) use std::time::Duration;

#[allow(unused_imports)]
pub(crate) use crate::cli::{self, Target};
#[allow(unused_imports)]
pub(crate) use crate::exec::{self, HostReport, RunSettings, Status};
#[allow(unused_imports)]
pub(crate) use crate::report::{self, Format};
#[allow(unused_imports)]
pub(crate) use crate::{
    diag, inventory, journal, matrix, playbook, rollback, rollout, runner, show, transport, yaml,
};

pub(crate) use crate::journal::run_id;
pub(crate) use crate::localfs::{control_dir, create_private_dir, remove_dead_control_dirs};

pub use crate::outcome::{Ends, Exit, Failure};

pub fn load_playbook(
    arg: &str,
    dir: Option<&std::path::Path>,
) -> Result<playbook::Playbook, Failure> {
    playbook::resolve(arg, dir)
        .map(|(pb, _)| pb)
        .map_err(Failure::located)
}

/// Every playbook (built in, and `--playbook-dir`'s), or the error printed.
pub(crate) fn all_playbooks(
    dir: Option<&std::path::Path>,
) -> Result<Vec<(playbook::Playbook, playbook::Source)>, Failure> {
    playbook::catalog(dir).map_err(Failure::located)
}

pub(crate) fn parse_extra_vars(
    v: &[String],
) -> Result<BTreeMap<String, serde_json::Value>, Failure> {
    let mut m = BTreeMap::new();
    for kv in v {
        // Ansible's other forms: `-e @vars.yml` and `-e '{"k": "v"}'` (a YAML mapping;
        // values typed as YAML 1.2 types them).
        let mapping =
            if let Some(path) = kv.strip_prefix('@') {
                Some(std::fs::read_to_string(path).map_err(|e| {
                    Failure::bad_input(format!("`-e {kv}`: cannot read {path}: {e}"))
                })?)
            } else if kv.trim_start().starts_with('{') {
                Some(kv.clone())
            } else {
                None
            };
        if let Some(text) = mapping {
            let vars: BTreeMap<String, serde_json::Value> = serde_saphyr::from_str(&text)
                .map_err(|e| {
                    Failure::bad_input(format!("`-e {kv}` is not a mapping of variables: {e}"))
                        .hint("a YAML or JSON mapping, e.g. -e '{\"flannel_iface\": \"flannel.1\"}' or -e @vars.yml")
                })?;
            for (k, val) in vars {
                valid_var_name(&k, kv)?;
                m.insert(k, val);
            }
            continue;
        }
        let Some((k, val)) = kv.split_once('=') else {
            return Err(Failure::bad_input(format!("`-e {kv}` is not KEY=VALUE"))
                .hint("e.g. -e flannel_iface=flannel.1"));
        };
        // Like YAML scalars: true/false and integers are typed, the rest are strings.
        let v = match val {
            "true" | "True" => serde_json::Value::Bool(true),
            "false" | "False" => serde_json::Value::Bool(false),
            _ => val.parse::<i64>().map_or_else(
                |_| serde_json::Value::String(val.to_string()),
                serde_json::Value::from,
            ),
        };
        let k = k.trim();
        valid_var_name(k, kv)?;
        m.insert(k.to_string(), v);
    }
    Ok(m)
}

/// A variable name: a letter or `_`, then letters, digits and `_`.
fn valid_var_name(k: &str, given: &str) -> Result<(), Failure> {
    let mut chars = k.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        return Err(
            Failure::bad_input(format!("`-e {given}`: `{k}` is not a variable name")).hint(
                "KEY=VALUE with KEY made of letters, digits and `_`, e.g. -e flannel_iface=flannel.1",
            ),
        );
    }
    Ok(())
}

/// A required variable (no default, not read from the node) must be set for every
/// selected host, by `-e`/`--secret-file` or the inventory: else nothing runs, rather
/// than a command run with `None` in it.
fn check_required(
    t: &Target,
    pbs: &[&playbook::Playbook],
    hosts: &[inventory::Host],
) -> Result<(), Failure> {
    let extra = parse_extra_vars(&t.extra_vars)?;
    check_choices(pbs, &extra, hosts)?;
    let given = given_names(t, &extra);
    for pb in pbs {
        for v in pb.vars.iter().filter(|v| v.required()) {
            if given.contains(&v.name) {
                continue;
            }
            let missing: Vec<&str> = hosts
                .iter()
                .filter(|h| h.vars.get(&v.name).is_none_or(|x| x.is_null()))
                .map(|h| h.name.as_str())
                .collect();
            if missing.is_empty() {
                continue;
            }
            let shown: Vec<&str> = missing.iter().take(10).copied().collect();
            let more = if missing.len() > 10 {
                format!(" and {} more", missing.len() - 10)
            } else {
                String::new()
            };
            return Err(Failure::bad_input(format!(
                "playbook `{}` needs `{}`{}, and nothing sets it for {}{more}\n  --> {}:{}:{}",
                pb.id,
                v.name,
                v.description
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default(),
                shown.join(", "),
                pb.file.display(),
                v.pos.line,
                v.pos.col,
            ))
            .hint(format!(
                "-e {}=VALUE, or set it in the inventory (host or group vars)",
                v.name
            )));
        }
    }
    Ok(())
}

/// A variable with `choices` takes one of them, from `-e` or the inventory: a typo is
/// an error, never a value that matches no step.
fn check_choices(
    pbs: &[&playbook::Playbook],
    extra: &BTreeMap<String, serde_json::Value>,
    hosts: &[inventory::Host],
) -> Result<(), Failure> {
    use crate::template::json_text;
    for pb in pbs {
        for v in pb.vars.iter().filter(|v| !v.choices.is_empty()) {
            // `-e etcd_api=3` (a number) is the choice "3".
            let allowed = |x: &serde_json::Value| {
                v.choices
                    .iter()
                    .any(|c| c == x || json_text(c) == json_text(x))
            };
            // `-e` wins over the inventory: only a host's value applies without it.
            let bad = match extra.get(&v.name) {
                Some(x) => (!allowed(x)).then(|| format!("-e {}={}", v.name, json_text(x))),
                None => hosts.iter().find_map(|h| {
                    h.vars
                        .get(&v.name)
                        .filter(|x| !allowed(x))
                        .map(|x| format!("{}={} for {} (inventory)", v.name, json_text(x), h.name))
                }),
            };
            let Some(said) = bad else { continue };
            let choices: Vec<String> = v.choices.iter().map(json_text).collect();
            return Err(Failure::bad_input(format!(
                "playbook `{}`: `{}` is not one of `{}`'s values ({})\n  --> {}:{}:{}",
                pb.id,
                report::printable(&said, false),
                v.name,
                choices.join(", "),
                pb.file.display(),
                v.pos.line,
                v.pos.col,
            ))
            .hint(format!("-e {}={}", v.name, choices.join("|"))));
        }
    }
    Ok(())
}

/// The names the operator sets: `-e`'s (`extra`, parsed) and `--secret-file`'s.
fn given_names(t: &Target, extra: &BTreeMap<String, serde_json::Value>) -> Vec<String> {
    let mut names: Vec<String> = extra.keys().cloned().collect();
    names.extend(
        t.secret_files
            .iter()
            .filter_map(|kp| kp.split_once('=').map(|(k, _)| k.trim().to_string())),
    );
    names
}

/// Every `-e`/`--secret-file` name must be a variable one of the run's playbooks
/// declares (or an `ansible_*` connection variable): a typo is an error with the
/// closest name, never a default quietly kept.
pub(crate) fn check_extra_vars(t: &Target, pbs: &[&playbook::Playbook]) -> Result<(), Failure> {
    let vars = parse_extra_vars(&t.extra_vars)?;
    // YAML 1.1's booleans (Ansible's) are strings here, and a non-empty string is true.
    for (k, v) in &vars {
        if let Some(text) = v.as_str()
            && matches!(
                text.to_ascii_lowercase().as_str(),
                "yes" | "no" | "on" | "off" | "y" | "n"
            )
        {
            report::note(&format!(
                "warning: -e {k}={text} is the string \"{text}\" (kfix types values as YAML 1.2): a `when:` on it is true; write true or false"
            ));
        }
    }
    let names = given_names(t, &vars);
    // A name given by --secret-file is secret in every playbook of the run: it must be
    // used only where `secret: true` could be (load checks those).
    let secret_names = given_names(t, &BTreeMap::new());
    let leaks: Vec<diag::Diagnostic> = pbs
        .iter()
        .flat_map(|p| {
            secret_names
                .iter()
                .flat_map(|n| p.secret_leaks.get(n).into_iter().flatten())
        })
        .cloned()
        .collect();
    if !leaks.is_empty() {
        return Err(Failure::located(diag::Diagnostics(leaks)));
    }
    let declared: Vec<&str> = pbs
        .iter()
        .flat_map(|p| p.vars.iter().map(|v| v.name.as_str()))
        .collect();
    for k in names {
        if k.starts_with("ansible_") || declared.contains(&k.as_str()) {
            continue;
        }
        let ids: Vec<&str> = pbs.iter().map(|p| p.id.as_str()).collect();
        return Err(Failure::bad_input(format!(
            "`-e {k}`: no playbook of this run declares `{k}` ({})",
            ids.join(", ")
        ))
        .hint(format!(
            "{} (`kfix show {}` lists its variables)",
            playbook::suggest(&k, &declared),
            ids.first().copied().unwrap_or("ID")
        )));
    }
    Ok(())
}

/// `--secret-file KEY=PATH`s: each file's contents (one trailing newline dropped) by key.
pub(crate) fn read_secret_files(v: &[String]) -> Result<BTreeMap<String, String>, Failure> {
    let mut m = BTreeMap::new();
    for kp in v {
        let Some((k, path)) = kp.split_once('=') else {
            return Err(
                Failure::bad_input(format!("`--secret-file {kp}` is not KEY=PATH"))
                    .hint("e.g. --secret-file etcd_password=/run/secrets/etcd"),
            );
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            Failure::bad_input(format!("--secret-file {k}: cannot read {path}: {e}"))
        })?;
        let text = text
            .strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(&text);
        m.insert(k.trim().to_string(), text.to_string());
    }
    Ok(m)
}

/// The inventory (or the local host).
pub(crate) fn load_inventory(t: &Target) -> Result<inventory::Inventory, Failure> {
    Ok(match &t.inventory {
        Some(p) => inventory::Inventory::load(p)
            .map_err(|errs| Failure::located(diag::Diagnostics(errs)))?,
        None => inventory::Inventory::localhost(),
    })
}

/// Load the inventory (or the local host) and select hosts with --limit.
pub(crate) fn targets(t: &Target) -> Result<Vec<inventory::Host>, Failure> {
    let inv = load_inventory(t)?;
    let (hosts, warnings) = inv.select_warn(t.limit.as_deref()).map_err(|e| {
        // The pattern's own errors may carry their hint.
        match e.split_once("\n  = hint: ") {
            Some((m, h)) => Failure::bad_input(m).hint(h),
            None => Failure::bad_input(e)
                .hint("`kfix inventory -i INVENTORY --limit PATTERN` shows what a pattern selects"),
        }
    })?;
    for w in warnings {
        report::note(&format!("warning: {w}"));
    }
    // -u / --private-key: defaults for hosts whose inventory names none.
    let mut hosts: Vec<inventory::Host> = hosts.into_iter().cloned().collect();
    for h in hosts.iter_mut() {
        if let Some(u) = &t.user
            && h.user().is_none()
        {
            h.vars.insert("ansible_user".into(), u.clone().into());
        }
        if let Some(k) = &t.private_key
            && h.key_file().is_none()
        {
            h.vars.insert(
                "ansible_ssh_private_key_file".into(),
                k.display().to_string().into(),
            );
        }
    }
    Ok(hosts)
}

/// The run's configuration from the command line, resolved once: variables (`-e`,
/// `--secret-file`), SSH options with a new private control directory for `run_id`,
/// timeouts, the inventory.
pub(crate) fn run_config(t: &Target, run_id: &str) -> Result<exec::RunConfig, Failure> {
    let mut extra_vars = parse_extra_vars(&t.extra_vars)?;
    let secret_files = read_secret_files(&t.secret_files)?;
    let secret_vars = secret_files.keys().cloned().collect();
    for (k, v) in secret_files {
        extra_vars.insert(k, serde_json::Value::String(v));
    }
    Ok(exec::RunConfig {
        forks: t.forks,
        ssh: transport::SshOptions {
            config_file: t.ssh_config.clone(),
            connect_timeout: Duration::from_secs(t.connect_timeout),
            control_dir: control_dir(run_id),
            accept_new_host_keys: false,
            handshakes: transport::Handshakes::new(t.max_handshakes),
            host_lock_dir: transport::LOCK_DIR.into(),
        },
        command_timeout: Duration::from_secs(t.command_timeout),
        extra_vars,
        secret_vars,
        inventory: Arc::new(load_inventory(t)?),
    })
}

/// A run's settings: its configuration (see [`run_config`]) and id.
pub(crate) fn settings(t: &Target, run_id: &str) -> Result<RunSettings, Failure> {
    Ok(RunSettings::new(Arc::new(run_config(t, run_id)?), run_id))
}

/// Create this run's private control-socket directory (with our pid in it), after
/// removing the directories of earlier runs whose process is gone (a killed controller).
pub(crate) fn make_control_dir(s: &RunSettings) -> Result<(), Failure> {
    make_private_dir(&s.config.ssh.control_dir)
}

pub(crate) fn make_private_dir(dir: &std::path::Path) -> Result<(), Failure> {
    remove_dead_control_dirs();
    create_private_dir(dir).map_err(|e| {
        Failure::new(
            Exit::HostProblem,
            format!("cannot create {}: {e}", dir.display()),
        )
    })
}

pub(crate) fn exit_for(hosts: &[HostReport]) -> Exit {
    if hosts.iter().any(|h| h.status == Status::RollbackFailed) {
        Exit::RollbackFailed
    } else if hosts.iter().all(|h| h.status.is_ok()) {
        Exit::Ok
    } else {
        Exit::HostProblem
    }
}

pub(crate) fn confirm(n: usize) -> bool {
    report::ask(&format!(
        "Apply these changes to {}?",
        crate::text::count(n, "host")
    ))
}

/// The hosts, a run id and the run's settings (with its private control directory).
/// Ctrl-C sets the stop flag (no new host starts); a second Ctrl-C exits at once.
pub(crate) fn prepare(
    t: &Target,
    policy: Option<rollout::Policy>,
    pbs: &[&playbook::Playbook],
) -> Result<(Vec<inventory::Host>, String, Arc<RunSettings>), Failure> {
    let hosts = targets(t)?;
    check_required(t, pbs, &hosts)?;
    let id = run_id();
    let mut s = settings(t, &id)?;
    if let Some(p) = policy {
        s.policy = p;
    }
    make_control_dir(&s)?;
    let stop = s.stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            report::note(
                "\ninterrupted: no new host will start; running hosts finish or roll back (Ctrl-C again to quit now)",
            );
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
    Ok((hosts, id, Arc::new(s)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_control_dir_is_new_private_and_never_one_prepared_for_us() {
        use std::os::unix::fs::PermissionsExt;
        let a = super::control_dir("20261205-000000-test");
        assert_ne!(a, super::control_dir("20261205-000000-test"), "random");
        super::create_private_dir(&a).expect("create");
        let meta = std::fs::metadata(&a).expect("meta");
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        // Somebody made the directory first (in a world-writable $TMPDIR): refused.
        let e = super::create_private_dir(&a).expect_err("exists");
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        std::fs::remove_dir_all(&a).expect("cleanup");
    }
}
