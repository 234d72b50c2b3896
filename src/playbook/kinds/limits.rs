//! `limits`: pam_limits entries made effective (limits.conf and its drop-ins).

use schemars::JsonSchema;
use serde::Deserialize;

use super::{KindSpec, Text, push_some};
use crate::yaml::At;

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

impl KindSpec for LimitsSpec {
    fn plans_by_builtin_reads(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        format!("limits: {} entries made effective", self.entries.len())
    }

    fn texts(&self) -> Vec<Text> {
        let mut v = Vec::new();
        push_some(&mut v, [&self.file, &self.dropin_dir]);
        for e in &self.entries {
            let e = &e.value;
            v.extend([
                e.domain.clone(),
                e.kind.clone(),
                e.item.clone(),
                e.value.clone(),
            ]);
        }
        v
    }
}
