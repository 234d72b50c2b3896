//! `kfix validate`, `list`, `docs` and `inventory`: what is in the playbooks and inventory.

#[allow(unused_imports)]
use super::*;

pub fn validate(paths: Vec<PathBuf>, dir: Option<&std::path::Path>) -> u8 {
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
        eprintln!(
            "error: no playbooks found in {place}\n  = hint: pass playbook files or a directory of them (*.yaml, *.yml), or --playbook-dir"
        );
        return exit::BAD_INPUT;
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
                println!(
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
                eprintln!("{d}\n");
            }
        }
    }
    if bad > 0 {
        eprintln!("{bad} of {} playbook(s) invalid", paths.len());
        exit::BAD_INPUT
    } else {
        exit::OK
    }
}

/// `kfix list`: every playbook, its severity and title, and where it comes from.
pub fn list(dir: Option<&std::path::Path>) -> u8 {
    match all_playbooks(dir) {
        Ok(all) => {
            for (pb, source) in all {
                println!(
                    "{:<28} {:<9} {:<58} {}",
                    pb.id,
                    pb.severity.as_str(),
                    pb.title,
                    source.describe()
                );
            }
            exit::OK
        }
        Err(c) => c,
    }
}

/// Variable names whose values are never printed by `kfix inventory`.
pub(crate) fn is_secret_name(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    ["pass", "secret", "token", "key", "credential"]
        .iter()
        .any(|w| k.contains(w))
        && !k.ends_with("_file")
}

pub fn list_inventory(inventory: Option<PathBuf>, limit: Option<String>, output: Format) -> u8 {
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
    let hosts = match targets(&t) {
        Ok(h) => h,
        Err(c) => return c,
    };
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
        match serde_json::to_string_pretty(&doc) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("error: {e}"),
        }
        return exit::OK;
    }
    for h in &hosts {
        println!(
            "{}  ({})  groups: {}",
            h.name,
            h.address(),
            h.groups.join(", ")
        );
        for (k, v) in masked(&h.vars) {
            println!("    {k} = {v}");
        }
    }
    println!("{}", crate::report::count(hosts.len(), "host"));
    exit::OK
}

fn load_all(dir: Option<&std::path::Path>) -> Result<Vec<playbook::Playbook>, u8> {
    all_playbooks(dir).map(|all| all.into_iter().map(|(pb, _)| pb).collect())
}

/// `kfix docs --alert-rules`: the Prometheus rule file, on stdout.
pub fn alert_rules_doc(
    base: Option<String>,
    for_: &str,
    inventory: Option<PathBuf>,
    dir: Option<&std::path::Path>,
) -> u8 {
    let Some(base) = base.filter(|b| !b.is_empty()) else {
        eprintln!(
            "error: --alert-rules needs --runbook-base-url URL (or KFIX_RUNBOOK_BASE_URL)\n  = hint: the URL where docs/runbooks is published, e.g. https://git.example.com/ops/kfix/-/blob/main/docs/runbooks"
        );
        return exit::BAD_INPUT;
    };
    if crate::rollout::parse_duration(for_).is_err() {
        eprintln!("error: --for {for_}: not a duration (e.g. 5m, 30s, 1h)");
        return exit::BAD_INPUT;
    }
    match load_all(dir) {
        Ok(pbs) => {
            let inventory =
                inventory.map_or_else(|| "INVENTORY".to_string(), |p| p.display().to_string());
            print!("{}", crate::alerts::rules(&pbs, &base, for_, &inventory));
            exit::OK
        }
        Err(c) => c,
    }
}

pub fn docs(out: &std::path::Path, dir: Option<&std::path::Path>) -> u8 {
    let pbs = match load_all(dir) {
        Ok(p) => p,
        Err(c) => return c,
    };
    match show::write_pages(&pbs, out) {
        Ok(files) => {
            println!("wrote {} pages to {}", files.len(), out.display());
            exit::OK
        }
        Err(e) => {
            eprintln!("error: cannot write runbooks to {}: {e}", out.display());
            exit::WRITE_FAILED
        }
    }
}
