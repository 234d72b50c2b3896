//! A variable's `choices`: an operator's value outside them (`-e`, or the inventory)
//! is refused before anything connects, naming the values; one of them is taken, also
//! when `-e` types it as a number.

mod common;

/// kfix run from the crate root.
fn kfix(args: &[&str]) -> std::process::Output {
    common::kfix_in(std::path::Path::new(env!("CARGO_MANIFEST_DIR")), args)
}

#[test]
fn a_value_outside_a_variable_s_choices_is_refused_before_connecting() {
    let out = kfix(&[
        "run",
        "purge-stale-calico-node",
        "-e",
        "calico_keyspace=v2",
        "--dry-run",
    ]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "`-e calico_keyspace=v2` is not one of `calico_keyspace`'s values (auto, v3, v1)"
        ) && err.contains("purge-stale-calico-node.yaml:")
            && err.contains("hint: -e calico_keyspace=auto|v3|v1"),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).is_empty());

    // From the inventory too.
    let dir = std::env::temp_dir().join(format!("kfix-choices-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let inv = dir.join("inv.ini");
    std::fs::write(&inv, "[nodes]\nnode-1 ansible_host=192.0.2.1 etcd_api=4\n").unwrap();
    let out = kfix(&[
        "check",
        "stale-flannel-subnet-lease",
        "-i",
        inv.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "`etcd_api=4 for node-1 (inventory)` is not one of `etcd_api`'s values (2, 3)"
        ),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);

    // A choice given as a number is that choice.
    let out = kfix(&["check", "stale-flannel-subnet-lease", "-e", "etcd_api=3"]);
    assert_ne!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
