//! `kfix serve`: an Alertmanager webhook receiver. An alert is mapped to a playbook and
//! an inventory host and planned (read-only) in the background; the plan waits for an
//! approval (`kfix approve`, POST /runs/ID/approve) unless the playbook and the server
//! both allow auto-apply, bounded by a blast radius and a kill switch. Every request needs
//! a bearer token: the webhook's (Alertmanager: post alerts, read runs) or an approver's
//! (read runs, approve the plan whose digest it names; the approver's name comes from
//! the token). Decisions go to one log channel; this module never prints.

pub mod alert;
pub mod listen;
mod runs;
pub mod store;

use runs::*;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, Path, Request, State as AxState};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

use crate::exec::{self, HostReport, RunSettings, Status};
use crate::inventory::Host as InvHost;
use crate::journal;
use crate::playbook::Playbook;
use crate::runner;
use store::{RunRecord, State, Store};

/// Everything the server needs, decided by the command line.
pub struct Config {
    /// The webhook's bearer token: it posts alerts and reads runs, never approves.
    pub webhook_token: String,
    /// (name, token) of each approver: an approval is recorded under the name of the
    /// token that made it.
    pub approvers: Vec<(String, String)>,
    /// The server's half of auto-apply (the playbook's `auto_apply: true` is the other).
    pub auto_apply: bool,
    /// Auto-apply at most this many hosts per playbook per hour.
    pub max_hosts_per_hour: usize,
    pub max_body: usize,
    /// While this file exists nothing is applied (neither approved nor automatic).
    pub kill_switch: PathBuf,
    pub state: PathBuf,
    pub hosts: Vec<InvHost>,
    pub playbooks: Vec<Arc<Playbook>>,
    /// Run settings every run starts from (ssh options, timeouts, extra vars).
    pub base: RunSettings,
    pub inventory: Option<PathBuf>,
    pub ssh_config: Option<PathBuf>,
    /// How long shutdown waits for runs in progress.
    pub drain: Duration,
    /// What the HTTP listener lets clients take (connections, deadlines).
    pub limits: listen::Limits,
    /// Plans (read-only dry-runs) at once, across every alert: more wait their turn.
    pub max_plans: usize,
    /// Closed records older than this are forgotten.
    pub retention: Duration,
}

/// One log line: what the server decided and why.
#[derive(Clone, Debug, Serialize)]
pub struct Decision {
    pub event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alertname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub playbook: Option<String>,
    pub detail: String,
}

impl Decision {
    fn new(event: &'static str, detail: impl Into<String>) -> Self {
        Decision {
            event,
            run: None,
            alertname: None,
            fingerprint: None,
            host: None,
            playbook: None,
            detail: detail.into(),
        }
    }

    fn of(mut self, r: &RunRecord) -> Self {
        self.run = Some(r.id.clone());
        self.alertname = Some(r.alertname.clone());
        self.fingerprint = Some(r.fingerprint.clone());
        self.host = Some(r.host.clone());
        self.playbook = Some(r.playbook.clone());
        self
    }
}

struct App {
    cfg: Config,
    store: Mutex<Store>,
    /// Hostnames the inventory hosts reported (gathered at start): name → inventory name.
    hostnames: Mutex<alert::Hostnames>,
    log: mpsc::UnboundedSender<Decision>,
    /// One permit per plan running (Config::max_plans).
    plans: Arc<tokio::sync::Semaphore>,
    /// Set at shutdown: no new host starts; running ones finish or roll back.
    stop: Arc<AtomicBool>,
    busy: AtomicUsize,
    idle: Notify,
}

impl App {
    fn say(&self, d: Decision) {
        let _ = self.log.send(d);
    }

    fn save(&self, r: RunRecord) {
        let res = match self.store.lock() {
            Ok(mut s) => s.save(r.clone()),
            Err(_) => Err(std::io::Error::other("store lock poisoned")),
        };
        if let Err(e) = res {
            self.say(Decision::new("error", format!("cannot save the record: {e}")).of(&r));
        }
    }

    /// Forget closed records past the retention.
    fn prune(&self) {
        let before = journal::now_unix().saturating_sub(self.cfg.retention.as_secs());
        let n = self.store.lock().map(|mut s| s.prune(before)).unwrap_or(0);
        if n > 0 {
            self.say(Decision::new(
                "pruned",
                format!(
                    "{} older than the retention",
                    crate::text::count(n, "closed record")
                ),
            ));
        }
    }

    fn get(&self, id: &str) -> Option<RunRecord> {
        self.store.lock().ok()?.runs.get(id).cloned()
    }

    fn killed(&self) -> bool {
        self.cfg.kill_switch.exists()
    }

