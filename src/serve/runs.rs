//! A run's life in `kfix serve`: its plan (read-only, in the background), the
//! automatic apply where allowed, and the apply of an approved plan (re-planned first;
//! applied only if the plan digest is the one approved).

#[allow(unused_imports)]
use super::*;

/// The dry-run of a record, kept in the record and in the journal (`kfix history`).
pub(super) async fn plan(app: &Arc<App>, id: &str) {
    let Some(mut r) = app.get(id) else { return };
    // At most max_plans at once, whatever arrives: the rest wait (in state planning).
    let permit = match app.plans.clone().try_acquire_owned() {
        Ok(p) => p,
        Err(_) => {
            app.say(
                Decision::new(
                    "queued",
                    format!(
                        "{} already running (--max-plans): this one waits its turn",
                        crate::text::count(app.cfg.max_plans, "plan")
                    ),
                )
                .of(&r),
            );
            let Ok(p) = app.plans.clone().acquire_owned().await else {
                return;
            };
            p
        }
    };
    let (Some(pb), Some(host)) = (app.playbook(&r.playbook), app.host(&r.host)) else {
        return;
    };
    let planned = plan_once(app, &pb, &host, id).await;
    drop(permit);
    let (report, digest) = match planned {
        Ok(rep) => rep,
        Err(e) => {
            r.state = State::PlanFailed;
            r.reason = Some(e);
            app.save(r.clone());
            app.say(Decision::new("plan_failed", r.reason.clone().unwrap_or_default()).of(&r));
            return;
        }
    };
    r.plan = serde_json::to_value(&report).ok();
    r.plan_digest = Some(digest);
    r.state = match report.status {
        Status::WouldChange => State::AwaitingApproval,
        Status::Healthy | Status::Skipped => State::NothingToDo,
        _ => State::PlanFailed,
    };
    r.reason = report.reason.clone();
    // The plan in the journal, so `kfix history` lists it.
    let op = format!("kfix serve: alert {} ({})", r.alertname, r.fingerprint);
    if let Ok(j) = runner::open_journal(&app.cfg.state, id, &pb, &app.origin(op, &r.host)) {
        let status = if r.state == State::AwaitingApproval {
            "awaiting_approval"
        } else {
            report.status.as_str()
        };
        runner::journal_plan(&j, &report, status);
    }
    let waiting = r.state == State::AwaitingApproval;
    let event = match r.state {
        State::AwaitingApproval => "planned",
        State::NothingToDo => "nothing_to_do",
        _ => "plan_failed",
    };
    let detail = match r.state {
        State::AwaitingApproval => format!(
            "{} would change {}; approve with `kfix approve {id}`",
            crate::text::count(
                report
                    .steps
                    .iter()
                    .filter(|s| s.verdict == crate::plan::Verdict::Change)
                    .count(),
                "step"
            ),
            r.host
        ),
        _ => format!(
            "{}{}",
            report.status.as_str(),
            report
                .reason
                .as_deref()
                .map(|x| format!(": {x}"))
                .unwrap_or_default()
        ),
    };
    app.save(r.clone());
    app.say(Decision::new(event, detail).of(&r));
    if waiting && pb.auto_apply && app.cfg.auto_apply {
        auto_apply(app, id).await;
    }
}

/// Plan one host under `run_id` (read-only). The connection stays open in the
/// planned host, for the apply; the events sender goes with it.
pub(super) async fn plan_host(
    app: &App,
    pb: &Arc<Playbook>,
    host: &InvHost,
    run_id: &str,
) -> Result<(Arc<RunSettings>, Vec<exec::Assessed>, Events), String> {
    let s = app.settings(run_id)?;
    let (tx, _rx) = mpsc::unbounded_channel();
    let planned =
        exec::plan_all(pb.clone(), vec![host.clone()], s.clone(), false, tx.clone()).await;
    Ok((s, planned, tx))
}

pub(super) type Events = mpsc::UnboundedSender<exec::Event>;

/// The dry-run report of one host, and the digest of its plan.
pub(super) async fn plan_once(
    app: &App,
    pb: &Arc<Playbook>,
    host: &InvHost,
    run_id: &str,
) -> Result<(HostReport, String), String> {
    let (s, planned, _) = plan_host(app, pb, host, run_id).await?;
    let digest = planned
        .first()
        .map(|p| p.digest(run_id))
        .unwrap_or_default();
    let mut reports = exec::finish(planned).await;
    let _ = std::fs::remove_dir_all(&s.config.ssh.control_dir);
    reports
        .pop()
        .map(|r| (r, digest))
        .ok_or_else(|| "planning returned no host".to_string())
}

/// Auto-apply within the blast radius: at most N hosts per playbook per hour, never two
/// hosts that share a group at once, never while the kill switch is engaged.
pub(super) async fn auto_apply(app: &Arc<App>, id: &str) {
    let refusal = {
        let Ok(store) = app.store.lock() else { return };
        let Some(r) = store.runs.get(id) else { return };
        let mine = app.host(&r.host).map(|h| h.groups).unwrap_or_default();
        let hour_ago = journal::now_unix().saturating_sub(3600);
        let used = store.auto_applied_since(&r.playbook, hour_ago);
        if app.killed() {
            Some(format!(
                "kill switch engaged ({} exists)",
                app.cfg.kill_switch.display()
            ))
        } else if used >= app.cfg.max_hosts_per_hour {
            Some(format!(
                "blast radius: {} of {} auto-applied in the last hour (--max-hosts-per-hour {})",
                crate::text::count(used, "host"),
                r.playbook,
                app.cfg.max_hosts_per_hour
            ))
        } else {
            store.applying().find_map(|other| {
                let theirs = app.host(&other.host).map(|h| h.groups).unwrap_or_default();
                mine.iter()
                    .find(|g| *g != "all" && *g != "ungrouped" && theirs.contains(g))
                    .map(|g| {
                        format!(
                            "blast radius: {} of group {g} is being fixed (run {})",
                            other.host, other.id
                        )
                    })
            })
        }
    };
    match refusal {
        Some(why) => {
            if let Some(mut r) = app.get(id) {
                r.reason = Some(format!("not auto-applied: {why}; approve by hand"));
                app.save(r.clone());
                app.say(Decision::new("held", why).of(&r));
            }
        }
        None => {
            if start_apply(app, id, "auto", None).is_ok() {
                apply(app, id).await;
            }
        }
    }
}

