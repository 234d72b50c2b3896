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

/// Exit codes (documented in docs/cli.md).
pub mod exit {
    pub const OK: u8 = 0;
    pub const HOST_PROBLEM: u8 = 1;
    /// A flag's value is not one the flag takes (clap's own usage errors are 2 too).
    pub const USAGE: u8 = 2;
    pub const BAD_INPUT: u8 = 3;
    pub const NOT_CONFIRMED: u8 = 4;
    pub const ROLLBACK_FAILED: u8 = 5;
    /// A report or page kfix was asked to write could not be written.
    pub const WRITE_FAILED: u8 = 6;
}

pub fn load_playbook(arg: &str, dir: Option<&std::path::Path>) -> Result<playbook::Playbook, u8> {
    playbook::resolve(arg, dir).map(|(pb, _)| pb).map_err(|d| {
        eprintln!("{d}");
        exit::BAD_INPUT
    })
}

/// Every playbook (built in, and `--playbook-dir`'s), or the error printed.
pub(crate) fn all_playbooks(
    dir: Option<&std::path::Path>,
) -> Result<Vec<(playbook::Playbook, playbook::Source)>, u8> {
    playbook::catalog(dir).map_err(|d| {
        eprintln!("{d}");
        exit::BAD_INPUT
    })
}

