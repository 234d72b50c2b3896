//! `package`: a package installed by the host's own package manager.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{KindSpec, Text};

/// A package installed by the host's apt (dependencies as apt resolves them).
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PackageSpec {
    pub name: Text,
}

impl KindSpec for PackageSpec {
    fn plans_by_builtin_reads(&self) -> bool {
        false
    }

    fn effect_is_readable(&self) -> bool {
        false
    }

    fn describe(&self) -> String {
        format!(
            "package `{}` installed (with its dependencies)",
            self.name.value
        )
    }

    fn texts(&self) -> Vec<Text> {
        vec![self.name.clone()]
    }
}
