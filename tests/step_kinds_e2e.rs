//! Every step kind applied and undone on a real lab host: one playbook that uses the
//! kinds the F1–F6 playbooks leave out (file, iptables policy and insert, link present,
//! service, command with undo, file_lines, json create), run for real and then with a
//! failing verification, which must put the host back exactly as it was.

mod common;

use common::{Lab, json, require_root};
use serde_json::Value;

const ALL_KINDS: &str = r#"id: all-kinds
title: Every step kind once
vars:
  motd: "hello from kfix"
steps:
  - id: file
    file: {path: /etc/kfix-demo.conf, content: "motd={{ motd }}\n", mode: "0600"}
  - id: lines
    file_lines:
      path: /etc/kfix-lines.conf
      create: true
      lines:
        - {line: "extra=1"}
        - {line: "motd=[{{ motd }}]", regexp: '^motd='}
  - id: replace
    file_lines:
      path: /etc/kfix-replace.conf
      lines:
        - {regexp: '(-s )\S+', replace: '${1}overlay2'}
        - {regexp: '^#', state: absent}
  - id: json
    json: {path: /etc/kfix-demo.json, set: {a.b: 1, c: "{{ motd }}"}}
  - id: policy
    iptables: {table: filter, chain: FORWARD, policy: DROP}
  - id: insert
    iptables: {table: filter, chain: INPUT, rule: "-s 10.99.0.0/16 -j ACCEPT", insert: true}
  - id: dummy
    link: {name: kfix0, state: present, kind: bridge}
  - id: route
    route: {dest: 10.98.0.0/16, dev: kfix0, state: present}
  - id: sysctl
    sysctl: {key: net.ipv4.conf.all.rp_filter, value: "2", persist: false}
  - id: sysctl-dotted-name
    sysctl: {key: net/ipv4/conf/kfix.7/rp_filter, value: "2", file: /etc/sysctl.d/60-kfix.conf}
  - id: stop-demo
    service: {name: kfix-demo, state: stopped}
  - id: cmd
    command:
      run: [touch, /etc/kfix-demo.stamp]
      creates: /etc/kfix-demo.stamp
      undo: [rm, -f, /etc/kfix-demo.stamp]
verify:
  - {file: /etc/kfix-lines.conf, matches: '(?m)^motd=\[hello from kfix\]$'}
"#;

const DEMO_INIT: &str = r#"#!/bin/sh
# A tiny SysV service for the service step: a sleep whose pid is kept in /run.
case "$1" in
  start) [ -f /run/kfix-demo.pid ] && kill -0 "$(cat /run/kfix-demo.pid)" 2>/dev/null && exit 0
         setsid sleep 100000 </dev/null >/dev/null 2>&1 & echo $! > /run/kfix-demo.pid ;;
  stop) [ -f /run/kfix-demo.pid ] && kill "$(cat /run/kfix-demo.pid)" 2>/dev/null; rm -f /run/kfix-demo.pid ;;
  status) [ -f /run/kfix-demo.pid ] && kill -0 "$(cat /run/kfix-demo.pid)" 2>/dev/null ;;
esac
"#;

fn run(lab: &Lab, pb: &std::path::Path, host: &str) -> Value {
    json(&lab.kfix_fleet(&[
        "run",
        pb.to_str().unwrap(),
        "--limit",
        host,
        "--yes",
        "--output",
        "json",
    ]))
}

