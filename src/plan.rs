//! A host's plan as data: per step a verdict, a human diff and the exact operations
//! that apply will run, each with the operation that undoes it.

use serde::Serialize;

use crate::quote::Cmd;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Change,
    NoChange,
    Unknown,
}

impl Verdict {
    /// The name JSON and the journal use.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Change => "change",
            Verdict::NoChange => "no_change",
            Verdict::Unknown => "unknown",
        }
    }
}

/// How an operation is undone.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Undo {
    /// Run this command.
    Cmd(Cmd),
    /// The operation leaves no state to restore (e.g. a service restart).
    Nothing,
    /// It cannot be undone, and why.
    Impossible(String),
}

/// One operation on the host, and how to undo it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    pub desc: String,
    pub cmd: Cmd,
    pub undo: Undo,
    /// Overrides the run's command timeout (long operations such as moving data).
    pub timeout_secs: Option<u64>,
    /// A read-only command whose output fingerprints the state this operation changes;
    /// recorded before and after it runs, so `kfix rollback` can tell whether the host
    /// drifted since (None: the state cannot be fingerprinted, e.g. a raw command).
    pub probe: Option<Cmd>,
}

impl Op {
    pub fn new(desc: impl Into<String>, cmd: Cmd, undo: Undo) -> Self {
        Op {
            desc: desc.into(),
            cmd,
            undo,
            timeout_secs: None,
            probe: None,
        }
    }

    pub fn probe(mut self, probe: Cmd) -> Self {
        self.probe = Some(probe);
        self
    }
}

/// What a step would do on one host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepPlan {
    pub id: String,
    pub kind: &'static str,
    pub verdict: Verdict,
    /// Human-readable diff: unified diff for files, `-`/`+` state lines otherwise.
    pub diff: String,
    /// Why the verdict is `unknown`, or why the step was skipped.
    pub reason: Option<String>,
    pub ops: Vec<Op>,
    /// Why it cannot be undone, when it cannot.
    pub irreversible: Option<String>,
}

impl StepPlan {
    pub fn no_change(id: &str, kind: &'static str, reason: Option<String>) -> Self {
        StepPlan {
            id: id.to_string(),
            kind,
            verdict: Verdict::NoChange,
            diff: String::new(),
            reason,
            ops: Vec::new(),
            irreversible: None,
        }
    }

    pub fn change(id: &str, kind: &'static str, diff: String, ops: Vec<Op>) -> Self {
        StepPlan {
            id: id.to_string(),
            kind,
            verdict: Verdict::Change,
            diff,
            reason: None,
            ops,
            irreversible: None,
        }
    }

    /// The same operations, ignoring descriptions: what a re-check compares.
    pub fn same_ops(&self, other: &StepPlan) -> bool {
        self.verdict == other.verdict
            && self.ops.len() == other.ops.len()
            && self
                .ops
                .iter()
                .zip(&other.ops)
                .all(|(a, b)| a.cmd == b.cmd && a.undo == b.undo)
    }
}

/// `-`/`+` lines for a state change (routes, rules, values, services).
pub fn state_diff(before: &[String], after: &[String]) -> String {
    let mut s = String::new();
    for b in before {
        s.push_str("- ");
        s.push_str(b);
        s.push('\n');
    }
    for a in after {
        s.push_str("+ ");
        s.push_str(a);
        s.push('\n');
    }
    s
}
