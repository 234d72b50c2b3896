//! `package` steps on rpm hosts: dnf (Fedora, EL 8+) or yum (CentOS 7). The plan is
//! the transaction the tool itself prints when asked to install and told no
//! (`--assumeno`); the install pins the planned version; the undo is `rpm -e` of exactly
//! the packages the transaction adds (rpm refuses when something installed since
//! depends on one of them). Planning changes nothing on the host but what any dnf or
//! yum query may: the tool's metadata cache (/var/cache/dnf, /var/cache/yum) is
//! refreshed when it has expired.

use super::install::{Manager, Simulation, install_plan};
use crate::host::{HResult, Host, failed};
use crate::plan::StepPlan;
use crate::quote::Cmd;

/// Parse the transaction table dnf and yum print before asking for confirmation:
/// section headers (`Installing:`, `Installing dependencies:` (dnf), `Installing for
/// dependencies:` (yum), `Upgrading:`, `Updating for dependencies:`, `Removing:`, ...),
/// then rows ` name arch version repository size`; a name too long for its column
/// is alone on its line and the row goes on on the next one; yum's ` replacing …`
/// lines under a row are not packages.
pub fn parse_transaction(out: &str) -> Simulation {
    #[derive(Clone, Copy)]
    enum Section {
        New,
        Changed,
        Removed,
        Other,
    }
    let mut t = Simulation::default();
    let mut section = None;
    let mut pending: Option<String> = None;
    for line in out.lines() {
        if line.trim().is_empty() || !line.starts_with(' ') {
            pending = None;
            section = None;
            let head = line.trim();
            if let Some(h) = head.strip_suffix(':') {
                let h = h.to_ascii_lowercase();
                section = Some(if h.starts_with("installing") {
                    Section::New
                } else if ["upgrading", "updating", "downgrading", "reinstalling"]
                    .iter()
                    .any(|w| h.starts_with(w))
                {
                    Section::Changed
                } else if h.starts_with("removing") || h.starts_with("erasing") {
                    Section::Removed
                } else {
                    Section::Other
                });
            }
            continue;
        }
        let Some(sec) = section else { continue };
        let mut words: Vec<&str> = line.split_whitespace().collect();
        let joined;
        if let Some(name) = pending.take() {
            joined = std::iter::once(name.as_str())
                .chain(words.iter().copied())
                .collect::<Vec<_>>()
                .join(" ");
            words = joined.split_whitespace().collect();
        }
        if words.first() == Some(&"replacing") {
            continue;
        }
        if words.len() == 1 {
            pending = Some(words[0].to_string());
            continue;
        }
        let (Some(name), Some(version)) = (words.first(), words.get(2)) else {
            continue;
        };
        match sec {
            Section::New => t.new.push((name.to_string(), version.to_string())),
            Section::Changed => t.changed.push(name.to_string()),
            Section::Removed => t.removed.push(name.to_string()),
            Section::Other => {}
        }
    }
    t
}

