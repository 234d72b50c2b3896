//! Assessment, read-only: connect, gather facts, check preconditions, plan each step,
//! detect, for one host (the fleet scan of `kfix check` is `check`).

#[allow(unused_imports)]
use super::*;

/// A host after planning, kept (with its connection) for the apply phase.
pub struct Assessed {
    pub host: Option<Host>,
    pub report: HostReport,
    pub(super) plans: Vec<StepPlan>,
    /// Secret (name, value)s to mask in every report and journal record of this host.
    pub(super) secrets: Vec<(String, String)>,
    /// How to reach the host again (journaled for `kfix rollback`).
    pub(super) target: TargetRec,
    /// The hosts steps are delegated to (`run_on`), connected while planning.
    pub(super) delegates: Vec<Delegate>,
    /// Per step: the index of its delegate in `delegates`, if it has one.
    pub(super) step_on: Vec<Option<usize>>,
}

impl Assessed {
    /// A host's planning outcome with no secrets or delegates yet (set by the caller).
    pub(super) fn new(
        host: Option<Host>,
        report: HostReport,
        plans: Vec<StepPlan>,
        target: TargetRec,
    ) -> Self {
        Assessed {
            host,
            report,
            plans,
            secrets: Vec::new(),
            target,
            delegates: Vec::new(),
            step_on: Vec::new(),
        }
    }

    /// A digest of everything applying this plan would do: per step its id, verdict,
    /// diff and where it runs, per operation its argv, the sha256 of its stdin and its
    /// undo (the same for two plans that would run the same commands with the same
    /// bytes). `run_id`, which names backups, is left out, so a re-plan under another
    /// run id of the same change has the same digest. An approval names the digest of
    /// the plan it saw: different stdin of the same length is a different plan.
    pub fn digest(&self, run_id: &str) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        let mut put = |field: &[u8]| {
            let field = crate::journal::replace_bytes(field, run_id.as_bytes(), b"RUN");
            h.update((field.len() as u64).to_le_bytes());
            h.update(&field);
        };
        let cmd = |c: &crate::quote::Cmd, put: &mut dyn FnMut(&[u8])| {
            put(&(c.argv.len() as u64).to_le_bytes());
            for a in &c.argv {
                put(a.as_bytes());
            }
            match &c.stdin {
                Some(b) => put(&Sha256::digest(b)),
                None => put(b"no stdin"),
            }
        };
        put(self.report.host.as_bytes());
        for (i, p) in self.plans.iter().enumerate() {
            put(p.id.as_bytes());
            put(p.verdict.as_str().as_bytes());
            put(p.diff.as_bytes());
            let on = self
                .step_on
                .get(i)
                .copied()
                .flatten()
                .and_then(|d| self.delegates.get(d))
                .map_or("", |d| d.name.as_str());
            put(on.as_bytes());
            for op in &p.ops {
                cmd(&op.cmd, &mut put);
                match &op.undo {
                    crate::plan::Undo::Cmd(c) => {
                        put(b"undo");
                        cmd(c, &mut put);
                    }
                    crate::plan::Undo::Last(c) => {
                        put(b"undo last");
                        cmd(c, &mut put);
                    }
                    crate::plan::Undo::Nothing => put(b"nothing"),
                    crate::plan::Undo::Impossible(why) => {
                        put(b"impossible");
                        put(why.as_bytes());
                    }
                }
            }
        }
        crate::playbook::hex(&h.finalize())
    }
}

