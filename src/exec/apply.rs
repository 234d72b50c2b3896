//! One host's apply: lock, re-check, operations with their fingerprints, verification,
//! and the undo in reverse on any failure.

#[allow(unused_imports)]
use super::*;

/// One applied operation, kept for the rollback.
pub(super) struct DoneOp {
    pub(super) step: usize,
    /// The operation's index in the journal (per host).
    pub(super) index: usize,
    pub(super) undo: Undo,
    /// The fingerprint of the state it changes (see [`crate::plan::Op::probe`]).
    pub(super) fingerprint: Option<crate::quote::Cmd>,
    /// Its delegate (index into the host's delegates) when it ran elsewhere (`run_on`).
    pub(super) on: Option<usize>,
}

/// The run journal as one host's apply sees it (a no-op without a journal).
pub(super) struct HostJournal<'a> {
    pub(super) journal: Option<&'a Journal>,
    pub(super) host: String,
    /// Masked in every record written (see `Record::sealed`).
    secrets: &'a [(String, String)],
}

impl HostJournal<'_> {
    /// Durable when it returns (the fsync shared with other hosts' records).
    pub(super) async fn put(&self, r: Record) -> Result<(), String> {
        match self.journal {
            Some(j) => j
                .record_durable(&r.sealed(self.secrets))
                .await
                .map_err(|e| format!("cannot write the run journal {}: {e}", j.path().display())),
            None => Ok(()),
        }
    }
}

