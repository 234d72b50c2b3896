//! `--max-handshakes`: how many SSH handshakes kfix has in flight at once. A fake `ssh`
//! first in PATH (the openssh crate runs `ssh` by name) counts how many of it run at
//! once, holds each for a moment, then fails as an unreachable host would: no traffic
//! leaves the machine.

mod common;

use std::path::Path;
use std::process::Command;

const FAKE_SSH: &str = r#"#!/bin/sh
# Counts concurrent runs in $dir/now and the most seen in $dir/max; fails like ssh does
# when the host refuses the connection, in the -E log file the caller reads.
dir=$(dirname "$0")
log=/dev/null
prev=
for a in "$@"; do [ "$prev" = -E ] && log=$a; prev=$a; done
( flock 9
  n=$(( $(cat "$dir/now" 2>/dev/null || echo 0) + 1 )); echo "$n" >"$dir/now"
  [ "$n" -gt "$(cat "$dir/max" 2>/dev/null || echo 0)" ] && echo "$n" >"$dir/max"
) 9>"$dir/lock"
sleep 0.4
( flock 9; echo $(( $(cat "$dir/now") - 1 )) >"$dir/now" ) 9>"$dir/lock"
echo "ssh: connect to host fake port 22: Connection refused" >>"$log"
exit 255
"#;

/// The most fake handshakes seen at once while `kfix check` tried 12 hosts.
fn most_at_once(max_handshakes: Option<&str>) -> u32 {
    let dir = common::unique_dir("kfix-handshakes");
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("bin dir");
    let ssh = bin.join("ssh");
    std::fs::write(&ssh, FAKE_SSH).expect("fake ssh");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let hosts: String = (1..=12)
        .map(|i| format!("n{i} ansible_host=192.0.2.{i}\n"))
        .collect();
    let inv = dir.join("inventory.ini");
    std::fs::write(&inv, format!("[nodes]\n{hosts}")).expect("inventory");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut args = vec![
        "check".to_string(),
        "persist-ip-forward".into(),
        "-i".into(),
        inv.display().to_string(),
        "--forks".into(),
        "12".into(),
    ];
    if let Some(n) = max_handshakes {
        args.extend(["--max-handshakes".to_string(), n.to_string()]);
    }
    let out = Command::new(env!("CARGO_BIN_EXE_kfix"))
        .args(&args)
        .current_dir(&dir)
        .env("PATH", path)
        .env("NO_COLOR", "1")
        .env("KFIX_STATE_DIR", dir.join("state"))
        .env_remove("KFIX_PLAYBOOK_DIR")
        .output()
        .expect("run kfix");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "every host unreachable\n{stdout}"
    );
    assert_eq!(
        stdout.matches("unreachable").count(),
        12,
        "each host tried once\n{stdout}"
    );
    let max = read_u32(&bin.join("max"));
    assert_eq!(read_u32(&bin.join("now")), 0, "every fake ssh ended");
    std::fs::remove_dir_all(&dir).expect("clean up");
    max
}

fn read_u32(p: &Path) -> u32 {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or(0)
}

#[test]
fn handshakes_in_flight_stay_within_max_handshakes() {
    assert_eq!(
        most_at_once(Some("3")),
        3,
        "three at a time, and never more"
    );
    // The limit is what held them: with room for all, more run at once.
    assert!(most_at_once(Some("12")) > 3);
}

#[test]
fn max_handshakes_must_be_at_least_one() {
    let out = common::kfix_in(
        Path::new(env!("CARGO_MANIFEST_DIR")),
        &["check", "persist-ip-forward", "--max-handshakes", "0"],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--max-handshakes"), "{err}");
}