pub(crate) fn parse_extra_vars(v: &[String]) -> Result<BTreeMap<String, serde_json::Value>, u8> {
    let mut m = BTreeMap::new();
    for kv in v {
        // Ansible's other forms: `-e @vars.yml` and `-e '{"k": "v"}'` (a YAML mapping;
        // values typed as YAML 1.2 types them).
        let mapping = if let Some(path) = kv.strip_prefix('@') {
            Some(std::fs::read_to_string(path).map_err(|e| {
                eprintln!("error: `-e {kv}`: cannot read {path}: {e}");
                exit::BAD_INPUT
            })?)
        } else if kv.trim_start().starts_with('{') {
            Some(kv.clone())
        } else {
            None
        };
        if let Some(text) = mapping {
            let vars: BTreeMap<String, serde_json::Value> = serde_saphyr::from_str(&text)
                .map_err(|e| {
                    eprintln!(
                        "error: `-e {kv}` is not a mapping of variables: {e}\n  = hint: a YAML or JSON mapping, e.g. -e '{{\"flannel_iface\": \"flannel.1\"}}' or -e @vars.yml"
                    );
                    exit::BAD_INPUT
                })?;
            for (k, val) in vars {
                valid_var_name(&k, kv)?;
                m.insert(k, val);
            }
            continue;
        }
        let Some((k, val)) = kv.split_once('=') else {
            eprintln!(
                "error: `-e {kv}` is not KEY=VALUE\n  = hint: e.g. -e flannel_iface=flannel.1"
            );
            return Err(exit::BAD_INPUT);
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
fn valid_var_name(k: &str, given: &str) -> Result<(), u8> {
    let mut chars = k.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        eprintln!(
            "error: `-e {given}`: `{k}` is not a variable name\n  = hint: KEY=VALUE with KEY made of letters, digits and `_`, e.g. -e flannel_iface=flannel.1"
        );
        return Err(exit::BAD_INPUT);
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
) -> Result<(), u8> {
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
            eprintln!(
                "error: playbook `{}` needs `{}`{}, and nothing sets it for {}{more}\n  --> {}:{}:{}\n  = hint: -e {}=VALUE, or set it in the inventory (host or group vars)",
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
                v.name
            );
            return Err(exit::BAD_INPUT);
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
) -> Result<(), u8> {
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
            eprintln!(
                "error: playbook `{}`: `{}` is not one of `{}`'s values ({})\n  --> {}:{}:{}\n  = hint: -e {}={}",
                pb.id,
                report::printable(&said, false),
                v.name,
                choices.join(", "),
                pb.file.display(),
                v.pos.line,
                v.pos.col,
                v.name,
                choices.join("|")
            );
            return Err(exit::BAD_INPUT);
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
pub(crate) fn check_extra_vars(t: &Target, pbs: &[&playbook::Playbook]) -> Result<(), u8> {
    let vars = parse_extra_vars(&t.extra_vars)?;
    // YAML 1.1's booleans (Ansible's) are strings here, and a non-empty string is true.
    for (k, v) in &vars {
        if let Some(text) = v.as_str()
            && matches!(
                text.to_ascii_lowercase().as_str(),
                "yes" | "no" | "on" | "off" | "y" | "n"
            )
        {
            eprintln!(
                "warning: -e {k}={text} is the string \"{text}\" (kfix types values as YAML 1.2): a `when:` on it is true; write true or false"
            );
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
        eprintln!("{}", diag::Diagnostics(leaks));
        return Err(exit::BAD_INPUT);
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
        eprintln!(
            "error: `-e {k}`: no playbook of this run declares `{k}` ({})\n  = hint: {} (`kfix show {}` lists its variables)",
            ids.join(", "),
            playbook::suggest(&k, &declared),
            ids.first().copied().unwrap_or("ID")
        );
        return Err(exit::BAD_INPUT);
    }
    Ok(())
}

/// `--secret-file KEY=PATH`s: each file's contents (one trailing newline dropped) by key.
pub(crate) fn read_secret_files(v: &[String]) -> Result<BTreeMap<String, String>, u8> {
    let mut m = BTreeMap::new();
    for kp in v {
        let Some((k, path)) = kp.split_once('=') else {
            eprintln!(
                "error: `--secret-file {kp}` is not KEY=PATH\n  = hint: e.g. --secret-file etcd_password=/run/secrets/etcd"
            );
            return Err(exit::BAD_INPUT);
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            eprintln!("error: --secret-file {k}: cannot read {path}: {e}");
            exit::BAD_INPUT
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
pub(crate) fn load_inventory(t: &Target) -> Result<inventory::Inventory, u8> {
    Ok(match &t.inventory {
        Some(p) => inventory::Inventory::load(p).map_err(|errs| {
            eprintln!("{}", diag::Diagnostics(errs));
            exit::BAD_INPUT
        })?,
        None => inventory::Inventory::localhost(),
    })
}

/// Load the inventory (or the local host) and select hosts with --limit.
pub(crate) fn targets(t: &Target) -> Result<Vec<inventory::Host>, u8> {
    let inv = load_inventory(t)?;
    let (hosts, warnings) = inv.select_warn(t.limit.as_deref()).map_err(|e| {
        if e.contains("\n  = hint:") {
            eprintln!("error: {e}");
        } else {
            eprintln!("error: {e}\n  = hint: `kfix inventory -i INVENTORY --limit PATTERN` shows what a pattern selects");
        }
        exit::BAD_INPUT
    })?;
    for w in warnings {
        eprintln!("warning: {w}");
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

pub(crate) fn settings(t: &Target, run_id: &str) -> Result<RunSettings, u8> {
    let control_dir = control_dir(run_id);
    let mut extra_vars = parse_extra_vars(&t.extra_vars)?;
    let secret_files = read_secret_files(&t.secret_files)?;
    let secret_vars = secret_files.keys().cloned().collect();
    for (k, v) in secret_files {
        extra_vars.insert(k, serde_json::Value::String(v));
    }
    Ok(RunSettings {
        run_id: run_id.to_string(),
        forks: t.forks,
        ssh: transport::SshOptions {
            config_file: t.ssh_config.clone(),
            connect_timeout: Duration::from_secs(t.connect_timeout),
            control_dir,
            accept_new_host_keys: false,
        },
        command_timeout: Duration::from_secs(t.command_timeout),
        extra_vars,
        secret_vars,
        journal: None,
        policy: rollout::Policy {
            serial: rollout::Serial::all(),
            max_fail: rollout::MaxFail::Count(0),
            max_fail_per_batch: None,
            pause: Duration::ZERO,
        },
        stop: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        host_timeout: None,
        inventory: Arc::new(load_inventory(t)?),
        inventory_hostnames: None,
        pool: None,
    })
}

/// Create this run's private control-socket directory (with our pid in it), after
/// removing the directories of earlier runs whose process is gone (a killed controller).
pub(crate) fn make_control_dir(s: &RunSettings) -> Result<(), u8> {
    make_private_dir(&s.ssh.control_dir)
}

pub(crate) fn make_private_dir(dir: &std::path::Path) -> Result<(), u8> {
    remove_dead_control_dirs();
    create_private_dir(dir).map_err(|e| {
        eprintln!("error: cannot create {}: {e}", dir.display());
        exit::HOST_PROBLEM
    })
}

pub(crate) fn exit_for(hosts: &[HostReport]) -> u8 {
    if hosts.iter().any(|h| h.status == Status::RollbackFailed) {
        exit::ROLLBACK_FAILED
    } else if hosts.iter().all(|h| h.status.is_ok()) {
        exit::OK
    } else {
        exit::HOST_PROBLEM
    }
}

pub(crate) fn confirm(n: usize) -> bool {
    eprint!(
        "Apply these changes to {}? [y/N] ",
        crate::text::count(n, "host")
    );
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        return false;
    }
    matches!(line.trim(), "y" | "Y" | "yes" | "YES")
}

/// The hosts, a run id and the run's settings (with its private control directory).
/// Ctrl-C sets the stop flag (no new host starts); a second Ctrl-C exits at once.
pub(crate) fn prepare(
    t: &Target,
    policy: Option<rollout::Policy>,
    pbs: &[&playbook::Playbook],
) -> Result<(Vec<inventory::Host>, String, Arc<RunSettings>), u8> {
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
            eprintln!(
                "\ninterrupted: no new host will start; running hosts finish or roll back (Ctrl-C again to quit now)"
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
