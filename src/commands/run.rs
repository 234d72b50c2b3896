//! `kfix run`: plan, confirm, apply in batches, report.

#[allow(unused_imports)]
use super::*;

/// The rollout policy: flags, else the playbook's `rollout:`, else the defaults.
pub(crate) fn policy(
    a: &cli::RunArgs,
    pb: &playbook::Playbook,
) -> Result<rollout::Policy, Failure> {
    // A value from the command line is a usage error; one from the playbook's
    // `rollout:` an invalid playbook.
    let bad = |flag: &str, e: String| {
        let typed = match flag {
            "--serial" => a.serial.is_some(),
            "--max-fail" => a.max_fail.is_some(),
            "--max-fail-per-batch" => a.max_fail_per_batch.is_some(),
            _ => a.pause.is_some(),
        };
        match typed {
            true => Failure::usage(format!("{flag}: {e}")),
            false => Failure::bad_input(format!(
                "rollout.{} in {}: {e}",
                flag.trim_start_matches("--").replace('-', "_"),
                pb.file.display()
            )),
        }
    };
    let pick = |flag: &Option<String>, spec: &Option<yaml::At<String>>| {
        flag.clone()
            .or_else(|| spec.as_ref().map(|s| s.value.clone()))
    };
    let serial = match pick(&a.serial, &pb.rollout.serial) {
        Some(s) => rollout::Serial::parse(&s).map_err(|e| bad("--serial", e))?,
        None if pb.disruptive => rollout::Serial::canary(),
        None => rollout::Serial::all(),
    };
    let max_fail = match pick(&a.max_fail, &pb.rollout.max_fail) {
        Some(s) => rollout::MaxFail::parse(&s).map_err(|e| bad("--max-fail", e))?,
        None => rollout::MaxFail::Count(0),
    };
    let max_fail_per_batch = pick(&a.max_fail_per_batch, &pb.rollout.max_fail_per_batch)
        .map(|s| rollout::MaxFail::parse(&s).map_err(|e| bad("--max-fail-per-batch", e)))
        .transpose()?;
    let pause = pick(&a.pause, &pb.rollout.pause)
        .map(|s| rollout::parse_duration(&s).map_err(|e| bad("--pause", e)))
        .transpose()?
        .unwrap_or_default();
    Ok(rollout::Policy {
        serial,
        max_fail,
        max_fail_per_batch,
        pause,
    })
}

pub(crate) fn run_doc(
    run_id: &str,
    pb: &str,
    dry_run: bool,
    hosts: &[HostReport],
    rollout: Option<&exec::Rollout>,
    journal: Option<String>,
) -> serde_json::Value {
    let doc = report::RunDoc {
        run_id,
        playbook: pb,
        dry_run,
        hosts,
        summary: report::summary(hosts),
        rollout,
        journal,
    };
    serde_json::to_value(&doc).unwrap_or_else(|e| {
        serde_json::json!({ "run_id": run_id, "error": format!("cannot serialise the report: {e}") })
    })
}

pub(crate) fn print_json(v: &serde_json::Value) -> Result<(), Failure> {
    crate::outln!("{}", report::json_text(v)?);
    Ok(())
}

/// The hosts `kfix run A B` found unreachable, with the first playbook that said so and
/// ssh's words: a later playbook's human output says "as above" instead of repeating
/// them (the JSON keeps every reason whole).
#[derive(Default)]
struct Unreachable(std::collections::BTreeMap<String, (String, Option<String>)>);

impl Unreachable {
    fn said_once(&mut self, playbook: &str, reports: &[HostReport]) -> Vec<HostReport> {
        reports
            .iter()
            .map(|r| {
                let mut r = r.clone();
                if r.status == Status::Unreachable {
                    match self.0.get(&r.host) {
                        Some((first, why)) if *why == r.reason => {
                            r.reason = Some(format!("as for `{first}` above"));
                        }
                        _ => {
                            self.0
                                .insert(r.host.clone(), (playbook.to_string(), r.reason.clone()));
                        }
                    }
                }
                r
            })
            .collect()
    }
}

