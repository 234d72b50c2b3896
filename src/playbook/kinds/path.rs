//! `path`: a path moved aside (never deleted).

use schemars::JsonSchema;
use serde::Deserialize;

use super::{KindSpec, Text, push_some};

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

impl KindSpec for PathSpec {
    fn plans_by_builtin_reads(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        match self.state {
            PathState::Absent => format!("`{}` moved aside (kept for undo)", self.path.value),
        }
    }

    fn texts(&self) -> Vec<Text> {
        let mut v = vec![self.path.clone()];
        push_some(&mut v, [&self.aside_to]);
        v
    }
}
