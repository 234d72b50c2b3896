//! A journaled real run after planning: the journal header, the apply phase in batches,
//! the end record. Shared by `kfix run` and `kfix serve`; never prints.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::exec::{self, Assessed, Event, HostReport, RunSettings};
use crate::journal::{self, Journal, Record};
use crate::playbook::Playbook;
use crate::report;

/// Who ran it and against what, for the journal's first line.
pub struct Origin {
    pub operator: String,
    pub inventory: Option<PathBuf>,
    pub limit: Option<String>,
    pub ssh_config: Option<PathBuf>,
}

/// What a journaled run left.
pub struct RunOutcome {
    pub reports: Vec<HostReport>,
    pub rollout: exec::Rollout,
    pub journal: PathBuf,
}

/// The run's journal with its header written (undo data is durable before a host changes).
pub fn open_journal(
    state: &Path,
    run_id: &str,
    pb: &Playbook,
    origin: &Origin,
) -> Result<Arc<Journal>, String> {
    let j = Journal::create(state, run_id).map_err(|e| {
        format!(
            "cannot create the run journal under {}: {e}\n  = hint: pass --state-dir DIR (or KFIX_STATE_DIR) pointing at a writable directory",
            state.display()
        )
    })?;
    let header = Record::Run {
        run_id: run_id.to_string(),
        started_unix: journal::now_unix(),
        operator: origin.operator.clone(),
        playbook: pb.id.clone(),
        playbook_hash: pb.hash.clone(),
        playbook_file: pb.file.display().to_string(),
        inventory: origin.inventory.as_ref().map(|p| p.display().to_string()),
        limit: origin.limit.clone(),
        ssh_config: origin
            .ssh_config
            .as_ref()
            .and_then(|p| std::fs::canonicalize(p).ok())
            .map(|p| p.display().to_string()),
        kfix_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    j.record(&header)
        .map_err(|e| format!("cannot write the run journal {}: {e}", j.path().display()))?;
    Ok(Arc::new(j))
}

/// The end record: how many hosts ended in each status.
pub fn close_journal(j: &Journal, reports: &[HostReport]) {
    let summary = report::summary(reports)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let _ = j.record(&Record::End {
        finished_unix: journal::now_unix(),
        summary,
    });
}

/// A plan that is not applied now (`kfix serve` waiting for approval, or finding
/// nothing to do) in its journal, so that `kfix history` lists it: each step's verdict
/// and diff, the host's `status`, and the end record.
pub fn journal_plan(j: &Journal, report: &HostReport, status: &str) {
    for s in &report.steps {
        let _ = j.record(&s.plan_record(&report.host));
    }
    let _ = j.record(&Record::HostDone {
        host: report.host.clone(),
        status: status.to_string(),
        reason: report.reason.clone(),
    });
    close_journal(j, std::slice::from_ref(report));
}

/// Apply planned hosts under a fresh journal. On a journal error nothing was applied
/// and the planned connections are closed.
pub async fn apply(
    pb: Arc<Playbook>,
    planned: Vec<Assessed>,
    settings: Arc<RunSettings>,
    state: &Path,
    origin: &Origin,
    events: mpsc::UnboundedSender<Event>,
) -> Result<RunOutcome, String> {
    let j = match open_journal(state, &settings.run_id, &pb, origin) {
        Ok(j) => j,
        Err(e) => {
            let _ = exec::finish(planned).await;
            return Err(e);
        }
    };
    let mut s = (*settings).clone();
    s.journal = Some(j.clone());
    let s = Arc::new(s);
    let (reports, rollout) = exec::apply_all(pb, planned, s, events).await;
    close_journal(&j, &reports);
    Ok(RunOutcome {
        reports,
        rollout,
        journal: j.path().to_path_buf(),
    })
}
