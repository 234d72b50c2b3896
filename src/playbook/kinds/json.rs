//! `json`: keys set or removed in a JSON file; every other key kept.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{KindSpec, LoadChecks, Text, yes};
use crate::diag::Pos;
use crate::yaml::At;

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonSpec {
    pub path: Text,
    /// Dotted key paths and the values to set; every other key is kept.
    #[serde(default)]
    pub set: At<serde_json::Map<String, serde_json::Value>>,
    /// Dotted key paths to remove.
    #[serde(default)]
    pub unset: Vec<Text>,
    #[serde(default = "yes")]
    pub create: bool,
}

impl KindSpec for JsonSpec {
    fn plans_by_builtin_reads(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        format!("JSON keys in `{}` (other keys kept)", self.path.value)
    }

    fn texts(&self) -> Vec<Text> {
        let mut v = vec![self.path.clone()];
        v.extend(self.unset.iter().cloned());
        v
    }

    /// The values set are written to the file: each string may hold a template (and a
    /// secret).
    fn check(&self, _id: &str, _pos: Pos, c: &mut dyn LoadChecks) {
        let mut strings = Vec::new();
        collect_strings(
            &serde_json::Value::Object(self.set.value.clone()),
            &mut strings,
        );
        for value in strings {
            c.secret_text(&At {
                pos: self.set.pos,
                value,
            });
        }
    }
}

/// Every string in a JSON value.
fn collect_strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_strings(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| collect_strings(x, out)),
        _ => {}
    }
}
