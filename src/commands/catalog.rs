//! `kfix validate`, `list`, `docs` and `inventory`: what is in the playbooks and inventory.

#[allow(unused_imports)]
use super::*;

pub fn validate(paths: Vec<PathBuf>, dir: Option<&std::path::Path>) -> Ends {
    // A directory stands for the playbooks in it; none given: --playbook-dir's.
    let given: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let paths: Vec<PathBuf> = if paths.is_empty() {
        dir.map(playbook::discover).unwrap_or_default()
    } else {
        paths
            .into_iter()
            .flat_map(|p| {
                if p.is_dir() {
                    playbook::discover(&p)
                } else {
                    vec![p]
                }
            })
            .collect()
    };
    if paths.is_empty() {
        let place = if given.is_empty() {
            dir.map_or_else(
                || "(no --playbook-dir)".to_string(),
                |d| d.display().to_string(),
            )
        } else {
            given.join(", ")
        };
        return Err(
            Failure::bad_input(format!("no playbooks found in {place}")).hint(
                "pass playbook files or a directory of them (*.yaml, *.yml), or --playbook-dir",
            ),
        );
    }
    let mut bad = 0;
    for p in &paths {
        match playbook::load(p) {
            Ok(pb) => {
                let required: Vec<&str> = pb
                    .vars
                    .iter()
                    .filter(|v| v.required())
                    .map(|v| v.name.as_str())
                    .collect();
                crate::outln!(
                    "ok  {}  ({}, {} step{}{})",
                    p.display(),
                    pb.id,
                    pb.steps.len(),
                    if pb.steps.len() == 1 { "" } else { "s" },
                    if required.is_empty() {
                        String::new()
                    } else {
                        format!("; requires {}", required.join(", "))
                    }
                )
            }
            Err(d) => {
                bad += 1;
                report::note(&format!("{d}\n"));
            }
        }
    }
    match bad {
        0 => Ok(Exit::Ok),
        _ => Err(Failure::bad_input(format!(
            "{bad} of {} playbook(s) invalid",
            paths.len()
        ))),
    }
}

/// `kfix schema`: the playbook JSON Schema on stdout.
pub fn print_schema() -> Ends {
    crate::out!("{}", playbook::schema::schema_text());
    Ok(Exit::Ok)
}

/// The skeleton `kfix new` writes (`__ID__` and `__SCHEMA__` filled in).
const SKELETON: &str = include_str!("../playbook/skeleton.yaml");

/// The skeleton for a playbook id, naming a schema for editors.
pub fn skeleton(id: &str, schema_ref: &str) -> String {
    SKELETON
        .replace("__ID__", id)
        .replace("__SCHEMA__", schema_ref)
}

/// `kfix new ID`: DIR/ID.yaml, a commented skeleton that validates, created only if no
/// such file exists; and, unless `--schema-ref` names another, the schema beside it.
pub fn new_playbook(id: &str, dir: &std::path::Path, schema_ref: Option<&str>) -> Ends {
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(Failure::usage(format!(
            "invalid playbook id `{}`",
            report::printable(id, false)
        ))
        .hint("use lowercase letters, digits and dashes, e.g. `kfix new fix-conntrack-max`"));
    }
    let path = dir.join(format!("{id}.yaml"));
    let text = skeleton(id, schema_ref.unwrap_or("playbook.schema.json"));
    // The skeleton is a valid playbook: a kfix whose skeleton does not load is a bug.
    if let Err(d) = playbook::parse(&path, &text) {
        return Err(Failure::bad_input(format!(
            "kfix's own skeleton does not validate:\n{d}"
        )));
    }
    let write = |p: &std::path::Path, data: &str| {
        crate::localfs::create_new(p, 0o644).and_then(|mut f| {
            f.write_all(data.as_bytes())?;
            f.sync_all()
        })
    };
    if let Err(e) = write(&path, &text) {
        let f = Failure::new(
            Exit::WriteFailed,
            format!("cannot create {}: {e}", path.display()),
        );
        return Err(match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                f.hint("kfix new never writes over a file: choose another id or --dir")
            }
            _ => f,
        });
    }
    crate::outln!("wrote {}", path.display());
    if schema_ref.is_none() {
        let schema = dir.join("playbook.schema.json");
        let current = playbook::schema::schema_text();
        match std::fs::read_to_string(&schema) {
            Ok(old) if old == current => {}
            Ok(_) => report::note(&format!(
                "note: kept {} (written by another kfix version); `kfix schema > {}` refreshes it",
                schema.display(),
                schema.display()
            )),
            Err(_) => match write(&schema, &current) {
                Ok(()) => crate::outln!("wrote {} (for editors)", schema.display()),
                Err(e) => report::note(&format!(
                    "note: cannot write {}: {e}; `kfix schema` prints it",
                    schema.display()
                )),
            },
        }
    }
    crate::outln!(
        "next: edit it, then `kfix validate {}` and `kfix run {} --playbook-dir {} --dry-run`",
        path.display(),
        id,
        dir.display()
    );
    Ok(Exit::Ok)
}