/// Plan every host (bounded concurrency). `check_only` stops after detection.
pub async fn plan_all(
    pb: Arc<Playbook>,
    hosts: Vec<InvHost>,
    settings: Arc<RunSettings>,
    check_only: bool,
    events: mpsc::UnboundedSender<Event>,
) -> Vec<Assessed> {
    let _ = events.send(Event::Phase {
        name: if check_only { "checking" } else { "planning" },
        hosts: hosts.len(),
    });
    let settings = with_inventory_hostnames(&[&*pb], settings).await;
    let targets: Vec<(String, TargetRec)> = hosts
        .iter()
        .map(|h| (h.name.clone(), target_rec(h)))
        .collect();
    let results = bounded(hosts, settings.config.forks, |inv| {
        let (pb, settings, events) = (pb.clone(), settings.clone(), events.clone());
        async move {
            if settings.stop.load(std::sync::atomic::Ordering::SeqCst) {
                let mut report = internal_error(inv.name.clone(), "");
                report.status = Status::NotAttempted;
                report.reason = Some("interrupted (Ctrl-C) before this host was planned".into());
                return Assessed::new(None, report, Vec::new(), target_rec(&inv));
            }
            let _ = events.send(Event::HostStarted {
                host: inv.name.clone(),
            });
            let mut planned = plan_host(&pb, &inv, &settings, check_only).await;
            planned.secrets = secrets(&pb, &inv, &settings);
            redact(&mut planned.report, &planned.secrets);
            let _ = events.send(Event::HostDone {
                report: planned.report.clone(),
            });
            planned
        }
    })
    .await;
    results
        .into_iter()
        .zip(targets)
        .map(|(res, (name, target))| match res {
            Ok(p) => p,
            // A panicking host task is a failed host, not a lost one.
            Err(e) => Assessed::new(None, internal_error(name, &e), Vec::new(), target),
        })
        .collect()
}

pub(super) fn internal_error(host: String, e: impl std::fmt::Display) -> HostReport {
    HostReport {
        host,
        status: Status::Failed,
        reason: Some(format!("internal error in kfix: {e}")),
        steps: Vec::new(),
        duration_ms: 0,
        batch: None,
        verified: Vec::new(),
    }
}

/// Open the host's connection and gather its facts. `pooled`: take it from (and leave
/// it in) the run's pool when there is one (`kfix run A B`).
pub(super) async fn connect(
    inv: &InvHost,
    s: &RunSettings,
    pooled: bool,
) -> Result<(Arc<Conn>, crate::host::Facts), (Status, String)> {
    let pool = s.pool.as_ref().filter(|_| pooled);
    if let Some(p) = pool
        && let Some(hit) = p.get(&inv.name).await
    {
        return Ok(hit);
    }
    let become_ = Become {
        enabled: inv.become_(),
        user: inv.become_user().map(str::to_string),
    };
    let mut again = true;
    loop {
        let conn = Conn::open(
            &target_of(inv),
            become_.clone(),
            &s.config.ssh,
            s.config.command_timeout,
        )
        .await
        .map_err(|e| (Status::Unreachable, e.reason()))?;
        match gather_facts(&conn).await {
            Ok(f) => {
                let conn = Arc::new(conn);
                if let Some(p) = pool {
                    p.put(&inv.name, &conn, &f).await;
                }
                return Ok((conn, f));
            }
            // Facts are only read: a connection that ended while they were (see
            // [`connection_ended`]) is opened once more.
            Err(e)
                if std::mem::take(&mut again)
                    && host_error_status(&e) == Status::Unreachable
                    && !conn.alive().await =>
            {
                conn.close().await;
            }
            Err(e) => {
                conn.close().await;
                return Err((host_error_status(&e), host_error_reason(&e)));
            }
        }
    }
}

/// Did a host's `reports` (one per playbook read over `conn`) end unreachable because
/// the connection ended (the SSH master gone: a dropped link, or a node too loaded to
/// answer the master's keep-alives in time) rather than the host refusing? Assessment
/// only reads, so such a host is assessed once more over a new connection, as a
/// command channel found ended is replaced. The master is asked once.
pub(super) async fn connection_ended(reports: &[HostReport], conn: &Conn) -> bool {
    reports.iter().any(|r| r.status == Status::Unreachable) && !conn.alive().await
}

/// A host's facts over a fresh connection (closed afterwards): for `kfix serve`, which
/// matches alerts against the hostnames nodes report.
pub async fn facts_of(inv: &InvHost, s: &RunSettings) -> Result<crate::host::Facts, String> {
    let (conn, facts) = connect(inv, s, true).await.map_err(|(_, why)| why)?;
    Conn::close_shared(conn).await;
    Ok(facts)
}

