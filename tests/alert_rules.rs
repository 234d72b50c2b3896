//! `kfix docs --alert-rules`: the rule file passes `promtool check rules`, and
//! `promtool test rules` shows each alert firing for exactly the node whose
//! `kfix_problem` metric is 1, with the runbook_url of its playbook's page.

use std::process::Command;

fn kfix(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kfix"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

fn promtool() -> bool {
    let ok = Command::new("promtool").arg("--version").output().is_ok();
    if !ok {
        // CI installs it (tests/lab/install-deps.sh); a developer machine may not have it.
        assert!(
            std::env::var_os("CI").is_none() && unsafe { libc::geteuid() } != 0,
            "promtool is missing (tests/lab/install-deps.sh installs Debian's prometheus)"
        );
    }
    ok
}

#[test]
fn rules_need_a_base_url() {
    let out = kfix(&["docs", "--alert-rules"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--runbook-base-url"));
}

#[test]
fn rules_fire_for_the_right_node_with_their_runbook() {
    if !promtool() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("kfix-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let base = "https://runbooks.example.com/kfix";
    let out = kfix(&[
        "docs",
        "--alert-rules",
        "--runbook-base-url",
        base,
        "--for",
        "5m",
        "-i",
        "inventory/prod.ini",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rules = dir.join("kfix-rules.yml");
    std::fs::write(&rules, &out.stdout).unwrap();
    let check = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );

    let test = format!(
        r#"rule_files: ["{rules}"]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'kfix_problem{{node="node-1",playbook="persist-ip-forward",instance="ctl:9100",job="node"}}'
        values: '1x30'
      - series: 'kfix_problem{{node="node-2",playbook="persist-ip-forward",instance="ctl:9100",job="node"}}'
        values: '0x30'
      - series: 'kfix_problem{{node="node-2",playbook="service-masquerade",instance="ctl:9100",job="node"}}'
        values: '0 0 1x30'
      - series: 'kfix_check_timestamp_seconds{{instance="ctl:9100",job="node"}}'
        values: '0x200'
    alert_rule_test:
      - eval_time: 4m
        alertname: KfixNodeIpForwardingDisabled
        exp_alerts: []
      - eval_time: 10m
        alertname: KfixNodeIpForwardingDisabled
        exp_alerts:
          - exp_labels: {{node: node-1, severity: critical}}
            exp_annotations:
              summary: "node-1: Turn IP forwarding on, now and after the next network restart or boot"
              description: "{desc} Check: kfix check persist-ip-forward -i inventory/prod.ini --limit node-1"
              runbook_url: "{base}/persist-ip-forward.md"
              kfix_playbook: persist-ip-forward
      - eval_time: 10m
        alertname: KfixCheckStale
        exp_alerts: []
      - eval_time: 3h
        alertname: KfixCheckStale
        exp_alerts:
          - exp_labels: {{instance: "ctl:9100", severity: warning}}
            exp_annotations:
              summary: "kfix check --all has not refreshed its metrics for 2 hours"
              description: "The textfile kfix check --all --output prom writes is stale: kfix's alerts above can no longer fire."
              runbook_url: "{base}/README.md"
"#,
        rules = rules.display(),
        desc = ip_forward_description(),
    );
    let tests = dir.join("kfix-rules.test.yml");
    std::fs::write(&tests, test).unwrap();
    let run = Command::new("promtool")
        .args(["test", "rules"])
        .arg(&tests)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "{text}");
    // The masquerade alert has its own rule: node-2 fires it, not the ip_forward one.
    let rules_text = String::from_utf8_lossy(&out.stdout);
    assert!(rules_text.contains("kfix_problem{playbook=\"service-masquerade\"}"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// persist-ip-forward's summary on one line, as the rule's description has it (whole).
fn ip_forward_description() -> String {
    let src = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/playbooks/persist-ip-forward.yaml"
    ))
    .unwrap();
    let start = src.find("summary: |").unwrap() + "summary: |".len();
    let body: Vec<&str> = src[start..]
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .collect();
    body.iter()
        .flat_map(|l| l.split_whitespace())
        .collect::<Vec<_>>()
        .join(" ")
}
