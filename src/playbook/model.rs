//! The typed playbook: metadata, vars, probes (preconditions, detect, verify) and steps.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::diag::Pos;
use crate::yaml::At;

use super::kinds::default_table;
pub use super::kinds::*;
pub use super::words::{Text, Words, split_words};

#[derive(Clone, Debug)]
pub struct Playbook {
    pub file: PathBuf,
    /// sha256 of the file's bytes, hex.
    pub hash: String,
    pub id: String,
    pub title: String,
    pub summary: String,
    pub severity: Severity,
    /// The incident this fix encodes (e.g. "docs/catalogue.md F3; field reports 001 and 004").
    pub source: String,
    pub alerts: Vec<AlertMatch>,
    /// `kfix serve` may apply it without a human approval (when the server allows it too).
    pub auto_apply: bool,
    /// A disruptive playbook restarts workloads (canary-first rollout, drain first).
    pub disruptive: bool,
    pub vars: Vec<VarDef>,
    pub preconditions: Vec<Probe>,
    /// When absent, the problem is "present" exactly when some step plans a change.
    pub detect: Option<Vec<Probe>>,
    pub steps: Vec<Step>,
    pub verify: Vec<Probe>,
    /// Rollout defaults (flags override).
    pub rollout: RolloutSpec,
    /// Values read from each host before anything else, as `gathered.NAME` in templates.
    pub gather: Vec<Gather>,
    /// For a detection-only playbook (no steps): what fixes the problem. `kfix check`
    /// reports it; `kfix run` refuses the playbook and shows it.
    pub remedy: Option<String>,
    /// What breaks while the problem is there (the runbook's Impact).
    pub impact: Option<String>,
    /// Commands a person runs on the node to confirm the problem by hand, each with
    /// what to look for (the runbook's Diagnosis; templates are rendered there).
    pub diagnosis: Vec<DiagnosisStep>,
    /// What to do after a successful run that kfix does not do (restart pods, free
    /// the space of what was moved aside once confirmed).
    pub follow_up: Vec<String>,
    /// Some template reads `inventory_hostnames`: every inventory host's facts are
    /// gathered before planning.
    pub uses_inventory_hostnames: bool,
    /// For each variable, where its value could leak if it were secret: any use
    /// other than a bare `{{ NAME }}` in a command's `stdin:` or a file's content.
    /// Errors at load for `secret: true` variables, and for `--secret-file` names when
    /// a run is set up.
    pub secret_leaks: std::collections::BTreeMap<String, Vec<crate::diag::Diagnostic>>,
}

/// One command of a runbook's Diagnosis.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiagnosisStep {
    /// The command, as a person types it on the node (may use templates).
    pub run: Text,
    /// What its output shows when the problem is there.
    pub shows: String,
}

