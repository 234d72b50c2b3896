use super::super::Inventory;
use super::super::tests::{scratch, write};
use super::*;
use serde_json::json;

fn load(name: &str, text: &str) -> (String, Result<Inventory, Vec<Diagnostic>>) {
    let dir = scratch(&format!("yaml-{name}"));
    let path = write(&dir, "hosts.yml", text);
    (path.display().to_string(), Inventory::load(&path))
}

fn errors(name: &str, text: &str) -> (String, Vec<String>) {
    let (file, inv) = load(name, text);
    let diags = inv.expect_err("expected errors");
    (file, diags.iter().map(|d| d.to_string()).collect())
}

#[test]
fn nested_children() {
    let text = "\
all:
  vars:
    ntp: pool.ntp.org
    level: all
  hosts:
    jump:
      ansible_host: 192.0.2.10
      ansible_port: 2222
  children:
    k8s:
      vars:
        level: k8s
      children:
        control:
          hosts:
            cp[1:3]:
              ansible_user: admin
          vars:
            level: control
        workers:
          hosts:
            w[a:b].lab:
            w9.lab:22: {role: gpu}
    edge: ~
    misc:
      hosts: lonely
      children: edge
";
    let (_, inv) = load("nested", text);
    let inv = inv.unwrap();
    let names: Vec<&str> = inv.hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "jump", "cp1", "cp2", "cp3", "wa.lab", "wb.lab", "w9.lab", "lonely"
        ]
    );
    let cp2 = inv.host("cp2").unwrap();
    assert_eq!(cp2.groups, ["all", "control", "k8s"]);
    assert_eq!(cp2.vars["level"], json!("control"));
    assert_eq!(cp2.vars["ntp"], json!("pool.ntp.org"));
    assert_eq!(cp2.user(), Some("admin"));
    let w9 = inv.host("w9.lab").unwrap();
    assert_eq!(w9.port(), Some(22));
    assert_eq!(w9.vars["role"], json!("gpu"));
    assert_eq!(w9.vars["level"], json!("k8s"));
    let jump = inv.host("jump").unwrap();
    assert_eq!(jump.groups, ["all", "ungrouped"]);
    assert_eq!((jump.address(), jump.port()), ("192.0.2.10", Some(2222)));
    assert_eq!(inv.groups["all"].hosts, ["jump"]);
    assert_eq!(
        inv.groups["all"].children,
        ["k8s", "edge", "misc", "ungrouped"]
    );
    assert_eq!(inv.groups["k8s"].children, ["control", "workers"]);
    assert_eq!(inv.groups["misc"].children, ["edge"]);
    assert_eq!(inv.host("lonely").unwrap().groups, ["all", "misc"]);
    // `jump` is only in `all`, so Ansible also puts it in `ungrouped`.
    assert_eq!(inv.groups["ungrouped"].hosts, ["jump"]);
}

#[test]
fn scalars_follow_pyyaml() {
    let text = "\
all:
  hosts:
    h:
      a: yes
      b: y
      c: 'yes'
      d: 0755
      e: 1.5
      f: .nan
      g: [1, two, {x: null}]
      h: !unsafe '{{ raw }}'
      i: &anchor {k: v}
      j: *anchor
      10: ten
";
    let (_, inv) = load("scalars", text);
    let inv = inv.unwrap();
    let v = serde_json::to_value(&inv.host("h").unwrap().vars).unwrap();
    assert_eq!(
        v,
        json!({
            "a": true, "b": "y", "c": "yes", "d": 493, "e": 1.5, "f": ".nan",
            "g": [1, "two", {"x": null}], "h": "{{ raw }}",
            "i": {"k": "v"}, "j": {"k": "v"}, "10": "ten"
        })
    );
}

#[test]
fn empty_file_is_an_empty_inventory() {
    let (_, inv) = load("empty", "# nothing yet\n");
    let inv = inv.unwrap();
    assert!(inv.hosts.is_empty());
    assert!(inv.groups.contains_key("all"));
}

#[test]
fn unknown_group_key_reports_position() {
    let (file, errs) = errors(
        "unknown",
        "all:\n  children:\n    web:\n      hostz:\n        web1:\n",
    );
    assert_eq!(
        errs,
        [format!(
            "error: unknown key `hostz` in group `web`\n --> {file}:4:7\n  |\n4 |       hostz:\n  |       ^^^^^\n  = hint: did you mean `hosts`?"
        )]
    );
}

