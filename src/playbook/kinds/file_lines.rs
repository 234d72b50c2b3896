//! `file_lines`: lines present, absent or rewritten in a file; the rest kept.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{KindSpec, Presence, Text, push_some};
use crate::yaml::At;

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

impl KindSpec for FileLinesSpec {
    fn plans_by_builtin_reads(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        format!("lines in `{}`", self.path.value)
    }

    fn texts(&self) -> Vec<Text> {
        let mut v = vec![self.path.clone()];
        for l in &self.lines {
            push_some(&mut v, [&l.value.line, &l.value.regexp, &l.value.replace]);
        }
        v
    }

    fn secret_safe_texts(&self) -> Vec<Text> {
        self.lines
            .iter()
            .filter_map(|l| l.value.line.clone())
            .collect()
    }
}
