//! `file`: a whole file's content (and mode), systemd reloaded for a unit.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{KindSpec, Text, push_some};

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

impl KindSpec for FileSpec {
    fn plans_by_builtin_reads(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        format!("file `{}`", self.path.value)
    }

    fn texts(&self) -> Vec<Text> {
        let mut v = vec![self.path.clone(), self.content.clone()];
        push_some(&mut v, [&self.mode]);
        v
    }

    fn secret_safe_texts(&self) -> Vec<Text> {
        vec![self.content.clone()]
    }
}
