//! One host's apply: lock, re-check, operations with their fingerprints, verification,
//! and the undo in reverse on any failure.

#[allow(unused_imports)]
use super::*;

/// One applied operation, kept for the rollback.
pub(super) struct DoneOp {
    step: usize,
    /// The operation's index in the journal (per host).
    index: usize,
    undo: Undo,
    /// The fingerprint of the state it changes (see [`crate::plan::Op::probe`]).
    fingerprint: Option<crate::quote::Cmd>,
    /// Its delegate (index into the host's delegates) when it ran elsewhere (`run_on`).
    on: Option<usize>,
}

/// The run journal as one host's apply sees it (a no-op without a journal).
pub(super) struct HostJournal<'a> {
    journal: Option<&'a Journal>,
    host: String,
    /// Masked in every record written (see `Record::sealed`).
    secrets: &'a [(String, String)],
}

impl HostJournal<'_> {
    /// Durable when it returns (the fsync shared with other hosts' records).
    async fn put(&self, r: Record) -> Result<(), String> {
        match self.journal {
            Some(j) => j
                .record_durable(&r.sealed(self.secrets))
                .await
                .map_err(|e| format!("cannot write the run journal {}: {e}", j.path().display())),
            None => Ok(()),
        }
    }
}

/// The fingerprint of the state an operation touches: exit code and output of its probe.
pub async fn fingerprint(
    conn: &crate::transport::Conn,
    fingerprint: &Option<crate::quote::Cmd>,
) -> Option<String> {
    let p = fingerprint.as_ref()?;
    let out = conn.run(p).await.ok()?;
    Some(fingerprint_of(&out))
}

/// The fingerprints of the states a step's operations start from, taken in the
/// re-check's round trip: the first operation's from the step's own read when that read
/// holds it (asked here too, it joins the re-check's wave and runs once), else by its
/// probe; a later operation's from the same read when it holds it and no operation
/// before it in the step touches that state (the same probe or scope), else None (read
/// in the round trip of the operation before it).
pub(super) async fn fingerprints_before(
    conn: &crate::transport::Conn,
    ops: &[crate::plan::Op],
) -> Vec<Option<String>> {
    let Some(first) = ops.first() else {
        return Vec::new();
    };
    let read = match &first.fingerprint_in {
        Some((read, _)) => conn.run(read).await.ok().map(|out| (read, out)),
        None => None,
    };
    let from_read = |op: &crate::plan::Op| {
        let (cmd, out) = read.as_ref()?;
        crate::host::fingerprint_answer(op, |c| (c == *cmd).then_some(out))
            .map(|o| fingerprint_of(&o))
    };
    let mut befores = vec![match from_read(first) {
        Some(f) => Some(f),
        None => fingerprint(conn, &first.fingerprint).await,
    }];
    for (k, op) in ops.iter().enumerate().skip(1) {
        let touched = ops[..k].iter().any(|e| {
            e.fingerprint == op.fingerprint
                || matches!((&e.scope, &op.scope), (Some(a), Some(b)) if a.key == b.key)
        });
        befores.push(if touched { None } else { from_read(op) });
    }
    befores
}