#[test]
fn every_problem_is_reported() {
    let text = "\
all:
  colour: blue
  hosts:
    web[1:x]:
    db1: [not, vars]
  vars: [a, b]
  children:
    loop:
      children:
        loop2:
          children:
            loop: ~
    broken: just a string
";
    let (file, errs) = errors("many", text);
    let expected = [
        format!(
            "error: unknown key `colour` in group `all`\n --> {file}:2:3\n  |\n2 |   colour: blue\n  |   ^^^^^^\n  = hint: a group can only have `hosts`, `vars` and `children`"
        ),
        format!(
            "error: host range bound `x` is not a number or a single letter in `web[1:x]`\n --> {file}:4:5\n  |\n4 |     web[1:x]:\n  |     ^^^^^\n  = hint: host ranges look like `node[01:20]`, `node[a:f]` or `node[1:9:2]`"
        ),
        format!(
            "error: variables of host `db1` must be a mapping, found a sequence\n --> {file}:5:10\n  |\n5 |     db1: [not, vars]\n  |          ^^^^\n  = hint: write `db1:` alone, or with `name: value` lines under it"
        ),
        format!(
            "error: `vars` of group `all` must be a mapping, found a sequence\n --> {file}:6:9\n  |\n6 |   vars: [a, b]\n  |         ^^\n  = hint: write one `name: value` per line under `vars:`"
        ),
        format!(
            "error: making `loop2` a child of `loop` creates a cycle: loop -> loop2 -> loop\n  --> {file}:10:9\n   |\n10 |         loop2:\n   |         ^^^^^\n   = hint: a group cannot be its own ancestor; remove one of these children entries"
        ),
        format!(
            "error: group `broken` must be a mapping with `hosts`, `vars` or `children`, found a string\n  --> {file}:13:13\n   |\n13 |     broken: just a string\n   |             ^^^^\n   = hint: write `hosts:`, `vars:` and `children:` as keys under the group"
        ),
    ];
    assert_eq!(errs.len(), expected.len(), "{errs:#?}");
    for (got, want) in errs.iter().zip(&expected) {
        assert_eq!(got, want);
    }
}

#[test]
fn syntax_error_and_duplicate_keys() {
    let (file, errs) = errors("syntax", "all:\n  hosts: [unclosed\n");
    assert_eq!(errs.len(), 1);
    assert_eq!(
        errs[0],
        format!(
            "error: unclosed bracket '['\n --> {file}:2:10\n  |\n2 |   hosts: [unclosed\n  |          ^^^^^^^^^"
        )
    );
    let (file, errs) = errors("dup", "all:\n  hosts:\n    a:\n    a:\n");
    assert_eq!(
        errs,
        [format!(
            "error: duplicate mapping key `a` is not allowed here\n --> {file}:4:5\n  |\n4 |     a:\n  |     ^"
        )]
    );
}

#[test]
fn top_level_must_be_a_mapping() {
    let (file, errs) = errors("toplevel", "- all\n");
    assert_eq!(
        errs,
        [format!(
            "error: a YAML inventory must be a mapping of groups, found a sequence\n --> {file}:1:1\n  |\n1 | - all\n  | ^\n  = hint: start with `all:` and put `hosts:`, `vars:` and `children:` under it"
        )]
    );
}

#[test]
fn alias_bomb_is_refused() {
    let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for (prev, name) in ["a", "b", "c", "d", "e", "f", "g", "h"]
        .iter()
        .zip(["b", "c", "d", "e", "f", "g", "h", "i"])
    {
        let refs = vec![format!("*{prev}"); 10].join(", ");
        text.push_str(&format!("{name}: &{name} [{refs}]\n"));
    }
    let dir = scratch("yaml-bomb");
    let path = write(&dir, "group_vars/all.yml", &text);
    let err = parse_vars_file(&path, &text).unwrap_err();
    assert_eq!(err.len(), 1);
    let rendered = err[0].to_string();
    assert!(rendered.starts_with("error: "), "{rendered}");
    assert!(
            rendered.ends_with(
                "= hint: the file is too big, too deeply nested or expands too many aliases (limits guard against alias bombs)"
            ),
            "{rendered}"
        );
}

#[test]
fn deep_nesting_is_refused() {
    let text = format!("x: {}1{}\n", "[".repeat(200), "]".repeat(200));
    let err = parse_vars_file(Path::new("deep.yml"), &text).unwrap_err();
    assert!(
        err[0].to_string().contains("= hint: the file is too big"),
        "{}",
        err[0]
    );
}

#[test]
fn did_you_mean() {
    assert_eq!(closest("host", &GROUP_KEYS), Some("hosts"));
    assert_eq!(closest("chidren", &GROUP_KEYS), Some("children"));
    assert_eq!(closest("colour", &GROUP_KEYS), None);
}
