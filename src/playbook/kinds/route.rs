//! `route`: a route present or absent, or every route inside a destination.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{KindSpec, LoadChecks, Presence, Text, lower, push_some};
use crate::diag::Pos;

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

impl KindSpec for RouteSpec {
    fn plans_by_builtin_reads(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        format!(
            "{} `{}` {}",
            if self.within {
                "routes inside"
            } else {
                "route"
            },
            self.dest.value,
            lower(&self.state)
        )
    }

    fn texts(&self) -> Vec<Text> {
        let mut v = vec![self.dest.clone()];
        push_some(&mut v, [&self.dev, &self.not_dev, &self.via, &self.table]);
        v
    }

    fn check(&self, _id: &str, _pos: Pos, c: &mut dyn LoadChecks) {
        if let Some(w) = &self.filter {
            c.expr(w, &["route"]);
        }
    }
}
