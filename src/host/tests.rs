use super::*;

const READ_GIVEN: &str = read_files_script!("");
/// The first argument is the tail.
const READ_WITH_TAIL: &str = read_files_script!("kfix_tail=$1; shift");

fn read_with(script: &str, args: &[&str]) -> FilesRead {
    let out = std::process::Command::new("sh")
        .args(["-c", script, "kfix"])
        .args(args)
        .output()
        .expect("sh runs");
    assert!(out.status.success());
    parse_files(&out.stdout)
        .expect("parsed")
        .expect("consistent")
}

fn read_locally(args: &[&str]) -> Vec<(String, Option<FileInfo>)> {
    let read = read_with(READ_GIVEN, args);
    assert!(read.tail.is_none());
    read.files
}

#[test]
fn a_proc_file_read_last_comes_whole_after_the_sized_files() {
    let d = std::env::temp_dir().join(format!("kfix-read-tail-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("dir");
    let conf = d.join("a.conf");
    std::fs::write(&conf, b"x = 1\nkfix-tail\0").expect("write");
    let c = conf.display().to_string();
    // A /proc/sys file says its size is 0 and reads at an offset as end of file:
    // only a read of its own, last, gets it whole.
    let proc = "/proc/sys/net/ipv4/ip_local_port_range";
    let want = std::fs::read(proc).expect("proc");
    assert!(want.len() > 2, "{want:?}");
    let read = read_with(READ_WITH_TAIL, &[proc, &c]);
    assert_eq!(read.tail.as_deref(), Some(want.as_slice()));
    assert_eq!(read.files.len(), 1);
    assert_eq!(
        read.files[0].1.as_ref().expect("conf").content,
        b"x = 1\nkfix-tail\0"
    );
    // No file but the tail; a tail that does not exist; files that do not.
    let only = read_with(READ_WITH_TAIL, &[proc]);
    assert_eq!((only.files.len(), only.tail), (0, Some(want)));
    let gone = read_with(READ_WITH_TAIL, &["/proc/sys/kfix/none", &c, "/kfix/none"]);
    assert!(gone.tail.is_none());
    assert!(gone.files[0].1.is_some() && gone.files[1].1.is_none());
    std::fs::remove_dir_all(&d).expect("cleanup");
}

#[test]
fn many_files_come_back_each_with_its_own_outcome() {
    let d = std::env::temp_dir().join(format!("kfix-read-files-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("dir");
    let odd = d.join("a b\n0 1\n");
    std::fs::write(&odd, b"x = 1\n\0KFIX 9 9 9 9\nno newline").expect("write");
    let empty = d.join("empty");
    std::fs::write(&empty, b"").expect("write");
    let link = d.join("link.conf");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&odd, &link).expect("symlink");
    let s = |p: &std::path::Path| p.display().to_string();
    let missing = s(&d.join("missing"));
    let files = read_locally(&[&s(&odd), &missing, &s(&empty), &s(&link)]);
    let paths: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, [s(&odd), missing.clone(), s(&empty), s(&link)]);
    let f = files[0].1.as_ref().expect("exists");
    assert_eq!(f.content, b"x = 1\n\0KFIX 9 9 9 9\nno newline");
    assert_eq!(f.real_path, s(&odd));
    assert!(files[1].1.is_none(), "missing file");
    assert_eq!(files[2].1.as_ref().expect("empty file").content, b"");
    let l = files[3].1.as_ref().expect("through the link");
    assert_eq!(
        (l.real_path.as_str(), &l.content),
        (s(&odd).as_str(), &f.content)
    );
    assert!(read_locally(&[&missing]).iter().all(|(_, f)| f.is_none()));
    assert!(read_locally(&[]).is_empty());
    std::fs::remove_dir_all(&d).expect("cleanup");
}

#[test]
fn a_file_that_changed_while_read_is_noticed() {
    // Sizes say 3 + 2 bytes; 6 arrived: a file grew between stat and cat.
    let out = b"2\n/a\0/b\x0011\n644 0 0 3\n644 0 0 2\n/a\0/b\0abcdef";
    assert!(parse_files(out).expect("well formed").is_none());
    let ok = b"2\n/a\0/b\x0011\n644 0 0 3\n644 0 0 2\n/a\0/b\0abcde";
    let files = parse_files(ok)
        .expect("well formed")
        .expect("consistent")
        .files;
    assert_eq!(files[1].1.as_ref().expect("b").content, b"de");
    // A file that grew shows as bytes where the tail's mark should begin.
    let grew = b"1\n/a\x001 1\n644 0 0 3\n/a\0abcdkfix-tail\x001\n";
    assert!(parse_files(grew).expect("well formed").is_none());
    let ok = b"1\n/a\x001 1\n644 0 0 3\n/a\0abckfix-tail\x001\n";
    let read = parse_files(ok).expect("well formed").expect("consistent");
    assert_eq!(read.tail.as_deref(), Some(&b"1\n"[..]));
    assert!(parse_files(b"garbage").is_err());
    assert!(parse_files(b"1\n/a\0").is_err());
}

#[test]
fn the_atomic_write_keeps_bytes_mode_and_links_and_leaves_nothing_on_failure() {
    use std::os::unix::fs::{PermissionsExt, symlink};
    let dir = std::env::temp_dir().join(format!("kfix-write-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let (real, link) = (dir.join("real.conf"), dir.join("link.conf"));
    std::fs::write(&real, "old\n").expect("write");
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o440)).expect("chmod");
    // Another owner, when this runs as root.
    let owned = std::os::unix::fs::chown(&real, Some(65534), Some(65534)).is_ok();
    symlink(&real, &link).expect("symlink");
    let write = |path: &std::path::Path, mode: &str, data: &[u8]| {
        crate::transport::tests::sh(
            &["-c", WRITE_FILE, "kfix", &path.display().to_string(), mode],
            data,
        )
    };
    // Through the link, into the real file; bytes as given (no newline added, NUL
    // and non-UTF-8 kept, more than one dd block); its read-only mode kept.
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let out = write(&link, "", &data);
    assert!(out.status.success(), "{out:?}");
    assert!(std::fs::symlink_metadata(&link).expect("link").is_symlink());
    assert_eq!(std::fs::read(&real).expect("read"), data);
    let meta = std::fs::metadata(&real).expect("meta");
    assert_eq!(meta.permissions().mode() & 0o777, 0o440);
    if owned {
        use std::os::unix::fs::MetadataExt;
        assert_eq!((meta.uid(), meta.gid()), (65534, 65534), "owner kept");
    }
    // A mode given is set; a new file gets 0644.
    assert!(write(&real, "600", b"x").status.success());
    assert_eq!(
        std::fs::metadata(&real).expect("meta").permissions().mode() & 0o777,
        0o600
    );
    let fresh = dir.join("fresh.conf");
    assert!(write(&fresh, "", b"").status.success());
    assert_eq!(std::fs::read(&fresh).expect("read"), b"");
    assert_eq!(
        std::fs::metadata(&fresh)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777,
        0o644
    );
    // A write that fails (an owner that does not exist) leaves the original and no
    // temp file.
    let out = crate::transport::tests::sh(
        &[
            "-c",
            WRITE_FILE,
            "kfix",
            &real.display().to_string(),
            "",
            "kfix-no-such-user",
            "0",
        ],
        b"new",
    );
    assert!(!out.status.success());
    assert_eq!(std::fs::read(&real).expect("read"), b"x");
    // Someone swapping the temp name for a symlink to another file between its
    // creation and the copy of the old file's attributes (a `cp` first in PATH does
    // it here): the other file keeps its mode and bytes, nothing is renamed over the
    // target, and the swapped-in name is not followed.
    let victim = dir.join("victim");
    std::fs::write(&victim, "keep\n").expect("victim");
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).expect("bin");
    let real_cp = String::from_utf8(
        std::process::Command::new("sh")
            .args(["-c", "command -v cp"])
            .output()
            .expect("which cp")
            .stdout,
    )
    .expect("utf-8");
    std::fs::write(
            bin.join("cp"),
            format!(
                "#!/bin/sh\nfor f in \"$KFIX_DIR\"/.kfix-tmp.*; do mv -- \"$f\" \"$KFIX_DIR/aside\"; ln -s -- \"$KFIX_VICTIM\" \"$f\"; done\nexec {} \"$@\"\n",
                real_cp.trim()
            ),
        )
        .expect("fake cp");
    std::fs::set_permissions(bin.join("cp"), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    let path = format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", bin.display());
    let raced = crate::transport::tests::sh_with_env(
        &["-c", WRITE_FILE, "kfix", &real.display().to_string(), ""],
        b"raced\n",
        &[
            ("PATH", path.as_ref()),
            ("KFIX_DIR", dir.as_os_str()),
            ("KFIX_VICTIM", victim.as_os_str()),
        ],
    );
    assert!(!raced.status.success(), "{raced:?}");
    assert!(
        String::from_utf8_lossy(&raced.stderr).contains("no longer is the file"),
        "{raced:?}"
    );
    assert_eq!(std::fs::read(&victim).expect("read"), b"keep\n");
    assert_eq!(
        std::fs::metadata(&victim)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777,
        0o644,
        "the victim's mode is its own"
    );
    assert_eq!(std::fs::read(&real).expect("read"), b"x");
    assert!(!std::fs::symlink_metadata(&real).expect("real").is_symlink());
    std::fs::remove_file(dir.join("aside")).expect("aside");
    std::fs::remove_dir_all(&bin).expect("bin");
    std::fs::remove_file(&victim).expect("victim");
    // A directory others can write to is refused before anything is created there
    // (world-writable; group-writable by a group other than root's).
    let open_dir = dir.join("open");
    std::fs::create_dir(&open_dir).expect("open");
    for (mode, gid) in [(0o777, 0), (0o1777, 0), (0o775, 65534)] {
        std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let grouped = std::os::unix::fs::chown(&open_dir, None, Some(gid)).is_ok();
        if gid != 0 && !grouped {
            continue;
        }
        let out = write(&open_dir.join("f.conf"), "", b"no");
        assert!(!out.status.success(), "{mode:o}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("can be written by others"),
            "{out:?}"
        );
        assert_eq!(
            std::fs::read_dir(&open_dir).expect("ls").count(),
            0,
            "{mode:o}"
        );
    }
    // Group-writable by root's group only is fine (root is the only writer).
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o775)).expect("chmod");
    if std::os::unix::fs::chown(&open_dir, None, Some(0)).is_ok() {
        assert!(write(&open_dir.join("f.conf"), "", b"ok").status.success());
        std::fs::remove_file(open_dir.join("f.conf")).expect("rm");
    }
    std::fs::remove_dir(&open_dir).expect("open");
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["fresh.conf", "link.conf", "real.conf"]);
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

