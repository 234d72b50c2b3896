//! `kfix serve`'s records: one JSON file per alert-triggered run under
//! STATE/serve/runs/, written atomically, reloaded on start (so plans awaiting approval
//! survive a restart, and a run cut short by one is marked interrupted).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::alert::Alert;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Being planned (read-only).
    Planning,
    /// The plan changes the host; it waits for `kfix approve` or POST /runs/ID/approve.
    AwaitingApproval,
    /// Approved (or auto-applied): being re-checked and applied.
    Applying,
    /// Applied and verified.
    Applied,
    /// Apply failed (rolled back, or the rollback failed: see `result`).
    Failed,
    /// Planning found nothing to do (healthy, or the playbook does not apply).
    NothingToDo,
    /// Planning failed (unreachable host, a step could not be planned).
    PlanFailed,
    /// The alert resolved before the plan was approved: closed unapplied.
    Resolved,
    /// kfix serve stopped while applying: see the journal and `kfix rollback`.
    Interrupted,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Planning => "planning",
            State::AwaitingApproval => "awaiting_approval",
            State::Applying => "applying",
            State::Applied => "applied",
            State::Failed => "failed",
            State::NothingToDo => "nothing_to_do",
            State::PlanFailed => "plan_failed",
            State::Resolved => "resolved",
            State::Interrupted => "interrupted",
        }
    }

    /// A record in these states absorbs repeats of its alert (deduplication).
    pub fn open(self) -> bool {
        matches!(
            self,
            State::Planning | State::AwaitingApproval | State::Applying
        )
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub state: State,
    pub fingerprint: String,
    pub alertname: String,
    pub playbook: String,
    pub host: String,
    pub alert: Alert,
    pub created_unix: u64,
    pub updated_unix: u64,
    /// The dry-run: one host report with every step's verdict and diff.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<serde_json::Value>,
    /// The digest of the plan's full operations (argv, stdin's sha256, undo): an
    /// approval must name it, and apply re-plans and goes on only if it is the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_digest: Option<String>,
    /// The apply: its run id (journal, `kfix history`, `kfix rollback`) and host report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apply_run: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// Who approved: `api`, `kfix approve`, or `auto`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied_unix: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_unix: Option<u64>,
    /// Why the record is in its state (a failure, a blast-radius refusal, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl RunRecord {
    /// A new record for an alert, being planned.
    pub fn new(id: String, alert: Alert, playbook: &str, host: &str) -> RunRecord {
        let now = crate::journal::now_unix();
        RunRecord {
            id,
            state: State::Planning,
            fingerprint: alert.key(),
            alertname: alert.name().to_string(),
            playbook: playbook.to_string(),
            host: host.to_string(),
            alert,
            created_unix: now,
            updated_unix: now,
            plan: None,
            plan_digest: None,
            apply_run: None,
            result: None,
            approved_by: None,
            applied_unix: None,
            resolved_unix: None,
            reason: None,
        }
    }
}

/// Every record, in memory and on disk.
pub struct Store {
    dir: PathBuf,
    pub runs: BTreeMap<String, RunRecord>,
}

impl Store {
    /// Load the records under `state/serve/runs`. A run that was applying when the last
    /// server stopped is marked interrupted.
    pub fn open(state: &Path) -> std::io::Result<Store> {
        let dir = state.join("serve").join("runs");
        crate::localfs::private_dir(state)?;
        crate::localfs::private_dir(&state.join("serve"))?;
        crate::localfs::private_dir(&dir)?;
        let mut runs = BTreeMap::new();
        for e in std::fs::read_dir(&dir)?.flatten() {
            let p = e.path();
            if p.extension().and_then(|x| x.to_str()) != Some("json") {
                continue;
            }
            let Ok(text) = std::fs::read(&p) else {
                continue;
            };
            if let Ok(r) = serde_json::from_slice::<RunRecord>(&text) {
                runs.insert(r.id.clone(), r);
            }
        }
        let mut store = Store { dir, runs };
        let cut: Vec<String> = store
            .runs
            .values()
            .filter(|r| matches!(r.state, State::Planning | State::Applying))
            .map(|r| r.id.clone())
            .collect();
        for id in cut {
            if let Some(mut r) = store.runs.get(&id).cloned() {
                if r.state == State::Applying {
                    r.state = State::Interrupted;
                    r.reason = Some(format!(
                        "kfix serve stopped while applying; see `kfix history {}` and `kfix rollback {}`",
                        r.apply_run.as_deref().unwrap_or("RUN"),
                        r.apply_run.as_deref().unwrap_or("RUN")
                    ));
                } else {
                    r.state = State::PlanFailed;
                    r.reason = Some("kfix serve stopped while planning".into());
                }
                store.save(r)?;
            }
        }
        Ok(store)
    }