    fn playbook(&self, id: &str) -> Option<Arc<Playbook>> {
        self.cfg.playbooks.iter().find(|p| p.id == id).cloned()
    }

    fn host(&self, name: &str) -> Option<InvHost> {
        self.cfg.hosts.iter().find(|h| h.name == name).cloned()
    }

    /// Settings for one run: its id, its private control directory, the shared stop flag.
    fn settings(&self, run_id: &str) -> Result<Arc<RunSettings>, String> {
        // The configuration serve was started with; only the control directory is the
        // run's own.
        let mut config = (*self.cfg.base.config).clone();
        config.ssh.control_dir = crate::localfs::control_dir(run_id);
        crate::localfs::create_private_dir(&config.ssh.control_dir)
            .map_err(|e| format!("cannot create {}: {e}", config.ssh.control_dir.display()))?;
        let mut s = RunSettings::new(Arc::new(config), run_id);
        s.policy = self.cfg.base.policy.clone();
        s.stop = self.stop.clone();
        Ok(Arc::new(s))
    }

    fn origin(&self, operator: String, host: &str) -> runner::Origin {
        runner::Origin {
            operator,
            inventory: self.cfg.inventory.clone(),
            limit: Some(host.to_string()),
            ssh_config: self.cfg.ssh_config.clone(),
        }
    }
}

/// Counts a background task; shutdown waits until none is left.
struct Busy(Arc<App>);