fn facts_by(prefix: &[&str]) -> Vec<String> {
    let out = std::process::Command::new(prefix[0])
        .args(&prefix[1..])
        .args(["sh", "-c", FACTS_SCRIPT])
        .output()
        .expect("facts run");
    assert!(out.status.success(), "{out:?}");
    out.stdout
        .split(|b| *b == 0)
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect()
}

#[test]
fn the_facts_name_the_host_kernel_and_machine_as_uname_does() {
    let uname = |flag: &str| {
        let out = std::process::Command::new("uname")
            .arg(flag)
            .output()
            .expect("uname");
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
    };
    let f = facts_by(&["env"]);
    assert_eq!(f[..3], [uname("-n"), uname("-r"), uname("-m")]);
    // Where there is no /proc/sys/kernel/arch (before Linux 6.1), uname answers.
    let old = FACTS_SCRIPT.replace("$k/arch", "$k/kfix-no-arch");
    let out = std::process::Command::new("sh")
        .args(["-c", &old])
        .output()
        .expect("facts run");
    let g: Vec<&[u8]> = out.stdout.split(|b| *b == 0).collect();
    assert_eq!(String::from_utf8_lossy(g[2]), uname("-m"));
    assert_eq!(String::from_utf8_lossy(g[0]), uname("-n"));
    // A hostname is bytes: spaces and newlines, a trailing one too, come back as set
    // (in a UTS namespace of its own, when this runs as root).
    let odd = "a b\nc\n";
    let set = format!(
        "import socket; socket.sethostname({odd:?}); import os; os.execvp('sh', ['sh', '-c', {FACTS_SCRIPT:?}])"
    );
    let out = std::process::Command::new("unshare")
        .args(["--uts", "python3", "-c", &set])
        .output()
        .expect("unshare");
    if out.status.success() {
        let h: Vec<&[u8]> = out.stdout.split(|b| *b == 0).collect();
        assert_eq!(String::from_utf8_lossy(h[0]), odd);
        assert_eq!(String::from_utf8_lossy(h[1]), uname("-r"));
    } else {
        eprintln!("no UTS namespace here (not root?): {out:?}");
    }
}

