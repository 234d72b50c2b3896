//! The run engine: per host connect, gather facts, check preconditions, plan, detect;
//! then (not in a dry-run) re-check, apply step by step, verify, and undo in reverse on
//! any failure. It never prints: progress goes out as [`Event`]s, results as data.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;

use crate::host::{Host, HostError, gather_facts};
use crate::inventory::Host as InvHost;
use crate::journal::{Journal, Record, TargetRec};
use crate::plan::{StepPlan, Undo, Verdict};
use crate::playbook::Playbook;
use crate::probe;
use crate::transport::{Become, Conn, LockOutcome, SshOptions, Target, Traffic, TransportError};

/// A host's final state in a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Healthy,
    Skipped,
    WouldChange,
    Changed,
    Failed,
    RollbackFailed,
    Unreachable,
    /// Not started because the rollout halted first (fleet rollouts, issue #3).
    #[allow(dead_code)]
    NotAttempted,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Healthy => "healthy",
            Status::Skipped => "skipped",
            Status::WouldChange => "would_change",
            Status::Changed => "changed",
            Status::Failed => "failed",
            Status::RollbackFailed => "rollback_failed",
            Status::Unreachable => "unreachable",
            Status::NotAttempted => "not_attempted",
        }
    }

    /// Healthy, skipped, would_change and changed are fine; the rest need attention.
    pub fn is_ok(self) -> bool {
        matches!(
            self,
            Status::Healthy | Status::Skipped | Status::WouldChange | Status::Changed
        )
    }
}

/// What happened to one step on one host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Planned only (dry-run, or the host did not get to apply).
    Planned,
    Applied,
    /// Applied, then undone by the rollback.
    RolledBack,
    /// Nothing to do.
    Unchanged,
    Failed,
    UndoFailed,
    NotRun,
}

#[derive(Clone, Debug, Serialize)]
pub struct StepReport {
    pub id: String,
    pub kind: &'static str,
    pub verdict: Verdict,
    pub status: StepStatus,
    pub diff: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The exact command lines apply runs, in order.
    pub commands: Vec<String>,
    /// What each operation does, with kfix's own scripts elided (human output).
    #[serde(skip)]
    pub operations: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub irreversible: Option<String>,
    /// What the operator must know beyond the diff (what a rollback will not restore).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The host the step runs on when it is delegated (`run_on`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_on: Option<String>,
}

