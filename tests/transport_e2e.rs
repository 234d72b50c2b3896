//! End-to-end tests of what a run does around the playbook: strict host keys, become
//! (sudo) for a non-root user, hostile values kept as data, exit codes, bad input
//! rejected before any host is contacted, and the local transport.

mod common;

use common::{Lab, host, json, require_root};
use serde_json::Value;

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn unknown_and_changed_host_keys_fail_without_prompt() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(2);
    // Unknown: an empty known_hosts file.
    let empty = lab.dir.join("known_hosts.empty");
    std::fs::write(&empty, "").unwrap();
    let cfg = lab.dir.join("ssh_config.unknown");
    let base = std::fs::read_to_string(lab.ssh_config()).unwrap();
    std::fs::write(&cfg, base.replace(s(&lab.known_hosts()), s(&empty))).unwrap();
    let started = std::time::Instant::now();
    let out = lab.kfix(&[
        "check",
        "persist-ip-forward",
        "-i",
        s(&lab.inventory()),
        "--ssh-config",
        s(&cfg),
        "--output",
        "json",
    ]);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "must fail fast, not prompt"
    );
    let doc = json(&out);
    for h in &doc["checks"][0]["hosts"].as_array().unwrap()[..] {
        assert_eq!(h["status"], "unreachable", "{doc:#}");
        assert!(
            h["reason"]
                .as_str()
                .unwrap()
                .contains("Host key verification failed"),
            "{doc:#}"
        );
    }
    assert_eq!(out.status.code(), Some(1));
    // Changed: h1's address with h2's key.
    let keys = std::fs::read_to_string(lab.known_hosts()).unwrap();
    let h2_key = keys
        .lines()
        .find(|l| l.starts_with(&format!("{} ", lab.ip("h2"))))
        .unwrap()
        .split_once(' ')
        .unwrap()
        .1
        .to_string();
    let forged = lab.dir.join("known_hosts.forged");
    std::fs::write(&forged, format!("{} {h2_key}\n", lab.ip("h1"))).unwrap();
    let cfg2 = lab.dir.join("ssh_config.forged");
    std::fs::write(&cfg2, base.replace(s(&lab.known_hosts()), s(&forged))).unwrap();
    let doc = json(&lab.kfix(&[
        "check",
        "persist-ip-forward",
        "-i",
        s(&lab.inventory()),
        "--ssh-config",
        s(&cfg2),
        "-l",
        "h1",
        "--output",
        "json",
    ]));
    let h1 = &doc["checks"][0]["hosts"][0];
    assert_eq!(h1["status"], "unreachable", "{doc:#}");
    let reason = h1["reason"].as_str().unwrap();
    assert!(
        reason.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
            || reason.contains("Host key verification failed"),
        "{reason}"
    );
}

#[test]
fn become_runs_steps_as_root_for_a_sudo_user() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(2);
    for h in ["h1", "h2"] {
        lab.sh(h, "sysctl -qw net.ipv4.ip_forward=0");
    }
    let key = lab.identity();
    let inv = lab.dir.join("become.ini");
    std::fs::write(
        &inv,
        format!(
            "[lab]\nh1 ansible_host={} ansible_user=kfixop ansible_become=true ansible_ssh_private_key_file={k}\nh2 ansible_host={} ansible_user=kfixop ansible_ssh_private_key_file={k}\n",
            lab.ip("h1"),
            lab.ip("h2"),
            k = s(&key)
        ),
    )
    .unwrap();
    let before_h2 = lab.snapshot("h2");
    let out = lab.kfix(&[
        "run",
        "persist-ip-forward",
        "-i",
        s(&inv),
        "--ssh-config",
        s(&lab.ssh_config()),
        "--yes",
        "--output",
        "json",
    ]);
    let doc = json(&out);
    assert_eq!(host(&doc, "h1")["status"], "changed", "{doc:#}");
    assert_eq!(
        lab.sh("h1", "cat /proc/sys/net/ipv4/ip_forward").trim(),
        "1"
    );
    assert_eq!(
        lab.sh("h1", "stat -c '%U %a' /etc/sysctl.conf").trim(),
        "root 644",
        "owner and mode kept"
    );
    // Without become the unprivileged user cannot change anything: the host fails
    // cleanly and is left exactly as it was.
    assert_eq!(host(&doc, "h2")["status"], "failed", "{doc:#}");
    assert_eq!(lab.snapshot("h2"), before_h2);
    assert_eq!(out.status.code(), Some(1));
}