#[test]
fn every_step_kind_applies_and_undoes() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(2);
    for h in ["h1", "h2"] {
        lab.write_file(h, "/etc/init.d/kfix-demo", DEMO_INIT);
        lab.sh(
            h,
            "chmod 755 /etc/init.d/kfix-demo && service kfix-demo start && \
             ip link add kfix.7 type bridge",
        );
        lab.write_file(
            h,
            "/etc/kfix-replace.conf",
            "# drop me\nOPTS=\"-s devicemapper --debug\"\n",
        );
    }
    let pb = lab.dir.join("all-kinds.yaml");
    std::fs::write(&pb, ALL_KINDS).unwrap();

    let doc = run(&lab, &pb, "h1");
    let h = &doc["hosts"][0];
    assert_eq!(h["status"], "changed", "{doc:#}");
    for s in h["steps"].as_array().unwrap() {
        assert_eq!(s["status"], "applied", "{s:#}");
    }
    assert_eq!(
        lab.sh("h1", "cat /etc/kfix-demo.conf"),
        "motd=hello from kfix\n"
    );
    assert_eq!(
        lab.sh("h1", "cat /etc/kfix-lines.conf"),
        "extra=1\nmotd=[hello from kfix]\n"
    );
    assert_eq!(
        lab.sh("h1", "cat /etc/kfix-replace.conf"),
        "OPTS=\"-s overlay2 --debug\"\n"
    );
    assert_eq!(lab.sh("h1", "stat -c %a /etc/kfix-demo.conf").trim(), "600");
    assert_eq!(
        lab.sh("h1", "cat /etc/kfix-demo.json"),
        "{\n  \"a\": {\n    \"b\": 1\n  },\n  \"c\": \"hello from kfix\"\n}\n"
    );
    assert_eq!(
        lab.sh("h1", "iptables -S FORWARD | head -1").trim(),
        "-P FORWARD DROP"
    );
    assert_eq!(
        lab.sh("h1", "iptables -S INPUT | sed -n 2p").trim(),
        "-A INPUT -s 10.99.0.0/16 -j ACCEPT"
    );
    assert!(lab.sh("h1", "ip -o link show kfix0").contains("UP"));
    assert!(
        lab.sh("h1", "ip route show 10.98.0.0/16")
            .contains("dev kfix0")
    );
    assert_eq!(
        lab.sh("h1", "cat /proc/sys/net/ipv4/conf/all/rp_filter")
            .trim(),
        "2"
    );
    // A dot in an interface's name: its own key, written as sysctl(8) reads it back.
    assert_eq!(
        lab.sh(
            "h1",
            "cat /proc/sys/net/ipv4/conf/kfix.7/rp_filter && cat /etc/sysctl.d/60-kfix.conf"
        ),
        "2\nnet.ipv4.conf.kfix/7.rp_filter = 2\n"
    );
    assert_eq!(
        lab.sh("h1", "sysctl -n net.ipv4.conf.kfix/7.rp_filter")
            .trim(),
        "2"
    );
    assert_eq!(
        lab.exec("h1", "service kfix-demo status").status.code(),
        Some(1)
    );
    assert_eq!(
        lab.exec("h1", "test -e /etc/kfix-demo.stamp").status.code(),
        Some(0)
    );
    // Nothing left to do the second time.
    let again = run(&lab, &pb, "h1");
    assert_eq!(again["hosts"][0]["status"], "healthy", "{again:#}");

    // On h2, a verification that fails: every kind is undone, the host is as before.
    let failing = lab.dir.join("all-kinds-fail.yaml");
    std::fs::write(
        &failing,
        ALL_KINDS.replace("motd=\\[hello from kfix\\]", "never"),
    )
    .unwrap();
    let before = lab.snapshot("h2");
    let doc = run(&lab, &failing, "h2");
    let h = &doc["hosts"][0];
    assert_eq!(h["status"], "failed", "{doc:#}");
    for s in h["steps"].as_array().unwrap() {
        assert_eq!(s["status"], "rolled_back", "{s:#}");
    }
    let after = lab.snapshot("h2");
    if after != before {
        panic!(
            "{}",
            similar::TextDiff::from_lines(&before, &after).unified_diff()
        );
    }
    assert_eq!(
        lab.exec("h2", "service kfix-demo status").status.code(),
        Some(0),
        "service started again"
    );
}

