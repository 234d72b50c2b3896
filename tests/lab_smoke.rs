//! The lab itself: real sshd hosts, isolated network state, strict host keys, stable snapshots.
mod common;

use common::Lab;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn root_ns_routes() -> String {
    let out = std::process::Command::new("ip")
        .args(["route", "show", "table", "all"])
        .output()
        .expect("ip route in the root netns");
    assert!(out.status.success());
    stdout(&out)
}

#[test]
fn lab_hosts_are_real_ssh_hosts() {
    if !common::require_root() {
        return;
    }
    // A documentation prefix (TEST-NET-2) that the machine itself does not route.
    const PREFIX: &str = "198.51.100.0/24";
    let root_before = root_ns_routes();
    assert!(
        !root_before.lines().any(|l| l.starts_with(PREFIX)),
        "the machine already routes {PREFIX}; the isolation check needs a prefix it does not"
    );

    let lab = Lab::up(3);
    assert_eq!(lab.hosts, ["h1", "h2", "h3"]);

    // Every host is a real sshd reachable from the ctl netns, with strict host keys.
    for host in &lab.hosts {
        let out = lab.ssh(host, "hostname");
        assert!(
            out.status.success(),
            "ssh {host}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(stdout(&out).trim(), host);
    }
    // The unprivileged operator with passwordless sudo.
    let cfg = lab.ssh_config();
    let out = lab.ctl(&[
        "ssh",
        "-F",
        cfg.to_str().unwrap(),
        "-l",
        "kfixop",
        &lab.ip("h2"),
        "id -un; sudo -n id -u",
    ]);
    assert!(
        out.status.success(),
        "kfixop: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout(&out), "kfixop\n0\n");

    // A host key that is not in known_hosts is refused.
    let empty = lab.dir.join("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    let out = lab.ctl(&[
        "ssh",
        "-F",
        cfg.to_str().unwrap(),
        "-o",
        &format!("UserKnownHostsFile={}", empty.display()),
        &lab.ip("h1"),
        "hostname",
    ]);
    assert!(
        !out.status.success(),
        "ssh with an empty known_hosts must fail"
    );
    assert!(stdout(&out).is_empty());

    // Snapshots are stable, and each host has its own network state.
    let h1_before = lab.snapshot("h1");
    let h2_before = lab.snapshot("h2");
    assert_eq!(
        h2_before,
        lab.snapshot("h2"),
        "snapshot of an untouched host must not change"
    );
    for section in [
        "## routes",
        "## links",
        "## addresses",
        "## iptables filter",
        "## iptables nat",
        "## sysctl",
        "## files",
    ] {
        assert!(
            h2_before.contains(section),
            "snapshot lacks {section}:\n{h2_before}"
        );
    }
    assert!(h2_before.contains(&format!("eth0 inet {}/16 scope global", lab.ip("h2"))));

    lab.sh("h1", &format!("ip route add {PREFIX} dev eth0"));
    assert!(
        lab.sh("h1", &format!("ip route show {PREFIX}"))
            .contains("dev eth0")
    );
    assert_eq!(lab.sh("h2", &format!("ip route show {PREFIX}")), "");
    assert_eq!(
        root_ns_routes(),
        root_before,
        "the machine's root netns routes changed"
    );

    let h1_after = lab.snapshot("h1");
    assert_ne!(h1_before, h1_after);
    assert!(
        h1_after.contains(&format!("{PREFIX} dev eth0 scope link")),
        "{h1_after}"
    );
    assert_eq!(h2_before, lab.snapshot("h2"), "h2 changed when h1 did");

    // Each host sees its own processes only, as a node does (its `pgrep` does not scan
    // the whole lab): a process started on h2 is there over ssh on h2, not on h1.
    lab.sh("h2", "setsid sleep 4242 </dev/null >/dev/null 2>&1 &");
    let seen = |h: &str| lab.ssh(h, "pgrep -f '^sleep 4242$'").status.success();
    assert!(seen("h2"), "h2 runs it");
    assert!(!seen("h1"), "h1 sees h2's process");
    lab.sh("h2", "pkill -f '^sleep 4242$'");

    // The harness can run the kfix binary in the ctl netns (its behaviour is not tested here).
    let _ = lab.kfix(&["--help"]);

    drop(lab);
    assert_eq!(root_ns_routes(), root_before);
}