pub(super) async fn apply_host(pb: &Playbook, p: Assessed, s: &RunSettings) -> HostReport {
    let Assessed {
        host,
        mut report,
        plans,
        target,
        mut delegates,
        step_on,
        ..
    } = p;
    let Some(host) = host else {
        close_delegates(delegates).await;
        return report;
    };
    // Applying sees the host as it is now: nothing read while assessing is reused.
    host.reads.disable();
    delegates.iter().for_each(|d| d.host.reads.disable());
    // The connection may have gone idle while the operator read the plan: reconnect.
    let mut host = host;
    if !host.conn.alive().await {
        let (t, b) = target_from(&target);
        match Conn::open(&t, b, &s.config.ssh, s.config.command_timeout).await {
            Ok(c) => host.conn = Arc::new(c),
            Err(e) => {
                report.status = Status::Unreachable;
                report.reason = Some(format!("reconnecting: {e}; nothing was applied"));
                mark_not_run(&mut report);
                close_delegates(delegates).await;
                return report;
            }
        }
    }
    let mut lost = None;
    for d in delegates.iter_mut() {
        if !d.host.conn.alive().await {
            let (t, b) = target_from(&d.target);
            match Conn::open(&t, b, &s.config.ssh, s.config.command_timeout).await {
                Ok(c) => d.host.conn = Arc::new(c),
                Err(e) => {
                    lost = Some(format!(
                        "reconnecting to `{}` (run_on): {e}; nothing was applied",
                        d.name
                    ));
                    break;
                }
            }
        }
    }
    if let Some(why) = lost {
        report.status = Status::Unreachable;
        report.reason = Some(why);
        mark_not_run(&mut report);
        close_delegates(delegates).await;
        Conn::close_shared(host.conn).await;
        return report;
    }
    // The host's time: its planning plus this apply (not the wait for confirmation).
    let planned_ms = report.duration_ms;
    let started = Instant::now();
    let elapsed_ms = |t: Instant| planned_ms + elapsed_ms(t);
    // One run at a time changes a host.
    let owner = format!(
        "run {} by {} (pid {})",
        s.run_id,
        crate::journal::operator(),
        std::process::id()
    );
    // `kfix run A B`: the lock an earlier playbook took on this host is still held.
    let kept = match &s.pool {
        Some(p) => p.take_lock(&report.host, &host.conn).await,
        None => None,
    };
    let taken = match kept {
        Some(lock) => Ok(LockOutcome::Acquired {
            lock,
            stale_owner: None,
        }),
        None => host.conn.lock(&owner).await,
    };
    let (lock, stale) = match taken {
        Ok(LockOutcome::Acquired { lock, stale_owner }) => (lock, stale_owner),
        Ok(LockOutcome::Held { owner }) => {
            report.status = Status::Failed;
            report.reason = Some(format!(
                "the host is locked by another kfix run ({owner}); nothing was applied (the lock of a run that is gone is released within {}s)",
                crate::transport::lock_outlives_run_by(s.config.command_timeout).as_secs()
            ));
            mark_not_run(&mut report);
            report.duration_ms = elapsed_ms(started);
            Conn::close_shared(host.conn).await;
            close_delegates(delegates).await;
            return report;
        }
        Err(e) => {
            report.status = host_error_status(&HostError::Transport(e.clone()));
            report.reason = Some(format!("taking the host lock: {e}; nothing was applied"));
            mark_not_run(&mut report);
            report.duration_ms = elapsed_ms(started);
            Conn::close_shared(host.conn).await;
            close_delegates(delegates).await;
            return report;
        }
    };
    let secrets = host.secrets.clone();
    let hj = HostJournal {
        journal: s.journal.as_deref(),
        host: report.host.clone(),
        secrets: &secrets,
    };
    let mut failure: Option<(Status, String)> = None;
    // What is about to change, durable before anything does.
    let mut head = vec![Record::Host {
        host: report.host.clone(),
        target,
    }];
    head.extend(
        report
            .steps
            .iter()
            .filter(|st| st.verdict != Verdict::NoChange)
            .map(|st| st.plan_record(&report.host)),
    );
    for r in head {
        if let Err(e) = hj.put(r).await {
            failure = Some((Status::Failed, e));
            break;
        }
    }
    mark_not_run(&mut report);
    let mut applied: Vec<DoneOp> = Vec::new();
    let mut index = 0;
    let trips = Trips::new(pb, &plans, &step_on, &host, hj.journal.is_some());
    'steps: for (i, (step, planned)) in pb.steps.iter().zip(&plans).enumerate() {
        if failure.is_some() {
            break;
        }
        // Re-check: the host must still be as it was when planned.
        let on = step_host(&host, &delegates, &step_on, i);
        let on_rec = step_on
            .get(i)
            .copied()
            .flatten()
            .map(|d| crate::journal::OnRec {
                host: delegates[d].name.clone(),
                target: delegates[d].target.clone(),
            });
        // The re-check's reads and the fingerprint of the state the step's first
        // operation starts from travel together (one round trip), and so do those of
        // the later operations that the step's own read holds.
        let (now, mut trip) =
            tokio::join!(probe::plan_step(step, on), trips.step(&on.conn, i, planned));
        let now = match now {
            Ok(now) => now,
            Err(e) => {
                failure = Some((
                    host_error_status(&e),
                    format!("re-checking step `{}`: {e}", step.id),
                ));
                break;
            }
        };
        if !now.same_ops(planned) {
            failure = Some((
                Status::Failed,
                format!(
                    "step `{}`: the host changed since it was planned; nothing more was applied",
                    step.id
                ),
            ));
            break;
        }
        if planned.verdict == Verdict::NoChange {
            continue;
        }
        for (k, op) in planned.ops.iter().enumerate() {
            let mut timeout = op
                .timeout_secs
                .map_or(s.config.command_timeout, Duration::from_secs);
            if let Some(limit) = s.host_timeout {
                let left = limit.saturating_sub(started.elapsed());
                if left.is_zero() {
                    failure = Some((
                        Status::Failed,
                        format!(
                            "timed out: applying took longer than --host-timeout {}s",
                            limit.as_secs()
                        ),
                    ));
                    break 'steps;
                }
                timeout = timeout.min(left);
            }
            let this = index;
            index += 1;
            let before = trip.before(&on.conn, k, op).await;
            let rec = Record::Op {
                host: report.host.clone(),
                step: step.id.clone(),
                index: this,
                desc: op.desc.clone(),
                undo: op.undo.clone(),
                fingerprint: op.fingerprint.clone(),
                before,
                on: on_rec.clone(),
                wrote: op.wrote.clone(),
            };
            if let Err(e) = hj.put(rec).await {
                failure = Some((Status::Failed, e));
                break 'steps;
            }
            // The operation and the reads that travel with it (see `roundtrip`).
            let (res, after) = trip.run(&host, &on.conn, &planned.ops, k, timeout).await;
            let done = |ok: bool, error: Option<String>| Record::OpDone {
                host: report.host.clone(),
                index: this,
                ok,
                after: after.clone(),
                error,
            };
            let rec = match &res {
                Ok(out) if out.success() => done(true, None),
                Ok(out) => done(false, Some(out.stderr())),
                Err(e) => done(false, Some(e.to_string())),
            };
            // The operation ran (or may have): undo it even if the journal fails now.
            let journaled = hj.put(rec).await;
            match res {
                Ok(out) if out.success() => {
                    applied.push(DoneOp {
                        step: i,
                        index: this,
                        undo: op.undo.clone(),
                        fingerprint: op.fingerprint.clone(),
                        on: step_on.get(i).copied().flatten(),
                    });
                    if let Err(e) = journaled {
                        report.steps[i].status = StepStatus::Failed;
                        failure = Some((Status::Failed, e));
                        break 'steps;
                    }
                }
                Ok(out) => {
                    report.steps[i].status = StepStatus::Failed;
                    failure = Some((
                        Status::Failed,
                        format!("step `{}`: {} failed: {}", step.id, op.desc, out.stderr()),
                    ));
                    break 'steps;
                }
                Err(e) => {
                    report.steps[i].status = StepStatus::Failed;
                    let st = host_error_status(&HostError::Transport(e.clone()));
                    failure = Some((st, format!("step `{}`: {}: {e}", step.id, op.desc)));
                    break 'steps;
                }
            }
        }
        report.steps[i].status = StepStatus::Applied;
    }
    if failure.is_none() {
        let fresh = match drift_plans(pb, &pb.verify, &host, &delegates, &step_on).await {
            Ok(f) => f,
            Err(e) => {
                failure = Some((host_error_status(&e), format!("verify: {e}")));
                BTreeMap::new()
            }
        };
        // Every check at once (their reads share a round trip); the first that fails,
        // in the playbook's order, is the reason.
        let checks = match failure {
            None => probe::eval_all(&pb.verify, &host, &fresh).await,
            Some(_) => Vec::new(),
        };
        for r in checks {
            match r {
                Ok(o) if o.holds => {
                    if !o.skipped {
                        report.verified.push(o.summary);
                    }
                }
                Ok(o) => {
                    failure = Some((Status::Failed, format!("verify failed: {}", o.summary)));
                    break;
                }
                Err(e) => {
                    failure = Some((host_error_status(&e), format!("verify: {e}")));
                    break;
                }
            }
        }
    }
    // What verification read is not reused: undoing changes the host.
    host.reads.disable();
    if failure.is_none()
        && hj.journal.is_some()
        && let Err(e) = settle(pb, &host, &delegates, &applied, &hj).await
    {
        // The change is made and verified; only `kfix rollback`'s drift check lost
        // its reference. Say so rather than undo a verified fix.
        report.reason = Some(format!("changed, but {e}"));
    }
    match failure {
        None => {
            report.status = Status::Changed;
            report.reason = report
                .reason
                .take()
                .filter(|r| r.starts_with("changed, but"));
        }
        Some((Status::Unreachable, why)) => {
            let last = applied.last().map(|a| pb.steps[a.step].id.clone());
            report.status = Status::Unreachable;
            report.reason = Some(match last {
                Some(l) => format!(
                    "{why} (last completed step: `{l}`; run `kfix rollback` when it is back)"
                ),
                None => format!("{why} (nothing was applied)"),
            });
        }
        Some((_, why)) => {
            let (ok, undo_err) = rollback(&host, &delegates, &applied, &mut report, &hj).await;
            report.status = if ok {
                Status::Failed
            } else {
                Status::RollbackFailed
            };
            report.reason = Some(match undo_err {
                None if applied.is_empty() => format!("{why}; nothing had been applied"),
                None => format!(
                    "{why}; rolled back {}",
                    crate::text::count(applied.len(), "operation")
                ),
                Some(e) => format!("{why}; ROLLBACK FAILED: {e}"),
            });
        }
    }
    if let Some(prev) = stale {
        let note = format!("took over a stale lock left by {prev}");
        report.reason = Some(match report.reason.take() {
            Some(r) => format!("{r} ({note})"),
            None => note,
        });
    }
    match &s.pool {
        Some(p) => p.keep_lock(&report.host, &host.conn, lock).await,
        None => lock.release().await,
    }
    report.duration_ms = elapsed_ms(started);
    Conn::close_shared(host.conn).await;
    close_delegates(delegates).await;
    report
}

