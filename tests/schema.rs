//! The playbook JSON Schema: docs/playbook.schema.json is exactly what `kfix schema`
//! prints (regenerate it when the model changes), every shipped playbook validates
//! against it, it refuses what the loader refuses, and `kfix new` writes a skeleton that
//! both the schema and `kfix validate` accept.

use std::path::{Path, PathBuf};

use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

mod common;

use common::kfix_in as kfix;

fn schema() -> Value {
    let out = kfix(Path::new(ROOT), &["schema"]);
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).expect("kfix schema prints JSON")
}

/// A playbook's YAML as the JSON document editors validate.
fn as_json(text: &str) -> Value {
    kfix::yaml::parse(text).expect("valid YAML").to_json()
}

fn errors(validator: &jsonschema::Validator, text: &str) -> Vec<String> {
    let doc = as_json(text);
    validator
        .iter_errors(&doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kfix-schema-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn the_checked_in_schema_is_what_kfix_schema_prints() {
    let out = kfix(Path::new(ROOT), &["schema"]);
    let fresh = String::from_utf8(out.stdout).unwrap();
    let have = std::fs::read_to_string(Path::new(ROOT).join("docs/playbook.schema.json"))
        .expect("docs/playbook.schema.json");
    assert!(
        have == fresh,
        "docs/playbook.schema.json is out of date: run `kfix schema > docs/playbook.schema.json`\n{}",
        similar::TextDiff::from_lines(&have, &fresh).unified_diff()
    );
}

#[test]
fn every_shipped_playbook_validates_against_the_schema() {
    let v = jsonschema::validator_for(&schema()).expect("a valid draft-07 schema");
    let mut n = 0;
    for e in std::fs::read_dir(Path::new(ROOT).join("playbooks")).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap();
        let errs = errors(&v, &text);
        assert!(errs.is_empty(), "{}: {errs:#?}", p.display());
        n += 1;
    }
    assert!(n >= 14, "only {n} playbooks read");
}

#[test]
fn the_schema_refuses_what_the_loader_refuses() {
    let v = jsonschema::validator_for(&schema()).unwrap();
    let good = "id: demo\ntitle: Demo\nsteps:\n  - id: s\n    sysctl: {key: net.ipv4.ip_forward, value: 1}\n";
    assert!(errors(&v, good).is_empty(), "{:?}", errors(&v, good));
    let dir = scratch("refuse");
    let cases = [
        // an unknown top-level field
        (
            "top",
            "id: demo\ntitle: Demo\ntittle: x\nsteps:\n  - id: s\n    sysctl: {key: a.b, value: 1}\n",
        ),
        // two kinds in one step
        (
            "kinds",
            "id: demo\ntitle: Demo\nsteps:\n  - id: s\n    sysctl: {key: a.b, value: 1}\n    link: {name: x}\n",
        ),
        // a step without a kind
        ("nokind", "id: demo\ntitle: Demo\nsteps:\n  - id: s\n"),
        // an unknown field inside a step kind
        (
            "field",
            "id: demo\ntitle: Demo\nsteps:\n  - id: s\n    sysctl: {key: a.b, value: 1, persit: true}\n",
        ),
        // a probe with two subjects
        (
            "probe",
            "id: demo\ntitle: Demo\ndetect:\n  - {sysctl: a.b, link: x}\nsteps:\n  - id: s\n    sysctl: {key: a.b, value: 1}\n",
        ),
        // a severity that does not exist
        (
            "severity",
            "id: demo\ntitle: Demo\nseverity: urgent\nsteps:\n  - id: s\n    sysctl: {key: a.b, value: 1}\n",
        ),
        // an invalid id
        (
            "id",
            "id: Demo_1\ntitle: Demo\nsteps:\n  - id: s\n    sysctl: {key: a.b, value: 1}\n",
        ),
        // a service state that does not exist
        (
            "state",
            "id: demo\ntitle: Demo\nsteps:\n  - id: s\n    service: {name: x, state: reloaded}\n",
        ),
        // neither steps nor remedy
        ("nosteps", "id: demo\ntitle: Demo\n"),
        // a gather with two sources
        (
            "gather",
            "id: demo\ntitle: Demo\ngather:\n  x: {file: /a, command: [true]}\nsteps:\n  - id: s\n    sysctl: {key: a.b, value: 1}\n",
        ),
    ];
    for (name, text) in cases {
        assert!(
            !errors(&v, text).is_empty(),
            "the schema accepts case `{name}`:\n{text}"
        );
        let p = dir.join(format!("{name}.yaml"));
        std::fs::write(&p, text).unwrap();
        let out = kfix(&dir, &["validate", p.to_str().unwrap()]);
        assert_eq!(
            out.status.code(),
            Some(3),
            "kfix validate accepts case `{name}`: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn kfix_new_writes_a_skeleton_that_validates_and_never_overwrites() {
    let dir = scratch("new");
    let d = dir.to_str().unwrap();
    let out = kfix(&dir, &["new", "fix-conntrack-max", "--dir", d]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = dir.join("fix-conntrack-max.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.starts_with("# yaml-language-server: $schema=playbook.schema.json\n"),
        "{text}"
    );
    assert!(text.contains("\nid: fix-conntrack-max\n"), "{text}");
    // The schema beside it is the current one, and the skeleton passes it…
    let beside: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("playbook.schema.json")).unwrap())
            .unwrap();
    assert_eq!(beside, schema());
    let v = jsonschema::validator_for(&beside).unwrap();
    assert!(errors(&v, &text).is_empty(), "{:?}", errors(&v, &text));
    // …and kfix's own validation, naming the variable the operator must set.
    let out = kfix(&dir, &["validate", path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("requires conf_file"), "{stdout}");
    // Until it is set, a run refuses before touching anything.
    let out = kfix(
        &dir,
        &["run", "fix-conntrack-max", "--playbook-dir", d, "--dry-run"],
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs `conf_file`"));
    // Never over an existing file (exit 6, the file unchanged).
    std::fs::write(&path, "mine\n").unwrap();
    let out = kfix(&dir, &["new", "fix-conntrack-max", "--dir", d]);
    assert_eq!(out.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&out.stderr).contains("never writes over a file"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "mine\n");
    // A bad id is a usage error; --schema-ref names another schema and writes none.
    let out = kfix(&dir, &["new", "Fix_1", "--dir", d]);
    assert_eq!(out.status.code(), Some(2));
    let other = scratch("new-ref");
    let o = other.to_str().unwrap();
    let out = kfix(
        &other,
        &[
            "new",
            "x",
            "--dir",
            o,
            "--schema-ref",
            "../docs/playbook.schema.json",
        ],
    );
    assert!(out.status.success());
    let text = std::fs::read_to_string(other.join("x.yaml")).unwrap();
    assert!(text.starts_with("# yaml-language-server: $schema=../docs/playbook.schema.json\n"));
    assert!(!other.join("playbook.schema.json").exists());
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other);
}
