//! `sysctl` steps and probes: the runtime value under /proc/sys, and the value that
//! `sysctl --system` (or the next boot) would set from the configuration files.
//!
//! Files are read in procps order: `*.conf` from /etc/sysctl.d, /run/sysctl.d,
//! /usr/local/lib/sysctl.d, /usr/lib/sysctl.d, /lib/sysctl.d (a name in an earlier
//! directory hides the same name in later ones), sorted by name, then /etc/sysctl.conf.
//! The last assignment wins. Only files under /etc are edited; Debian's
//! /etc/sysctl.d/99-sysctl.conf -> ../sysctl.conf symlink is written through.

use std::collections::BTreeMap;

use crate::host::{FileInfo, HResult, Host, failed, unified_diff, write_op, written_path};
use crate::plan::{Op, ReadPart, StepPlan, Undo, state_diff};
use crate::playbook::SysctlSpec;
use crate::quote::Cmd;

pub const SYSCTL_DIRS: &[&str] = &[
    "/etc/sysctl.d",
    "/run/sysctl.d",
    "/usr/local/lib/sysctl.d",
    "/usr/lib/sysctl.d",
    "/lib/sysctl.d",
];

const DEFAULT_FILE: &str = "/etc/sysctl.d/99-sysctl.conf";

/// A key's runtime value (`$1`, its /proc/sys file, read last) and the configuration
/// files: the directories given after `$2` replaced with their `*.conf` files in order,
/// then /etc/sysctl.conf, then `$2` (a file the caller also wants); all in one round
/// trip and one `cat`.
const READ_KEY: &str = crate::host::read_files_script!(
    r#"kfix_tail=$1; x=$2; shift 2; n=$#
for d in "$@"; do
  for f in "$d"/*.conf; do
    [ -f "$f" ] && set -- "$@" "$f"
  done
done
shift "$n"
set -- "$@" /etc/sysctl.conf "$x""#
);

/// A key's file under /proc/sys (`key` normalized: a `/` in it is a dot in a name).
fn proc_path(key: &str) -> String {
    format!("/proc/sys/{}", swap_separators(key))
}

fn swap_separators(k: &str) -> String {
    k.chars()
        .map(|c| match c {
            '.' => '/',
            '/' => '.',
            c => c,
        })
        .collect()
}

/// A key in sysctl(8)'s dotted form, where `.` separates and `/` stands for a dot
/// inside a name (`net.ipv4.conf.eth0/100.rp_filter`, VLAN eth0.100's). As procps does,
/// a key whose first separator is `/` (`net/ipv4/conf/eth0.100/rp_filter`) is written
/// the other way round: its `/` separate and its dots are literal.
fn normalize_key(k: &str) -> String {
    let k = k.trim();
    match k.find(['.', '/']) {
        Some(i) if k[i..].starts_with('/') => swap_separators(k),
        _ => k.to_string(),
    }
}

fn normalize_value(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The read of a key's runtime value alone (exit 3: no such key): what an operation
/// on it fingerprints, before and after.
fn runtime_read(key: &str) -> Cmd {
    Cmd::script(r#"[ -e "$1" ] || exit 3; cat -- "$1""#, [proc_path(key)])
}

/// The runtime value of a key, None when the key does not exist. Read along with the
/// configuration files and the default persist file, exactly as a sysctl step's plan
/// with the default `file:` and a `sysctl_persisted` probe read them, so that one read
/// answers all three (see [`Host::run`]).
pub async fn runtime_value(h: &Host, key: &str) -> HResult<Option<String>> {
    Ok(read_key(h, &normalize_key(key), DEFAULT_FILE)
        .await?
        .runtime)
}

/// A sysctl configuration file in application order.
#[derive(Clone, Debug)]
struct ConfFile {
    path: String,
    info: FileInfo,
}

/// The value assigned to `key` by a file's text (last assignment in the file).
fn assigned(text: &str, key: &str) -> Option<String> {
    let mut v = None;
    for line in text.lines() {
        if let Some((k, val)) = parse_line(line)
            && k == key
        {
            v = Some(val);
        }
    }
    v
}

fn parse_line(line: &str) -> Option<(String, String)> {
    let t = line.trim_start();
    if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
        return None;
    }
    let t = t.strip_prefix('-').unwrap_or(t);
    let (k, v) = t.split_once('=')?;
    Some((normalize_key(k), normalize_value(v)))
}

/// One read of a key: its runtime value, the configuration files in the order
/// `sysctl --system` applies them, and the file `also`.
struct KeyRead {
    /// None: the key does not exist on this host.
    runtime: Option<String>,
    files: Vec<ConfFile>,
    /// None: it does not exist.
    also: Option<FileInfo>,
}

fn read_key_args(key: &str, also: &str) -> Vec<String> {
    let mut args = vec![proc_path(key), also.to_string()];
    args.extend(SYSCTL_DIRS.iter().map(|d| d.to_string()));
    args
}

/// The command [`runtime_value`] and [`persisted_value`] read `key` with (so that it
/// can travel ahead, see [`crate::probe::read_of`]).
pub fn value_read(key: &str) -> Cmd {
    key_read(&normalize_key(key), DEFAULT_FILE)
}

/// The one read of `key` (normalized) and the file `also`.
fn key_read(key: &str, also: &str) -> Cmd {
    Cmd::script(READ_KEY, read_key_args(key, also))
}

/// Read `key`'s runtime value, the configuration files and `also` (the files through
/// the planning overlay) in one round trip.
async fn read_key(h: &Host, key: &str, also: &str) -> HResult<KeyRead> {
    let crate::host::FilesRead {
        mut files, tail, ..
    } = h.read_files(READ_KEY, &read_key_args(key, also)).await?;
    let extra = match files.pop() {
        Some((path, info)) if path == also => info,
        _ => return failed(format!("reading sysctl files: no answer for {also}")),
    };
    let last = files.pop();
    // A name in an earlier directory hides the same name in later ones; then by name.
    let mut by_name: BTreeMap<String, (String, Option<FileInfo>)> = BTreeMap::new();
    for (path, info) in files {
        let name = path.rsplit('/').next().unwrap_or(&path).to_string();
        by_name.entry(name).or_insert((path, info));
    }
    let files = by_name
        .into_values()
        .chain(last)
        .filter_map(|(path, info)| info.map(|info| ConfFile { path, info }))
        .collect();
    Ok(KeyRead {
        runtime: tail.map(|t| normalize_value(&String::from_utf8_lossy(&t))),
        files,
        also: extra,
    })
}

fn effective(files: &[ConfFile], key: &str) -> Option<String> {
    files
        .iter()
        .filter_map(|f| assigned(&String::from_utf8_lossy(&f.info.content), key))
        .next_back()
}

/// The value `sysctl --system` would leave `key` at, from the files on the host (read
/// through the planning overlay, in the same round trip as [`runtime_value`]).
pub async fn persisted_value(h: &Host, key: &str) -> HResult<Option<String>> {
    let key = normalize_key(key);
    Ok(effective(
        &read_key(h, &key, DEFAULT_FILE).await?.files,
        &key,
    ))
}

/// Rewrite every assignment of `key` in `text` to `value`, keeping the line's layout.
fn rewrite(text: &str, key: &str, value: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        match parse_line(line) {
            Some((k, v)) if k == key && v != value => {
                let (body, nl) = line.strip_suffix('\n').map_or((line, ""), |b| (b, "\n"));
                let eq = body.find('=').unwrap_or(body.len());
                let after = &body[eq + 1..];
                let lead_ws: String = after.chars().take_while(|c| c.is_whitespace()).collect();
                out.push_str(&body[..=eq.min(body.len().saturating_sub(1))]);
                out.push_str(&lead_ws);
                out.push_str(value);
                out.push_str(nl);
            }
            _ => out.push_str(line),
        }
    }
    out
}

pub async fn plan(id: &str, s: &SysctlSpec, h: &Host) -> HResult<StepPlan> {
    let key = normalize_key(&h.render(&s.key)?);
    let value = normalize_value(&h.render(&s.value)?);
    let mut ops = Vec::new();
    let mut diff = String::new();
    let target = match s.persist {
        true => Some(
            h.render_opt(&s.file)?
                .unwrap_or_else(|| DEFAULT_FILE.to_string()),
        ),
        false => None,
    };
    // The runtime value and the files: one read, which also holds what each operation's
    // fingerprint reads (the re-check and verification make it again: see Op::fingerprint_in).
    let also = target.as_deref().unwrap_or(DEFAULT_FILE);
    let read = read_key(h, &key, also).await?;
    let read_cmd = key_read(&key, also);
    let Some(current) = read.runtime else {
        return failed(format!(
            "sysctl {key} does not exist on this host ({} is missing)",
            proc_path(&key)
        ));
    };
    if current != value {
        let write = r#"printf '%s\n' "$2" > "$1""#;
        ops.push(
            Op::new(
                format!("set {key} = {value} (runtime)"),
                Cmd::script(write, [proc_path(&key), value.clone()]),
                Undo::Cmd(Cmd::script(write, [proc_path(&key), current.clone()])),
            )
            .fingerprint(runtime_read(&key))
            .fingerprint_in(read_cmd.clone(), ReadPart::Tail),
        );
        diff.push_str(&state_diff(
            &[format!("{key} = {current}  (runtime)")],
            &[format!("{key} = {value}  (runtime)")],
        ));
    }
    if let Some(target) = target {
        let (mut files, existing) = (read.files, read.also);
        let mut changed: BTreeMap<String, (String, Option<FileInfo>, String)> = BTreeMap::new();
        for f in files.iter_mut() {
            let text = String::from_utf8_lossy(&f.info.content).into_owned();
            let is_etc = f.info.real_path.starts_with("/etc/");
            if is_etc
                && assigned(&text, &key).is_some_and(|v| v != value)
                && !changed.contains_key(&f.info.real_path)
            {
                let new = rewrite(&text, &key, &value);
                changed.insert(
                    f.info.real_path.clone(),
                    (f.path.clone(), Some(f.info.clone()), new.clone()),
                );
            }
        }
        // Apply the rewrites to every view of the same real file (symlinks).
        for f in files.iter_mut() {
            if let Some((_, _, new)) = changed.get(&f.info.real_path) {
                f.info.content = new.clone().into_bytes();
            }
        }
        if effective(&files, &key).as_deref() != Some(value.as_str()) {
            let real = existing
                .as_ref()
                .map_or(target.clone(), |i| i.real_path.clone());
            let base = match changed.get(&real) {
                Some((_, _, t)) => t.clone(),
                None => existing
                    .as_ref()
                    .map(|i| String::from_utf8_lossy(&i.content).into_owned())
                    .unwrap_or_default(),
            };
            let mut new = base;
            if !new.is_empty() && !new.ends_with('\n') {
                new.push('\n');
            }
            new.push_str(&format!("{key} = {value}\n"));
            let before = changed.get(&real).and_then(|c| c.1.clone()).or(existing);
            changed.insert(real.clone(), (target.clone(), before, new.clone()));
            match files.iter_mut().find(|f| f.info.real_path == real) {
                Some(f) => f.info.content = new.into_bytes(),
                None => files.push(ConfFile {
                    path: target.clone(),
                    info: FileInfo {
                        content: new.into_bytes(),
                        mode: "644".into(),
                        uid: "0".into(),
                        gid: "0".into(),
                        real_path: real,
                    },
                }),
            }
            // A file named after the target may still come later in the order.
            files.sort_by_key(|f| order_key(&f.path));
        }
        if let Some(eff) = effective(&files, &key).filter(|e| *e != value) {
            return failed(format!(
                "cannot persist {key} = {value}: a file outside /etc sets it to {eff} later; choose a `file:` that sorts after it"
            ));
        }
        for (real, (path, before, new)) in &changed {
            let old = before
                .as_ref()
                .map(|b| String::from_utf8_lossy(&b.content).into_owned())
                .unwrap_or_default();
            diff.push_str(&unified_diff(real, &old, new));
            ops.push(
                write_op(path, before.as_ref(), new.as_bytes(), None).fingerprint_in(
                    read_cmd.clone(),
                    ReadPart::Stamp(written_path(path, before.as_ref())),
                ),
            );
            h.predict_file(real, Some(new.clone().into_bytes()), None);
        }
    }
    if ops.is_empty() {
        return Ok(StepPlan::no_change(id, "sysctl", None));
    }
    Ok(StepPlan::change(id, "sysctl", diff, ops))
}

/// Sort key reproducing the application order: sysctl.d files by name, then sysctl.conf.
fn order_key(path: &str) -> (u8, String) {
    if path == "/etc/sysctl.conf" {
        (1, String::new())
    } else {
        (0, path.rsplit('/').next().unwrap_or(path).to_string())
    }
}

impl super::Plan for SysctlSpec {
    async fn plan(&self, step: &crate::playbook::Step, h: &Host) -> HResult<StepPlan> {
        plan(&step.id, self, h).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run `cmd` here, in a time zone other than UTC.
    fn run_here(cmd: &Cmd) -> crate::transport::Output {
        let out = std::process::Command::new(&cmd.argv[0])
            .args(&cmd.argv[1..])
            .env("TZ", "Asia/Shanghai")
            .output()
            .expect("run");
        crate::transport::Output {
            code: out.status.code(),
            stdout: out.stdout,
            stderr: out.stderr,
        }
    }

    #[test]
    fn an_operations_probe_answered_from_the_keys_read_is_what_the_probe_prints() {
        use std::os::unix::fs::symlink;
        let d = std::env::temp_dir().join(format!("kfix-parts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let conf = d.join("sysctl.d");
        std::fs::create_dir_all(&conf).expect("dirs");
        std::fs::write(conf.join("10-a.conf"), "a = 1\n").expect("a");
        std::fs::write(d.join("real.conf"), "b = 2\n").expect("real");
        symlink("../real.conf", conf.join("99-l.conf")).expect("link");
        let p = |x: &std::path::Path| x.display().to_string();
        let key = "kernel.ostype";
        let read_of = |also: &str| {
            Cmd::script(
                READ_KEY,
                [
                    proc_path(key),
                    also.to_string(),
                    p(&conf),
                    p(&d.join("none")),
                ],
            )
        };
        let read = read_of(&p(&conf.join("99-l.conf")));
        let out = run_here(&read);
        assert!(out.success(), "{out:?}");
        let same = |part: ReadPart, probe: Cmd| {
            let direct = run_here(&probe);
            assert!(direct.success() || direct.code == Some(3), "{direct:?}");
            assert_eq!(
                crate::host::part_of_read(&part, &out),
                Some(direct),
                "{part:?}"
            );
        };
        same(ReadPart::Tail, runtime_read(key));
        for f in [conf.join("10-a.conf"), d.join("real.conf")] {
            same(ReadPart::Stamp(p(&f)), crate::host::file_probe(&p(&f)));
        }
        // Through the link the stamp is the real file's; the link's own path is not a
        // file the read resolved to.
        assert_eq!(
            crate::host::part_of_read(&ReadPart::Stamp(p(&conf.join("99-l.conf"))), &out),
            None
        );
        assert_eq!(
            crate::host::part_of_read(&ReadPart::Stamp(p(&d.join("x"))), &out),
            None
        );
        // A file to create: absent in the read as for the probe.
        let new = p(&conf.join("50-new.conf"));
        let out = run_here(&read_of(&new));
        assert_eq!(
            crate::host::part_of_read(&ReadPart::Stamp(new.clone()), &out),
            Some(run_here(&crate::host::file_probe(&new)))
        );
        // A key that does not exist: the runtime read's exit 3.
        let none = run_here(&Cmd::script(
            READ_KEY,
            [proc_path("kernel.kfix_none"), new, p(&conf)],
        ));
        assert_eq!(
            crate::host::part_of_read(&ReadPart::Tail, &none),
            Some(run_here(&runtime_read("kernel.kfix_none")))
        );
        // A failed read holds nothing.
        let failed = crate::transport::Output {
            code: Some(1),
            ..out
        };
        assert_eq!(crate::host::part_of_read(&ReadPart::Tail, &failed), None);
        std::fs::remove_dir_all(&d).expect("cleanup");
    }

    #[test]
    fn rewrite_keeps_layout_and_comments() {
        let t = "# forwarding\nnet.ipv4.ip_forward=0\n  net/ipv4/ip_forward = 0 \nother = 1\n";
        assert_eq!(
            rewrite(t, "net.ipv4.ip_forward", "1"),
            "# forwarding\nnet.ipv4.ip_forward=1\n  net/ipv4/ip_forward = 1\nother = 1\n"
        );
    }

    #[test]
    fn keys_follow_procps_separators_dots_in_names_included() {
        let vlan = "net.ipv4.conf.eth0/100.rp_filter";
        assert_eq!(normalize_key(vlan), vlan);
        assert_eq!(normalize_key(" net/ipv4/conf/eth0.100/rp_filter "), vlan);
        assert_eq!(
            proc_path(vlan),
            "/proc/sys/net/ipv4/conf/eth0.100/rp_filter"
        );
        assert_eq!(
            proc_path(&normalize_key("net/ipv4/ip_forward")),
            "/proc/sys/net/ipv4/ip_forward"
        );
        // A file may write the key either way; both are the same key.
        let text = "net/ipv4/conf/eth0.100/rp_filter = 2\nnet.ipv4.conf.eth0.rp_filter = 1\n";
        assert_eq!(assigned(text, vlan).as_deref(), Some("2"));
        assert_eq!(
            assigned(text, "net.ipv4.conf.eth0.rp_filter").as_deref(),
            Some("1")
        );
        assert_eq!(
            rewrite(text, vlan, "0"),
            "net/ipv4/conf/eth0.100/rp_filter = 0\nnet.ipv4.conf.eth0.rp_filter = 1\n"
        );
    }

    #[test]
    fn effective_is_last_assignment() {
        let f = |p: &str, c: &str| ConfFile {
            path: p.into(),
            info: FileInfo {
                content: c.as_bytes().to_vec(),
                mode: "644".into(),
                uid: "0".into(),
                gid: "0".into(),
                real_path: p.into(),
            },
        };
        let files = vec![
            f("/usr/lib/sysctl.d/50-a.conf", "net.ipv4.ip_forward = 1\n"),
            f("/etc/sysctl.conf", "-net.ipv4.ip_forward=0\n"),
        ];
        assert_eq!(
            effective(&files, "net.ipv4.ip_forward").as_deref(),
            Some("0")
        );
        assert_eq!(effective(&files, "net.ipv4.other"), None);
    }
}
