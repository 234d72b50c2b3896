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

/// systemd refuses a start once a unit was started StartLimitBurst times within
/// StartLimitIntervalSec (docker.service: 3 in 60 s), which a stop/start step, a verify
/// failure's rollback and a retry reach together; the rollback's start would then fail
/// and leave the service down. The limit is there against crash loops, not deliberate
/// starts: `reset-failed` (which also resets the start counter) comes first. Its
/// failure (e.g. a unit systemd has not loaded) is left to `systemctl start` to report.
const SYSTEMCTL_START: &str = r#"systemctl reset-failed -- "$2" 2>/dev/null
exec systemctl "$1" -- "$2""#;

fn ctl(h: &Host, verb: &str, name: &str) -> Cmd {
    ctl_cmd(h.facts.systemd, verb, name)
}

/// The command that runs `verb` (start, stop, restart) on service `name`.
fn ctl_cmd(systemd: bool, verb: &str, name: &str) -> Cmd {
    match (systemd, verb) {
        (true, "start" | "restart") => Cmd::script(SYSTEMCTL_START, [verb, name]),
        (true, _) => Cmd::new(["systemctl", verb, name]),
        (false, _) => Cmd::new(["service", name, verb]),
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
        op.fingerprint = Some(probe.clone());
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
            // Undone by restarting it again once the rest of the rollback has put
            // its configuration back (a restart took the new one).
            let undo = if active {
                Undo::Last(ctl(h, "restart", &name))
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

impl super::Plan for ServiceSpec {
    async fn plan(&self, step: &crate::playbook::Step, h: &Host) -> HResult<StepPlan> {
        plan(&step.id, self, h).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysv_and_systemd_stop_are_one_plain_command() {
        assert_eq!(
            ctl_cmd(false, "start", "docker").to_shell(),
            "service docker start"
        );
        assert_eq!(
            ctl_cmd(false, "restart", "docker").to_shell(),
            "service docker restart"
        );
        assert_eq!(
            ctl_cmd(true, "stop", "docker").to_shell(),
            "systemctl stop docker"
        );
    }

    /// Runs a systemd start/restart command against a fake `systemctl` that logs its
    /// arguments and fails `reset-failed` (as for a unit systemd has not loaded) and a
    /// start of `broken`.
    fn run_with_fake_systemctl(cmd: &Cmd) -> (i32, String) {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("kfix-service-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let log = dir.join("log");
        std::fs::write(
            dir.join("systemctl"),
            format!(
                "#!/bin/sh\necho \"$*\" >> {log}\ncase \"$1 $3\" in 'reset-failed '*) exit 1 ;; *' broken') exit 1 ;; esac\n",
                log = log.display()
            ),
        )
        .expect("fake systemctl");
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "chmod 755 {0}/systemctl && PATH={0}:$PATH && {1}",
                dir.display(),
                cmd.to_shell()
            ))
            .status()
            .expect("sh");
        let calls = std::fs::read_to_string(&log).unwrap_or_default();
        std::fs::remove_dir_all(&dir).expect("remove temp dir");
        (status.code().unwrap_or(-1), calls)
    }

    #[test]
    fn systemd_start_resets_the_start_limit_first() {
        let (code, calls) = run_with_fake_systemctl(&ctl_cmd(true, "start", "docker"));
        assert_eq!(code, 0);
        assert_eq!(calls, "reset-failed -- docker\nstart -- docker\n");
        let (_, calls) = run_with_fake_systemctl(&ctl_cmd(true, "restart", "docker"));
        assert_eq!(calls, "reset-failed -- docker\nrestart -- docker\n");
    }

    #[test]
    fn a_failing_systemd_start_fails_the_command() {
        let (code, calls) = run_with_fake_systemctl(&ctl_cmd(true, "start", "broken"));
        assert_eq!(code, 1);
        assert_eq!(calls, "reset-failed -- broken\nstart -- broken\n");
    }
}
