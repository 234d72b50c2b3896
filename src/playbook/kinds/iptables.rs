//! `iptables`: a rule added or deleted, a chain flushed (saved first), or its policy set.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{
    KindSpec, LoadChecks, Presence, Text, Words, default_table, lower, push_some, words_texts,
};
use crate::diag::Pos;
use crate::yaml::At;

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

impl KindSpec for IptablesSpec {
    fn plans_by_builtin_reads(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        match (&self.rule, &self.policy) {
            (Some(w), _) => format!(
                "iptables -t {} rule `{}` {}",
                self.table.value,
                w.value.0.join(" "),
                lower(&self.state)
            ),
            (None, Some(p)) => format!("iptables -t {} policy {}", self.table.value, p.value),
            (None, None) => format!("iptables -t {} flush (saved first)", self.table.value),
        }
    }

    fn texts(&self) -> Vec<Text> {
        let mut v = vec![self.table.clone()];
        push_some(&mut v, [&self.chain, &self.policy]);
        if let Some(r) = &self.rule {
            v.extend(words_texts(r));
        }
        v
    }

    fn check(&self, id: &str, pos: Pos, c: &mut dyn LoadChecks) {
        let modes = usize::from(self.rule.is_some())
            + usize::from(self.flush)
            + usize::from(self.policy.is_some());
        if modes != 1 {
            c.error(
                pos,
                format!(
                    "iptables step `{id}` has {} of `rule`, `flush: true` and `policy`",
                    if modes == 0 { "none" } else { "more than one" }
                ),
                Some("an iptables step does one thing: add or delete a rule, flush, or set a chain's policy; split it into steps".into()),
            );
        }
        if let (Some(rule), None) = (&self.rule, &self.chain) {
            c.error(
                rule.pos,
                format!("iptables step `{id}`: a `rule` needs its `chain`"),
                Some("e.g. `chain: POSTROUTING`".into()),
            );
        }
        if let (Some(policy), None) = (&self.policy, &self.chain) {
            c.error(
                policy.pos,
                format!("iptables step `{id}`: a `policy` needs its `chain`"),
                Some("a built-in chain: `chain: FORWARD`".into()),
            );
        }
    }
}