#[test]
fn a_hung_command_times_out_and_the_host_is_rolled_back() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(1);
    let pb = lab.dir.join("hang.yaml");
    std::fs::write(
        &pb,
        "id: hang\ntitle: Hang\nsteps:\n  - id: mark\n    file: {path: /etc/kfix-mark, content: x}\n  - id: hang\n    irreversible: a test\n    command: {run: [sleep, '30'], timeout: 2}\n",
    )
    .unwrap();
    let before = lab.snapshot("h1");
    let started = std::time::Instant::now();
    let doc = run(&lab, &pb, "h1");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    let h = &doc["hosts"][0];
    assert!(
        h["reason"].as_str().unwrap().contains("timed out after 2s"),
        "{doc:#}"
    );
    assert_eq!(h["steps"][0]["status"], "rolled_back", "{doc:#}");
    assert_eq!(lab.snapshot("h1"), before);
}

#[test]
fn a_host_over_its_host_timeout_is_rolled_back_and_the_rest_goes_on() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(2);
    // h1 hangs in the command (its marker file is missing); h2 already has it.
    lab.write_file("h2", "/etc/kfix-go", "");
    let pb = lab.dir.join("maybe-hang.yaml");
    std::fs::write(
        &pb,
        "id: maybe-hang\ntitle: Maybe hang\nsteps:\n  - id: mark\n    file: {path: /etc/kfix-mark, content: x}\n  - id: wait\n    irreversible: a test\n    command: {run: [sh, -c, 'test -e /etc/kfix-go || sleep 60'], creates: /etc/kfix-done}\n",
    )
    .unwrap();
    let before = lab.snapshot("h1");
    let started = std::time::Instant::now();
    let out = lab.kfix(&[
        "run",
        pb.to_str().unwrap(),
        "-i",
        lab.inventory().to_str().unwrap(),
        "--ssh-config",
        lab.ssh_config().to_str().unwrap(),
        "--host-timeout",
        "2s",
        "--max-fail",
        "1",
        "--yes",
        "--output",
        "json",
    ]);
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let h = |n: &str| common::host(&doc, n);
    assert_eq!(h("h1")["status"], "failed", "{doc:#}");
    assert!(
        h("h1")["reason"].as_str().unwrap().contains("timed out"),
        "{doc:#}"
    );
    assert_eq!(h("h2")["status"], "changed", "{doc:#}");
    assert_eq!(lab.snapshot("h1"), before);
}

/// A full disk: the write fails before changing anything; the original file is intact
/// and no temp file is left behind.
#[test]
fn a_full_disk_leaves_the_original_untouched() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(1);
    // A tiny tmpfs over the edited directory, in the host's own mount namespace (mode
    // 755 as a configuration directory is: a tmpfs root is 1777, which kfix refuses).
    lab.sh(
        "h1",
        "mkdir -p /srv/tiny && mount -t tmpfs -o size=16k,mode=755 tmpfs /srv/tiny && \
         head -c 6000 /dev/zero | tr '\\0' a > /srv/tiny/app.conf && head -c 6000 /dev/zero > /srv/tiny/filler",
    );
    let original = lab.sh(
        "h1",
        "sha256sum /srv/tiny/app.conf; stat -c '%a %U' /srv/tiny/app.conf",
    );
    let pb = lab.dir.join("big.yaml");
    let big = "b".repeat(20_000);
    std::fs::write(
        &pb,
        format!("id: big\ntitle: Big\nsteps:\n  - id: write\n    file: {{path: /srv/tiny/app.conf, content: \"{big}\\n\"}}\n"),
    )
    .unwrap();
    let out = lab.kfix(&[
        "run",
        pb.to_str().unwrap(),
        "-i",
        lab.inventory().to_str().unwrap(),
        "--ssh-config",
        lab.ssh_config().to_str().unwrap(),
        "--yes",
        "--output",
        "json",
    ]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let h = &doc["hosts"][0];
    assert_eq!(h["status"], "failed", "{doc:#}");
    assert!(
        h["reason"]
            .as_str()
            .unwrap()
            .contains("No space left on device"),
        "{doc:#}"
    );
    assert!(
        h["reason"]
            .as_str()
            .unwrap()
            .ends_with("nothing had been applied"),
        "{doc:#}"
    );
    assert_eq!(
        lab.sh(
            "h1",
            "sha256sum /srv/tiny/app.conf; stat -c '%a %U' /srv/tiny/app.conf"
        ),
        original
    );
    assert_eq!(
        lab.sh("h1", "ls -A /srv/tiny"),
        "app.conf\nfiller\n",
        "no temp file left"
    );
}

