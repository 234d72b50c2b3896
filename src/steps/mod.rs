//! Step kinds: each plans (read-only) the operations that bring a host to the step's
//! desired state. Applying and undoing are generic over the planned operations.

mod command;
pub mod etcd;
mod files;
mod install;
mod iptables;
mod limits;
mod link;
mod package;
mod path;
pub mod route;
mod rpm;
mod service;
mod sysctl;

pub use iptables::{check as rule_check, list_rules, rule_exists, table_rules};
pub use link::link_exists;
pub use route::{Select as RouteSelect, normalize_dest, select as select_routes};
pub use sysctl::{persisted_value, runtime_value, value_read};

use crate::host::{HResult, Host};
use crate::plan::{StepPlan, Undo};
use crate::playbook::{Step, StepKind};

/// A step kind's planner: the kind's file here implements it for its spec (the spec
/// and what else the kind answers are in src/playbook/kinds/).
pub(crate) trait Plan {
    /// The operations that bring the host to the step's state. Never changes the host.
    async fn plan(&self, step: &Step, h: &Host) -> HResult<StepPlan>;
}

/// Plan one step's change on a host, its `when:` and `only_if:` already met (see
/// [`crate::probe::plan_step`]). Never changes the host.
pub async fn plan(step: &Step, h: &Host) -> HResult<StepPlan> {
    macro_rules! plan_kind {
        ($($variant:ident($spec:ty) = $name:literal),* $(,)?) => {
            match &step.kind {
                $(StepKind::$variant(s) => Plan::plan(s, step, h).await?,)*
            }
        };
    }
    let mut p = crate::for_each_step_kind!(plan_kind);
    // Every command the executor (or a later rollback) would send: no secret as an argument.
    for op in &p.ops {
        h.refuse_exposed(&op.cmd)?;
        if let Undo::Cmd(u) = &op.undo {
            h.refuse_exposed(u)?;
        }
        if let Some(pr) = &op.fingerprint {
            h.refuse_exposed(pr)?;
        }
    }
    if let Some(t) = step.timeout {
        for op in p.ops.iter_mut() {
            op.timeout_secs = Some(t);
        }
    }
    if let Some(why) = p.ops.iter().find_map(|o| match &o.undo {
        Undo::Impossible(w) => Some(w.clone()),
        _ => None,
    }) {
        p.irreversible = Some(step.irreversible.clone().unwrap_or(why));
    }
    Ok(p)
}