impl StepReport {
    fn from_plan(p: &StepPlan) -> Self {
        StepReport {
            id: p.id.clone(),
            kind: p.kind,
            verdict: p.verdict,
            status: if p.verdict == Verdict::NoChange {
                StepStatus::Unchanged
            } else {
                StepStatus::Planned
            },
            diff: p.diff.clone(),
            reason: p.reason.clone(),
            commands: p.ops.iter().map(|o| o.cmd.display()).collect(),
            operations: p
                .ops
                .iter()
                .map(|o| format!("{}: $ {}", o.desc, o.cmd.display_short()))
                .collect(),
            irreversible: p.irreversible.clone(),
            note: p.note.clone(),
            run_on: None,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct HostReport {
    pub host: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub steps: Vec<StepReport>,
    pub duration_ms: u64,
    /// The rollout batch the host was applied in (real runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<usize>,
    /// What verification found after applying (each probe's summary), the evidence
    /// that the fix holds.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub verified: Vec<String>,
}

/// Progress, for the reporter.
#[derive(Clone, Debug)]
pub enum Event {
    Phase {
        name: &'static str,
        hosts: usize,
    },
    /// A rollout batch starts.
    Batch {
        batch: usize,
        of: usize,
        hosts: usize,
    },
    /// Waiting between batches.
    Pause {
        secs: u64,
    },
    HostStarted {
        host: String,
    },
    HostDone {
        report: HostReport,
    },
}

/// Settings of a run that the engine needs.
#[derive(Clone, Debug)]
pub struct RunSettings {
    pub run_id: String,
    pub forks: usize,
    pub ssh: SshOptions,
    pub command_timeout: Duration,
    pub extra_vars: BTreeMap<String, serde_json::Value>,
    /// Variables whose values are secret whatever the playbook says (`--secret-file`).
    pub secret_vars: std::collections::BTreeSet<String>,
    /// The run journal (real runs only).
    pub journal: Option<Arc<Journal>>,
    pub policy: crate::rollout::Policy,
    /// Set on Ctrl-C: no new host starts; running ones finish or roll back.
    pub stop: Arc<std::sync::atomic::AtomicBool>,
    /// Applying on one host may take at most this long, then it is rolled back.
    pub host_timeout: Option<Duration>,
    /// The whole inventory: where `run_on` patterns select delegate hosts.
    pub inventory: Arc<crate::inventory::Inventory>,
    /// `inventory_hostnames`: every inventory host's hostname (facts), gathered before
    /// planning a playbook that reads it; an error when some host did not answer.
    pub inventory_hostnames: Option<Arc<Result<Vec<String>, String>>>,
    /// Connections shared by the playbooks of one command (`kfix run A B`); None: each
    /// playbook connects and closes on its own.
    pub pool: Option<Arc<crate::pool::Pool>>,
}

/// The hostname every inventory host reports (facts), sorted; an error naming each
/// host that did not answer (the list would be incomplete).
pub async fn gather_inventory_hostnames(
    settings: &Arc<RunSettings>,
) -> Result<Vec<String>, String> {
    let hosts = settings.inventory.hosts.clone();
    let names: Vec<String> = hosts.iter().map(|h| h.name.clone()).collect();
    let results = bounded(hosts, settings.forks, |inv| {
        let s = settings.clone();
        async move { facts_of(&inv, &s).await.map(|f| f.hostname) }
    })
    .await;
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for (r, n) in results.into_iter().zip(names) {
        match r {
            Ok(Ok(h)) => out.push(h),
            Ok(Err(why)) => missing.push(format!("{n}: {why}")),
            Err(e) => missing.push(format!("{n}: {e}")),
        }
    }
    if !missing.is_empty() {
        return Err(format!(
            "`inventory_hostnames`: {} did not answer, so the list of live hostnames would be incomplete ({}); nothing was planned\n  = hint: bring them back, or remove hosts that are gone from the inventory",
            crate::text::count(missing.len(), "inventory host"),
            missing.join("; ")
        ));
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Settings with `inventory_hostnames` gathered, when one of `pbs` reads it.
pub async fn with_inventory_hostnames(
    pbs: &[&Playbook],
    settings: Arc<RunSettings>,
) -> Arc<RunSettings> {
    if settings.inventory_hostnames.is_some() || !pbs.iter().any(|p| p.uses_inventory_hostnames) {
        return settings;
    }
    let names = gather_inventory_hostnames(&settings).await;
    Arc::new(RunSettings {
        inventory_hostnames: Some(Arc::new(names)),
        ..(*settings).clone()
    })
}

/// A host after planning, kept (with its connection) for the apply phase.
pub struct Planned {
    pub host: Option<Host>,
    pub report: HostReport,
    plans: Vec<StepPlan>,
    /// Secret (name, value)s to mask in every report and journal record of this host.
    secrets: Vec<(String, String)>,
    /// How to reach the host again (journaled for `kfix rollback`).
    target: TargetRec,
    /// The hosts steps are delegated to (`run_on`), connected while planning.
    delegates: Vec<Delegate>,
    /// Per step: the index of its delegate in `delegates`, if it has one.
    step_on: Vec<Option<usize>>,
}

impl Planned {
    /// A host's planning outcome with no secrets or delegates yet (set by the caller).
    fn new(
        host: Option<Host>,
        report: HostReport,
        plans: Vec<StepPlan>,
        target: TargetRec,
    ) -> Self {
        Planned {
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

/// A host a step is delegated to (`run_on`): planned and applied over its own
/// connection, while templates still see the fixed host's variables and facts (plus
/// `delegate.name` and `delegate.hostname`). No host lock is taken on it: many fixed
/// hosts may delegate to one control-plane host at once.
pub struct Delegate {
    /// Its inventory name.
    pub name: String,
    /// How to reach it again (journaled with each operation that ran on it).
    pub target: TargetRec,
    /// The delegate's connection and facts (what step logic reads), with the fixed
    /// host's template context.
    pub host: Host,
}

/// Close the connections of delegate hosts.
async fn close_delegates(ds: Vec<Delegate>) {
    for d in ds {
        Conn::close_shared(d.host.conn).await;
    }
}

/// The host step `i` plans and applies on: its delegate, or the fixed host.
fn step_host<'a>(
    host: &'a Host,
    delegates: &'a [Delegate],
    step_on: &[Option<usize>],
    i: usize,
) -> &'a Host {
    match step_on.get(i).copied().flatten() {
        Some(d) => delegates.get(d).map_or(host, |d| &d.host),
        None => host,
    }
}

/// Connect the delegates of every step with `run_on` (the first reachable host each
/// pattern selects; a host already connected for an earlier step is reused). On error
/// the delegates connected so far stay in `delegates` (to be closed).
async fn resolve_delegates(
    pb: &Playbook,
    host: &Host,
    s: &RunSettings,
    delegates: &mut Vec<Delegate>,
    step_on: &mut Vec<Option<usize>>,
) -> Result<(), String> {
    let mut by_pattern: BTreeMap<String, usize> = BTreeMap::new();
    for step in &pb.steps {
        let Some(t) = &step.run_on else {
            step_on.push(None);
            continue;
        };
        let pattern = host
            .render(t)
            .map_err(|e| format!("step `{}`: run_on: {e}", step.id))?;
        if let Some(&i) = by_pattern.get(&pattern) {
            step_on.push(Some(i));
            continue;
        }
        let candidates = s.inventory.select(Some(&pattern)).map_err(|e| {
            format!(
                "step `{}`: run_on `{pattern}`: {e}\n  = hint: name an inventory host or group (`kfix inventory --limit '{pattern}'` lists what it selects)",
                step.id
            )
        })?;
        let mut tried = Vec::new();
        let mut found = None;
        for c in candidates {
            if let Some(i) = delegates.iter().position(|d| d.name == c.name) {
                found = Some(i);
                break;
            }
            match connect(c, s, true).await {
                Ok((conn, facts)) => {
                    let ctx = minijinja::context! {
                        delegate => minijinja::context! {
                            name => c.name.clone(),
                            hostname => facts.hostname.clone(),
                        },
                        ..host.ctx.clone()
                    };
                    delegates.push(Delegate {
                        name: c.name.clone(),
                        target: target_rec(c),
                        host: Host::assessing(
                            conn,
                            ctx,
                            facts,
                            host.run_id.clone(),
                            host.playbook_file.clone(),
                            host.secrets.clone(),
                        ),
                    });
                    found = Some(delegates.len() - 1);
                    break;
                }
                Err((_, why)) => tried.push(format!("{}: {why}", c.name)),
            }
        }
        match found {
            Some(i) => {
                by_pattern.insert(pattern, i);
                step_on.push(Some(i));
            }
            None => {
                return Err(format!(
                    "step `{}`: run_on `{pattern}`: no reachable host ({})",
                    step.id,
                    tried.join("; ")
                ));
            }
        }
    }
    Ok(())
}

pub fn target_rec(h: &InvHost) -> TargetRec {
    TargetRec {
        local: h.is_local(),
        address: h.address().to_string(),
        port: h.port(),
        user: h.user().map(str::to_string),
        key_file: h.key_file().map(str::to_string),
        become_: h.become_(),
        become_user: h.become_user().map(str::to_string),
        jump: h.jump_hosts().unwrap_or_default(),
    }
}

/// Where and how to connect, from a journaled target.
pub fn target_from(t: &TargetRec) -> (Target, Become) {
    let target = if t.local {
        Target::Local
    } else {
        Target::Ssh {
            address: t.address.clone(),
            port: t.port,
            user: t.user.clone(),
            key_file: t.key_file.as_ref().map(std::path::PathBuf::from),
            jump: t.jump.clone(),
        }
    };
    (
        target,
        Become {
            enabled: t.become_,
            user: t.become_user.clone(),
        },
    )
}

fn target_of(h: &InvHost) -> Target {
    if h.is_local() {
        Target::Local
    } else {
        Target::Ssh {
            address: h.address().to_string(),
            port: h.port(),
            user: h.user().map(str::to_string),
            key_file: h.key_file().map(std::path::PathBuf::from),
            jump: h.jump_hosts().unwrap_or_default(),
        }
    }
}

/// The template context: playbook defaults < inventory vars < extra vars, plus
/// built-ins (facts, inventory_hostname, groups, kfix).
pub fn context(
    pb: &Playbook,
    inv: &InvHost,
    facts: &crate::host::Facts,
    s: &RunSettings,
    gathered: serde_json::Map<String, serde_json::Value>,
) -> minijinja::Value {
    let mut m = serde_json::Map::new();
    for v in &pb.vars {
        m.insert(v.name.clone(), v.default.clone());
    }
    for (k, v) in &inv.vars {
        m.insert(k.clone(), v.clone());
    }
    for (k, v) in &s.extra_vars {
        m.insert(k.clone(), v.clone());
    }
    // A gathered variable is what the host says, unless the operator set it (then the
    // gathered value is theirs too).
    for v in pb.vars.iter().filter(|v| v.gathered) {
        if let Some(g) = gathered.get(&v.name) {
            m.insert(v.name.clone(), g.clone());
        }
    }
    m.insert("inventory_hostname".into(), inv.name.clone().into());
    m.insert("groups".into(), serde_json::json!(inv.groups));
    m.insert(
        "facts".into(),
        serde_json::to_value(facts).unwrap_or_default(),
    );
    m.insert(
        "kfix".into(),
        serde_json::json!({"run_id": s.run_id, "playbook": pb.id}),
    );
    m.insert("gathered".into(), serde_json::Value::Object(gathered));
    if let Some(Ok(names)) = s.inventory_hostnames.as_deref() {
        m.insert("inventory_hostnames".into(), serde_json::json!(names));
    }
    minijinja::Value::from(minijinja::value::Serde(serde_json::Value::Object(m)))
}

/// The playbook's `secret: true` variables and those given by `--secret-file`, as
/// (name, value rendered into commands) for this host, so reports and the journal can
/// mask them and no command carries one as an argument.
pub fn secrets(pb: &Playbook, inv: &InvHost, s: &RunSettings) -> Vec<(String, String)> {
    let mut names: Vec<&str> = pb
        .vars
        .iter()
        .filter(|v| v.secret)
        .map(|v| v.name.as_str())
        .collect();
    names.extend(s.secret_vars.iter().map(String::as_str));
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .filter_map(|name| {
            let default = pb.vars.iter().find(|v| v.name == name).map(|v| &v.default);
            let val = s
                .extra_vars
                .get(name)
                .or_else(|| inv.vars.get(name))
                .or(default)?;
            let t = crate::template::json_text(val);
            (!t.is_empty() && !val.is_null()).then(|| (name.to_string(), t))
        })
        .collect()
}

/// Replace every secret value in a report's text with `********`.
fn redact(report: &mut HostReport, secrets: &[(String, String)]) {
    if secrets.is_empty() {
        return;
    }
    let mask = |s: &mut String| crate::secrets::mask(s, secrets);
    if let Some(r) = report.reason.as_mut() {
        mask(r);
    }
    for st in report.steps.iter_mut() {
        mask(&mut st.diff);
        st.commands.iter_mut().for_each(mask);
        st.operations.iter_mut().for_each(mask);
        if let Some(r) = st.reason.as_mut() {
            mask(r);
        }
    }
}

fn elapsed_ms(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn host_error_status(e: &HostError) -> Status {
    match e {
        HostError::Transport(TransportError::Unreachable(_)) => Status::Unreachable,
        _ => Status::Failed,
    }
}

/// A host error as a report's reason: an unreachable host's is ssh's own words (the
/// status already says `unreachable`), anything else as it displays.
fn host_error_reason(e: &HostError) -> String {
    match e {
        HostError::Transport(t) => t.reason(),
        other => other.to_string(),
    }
}

/// Plan every host (bounded concurrency). `check_only` stops after detection.
pub async fn plan_all(
    pb: Arc<Playbook>,
    hosts: Vec<InvHost>,
    settings: Arc<RunSettings>,
    check_only: bool,
    events: mpsc::UnboundedSender<Event>,
) -> Vec<Planned> {
    let _ = events.send(Event::Phase {
        name: if check_only { "checking" } else { "planning" },
        hosts: hosts.len(),
    });
    let settings = with_inventory_hostnames(&[&*pb], settings).await;
    let targets: Vec<(String, TargetRec)> = hosts
        .iter()
        .map(|h| (h.name.clone(), target_rec(h)))
        .collect();
    let results = bounded(hosts, settings.forks, |inv| {
        let (pb, settings, events) = (pb.clone(), settings.clone(), events.clone());
        async move {
            if settings.stop.load(std::sync::atomic::Ordering::SeqCst) {
                let mut report = internal_error(inv.name.clone(), "");
                report.status = Status::NotAttempted;
                report.reason = Some("interrupted (Ctrl-C) before this host was planned".into());
                return Planned::new(None, report, Vec::new(), target_rec(&inv));
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
            Err(e) => Planned::new(None, internal_error(name, &e), Vec::new(), target),
        })
        .collect()
}

fn internal_error(host: String, e: impl std::fmt::Display) -> HostReport {
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
async fn connect(
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
    let conn = Conn::open(&target_of(inv), become_, &s.ssh, s.command_timeout)
        .await
        .map_err(|e| (Status::Unreachable, e.reason()))?;
    match gather_facts(&conn).await {
        Ok(f) => {
            let conn = Arc::new(conn);
            if let Some(p) = pool {
                p.put(&inv.name, &conn, &f).await;
            }
            Ok((conn, f))
        }
        Err(e) => {
            conn.close().await;
            Err((host_error_status(&e), host_error_reason(&e)))
        }
    }
}

/// A host's facts over a fresh connection (closed afterwards): for `kfix serve`, which
/// matches alerts against the hostnames nodes report.
pub async fn facts_of(inv: &InvHost, s: &RunSettings) -> Result<crate::host::Facts, String> {
    let (conn, facts) = connect(inv, s, true).await.map_err(|(_, why)| why)?;
    Conn::close_shared(conn).await;
    Ok(facts)
}

async fn plan_host(pb: &Playbook, inv: &InvHost, s: &RunSettings, check_only: bool) -> Planned {
    let started = Instant::now();
    match connect(inv, s, true).await {
        Ok((conn, facts)) => assess(pb, inv, conn, facts, s, check_only).await,
        Err((status, why)) => {
            let mut report = internal_error(inv.name.clone(), "");
            report.status = status;
            report.reason = Some(why);
            // How long the connection took to fail (a timeout's seconds), not 0.
            report.duration_ms = elapsed_ms(started);
            Planned::new(None, report, Vec::new(), target_rec(inv))
        }
    }
}

/// Preconditions, the plan of every step, and detection, over an open connection.
async fn assess(
    pb: &Playbook,
    inv: &InvHost,
    conn: Arc<Conn>,
    facts: crate::host::Facts,
    s: &RunSettings,
    check_only: bool,
) -> Planned {
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
async fn assess_with(
    pb: &Playbook,
    inv: &InvHost,
    conn: Arc<Conn>,
    facts: crate::host::Facts,
    s: &RunSettings,
    check_only: bool,
    delegates: &mut Vec<Delegate>,
    step_on: &mut Vec<Option<usize>>,
) -> Planned {
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
        Planned::new(host, report, plans, target_rec(inv))
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
        let set = var.and_then(|_| s.extra_vars.get(&g.name).or_else(|| inv.vars.get(&g.name)));
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
            Err(e) => {
                let st = host_error_status(&e);
                return done(
                    report,
                    Some(host),
                    Vec::new(),
                    st,
                    Some(format!("gather: {e}")),
                );
            }
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
            Err(e) => {
                let st = host_error_status(&e);
                return done(
                    report,
                    Some(host),
                    Vec::new(),
                    st,
                    Some(format!("detect: {e}")),
                );
            }
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
            Err(e) => {
                let st = host_error_status(&e);
                done(
                    report,
                    Some(host),
                    Vec::new(),
                    st,
                    Some(format!("detect: {e}")),
                )
            }
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
    crate::plan::unify_probes(&mut plans, step_on);
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
async fn unmet_precondition(pb: &Playbook, host: &Host) -> Option<(Status, String)> {
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
fn plans_first_step_early(pb: &Playbook) -> bool {
    pb.steps
        .first()
        .is_some_and(|first| first.only_if.is_empty() && first.kind.plans_by_builtin_reads())
        && pb.gather.is_empty()
        && !pb.uses_inventory_hostnames
        && pb.steps.iter().all(|st| st.run_on.is_none())
}

/// The summary of the first detect probe that holds on the host, if any.
async fn detected_by(
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

/// One host's row of `kfix check --all`.
pub struct HostScan {
    pub host: String,
    /// One report per playbook, in the playbooks' order.
    pub reports: Vec<HostReport>,
    /// What the scan sent: round trips (facts and each batch count once), the commands
    /// they carried and the sessions they opened.
    pub traffic: Traffic,
}

/// Every playbook's preconditions and detection on every host, read-only, over one
/// connection per host. A host's playbooks are assessed concurrently, so the probes
/// they issue at the same moment travel as one batch.
pub async fn check_matrix(
    pbs: Vec<Arc<Playbook>>,
    hosts: Vec<InvHost>,
    settings: Arc<RunSettings>,
    events: mpsc::UnboundedSender<Event>,
) -> Vec<HostScan> {
    let _ = events.send(Event::Phase {
        name: "checking",
        hosts: hosts.len(),
    });
    let names: Vec<String> = hosts.iter().map(|h| h.name.clone()).collect();
    let n = pbs.len();
    let refs: Vec<&Playbook> = pbs.iter().map(|p| &**p).collect();
    let settings = with_inventory_hostnames(&refs, settings).await;
    let results = bounded(hosts, settings.forks, |inv| {
        let (pbs, settings, events) = (pbs.clone(), settings.clone(), events.clone());
        async move {
            let _ = events.send(Event::HostStarted {
                host: inv.name.clone(),
            });
            let (reports, traffic) = match connect(&inv, &settings, false).await {
                Err((status, why)) => {
                    let reports = pbs
                        .iter()
                        .map(|_| {
                            let mut r = internal_error(inv.name.clone(), "");
                            r.status = status;
                            r.reason = Some(why.clone());
                            r
                        })
                        .collect();
                    (reports, Traffic::default())
                }
                Ok((conn, facts)) => {
                    let out = futures_util::future::join_all(pbs.iter().map(|pb| {
                        let (conn, facts, inv, settings) =
                            (conn.clone(), facts.clone(), &inv, &settings);
                        async move {
                            let p = assess(pb, inv, conn, facts, settings, true).await;
                            close_delegates(p.delegates).await;
                            let mut report = p.report;
                            redact(&mut report, &secrets(pb, inv, settings));
                            report
                        }
                    }))
                    .await;
                    let traffic = conn.traffic();
                    Conn::close_shared(conn).await;
                    (out, traffic)
                }
            };
            if let Some(last) = reports.last() {
                let _ = events.send(Event::HostDone {
                    report: last.clone(),
                });
            }
            (reports, traffic)
        }
    })
    .await;
    results
        .into_iter()
        .zip(names)
        .map(|(r, host)| {
            let (reports, traffic) = r.unwrap_or_else(|e| {
                (
                    (0..n).map(|_| internal_error(host.clone(), &e)).collect(),
                    Traffic::default(),
                )
            });
            HostScan {
                host,
                reports,
                traffic,
            }
        })
        .collect()
}

/// How the apply phase went, beyond the host reports.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Rollout {
    pub batches: Vec<BatchReport>,
    /// Why the rollout stopped before every host was attempted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub halted: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct BatchReport {
    pub batch: usize,
    pub hosts: Vec<String>,
    pub failed: usize,
    pub duration_ms: u64,
}

/// Run `f` on every item, at most `limit` at once, starting them in order (so with
/// `--forks 1` hosts go one after another, in inventory order). Results come back in the
/// items' order; a panicked task yields its `JoinError`.
async fn bounded<T, R, F, Fut>(
    items: Vec<T>,
    limit: usize,
    f: F,
) -> Vec<Result<R, tokio::task::JoinError>>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = R> + Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    let mut index_of = std::collections::HashMap::new();
    let mut results: Vec<Option<Result<R, tokio::task::JoinError>>> =
        items.iter().map(|_| None).collect();
    let mut next = items.into_iter().enumerate();
    loop {
        while set.len() < limit.max(1) {
            let Some((i, item)) = next.next() else { break };
            let handle = set.spawn(f(item));
            index_of.insert(handle.id(), i);
        }
        match set.join_next_with_id().await {
            Some(Ok((id, r))) => {
                if let Some(i) = index_of.get(&id) {
                    results[*i] = Some(Ok(r));
                }
            }
            Some(Err(e)) => {
                if let Some(i) = index_of.get(&e.id()) {
                    results[*i] = Some(Err(e));
                }
            }
            None => break,
        }
    }
    results.into_iter().flatten().collect()
}

/// Why no further host may start: the failure budget was exceeded, or Ctrl-C.
fn stop_reason(
    halted: &std::sync::Mutex<Option<String>>,
    settings: &RunSettings,
) -> Option<String> {
    halted.lock().ok().and_then(|h| h.clone()).or_else(|| {
        settings
            .stop
            .load(std::sync::atomic::Ordering::SeqCst)
            .then(|| "interrupted (Ctrl-C)".to_string())
    })
}

/// A host the halted rollout will not start: nothing was applied.
async fn not_attempted(p: Planned, why: &str) -> HostReport {
    let mut report = p.report;
    report.status = Status::NotAttempted;
    report.reason = Some(format!("rollout halted: {why}"));
    mark_not_run(&mut report);
    if let Some(h) = p.host {
        Conn::close_shared(h.conn).await;
    }
    close_delegates(p.delegates).await;
    report
}

fn is_failure(s: Status) -> bool {
    matches!(
        s,
        Status::Failed | Status::RollbackFailed | Status::Unreachable
    )
}

/// Apply the planned changes batch by batch (canary first when the policy says so),
/// bounded concurrency inside a batch, halting when the failure budget is exceeded or
/// the operator pressed Ctrl-C: hosts not started by then are `not_attempted`.
pub async fn apply_all(
    pb: Arc<Playbook>,
    planned: Vec<Planned>,
    settings: Arc<RunSettings>,
    events: mpsc::UnboundedSender<Event>,
) -> (Vec<HostReport>, Rollout) {
    let order: Vec<String> = planned.iter().map(|p| p.report.host.clone()).collect();
    let mut done: BTreeMap<String, HostReport> = BTreeMap::new();
    let mut todo = Vec::new();
    for p in planned {
        if p.report.status == Status::WouldChange {
            todo.push(p);
        } else {
            if let Some(h) = p.host {
                Conn::close_shared(h.conn).await;
            }
            close_delegates(p.delegates).await;
            done.insert(p.report.host.clone(), p.report);
        }
    }
    let total = todo.len();
    let sizes = settings.policy.serial.batches(total);
    let mut rollout = Rollout::default();
    let failures = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let halted: Arc<std::sync::Mutex<Option<String>>> = Arc::new(std::sync::Mutex::new(None));
    let mut rest = todo.into_iter();
    for (b, size) in sizes.iter().enumerate() {
        let batch: Vec<Planned> = rest.by_ref().take(*size).collect();
        let names: Vec<String> = batch.iter().map(|p| p.report.host.clone()).collect();
        let _ = events.send(Event::Phase {
            name: "applying",
            hosts: batch.len(),
        });
        let _ = events.send(Event::Batch {
            batch: b + 1,
            of: sizes.len(),
            hosts: batch.len(),
        });
        let started = Instant::now();
        let results = bounded(batch, settings.forks, |p| {
            let (pb, settings, events) = (pb.clone(), settings.clone(), events.clone());
            let (failures, halted) = (failures.clone(), halted.clone());
            async move {
                if let Some(why) = stop_reason(&halted, &settings) {
                    return not_attempted(p, &why).await;
                }
                let _ = events.send(Event::HostStarted {
                    host: p.report.host.clone(),
                });
                let secrets = p.secrets.clone();
                let mut report = apply_host(&pb, p, &settings).await;
                redact(&mut report, &secrets);
                if let Some(j) = &settings.journal {
                    let _ = j.record(&Record::HostDone {
                        host: report.host.clone(),
                        status: report.status.as_str().to_string(),
                        reason: report.reason.clone(),
                    });
                }
                if is_failure(report.status) {
                    let n = failures.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    if settings.policy.max_fail.is_exceeded(n, total)
                        && let Ok(mut h) = halted.lock()
                    {
                        h.get_or_insert_with(|| {
                            format!(
                                "{n} of {} failed, over the failure budget ({})",
                                crate::text::count(total, "host"),
                                settings.policy.max_fail.describe()
                            )
                        });
                    }
                }
                let _ = events.send(Event::HostDone {
                    report: report.clone(),
                });
                report
            }
        })
        .await;
        let mut batch_failed = 0;
        for (res, name) in results.into_iter().zip(&names) {
            let mut r = match res {
                Ok(r) => r,
                Err(e) => internal_error(name.clone(), &e),
            };
            r.batch = Some(b + 1);
            batch_failed += usize::from(is_failure(r.status));
            done.insert(r.host.clone(), r);
        }
        rollout.batches.push(BatchReport {
            batch: b + 1,
            hosts: names.clone(),
            failed: batch_failed,
            duration_ms: elapsed_ms(started),
        });
        if let Some(rule) = settings.policy.max_fail_per_batch
            && rule.is_exceeded(batch_failed, names.len())
            && let Ok(mut h) = halted.lock()
        {
            h.get_or_insert_with(|| {
                format!(
                    "{batch_failed} of {} in batch {} failed ({} per batch)",
                    crate::text::count(names.len(), "host"),
                    b + 1,
                    rule.describe()
                )
            });
        }
        if let Some(why) = stop_reason(&halted, &settings) {
            rollout.halted = Some(why.clone());
            for p in rest.by_ref() {
                let report = not_attempted(p, &why).await;
                done.insert(report.host.clone(), report);
            }
            break;
        }
        if b + 1 < sizes.len() && !settings.policy.pause.is_zero() {
            let _ = events.send(Event::Pause {
                secs: settings.policy.pause.as_secs(),
            });
            tokio::time::sleep(settings.policy.pause).await;
        }
    }
    if rollout.halted.is_none() {
        rollout.halted = halted.lock().ok().and_then(|h| h.clone());
    }
    let reports = order.into_iter().filter_map(|h| done.remove(&h)).collect();
    (reports, rollout)
}

/// Close the connections of planned hosts without applying (dry-run, check, declined).
pub async fn finish(planned: Vec<Planned>) -> Vec<HostReport> {
    let mut out = Vec::new();
    for p in planned {
        if let Some(h) = p.host {
            Conn::close_shared(h.conn).await;
        }
        close_delegates(p.delegates).await;
        out.push(p.report);
    }
    out
}

/// One applied operation, kept for the rollback.
struct Applied {
    step: usize,
    /// The operation's index in the journal (per host).
    index: usize,
    undo: Undo,
    /// The fingerprint of the state it changes (see [`crate::plan::Op::probe`]).
    probe: Option<crate::quote::Cmd>,
    /// Its delegate (index into the host's delegates) when it ran elsewhere (`run_on`).
    on: Option<usize>,
}

/// The run journal as one host's apply sees it (a no-op without a journal).
struct HostJournal<'a> {
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
    probe: &Option<crate::quote::Cmd>,
) -> Option<String> {
    let p = probe.as_ref()?;
    let out = conn.run(p).await.ok()?;
    Some(fingerprint_of(&out))
}

/// The fingerprints of the states a step's operations start from, taken in the
/// re-check's round trip: the first operation's from the step's own read when that read
/// holds it (asked here too, it joins the re-check's wave and runs once), else by its
/// probe; a later operation's from the same read when it holds it and no operation
/// before it in the step touches that state (the same probe or scope), else None (read
/// in the round trip of the operation before it).
async fn fingerprints_before(
    conn: &crate::transport::Conn,
    ops: &[crate::plan::Op],
) -> Vec<Option<String>> {
    let Some(first) = ops.first() else {
        return Vec::new();
    };
    let read = match &first.probe_in {
        Some((read, _)) => conn.run(read).await.ok().map(|out| (read, out)),
        None => None,
    };
    let from_read = |op: &crate::plan::Op| {
        let (cmd, out) = read.as_ref()?;
        crate::host::probe_answer(op, |c| (c == *cmd).then_some(out)).map(|o| fingerprint_of(&o))
    };
    let mut befores = vec![match from_read(first) {
        Some(f) => Some(f),
        None => fingerprint(conn, &first.probe).await,
    }];
    for (k, op) in ops.iter().enumerate().skip(1) {
        let touched = ops[..k].iter().any(|e| {
            e.probe == op.probe
                || matches!((&e.scope, &op.scope), (Some(a), Some(b)) if a.key == b.key)
        });
        befores.push(if touched { None } else { from_read(op) });
    }
    befores
}

/// A probe's output as the journal records it.
fn fingerprint_of(out: &crate::transport::Output) -> String {
    format!("{}:{}", out.code.unwrap_or(-1), out.stdout())
}

async fn apply_host(pb: &Playbook, p: Planned, s: &RunSettings) -> HostReport {
    let Planned {
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
    let mut applied: Vec<Applied> = Vec::new();
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
                None if journaling => fingerprint(&on.conn, &op.probe).await,
                None => None,
            };
            let rec = Record::Op {
                host: report.host.clone(),
                step: step.id.clone(),
                index: this,
                desc: op.desc.clone(),
                undo: op.undo.clone(),
                probe: op.probe.clone(),
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
                .and_then(|n| n.probe.as_ref());
            let (this_probe, next_probe) = match journaling {
                true => (op.probe.as_ref(), next_probe),
                false => (None, None),
            };
            let ahead: &[crate::quote::Cmd] = match last_op == Some((i, k)) {
                true => &verify_reads,
                false => &[],
            };
            // What the operation leaves, from one of verification's reads when one
            // holds it: the probe is not sent.
            let after_ahead = this_probe.is_some()
                && op.probe_in.as_ref().is_some_and(|(c, _)| ahead.contains(c));
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
                            true => {
                                crate::host::probe_answer(op, answer).map(|o| fingerprint_of(&o))
                            }
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
                    Err(e) => (Err(e), fingerprint(&on.conn, &op.probe).await),
                }
            };
            // Verification's read did not hold it after all (it changed while read):
            // the probe on its own (a failed round trip already asked it).
            let after = match after {
                None if after_ahead && res.is_ok() => fingerprint(&on.conn, &op.probe).await,
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
                    applied.push(Applied {
                        step: i,
                        index: this,
                        undo: op.undo.clone(),
                        probe: op.probe.clone(),
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
async fn settle(
    pb: &Playbook,
    host: &Host,
    delegates: &[Delegate],
    applied: &[Applied],
    hj: &HostJournal<'_>,
) -> Result<(), String> {
    use crate::playbook::StepKind;
    let opaque = |step: usize| {
        matches!(
            pb.steps[step].kind,
            StepKind::Service(_) | StepKind::Command(_) | StepKind::Package(_)
        )
    };
    let mut last: Vec<&Applied> = Vec::new();
    for (k, a) in applied.iter().enumerate() {
        let Some(probe) = &a.probe else { continue };
        let later_opaque = applied[k + 1..]
            .iter()
            .any(|b| b.step != a.step && opaque(b.step));
        let superseded = applied[k + 1..]
            .iter()
            .any(|b| b.on == a.on && b.probe.as_ref() == Some(probe));
        if later_opaque && !superseded {
            last.push(a);
        }
    }
    let reads = futures_util::future::join_all(last.iter().map(|a| {
        let conn = match a.on.and_then(|d| delegates.get(d)) {
            Some(d) => &d.host.conn,
            None => &host.conn,
        };
        fingerprint(conn, &a.probe)
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

fn mark_not_run(report: &mut HostReport) {
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
async fn rollback(
    host: &Host,
    delegates: &[Delegate],
    applied: &[Applied],
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
        let res = match &a.undo {
            Undo::Last(_) if !run => Ok(()),
            Undo::Cmd(c) | Undo::Last(c) => match conn.run(c).await {
                Ok(o) if o.success() => Ok(()),
                Ok(o) => Err(format!(
                    "undo of step `{}` failed: {}",
                    report.steps[a.step].id,
                    o.stderr()
                )),
                Err(e) => Err(format!("undo of step `{}`: {e}", report.steps[a.step].id)),
            },
            Undo::Nothing => Ok(()),
            Undo::Impossible(why) => Err(format!(
                "step `{}` cannot be undone: {why}",
                report.steps[a.step].id
            )),
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Op, StepPlan, Undo, Verdict};
    use crate::quote::Cmd;

    fn planned(run_id: &str, stdin: &[u8]) -> Planned {
        let report = HostReport {
            host: "h1".into(),
            status: Status::WouldChange,
            reason: None,
            steps: vec![],
            duration_ms: 0,
            batch: None,
            verified: vec![],
        };
        let mut step = StepPlan::no_change("write", "file", None);
        step.verdict = Verdict::Change;
        step.diff = "-a\n+b\n".into();
        step.ops = vec![Op::new(
            "write /etc/x",
            Cmd::new(["sh", "-c", "cat > \"$1\"", "kfix", "/etc/x"]).with_stdin(stdin.to_vec()),
            Undo::Cmd(Cmd::new([
                "mv",
                &format!("/var/lib/x.kfix-{run_id}"),
                "/etc/x",
            ])),
        )];
        let target = TargetRec {
            local: false,
            address: "10.0.0.1".into(),
            port: None,
            user: None,
            key_file: None,
            become_: false,
            become_user: None,
            jump: vec![],
        };
        Planned::new(None, report, vec![step], target)
    }

    #[test]
    fn a_plans_digest_covers_its_bytes_and_not_its_run_id() {
        let a = planned("run-a", b"net.ipv4.ip_forward=1\n").digest("run-a");
        // The same change planned again under another run id (backups named after it).
        assert_eq!(
            a,
            planned("run-b", b"net.ipv4.ip_forward=1\n").digest("run-b")
        );
        // Other bytes of the same length on stdin: another plan.
        assert_ne!(
            a,
            planned("run-a", b"net.ipv4.ip_forward=0\n").digest("run-a")
        );
        let mut other_undo = planned("run-a", b"net.ipv4.ip_forward=1\n");
        other_undo.plans[0].ops[0].undo = Undo::Nothing;
        assert_ne!(a, other_undo.digest("run-a"));
        assert_eq!(a.len(), 64);
    }
}