#[test]
fn a_files_fingerprint_changes_with_any_write_to_it_and_not_with_reads() {
    let d = std::env::temp_dir().join(format!("kfix-probe-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("dir");
    let f = d.join("a.conf");
    let path = f.display().to_string();
    let probe = file_probe(&path).to_shell();
    let print = || {
        let out = std::process::Command::new("sh")
            .args(["-c", &probe])
            .env("TZ", "Asia/Shanghai")
            .output()
            .expect("sh runs");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let sh = |cmd: &str| {
        let st = std::process::Command::new("sh")
            .args(["-c", cmd, "kfix", &path])
            .status()
            .expect("sh runs");
        assert!(st.success(), "{cmd}");
    };
    assert_eq!(print(), "absent\n");
    std::fs::write(&f, "x = 1\n").expect("write");
    let mut seen = vec![print()];
    assert!(seen[0].ends_with(" +0000\n"), "in UTC: {}", seen[0]);
    // Reads and the same fingerprint again: no change.
    std::fs::read(&f).expect("read");
    assert_eq!(print(), seen[0]);
    // Each of these is a change, even when the bytes end up the same.
    for change in [
        "cp -- \"$1\" \"$1.new\" && mv -- \"$1.new\" \"$1\"",
        "chmod 600 -- \"$1\"",
        "chmod 600 -- \"$1\"; chown \"$(id -u):$(id -g)\" -- \"$1\"",
        "printf 'x = 1\\n' > \"$1\"",
        "printf 'x = 2\\n' > \"$1\"",
    ] {
        // Kernels before 6.13 stamp a change with the clock tick's time (a few ms).
        std::thread::sleep(std::time::Duration::from_millis(20));
        sh(change);
        let now = print();
        assert!(
            !seen.contains(&now),
            "`{change}` left the fingerprint {now}"
        );
        seen.push(now);
    }
    std::fs::remove_dir_all(&d).expect("clean up");
}

#[test]
fn the_facts_carry_the_effective_uid() {
    let uid = |prefix: &[&str]| facts_by(prefix)[6].clone();
    let id = std::process::Command::new("id")
        .arg("-u")
        .output()
        .expect("id");
    let me = String::from_utf8_lossy(&id.stdout).trim().to_string();
    assert_eq!(uid(&["env"]), me);
    if me == "0" {
        let nobody = [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ];
        assert_eq!(uid(&nobody), "65534");
    }
}
