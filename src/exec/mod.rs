//! The run engine: per host connect, gather facts, check preconditions, plan, detect;
//! then (not in a dry-run) re-check, apply step by step, verify, and undo in reverse on
//! any failure. It never prints: progress goes out as [`Event`]s, results as data.
//!
//! `events` (what the reporter consumes), `assess` (read-only planning), `check` (the
//! read-only scan of `kfix check`), `fleet` (the
//! dispatcher), `apply` (one host's control flow), `roundtrip` (what travels with what),
//! `undo` (the one undo executor), `delegate` (`run_on`), `context` (targets, template
//! context, secrets).

mod apply;
mod assess;
mod check;
mod context;
mod delegate;
mod events;
mod fleet;
mod roundtrip;
mod undo;

#[cfg(test)]
mod local_tests;

pub use apply::*;
pub use assess::*;
pub use check::*;
pub use context::*;
pub use delegate::*;
pub use events::*;
pub use fleet::*;
pub use roundtrip::fingerprint;
use roundtrip::{Trips, settle};
pub use undo::*;

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

/// What the operator configured for a run, resolved once from the command line
/// (`commands::settings`) or `kfix serve`'s flags, and shared by every playbook of the
/// command.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub forks: usize,
    pub ssh: SshOptions,
    pub command_timeout: Duration,
    pub extra_vars: BTreeMap<String, serde_json::Value>,
    /// Variables whose values are secret whatever the playbook says (`--secret-file`).
    pub secret_vars: std::collections::BTreeSet<String>,
    /// The whole inventory: where `run_on` patterns select delegate hosts.
    pub inventory: Arc<crate::inventory::Inventory>,
}

/// One playbook's run as the executor sees it: the shared configuration, the run's id
/// and rollout, and the run-time handles (journal, stop flag, pool, hostnames).
#[derive(Clone, Debug)]
pub struct RunSettings {
    pub config: Arc<RunConfig>,
    pub run_id: String,
    pub policy: crate::rollout::Policy,
    /// Applying on one host may take at most this long, then it is rolled back.
    pub host_timeout: Option<Duration>,
    /// The run journal (real runs only).
    pub journal: Option<Arc<Journal>>,
    /// Set on Ctrl-C: no new host starts; running ones finish or roll back.
    pub stop: Arc<std::sync::atomic::AtomicBool>,
    /// `inventory_hostnames`: every inventory host's hostname (facts), gathered before
    /// planning a playbook that reads it; an error when some host did not answer.
    pub inventory_hostnames: Option<Arc<Result<Vec<String>, String>>>,
    /// Connections shared by the playbooks of one command (`kfix run A B`); None: each
    /// playbook connects and closes on its own.
    pub pool: Option<Arc<crate::pool::Pool>>,
}

impl RunSettings {
    /// A run of `config` named `run_id`: every host at once, no failure allowed, no
    /// journal, pool or host timeout yet, its own stop flag.
    pub fn new(config: Arc<RunConfig>, run_id: &str) -> RunSettings {
        RunSettings {
            config,
            run_id: run_id.to_string(),
            policy: crate::rollout::Policy {
                serial: crate::rollout::Serial::all(),
                max_fail: crate::rollout::MaxFail::Count(0),
                max_fail_per_batch: None,
                pause: Duration::ZERO,
            },
            host_timeout: None,
            journal: None,
            stop: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            inventory_hostnames: None,
            pool: None,
        }
    }
}

/// The hostname every inventory host reports (facts), sorted; an error naming each
/// host that did not answer (the list would be incomplete).
pub async fn gather_inventory_hostnames(
    settings: &Arc<RunSettings>,
) -> Result<Vec<String>, String> {
    let hosts = settings.config.inventory.hosts.clone();
    let names: Vec<String> = hosts.iter().map(|h| h.name.clone()).collect();
    let results = bounded(hosts, settings.config.forks, |inv| {
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
    let mut s = (*settings).clone();
    s.inventory_hostnames = Some(Arc::new(names));
    Arc::new(s)
}

pub(super) fn elapsed_ms(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
}

pub(super) fn host_error_status(e: &HostError) -> Status {
    match e {
        HostError::Transport(TransportError::Unreachable(_)) => Status::Unreachable,
        _ => Status::Failed,
    }
}

/// A host error as a report's reason: an unreachable host's is ssh's own words (the
/// status already says `unreachable`), anything else as it displays.
pub(super) fn host_error_reason(e: &HostError) -> String {
    match e {
        HostError::Transport(t) => t.reason(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Op, StepPlan, Undo, Verdict};
    use crate::quote::Cmd;

    fn planned(run_id: &str, stdin: &[u8]) -> Assessed {
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
        Assessed::new(None, report, vec![step], target)
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