const ECHO: &str = r#"id: echo
title: Echo a value back
vars:
  v: plain
detect:
  - name: the value comes back byte for byte
    command: [printf, "%s", "{{ v }}"]
    equals: "{{ v }}"
steps:
  - id: touch
    command:
      run: [printf, "%s", "{{ v }}"]
      unless: [test, -e, /tmp/kfix-pwned]
      undo: ["true"]
"#;

#[test]
fn hostile_values_are_data_on_the_remote_side() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(1);
    let pb = lab.dir.join("echo.yaml");
    std::fs::write(&pb, ECHO).unwrap();
    let hostile = [
        "; touch /tmp/kfix-pwned",
        "$(touch /tmp/kfix-pwned)",
        "`touch /tmp/kfix-pwned`",
        "' ; touch /tmp/kfix-pwned ; '",
        "\" ; touch /tmp/kfix-pwned ; \"",
        "a\nb; touch /tmp/kfix-pwned",
        "-n",
        "--help",
        "$HOME * ~ && || | > /tmp/kfix-pwned",
        "ünïcødé ✓ 中文",
    ];
    for v in hostile {
        let arg = format!("v={v}");
        let doc = lab.kfix_json(&["check", s(&pb), "-e", &arg], None);
        let h = &doc["checks"][0]["hosts"][0];
        assert_eq!(
            h["status"], "problem",
            "value {v:?} did not come back verbatim: {doc:#}"
        );
        assert!(
            lab.exec("h1", "test -e /tmp/kfix-pwned").status.code() == Some(1),
            "value {v:?} ran a command"
        );
    }
    // The same through an inventory variable.
    let inv = lab.dir.join("hostile.ini");
    let line = std::fs::read_to_string(lab.inventory()).unwrap();
    std::fs::write(
        &inv,
        format!("{}  v=\"$(touch /tmp/kfix-pwned)\"\n", line.trim_end()),
    )
    .unwrap();
    let doc = lab.kfix_json(&["check", s(&pb)], Some(&inv));
    assert_eq!(doc["checks"][0]["hosts"][0]["status"], "problem", "{doc:#}");
    assert!(lab.exec("h1", "test -e /tmp/kfix-pwned").status.code() == Some(1));
}

fn kfix_plain(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_kfix"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("kfix runs")
}