/// `kfix docs --npd`: node-problem-detector's custom-plugin-monitor configuration for
/// every playbook, on stdout.
pub fn npd_monitor(kfix_path: &str, interval: &str, dir: Option<&std::path::Path>) -> Ends {
    if !kfix_path.starts_with('/') {
        return Err(Failure::usage(format!(
            "--kfix-path `{}` is not an absolute path",
            report::printable(kfix_path, false)
        ))
        .hint("node-problem-detector runs the plugin by its path, e.g. /usr/local/bin/kfix"));
    }
    if crate::rollout::parse_duration(interval).is_err() {
        return Err(Failure::usage(format!(
            "--interval `{}` is not a duration",
            report::printable(interval, false)
        ))
        .hint("e.g. 30s, 5m, 1h"));
    }
    let pbs = load_all(dir)?;
    let config = crate::npd::monitor_config(&pbs, kfix_path, interval);
    crate::outln!("{}", report::json_text(&config)?);
    Ok(Exit::Ok)
}

/// `kfix list`: every playbook, its severity and title, and where it comes from.
pub fn list(dir: Option<&std::path::Path>) -> Ends {
    for (pb, source) in all_playbooks(dir)? {
        crate::outln!(
            "{:<28} {:<9} {:<58} {}",
            pb.id,
            pb.severity.as_str(),
            pb.title,
            source.describe()
        );
    }
    Ok(Exit::Ok)
}

/// Variable names whose values are never printed by `kfix inventory`.
pub(crate) fn is_secret_name(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    ["pass", "secret", "token", "key", "credential"]
        .iter()
        .any(|w| k.contains(w))
        && !k.ends_with("_file")
}

pub fn list_inventory(inventory: Option<PathBuf>, limit: Option<String>, output: Format) -> Ends {
    let t = Target {
        inventory,
        limit,
        extra_vars: Vec::new(),
        secret_files: Vec::new(),
        ssh_config: None,
        forks: 1,
        user: None,
        private_key: None,
        connect_timeout: 1,
        max_handshakes: 1,
        command_timeout: 1,
        output: vec![
            if output == Format::Json {
                "json"
            } else {
                "human"
            }
            .to_string(),
        ],
        verbose: false,
        state_dir: None,
        dir: cli::DirArgs { playbook_dir: None },
    };
    let hosts = targets(&t)?;
    let masked = |vars: &inventory::HostVars| -> BTreeMap<String, serde_json::Value> {
        vars.iter()
            .map(|(k, v)| {
                let v = if is_secret_name(k) {
                    serde_json::Value::String("********".into())
                } else {
                    v.clone()
                };
                (k.clone(), v)
            })
            .collect()
    };
    if output == Format::Json {
        let doc: Vec<serde_json::Value> = hosts
            .iter()
            .map(|h| serde_json::json!({"host": h.name, "address": h.address(), "groups": h.groups, "vars": masked(&h.vars)}))
            .collect();
        crate::outln!("{}", report::json_text(&doc)?);
        return Ok(Exit::Ok);
    }
    for h in &hosts {
        crate::outln!(
            "{}  ({})  groups: {}",
            h.name,
            h.address(),
            h.groups.join(", ")
        );
        for (k, v) in masked(&h.vars) {
            crate::outln!("    {k} = {v}");
        }
    }
    crate::outln!("{}", crate::text::count(hosts.len(), "host"));
    Ok(Exit::Ok)
}

fn load_all(dir: Option<&std::path::Path>) -> Result<Vec<playbook::Playbook>, Failure> {
    all_playbooks(dir).map(|all| all.into_iter().map(|(pb, _)| pb).collect())
}

/// `kfix docs --alert-rules`: the Prometheus rule file, on stdout.
pub fn alert_rules_doc(
    base: Option<String>,
    for_: &str,
    inventory: Option<PathBuf>,
    dir: Option<&std::path::Path>,
) -> Ends {
    let Some(base) = base.filter(|b| !b.is_empty()) else {
        return Err(Failure::bad_input(
            "--alert-rules needs --runbook-base-url URL (or KFIX_RUNBOOK_BASE_URL)",
        )
        .hint("the URL where docs/runbooks is published, e.g. https://git.example.com/ops/kfix/-/blob/main/docs/runbooks"));
    };
    if crate::rollout::parse_duration(for_).is_err() {
        return Err(Failure::bad_input(format!(
            "--for {for_}: not a duration (e.g. 5m, 30s, 1h)"
        )));
    }
    let pbs = load_all(dir)?;
    let inventory = inventory.map_or_else(|| "INVENTORY".to_string(), |p| p.display().to_string());
    crate::out!("{}", crate::alerts::rules(&pbs, &base, for_, &inventory));
    Ok(Exit::Ok)
}

pub fn docs(out: &std::path::Path, dir: Option<&std::path::Path>) -> Ends {
    let pbs = load_all(dir)?;
    match show::write_pages(&pbs, out) {
        Ok(files) => {
            crate::outln!("wrote {} pages to {}", files.len(), out.display());
            Ok(Exit::Ok)
        }
        Err(e) => Err(Failure::new(
            Exit::WriteFailed,
            format!("cannot write runbooks to {}: {e}", out.display()),
        )),
    }
}
