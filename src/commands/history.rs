//! `kfix history` and `kfix rollback`: the run journal.

#[allow(unused_imports)]
use super::*;

pub fn history(run_id: Option<String>, state_dir: Option<PathBuf>, output: Format) -> Ends {
    let state = journal::state_dir(state_dir.as_deref());
    let paths = match &run_id {
        Some(id) => vec![journal::journal_path(&state, id)],
        None => journal::list(&state),
    };
    let mut runs = Vec::new();
    for p in &paths {
        match journal::read(p) {
            Ok(records) => runs.push((rollback::fold(&records).0, records)),
            Err(e) => {
                return Err(
                    Failure::bad_input(format!("cannot read {}: {e}", p.display()))
                        .hint("`kfix history` lists the recorded runs"),
                );
            }
        }
    }
    if output == Format::Json {
        let doc: Vec<serde_json::Value> = runs
            .iter()
            .map(|(info, records)| {
                let mut v = serde_json::to_value(info).unwrap_or_default();
                if run_id.is_some() {
                    v["records"] = serde_json::to_value(records).unwrap_or_default();
                }
                v
            })
            .collect();
        return match serde_json::to_string_pretty(&doc) {
            Ok(s) => {
                crate::outln!("{s}");
                Ok(Exit::Ok)
            }
            Err(e) => Err(Failure::new(Exit::WriteFailed, e.to_string())),
        };
    }
    if run_id.is_none() {
        crate::outln!(
            "{:<25} {:<12} {:<26} {:>5}  RESULT",
            "RUN",
            "OPERATOR",
            "PLAYBOOK",
            "HOSTS"
        );
    }
    for (info, records) in &runs {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for st in info.hosts.values() {
            *counts.entry(st.as_str()).or_insert(0) += 1;
        }
        let mut result: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
        if !info.finished {
            result.push("(did not finish: the controller stopped)".into());
        }
        if run_id.is_none() {
            crate::outln!(
                "{:<25} {:<12} {:<26} {:>5}  {}",
                info.run_id,
                info.operator,
                info.playbook,
                info.hosts.len(),
                result.join(", ")
            );
            continue;
        }
        crate::outln!(
            "run {}  playbook {} (sha256 {})  by {}",
            info.run_id,
            info.playbook,
            &info.playbook_hash[..12.min(info.playbook_hash.len())],
            info.operator
        );
        crate::outln!(
            "inventory {}  limit {}",
            info.inventory.as_deref().unwrap_or("(local host)"),
            info.limit.as_deref().unwrap_or("(all)")
        );
        for r in records {
            match r {
                journal::Record::Plan {
                    host, step, diff, ..
                } => {
                    crate::outln!("\n{host} {step}:");
                    for l in diff.lines() {
                        crate::outln!("    {l}");
                    }
                }
                journal::Record::OpDone {
                    host,
                    index,
                    ok,
                    error,
                    ..
                } => {
                    let what = if *ok {
                        "ok".to_string()
                    } else {
                        format!("FAILED: {}", error.as_deref().unwrap_or(""))
                    };
                    crate::outln!("  {host} op #{index}: {what}");
                }
                journal::Record::Undone {
                    host,
                    index,
                    ok,
                    by,
                    ..
                } => {
                    crate::outln!(
                        "  {host} op #{index}: undone by {by}{}",
                        if *ok { "" } else { " (FAILED)" }
                    );
                }
                journal::Record::HostDone {
                    host,
                    status,
                    reason,
                } => {
                    crate::outln!("  {host}: {status} {}", reason.as_deref().unwrap_or(""));
                }
                _ => {}
            }
        }
        crate::outln!("\nresult: {}", result.join(", "));
    }
    Ok(Exit::Ok)
}

/// The names of the run's hosts that `limit` selects, with `run --limit`'s patterns:
/// over the inventory the run used when it still holds every one of them (groups work),
/// else over their names alone. Warnings for parts that match nothing.
fn rollback_selection(
    limit: &str,
    inventory: Option<&str>,
    hosts: &[rollback::HostOps],
) -> Result<(std::collections::BTreeSet<String>, Vec<String>), String> {
    let names: Vec<&str> = hosts.iter().map(|h| h.host.as_str()).collect();
    let recorded = inventory
        .and_then(|p| crate::inventory::Inventory::load(std::path::Path::new(p)).ok())
        .filter(|inv| names.iter().all(|n| inv.host(n).is_some()));
    let inv =
        recorded.unwrap_or_else(|| crate::inventory::Inventory::of_names(names.iter().copied()));
    let (picked, warnings) = inv.select_warn(Some(limit))?;
    Ok((
        picked.into_iter().map(|h| h.name.clone()).collect(),
        warnings,
    ))
}

