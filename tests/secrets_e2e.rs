//! Secrets on the real lab: a value from `--secret-file` (or a `secret: true` variable)
//! never appears in stdout, JSON, error text, diffs, the journal (stdin payloads decoded
//! too) or any process's command line, on the target or the controller; a command that
//! would carry one as an argument is refused before anything runs; and a rollback that
//! must restore content holding a secret asks for it again and then restores it exactly.

mod common;

use std::time::Duration;

use base64::Engine;
use common::{Lab, require_root};

const SECRET: &str = "kfix-S3cr3t-7d1e";

fn s(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Every process's command line on this machine (lab hosts share its PID namespace, so
/// this is the target's process list and the controller's at once).
fn all_cmdlines() -> Vec<String> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(raw) = std::fs::read(e.path().join("cmdline")) {
            v.push(String::from_utf8_lossy(&raw).replace('\0', " "));
        }
    }
    v
}

/// Everything the state directory holds, with every base64 `stdin` in the journal
/// decoded, as one text.
fn state_text(lab: &Lab) -> String {
    let mut all = String::new();
    let mut stack = vec![lab.dir.join("state")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            for line in text.lines() {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                    collect_stdin(&v, &mut all);
                }
            }
            all.push_str(&text);
        }
    }
    all
}

fn collect_stdin(v: &serde_json::Value, out: &mut String) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                if k == "stdin"
                    && let Some(b) = x.as_str()
                {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(b)
                        .expect("journal stdin is base64");
                    out.push_str(&String::from_utf8_lossy(&bytes));
                    out.push('\n');
                }
                collect_stdin(x, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_stdin(x, out)),
        _ => {}
    }
}