/// A systemd unit for the service step: a sleep, optionally failing its start the way a
/// unit whose config check fails does (`ExecStartPre=/bin/false`).
fn unit(desc: &str, start_fails: bool) -> String {
    let pre = if start_fails {
        "ExecStartPre=/bin/false\n"
    } else {
        ""
    };
    format!(
        "[Unit]\nDescription={desc}\n[Service]\n{pre}ExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n"
    )
}

/// `systemctl is-active` / `is-enabled` / MainPID of each unit, one line each.
fn units_state(lab: &Lab, host: &str, units: &[&str]) -> String {
    let mut out = String::new();
    for u in units {
        out.push_str(&lab.sh(
            host,
            &format!(
                "echo {u} $(systemctl is-active {u}) $(systemctl is-enabled {u}) $(systemctl show -p MainPID --value {u})"
            ),
        ));
    }
    out
}

const SERVICES: &str = r#"id: services
title: The service step on systemd
steps:
  - id: stop-a
    service: {name: kfix-a, state: stopped}
  - id: start-b
    service: {name: kfix-b, state: started}
  - id: restart-c
    service: {name: kfix-c, state: restarted}
  - id: restart-d
    service: {name: kfix-d, state: restarted}
  - id: restore-a
    service: {name: kfix-a, state: restored}
  - id: missing
    service: {name: kfix-missing, state: stopped, missing_ok: true}
verify:
  - name: b runs
    command: [systemctl, is-active, kfix-b]
"#;

