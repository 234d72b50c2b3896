//! Files and directories kfix writes on the controller: created once (O_EXCL, or a
//! `mkdir` that fails on an existing name) under a random name, private (0700/0600)
//! where they hold state, and trusted only when nobody but this user or root could
//! have written them.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// 16 hex characters from the kernel's random source.
pub fn random_name() -> std::io::Result<String> {
    let mut b = [0u8; 8];
    File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// This process's effective user id.
pub fn euid() -> u32 {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Make `dir` (and missing parents) a private directory: created 0700; an existing
/// one of this user with group or other permissions is narrowed to 0700; one that
/// somebody else owns, or can write to, is refused.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Err(std::io::Error::other(format!(
            "{} is not a directory (a symlink?)",
            dir.display()
        )));
    }
    if meta.uid() != euid() {
        return Err(std::io::Error::other(format!(
            "{} belongs to uid {}, not to this user (uid {}): kfix keeps its state only in a directory of its own",
            dir.display(),
            meta.uid(),
            euid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Refuse a file (and its directory) that anyone but this user or root owns or can
/// write to: its contents could be someone else's (a journal's undo commands, which
/// `kfix rollback` runs as root on every host).
pub fn written_only_by_us(path: &Path) -> std::io::Result<()> {
    let me = euid();
    let check = |p: &Path, what: &str| -> std::io::Result<()> {
        let m = std::fs::symlink_metadata(p)?;
        let owner_ok = m.uid() == me || m.uid() == 0;
        let writable = m.mode() & 0o022 != 0;
        if !owner_ok || writable || m.file_type().is_symlink() {
            return Err(std::io::Error::other(format!(
                "{what} {} could have been written by someone else (owner uid {}, mode {:o}{}); kfix trusts only its own files",
                p.display(),
                m.uid(),
                m.mode() & 0o7777,
                if m.file_type().is_symlink() {
                    ", a symlink"
                } else {
                    ""
                }
            )));
        }
        Ok(())
    };
    check(path, "file")?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        check(dir, "directory")?;
    }
    Ok(())
}

/// Create a new file with `mode`, failing if the name exists (never through a symlink).
pub fn create_new(path: &Path, mode: u32) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
}

/// Replace a file atomically: a temp file `.NAME.RANDOM.tmp` beside it, created once
/// (O_EXCL) with `mode`, written and fsynced through that descriptor, renamed over the
/// target, then the directory fsynced. A reader (node_exporter, the next `kfix serve`)
/// sees the old or the new file, never part of one; a planted name is never followed;
/// on failure the temp file is removed and the old file is untouched.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("not a file path"))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        random_name()?
    ));
    let mut f = create_new(&tmp, mode)?;
    // The mode asked for, whatever the umask took away.
    let res = f
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .and_then(|()| f.write_all(data))
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path))
        .and_then(|()| File::open(dir)?.sync_all());
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// Where a run's SSH control sockets live: `$TMPDIR/kfix-RUNID-RANDOM`, a name nobody
/// can have prepared (created by [`create_private_dir`], which fails on an existing one).
pub fn control_dir(run_id: &str) -> std::path::PathBuf {
    // Without the kernel's random source the pid still makes the name ours alone;
    // the exclusive mkdir is what keeps a prepared directory out.
    let suffix = random_name().unwrap_or_else(|_| std::process::id().to_string());
    std::env::temp_dir().join(format!("kfix-{run_id}-{suffix}"))
}

/// A run's control-socket directory: made by one mkdir that fails if the name exists
/// (in a world-writable $TMPDIR nobody can have prepared it), mode 0700, with our pid
/// in it (so a later kfix can tell it from a killed run's; see
/// [`remove_dead_control_dirs`]).
pub fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().mode(0o700).create(dir)?;
    create_new(&dir.join("pid"), 0o600)?.write_all(std::process::id().to_string().as_bytes())
}

/// `$TMPDIR/kfix-*` directories whose `pid` names no live process are leftovers of a
/// killed run: their SSH masters have exited on their own (idle), the sockets remain.
pub fn remove_dead_control_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        // Named after a run id: `kfix-` and a date.
        let is_ours = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("kfix-"))
            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()));
        let Some(pid) = is_ours
            .then(|| std::fs::read_to_string(path.join("pid")).ok())
            .flatten()
        else {
            continue;
        };
        let dead = pid
            .trim()
            .parse::<u32>()
            .is_ok_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists());
        if dead {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// Read a private file (a token, the approvers): refuse one that others can read.
pub fn read_private(path: &std::path::Path, what: &str) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "the {what} {} is readable by other users\n  = hint: chmod 600 {}",
            path.display(),
            path.display()
        ));
    }
    std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("kfix-localfs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir(&d).expect("dir");
        d
    }

    #[test]
    fn an_atomic_write_never_follows_a_planted_name_and_sets_its_mode() {
        let d = scratch("write");
        let (f, victim) = (d.join("kfix.prom"), d.join("victim"));
        std::fs::write(&victim, "keep\n").expect("victim");
        // Every name the old scheme used, planted as a symlink to the victim.
        std::os::unix::fs::symlink(&victim, d.join(".kfix.prom.tmp")).expect("plant");
        write_atomic(&f, b"new\n", 0o644).expect("write");
        assert_eq!(std::fs::read(&f).expect("read"), b"new\n");
        assert_eq!(std::fs::read(&victim).expect("read"), b"keep\n");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").mode() & 0o777;
        assert_eq!(mode(&f), 0o644);
        write_atomic(&f, b"private\n", 0o600).expect("write");
        assert_eq!(mode(&f), 0o600);
        // Only the file, the victim and the planted link remain: no temp file.
        assert_eq!(std::fs::read_dir(&d).expect("ls").count(), 3);
        assert!(write_atomic(&d.join("missing/x"), b"y", 0o600).is_err());
        std::fs::remove_dir_all(&d).expect("cleanup");
    }

    #[test]
    fn state_is_private_and_only_our_own_files_are_trusted() {
        let d = scratch("state");
        let state = d.join("state/runs");
        private_dir(&state).expect("create");
        assert_eq!(
            std::fs::metadata(&state).expect("meta").mode() & 0o777,
            0o700
        );
        // An existing directory that others could read is narrowed.
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        private_dir(&state).expect("narrow");
        assert_eq!(
            std::fs::metadata(&state).expect("meta").mode() & 0o777,
            0o700
        );
        let j = state.join("r.jsonl");
        create_new(&j, 0o600).expect("create");
        assert!(create_new(&j, 0o600).is_err(), "O_EXCL");
        written_only_by_us(&j).expect("ours");
        for (path, mode) in [(&j, 0o622), (&state, 0o777)] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            let e = written_only_by_us(&j).expect_err("writable by others");
            assert!(
                e.to_string()
                    .contains("could have been written by someone else"),
                "{e}"
            );
            let back = if path == &j { 0o600 } else { 0o700 };
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(back)).expect("chmod");
        }
        // Somebody else's file (when this runs as root, it can make one).
        if euid() == 0 {
            std::os::unix::fs::chown(&j, Some(65534), None).expect("chown");
            assert!(written_only_by_us(&j).is_err());
            std::os::unix::fs::chown(&state, Some(65534), None).expect("chown");
            assert!(
                private_dir(&state).is_err(),
                "someone else's state directory"
            );
        }
        std::fs::remove_dir_all(&d).expect("cleanup");
    }
}
