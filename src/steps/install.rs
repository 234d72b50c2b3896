//! What every package manager's `package` step shares (apt in [`super::package`], dnf
//! and yum in [`super::rpm`]): the manager, its predicted install, and the plan that
//! installs exactly those packages and removes exactly them on undo.

use crate::host::{HResult, failed};
use crate::plan::{Op, StepPlan, Undo};
use crate::quote::Cmd;

/// The host's package manager.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Manager {
    Apt,
    Dnf,
    Yum,
}

impl Manager {
    pub fn tool(self) -> &'static str {
        match self {
            Manager::Apt => "apt-get",
            Manager::Dnf => "dnf",
            Manager::Yum => "yum",
        }
    }
}

/// What an install would do, as the package manager predicts it (`apt-get install
/// --simulate`, dnf's or yum's transaction table).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Simulation {
    /// Newly installed packages, `(name, version)`, in the tool's install order.
    pub new: Vec<(String, String)>,
    /// Packages already on the host that the install would upgrade or downgrade.
    pub changed: Vec<String>,
    /// Packages the install would remove.
    pub removed: Vec<String>,
}

impl Simulation {
    /// Refused when the install would change packages already on the host: kfix could
    /// not undo that exactly.
    pub fn refuse_changes(&self, name: &str) -> HResult<()> {
        let mut what = Vec::new();
        if !self.changed.is_empty() {
            what.push(format!("upgrade {}", self.changed.join(", ")));
        }
        if !self.removed.is_empty() {
            what.push(format!("remove {}", self.removed.join(", ")));
        }
        if what.is_empty() {
            return Ok(());
        }
        failed(format!(
            "installing {name} would also {}, which kfix cannot undo exactly; hint: \
             bring those packages up to date first, then run the playbook again",
            what.join(" and ")
        ))
    }
}

/// The plan that installs `name` `version` with `install`, adding the packages `new`
/// (plain names, in install order), undone by `remove` followed by their names.
pub fn install_plan(
    id: &str,
    name: &str,
    version: &str,
    new: &[(String, String)],
    install: Cmd,
    remove: &[&str],
    fingerprint: Cmd,
) -> StepPlan {
    let mut undo: Vec<String> = remove.iter().map(|w| w.to_string()).collect();
    undo.extend(new.iter().map(|(n, _)| n.clone()));
    let undo = Cmd::new(undo);
    let mut diff = String::new();
    for (n, v) in new {
        let role = if n == name { "" } else { " (dependency)" };
        diff.push_str(&format!("+ package {n} {v}{role}\n"));
    }
    diff.push_str(&format!("  (undo: $ {})\n", undo.to_shell()));
    let desc = match new.len().saturating_sub(1) {
        0 => format!("install {name} {version}"),
        1 => format!("install {name} {version} and 1 dependency"),
        n => format!("install {name} {version} and {n} dependencies"),
    };
    let op = Op {
        // The tool may download; a step `timeout:` overrides this.
        timeout_secs: Some(600),
        ..Op::new(desc, install, Undo::Cmd(undo))
    }
    .fingerprint(fingerprint);
    StepPlan::change(id, "package", diff, vec![op])
}
