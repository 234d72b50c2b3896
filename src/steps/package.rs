//! `package` steps: a package installed through the host's own package manager (apt
//! here; dnf and yum in [`super::rpm`]), with exactly the dependencies its simulation
//! predicts, undone by removing exactly those packages.
//!
//! Planning is read-only: `dpkg-query` tells whether the package is installed and
//! `apt-get install --simulate` which packages an install would add. The operation pins the
//! simulated version, so the re-check before apply (which simulates again) refuses when
//! the apt lists changed in between. An install that would upgrade or remove packages
//! already on the host is refused: kfix could not undo it exactly.

use super::install::{Manager, Simulation, install_plan};
use crate::host::{HResult, Host, failed};
use crate::plan::StepPlan;
use crate::playbook::PackageSpec;
use crate::quote::Cmd;

/// Parse apt's simulation (`Inst name [old] (new ...)`, `Remv name [old]`) lines.
fn parse_simulation(out: &str) -> Simulation {
    let mut sim = Simulation::default();
    for line in out.lines() {
        let mut words = line.split_whitespace();
        let (Some(action), Some(name)) = (words.next(), words.next()) else {
            continue;
        };
        let rest: Vec<&str> = words.collect();
        match action {
            "Inst" if rest.first().is_some_and(|w| w.starts_with('[')) => {
                sim.changed.push(name.to_string());
            }
            "Inst" => {
                let version = rest
                    .first()
                    .map(|w| w.trim_start_matches('(').to_string())
                    .unwrap_or_default();
                sim.new.push((name.to_string(), version));
            }
            "Remv" => sim.removed.push(name.to_string()),
            _ => {}
        }
    }
    sim
}

/// `name` → the `name` apt and dpkg accept everywhere (drops a native `:arch`).
fn bare(name: &str) -> &str {
    name.split(':').next().unwrap_or(name)
}

/// dpkg's apt where there is dpkg (a Debian host with dnf installed is still Debian's),
/// else rpm's dnf, else yum (CentOS 7).
async fn manager(h: &Host) -> HResult<Manager> {
    let out = h
        .run(&Cmd::script(
            r#"for t in dpkg-query dnf yum; do command -v "$t" >/dev/null 2>&1 && { echo "$t"; exit 0; }; done
echo none"#,
            Vec::<String>::new(),
        ))
        .await?;
    match out.stdout().trim() {
        "dpkg-query" => Ok(Manager::Apt),
        "dnf" => Ok(Manager::Dnf),
        "yum" => Ok(Manager::Yum),
        _ => failed(format!(
            "package steps use apt, dnf or yum, and this host has none of them (os: {} {}); \
             hint: install the package with the host's own package manager",
            h.facts.os_id, h.facts.os_version
        )),
    }
}

/// The package's dpkg state: `Some(version)` when installed.
async fn installed(h: &Host, name: &str) -> HResult<Option<String>> {
    let out = h
        .run(&Cmd::script(
            r#"dpkg-query -W -f='${db:Status-Abbrev}|${Version}\n' "$1" 2>/dev/null || true"#,
            [name],
        ))
        .await?;
    let text = out.stdout();
    let Some((status, version)) = text.lines().next().and_then(|l| l.split_once('|')) else {
        return Ok(None);
    };
    // `ii `: wanted install, installed, no error flag.
    Ok((status.get(1..2) == Some("i")).then(|| version.trim().to_string()))
}

/// The read-only fingerprint of these packages' dpkg state.
fn fingerprint(names: &[String]) -> Cmd {
    Cmd::script(
        r#"dpkg-query -W -f='${binary:Package} ${db:Status-Abbrev}${Version}\n' "$@" 2>/dev/null; true"#,
        names.iter().cloned(),
    )
}

/// `apt-get ARGS... LAST`, non-interactive, in the C locale (its output is parsed).
fn apt_get(args: &[&str], last: String) -> Cmd {
    let env = [
        "env",
        "DEBIAN_FRONTEND=noninteractive",
        "LC_ALL=C",
        "apt-get",
    ];
    let mut argv: Vec<String> = env.iter().chain(args).map(|s| s.to_string()).collect();
    argv.push(last);
    Cmd::new(argv)
}

