//! exec's assessment and apply over the local transport: real commands on this machine,
//! touching only files in a temporary directory (the host lock's too), so the
//! executor's decisions (skip, healthy, would change, the planned diff, read-only
//! planning; the lock, the re-check, verification and the rollback) are tested in
//! seconds without a lab. The lab tests (tests/*_e2e.rs) stay the end-to-end proof.

use super::*;
use crate::transport::tests::lock_free;

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
            host_lock_dir: dir.join("lock").display().to_string(),
        },
        command_timeout: Duration::from_secs(20),
        extra_vars,
        secret_vars: Default::default(),
        inventory: Arc::new(crate::inventory::Inventory::localhost()),
    };
    Arc::new(RunSettings::new(Arc::new(config), "20261205-000000-local"))
}

fn playbook(text: &str) -> Arc<Playbook> {
    Arc::new(crate::playbook::parse(std::path::Path::new("t-conf.yaml"), text).expect("parses"))
}

/// The local host's report for the test playbook over `dir`, and the events sent.
async fn assess(dir: &std::path::Path) -> (HostReport, Vec<Event>) {
    let s = settings(dir);
    let hosts = s.config.inventory.hosts.clone();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let planned = plan_all(playbook(PLAYBOOK), hosts, s, false, tx).await;
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    let mut reports = finish(planned).await;
    assert_eq!(reports.len(), 1);
    (reports.remove(0), events)
}

/// Plan `text` over `dir`, run `between` (the world moving while the operator reads
/// the plan), then apply: the local host's report.
async fn apply(dir: &std::path::Path, text: &str, between: impl FnOnce()) -> HostReport {
    let pb = playbook(text);
    let s = settings(dir);
    let hosts = s.config.inventory.hosts.clone();
    let (tx, _rx) = mpsc::unbounded_channel();
    let planned = plan_all(pb.clone(), hosts, s.clone(), false, tx.clone()).await;
    assert_eq!(planned[0].report.status, Status::WouldChange);
    between();
    let (mut reports, _) = apply_all(pb, planned, s, tx).await;
    assert_eq!(reports.len(), 1);
    reports.remove(0)
}

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).expect("read")
}

/// Is the host lock in `dir` free (nobody holds it)?
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

#[tokio::test]
async fn apply_changes_what_was_planned_verifies_and_lets_the_lock_go() {
    let dir = temp_dir("apply");
    std::fs::write(dir.join("conf"), "a=0\n").expect("write");
    let r = apply(&dir, PLAYBOOK, || {}).await;
    assert_eq!(r.status, Status::Changed, "{r:?}");
    assert_eq!(read(&dir.join("conf")), "a=1\n");
    // The lock was taken where the settings say, and given up with its record cleared.
    assert!(
        dir.join("lock/lock").exists(),
        "the lock lived in the test's directory"
    );
    assert!(lock_free(&dir.join("lock")), "released");
    assert_eq!(read(&dir.join("lock/owner")), "");
    // Idempotent: the fixed host is healthy.
    let (again, _) = assess(&dir).await;
    assert_eq!(again.status, Status::Healthy, "{again:?}");
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[tokio::test]
async fn a_failed_verification_rolls_the_change_back() {
    let dir = temp_dir("verify");
    std::fs::write(dir.join("conf"), "a=0\n").expect("write");
    // The step writes a=1; verification wants a=2: it fails, and the undo restores a=0.
    let never = PLAYBOOK.replace("    equals: \"a=1\\n\"", "    equals: \"a=2\\n\"");
    assert_ne!(never, PLAYBOOK);
    let r = apply(&dir, &never, || {}).await;
    assert_eq!(r.status, Status::Failed, "{r:?}");
    let why = r.reason.as_deref().unwrap_or("");
    assert!(why.contains("rolled back"), "{why}");
    assert_eq!(read(&dir.join("conf")), "a=0\n", "restored byte for byte");
    assert!(lock_free(&dir.join("lock")));
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[tokio::test]
async fn a_host_that_changed_since_planning_is_left_alone() {
    let dir = temp_dir("drift");
    let conf = dir.join("conf");
    std::fs::write(&conf, "a=0\n").expect("write");
    let r = apply(&dir, PLAYBOOK, || {
        std::fs::write(&conf, "a=5\n").expect("someone else's change");
    })
    .await;
    assert_eq!(r.status, Status::Failed, "{r:?}");
    let why = r.reason.as_deref().unwrap_or("");
    assert!(why.contains("changed since it was planned"), "{why}");
    assert_eq!(read(&conf), "a=5\n", "the other change stands");
    assert!(lock_free(&dir.join("lock")));
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[tokio::test]
async fn a_host_locked_by_another_run_is_not_touched_and_says_by_whom() {
    let dir = temp_dir("locked");
    std::fs::write(dir.join("conf"), "a=0\n").expect("write");
    let locks = dir.join("lock");
    std::fs::create_dir(&locks).expect("lock dir");
    std::fs::write(locks.join("owner"), "run OTHER by ops (pid 1)\n").expect("owner");
    // Another run holds the lock: flock(1) of this test's own, holding it (not the
    // shell it starts) until the shell's input closes.
    let mut other = std::process::Command::new("flock")
        .args(["-o", "-w", "10", &locks.join("lock").display().to_string()])
        .args(["sh", "-c", "echo held; read -r _; :"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("flock");
    let mut said = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(other.stdout.take().expect("stdout")),
        &mut said,
    )
    .expect("read");
    assert_eq!(said, "held\n", "the stand-in run took the lock");
    let r = apply(&dir, PLAYBOOK, || {}).await;
    drop(other.stdin.take());
    assert!(other.wait().expect("reap").success());
    assert!(lock_free(&dir.join("lock")));
    assert_eq!(r.status, Status::Failed, "{r:?}");
    let why = r.reason.as_deref().unwrap_or("");
    assert!(
        why.contains("locked by another kfix run (run OTHER by ops (pid 1))"),
        "{why}"
    );
    assert_eq!(read(&dir.join("conf")), "a=0\n", "nothing applied");
    std::fs::remove_dir_all(&dir).expect("clean up");
}
