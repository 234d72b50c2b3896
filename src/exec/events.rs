//! The vocabulary the reporter consumes: a host's and a step's status, their reports,
//! and the events a run sends while it goes.

#[allow(unused_imports)]
use super::*;

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
    pub(super) fn from_plan(p: &StepPlan) -> Self {
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

    /// The journal's record of this step's planned change on `host` (its diff already
    /// redacted when planned).
    pub fn plan_record(&self, host: &str) -> crate::journal::Record {
        crate::journal::Record::Plan {
            host: host.to_string(),
            step: self.id.clone(),
            verdict: self.verdict.as_str().to_string(),
            diff: self.diff.clone(),
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
