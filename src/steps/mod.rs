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

/// Plan one step's change on a host, its `when:` and `only_if:` already met (see
/// [`crate::probe::plan_step`]). Never changes the host.
pub async fn plan(step: &Step, h: &Host) -> HResult<StepPlan> {
    let id = step.id.as_str();
    let mut p = match &step.kind {
        StepKind::Route(s) => route::plan(id, s, h).await?,
        StepKind::Iptables(s) => iptables::plan(id, s, h).await?,
        StepKind::Sysctl(s) => sysctl::plan(id, s, h).await?,
        StepKind::Limits(s) => limits::plan(id, s, h).await?,
        StepKind::FileLines(s) => files::plan_lines(id, s, h).await?,
        StepKind::Json(s) => files::plan_json(id, s, h).await?,
        StepKind::File(s) => files::plan_file(id, s, h).await?,
        StepKind::Path(s) => path::plan(id, s, h).await?,
        StepKind::Link(s) => link::plan(id, s, h).await?,
        StepKind::Service(s) => service::plan(id, s, h).await?,
        StepKind::Package(s) => package::plan(id, s, h).await?,
        StepKind::Command(s) => command::plan(id, s, step.irreversible.as_deref(), h).await?,
        StepKind::Etcd(s) => etcd::plan(id, s, h).await?,
    };
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
