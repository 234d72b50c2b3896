//! `service` steps: started, stopped, restarted, or restored to the state it had when
//! the plan began; systemd (systemctl) where it runs, else SysV `service`.

use crate::host::{HResult, Host, failed};
use crate::plan::{Op, StepPlan, Undo, state_diff};
use crate::playbook::{ServiceSpec, ServiceState};
use crate::quote::Cmd;

/// Does the service exist, and is it running?
pub async fn status(h: &Host, name: &str) -> HResult<(bool, bool)> {
    if h.facts.systemd {
        let load = h
            .run(&Cmd::new([
                "systemctl",
                "show",
                "-p",
                "LoadState",
                "--value",
                name,
            ]))
            .await?;
        let exists = load.success() && load.stdout().trim() == "loaded";
        let active = h
            .run(&Cmd::new(["systemctl", "is-active", "--quiet", name]))
            .await?
            .success();
        Ok((exists, active))
    } else {
        let exists = h
            .run(&Cmd::script(r#"[ -x "/etc/init.d/$1" ]"#, [name]))
            .await?
            .success();
        if !exists {
            return Ok((false, false));
        }
        let st = h.run(&Cmd::new(["service", name, "status"])).await?;
        Ok((true, st.success()))
    }
}

fn ctl(h: &Host, verb: &str, name: &str) -> Cmd {
    if h.facts.systemd {
        Cmd::new(["systemctl", verb, name])
    } else {
        Cmd::new(["service", name, verb])
    }
}

pub async fn plan(id: &str, s: &ServiceSpec, h: &Host) -> HResult<StepPlan> {
    let mut p = plan_ops(id, s, h).await?;
    let name = h.render(&s.name)?;
    let probe = if h.facts.systemd {
        Cmd::new(["systemctl", "is-active", name.as_str()])
    } else {
        Cmd::script(
            r#"service "$1" status >/dev/null 2>&1 && echo running || echo stopped"#,
            [name],
        )
    };
    for op in p.ops.iter_mut() {
        op.probe = Some(probe.clone());
    }
    Ok(p)
}

async fn plan_ops(id: &str, s: &ServiceSpec, h: &Host) -> HResult<StepPlan> {
    let name = h.render(&s.name)?;
    let (exists, real_active) = status(h, &name).await?;
    if !exists {
        if s.missing_ok {
            return Ok(StepPlan::no_change(
                id,
                "service",
                Some(format!("service {name} is not installed")),
            ));
        }
        return failed(format!(
            "service {name} is not installed (set `missing_ok: true` if that is fine)"
        ));
    }
    h.note_initial_service(&name, real_active);
    let active = h.predicted_service(&name).unwrap_or(real_active);
    let want = match s.state {
        ServiceState::Started => true,
        ServiceState::Stopped => false,
        ServiceState::Restored => h.initial_service(&name).unwrap_or(real_active),
        ServiceState::Restarted => {
            h.predict_service(&name, true);
            let verb = if active { "restart" } else { "start" };
            let undo = if active {
                Undo::Nothing
            } else {
                Undo::Cmd(ctl(h, "stop", &name))
            };
            let op = Op::new(format!("{verb} {name}"), ctl(h, verb, &name), undo);
            let diff = state_diff(
                &[format!("service {name} {}", word(active))],
                &[format!("service {name} running ({verb}ed)")],
            );
            return Ok(StepPlan::change(id, "service", diff, vec![op]));
        }
    };
    if want == active {
        return Ok(StepPlan::no_change(id, "service", None));
    }
    h.predict_service(&name, want);
    let (verb, inverse) = if want {
        ("start", "stop")
    } else {
        ("stop", "start")
    };
    let op = Op::new(
        format!("{verb} {name}"),
        ctl(h, verb, &name),
        Undo::Cmd(ctl(h, inverse, &name)),
    );
    let diff = state_diff(
        &[format!("service {name} {}", word(active))],
        &[format!("service {name} {}", word(want))],
    );
    Ok(StepPlan::change(id, "service", diff, vec![op]))
}

fn word(active: bool) -> &'static str {
    if active { "running" } else { "stopped" }
}
