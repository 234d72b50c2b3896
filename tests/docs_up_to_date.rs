//! The committed runbook pages under docs/runbooks are exactly what `kfix docs` writes
//! from the shipped playbooks: edit a playbook, run `kfix docs`, commit both.

use std::process::Command;

#[test]
fn runbook_pages_are_up_to_date() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = std::env::temp_dir().join(format!("kfix-runbooks-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let st = Command::new(env!("CARGO_BIN_EXE_kfix"))
        .args(["docs", "--out", out.to_str().unwrap()])
        .current_dir(root)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let committed = std::path::Path::new(root).join("docs/runbooks");
    let mut fresh: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let mut have: Vec<String> = std::fs::read_dir(&committed)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    fresh.sort();
    have.sort();
    assert_eq!(have, fresh, "docs/runbooks is out of date: run `kfix docs`");
    for f in &fresh {
        let a = std::fs::read_to_string(out.join(f)).unwrap();
        let b = std::fs::read_to_string(committed.join(f)).unwrap();
        assert!(
            a == b,
            "docs/runbooks/{f} is out of date: run `kfix docs`\n{}",
            similar::TextDiff::from_lines(&b, &a).unified_diff()
        );
    }
    let _ = std::fs::remove_dir_all(&out);
}