/// A probe's output as the journal records it.
pub(super) fn fingerprint_of(out: &crate::transport::Output) -> String {
    format!("{}:{}", out.code.unwrap_or(-1), out.stdout())
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
        match Conn::open(&t, b, &s.ssh, s.command_timeout).await {
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
            match Conn::open(&t, b, &s.ssh, s.command_timeout).await {
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
                crate::transport::lock_outlives_run_by(s.command_timeout).as_secs()
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
    for st in report
        .steps
        .iter()
        .filter(|st| st.verdict != Verdict::NoChange)
    {
        // Already redacted when planned (plan_all).
        let diff = st.diff.clone();
        head.push(Record::Plan {
            host: report.host.clone(),
            step: st.id.clone(),
            verdict: st.verdict.as_str().to_string(),
            diff,
        });
    }
    for r in head {
        if let Err(e) = hj.put(r).await {
            failure = Some((Status::Failed, e));
            break;
        }
    }
    mark_not_run(&mut report);
    let mut applied: Vec<DoneOp> = Vec::new();
    let mut index = 0;
    // Verification's reads known ahead travel in the round trip of the last operation
    // (when it runs on this host): one round trip less, and none at all where a read is
    // the operation's own fingerprint (an added rule's `iptables -C`).
    let last_op = plans
        .iter()
        .enumerate()
        .rev()
        .find(|(_, p)| p.verdict != Verdict::NoChange && !p.ops.is_empty())
        .map(|(i, p)| (i, p.ops.len() - 1))
        .filter(|(i, _)| step_on.get(*i).copied().flatten().is_none());
    let mut verify_reads: Vec<crate::quote::Cmd> = Vec::new();
    // Nothing to send them with when no operation runs on the host.
    if last_op.is_some() {
        for c in pb
            .verify
            .iter()
            .filter_map(|p| probe::read_of(p, &host).ok().flatten())
        {
            if host.refuse_exposed(&c).is_ok() && !verify_reads.contains(&c) {
                verify_reads.push(c);
            }
        }
    }
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
        let journaling = hj.journal.is_some() && planned.verdict != Verdict::NoChange;
        let (now, mut befores) = tokio::join!(probe::plan_step(step, on), async {
            match journaling {
                true => fingerprints_before(&on.conn, &planned.ops).await,
                false => Vec::new(),
            }
        });
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
        // The `before` of the next operation, read in the previous one's round trip.
        let mut carried = befores.first_mut().and_then(Option::take);
        for (k, op) in planned.ops.iter().enumerate() {
            let mut timeout = op
                .timeout_secs
                .map_or(s.command_timeout, Duration::from_secs);
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
            let before = match carried.take().or_else(|| befores.get_mut(k)?.take()) {
                Some(b) => Some(b),
                None if journaling => fingerprint(&on.conn, &op.fingerprint).await,
                None => None,
            };
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
            // The operation, the fingerprint of what it left and of what the next
            // operation starts from (and, after the last one, verification's reads):
            // one round trip, each distinct read once.
            let next_known = befores.get(k + 1).is_some_and(Option::is_some);
            let next_probe = planned
                .ops
                .get(k + 1)
                .filter(|_| !next_known)
                .and_then(|n| n.fingerprint.as_ref());
            let (this_probe, next_probe) = match journaling {
                true => (op.fingerprint.as_ref(), next_probe),
                false => (None, None),
            };
            let ahead: &[crate::quote::Cmd] = match last_op == Some((i, k)) {
                true => &verify_reads,
                false => &[],
            };
            // What the operation leaves, from one of verification's reads when one
            // holds it: the probe is not sent.
            let after_ahead = this_probe.is_some()
                && op
                    .fingerprint_in
                    .as_ref()
                    .is_some_and(|(c, _)| ahead.contains(c));
            let this_probe = this_probe.filter(|_| !after_ahead);
            let mut probes: Vec<&crate::quote::Cmd> = Vec::new();
            for c in this_probe.into_iter().chain(next_probe).chain(ahead) {
                if !probes.contains(&c) {
                    probes.push(c);
                }
            }
            let (res, after) = if probes.is_empty() {
                (on.conn.run_with_timeout(&op.cmd, timeout).await, None)
            } else {
                match on.conn.run_then_probe(&op.cmd, &probes, timeout).await {
                    Ok((out, probed)) => {
                        let answer = |c: &crate::quote::Cmd| {
                            let at = probes.iter().position(|p| *p == c)?;
                            probed.get(at)?.as_ref()
                        };
                        let after = match after_ahead {
                            true => crate::host::fingerprint_answer(op, answer)
                                .map(|o| fingerprint_of(&o)),
                            false => this_probe.and_then(answer).map(fingerprint_of),
                        };
                        if let Some(next) = next_probe {
                            carried = answer(next).map(fingerprint_of);
                        }
                        // Answers sent along lost their stderr: one that is neither
                        // yes (0) nor no (1) is asked again, so an error can say why.
                        if !ahead.is_empty() && out.success() {
                            host.reads.prime(
                                probes
                                    .iter()
                                    .zip(&probed)
                                    .filter_map(|(c, o)| Some(((*c).clone(), o.clone()?)))
                                    .filter(|(_, o)| matches!(o.code, Some(0 | 1)))
                                    .collect(),
                            );
                        }
                        (Ok(out), after)
                    }
                    Err(e) => (Err(e), fingerprint(&on.conn, &op.fingerprint).await),
                }
            };
            // Verification's read did not hold it after all (it changed while read):
            // the probe on its own (a failed round trip already asked it).
            let after = match after {
                None if after_ahead && res.is_ok() => fingerprint(&on.conn, &op.fingerprint).await,
                a => a,
            };
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

/// The state the run left, for `kfix rollback`'s drift check: when a later step's effect
/// cannot be seen by kfix (a service restart, a command, a package), the state an
/// earlier operation left may have changed since its own fingerprint was taken
/// (flanneld recreating a device a step deleted). Each such state is read again, all in
/// one round trip per host, and journaled as `settled` (only the last operation on a
/// state is compared, so only it is read).
pub(super) async fn settle(
    pb: &Playbook,
    host: &Host,
    delegates: &[Delegate],
    applied: &[DoneOp],
    hj: &HostJournal<'_>,
) -> Result<(), String> {
    use crate::playbook::StepKind;
    let opaque = |step: usize| {
        matches!(
            pb.steps[step].kind,
            StepKind::Service(_) | StepKind::Command(_) | StepKind::Package(_)
        )
    };
    let mut last: Vec<&DoneOp> = Vec::new();
    for (k, a) in applied.iter().enumerate() {
        let Some(probe) = &a.fingerprint else {
            continue;
        };
        let later_opaque = applied[k + 1..]
            .iter()
            .any(|b| b.step != a.step && opaque(b.step));
        let superseded = applied[k + 1..]
            .iter()
            .any(|b| b.on == a.on && b.fingerprint.as_ref() == Some(probe));
        if later_opaque && !superseded {
            last.push(a);
        }
    }
    let reads = futures_util::future::join_all(last.iter().map(|a| {
        let conn = match a.on.and_then(|d| delegates.get(d)) {
            Some(d) => &d.host.conn,
            None => &host.conn,
        };
        fingerprint(conn, &a.fingerprint)
    }))
    .await;
    for (a, after) in last.into_iter().zip(reads) {
        hj.put(Record::Settled {
            host: hj.host.clone(),
            index: a.index,
            after,
        })
        .await
        .map_err(|e| {
            format!("the state it left could not be journaled for `kfix rollback`: {e}")
        })?;
    }
    Ok(())
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
