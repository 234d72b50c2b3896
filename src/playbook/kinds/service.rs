//! `service`: a service started, stopped, restarted or restored (systemd or SysV).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{KindSpec, Text, lower};

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub name: Text,
    pub state: ServiceState,
    /// A host without this service has nothing to do (instead of failing).
    #[serde(default)]
    pub missing_ok: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ServiceState {
    Started,
    Stopped,
    Restarted,
    /// Back to the state it had when the plan began (after an earlier step stopped it).
    Restored,
}

impl KindSpec for ServiceSpec {
    fn plans_by_builtin_reads(&self) -> bool {
        false
    }

    fn effect_is_readable(&self) -> bool {
        false
    }

    fn describe(&self) -> String {
        format!("service `{}` {}", self.name.value, lower(&self.state))
    }

    fn texts(&self) -> Vec<Text> {
        vec![self.name.clone()]
    }
}
