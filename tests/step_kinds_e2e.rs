//! Every step kind applied and undone on a real lab host: one playbook that uses the
//! kinds the F1–F6 playbooks leave out (file, iptables policy and insert, link present,
//! service, command with undo, file_lines, json create), run for real and then with a
//! failing verification, which must put the host back exactly as it was.

mod common;

use common::{Lab, require_root};
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
    let out = lab.kfix(&[
        "run",
        pb.to_str().unwrap(),
        "-i",
        lab.inventory().to_str().unwrap(),
        "--ssh-config",
        lab.ssh_config().to_str().unwrap(),
        "--limit",
        host,
        "--yes",
        "--output",
        "json",
    ]);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
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
            "chmod 755 /etc/init.d/kfix-demo && service kfix-demo start",
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
    let h = |n: &str| {
        doc["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["host"] == n)
            .unwrap()
            .clone()
    };
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
    // A tiny tmpfs over the edited directory, in the host's own mount namespace.
    lab.sh(
        "h1",
        "mkdir -p /srv/tiny && mount -t tmpfs -o size=16k tmpfs /srv/tiny && \
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
