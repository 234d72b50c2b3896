//! The typed playbook: metadata, vars, probes (preconditions, detect, verify) and steps.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::diag::Pos;
use crate::yaml::At;

pub use super::words::{Words, split_words};

/// A string from the playbook with its position; may hold a template.
pub type Text = At<String>;

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

#[derive(Clone, Debug)]
pub enum StepKind {
    Route(RouteSpec),
    Iptables(IptablesSpec),
    Sysctl(SysctlSpec),
    Limits(LimitsSpec),
    FileLines(FileLinesSpec),
    Json(JsonSpec),
    File(FileSpec),
    Path(PathSpec),
    Link(LinkSpec),
    Service(ServiceSpec),
    Package(PackageSpec),
    Command(CommandSpec),
    Etcd(EtcdSpec),
}

pub const STEP_KINDS: &[&str] = &[
    "route",
    "iptables",
    "sysctl",
    "limits",
    "file_lines",
    "json",
    "file",
    "path",
    "link",
    "service",
    "package",
    "command",
    "etcd",
];

impl StepKind {
    /// Whether planning the step only reads state kfix itself knows how to read, so it
    /// may be read before the preconditions are known to hold: not a command, service,
    /// package or etcd step, whose planning runs the playbook's own checks or queries.
    /// A new kind must decide here (the match is exhaustive).
    pub fn plans_by_builtin_reads(&self) -> bool {
        match self {
            StepKind::Route(_)
            | StepKind::Iptables(_)
            | StepKind::Sysctl(_)
            | StepKind::Limits(_)
            | StepKind::FileLines(_)
            | StepKind::Json(_)
            | StepKind::File(_)
            | StepKind::Path(_)
            | StepKind::Link(_) => true,
            StepKind::Service(_)
            | StepKind::Package(_)
            | StepKind::Command(_)
            | StepKind::Etcd(_) => false,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            StepKind::Route(_) => "route",
            StepKind::Iptables(_) => "iptables",
            StepKind::Sysctl(_) => "sysctl",
            StepKind::Limits(_) => "limits",
            StepKind::FileLines(_) => "file_lines",
            StepKind::Json(_) => "json",
            StepKind::File(_) => "file",
            StepKind::Path(_) => "path",
            StepKind::Link(_) => "link",
            StepKind::Service(_) => "service",
            StepKind::Etcd(_) => "etcd",
            StepKind::Package(_) => "package",
            StepKind::Command(_) => "command",
        }
    }