impl Busy {
    fn new(app: &Arc<App>) -> Busy {
        app.busy.fetch_add(1, Ordering::SeqCst);
        Busy(app.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Serve until `shutdown` completes, then drain: no new host starts, runs in progress
/// finish (or roll back) within `cfg.drain`.
pub async fn serve(
    cfg: Config,
    log: mpsc::UnboundedSender<Decision>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let store = Store::open(&cfg.state).map_err(|e| {
        format!(
            "cannot open the run records under {}: {e}",
            cfg.state.join("serve").display()
        )
    })?;
    let waiting = store
        .runs
        .values()
        .filter(|r| r.state == State::AwaitingApproval)
        .count();
    let max_body = cfg.max_body;
    let limits = cfg.limits.clone();
    let plans = Arc::new(tokio::sync::Semaphore::new(cfg.max_plans.max(1)));
    let app = Arc::new(App {
        plans,
        cfg,
        store: Mutex::new(store),
        hostnames: Mutex::new(Default::default()),
        log,
        stop: Arc::new(AtomicBool::new(false)),
        busy: AtomicUsize::new(0),
        idle: Notify::new(),
    });
    app.say(Decision::new(
        "listening",
        format!(
            "on {} ({} playbooks, {} hosts, {waiting} plans awaiting approval)",
            listener
                .local_addr()
                .map_or_else(|_| "?".into(), |a| a.to_string()),
            app.cfg.playbooks.len(),
            app.cfg.hosts.len()
        ),
    ));
    // The hostnames nodes report, for alerts that name a node by it (in the background:
    // unreachable hosts must not delay the server).
    let app2 = app.clone();
    let busy = Busy::new(&app);
    tokio::spawn(async move {
        let _busy = busy;
        learn_hostnames(&app2).await;
    });
    let router = Router::new()
        .route("/alerts", post(receive))
        .route("/runs", get(list_runs))
        .route("/runs/{id}", get(show_run))
        .route("/runs/{id}/approve", post(approve))
        .layer(middleware::from_fn_with_state(app.clone(), authorize))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(app.clone());
    app.prune();
    let app3 = app.clone();
    listen::serve(listener, router, limits, shutdown, move |why| {
        app3.say(Decision::new("refused", why))
    })
    .await;
    app.stop.store(true, Ordering::SeqCst);
    let n = app.busy.load(Ordering::SeqCst);
    if n > 0 {
        app.say(Decision::new(
            "draining",
            format!(
                "{} in progress: finishing or rolling back",
                crate::text::count(n, "run")
            ),
        ));
        let wait = async {
            while app.busy.load(Ordering::SeqCst) > 0 {
                let notified = app.idle.notified();
                if app.busy.load(Ordering::SeqCst) == 0 {
                    break;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(app.cfg.drain, wait).await.is_err() {
            app.say(Decision::new(
                "stopped",
                "runs still in progress at the drain deadline are marked interrupted at the next start",
            ));
        }
    }
    app.say(Decision::new("stopped", "bye"));
    Ok(())
}

fn answer(code: StatusCode, v: Value) -> Response {
    (code, axum::Json(v)).into_response()
}

fn error(code: StatusCode, msg: impl Into<String>) -> Response {
    answer(code, json!({ "error": msg.into() }))
}

/// Who a request's credential is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Role {
    /// The webhook token (Alertmanager).
    Webhook,
    /// An approver's token, with the approver's name.
    Approver(String),
}

/// The role a bearer token grants (every token compared, each in constant time).
fn role_of(cfg: &Config, given: &str) -> Option<Role> {
    let mut role = None;
    if same(given.as_bytes(), cfg.webhook_token.as_bytes()) {
        role = Some(Role::Webhook);
    }
    for (name, token) in &cfg.approvers {
        if same(given.as_bytes(), token.as_bytes()) {
            role = Some(Role::Approver(name.clone()));
        }
    }
    role
}

/// Every request carries `Authorization: Bearer TOKEN`; the role it grants goes with
/// the request. What a role may do is checked by each handler.
async fn authorize(AxState(app): AxState<Arc<App>>, mut req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if let Some(role) = role_of(&app.cfg, given) {
        req.extensions_mut().insert(role);
        return next.run(req).await;
    }
    app.say(Decision::new(
        "refused",
        format!(
            "{} {}: missing or wrong bearer token",
            req.method(),
            req.uri().path()
        ),
    ));
    let mut r = error(StatusCode::UNAUTHORIZED, "a bearer token is required");
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    r
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// POST /alerts: decide for each alert, answer at once; planning runs in the background.
/// Only the webhook's token posts alerts.
async fn receive(
    AxState(app): AxState<Arc<App>>,
    Extension(role): Extension<Role>,
    body: Bytes,
) -> Response {
    if role != Role::Webhook {
        app.say(Decision::new(
            "refused",
            "POST /alerts with an approver's token: only the webhook's token posts alerts",
        ));
        return error(
            StatusCode::FORBIDDEN,
            "only the webhook's token posts alerts",
        );
    }
    let hook = match alert::parse(&body) {
        Ok(h) => h,
        Err(e) => {
            app.say(Decision::new("rejected", e.clone()));
            return error(StatusCode::BAD_REQUEST, e);
        }
    };
    app.prune();
    let mut out = Vec::new();
    for a in hook.alerts {
        let d = decide(&app, a);
        out.push(json!({
            "fingerprint": d.fingerprint,
            "alertname": d.alertname,
            "decision": d.event,
            "detail": d.detail,
            "run": d.run,
        }));
        app.say(d);
    }
    answer(StatusCode::OK, json!({ "decisions": out }))
}

fn decide(app: &Arc<App>, a: alert::Alert) -> Decision {
    let key = a.key();
    let mut d = Decision::new("ignored", "");
    d.alertname = Some(a.name().to_string());
    d.fingerprint = Some(key.clone());
    if a.status == "resolved" {
        return resolve(app, &key, d);
    }
    let pb = match alert::playbook_for(&a, &app.cfg.playbooks) {
        Ok(p) => p,
        Err(why) => {
            d.detail = why;
            return d;
        }
    };
    d.playbook = Some(pb.id.clone());
    if pb.steps.is_empty() {
        d.detail = format!(
            "{} is detection only: {}",
            pb.id,
            pb.remedy.as_deref().unwrap_or("no automatic fix")
        );
        return d;
    }
    let found = {
        let (names, none) = (app.hostnames.lock(), Default::default());
        alert::host_for(&a, &app.cfg.hosts, names.as_deref().unwrap_or(&none)).cloned()
    };
    let host = match found {
        Ok(h) => h,
        Err(why) => {
            d.detail = why;
            return d;
        }
    };
    d.host = Some(host.name.clone());
    let Ok(mut store) = app.store.lock() else {
        d.event = "error";
        d.detail = "store lock poisoned".into();
        return d;
    };
    if let Some(open) = store.open_for(&key) {
        d.event = "duplicate";
        d.detail = format!("run {} is {} for this alert", open.id, open.state.as_str());
        d.run = Some(open.id.clone());
        return d;
    }
    // Another alert for the same fix on the same host: one run serves both.
    if let Some(open) = store.open_on(&pb.id, &host.name) {
        d.event = "duplicate";
        d.detail = format!(
            "run {} of {} on {} is {} (another alert)",
            open.id,
            pb.id,
            host.name,
            open.state.as_str()
        );
        d.run = Some(open.id.clone());
        return d;
    }
    let rec = RunRecord::new(crate::journal::run_id(), a, &pb.id, &host.name);
    if let Err(e) = store.save(rec.clone()) {
        d.event = "error";
        d.detail = format!("cannot save the record: {e}");
        return d;
    }
    drop(store);
    let busy = Busy::new(app);
    let (app2, id) = (app.clone(), rec.id.clone());
    tokio::spawn(async move {
        let _busy = busy;
        plan(&app2, &id).await;
    });
    Decision::new("planning", format!("dry-run of {} on {}", pb.id, host.name)).of(&rec)
}

/// Ask every inventory host for its hostname (facts), a few at a time.
async fn learn_hostnames(app: &Arc<App>) {
    let Ok(s) = app.settings(&format!("{}-facts", crate::journal::run_id())) else {
        return;
    };
    let sem = Arc::new(tokio::sync::Semaphore::new(s.config.forks.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for h in app.cfg.hosts.clone() {
        let (s, sem) = (s.clone(), sem.clone());
        set.spawn(async move {
            let _permit = sem.acquire_owned().await.ok()?;
            let f = exec::facts_of(&h, &s).await.ok()?;
            Some((f.hostname, h.name))
        });
    }
    let mut reports = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok(Some(report)) = r {
            reports.push(report);
        }
    }
    let n = reports.len();
    let names = alert::Hostnames::from_reports(reports, &app.cfg.hosts);
    for (name, claimed) in &names.conflicts {
        app.say(Decision::new(
            "conflict",
            format!(
                "hostname {name:?} is claimed by {}: alerts naming it pick no host",
                claimed.join(", ")
            ),
        ));
    }
    if let Ok(mut m) = app.hostnames.lock() {
        *m = names;
    }
    let _ = std::fs::remove_dir_all(&s.config.ssh.control_dir);
    app.say(Decision::new(
        "hostnames",
        format!(
            "{n} of {} hosts reported their hostname",
            app.cfg.hosts.len()
        ),
    ));
}

/// A resolved alert closes its plan if nobody approved it yet.
fn resolve(app: &App, key: &str, mut d: Decision) -> Decision {
    let Some(mut r) = app.store.lock().ok().and_then(|s| {
        s.runs
            .values()
            .filter(|r| r.fingerprint == key)
            .max_by_key(|r| r.created_unix)
            .cloned()
    }) else {
        d.detail = "resolved, and kfix has no run for this alert".into();
        return d;
    };
    let now = journal::now_unix();
    r.resolved_unix = Some(now);
    let event = if r.state == State::AwaitingApproval {
        r.state = State::Resolved;
        r.reason = Some("the alert resolved before the plan was approved".into());
        "closed"
    } else {
        "resolved"
    };
    let detail = format!("the alert resolved; run {} is {}", r.id, r.state.as_str());
    app.save(r.clone());
    let mut out = Decision::new(event, detail).of(&r);
    out.alertname = d.alertname.take();
    out
}

async fn list_runs(AxState(app): AxState<Arc<App>>) -> Response {
    let runs: Vec<Value> = app
        .store
        .lock()
        .map(|s| {
            s.runs
                .values()
                .map(|r| {
                    json!({
                        "id": r.id, "state": r.state, "alertname": r.alertname,
                        "playbook": r.playbook, "host": r.host,
                        "fingerprint": r.fingerprint, "created_unix": r.created_unix,
                        "apply_run": r.apply_run, "reason": r.reason,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    answer(StatusCode::OK, json!({ "runs": runs }))
}

async fn show_run(AxState(app): AxState<Arc<App>>, Path(id): Path<String>) -> Response {
    match app.get(&id) {
        Some(r) => answer(StatusCode::OK, serde_json::to_value(&r).unwrap_or_default()),
        None => error(StatusCode::NOT_FOUND, format!("no run {id}")),
    }
}

/// POST /runs/ID/approve with `{"digest": "…"}` (the plan's, as GET /runs/ID shows
/// it): apply in the background (202), or say why not. Only an approver's token
/// approves, and the approval is recorded under that approver's name.
async fn approve(
    AxState(app): AxState<Arc<App>>,
    Extension(role): Extension<Role>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let Role::Approver(name) = role else {
        app.say(Decision::new(
            "approve_refused",
            format!("run {id}: the webhook's token cannot approve"),
        ));
        return error(
            StatusCode::FORBIDDEN,
            "the webhook's token cannot approve: use an approver's token (--approvers-file)",
        );
    };
    let digest = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["digest"].as_str().map(str::to_string));
    let Some(digest) = digest else {
        return error(
            StatusCode::BAD_REQUEST,
            "approve the plan you saw: send {\"digest\": \"…\"} with its plan_digest (kfix approve shows the plan and sends it)",
        );
    };
    let by = format!("approver {name}");
    match start_apply(&app, &id, &by, Some(&digest)) {
        Ok(r) => {
            app.say(Decision::new("approved", format!("by {by}; applying")).of(&r));
            let busy = Busy::new(&app);
            let app2 = app.clone();
            tokio::spawn(async move {
                let _busy = busy;
                apply(&app2, &id).await;
            });
            answer(
                StatusCode::ACCEPTED,
                json!({ "run": r.id, "state": State::Applying }),
            )
        }
        Err((code, why)) => {
            app.say(Decision::new("approve_refused", why.clone()));
            error(code, why)
        }
    }
}