/// `TOOL ARGS... LAST` in the C locale (its output is parsed); dnf without weak
/// dependencies (as apt's --no-install-recommends).
fn tool(m: Manager, args: &[&str], last: String) -> Cmd {
    let mut argv: Vec<String> = ["env", "LC_ALL=C", m.tool()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if m == Manager::Dnf {
        argv.push("--setopt=install_weak_deps=False".into());
    }
    argv.extend(args.iter().map(|s| s.to_string()));
    argv.push(last);
    Cmd::new(argv)
}

/// The read-only fingerprint of these packages' rpm state.
fn fingerprint(names: &[String]) -> Cmd {
    Cmd::script(r#"rpm -q "$@" 2>&1; true"#, names.iter().cloned())
}

pub async fn plan(id: &str, name: &str, m: Manager, h: &Host) -> HResult<StepPlan> {
    let q = h
        .run(&Cmd::new([
            "rpm",
            "-q",
            "--qf",
            "%{VERSION}-%{RELEASE}\\n",
            name,
        ]))
        .await?;
    if q.success() {
        return Ok(StepPlan::no_change(
            id,
            "package",
            Some(format!("{name} {} is installed", q.stdout().trim())),
        ));
    }
    // Told no, the tool prints its transaction and exits 1.
    let out = h
        .run(&tool(m, &["install", "--assumeno"], name.to_string()))
        .await?;
    let t = parse_transaction(&out.stdout());
    let Some(version) = t
        .new
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
    else {
        let err = out.stderr();
        let why = err
            .lines()
            .filter(|l| l.starts_with("Error") || l.starts_with("No package"))
            .collect::<Vec<_>>()
            .join("; ");
        return failed(format!(
            "{} cannot install {name}: {}; hint: the host's repositories must offer the \
             package (check /etc/yum.repos.d and the mirror)",
            m.tool(),
            if why.is_empty() {
                format!("{} {}", out.stdout().trim(), err.trim())
            } else {
                why
            }
        ));
    };
    t.refuse_changes(name)?;
    let names: Vec<String> = t.new.iter().map(|(n, _)| n.clone()).collect();
    let install = tool(m, &["install", "-y"], format!("{name}-{version}"));
    // rpm removes exactly these packages, and refuses when something installed since
    // depends on one of them.
    Ok(install_plan(
        id,
        name,
        &version,
        &t.new,
        install,
        &["rpm", "-e"],
        fingerprint(&names),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// dnf 4's table, with a wrapped long name and weak dependencies.
    #[test]
    fn dnf_transaction() {
        let out = "Dependencies resolved.\n\
================================================================================\n \
Package                          Arch     Version              Repository  Size\n\
================================================================================\n\
Installing:\n \
iscsi-initiator-utils            noarch   6.2.0.874-22.el7_9   kfix       6.8 k\n\
Upgrading:\n \
libc                             x86_64   2.28-200.el8         baseos     2.2 M\n\
Installing dependencies:\n \
iscsi-initiator-utils-iscsiuio-with-a-very-long-name\n \
                                 noarch   1:6.2.0.874-22.el7_9 kfix       6.2 k\n\
Installing weak dependencies:\n \
isns-utils-libs                  x86_64   0.99-1.el8           baseos     105 k\n\
\n\
Transaction Summary\n\
================================================================================\n\
Install  3 Packages\n\
Upgrade  1 Package\n\
\n\
Total size: 13 k\n\
Operation aborted.\n";
        let t = parse_transaction(out);
        assert_eq!(
            t.new,
            vec![
                (
                    "iscsi-initiator-utils".to_string(),
                    "6.2.0.874-22.el7_9".to_string()
                ),
                (
                    "iscsi-initiator-utils-iscsiuio-with-a-very-long-name".to_string(),
                    "1:6.2.0.874-22.el7_9".to_string()
                ),
                ("isns-utils-libs".to_string(), "0.99-1.el8".to_string()),
            ]
        );
        assert_eq!(t.changed, vec!["libc"]);
        assert!(t.removed.is_empty());
    }

    /// yum's (CentOS 7) sections and its `replacing` lines.
    #[test]
    fn yum_transaction() {
        let out = "Dependencies Resolved\n\n\
================================================================================\n \
Package                          Arch     Version               Repository\n                                                                           Size\n\
================================================================================\n\
Installing:\n \
iscsi-initiator-utils            x86_64   6.2.0.874-22.el7_9    updates  428 k\n\
Installing for dependencies:\n \
iscsi-initiator-utils-iscsiuio   x86_64   6.2.0.874-22.el7_9    updates   96 k\n\
Updating for dependencies:\n \
openssl-libs                     x86_64   1:1.0.2k-26.el7_9     updates  1.2 M\n \
    replacing  openssl098e.x86_64 0.9.8e-29.el7.centos.3\n\
Removing for dependencies:\n \
oldpkg                           x86_64   1.0-1.el7             @base     10 k\n\
\n\
Transaction Summary\n\
================================================================================\n\
Install  1 Package (+1 Dependent package)\n\
Exiting on user command\n";
        let t = parse_transaction(out);
        assert_eq!(
            t.new.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["iscsi-initiator-utils", "iscsi-initiator-utils-iscsiuio"]
        );
        assert_eq!(t.changed, vec!["openssl-libs"]);
        assert_eq!(t.removed, vec!["oldpkg"]);
    }

    #[test]
    fn nothing_to_do_is_empty() {
        assert_eq!(
            parse_transaction(
                "Last metadata expiration check: 0:00:01 ago.\nDependencies resolved.\nNothing to do.\nComplete!\n"
            ),
            Simulation::default()
        );
    }
}
