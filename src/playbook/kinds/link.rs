//! `link`: a network link deleted (captured for undo) or added.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{KindSpec, Presence, Text, lower, push_some};

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

impl KindSpec for LinkSpec {
    fn plans_by_builtin_reads(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        format!("link `{}` {}", self.name.value, lower(&self.state))
    }

    fn texts(&self) -> Vec<Text> {
        let mut v = vec![self.name.clone()];
        push_some(&mut v, [&self.kind]);
        v.extend(self.args.iter().cloned());
        v
    }
}