    /// Whether kfix can undo this step by itself (else it needs `undo:` or `irreversible:`).
    pub fn has_undo(&self) -> bool {
        match self {
            StepKind::Command(c) => c.undo.is_some(),
            _ => true,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    #[default]
    Present,
    Absent,
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub dest: Text,
    /// Every route whose destination is `dest` or a network inside it (routes that take
    /// precedence over a route for `dest`), not only `dest` itself.
    #[serde(default)]
    pub within: bool,
    /// A minijinja expression over `route` (dst, prefixlen, dev, via, metric, proto,
    /// scope, src, type, line) that a route must satisfy to be selected.
    #[serde(rename = "where")]
    pub filter: Option<Text>,
    pub dev: Option<Text>,
    /// Match only routes whose device is not this one (e.g. the flannel device).
    pub not_dev: Option<Text>,
    pub via: Option<Text>,
    pub metric: Option<u32>,
    pub table: Option<Text>,
    #[serde(default)]
    pub state: Presence,
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IptablesSpec {
    #[serde(default = "default_table")]
    pub table: Text,
    pub chain: Option<Text>,
    pub rule: Option<At<Words>>,
    #[serde(default)]
    pub state: Presence,
    /// Insert at the top of the chain instead of appending.
    #[serde(default)]
    pub insert: bool,
    /// Flush the chain (or every chain of the table when no chain is named).
    #[serde(default)]
    pub flush: bool,
    /// With `flush` and no chain: also delete the table's user-defined chains (`-X`).
    #[serde(default)]
    pub delete_chains: bool,
    /// Set the chain's policy (built-in chains only).
    pub policy: Option<Text>,
}

fn default_table() -> Text {
    At {
        pos: Pos::default(),
        value: "filter".to_string(),
    }
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SysctlSpec {
    pub key: Text,
    pub value: Text,
    /// Also persist the value so `sysctl --system` (and the next boot) keeps it.
    #[serde(default = "yes")]
    pub persist: bool,
    /// Where a missing setting is added (edits elsewhere fix conflicting lines in place).
    pub file: Option<Text>,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    pub file: Option<Text>,
    /// Drop-in directory pam_limits reads after `file`.
    pub dropin_dir: Option<Text>,
    pub entries: Vec<At<LimitEntry>>,
    /// Never lower: a line with a higher value (or `unlimited`) for the same domain,
    /// type and item is kept and counts as met.
    #[serde(default)]
    pub only_raise: bool,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitEntry {
    pub domain: Text,
    #[serde(rename = "type")]
    pub kind: Text,
    pub item: Text,
    pub value: Text,
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileLinesSpec {
    pub path: Text,
    pub lines: Vec<At<LineSpec>>,
    #[serde(default)]
    pub create: bool,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LineSpec {
    /// The line that must be present (or absent, with `state: absent`).
    pub line: Option<Text>,
    /// With `line`: the last line matching it is replaced by `line`. With `replace`:
    /// every matching line is rewritten. With `state: absent`: matching lines go.
    pub regexp: Option<Text>,
    /// Replacement for matching lines; `$1`, `${name}` refer to capture groups.
    pub replace: Option<Text>,
    #[serde(default)]
    pub state: Presence,
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonSpec {
    pub path: Text,
    /// Dotted key paths and the values to set; every other key is kept.
    #[serde(default)]
    pub set: At<serde_json::Map<String, serde_json::Value>>,
    /// Dotted key paths to remove.
    #[serde(default)]
    pub unset: Vec<Text>,
    #[serde(default = "yes")]
    pub create: bool,
}

impl<T: Default> Default for At<T> {
    fn default() -> Self {
        At {
            pos: Pos::default(),
            value: T::default(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    pub path: Text,
    pub content: Text,
    /// Octal mode for a new file (an existing file keeps its mode unless given).
    pub mode: Option<Text>,
    /// The file is systemd configuration (a unit or drop-in): its directory is created
    /// when missing, and systemd re-reads its units after the write and after the undo.
    #[serde(default)]
    pub daemon_reload: bool,
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PathSpec {
    pub path: Text,
    pub state: PathState,
    /// Where to move it (default: the run's backup directory under /var/lib/kfix).
    pub aside_to: Option<Text>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PathState {
    Absent,
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    pub name: Text,
    #[serde(default)]
    pub state: Presence,
    /// For `present`: the link type (`dummy`, `bridge`, `vxlan`, ...).
    pub kind: Option<Text>,
    /// For `present`: extra `ip link add` arguments after the type.
    #[serde(default)]
    pub args: Vec<Text>,
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub name: Text,
    pub state: ServiceState,
    /// A host without this service has nothing to do (instead of failing).
    #[serde(default)]
    pub missing_ok: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ServiceState {
    Started,
    Stopped,
    Restarted,
    /// Back to the state it had when the plan began (after an earlier step stopped it).
    Restored,
}

/// A package installed by the host's apt (dependencies as apt resolves them).
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PackageSpec {
    pub name: Text,
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandSpec {
    pub run: At<Words>,
    /// Nothing to do when this command exits 0.
    pub unless: Option<At<Words>>,
    /// Nothing to do when this path exists.
    pub creates: Option<Text>,
    /// Bytes for the command's stdin (templated): how a secret reaches a command
    /// without showing in the target's process list.
    pub stdin: Option<Text>,
    /// The command that undoes `run`.
    pub undo: Option<At<Words>>,
    /// Seconds before the command is killed (default: the run's command timeout).
    pub timeout: Option<u64>,
}

/// `etcd` steps (v3 API, through `etcdctl` on the host the step runs on).
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EtcdSpec {
    /// The etcd API: 3 (default) or 2 (old flannel's keys; `prefix` is then a directory),
    /// or a template giving one (`"{{ etcd_api }}"`: a site's choice).
    pub api: Option<At<EtcdApi>>,
    /// Client URL(s), comma-separated (`etcdctl --endpoints`).
    pub endpoints: Text,
    /// TLS files on the host (`--cacert`, `--cert`, `--key`).
    pub cacert: Option<Text>,
    pub cert: Option<Text>,
    pub key: Option<Text>,
    pub delete: EtcdDelete,
}

/// An `etcd` step's API: a number, or a template rendered per host.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(untagged)]
pub enum EtcdApi {
    Fixed(u8),
    Template(String),
}

/// Which keys an `etcd` step deletes: every key under `prefix` and every key in `keys`
/// (those that exist), kept when `where` holds for it.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EtcdDelete {
    pub prefix: Option<Text>,
    #[serde(default)]
    pub keys: Vec<Text>,
    /// A minijinja expression over `key`, `value` (text) and `json` (the value parsed
    /// as JSON, or none): the key is deleted only when it is true. With `group`, it is
    /// asked once per group and sees `group` (the captured name), `groups` (every
    /// group's name), `keys` (the group's keys and their values) and `json` (the
    /// group's keys and their values parsed). It always sees `listed`: every key read,
    /// with its value (text).
    #[serde(rename = "where")]
    pub filter: Option<Text>,
    /// A regex with one capture group: the keys it matches are grouped by what it
    /// captures (e.g. a node's name in a record spread over many keys), and a group is
    /// deleted whole or not at all. Keys it does not match are never deleted.
    pub group: Option<Text>,
    /// Instead of `group`: a minijinja expression over `key`, `value` and `json` (one
    /// key) naming the group the key belongs to, or none for no group (e.g. `key |
    /// calico_owner(json)`: the node a calico key belongs to, from its path or its value).
    pub group_by: Option<Text>,
    /// A minijinja expression over a chosen key (`key`, `value`, `json` — the key's value
    /// parsed —, and with a group `group` and `keys`): where it gives a value other than
    /// none, the key is not deleted but replaced by that value as JSON (a compare-and-put
    /// on the key's revision, undone by putting the old value back).
    pub rewrite: Option<Text>,
}