/// A playbook's rollout defaults, validated at load time.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    /// Batch sizes, e.g. "1,10%,100%".
    pub serial: Option<At<String>>,
    /// Failure budget across the rollout, e.g. "0", "2", "5%".
    pub max_fail: Option<At<String>>,
    /// Failure budget per batch.
    pub max_fail_per_batch: Option<At<String>>,
    /// Pause between batches, e.g. "30s".
    pub pause: Option<At<String>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    Warning,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertMatch {
    pub alertname: String,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

#[derive(Clone, Debug)]
pub struct VarDef {
    pub name: String,
    pub pos: Pos,
    pub default: serde_json::Value,
    pub description: Option<String>,
    /// Never shown in output, diffs or the journal.
    pub secret: bool,
    /// The values the variable may take (empty: any); the operator's value must be one.
    pub choices: Vec<serde_json::Value>,
    /// A `gather:` entry of the same name reads it from each host; the operator's value
    /// (inventory, `-e`) overrides what the host says. Such a variable has no default.
    pub gathered: bool,
}

impl VarDef {
    /// No default and not read from the node: the operator must set it (`-e`, the
    /// inventory), or nothing runs.
    pub fn required(&self) -> bool {
        self.default.is_null() && !self.gathered
    }
}

/// A value read from the host: a file's content or a command's output, optionally the
/// first capture group of a regex over it (null when absent or not matching).
#[derive(Clone, Debug)]
pub struct Gather {
    pub name: String,
    pub pos: Pos,
    pub source: GatherSource,
    pub regex: Option<Text>,
}

#[derive(Clone, Debug)]
pub enum GatherSource {
    File(Text),
    Command(At<Words>),
    /// A template over what was gathered before it (`{{ node_addr | network }}`); an
    /// empty result is null.
    Value(Text),
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawGather {
    pub file: Option<Text>,
    pub command: Option<At<Words>>,
    pub value: Option<Text>,
    pub regex: Option<Text>,
}

/// A check against a host: a subject observed, and a predicate over what was observed.
#[derive(Clone, Debug)]
pub struct Probe {
    pub pos: Pos,
    pub name: Option<String>,
    /// A minijinja expression: when false the probe is not made (a verification that is
    /// opt-in per site). A skipped probe neither fails verification nor detects.
    pub when: Option<Text>,
    pub subject: Subject,
    pub predicate: Predicate,
}

#[derive(Clone, Debug)]
pub enum Subject {
    /// The runtime value of a sysctl key.
    Sysctl(Text),
    /// The value `sysctl --system` would leave the key at, from the files on the host.
    SysctlPersisted(Text),
    /// A command's stdout (trimmed) and exit code.
    Command(At<Words>),
    /// Whether a network link exists.
    Link(Text),
    /// Whether a path exists (without following a final symlink).
    Path(Text),
    /// A file's content.
    File(Text),
    /// Routes to a destination (or, `within`, every route inside that network),
    /// optionally on / not on a device and satisfying a `where` expression.
    Route {
        dest: Text,
        within: bool,
        dev: Option<Text>,
        not_dev: Option<Text>,
        table: Option<Text>,
        filter: Option<Text>,
    },
    /// Whether an iptables rule exists (`iptables -C`).
    Iptables {
        table: Text,
        chain: Text,
        rule: At<Words>,
    },
    /// The rules of a chain (`iptables -S CHAIN`), absent when the chain is missing.
    IptablesChain { table: Text, chain: Text },
    /// Where a described packet ends in a table's chain: `VERDICT by RULE`,
    /// `POLICY (policy of CHAIN)` or `UNDETERMINED at RULE (why)`.
    Trace(At<TraceSpec>),
    /// Whether the step with this id plans a change.
    Drift(Text),
}

#[derive(Clone, Debug)]
pub enum Predicate {
    Exists(bool),
    Equals(Text),
    NotEquals(Text),
    Matches(Text),
    NotMatches(Text),
    Exit(i32),
}

/// A packet a `trace` probe follows through the host's iptables rules (src/trace.rs):
/// the first packet of a new connection.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TraceSpec {
    #[serde(default = "default_table")]
    pub table: Text,
    /// A built-in chain: FORWARD, POSTROUTING, ...
    pub chain: Text,
    /// Source and destination addresses (an `A.B.C.D/LEN` counts as its address).
    pub src: Text,
    pub dst: Text,
    /// The interface the packet arrives on / leaves by.
    #[serde(rename = "in")]
    pub in_if: Option<Text>,
    pub out: Option<Text>,
    /// `icmp` (an echo request, the default), `tcp` (a SYN) or `udp`.
    pub proto: Option<Text>,
    pub dport: Option<Text>,
    /// The packet's netfilter mark (default 0).
    pub mark: Option<Text>,
}

#[derive(Clone, Debug)]
pub struct Step {
    pub pos: Pos,
    pub id: String,
    pub name: Option<String>,
    /// Why this step cannot be undone (required when it has no undo).
    pub irreversible: Option<String>,
    /// A minijinja expression; the step is skipped when it is false.
    pub when: Option<Text>,
    /// Probes that must all hold on the host for the step to run (else: no change).
    pub only_if: Vec<Probe>,
    /// Seconds each of the step's remote commands may take (overrides --command-timeout).
    pub timeout: Option<u64>,
    /// An inventory host or group pattern: the step is planned and applied on the first
    /// reachable host it selects (delegation), with the fixed host's variables and facts.
    pub run_on: Option<Text>,
    pub kind: StepKind,
}

/// `At<T>` fields a step may leave out (serde's `default`).
impl<T: Default> Default for At<T> {
    fn default() -> Self {
        At {
            pos: Pos::default(),
            value: T::default(),
        }
    }
}