    /// Write a record (atomically) and keep it in memory.
    pub fn save(&mut self, mut r: RunRecord) -> std::io::Result<()> {
        r.updated_unix = crate::journal::now_unix();
        let body = serde_json::to_vec_pretty(&r).map_err(std::io::Error::other)?;
        crate::localfs::write_atomic(&self.dir.join(format!("{}.json", r.id)), &body, 0o600)?;
        self.runs.insert(r.id.clone(), r);
        Ok(())
    }

    /// The open record for an alert, if any.
    pub fn open_for(&self, fingerprint: &str) -> Option<&RunRecord> {
        self.runs
            .values()
            .find(|r| r.fingerprint == fingerprint && r.state.open())
    }

    /// The open record of a playbook on a host, whichever alert opened it: a second
    /// alert (another fingerprint) for the same fix on the same host is a duplicate.
    pub fn open_on(&self, playbook: &str, host: &str) -> Option<&RunRecord> {
        self.runs
            .values()
            .find(|r| r.playbook == playbook && r.host == host && r.state.open())
    }

    /// Forget closed records last changed before `before_unix` (memory and file): a
    /// server fed alerts for months keeps a bounded history. Open ones are kept.
    pub fn prune(&mut self, before_unix: u64) -> usize {
        let old: Vec<String> = self
            .runs
            .values()
            .filter(|r| !r.state.open() && r.updated_unix < before_unix)
            .map(|r| r.id.clone())
            .collect();
        for id in &old {
            self.runs.remove(id);
            let _ = std::fs::remove_file(self.dir.join(format!("{id}.json")));
        }
        old.len()
    }

    /// Hosts of a playbook applied (or being applied) automatically since `since_unix`.
    pub fn auto_applied_since(&self, playbook: &str, since_unix: u64) -> usize {
        self.runs
            .values()
            .filter(|r| {
                r.playbook == playbook
                    && r.approved_by.as_deref() == Some("auto")
                    && r.applied_unix.is_some_and(|t| t >= since_unix)
            })
            .count()
    }

    /// Hosts being applied right now.
    pub fn applying(&self) -> impl Iterator<Item = &RunRecord> {
        self.runs.values().filter(|r| r.state == State::Applying)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, state: State) -> RunRecord {
        let alert = Alert {
            status: "firing".into(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            starts_at: String::new(),
            fingerprint: format!("fp-{id}"),
        };
        RunRecord {
            state,
            apply_run: Some(format!("apply-{id}")),
            ..RunRecord::new(id.into(), alert, "p", "h")
        }
    }

    #[test]
    fn records_survive_a_restart_and_cut_runs_are_marked() {
        let dir = std::env::temp_dir().join(format!("kfix-store-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut s = Store::open(&dir).unwrap();
        s.save(rec("r1", State::AwaitingApproval)).unwrap();
        s.save(rec("r2", State::Applying)).unwrap();
        s.save(rec("r3", State::Planning)).unwrap();
        assert_eq!(s.open_for("fp-r1").map(|r| r.id.as_str()), Some("r1"));
        let s = Store::open(&dir).unwrap();
        assert_eq!(s.runs["r1"].state, State::AwaitingApproval);
        assert_eq!(s.runs["r2"].state, State::Interrupted);
        assert!(
            s.runs["r2"]
                .reason
                .as_deref()
                .unwrap()
                .contains("kfix rollback apply-r2")
        );
        assert_eq!(s.runs["r3"].state, State::PlanFailed);
        assert!(s.open_for("fp-r2").is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn old_closed_records_are_pruned_and_open_ones_kept() {
        let dir = std::env::temp_dir().join(format!("kfix-prune-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut s = Store::open(&dir).unwrap();
        for (id, state) in [
            ("old", State::Applied),
            ("waiting", State::AwaitingApproval),
        ] {
            s.save(rec(id, state)).unwrap();
        }
        assert_eq!(s.open_on("p", "h").map(|r| r.id.as_str()), Some("waiting"));
        // Nothing is older than a moment ago; everything is older than tomorrow.
        assert_eq!(s.prune(0), 0);
        assert_eq!(s.prune(crate::journal::now_unix() + 86_400), 1);
        assert!(!s.runs.contains_key("old") && s.runs.contains_key("waiting"));
        let s = Store::open(&dir).unwrap();
        assert_eq!(s.runs.keys().collect::<Vec<_>>(), ["waiting"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
