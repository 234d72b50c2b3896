//! The shipped playbooks are inside the binary: kfix run from any directory (as after
//! `cargo install`) finds them; `--playbook-dir` adds playbooks and overrides a built-in
//! by id; `kfix list` says where each comes from.

mod common;

use common::kfix_in as kfix;

#[test]
fn playbooks_are_built_in_and_a_directory_adds_or_overrides_them() {
    let dir = std::env::temp_dir().join(format!("kfix-builtin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (elsewhere, mine) = (dir.join("elsewhere"), dir.join("mine"));
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::create_dir_all(&mine).unwrap();
    let shipped: Vec<String> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/playbooks"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_suffix(".yaml").map(str::to_string)
        })
        .collect();
    assert!(shipped.len() >= 14, "{shipped:?}");

    // From a directory with no playbooks/ in it: every shipped playbook, built in.
    let out = kfix(&elsewhere, &["list"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for id in &shipped {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{id} ")))
            .unwrap_or_else(|| panic!("{id}: {text}"));
        assert!(line.ends_with("built in"), "{line}");
    }
    let out = kfix(&elsewhere, &["show", "persist-ip-forward"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("# Turn IP forwarding on"));

    // A directory overriding one by id and adding another.
    let src = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/playbooks/persist-ip-forward.yaml"
    ))
    .unwrap();
    let title = src.lines().find(|l| l.starts_with("title:")).unwrap();
    std::fs::write(
        mine.join("forwarding.yaml"),
        src.replace(title, "title: Our own forwarding fix"),
    )
    .unwrap();
    std::fs::write(
        mine.join("extra.yaml"),
        "id: extra-fix\ntitle: An extra fix\nsteps:\n  - id: s\n    file: {path: /etc/kfix-extra, content: x}\n",
    )
    .unwrap();
    let mine_s = mine.to_str().unwrap();
    let out = kfix(&elsewhere, &["list", "--playbook-dir", mine_s]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |id: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{id} ")))
            .unwrap_or_else(|| panic!("{id}: {text}"))
            .to_string()
    };
    assert!(line("persist-ip-forward").contains("Our own forwarding fix"));
    assert!(line("persist-ip-forward").ends_with(&format!("{mine_s}/forwarding.yaml")));
    assert!(line("extra-fix").ends_with(&format!("{mine_s}/extra.yaml")));
    assert!(line("rp-filter-loose").ends_with("built in"));
    let out = kfix(
        &elsewhere,
        &["show", "persist-ip-forward", "--playbook-dir", mine_s],
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("# Our own forwarding fix"));
    // A broken playbook in the directory is an error naming it, not skipped.
    std::fs::write(mine.join("broken.yaml"), "id: broken\ntitle: [\n").unwrap();
    let out = kfix(&elsewhere, &["list", "--playbook-dir", mine_s]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("broken.yaml"));
    // An unknown id: the built-in ids as hint.
    let out = kfix(&elsewhere, &["show", "persist-ip-forwrd"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("did you mean `persist-ip-forward`"),
        "{out:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