/// What one playbook of `kfix run` ended with.
struct Outcome {
    code: Exit,
    /// Stop here: the operator declined, the rollout halted, or the run was interrupted.
    stop: bool,
    doc: Option<serde_json::Value>,
}

pub async fn run(a: cli::RunArgs) -> Ends {
    let t = &a.target;
    let mut pbs = Vec::new();
    for name in &a.playbooks {
        let pb = Arc::new(load_playbook(name, t.dir.playbook_dir.as_deref())?);
        if pb.steps.is_empty() {
            return Err(Failure::bad_input(format!(
                "`{}` is detection only: kfix has no safe automatic fix for it\n  = remedy: {}",
                pb.id,
                pb.remedy.as_deref().unwrap_or("(none given)"),
            ))
            .hint(format!(
                "`kfix check {}` shows which hosts have the problem",
                pb.id
            )));
        }
        let policy = policy(&a, &pb)?;
        pbs.push((pb, policy));
    }
    let refs: Vec<&playbook::Playbook> = pbs.iter().map(|(p, _)| &**p).collect();
    check_extra_vars(t, &refs)?;
    if !a.dry_run && !a.yes && !std::io::stdin().is_terminal() {
        return Err(Failure::new(
            Exit::NotConfirmed,
            "a real run needs confirmation, and stdin is not a terminal",
        )
        .hint("review with --dry-run, then pass --yes"));
    }
    let host_timeout = a
        .host_timeout
        .as_deref()
        .map(rollout::parse_duration)
        .transpose()
        .map_err(|e| Failure::usage(format!("--host-timeout: {e}")))?;
    let json = match t.format() {
        Ok(cli::Output::Human) => false,
        Ok(cli::Output::Json) => true,
        Ok(cli::Output::Html(_) | cli::Output::Prom(_)) => {
            return Err(Failure::usage(
                "`--output html|prom FILE` is for `kfix check --all`",
            ));
        }
        Err(e) => return Err(Failure::usage(e)),
    };
    let (hosts, first_id, base) = prepare(t, None, &refs)?;
    // One connection per host for every playbook of this command.
    let pool = (pbs.len() > 1).then(|| Arc::new(crate::pool::Pool::default()));
    let mut code = Exit::Ok;
    let mut docs = Vec::new();
    let several = pbs.len() > 1;
    let mut unreachable = Unreachable::default();
    for (i, (pb, policy)) in pbs.into_iter().enumerate() {
        let id = if i == 0 { first_id.clone() } else { run_id() };
        let s = Arc::new(RunSettings {
            run_id: id.clone(),
            policy,
            host_timeout,
            pool: pool.clone(),
            // One stop flag for the command: Ctrl-C stops it, not one playbook.
            stop: base.stop.clone(),
            ..RunSettings::new(base.config.clone(), &id)
        });
        if several && !json && i > 0 {
            crate::outln!();
        }
        match run_one(&a, pb, hosts.clone(), &id, s, json, &mut unreachable).await {
            Ok(o) => {
                code = code.worst(o.code);
                docs.extend(o.doc);
                if o.stop {
                    break;
                }
            }
            // Said now, before the reports of the playbooks run so far.
            Err(f) => {
                report::failure(&f);
                code = code.worst(f.exit);
                break;
            }
        }
    }
    if let Some(p) = &pool {
        p.close().await;
    }
    let _ = std::fs::remove_dir_all(&base.config.ssh.control_dir);
    if json {
        match &docs[..] {
            [one] if !several => print_json(one)?,
            _ => print_json(&serde_json::Value::Array(docs))?,
        }
    }
    Ok(code)
}

