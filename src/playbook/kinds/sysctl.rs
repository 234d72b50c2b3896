//! `sysctl`: a kernel parameter at runtime and in the configuration `sysctl --system` reads.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{KindSpec, Text, push_some, yes};

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

impl KindSpec for SysctlSpec {
    fn plans_by_builtin_reads(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        format!(
            "sysctl `{}` = `{}`{}",
            self.key.value,
            self.value.value,
            if self.persist { ", persisted" } else { "" }
        )
    }

    fn texts(&self) -> Vec<Text> {
        let mut v = vec![self.key.clone(), self.value.clone()];
        push_some(&mut v, [&self.file]);
        v
    }
}
