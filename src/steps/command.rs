//! `command` steps: the escape hatch. An argument vector (never a shell line), with an
//! optional probe (`creates`, `unless`) and an optional `undo`. Without a probe the
//! verdict is `unknown`, never a silent `no change`.

use crate::host::{HResult, Host};
use crate::plan::{Op, StepPlan, Undo, Verdict};
use crate::playbook::CommandSpec;
use crate::quote::Cmd;

pub async fn plan(
    id: &str,
    s: &CommandSpec,
    irreversible: Option<&str>,
    h: &Host,
) -> HResult<StepPlan> {
    let mut run = Cmd::new(h.render_words(&s.run)?);
    if let Some(t) = &s.stdin {
        run = run.with_stdin(h.render(t)?);
    }
    if let Some(c) = &s.creates {
        let p = h.render(c)?;
        if h.path_exists(&p).await? {
            return Ok(StepPlan::no_change(
                id,
                "command",
                Some(format!("{p} exists")),
            ));
        }
    }
    if let Some(u) = &s.unless {
        let probe = Cmd::new(h.render_words(u)?);
        if h.run(&probe).await?.success() {
            return Ok(StepPlan::no_change(
                id,
                "command",
                Some(format!("`{}` succeeded", probe.to_shell())),
            ));
        }
    }
    let undo = match &s.undo {
        Some(u) => Undo::Cmd(Cmd::new(h.render_words(u)?)),
        None => Undo::Impossible(irreversible.unwrap_or("no undo command").to_string()),
    };
    let line = run.to_shell();
    let mut diff = format!("$ {line}\n");
    if let Some(input) = &run.stdin {
        diff.push_str(&format!("  (stdin: {} bytes)\n", input.len()));
    }
    if let Undo::Cmd(u) = &undo {
        diff.push_str(&format!("  (undo: $ {})\n", u.to_shell()));
    }
    let op = Op {
        timeout_secs: s.timeout,
        ..Op::new(format!("run {line}"), run, undo)
    };
    let mut p = StepPlan::change(id, "command", diff, vec![op]);
    if s.creates.is_none() && s.unless.is_none() {
        p.verdict = Verdict::Unknown;
        p.reason =
            Some("no `creates` or `unless` probe: kfix cannot tell whether it is needed".into());
    }
    Ok(p)
}

impl super::Plan for CommandSpec {
    async fn plan(&self, step: &crate::playbook::Step, h: &Host) -> HResult<StepPlan> {
        plan(&step.id, self, step.irreversible.as_deref(), h).await
    }
}