pub(super) fn mark_not_run(report: &mut HostReport) {
    for st in report.steps.iter_mut() {
        if st.status == StepStatus::Planned {
            st.status = StepStatus::NotRun;
        }
    }
}

/// Fresh plans (against the host as it is now) for the steps `drift` probes name.
pub async fn drift_plans(
    pb: &Playbook,
    probes: &[crate::playbook::Probe],
    host: &Host,
    delegates: &[Delegate],
    step_on: &[Option<usize>],
) -> Result<BTreeMap<String, StepPlan>, HostError> {
    let mut out = BTreeMap::new();
    for p in probes {
        if let crate::playbook::Subject::Drift(id) = &p.subject
            && let Some(i) = pb.steps.iter().position(|s| s.id == id.value)
        {
            let step = &pb.steps[i];
            let on = step_host(host, delegates, step_on, i);
            out.insert(step.id.clone(), probe::plan_step(step, on).await?);
        }
    }
    Ok(out)
}

/// Undo applied operations in reverse order. Returns (all undone, first error).
pub(super) async fn rollback(
    host: &Host,
    delegates: &[Delegate],
    applied: &[DoneOp],
    report: &mut HostReport,
    hj: &HostJournal<'_>,
) -> (bool, Option<String>) {
    let mut first_err = None;
    let undos: Vec<(&Undo, Option<usize>)> = applied.iter().map(|a| (&a.undo, a.on)).collect();
    for (i, run) in crate::plan::undo_order(&undos) {
        let a = &applied[i];
        // The undo runs where the operation ran.
        let conn = match a.on.and_then(|d| delegates.get(d)) {
            Some(d) => &d.host.conn,
            None => &host.conn,
        };
        let what = format!("step `{}`", report.steps[a.step].id);
        let res = run_undo(&a.undo, run, conn, &what).await;
        let _ = hj
            .put(Record::Undone {
                host: hj.host.clone(),
                index: a.index,
                ok: res.is_ok(),
                by: "run".to_string(),
                error: res.as_ref().err().cloned(),
            })
            .await;
        match res {
            Ok(()) => {
                if report.steps[a.step].status != StepStatus::UndoFailed {
                    report.steps[a.step].status = StepStatus::RolledBack;
                }
            }
            Err(e) => {
                report.steps[a.step].status = StepStatus::UndoFailed;
                first_err.get_or_insert(e);
            }
        }
    }
    (first_err.is_none(), first_err)
}