pub async fn rollback_run(a: cli::RollbackArgs) -> Ends {
    let state = journal::state_dir(a.state_dir.as_deref());
    let path = journal::journal_path(&state, &a.run_id);
    let records = match journal::read(&path) {
        Ok(r) => r,
        Err(e) => {
            return Err(Failure::bad_input(format!(
                "no journal for run `{}` ({}: {e})",
                a.run_id,
                path.display()
            ))
            .hint(
                "`kfix history` lists the recorded runs; pass --state-dir if they live elsewhere",
            ));
        }
    };
    let (info, hosts) = rollback::fold(&records);
    let hosts: Vec<rollback::HostOps> = match a.limit.as_deref() {
        None => hosts,
        Some(limit) => match rollback_selection(limit, info.inventory.as_deref(), &hosts) {
            Ok((picked, warnings)) => {
                for w in warnings {
                    report::note(&format!("warning: {w}"));
                }
                hosts
                    .into_iter()
                    .filter(|h| picked.contains(&h.host))
                    .collect()
            }
            Err(e) if e.starts_with("no hosts matched") => Vec::new(),
            Err(e) => return Err(Failure::bad_input(e)),
        },
    };
    if hosts.is_empty() {
        return Err(Failure::bad_input(format!(
            "run {} changed no host{}",
            a.run_id,
            if a.limit.is_some() {
                " matching --limit"
            } else {
                ""
            }
        )));
    }
    if !a.dry_run && !a.yes && !std::io::stdin().is_terminal() {
        return Err(Failure::new(
            Exit::NotConfirmed,
            "a rollback needs confirmation, and stdin is not a terminal",
        )
        .hint("review with --dry-run, then pass --yes"));
    }
    if !a.dry_run && !a.yes && !confirm(hosts.len()) {
        report::note("not rolled back");
        return Ok(Exit::NotConfirmed);
    }
    let id = run_id();
    let control_dir = control_dir(&id);
    let ssh = transport::SshOptions {
        config_file: a
            .ssh_config
            .clone()
            .or(info.ssh_config.as_ref().map(PathBuf::from)),
        connect_timeout: Duration::from_secs(a.connect_timeout),
        control_dir: control_dir.clone(),
        accept_new_host_keys: false,
        handshakes: transport::Handshakes::new(a.max_handshakes),
    };
    make_private_dir(&control_dir)?;
    let journal = if a.dry_run {
        None
    } else {
        match journal::Journal::append_to(&path) {
            Ok(j) => Some(Arc::new(j)),
            Err(e) => {
                return Err(Failure::new(
                    Exit::HostProblem,
                    format!("cannot append to {}: {e}", path.display()),
                ));
            }
        }
    };
    let mut secrets: Vec<(String, String)> = parse_extra_vars(&a.extra_vars)?
        .into_iter()
        .map(|(k, v)| (k, crate::template::json_text(&v)))
        .collect();
    secrets.extend(read_secret_files(&a.secret_files)?);
    let secrets = Arc::new(secrets);
    let sem = Arc::new(tokio::sync::Semaphore::new(a.forks.max(1)));
    let mut tasks = Vec::new();
    for h in hosts {
        let (sem, ssh, journal, run, secrets) = (
            sem.clone(),
            ssh.clone(),
            journal.clone(),
            info.run_id.clone(),
            secrets.clone(),
        );
        let timeout = Duration::from_secs(a.command_timeout);
        let dry = a.dry_run;
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await;
            rollback::rollback_host(&run, h, &ssh, timeout, dry, journal, &secrets).await
        }));
    }
    let mut reports = Vec::new();
    for t in tasks {
        if let Ok(r) = t.await {
            reports.push(r);
        }
    }
    let _ = std::fs::remove_dir_all(&control_dir);
    if let Some(j) = &journal {
        for r in &reports {
            let _ = j.record(&journal::Record::HostDone {
                host: r.host.clone(),
                status: r.status.as_str().to_string(),
                reason: r.reason.clone(),
            });
        }
    }
    if a.output == Format::Json {
        let mut summary: BTreeMap<&str, usize> = BTreeMap::new();
        for r in &reports {
            *summary.entry(r.status.as_str()).or_insert(0) += 1;
        }
        let doc = serde_json::json!({"rollback_of": info.run_id, "dry_run": a.dry_run, "hosts": reports, "summary": summary});
        match serde_json::to_string_pretty(&doc) {
            Ok(s) => crate::outln!("{s}"),
            Err(e) => return Err(Failure::new(Exit::WriteFailed, e.to_string())),
        }
    } else {
        crate::outln!(
            "kfix rollback {}{}\n",
            info.run_id,
            if a.dry_run { " (dry-run)" } else { "" }
        );
        for r in &reports {
            crate::outln!(
                "{}  {}  {}",
                r.host,
                r.status.as_str(),
                r.reason.as_deref().unwrap_or("")
            );
            for o in &r.operations {
                crate::outln!("    {o}");
            }
        }
    }
    Ok(match reports.iter().all(|r| r.status.is_ok()) {
        true => Exit::Ok,
        false => Exit::HostProblem,
    })
}