/// The service step against real systemd units on a systemd lab host (systemctl, not
/// SysV): stop, start, restart (of a running and of a stopped unit), restored, a missing
/// unit with missing_ok; enablement is never changed (the step has no `enabled`).
#[test]
fn the_service_step_drives_real_systemd_units() {
    if !require_root() {
        return;
    }
    let lab = Lab::up_with_systemd(1, &["h1"]);
    for (u, desc) in [
        ("kfix-a", "running, enabled"),
        ("kfix-b", "stopped, disabled"),
        ("kfix-c", "running, disabled"),
        ("kfix-d", "stopped, enabled"),
    ] {
        lab.write_file(
            "h1",
            &format!("/etc/systemd/system/{u}.service"),
            &unit(desc, false),
        );
    }
    lab.sh(
        "h1",
        "systemctl daemon-reload && systemctl enable --now kfix-a && systemctl start kfix-c && systemctl enable kfix-d",
    );
    let units = ["kfix-a", "kfix-b", "kfix-c", "kfix-d"];
    let before = units_state(&lab, "h1", &units);
    let pid = |u: &str| lab.sh("h1", &format!("systemctl show -p MainPID --value {u}"));
    let c_pid = pid("kfix-c");

    let pb = lab.dir.join("services.yaml");
    std::fs::write(&pb, SERVICES).unwrap();
    // Dry-run: every change shown, nothing done.
    let out = lab.kfix(&[
        "run",
        pb.to_str().unwrap(),
        "-i",
        lab.inventory().to_str().unwrap(),
        "--ssh-config",
        lab.ssh_config().to_str().unwrap(),
        "--dry-run",
        "--output",
        "json",
    ]);
    let dry: Value = serde_json::from_slice(&out.stdout).unwrap();
    let steps = dry["hosts"][0]["steps"].as_array().unwrap().clone();
    let verdicts: Vec<&str> = steps
        .iter()
        .map(|s| s["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(
        verdicts,
        [
            "change",
            "change",
            "change",
            "change",
            "change",
            "no_change"
        ],
        "{dry:#}"
    );
    assert!(
        steps[0]["diff"]
            .as_str()
            .unwrap()
            .contains("service kfix-a stopped"),
        "{dry:#}"
    );
    assert!(
        steps[3]["diff"].as_str().unwrap().contains("(started)"),
        "{dry:#}"
    );
    assert_eq!(
        units_state(&lab, "h1", &units),
        before,
        "the dry-run changed a unit"
    );

    let doc = run(&lab, &pb, "h1");
    let h = &doc["hosts"][0];
    assert_eq!(h["status"], "changed", "{doc:#}");
    let statuses: Vec<&str> = h["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            "applied",
            "applied",
            "applied",
            "applied",
            "applied",
            "unchanged"
        ],
        "{doc:#}"
    );
    assert_eq!(
        units_state(&lab, "h1", &units)
            .lines()
            .map(|l| l.rsplit_once(' ').unwrap().0.to_string() + "\n")
            .collect::<String>(),
        "kfix-a active enabled\nkfix-b active disabled\nkfix-c active disabled\nkfix-d active enabled\n"
    );
    assert_ne!(pid("kfix-c"), c_pid, "kfix-c was restarted");
    assert_ne!(
        pid("kfix-a").trim(),
        "0",
        "kfix-a was restored (started again)"
    );
    assert!(
        h["reason"].is_null() || !h["reason"].as_str().unwrap_or("").contains("missing"),
        "{doc:#}"
    );

    // A missing unit without missing_ok: the host fails at planning, nothing is touched.
    let state = units_state(&lab, "h1", &units);
    let missing = lab.dir.join("missing.yaml");
    std::fs::write(
        &missing,
        "id: missing\ntitle: Missing\nsteps:\n  - id: stop-a\n    service: {name: kfix-a, state: stopped}\n  - id: nope\n    service: {name: kfix-nope, state: started}\n",
    )
    .unwrap();
    let doc = run(&lab, &missing, "h1");
    let h = &doc["hosts"][0];
    assert_eq!(h["status"], "failed", "{doc:#}");
    assert!(
        h["reason"]
            .as_str()
            .unwrap()
            .contains("service kfix-nope is not installed"),
        "{doc:#}"
    );
    assert_eq!(units_state(&lab, "h1", &units), state);
}

