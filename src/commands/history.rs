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
        crate::outln!(
            "{}",
            report::json_text(&report::history::json(&runs, run_id.is_some()))?
        );
        return Ok(Exit::Ok);
    }
    match run_id {
        None => crate::out!("{}", report::history::table(&runs)),
        Some(_) => {
            for (info, records) in &runs {
                crate::out!("{}", report::history::run(info, records));
            }
        }
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
        host_lock_dir: transport::LOCK_DIR.into(),
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
        crate::outln!("{}", report::json_text(&doc)?);
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
