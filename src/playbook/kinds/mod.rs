//! The step kinds, listed once. [`for_each_step_kind!`](crate::for_each_step_kind) hands
//! the list to whatever needs every kind (the [`StepKind`] enum and its names here,
//! decoding and the schema in `load`, planning in `steps`); what differs per kind is
//! answered by [`KindSpec`] in the kind's own file. A new kind is its spec file here, its
//! planner in src/steps/ (`impl steps::Plan`), and one line in the list.

mod command;
mod etcd;
mod file;
mod file_lines;
mod iptables;
mod json;
mod limits;
mod link;
mod package;
mod path;
mod route;
mod service;
mod sysctl;

pub use command::*;
pub use etcd::*;
pub use file::*;
pub use file_lines::*;
pub use iptables::*;
pub use json::*;
pub use limits::*;
pub use link::*;
pub use package::*;
pub use path::*;
pub use route::*;
pub use service::*;
pub use sysctl::*;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use super::words::{Text, Words};
use crate::diag::Pos;
use crate::yaml::At;

/// Calls the macro `$m` with every step kind as `Variant(Spec) = "name"`, in the order
/// the playbook reference lists them: the one list of step kinds.
#[macro_export]
macro_rules! for_each_step_kind {
    ($m:ident) => {
        $m! {
            Route($crate::playbook::RouteSpec) = "route",
            Iptables($crate::playbook::IptablesSpec) = "iptables",
            Sysctl($crate::playbook::SysctlSpec) = "sysctl",
            Limits($crate::playbook::LimitsSpec) = "limits",
            FileLines($crate::playbook::FileLinesSpec) = "file_lines",
            Json($crate::playbook::JsonSpec) = "json",
            File($crate::playbook::FileSpec) = "file",
            Path($crate::playbook::PathSpec) = "path",
            Link($crate::playbook::LinkSpec) = "link",
            Service($crate::playbook::ServiceSpec) = "service",
            Package($crate::playbook::PackageSpec) = "package",
            Command($crate::playbook::CommandSpec) = "command",
            Etcd($crate::playbook::EtcdSpec) = "etcd",
        }
    };
}

macro_rules! define_step_kind {
    ($($variant:ident($spec:ty) = $name:literal),* $(,)?) => {
        /// A step's kind and its specification.
        #[derive(Clone, Debug)]
        pub enum StepKind {
            $($variant($spec)),*
        }

        /// Every step kind's name (the key of its specification in a step).
        pub const STEP_KINDS: &[&str] = &[$($name),*];

        impl StepKind {
            pub fn name(&self) -> &'static str {
                match self {
                    $(StepKind::$variant(_) => $name),*
                }
            }

            /// What the kind answers (see [`KindSpec`]).
            pub fn spec(&self) -> &dyn KindSpec {
                match self {
                    $(StepKind::$variant(s) => s),*
                }
            }
        }
    };
}

for_each_step_kind!(define_step_kind);

impl StepKind {
    /// See [`KindSpec::plans_by_builtin_reads`].
    pub fn plans_by_builtin_reads(&self) -> bool {
        self.spec().plans_by_builtin_reads()
    }

    /// See [`KindSpec::has_undo`].
    pub fn has_undo(&self) -> bool {
        self.spec().has_undo()
    }
}

/// What every step kind answers besides its plan (which src/steps/ makes).
pub trait KindSpec {
    /// Whether planning the step only reads state kfix itself knows how to read, so it
    /// may be read before the preconditions are known to hold: not a kind whose planning
    /// runs the playbook's own checks or queries (a command, service, package, etcd).
    fn plans_by_builtin_reads(&self) -> bool;

    /// Whether kfix can read back the state the step leaves (a file, a rule, a key): a
    /// service restart, a command or a package may change state kfix cannot see, so
    /// `settle` reads the earlier operations' states again after them.
    fn effect_is_readable(&self) -> bool {
        true
    }

    /// Whether kfix can undo the step by itself (else it needs `undo:` or `irreversible:`).
    fn has_undo(&self) -> bool {
        true
    }

    /// What the step changes, in one line of the runbook page.
    fn describe(&self) -> String;

    /// Every templated text of the step (each checked at load).
    fn texts(&self) -> Vec<Text>;

    /// The texts written to a file or fed on stdin: the only places a secret may go.
    fn secret_safe_texts(&self) -> Vec<Text> {
        Vec::new()
    }

    /// The kind's own checks at load, beyond its texts (step `id` at `pos`).
    fn check(&self, _id: &str, _pos: Pos, _c: &mut dyn LoadChecks) {}
}

/// What a kind's load-time checks may ask of the loader: an error at a position, and
/// the loader's checks of templates and expressions against the names the playbook knows.
pub trait LoadChecks {
    fn error(&mut self, pos: Pos, message: String, hint: Option<String>);
    /// A templated text.
    fn text(&mut self, t: &Text);
    /// A templated text whose value is written to a file or fed on stdin (where a
    /// secret may go).
    fn secret_text(&mut self, t: &Text);
    /// A minijinja expression that also sees `names`.
    fn expr(&mut self, t: &Text, names: &[&str]);
    /// Scripts given to a shell's `-c` in a command (no template inside them).
    fn shell_scripts(&mut self, w: &At<Words>);
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    #[default]
    Present,
    Absent,
}

/// A state's name as the runbook page says it (`present`, `absent`, `restarted`).
pub(super) fn lower<T: std::fmt::Debug>(state: &T) -> String {
    format!("{state:?}").to_lowercase()
}

/// Each word of a command as a text at the command's position.
pub fn words_texts(w: &At<Words>) -> Vec<Text> {
    w.value
        .0
        .iter()
        .map(|s| At {
            pos: w.pos,
            value: s.clone(),
        })
        .collect()
}

/// Pushes the texts that are there.
pub(super) fn push_some<'a>(v: &mut Vec<Text>, texts: impl IntoIterator<Item = &'a Option<Text>>) {
    v.extend(texts.into_iter().flatten().cloned());
}

/// The iptables table a step or a trace names by default.
pub(super) fn default_table() -> Text {
    At {
        pos: Pos::default(),
        value: "filter".to_string(),
    }
}

pub(super) fn yes() -> bool {
    true
}