pub(super) async fn plan_host(
    pb: &Playbook,
    inv: &InvHost,
    s: &RunSettings,
    check_only: bool,
) -> Assessed {
    let started = Instant::now();
    let mut again = true;
    loop {
        match connect(inv, s, true).await {
            Ok((conn, facts)) => {
                let a = assess(pb, inv, conn.clone(), facts, s, check_only).await;
                if std::mem::take(&mut again)
                    && connection_ended(std::slice::from_ref(&a.report), &conn).await
                {
                    close_delegates(a.delegates).await;
                    continue;
                }
                return a;
            }
            Err((status, why)) => {
                let mut report = internal_error(inv.name.clone(), "");
                report.status = status;
                report.reason = Some(why);
                // How long the connection took to fail (a timeout's seconds), not 0.
                report.duration_ms = elapsed_ms(started);
                return Assessed::new(None, report, Vec::new(), target_rec(inv));
            }
        }
    }
}

/// Preconditions, the plan of every step, and detection, over an open connection.
pub(super) async fn assess(
    pb: &Playbook,
    inv: &InvHost,
    conn: Arc<Conn>,
    facts: crate::host::Facts,
    s: &RunSettings,
    check_only: bool,
) -> Assessed {
    let mut delegates = Vec::new();
    let mut step_on = Vec::new();
    let mut p = assess_with(
        pb,
        inv,
        conn,
        facts,
        s,
        check_only,
        &mut delegates,
        &mut step_on,
    )
    .await;
    p.delegates = delegates;
    p.step_on = step_on;
    p
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn assess_with(
    pb: &Playbook,
    inv: &InvHost,
    conn: Arc<Conn>,
    facts: crate::host::Facts,
    s: &RunSettings,
    check_only: bool,
    delegates: &mut Vec<Delegate>,
    step_on: &mut Vec<Option<usize>>,
) -> Assessed {
    let started = Instant::now();
    let mut report = HostReport {
        host: inv.name.clone(),
        status: Status::Failed,
        reason: None,
        steps: Vec::new(),
        duration_ms: 0,
        batch: None,
        verified: Vec::new(),
    };
    let done = |mut report: HostReport,
                host: Option<Host>,
                plans: Vec<StepPlan>,
                status: Status,
                reason: Option<String>| {
        report.status = status;
        report.reason = reason;
        report.duration_ms = elapsed_ms(started);
        Assessed::new(host, report, plans, target_rec(inv))
    };
    // A host error in one phase (`gather`, `detect`): the host's outcome, nothing planned.
    let broke = |report: HostReport, host: Host, phase: &str, e: HostError| {
        done(
            report,
            Some(host),
            Vec::new(),
            host_error_status(&e),
            Some(format!("{phase}: {e}")),
        )
    };
    let mut host = Host::assessing(
        conn,
        context(pb, inv, &facts, s, serde_json::Map::new()),
        facts,
        s.run_id.clone(),
        pb.file.display().to_string(),
        secrets(pb, inv, s),
    );
    // The first step's reads can travel with the preconditions' (one round trip less);
    // its plan counts only if they hold. The guard evaluates them on its own view of
    // the host: they never see what that plan predicts.
    let mut first_plan = None;
    let unmet = if !check_only && plans_first_step_early(pb) {
        let guard = Host::assessing(
            host.conn.clone(),
            host.ctx.clone(),
            host.facts.clone(),
            s.run_id.clone(),
            host.playbook_file.clone(),
            host.secrets.clone(),
        );
        host.set_overlay(true);
        let (unmet, first) = tokio::join!(
            unmet_precondition(pb, &guard),
            probe::plan_step(&pb.steps[0], &host)
        );
        first_plan = Some(first);
        unmet
    } else {
        unmet_precondition(pb, &host).await
    };
    if let Some((status, why)) = unmet {
        host.set_overlay(false);
        return done(report, Some(host), Vec::new(), status, Some(why));
    }
    // Only a relevant host needs the live hostnames (preconditions cannot read them).
    if pb.uses_inventory_hostnames {
        let why = match s.inventory_hostnames.as_deref() {
            Some(Ok(_)) => None,
            Some(Err(why)) => Some(why.clone()),
            None => Some("`inventory_hostnames` was not gathered (internal error)".to_string()),
        };
        if let Some(why) = why {
            return done(report, Some(host), Vec::new(), Status::Failed, Some(why));
        }
    }
    // Gathered after preconditions: only relevant hosts are read, and a precondition
    // never depends on a gathered value.
    let mut gathered = serde_json::Map::new();
    for g in &pb.gather {
        let var = pb.vars.iter().find(|v| v.gathered && v.name == g.name);
        // A gathered variable the operator set is not read: their value wins.
        let set = var.and_then(|_| {
            s.config
                .extra_vars
                .get(&g.name)
                .or_else(|| inv.vars.get(&g.name))
        });
        let value = match set {
            Some(v) => Ok(Some(v.clone())),
            None => probe::gather_one(g, &host)
                .await
                .map(|v| v.map(serde_json::Value::String)),
        };
        match value {
            Ok(Some(v)) => {
                gathered.insert(g.name.clone(), v);
                host.ctx = context(pb, inv, &host.facts, s, gathered.clone());
            }
            Ok(None) if var.is_some() => {
                let why = format!(
                    "gather: `{}` was not found on the host ({})\n  = hint: where this node keeps it elsewhere, set it: -e {}=VALUE (or in the inventory)",
                    g.name,
                    probe::gather_source(g),
                    g.name
                );
                return done(report, Some(host), Vec::new(), Status::Failed, Some(why));
            }
            Ok(None) => {
                gathered.insert(g.name.clone(), serde_json::Value::Null);
                host.ctx = context(pb, inv, &host.facts, s, gathered.clone());
            }
            Err(e) => return broke(report, host, "gather", e),
        }
    }
    // Delegated steps (`run_on`): connect their hosts once the context is complete.
    if let Err(why) = resolve_delegates(pb, &host, s, delegates, step_on).await {
        return done(report, Some(host), Vec::new(), Status::Failed, Some(why));
    }
    let (delegates, step_on) = (&*delegates, &*step_on);
    // A check with its own detection needs no plan (except for the steps `drift` names):
    // a step that could not be planned does not hide whether the problem is there.
    if let (true, Some(probes)) = (check_only, &pb.detect) {
        let plans = match drift_plans(pb, probes, &host, delegates, step_on).await {
            Ok(p) => p,
            Err(e) => return broke(report, host, "detect", e),
        };
        return match detected_by(probes, &host, &plans).await {
            Ok(Some(what)) => {
                let mut why = format!("detected: {what}");
                if let Some(r) = &pb.remedy {
                    why.push_str(&format!("; remedy: {r}"));
                }
                done(
                    report,
                    Some(host),
                    Vec::new(),
                    Status::WouldChange,
                    Some(why),
                )
            }
            Ok(None) => done(
                report,
                Some(host),
                Vec::new(),
                Status::Healthy,
                Some("problem not detected".into()),
            ),
            Err(e) => broke(report, host, "detect", e),
        };
    }
    // Plan every step against the predicted state left by the steps before it.
    if first_plan.is_none() {
        host.set_overlay(true);
    }
    delegates.iter().for_each(|d| d.host.set_overlay(true));
    let mut plans = Vec::new();
    for (i, step) in pb.steps.iter().enumerate() {
        let on = step_host(&host, delegates, step_on, i);
        let planned = match first_plan.take() {
            Some(p) => p,
            None => probe::plan_step(step, on).await,
        };
        match planned {
            Ok(p) => plans.push(p),
            Err(e) => {
                host.set_overlay(false);
                delegates.iter().for_each(|d| d.host.set_overlay(false));
                let msg = match step_on.get(i).copied().flatten() {
                    Some(d) => format!("{e} (on `{}`, run_on)", delegates[d].name),
                    None => e.to_string(),
                };
                report.steps = plans.iter().map(StepReport::from_plan).collect();
                return done(
                    report,
                    Some(host),
                    plans,
                    host_error_status(&e),
                    Some(format!("planning step `{}`: {msg}", step.id)),
                );
            }
        }
    }
    host.set_overlay(false);
    delegates.iter().for_each(|d| d.host.set_overlay(false));
    crate::plan::unify_fingerprints(&mut plans, step_on);
    report.steps = plans.iter().map(StepReport::from_plan).collect();
    for (st, on) in report.steps.iter_mut().zip(step_on) {
        st.run_on = on.map(|d| delegates[d].name.clone());
    }
    let by_id: BTreeMap<String, StepPlan> =
        plans.iter().map(|p| (p.id.clone(), p.clone())).collect();
    let changes = plans.iter().any(|p| p.verdict != Verdict::NoChange);
    let detected = match &pb.detect {
        None => changes.then(|| "steps would change the host".to_string()),
        Some(probes) => match detected_by(probes, &host, &by_id).await {
            Ok(d) => d,
            Err(e) => {
                let st = host_error_status(&e);
                return done(report, Some(host), plans, st, Some(format!("detect: {e}")));
            }
        },
    };
    match detected {
        None => {
            // Nothing will be done: no step of a healthy host reports a change.
            for st in report.steps.iter_mut() {
                if st.verdict != Verdict::NoChange {
                    st.verdict = Verdict::NotNeeded;
                    st.status = StepStatus::Unchanged;
                    st.reason = Some("the problem is not detected on this host".into());
                    st.diff.clear();
                    st.commands.clear();
                    st.operations.clear();
                    st.note = None;
                    st.irreversible = None;
                }
            }
            done(
                report,
                Some(host),
                plans,
                Status::Healthy,
                Some("problem not detected".into()),
            )
        }
        Some(what) if check_only => done(
            report,
            Some(host),
            plans,
            Status::WouldChange,
            Some(format!("detected: {what}")),
        ),
        Some(what) if !changes => done(
            report,
            Some(host),
            plans,
            Status::Failed,
            Some(format!(
                "detected ({what}) but no step would change anything: this playbook cannot fix this host"
            )),
        ),
        Some(what) => done(
            report,
            Some(host),
            plans,
            Status::WouldChange,
            Some(format!("detected: {what}")),
        ),
    }
}

/// The first precondition that does not hold (or cannot be evaluated), as the host's
/// status and reason. In order, each only once the ones before it hold: a precondition
/// guards the next (whether a command a later one runs exists here, say).
pub(super) async fn unmet_precondition(pb: &Playbook, host: &Host) -> Option<(Status, String)> {
    let empty = BTreeMap::new();
    for p in &pb.preconditions {
        match probe::eval(p, host, &empty).await {
            Ok(o) if o.holds => {}
            Ok(o) => {
                return Some((
                    Status::Skipped,
                    format!("precondition not met: {}", o.summary),
                ));
            }
            Err(e) => return Some((host_error_status(&e), format!("precondition: {e}"))),
        }
    }
    None
}

/// Whether the first step may be planned while the preconditions are evaluated: when
/// nothing between them waits for the preconditions (no gathering, no live hostnames,
/// no `run_on`) and planning the step only reads built-in state (no `only_if` probe;
/// see [`crate::playbook::StepKind::plans_by_builtin_reads`]). On a host the
/// preconditions rule out, that plan is dropped unused.
pub(super) fn plans_first_step_early(pb: &Playbook) -> bool {
    pb.steps
        .first()
        .is_some_and(|first| first.only_if.is_empty() && first.kind.plans_by_builtin_reads())
        && pb.gather.is_empty()
        && !pb.uses_inventory_hostnames
        && pb.steps.iter().all(|st| st.run_on.is_none())
}

/// The summary of the first detect probe that holds on the host, if any.
pub(super) async fn detected_by(
    probes: &[crate::playbook::Probe],
    host: &Host,
    plans: &BTreeMap<String, StepPlan>,
) -> Result<Option<String>, HostError> {
    for o in probe::eval_all(probes, host, plans).await {
        let o = o?;
        if o.holds && !o.skipped {
            return Ok(Some(o.summary));
        }
    }
    Ok(None)
}