/// Move an awaiting record to `applying` (atomically), or say why not.
pub(super) fn start_apply(
    app: &App,
    id: &str,
    by: &str,
    digest: Option<&str>,
) -> Result<RunRecord, (StatusCode, String)> {
    let mut store = app.store.lock().map_err(|_| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "store lock poisoned".to_string(),
        )
    })?;
    let Some(mut r) = store.runs.get(id).cloned() else {
        return Err((StatusCode::NOT_FOUND, format!("no run {id}")));
    };
    if r.state != State::AwaitingApproval {
        return Err((
            StatusCode::CONFLICT,
            format!("run {id} is {}, not awaiting approval", r.state.as_str()),
        ));
    }
    // A person approves the plan they were shown: its digest (auto-apply: None).
    if let Some(d) = digest
        && r.plan_digest.as_deref() != Some(d)
    {
        return Err((
            StatusCode::CONFLICT,
            format!(
                "run {id}'s plan is {}, not the plan {d} that was approved: review it again (kfix approve {id} shows it)",
                r.plan_digest.as_deref().unwrap_or("unknown")
            ),
        ));
    }
    if app.killed() {
        return Err((
            StatusCode::CONFLICT,
            format!(
                "kill switch engaged ({} exists): nothing is applied",
                app.cfg.kill_switch.display()
            ),
        ));
    }
    if app.stop.load(Ordering::SeqCst) {
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "kfix serve is stopping".into(),
        ));
    }
    r.state = State::Applying;
    r.approved_by = Some(by.to_string());
    r.applied_unix = Some(journal::now_unix());
    r.reason = None;
    store
        .save(r.clone())
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(r)
}

/// Re-plan, and apply only if the host still needs exactly the approved change.
pub(super) async fn apply(app: &Arc<App>, id: &str) {
    let Some(mut r) = app.get(id) else { return };
    let (Some(pb), Some(host)) = (app.playbook(&r.playbook), app.host(&r.host)) else {
        return;
    };
    let run = crate::journal::run_id();
    let (s, planned, tx) = match plan_host(app, &pb, &host, &run).await {
        Ok(p) => p,
        Err(e) => {
            r.state = State::Failed;
            r.reason = Some(e);
            app.save(r.clone());
            return;
        }
    };
    let now = planned.first().map(|p| p.report.clone());
    // Exactly the approved operations (argv, stdin, undo), or nothing.
    let digest = planned.first().map(|p| p.digest(&run));
    let same = now
        .as_ref()
        .is_some_and(|n| n.status == Status::WouldChange)
        && digest.is_some()
        && digest == r.plan_digest;
    if !same {
        let _ = exec::finish(planned).await;
        let _ = std::fs::remove_dir_all(&s.config.ssh.control_dir);
        let nothing = now.as_ref().is_some_and(|n| n.status == Status::Healthy);
        r.state = if nothing {
            State::NothingToDo
        } else {
            State::AwaitingApproval
        };
        r.approved_by = None;
        r.applied_unix = None;
        r.reason = Some(if nothing {
            "nothing to do any more: the host is healthy".into()
        } else {
            "the host changed since the approved plan: review the new plan and approve again".into()
        });
        if let Some(n) = &now
            && !nothing
        {
            r.plan = serde_json::to_value(n).ok();
            r.plan_digest = digest;
        }
        app.save(r.clone());
        app.say(Decision::new("not_applied", r.reason.clone().unwrap_or_default()).of(&r));
        return;
    }
    r.apply_run = Some(run.clone());
    app.save(r.clone());
    let op = format!(
        "kfix serve: alert {} approved by {}",
        r.alertname,
        r.approved_by.as_deref().unwrap_or("?")
    );
    let origin = app.origin(op, &r.host);
    let res = runner::apply(pb, planned, s.clone(), &app.cfg.state, &origin, tx).await;
    let _ = std::fs::remove_dir_all(&s.config.ssh.control_dir);
    match res {
        Ok(done) => {
            let rep = done.reports.into_iter().next();
            r.state = match rep.as_ref().map(|h| h.status) {
                Some(Status::Changed) => State::Applied,
                _ => State::Failed,
            };
            r.reason = rep.as_ref().and_then(|h| h.reason.clone());
            r.result = rep.and_then(|h| serde_json::to_value(h).ok());
        }
        Err(e) => {
            r.state = State::Failed;
            r.reason = Some(e);
        }
    }
    let event = if r.state == State::Applied {
        "applied"
    } else {
        "apply_failed"
    };
    let detail = format!(
        "run {run}{}",
        r.reason
            .as_deref()
            .map(|x| format!(": {x}"))
            .unwrap_or_default()
    );
    app.save(r.clone());
    app.say(Decision::new(event, detail).of(&r));
}
