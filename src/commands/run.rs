//! `kfix run`: plan, confirm, apply in batches, report.

#[allow(unused_imports)]
use super::*;

/// The rollout policy: flags, else the playbook's `rollout:`, else the defaults.
pub(crate) fn policy(a: &cli::RunArgs, pb: &playbook::Playbook) -> Result<rollout::Policy, u8> {
    let bad = |flag: &str, e: String| {
        eprintln!("error: {flag}: {e}");
        exit::BAD_INPUT
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

pub(crate) fn print_doc(
    run_id: &str,
    pb: &str,
    dry_run: bool,
    hosts: &[HostReport],
    rollout: Option<&engine::Rollout>,
    journal: Option<String>,
) {
    let doc = report::RunDoc {
        run_id,
        playbook: pb,
        dry_run,
        hosts,
        summary: report::summary(hosts),
        rollout,
        journal,
    };
    match serde_json::to_string_pretty(&doc) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: cannot serialise the report: {e}"),
    }
}

pub async fn run(a: cli::RunArgs) -> u8 {
    let t = &a.target;
    let pb = match load_playbook(&a.playbook, &t.dir.playbook_dir) {
        Ok(pb) => Arc::new(pb),
        Err(c) => return c,
    };
    if pb.steps.is_empty() {
        eprintln!(
            "error: `{}` is detection only: kfix has no safe automatic fix for it\n  = remedy: {}\n  = hint: `kfix check {}` shows which hosts have the problem",
            pb.id,
            pb.remedy.as_deref().unwrap_or("(none given)"),
            pb.id
        );
        return exit::BAD_INPUT;
    }
    if !a.dry_run && !a.yes && !std::io::stdin().is_terminal() {
        eprintln!(
            "error: a real run needs confirmation, and stdin is not a terminal\n  = hint: review with --dry-run, then pass --yes"
        );
        return exit::NOT_CONFIRMED;
    }
    let policy = match policy(&a, &pb) {
        Ok(p) => p,
        Err(c) => return c,
    };
    let host_timeout = match a
        .host_timeout
        .as_deref()
        .map(rollout::parse_duration)
        .transpose()
    {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: --host-timeout: {e}");
            return exit::BAD_INPUT;
        }
    };
    let (hosts, id, s) = match prepare(t, Some(policy)) {
        Ok(p) => p,
        Err(c) => return c,
    };
    let s = Arc::new(RunSettings {
        host_timeout,
        ..(*s).clone()
    });
    let json = match t.format() {
        Ok(cli::Output::Human) => false,
        Ok(cli::Output::Json) => true,
        Ok(cli::Output::Html(_) | cli::Output::Prom(_)) => {
            eprintln!("error: `--output html|prom FILE` is for `kfix check --all`");
            return exit::BAD_INPUT;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return exit::BAD_INPUT;
        }
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let reporter = tokio::spawn(report::progress(rx, false));
    let planned = engine::plan_all(pb.clone(), hosts, s.clone(), false, tx.clone()).await;
    let to_change = planned
        .iter()
        .filter(|p| p.report.status == Status::WouldChange)
        .count();
    let plan_reports: Vec<HostReport> = planned.iter().map(|p| p.report.clone()).collect();
    let mode = if a.dry_run { "dry-run" } else { "plan" };
    let mut journal_path = None;
    let mut rollout_info: Option<engine::Rollout> = None;
    let reports = if a.dry_run || to_change == 0 {
        drop(tx);
        let _ = reporter.await;
        engine::finish(planned).await
    } else {
        if !json && !a.yes {
            // The plan is shown before anything changes, for the operator to confirm.
            let _ = tx.send(engine::Event::Phase {
                name: "planned",
                hosts: 0,
            });
            println!("kfix run {} (run {id}, {mode})\n", pb.id);
            print!("{}", report::render_hosts(&plan_reports, t.verbose));
        }
        if !a.yes && !confirm(to_change) {
            drop(tx);
            let _ = reporter.await;
            let _ = engine::finish(planned).await;
            eprintln!("not applied");
            let _ = std::fs::remove_dir_all(&s.ssh.control_dir);
            return exit::NOT_CONFIRMED;
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
                eprintln!("error: {e}");
                let _ = std::fs::remove_dir_all(&s.ssh.control_dir);
                return exit::HOST_PROBLEM;
            }
        }
    };
    let _ = std::fs::remove_dir_all(&s.ssh.control_dir);
    if json {
        let jp = journal_path.as_ref().map(|p| p.display().to_string());
        print_doc(&id, &pb.id, a.dry_run, &reports, rollout_info.as_ref(), jp);
    } else {
        let title = if a.dry_run || to_change == 0 {
            mode
        } else {
            "applied"
        };
        println!("kfix run {} (run {id}, {title})\n", pb.id);
        print!("{}", report::render_hosts(&reports, t.verbose));
        println!();
        print!("{}", report::render_table(&reports));
        if let Some(why) = rollout_info.as_ref().and_then(|r| r.halted.as_ref()) {
            println!("rollout halted: {why}");
        }
        if let Some(p) = &journal_path {
            println!("journal: {}  (undo with: kfix rollback {id})", p.display());
        }
    }
    exit_for(&reports)
}