/// A unit that fails to start fails its step, and the steps before it are undone.
#[test]
fn a_systemd_unit_that_fails_to_start_rolls_back_earlier_steps() {
    if !require_root() {
        return;
    }
    let lab = Lab::up_with_systemd(1, &["h1"]);
    lab.write_file(
        "h1",
        "/etc/systemd/system/kfix-a.service",
        &unit("running", false),
    );
    lab.write_file(
        "h1",
        "/etc/systemd/system/kfix-b.service",
        &unit("stopped", false),
    );
    lab.write_file(
        "h1",
        "/etc/systemd/system/kfix-broken.service",
        &unit("cannot start", true),
    );
    lab.sh("h1", "systemctl daemon-reload && systemctl start kfix-a");
    let pb = lab.dir.join("broken.yaml");
    std::fs::write(
        &pb,
        "id: broken\ntitle: Broken\nsteps:\n  - id: stop-a\n    service: {name: kfix-a, state: stopped}\n  - id: start-b\n    service: {name: kfix-b, state: started}\n  - id: start-broken\n    service: {name: kfix-broken, state: started}\n",
    )
    .unwrap();
    let doc = run(&lab, &pb, "h1");
    let h = &doc["hosts"][0];
    assert_eq!(h["status"], "failed", "{doc:#}");
    assert!(
        h["reason"].as_str().unwrap().contains("kfix-broken"),
        "{doc:#}"
    );
    let statuses: Vec<&str> = h["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses[..2], ["rolled_back", "rolled_back"], "{doc:#}");
    assert_eq!(
        lab.sh(
            "h1",
            "systemctl is-active kfix-a kfix-b kfix-broken || true"
        ),
        "active\ninactive\nfailed\n"
    );
}

/// systemd's start rate limit (docker.service: 3 starts in 60 s) is meant for crash
/// loops: it must not refuse kfix's deliberate starts, nor a rollback's.
#[test]
fn systemd_start_limits_do_not_refuse_deliberate_starts() {
    if !require_root() {
        return;
    }
    let lab = Lab::up_with_systemd(1, &["h1"]);
    lab.write_file(
        "h1",
        "/etc/systemd/system/kfix-limited.service",
        &unit("at most 2 starts a minute", false).replace(
            "[Unit]\n",
            "[Unit]\nStartLimitIntervalSec=60\nStartLimitBurst=2\n",
        ),
    );
    lab.sh(
        "h1",
        "systemctl daemon-reload && systemctl start kfix-limited",
    );
    let pb = lab.dir.join("restart.yaml");
    std::fs::write(
        &pb,
        "id: restart\ntitle: Restart\nsteps:\n  - id: restart\n    service: {name: kfix-limited, state: restarted}\n",
    )
    .unwrap();
    for _ in 0..3 {
        let doc = run(&lab, &pb, "h1");
        assert_eq!(doc["hosts"][0]["status"], "changed", "{doc:#}");
    }
    assert_eq!(lab.sh("h1", "systemctl is-active kfix-limited"), "active\n");
}

/// A `link` probe sees the host's own devices: by name (looked up in the host's
/// /sys/class/net, which the lab mounts in each host's network namespace; the machine's
/// own devices must not show) and by alternative name (only `ip` knows those).
#[test]
fn a_link_probe_finds_the_hosts_devices_by_name_and_by_alternative_name() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(3);
    lab.sh("h1", "ip link add kfixl0 type bridge");
    lab.sh(
        "h2",
        "ip link add kfixl1 type bridge && ip link property add dev kfixl1 altname kfixl0",
    );
    let pb = lab.dir.join("link-probe.yaml");
    std::fs::write(
        &pb,
        r#"id: link-probe
title: link probe
vars:
  dev: {default: kfixl0}
preconditions:
  - name: the device exists
    link: "{{ dev }}"
detect:
  - name: the host has a hostname
    path: /etc/hostname
steps:
  - id: nothing
    command: {run: ["true"], undo: ["true"]}
"#,
    )
    .unwrap();
    let check = |dev: &str| {
        let var = format!("dev={dev}");
        json(&lab.kfix_fleet(&[
            "check",
            pb.to_str().unwrap(),
            "-e",
            &var,
            "--output",
            "json",
        ]))
    };
    let doc = check("kfixl0");
    let status = |doc: &Value, h: &str| common::host(&doc["checks"][0], h)["status"].clone();
    assert_eq!(status(&doc, "h1"), "problem", "by name: {doc:#}");
    assert_eq!(status(&doc, "h2"), "problem", "by altname: {doc:#}");
    assert_eq!(status(&doc, "h3"), "skipped", "absent: {doc:#}");
    // A device of the machine's that no host has must not be found on them (a sysfs of
    // another network namespace would show it); `lo`, on every host, is found.
    let on_hosts: Vec<String> = ["h1", "h2", "h3"]
        .iter()
        .flat_map(|h| {
            lab.sh(h, "ip -o link show | cut -d: -f2 | cut -d@ -f1")
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    let machine_only = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .find(|n| !on_hosts.contains(n));
    if let Some(dev) = machine_only {
        let doc = check(&dev);
        for h in ["h1", "h2", "h3"] {
            assert_eq!(status(&doc, h), "skipped", "{dev}: {doc:#}");
        }
    }
    let doc = check("lo");
    for h in ["h1", "h2", "h3"] {
        assert_eq!(status(&doc, h), "problem", "lo: {doc:#}");
    }
}