pub async fn plan(id: &str, s: &PackageSpec, h: &Host) -> HResult<StepPlan> {
    let name = h.render(&s.name)?;
    if name.is_empty() || name.starts_with('-') || name.contains(char::is_whitespace) {
        return failed(format!("`{name}` is not a package name"));
    }
    match manager(h).await? {
        Manager::Apt => plan_apt(id, name, h).await,
        m => super::rpm::plan(id, &name, m, h).await,
    }
}

async fn plan_apt(id: &str, name: String, h: &Host) -> HResult<StepPlan> {
    if let Some(v) = installed(h, &name).await? {
        return Ok(StepPlan::no_change(
            id,
            "package",
            Some(format!("{name} {v} is installed")),
        ));
    }
    let simulate = apt_get(
        &["install", "--simulate", "--yes", "--no-install-recommends"],
        name.clone(),
    );
    let out = h.run(&simulate).await?;
    if !out.success() {
        let err = out.stderr();
        let why = err
            .lines()
            .filter(|l| l.starts_with("E:"))
            .collect::<Vec<_>>()
            .join("; ");
        return failed(format!(
            "apt cannot install {name}: {}; hint: the host's apt lists must know the \
             package (run `apt-get update` on the host, or check its sources and mirror)",
            if why.is_empty() { err.trim() } else { &why }
        ));
    }
    let sim = parse_simulation(&out.stdout());
    sim.refuse_changes(&name)?;
    let Some(version) = sim
        .new
        .iter()
        .find(|(n, _)| bare(n) == name)
        .map(|(_, v)| v.clone())
    else {
        return failed(format!(
            "apt's simulation of installing {name} does not install it (output: {})",
            out.stdout().trim()
        ));
    };
    let new: Vec<(String, String)> = sim
        .new
        .iter()
        .map(|(n, v)| (bare(n).to_string(), v.clone()))
        .collect();
    let names: Vec<String> = new.iter().map(|(n, _)| n.clone()).collect();
    let install = apt_get(
        &[
            "install",
            "--yes",
            "--no-install-recommends",
            "-o",
            "DPkg::Lock::Timeout=60",
            "-o",
            "Dpkg::Options::=--force-confold",
        ],
        format!("{name}={version}"),
    );
    // dpkg (not apt) purges: it removes exactly these packages, and refuses when
    // something installed since depends on one of them.
    Ok(install_plan(
        id,
        &name,
        &version,
        &new,
        install,
        &["dpkg", "--purge"],
        fingerprint(&names),
    ))
}

impl super::Plan for PackageSpec {
    async fn plan(&self, step: &crate::playbook::Step, h: &Host) -> HResult<StepPlan> {
        plan(&step.id, self, h).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulation_lines() {
        let out = "Reading package lists...\n\
            The following NEW packages will be installed:\n  libisns0 open-iscsi\n\
            Inst libisns0:amd64 (0.101-0.2+b1 Debian:12.15/oldstable [amd64])\n\
            Inst libc6 [2.36-9] (2.36-9+deb12u4 Debian:12.15/oldstable [amd64])\n\
            Inst open-iscsi (2.1.8-1 Debian:12.15/oldstable [amd64])\n\
            Remv oldthing [1.0]\n\
            Conf open-iscsi (2.1.8-1 Debian:12.15/oldstable [amd64])\n";
        let sim = parse_simulation(out);
        assert_eq!(
            sim.new,
            vec![
                ("libisns0:amd64".to_string(), "0.101-0.2+b1".to_string()),
                ("open-iscsi".to_string(), "2.1.8-1".to_string())
            ]
        );
        assert_eq!(sim.changed, vec!["libc6"]);
        assert_eq!(sim.removed, vec!["oldthing"]);
        assert_eq!(bare("libisns0:amd64"), "libisns0");
    }

    #[test]
    fn nothing_to_do_parses_empty() {
        let out = "sudo is already the newest version (1.9.13p3-1+deb12u4).\n\
            0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.\n";
        assert_eq!(parse_simulation(out), Simulation::default());
    }
}
