//! `kfix check` and `kfix check --all`: preconditions and detection only.

#[allow(unused_imports)]
use super::*;

/// What a check needs once its arguments are read: the playbooks, the hosts, the run
/// id and settings, and where its result goes.
struct Prepared {
    format: cli::Output,
    pbs: Vec<Arc<playbook::Playbook>>,
    hosts: Vec<inventory::Host>,
    id: String,
    s: Arc<RunSettings>,
}

/// Read the arguments, load the playbooks, select the hosts.
fn set_up(a: &cli::CheckArgs) -> Result<Prepared, Failure> {
    let t = &a.target;
    let format = match t.format() {
        Ok(cli::Output::Html(_) | cli::Output::Prom(_)) if !a.all => {
            return Err(Failure::usage(
                "`--output html|prom FILE` goes with `kfix check --all`",
            ));
        }
        Ok(f) => f,
        Err(e) => return Err(Failure::usage(e)),
    };
    let dir = t.dir.playbook_dir.as_deref();
    let mut pbs = Vec::new();
    if a.all {
        pbs.extend(all_playbooks(dir)?.into_iter().map(|(pb, _)| Arc::new(pb)));
    } else {
        for p in &a.playbooks {
            pbs.push(Arc::new(load_playbook(p, dir)?));
        }
    }
    if pbs.is_empty() {
        return Err(Failure::usage("no playbooks to check").hint("name playbooks, or pass --all"));
    }
    if a.npd && pbs.len() != 1 {
        return Err(Failure::usage("`kfix check --npd` checks one playbook")
            .hint("one rule per playbook: `kfix docs --npd` writes them"));
    }
    let refs: Vec<&playbook::Playbook> = pbs.iter().map(|p| &**p).collect();
    check_extra_vars(t, &refs)?;
    let (hosts, id, s) = prepare(t, None, &refs)?;
    Ok(Prepared {
        format,
        pbs,
        hosts,
        id,
        s,
    })
}

pub async fn check(a: cli::CheckArgs) -> Ends {
    let set = set_up(&a);
    if a.npd {
        // node-problem-detector takes the plugin's stdout as the condition's message:
        // what stops kfix before it checks says so there in one line too (the error
        // itself is on stderr), and is Unknown.
        return match set {
            Ok(Prepared { pbs, hosts, s, .. }) => Ok(npd_check(&pbs[0], hosts, s).await),
            Err(f) => {
                report::failure(&f);
                crate::outln!(
                    "{}",
                    crate::npd::not_checked(&a.playbooks.join(" "), f.exit)
                );
                Ok(crate::npd::UNKNOWN)
            }
        };
    }
    let Prepared {
        format,
        pbs,
        hosts,
        id,
        s,
    } = set?;
    let t = &a.target;
    // One connection per host for every playbook.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let reporter = tokio::spawn(report::progress(rx, false));
    let per_host = exec::check_matrix(pbs.clone(), hosts, s.clone(), tx).await;
    let _ = reporter.await;
    let _ = std::fs::remove_dir_all(&s.config.ssh.control_dir);
    let ids: Vec<String> = pbs.iter().map(|p| p.id.clone()).collect();
    if a.all {
        let m = matrix::Matrix::build(&id, &ids, per_host);
        match format {
            cli::Output::Json => crate::outln!("{}", report::json_text(&m)?),
            cli::Output::Human => crate::out!(
                "{}",
                m.render_text(matrix::terminal_width().unwrap_or(usize::MAX))
            ),
            cli::Output::Html(ref file) | cli::Output::Prom(ref file) => {
                // node_exporter (or a browser) may read at any moment: replace atomically.
                let text = match format {
                    cli::Output::Prom(_) => crate::alerts::textfile(&m, journal::now_unix()),
                    _ => m.render_html(&matrix::Page {
                        run_id: id.clone(),
                        inventory: t.inventory.as_ref().map(|p| p.display().to_string()),
                        severity: pbs
                            .iter()
                            .map(|p| (p.id.clone(), p.severity.as_str().to_string()))
                            .collect(),
                        runbook_base: a.runbook_base_url.clone().filter(|b| !b.is_empty()),
                    }),
                };
                if let Err(e) = crate::localfs::write_atomic(file, text.as_bytes(), 0o644) {
                    return Err(Failure::new(
                        Exit::WriteFailed,
                        format!("cannot write {}: {e}", file.display()),
                    ));
                }
                crate::out!(
                    "{}",
                    m.render_text(matrix::terminal_width().unwrap_or(usize::MAX))
                );
                crate::outln!("\nwrote {}", file.display());
            }
        }
        return Ok(match m.any_problem() {
            true => Exit::HostProblem,
            false => Exit::Ok,
        });
    }
    // Per playbook, the hosts' results.
    let all: Vec<(String, Vec<HostReport>)> = ids
        .iter()
        .enumerate()
        .map(|(i, pid)| {
            (
                pid.clone(),
                per_host
                    .iter()
                    .filter_map(|scan| scan.reports.get(i).cloned())
                    .collect(),
            )
        })
        .collect();
    let problem = all
        .iter()
        .flat_map(|(_, r)| r)
        .any(|h| h.status != Status::Healthy && h.status != Status::Skipped);
    match format {
        cli::Output::Json => {
            crate::outln!("{}", report::json_text(&report::checks::json(&id, &all))?)
        }
        _ => crate::out!("{}", report::checks::text(&all)),
    }
    Ok(match problem {
        true => Exit::HostProblem,
        false => Exit::Ok,
    })
}

/// `kfix check --npd ID`: node-problem-detector's plugin protocol, one line on stdout.
async fn npd_check(
    pb: &Arc<playbook::Playbook>,
    hosts: Vec<inventory::Host>,
    s: Arc<RunSettings>,
) -> Exit {
    if hosts.len() != 1 {
        crate::outln!(
            "{}: cannot tell: --npd checks one host, and {} are selected",
            pb.id,
            hosts.len()
        );
        return crate::npd::UNKNOWN;
    }
    // No progress: the plugin's stdout is its message, and nothing reads its stderr.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let per_host = exec::check_matrix(vec![pb.clone()], hosts, s.clone(), tx).await;
    let _ = drain.await;
    let _ = std::fs::remove_dir_all(&s.config.ssh.control_dir);
    let Some(r) = per_host.first().and_then(|h| h.reports.first()) else {
        crate::outln!("{}: cannot tell: no result", pb.id);
        return crate::npd::UNKNOWN;
    };
    let (code, line) = crate::npd::verdict(pb, r);
    crate::outln!("{line}");
    code
}