/// What kfix printed, stdout then stderr.
fn both(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const PLAYBOOK: &str = r#"id: secret-use
title: Use a secret without exposing it
vars:
  token: {default: "", description: the API token (give it with --secret-file)}
steps:
  - id: conf
    name: bump the level in a config file that already holds the token
    file_lines:
      path: /etc/kfix-app.conf
      lines:
        - regexp: '^level='
          line: level=2
  - id: token-file
    file: {path: /etc/kfix-token, content: "token={{ token }}\n", mode: "0600"}
  - id: feed
    name: hand the token to a command on its stdin
    command:
      run: [sh, -c, 'cat > /etc/kfix-cmd-token; sleep 3']
      stdin: "{{ token }}"
      creates: /etc/kfix-cmd-token
      undo: [rm, -f, /etc/kfix-cmd-token]
"#;

#[test]
fn a_secret_stays_out_of_outputs_journal_and_process_lists() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(1);
    let pb = lab.dir.join("secret-use.yaml");
    std::fs::write(&pb, PLAYBOOK).unwrap();
    let secret_file = lab.dir.join("token");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let original = format!("token={SECRET}\nlevel=1\n");
    lab.write_file("h1", "/etc/kfix-app.conf", &original);
    let sf = format!("token={}", s(&secret_file));
    let (inv, cfg) = (lab.inventory(), lab.ssh_config());
    let base = [
        "run",
        s(&pb),
        "-i",
        s(&inv),
        "--ssh-config",
        s(&cfg),
        "--secret-file",
        &sf,
    ];

    // Dry-run, verbose, both outputs: the diff of the token file is masked.
    for output in ["human", "json"] {
        let mut a = base.to_vec();
        a.extend(["--dry-run", "-v", "--output", output]);
        let out = lab.kfix(&a);
        let all = both(&out);
        assert!(out.status.success(), "{all}");
        assert!(!all.contains(SECRET), "leaked in {output} dry-run:\n{all}");
        assert!(all.contains("token=********"), "{all}");
    }

    // The real run, with every process's command line sampled while it works.
    let mut a = base.to_vec();
    a.extend(["--yes", "--output", "json"]);
    let child = lab.spawn_kfix(&a);
    let pid = child.id();
    let (mut saw_step, mut leaked) = (false, Vec::new());
    while std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
    {
        for c in all_cmdlines() {
            saw_step |= c.contains("cat > /etc/kfix-cmd-token");
            if c.contains(SECRET) {
                leaked.push(c);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let all = both(&out);
    assert!(out.status.success(), "{all}");
    assert!(saw_step, "the sampler never saw the step's command running");
    assert!(leaked.is_empty(), "secret in a process list: {leaked:?}");
    assert!(!all.contains(SECRET), "{all}");
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let run_id = run["run_id"].as_str().unwrap().to_string();
    // It did reach the host, through stdin and the file step.
    assert_eq!(lab.sh("h1", "cat /etc/kfix-cmd-token"), SECRET);
    assert_eq!(
        lab.sh("h1", "cat /etc/kfix-token"),
        format!("token={SECRET}\n")
    );
    assert_eq!(
        lab.sh("h1", "cat /etc/kfix-app.conf"),
        format!("token={SECRET}\nlevel=2\n")
    );
    let journal = state_text(&lab);
    assert!(journal.contains("{{kfix-secret:token}}"), "{journal}");
    assert!(
        !journal.contains(SECRET),
        "secret in the journal:\n{journal}"
    );

    // Rollback needs the secret again (the journal does not keep it) ...
    let rb = |extra: &[&str]| {
        let mut a = vec!["rollback", &run_id, "--yes", "--output", "json"];
        a.extend(extra);
        lab.kfix(&a)
    };
    let out = rb(&[]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("refused"), "{text}");
    assert!(text.contains("--secret-file token=PATH"), "{text}");
    assert_eq!(
        lab.sh("h1", "cat /etc/kfix-app.conf"),
        format!("token={SECRET}\nlevel=2\n"),
        "a refused rollback changes nothing"
    );
    // ... and with it restores the file byte for byte.
    let out = rb(&["--secret-file", &sf]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(!text.contains(SECRET), "{text}");
    assert_eq!(lab.sh("h1", "cat /etc/kfix-app.conf"), original);
    for f in ["/etc/kfix-token", "/etc/kfix-cmd-token"] {
        assert!(
            lab.exec("h1", &format!("test -e {f}")).status.code() != Some(0),
            "{f} is gone again"
        );
    }
    let journal = state_text(&lab);
    assert!(
        !journal.contains(SECRET),
        "secret in the journal:\n{journal}"
    );
}

#[test]
fn a_secret_in_an_error_is_masked_and_one_as_an_argument_is_refused() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(1);
    let secret_file = lab.dir.join("token");
    std::fs::write(&secret_file, SECRET).unwrap();
    let sf = format!("token={}", s(&secret_file));
    let (inv, cfg) = (lab.inventory(), lab.ssh_config());
    let run = |pb_text: &str, extra: &[&str]| {
        let pb = lab.dir.join("pb.yaml");
        std::fs::write(&pb, pb_text).unwrap();
        let mut a = vec![
            "run",
            s(&pb),
            "-i",
            s(&inv),
            "--ssh-config",
            s(&cfg),
            "--secret-file",
            &sf,
            "--yes",
        ];
        a.extend(extra);
        lab.kfix(&a)
    };
    // A command that fails echoing its stdin (the secret) to stderr.
    let failing = "id: leaky\ntitle: Leaky\nvars:\n  token: {default: ''}\nsteps:\n  - id: mark\n    file: {path: /etc/kfix-mark, content: \"x\\n\"}\n  - id: leak\n    command: {run: [sh, -c, 'cat >&2; exit 3'], stdin: \"{{ token }}\", undo: [true]}\n";
    for output in ["human", "json"] {
        let out = run(failing, &["--output", output]);
        let all = both(&out);
        assert_eq!(out.status.code(), Some(1), "{all}");
        assert!(
            all.contains("********"),
            "the error is shown, masked:\n{all}"
        );
        assert!(!all.contains(SECRET), "leaked in {output}:\n{all}");
        assert!(
            lab.exec("h1", "test -e /etc/kfix-mark").status.code() != Some(0),
            "the step before was rolled back"
        );
    }
    let journal = state_text(&lab);
    assert!(
        !journal.contains(SECRET),
        "secret in the journal:\n{journal}"
    );

    // The secret as an argument (a probe's or a step's), or transformed (masking knows
    // only its literal value): refused before any host is contacted, nothing runs.
    let before = lab.snapshot("h1");
    for pb in [
        "id: argv\ntitle: Argv\nvars:\n  token: {default: ''}\nsteps:\n  - id: curl\n    command: {run: [touch, '/tmp/{{ token }}'], creates: /etc/nothing, undo: [true]}\n",
        "id: argv\ntitle: Argv\nvars:\n  token: {default: ''}\ndetect:\n  - command: [test, -n, '{{ token }}']\nsteps:\n  - id: mark\n    file: {path: /etc/kfix-mark, content: \"x\\n\"}\n",
        "id: argv\ntitle: Argv\nvars:\n  token: {default: ''}\nsteps:\n  - id: mark\n    file: {path: /etc/kfix-mark, content: \"{{ token | reverse }}\\n\"}\n",
    ] {
        let out = run(pb, &[]);
        let all = both(&out);
        assert_eq!(out.status.code(), Some(3), "{all}");
        assert!(
            all.contains("secret variable `token` is used where its value can leak"),
            "{all}"
        );
        assert!(all.contains("pb.yaml:"), "{all}");
        assert!(all.contains("hint:"), "{all}");
        assert!(!all.contains(SECRET), "{all}");
        assert_eq!(lab.snapshot("h1"), before, "nothing changed");
    }
    // The secret's value reaching an argument another way (a value gathered from a
    // host file that holds it): refused on the host when planned, nothing runs.
    lab.write_file("h1", "/etc/kfix-app.conf", &format!("token={SECRET}\n"));
    let before = lab.snapshot("h1");
    let gathered = "id: argv\ntitle: Argv\nvars:\n  token: {default: ''}\n  seen: {description: the token the app has}\ngather:\n  seen: {file: /etc/kfix-app.conf, regex: 'token=(\\S+)'}\ndetect:\n  - command: [test, -n, '{{ seen }}']\nsteps:\n  - id: mark\n    file: {path: /etc/kfix-mark, content: \"x\\n\"}\n";
    let out = run(gathered, &[]);
    let all = both(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("secret variable `token` would be an argument"),
        "{all}"
    );
    assert!(!all.contains(SECRET), "{all}");
    assert_eq!(lab.snapshot("h1"), before, "nothing changed");
}