/// Plan one playbook, confirm, apply in batches, report.
async fn run_one(
    a: &cli::RunArgs,
    pb: Arc<playbook::Playbook>,
    hosts: Vec<inventory::Host>,
    id: &str,
    s: Arc<RunSettings>,
    json: bool,
    unreachable: &mut Unreachable,
) -> Result<Outcome, Failure> {
    let t = &a.target;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let reporter = tokio::spawn(report::progress(rx, false));
    let planned = exec::plan_all(pb.clone(), hosts, s.clone(), false, tx.clone()).await;
    let to_change = planned
        .iter()
        .filter(|p| p.report.status == Status::WouldChange)
        .count();
    let plan_reports: Vec<HostReport> = planned.iter().map(|p| p.report.clone()).collect();
    let mode = if a.dry_run { "dry-run" } else { "plan" };
    let mut journal_path = None;
    let mut rollout_info: Option<exec::Rollout> = None;
    let reports = if a.dry_run || to_change == 0 {
        drop(tx);
        let _ = reporter.await;
        exec::finish(planned).await
    } else {
        if !json && !a.yes {
            // The plan is shown before anything changes, for the operator to confirm.
            let _ = tx.send(exec::Event::Phase {
                name: "planned",
                hosts: 0,
            });
            crate::outln!("kfix run {} (run {id}, {mode})\n", pb.id);
            crate::out!("{}", report::render_hosts(&plan_reports, t.verbose));
        }
        if !a.yes && !confirm(to_change) {
            drop(tx);
            let _ = reporter.await;
            let _ = exec::finish(planned).await;
            report::note("not applied");
            return Ok(Outcome {
                code: Exit::NotConfirmed,
                stop: true,
                doc: None,
            });
        }
        // Every real run is journaled; undo data is durable before a host changes.
        let state = journal::state_dir(t.state_dir.as_deref());
        let origin = runner::Origin {
            operator: journal::operator(),
            inventory: t.inventory.clone(),
            limit: t.limit.clone(),
            ssh_config: t.ssh_config.clone(),
        };
        match runner::apply(pb.clone(), planned, s.clone(), &state, &origin, tx).await {
            Ok(done) => {
                let _ = reporter.await;
                rollout_info = Some(done.rollout);
                journal_path = Some(done.journal);
                done.reports
            }
            Err(e) => {
                let _ = reporter.await;
                return Err(Failure::new(Exit::HostProblem, e));
            }
        }
    };
    let halted = rollout_info.as_ref().is_some_and(|r| r.halted.is_some());
    let mut doc = None;
    if json {
        let jp = journal_path.as_ref().map(|p| p.display().to_string());
        doc = Some(run_doc(
            id,
            &pb.id,
            a.dry_run,
            &reports,
            rollout_info.as_ref(),
            jp,
        ));
    } else {
        let title = if a.dry_run || to_change == 0 {
            mode
        } else {
            "applied"
        };
        crate::outln!("kfix run {} (run {id}, {title})\n", pb.id);
        let shown = unreachable.said_once(&pb.id, &reports);
        crate::out!("{}", report::render_hosts(&shown, t.verbose));
        crate::outln!();
        crate::out!("{}", report::render_table(&shown));
        if let Some(why) = rollout_info.as_ref().and_then(|r| r.halted.as_ref()) {
            crate::outln!("rollout halted: {why}");
        }
        if let Some(p) = &journal_path {
            crate::outln!("journal: {}  (undo with: kfix rollback {id})", p.display());
        }
    }
    Ok(Outcome {
        code: exit_for(&reports),
        stop: halted || s.stop.load(std::sync::atomic::Ordering::SeqCst),
        doc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_hosts_error_is_said_once_per_run() {
        let r = |host: &str, status: Status, why: &str| HostReport {
            host: host.into(),
            status,
            reason: Some(why.into()),
            steps: vec![],
            duration_ms: 0,
            batch: None,
            verified: vec![],
        };
        let mut u = Unreachable::default();
        let first = u.said_once(
            "a",
            &[
                r("n1", Status::Unreachable, "refused"),
                r("n2", Status::Healthy, "ok"),
            ],
        );
        assert_eq!(first[0].reason.as_deref(), Some("refused"));
        let second = u.said_once(
            "b",
            &[
                r("n1", Status::Unreachable, "refused"),
                r("n2", Status::Unreachable, "timed out"),
            ],
        );
        assert_eq!(second[0].reason.as_deref(), Some("as for `a` above"));
        assert_eq!(
            second[1].reason.as_deref(),
            Some("timed out"),
            "a new error is said"
        );
        let third = u.said_once("c", &[r("n1", Status::Unreachable, "another error")]);
        assert_eq!(third[0].reason.as_deref(), Some("another error"));
    }
}
