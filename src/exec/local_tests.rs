//! exec's assessment over the local transport: real commands on this machine, reading
//! only files in a temporary directory, so the executor's decisions (skip, healthy,
//! would change, the planned diff, read-only planning) are tested in seconds without a
//! lab. The lab tests (tests/*_e2e.rs) stay the end-to-end proof of apply and rollback.

use super::*;

const PLAYBOOK: &str = r#"
id: t-conf
title: keep conf right
summary: a test playbook over one file in a directory the test owns
severity: warning
source: exec unit tests
vars:
  dir:
    description: the directory
preconditions:
  - name: the directory is there
    path: "{{ dir }}"
detect:
  - name: conf does not say a=1
    file: "{{ dir }}/conf"
    not_equals: "a=1\n"
steps:
  - id: conf
    name: write conf
    file:
      path: "{{ dir }}/conf"
      content: "a=1\n"
verify:
  - name: conf says a=1
    file: "{{ dir }}/conf"
    equals: "a=1\n"
"#;

fn settings(dir: &std::path::Path) -> Arc<RunSettings> {
    let mut extra_vars = BTreeMap::new();
    extra_vars.insert(
        "dir".to_string(),
        serde_json::Value::from(dir.display().to_string()),
    );
    let config = RunConfig {
        forks: 2,
        ssh: SshOptions {
            config_file: None,
            connect_timeout: Duration::from_secs(5),
            control_dir: dir.join("ctl"),
            accept_new_host_keys: false,
            handshakes: Default::default(),
        },
        command_timeout: Duration::from_secs(20),
        extra_vars,
        secret_vars: Default::default(),
        inventory: Arc::new(crate::inventory::Inventory::localhost()),
    };
    Arc::new(RunSettings::new(Arc::new(config), "20261205-000000-local"))
}

/// The local host's report for the test playbook over `dir`, and the events sent.
async fn assess(dir: &std::path::Path) -> (HostReport, Vec<Event>) {
    let pb = Arc::new(
        crate::playbook::parse(std::path::Path::new("t-conf.yaml"), PLAYBOOK).expect("parses"),
    );
    let s = settings(dir);
    let hosts = s.config.inventory.hosts.clone();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let planned = plan_all(pb, hosts, s, false, tx).await;
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    let mut reports = finish(planned).await;
    assert_eq!(reports.len(), 1);
    (reports.remove(0), events)
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "kfix-exec-{name}-{}-{}",
        std::process::id(),
        crate::journal::now_unix()
    ));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

#[tokio::test]
async fn a_wrong_file_would_change_with_its_diff_and_planning_changes_nothing() {
    let dir = temp_dir("wrong");
    std::fs::write(dir.join("conf"), "a=0\n").expect("write");
    let (r, events) = assess(&dir).await;
    assert_eq!(r.status, Status::WouldChange, "{r:?}");
    assert_eq!(r.steps.len(), 1);
    let step = &r.steps[0];
    assert_eq!(step.verdict, Verdict::Change, "{step:?}");
    assert!(
        step.diff.contains("-a=0") && step.diff.contains("+a=1"),
        "{}",
        step.diff
    );
    assert!(!step.commands.is_empty(), "apply's commands are planned");
    // Planning is read-only: the file is as it was.
    assert_eq!(
        std::fs::read_to_string(dir.join("conf")).expect("read"),
        "a=0\n"
    );
    // The reporter hears of the host: a phase, then its outcome.
    assert!(
        events.iter().any(|e| matches!(e, Event::Phase { .. })),
        "{events:?}"
    );
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[tokio::test]
async fn the_healthy_twin_is_healthy_and_plans_no_command() {
    let dir = temp_dir("right");
    std::fs::write(dir.join("conf"), "a=1\n").expect("write");
    let (r, _) = assess(&dir).await;
    assert_eq!(r.status, Status::Healthy, "{r:?}");
    assert!(
        r.steps.iter().all(|s| s.commands.is_empty()),
        "nothing planned: {:?}",
        r.steps
    );
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[tokio::test]
async fn a_host_failing_a_precondition_is_skipped_with_the_reason() {
    let dir = temp_dir("gone");
    let missing = dir.join("not-there");
    let (r, _) = assess(&missing).await;
    assert_eq!(r.status, Status::Skipped, "{r:?}");
    let why = r.reason.as_deref().unwrap_or("");
    assert!(why.contains("the directory is there"), "{why}");
    assert!(!missing.exists(), "nothing was created");
    std::fs::remove_dir_all(&dir).expect("clean up");
}
