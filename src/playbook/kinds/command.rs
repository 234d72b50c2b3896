//! `command`: a command the playbook gives, with its probe (`unless`, `creates`) and undo.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{KindSpec, LoadChecks, Text, Words, push_some, words_texts};
use crate::diag::Pos;
use crate::yaml::At;

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

impl KindSpec for CommandSpec {
    fn plans_by_builtin_reads(&self) -> bool {
        false
    }

    fn effect_is_readable(&self) -> bool {
        false
    }

    fn has_undo(&self) -> bool {
        self.undo.is_some()
    }

    fn describe(&self) -> String {
        // A multi-line argument is a script: the page shows it apart.
        if self.run.value.0.iter().any(|a| a.trim_end().contains('\n')) {
            return "a shell script in the playbook".to_string();
        }
        format!("command `{}`", crate::quote::display(&self.run.value.0))
    }

    fn texts(&self) -> Vec<Text> {
        let mut v = words_texts(&self.run);
        for w in [&self.unless, &self.undo].into_iter().flatten() {
            v.extend(words_texts(w));
        }
        push_some(&mut v, [&self.creates, &self.stdin]);
        v
    }

    fn secret_safe_texts(&self) -> Vec<Text> {
        self.stdin.iter().cloned().collect()
    }

    fn check(&self, _id: &str, _pos: Pos, c: &mut dyn LoadChecks) {
        for w in [Some(&self.run), self.unless.as_ref(), self.undo.as_ref()]
            .into_iter()
            .flatten()
        {
            c.shell_scripts(w);
        }
    }
}