#[test]
fn bad_input_is_rejected_before_any_host_with_exit_code_3() {
    let dir = std::env::temp_dir().join(format!("kfix-badinput-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "id: bad\ntitle: Bad\nsteps:\n  - id: x\n    frobnicate: {}\n",
    )
    .unwrap();
    // An unreachable inventory: if kfix contacted hosts this would be slow or unreachable.
    let inv = dir.join("inv.ini");
    std::fs::write(&inv, "nohost ansible_host=192.0.2.1\n").unwrap();
    let out = kfix_plain(&[
        "run",
        bad.to_str().unwrap(),
        "-i",
        inv.to_str().unwrap(),
        "--dry-run",
    ]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error: unknown step field `frobnicate`"),
        "{err}"
    );
    assert!(err.contains(&format!("--> {}:5:5", bad.display())), "{err}");
    let out = kfix_plain(&["run", "no-such-playbook", "--dry-run"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no playbook `no-such-playbook`"));
    let out = kfix_plain(&["run", "persist-ip-forward", "-e", "novalue", "--dry-run"]);
    assert_eq!(out.status.code(), Some(3));
    // A pattern that selects no host is refused; a malformed one selects nothing
    // (Ansible would read `nohost[1` as the group or everything); an exclusion that
    // matches nothing is refused; a union term that matches nothing warns (listed with
    // `kfix inventory`, which contacts no host).
    for (limit, says) in [
        ("nosuchhost", "no hosts matched --limit 'nosuchhost'"),
        (
            "nohost[1",
            "malformed --limit pattern 'nohost[1': a '[' that is never closed",
        ),
        ("all[", "malformed --limit pattern 'all['"),
        ("all:!nohots", "the exclusion '!nohots' matches no host"),
    ] {
        let out = kfix_plain(&[
            "run",
            "persist-ip-forward",
            "-i",
            inv.to_str().unwrap(),
            "-l",
            limit,
            "--dry-run",
        ]);
        assert_eq!(out.status.code(), Some(3), "{limit}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(says) && err.contains("hint:"),
            "{limit}: {err}"
        );
    }
    // An -e the playbook does not declare is a typo, not a default kept; a name that is
    // no variable name too. Ansible's mapping forms are taken (and checked the same way).
    let vars_file = dir.join("vars.yml");
    std::fs::write(&vars_file, "persist_fiel: /etc/sysctl.d/99-kfix.conf\n").unwrap();
    let at_file = format!("@{}", vars_file.display());
    for (e, says) in [
        (
            "persist_fiel=/etc/x.conf",
            "no playbook of this run declares `persist_fiel` (persist-ip-forward)\n  = hint: did you mean `persist_file`?",
        ),
        ("=x", "`` is not a variable name"),
        ("9lives=x", "`9lives` is not a variable name"),
        (
            at_file.as_str(),
            "no playbook of this run declares `persist_fiel`",
        ),
        (
            "{\"persist_fiel\": 1}",
            "no playbook of this run declares `persist_fiel`",
        ),
        ("{not: [closed", "is not a mapping of variables"),
    ] {
        for args in [
            &["run", "persist-ip-forward", "-e", e, "--dry-run"][..],
            &["check", "persist-ip-forward", "-e", e][..],
        ] {
            let out = kfix_plain(args);
            assert_eq!(out.status.code(), Some(3), "{args:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(says), "{args:?}: {err}");
        }
    }
    // A YAML 1.1 boolean is a string in YAML 1.2, and true in a `when:`: said.
    let out = kfix_plain(&["check", "reset-flannel-cni", "-e", "flush_all_iptables=no"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "warning: -e flush_all_iptables=no is the string \"no\" (kfix types values as YAML 1.2)"
        ),
        "{out:?}"
    );
    // Declared names in those forms are taken (a local check: read-only).
    std::fs::write(&vars_file, "persist_file: /etc/sysctl.d/99-kfix.conf\n").unwrap();
    for e in [
        at_file.as_str(),
        "{\"persist_file\": \"/etc/sysctl.d/99-kfix.conf\"}",
    ] {
        let out = kfix_plain(&["check", "persist-ip-forward", "-e", e]);
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "-e {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A value a flag does not take is a usage error (2), as clap's own are; a report
    // that cannot be written is 6, not "a problem was found" (1).
    for args in [
        &["run", "persist-ip-forward", "--output", "yaml", "--dry-run"][..],
        &["run", "persist-ip-forward", "--serial", "abc", "--dry-run"][..],
        &[
            "run",
            "persist-ip-forward",
            "--host-timeout",
            "5x",
            "--dry-run",
        ][..],
        &["run", "persist-ip-forward", "--output", "html", "--dry-run"][..],
        &["check", "persist-ip-forward", "--output", "html"][..],
        &["run", "persist-ip-forward", "--bogus-flag"][..],
    ] {
        let out = kfix_plain(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = kfix_plain(&[
        "check",
        "--all",
        "--output",
        "html",
        "/nonexistent-dir/kfix.html",
    ]);
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A variable without a default that nothing sets is required: validate says so,
    // run and check refuse before any host (never a command with `None` in it).
    let req = dir.join("req.yaml");
    std::fs::write(
        &req,
        "id: req\ntitle: Required\nvars:\n  unit:\n    description: the unit to restart\nsteps:\n  - id: s\n    service: {name: \"{{ unit }}\", state: restarted}\n",
    )
    .unwrap();
    let out = kfix_plain(&["validate", req.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("(req, 1 step; requires unit)"),
        "{out:?}"
    );
    for args in [
        &[
            "run",
            req.to_str().unwrap(),
            "-i",
            inv.to_str().unwrap(),
            "--dry-run",
        ][..],
        &["check", req.to_str().unwrap(), "-i", inv.to_str().unwrap()][..],
    ] {
        let out = kfix_plain(args);
        assert_eq!(out.status.code(), Some(3), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(
                "playbook `req` needs `unit` (the unit to restart), and nothing sets it for nohost"
            ) && err.contains(&format!("--> {}:4:3", req.display()))
                && err.contains("hint: -e unit=VALUE"),
            "{err}"
        );
    }
    // Set by the inventory for the host (a local one): it runs.
    let local = dir.join("local.ini");
    std::fs::write(
        &local,
        "here ansible_connection=local unit=kfix-no-such-unit\n",
    )
    .unwrap();
    let out = kfix_plain(&[
        "check",
        req.to_str().unwrap(),
        "-i",
        local.to_str().unwrap(),
    ]);
    assert!(matches!(out.status.code(), Some(0 | 1)), "{out:?}");
    // `validate DIR` checks the playbooks in it; a directory without any is an error.
    let out = kfix_plain(&["validate", "playbooks"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok  playbooks/persist-ip-forward.yaml"));
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = kfix_plain(&["validate", empty.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("no playbooks found in {}", empty.display()))
    );
    let out = kfix_plain(&[
        "inventory",
        "-i",
        inv.to_str().unwrap(),
        "-l",
        "nohost,nosuch",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("warning: --limit: 'nosuch' matches no host; it is ignored"),
        "{out:?}"
    );
    // Every kind of bad input names file:line:col and hints, exit 3, before any host.
    let cases: [(&str, &str, &str, &str); 6] = [
        (
            "syntax.yaml",
            "id: bad\ntitle: [unclosed\n",
            "unclosed bracket",
            ":2:8",
        ),
        (
            "kind.yaml",
            "id: bad\ntitle: Bad\nsteps:\n  - id: x\n    teleport: {to: mars}\n",
            "unknown step field `teleport`",
            ":5:5",
        ),
        (
            "undef.yaml",
            "id: bad\ntitle: Bad\nsteps:\n  - id: x\n    file: {path: \"/etc/{{ nosuchvar }}\", content: x}\n",
            "undefined variable `nosuchvar`",
            ":5:18",
        ),
        (
            "noaddr.ini",
            "nohost ansible_host=\n",
            "host `nohost` has no address",
            ":1:8",
        ),
        (
            "noaddr.yaml",
            "all:\n  hosts:\n    node-1:\n      ansible_host: \"\"\n",
            "host `node-1` has no address",
            ":4:21",
        ),
        (
            "noname.ini",
            "[nodes]\n  ansible_host=10.0.0.1\n",
            "a host line starts with its host name",
            ":2:3",
        ),
    ];
    for (name, text, msg, at) in cases {
        let f = dir.join(name);
        std::fs::write(&f, text).unwrap();
        let out = if name.ends_with(".yaml") && !name.starts_with("noaddr") {
            kfix_plain(&[
                "run",
                f.to_str().unwrap(),
                "-i",
                inv.to_str().unwrap(),
                "--dry-run",
            ])
        } else {
            kfix_plain(&[
                "run",
                "persist-ip-forward",
                "-i",
                f.to_str().unwrap(),
                "--dry-run",
            ])
        };
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{name}: {err}");
        assert!(err.contains(msg), "{name}: {err}");
        assert!(
            err.contains(&format!("--> {}{at}", f.display())),
            "{name}: {err}"
        );
        assert!(err.contains("hint:"), "{name}: {err}");
        assert!(out.stdout.is_empty(), "{name}: no host was contacted");
    }
    // A real run without a terminal needs --yes.
    let out = kfix_plain(&["run", "persist-ip-forward"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pass --yes"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn local_dry_run_needs_no_inventory_and_changes_nothing() {
    // The README's first command: the local host over the local transport.
    let before = std::fs::read("/proc/sys/net/ipv4/ip_forward").unwrap();
    let out = kfix_plain(&["run", "persist-ip-forward", "--dry-run", "--output", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = json(&out);
    assert_eq!(doc["dry_run"], true);
    assert_eq!(doc["hosts"][0]["host"], "localhost");
    let st = doc["hosts"][0]["status"].as_str().unwrap();
    assert!(st == "healthy" || st == "would_change", "{doc:#}");
    assert_eq!(
        std::fs::read("/proc/sys/net/ipv4/ip_forward").unwrap(),
        before
    );
    let human = kfix_plain(&["run", "persist-ip-forward", "--dry-run"]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("kfix run persist-ip-forward") && text.contains("summary:"),
        "{text}"
    );
}

#[test]
fn secret_values_are_masked_in_reports() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(1);
    let pb = lab.dir.join("secret.yaml");
    std::fs::write(
        &pb,
        "id: secret\ntitle: Secret\nvars:\n  token: {default: s3cr3t-default, secret: true}\nsteps:\n  - id: write\n    file: {path: /etc/kfix-token, content: \"token={{ token }}\\n\", mode: \"0600\"}\n",
    )
    .unwrap();
    let (inv, cfg) = (lab.inventory(), lab.ssh_config());
    for (extra, value) in [
        (None, "s3cr3t-default"),
        (Some("token=hunter2-xyz"), "hunter2-xyz"),
    ] {
        let mut args = vec![
            "run",
            s(&pb),
            "-i",
            s(&inv),
            "--ssh-config",
            s(&cfg),
            "--dry-run",
            "-v",
        ];
        if let Some(e) = extra {
            args.extend(["-e", e]);
        }
        for output in ["json", "human"] {
            let mut a = args.clone();
            a.extend(["--output", output]);
            let out = lab.kfix(&a);
            let all = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.status.success(), "{all}");
            assert!(
                !all.contains(value),
                "secret leaked in {output} output:\n{all}"
            );
            assert!(all.contains("token=********"), "{all}");
        }
    }
}

/// `kfix ARGS` (with the lab's inventory and ssh_config) on a pseudo-terminal from
/// util-linux `script`; the test writes the answers on its stdin and reads its output.
fn run_on_a_terminal(lab: &Lab, args: &str) -> std::process::Child {
    let ctl = std::fs::read_to_string(lab.dir.join("ctl_ns")).unwrap();
    let line = format!(
        "ip netns exec {} {} {args} -i {} --ssh-config {}",
        ctl.trim(),
        env!("CARGO_BIN_EXE_kfix"),
        s(&lab.inventory()),
        s(&lab.ssh_config())
    );
    std::process::Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("NO_COLOR", "1")
        .env("KFIX_STATE_DIR", lab.dir.join("state"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// On a terminal a real run shows the plan and asks; `n` applies nothing, `y` applies.
#[test]
fn a_real_run_on_a_terminal_asks_before_applying() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(1);
    lab.sh("h1", "sysctl -qw net.ipv4.ip_forward=0");
    // util-linux `script` gives kfix a pseudo-terminal; the answer comes on its stdin.
    let answer = |a: &str| {
        use std::io::Write;
        let mut child = run_on_a_terminal(&lab, "run persist-ip-forward");
        child.stdin.take().unwrap().write_all(a.as_bytes()).unwrap();
        String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).into_owned()
    };
    let no = answer("n\n");
    assert!(
        no.contains("+ net.ipv4.ip_forward = 1  (runtime)")
            && no.contains("Apply these changes to 1 host? [y/N]"),
        "{no}"
    );
    assert!(no.contains("not applied"), "{no}");
    assert_eq!(
        lab.sh("h1", "cat /proc/sys/net/ipv4/ip_forward").trim(),
        "0"
    );
    let yes = answer("y\n");
    assert!(yes.contains("summary: 1 changed"), "{yes}");
    assert_eq!(
        lab.sh("h1", "cat /proc/sys/net/ipv4/ip_forward").trim(),
        "1"
    );
}

/// The SSH master dies while the operator reads the plan (it is idle-limited so that a
/// killed controller leaves none behind): applying reconnects instead of failing.
#[test]
fn a_connection_lost_while_confirming_is_reopened() {
    if !require_root() {
        return;
    }
    use std::io::{Read, Write};
    let lab = Lab::up(1);
    lab.sh("h1", "sysctl -qw net.ipv4.ip_forward=0");
    let mut child = run_on_a_terminal(&lab, "run persist-ip-forward");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let seen = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !seen.lock().unwrap().contains("Apply these changes") {
        assert!(
            std::time::Instant::now() < deadline,
            "no prompt: {}",
            seen.lock().unwrap()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let text = seen.lock().unwrap().clone();
    let run_id = regex::Regex::new(r"run (\S+), plan\)")
        .unwrap()
        .captures(&text)
        .unwrap()[1]
        .to_string();
    // Stop this run's SSH master through its control socket.
    let ctl = std::fs::read_to_string(lab.dir.join("ctl_ns")).unwrap();
    let dir = common::control_dir_of(&run_id).expect("the run's control directory");
    let sock = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path().join("master"))
        .find(|p| p.exists())
        .expect("a control socket");
    let exit = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            ctl.trim(),
            "ssh",
            "-S",
            sock.to_str().unwrap(),
            "-O",
            "exit",
            "lab",
        ])
        .output()
        .unwrap();
    assert!(
        exit.status.success(),
        "{}",
        String::from_utf8_lossy(&exit.stderr)
    );
    stdin.write_all(b"y\n").unwrap();
    drop(stdin);
    child.wait().unwrap();
    reader.join().unwrap();
    let out = seen.lock().unwrap().clone();
    assert!(out.contains("summary: 1 changed"), "{out}");
    assert_eq!(
        lab.sh("h1", "cat /proc/sys/net/ipv4/ip_forward").trim(),
        "1"
    );
}

const ECHO_HOSTNAME: &str = r#"id: echo-hostname
title: Echo the hostname fact back
vars:
  expected: ""
detect:
  - name: the hostname fact comes back byte for byte (brackets keep its edges)
    command: [printf, "[%s]", "{{ facts.hostname }}"]
    equals: "{{ expected }}"
steps:
  - id: touch
    command:
      run: [printf, "%s", "{{ facts.hostname }}"]
      unless: [test, -e, /tmp/kfix-pwned]
      undo: ["true"]
"#;

/// Property: a hostile hostname (anything but NUL, newlines included, up to the
/// kernel's 64 bytes) gathered as a fact comes back from a remote probe byte for byte
/// and runs nothing. The host's hostname is set with sethostname(2) in its UTS namespace.
#[test]
fn any_hostname_fact_is_echoed_back_verbatim() {
    if !require_root() {
        return;
    }
    use proptest::test_runner::{Config, TestRunner};
    let lab = Lab::up(1);
    let pb = lab.dir.join("echo-hostname.yaml");
    std::fs::write(&pb, ECHO_HOSTNAME).unwrap();
    let check = |name: &str| -> Result<(), String> {
        let set = lab.exec_with_input(
            "h1",
            "python3 -c 'import socket, sys; socket.sethostname(sys.stdin.buffer.read())'",
            name.as_bytes(),
        );
        if !set.status.success() {
            return Err(format!(
                "sethostname {name:?}: {}",
                String::from_utf8_lossy(&set.stderr)
            ));
        }
        let arg = format!("expected=[{name}]");
        let doc = lab.kfix_json(&["check", s(&pb), "-e", &arg], None);
        if doc["checks"][0]["hosts"][0]["status"] != "problem" {
            return Err(format!("{name:?} did not come back verbatim: {doc:#}"));
        }
        if lab.exec("h1", "test -e /tmp/kfix-pwned").status.code() != Some(1) {
            return Err(format!("{name:?} ran something"));
        }
        Ok(())
    };
    for name in [
        "$(touch /tmp/kfix-pwned)",
        "`touch /tmp/kfix-pwned`",
        "h1; touch /tmp/kfix-pwned",
        "-rf",
        "a'b\"c",
        "two\nlines",
        "trailing\n",
        " spaced ",
        "ünïcödé-€",
        "{{ 7 * 7 }}",
    ] {
        check(name).unwrap();
    }
    let mut runner = TestRunner::new(Config {
        cases: 16,
        ..Config::default()
    });
    runner
        .run(&"[^\u{0}]{1,16}", |name| {
            check(&name).map_err(proptest::test_runner::TestCaseError::fail)
        })
        .unwrap();
    lab.sh("h1", "hostname h1");
}

/// Property: any `-e` value comes back from a remote probe byte for byte and runs
/// nothing (one lab host for all cases, one kfix check per case).
#[test]
fn any_extra_var_is_echoed_back_verbatim() {
    if !require_root() {
        return;
    }
    use proptest::test_runner::{Config, TestRunner};
    let lab = Lab::up(1);
    let pb = lab.dir.join("echo.yaml");
    std::fs::write(&pb, ECHO).unwrap();
    let mut runner = TestRunner::new(Config {
        cases: 24,
        ..Config::default()
    });
    let values = "[^\\s\u{0}]([^\u{0}]{0,30}[^\\s\u{0}])?";
    runner
        .run(&values, |v| {
            let arg = format!("v={v}");
            let doc = lab.kfix_json(&["check", s(&pb), "-e", &arg], None);
            proptest::prop_assert_eq!(
                &doc["checks"][0]["hosts"][0]["status"],
                "problem",
                "{:?} did not come back verbatim: {:#}",
                v,
                doc
            );
            proptest::prop_assert_eq!(
                lab.exec("h1", "test -e /tmp/kfix-pwned").status.code(),
                Some(1)
            );
            Ok(())
        })
        .unwrap();
}

/// Ansible's connection flags: `-u USER` and `--private-key FILE` are the defaults for
/// hosts whose inventory names none (the inventory's `ansible_user` wins, as in
/// Ansible); `-C`/`--check` is `--dry-run`, `-f` is `--forks`, `--diff` is accepted.
#[test]
fn ansible_connection_flags_reach_ssh() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(2);
    // An ssh_config without the lab's key or user: only the flags can supply them.
    let bare = lab.dir.join("bare_ssh_config");
    let config = std::fs::read_to_string(lab.ssh_config()).unwrap();
    let kept: String = config
        .lines()
        .filter(|l| {
            !l.trim_start().starts_with("IdentityFile") && !l.trim_start().starts_with("User ")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&bare, kept).unwrap();
    let inv = lab.dir.join("flags.ini");
    std::fs::write(
        &inv,
        format!(
            "h1 ansible_host={}\nh2 ansible_host={} ansible_user=root\n",
            lab.ip("h1"),
            lab.ip("h2")
        ),
    )
    .unwrap();
    let pb = lab.dir.join("whoami.yaml");
    std::fs::write(
        &pb,
        "id: whoami\ntitle: Who am I\nremedy: nothing to do\ndetect:\n  - name: the login user\n    command: [id, -un]\n    matches: '^[a-z]+$'\n",
    )
    .unwrap();
    let key = lab.identity();
    let check = |extra: &[&str]| {
        let mut args = vec![
            "check",
            s(&pb),
            "-i",
            s(&inv),
            "--ssh-config",
            s(&bare),
            "--output",
            "json",
        ];
        args.extend(extra);
        json(&lab.kfix(&args))
    };
    let who = |doc: &Value, h: &str| {
        host(&doc["checks"][0], h)["reason"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    // No key anywhere: neither host can log in.
    let none = check(&["-u", "kfixop"]);
    assert_eq!(
        host(&none["checks"][0], "h1")["status"],
        "unreachable",
        "{none:#}"
    );
    // -u and --private-key: h1 logs in as kfixop; h2's inventory user (root) wins.
    let doc = check(&["-u", "kfixop", "--private-key", s(&key), "-f", "1"]);
    assert!(who(&doc, "h1").contains("`kfixop`"), "{doc:#}");
    assert!(who(&doc, "h2").contains("`root`"), "{doc:#}");
    // -C / --check are --dry-run; --diff is accepted.
    for flag in ["-C", "--check"] {
        let out = lab.kfix(&[
            "run",
            "persist-ip-forward",
            "-i",
            s(&inv),
            "--ssh-config",
            s(&bare),
            "-u",
            "root",
            "--private-key",
            s(&key),
            flag,
            "--diff",
            "--output",
            "json",
        ]);
        let doc = json(&out);
        assert_eq!(doc["dry_run"], true, "{flag}: {doc:#}");
    }
}

/// `kfix completions bash` is a script bash's `complete` runs: it completes
/// subcommands and a subcommand's flags; zsh's and fish's scripts are made too; `kfix
/// man` is a roff page with every subcommand.
#[test]
fn completions_and_man_page() {
    let out = kfix_plain(&["completions", "bash"]);
    assert_eq!(out.status.code(), Some(0));
    let dir = std::env::temp_dir().join(format!("kfix-compl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("kfix.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    let complete = |words: &str| {
        let words: Vec<&str> = words.split(' ').collect();
        let line = format!(
            "source {}; complete -p kfix >/dev/null || exit 9; COMP_WORDS=({}); COMP_CWORD={}; COMP_LINE='{}'; COMP_POINT=${{#COMP_LINE}}; _kfix kfix '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display(),
            words
                .iter()
                .map(|w| format!("'{w}'"))
                .collect::<Vec<_>>()
                .join(" "),
            words.len() - 1,
            words.join(" "),
            words[words.len() - 1],
            words[words.len() - 2],
        );
        let out = std::process::Command::new("bash")
            .args(["-c", &line])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let subs = complete("kfix ro");
    assert_eq!(subs.trim(), "rollback", "{subs}");
    let flags = complete("kfix run --dry");
    assert!(flags.lines().any(|l| l == "--dry-run"), "{flags}");
    let flags = complete("kfix check --pri");
    assert!(flags.lines().any(|l| l == "--private-key"), "{flags}");
    for shell in ["zsh", "fish"] {
        let out = kfix_plain(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("rollback"),
            "{shell}"
        );
    }
    let out = kfix_plain(&["man"]);
    assert_eq!(out.status.code(), Some(0));
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        page.contains(".TH kfix 1") && page.contains(".SH NAME"),
        "{page}"
    );
    for sub in ["run", "check", "rollback", "serve", "completions"] {
        assert!(
            page.contains(&format!("kfix\\-{sub}")),
            "man page lists {sub}"
        );
    }
}

/// kubespray's bastion set-up: a host whose sshd takes connections only from the
/// bastion, with `ansible_ssh_common_args='-o ProxyJump=root@BASTION'`, is planned,
/// applied and rolled back through the bastion (the journal keeps the jump); without
/// it, it is unreachable. Other ssh options, and passwords, are refused before any
/// host is contacted, never dropped.
#[test]
fn a_host_behind_a_bastion_is_reached_through_proxyjump() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(2);
    let bastion = lab.ip("h1");
    lab.flannel(&[], &["h2"]);
    lab.sh("h2", "sysctl -qw net.ipv4.ip_forward=0");
    lab.write_file("h2", "/etc/sysctl.conf", "net.ipv4.ip_forward = 0\n");
    lab.sh(
        "h2",
        &format!(
            "iptables -I INPUT -p tcp --dport 22 ! -s {bastion} -j REJECT --reject-with tcp-reset"
        ),
    );
    let base = std::fs::read_to_string(lab.inventory()).unwrap();
    let inventory = |name: &str, extra: &str| {
        let text: String = base
            .lines()
            .map(|l| {
                if l.starts_with("h2 ") {
                    format!("{l} {extra}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        let p = lab.dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let cfg = lab.ssh_config();
    let run = |inv: &std::path::Path, extra: &[&str]| {
        let mut a = vec![
            "run",
            "persist-ip-forward",
            "-i",
            inv.to_str().unwrap(),
            "--ssh-config",
            cfg.to_str().unwrap(),
            "--limit",
            "h2",
            "--output",
            "json",
        ];
        a.extend_from_slice(extra);
        lab.kfix(&a)
    };
    let direct = inventory("direct.ini", "");
    let doc = json(&run(&direct, &["--dry-run"]));
    assert_eq!(host(&doc, "h2")["status"], "unreachable", "{doc:#}");
    let before = lab.snapshot("h2");
    let jumped = inventory(
        "jump.ini",
        &format!("ansible_ssh_common_args='-o ProxyJump=root@{bastion}'"),
    );
    let doc = json(&run(&jumped, &["--yes"]));
    assert_eq!(host(&doc, "h2")["status"], "changed", "{doc:#}");
    assert_eq!(
        lab.sh("h2", "cat /proc/sys/net/ipv4/ip_forward").trim(),
        "1"
    );
    let id = doc["run_id"].as_str().unwrap();
    let rb = json(&lab.kfix(&["rollback", id, "--yes", "--output", "json"]));
    assert_eq!(host(&rb, "h2")["status"], "rolled_back", "{rb:#}");
    assert_eq!(
        lab.snapshot("h2"),
        before,
        "rolled back through the bastion"
    );
    // `-J` works as well.
    let dash_j = inventory(
        "j.ini",
        &format!("ansible_ssh_extra_args='-J root@{bastion}'"),
    );
    let doc = json(&run(&dash_j, &["--dry-run"]));
    assert_eq!(host(&doc, "h2")["status"], "would_change", "{doc:#}");
    // Anything else in those variables, and a password, is an error naming it.
    for (name, extra, want) in [
        (
            "weak.ini",
            "ansible_ssh_common_args='-o StrictHostKeyChecking=no'",
            "holds `-oStrictHostKeyChecking=no`",
        ),
        (
            "pass.ini",
            "ansible_become_password=secret123",
            "`ansible_become_password` is set, and kfix types no passwords",
        ),
    ] {
        let inv = inventory(name, extra);
        let out = run(&inv, &["--dry-run"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{err}");
        assert!(err.contains(want), "{err}");
        assert!(err.contains("hint:"), "{err}");
    }
}
