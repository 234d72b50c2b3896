use super::super::Inventory;
use super::super::tests::{scratch, write};
use super::*;
use serde_json::json;

fn load(name: &str, text: &str) -> (std::path::PathBuf, Result<Inventory, Vec<Diagnostic>>) {
    let dir = scratch(&format!("ini-{name}"));
    let path = write(&dir, "hosts", text);
    let inv = Inventory::load(&path);
    (path, inv)
}

fn errors(name: &str, text: &str) -> (String, Vec<String>) {
    let (path, inv) = load(name, text);
    let diags = inv.expect_err("expected errors");
    (
        path.display().to_string(),
        diags.iter().map(|d| d.to_string()).collect(),
    )
}

const KUBESPRAY: &str = "\
[all]
node1 ansible_host=95.54.0.12 ip=10.3.0.1 etcd_member_name=etcd1
node2 ansible_host=95.54.0.13 ip=10.3.0.2
[kube_control_plane]
node1
[etcd]
node1
[kube_node]
node2
[calico_rr]
[k8s_cluster:children]
kube_control_plane
kube_node
calico_rr
";

#[test]
fn kubespray_inventory() {
    let (_, inv) = load("kubespray", KUBESPRAY);
    let inv = inv.unwrap();
    let names: Vec<&str> = inv.hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["node1", "node2"]);
    let node1 = inv.host("node1").unwrap();
    assert_eq!(
        node1.groups,
        ["all", "etcd", "k8s_cluster", "kube_control_plane"]
    );
    assert_eq!(node1.vars["ip"], json!("10.3.0.1"));
    assert_eq!(node1.vars["ansible_host"], json!("95.54.0.12"));
    assert_eq!(node1.vars["etcd_member_name"], json!("etcd1"));
    assert_eq!(node1.address(), "95.54.0.12");
    let node2 = inv.host("node2").unwrap();
    assert_eq!(node2.groups, ["all", "k8s_cluster", "kube_node"]);
    assert_eq!(
        inv.groups["k8s_cluster"].children,
        ["kube_control_plane", "kube_node", "calico_rr"]
    );
    assert!(inv.groups["calico_rr"].hosts.is_empty());
    assert_eq!(inv.groups["all"].hosts, ["node1", "node2"]);
    assert_eq!(
        inv.groups["all"].children,
        ["ungrouped", "etcd", "k8s_cluster"]
    );
    assert!(inv.groups["ungrouped"].hosts.is_empty());
}

#[test]
fn shipped_examples_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("inventory");
    let inv = Inventory::load(&root.join("local.ini")).unwrap();
    assert!(inv.host("localhost").unwrap().is_local());
    let inv = Inventory::load(&root.join("kubespray.ini")).unwrap();
    assert_eq!(inv.hosts.len(), 7);
    assert_eq!(inv.select(Some("kube_control_plane")).unwrap().len(), 3);
    assert_eq!(inv.select(Some("k8s_cluster:!etcd")).unwrap().len(), 4);
    let inv = Inventory::load(&root.join("lab.yaml")).unwrap();
    assert!(!inv.hosts.is_empty());
}

#[test]
fn groups_children_vars_and_ranges() {
    let text = "\
# leading comment
; another comment
bastion ansible_host=192.0.2.1   # ungrouped, comment ignored

[web]
web[01:03] http_port=8080 ansible_user=deploy
web02 role=\"primary web\" quoted_num='42' weight=1.5 enabled=True off=False yes_str=yes

[db]
db-[a:b].lan:2222
10.0.0.[1:5:2]

[prod:children]
web
db
empty_child   # declared below, empty

[empty_child]

[prod:vars]
env=production
retries=3
motd=\"hello world\"
note = spaced value
count=7 # trailing comment
zero=007

[web:vars]
http_port=80
";
    let (_, inv) = load("full", text);
    let inv = inv.unwrap();
    let names: Vec<&str> = inv.hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "bastion", "web01", "web02", "web03", "db-a.lan", "db-b.lan", "10.0.0.1", "10.0.0.3",
            "10.0.0.5"
        ]
    );
    let bastion = inv.host("bastion").unwrap();
    assert_eq!(bastion.groups, ["all", "ungrouped"]);
    assert_eq!(bastion.address(), "192.0.2.1");

    let web02 = inv.host("web02").unwrap();
    assert_eq!(web02.groups, ["all", "prod", "web"]);
    let v = &web02.vars;
    assert_eq!(v["http_port"], json!(8080), "host var beats group var");
    assert_eq!(v["role"], json!("primary web"));
    assert_eq!(
        v["quoted_num"],
        json!(42),
        "quotes go, then the literal is read (Ansible)"
    );
    assert_eq!(v["weight"], json!(1.5));
    assert_eq!(v["enabled"], json!(true));
    assert_eq!(v["off"], json!(false));
    assert_eq!(v["yes_str"], json!("yes"));
    assert_eq!(v["env"], json!("production"));
    assert_eq!(v["retries"], json!(3));
    assert_eq!(v["motd"], json!("hello world"));
    assert_eq!(v["note"], json!("spaced value"));
    assert_eq!(v["count"], json!(7));
    assert_eq!(v["zero"], json!("007"));
    assert_eq!(inv.host("web01").unwrap().user(), Some("deploy"));

    let dba = inv.host("db-a.lan").unwrap();
    assert_eq!(dba.port(), Some(2222));
    assert_eq!(dba.groups, ["all", "db", "prod"]);
    assert_eq!(inv.groups["prod"].children, ["web", "db", "empty_child"]);
    assert!(inv.groups["empty_child"].hosts.is_empty());
    assert_eq!(inv.groups["web"].hosts, ["web01", "web02", "web03"]);
    assert_eq!(inv.groups["ungrouped"].hosts, ["bastion"]);
    assert_eq!(inv.groups["prod"].vars["retries"], json!(3));
}

#[test]
fn host_in_several_groups_is_one_host() {
    let (_, inv) = load("multi", "[a]\nh1 x=1 y=1\n[b]\nh1 y=2\n[a:hosts]\nh2\n");
    let inv = inv.unwrap();
    assert_eq!(inv.hosts.len(), 2);
    let h1 = inv.host("h1").unwrap();
    assert_eq!(h1.groups, ["a", "all", "b"]);
    assert_eq!(h1.vars["x"], json!(1));
    assert_eq!(h1.vars["y"], json!(2));
    assert_eq!(inv.groups["a"].hosts, ["h1", "h2"]);
}

#[test]
fn shell_splitting() {
    let t = shell_split(r#"h a="x y" b='p q'r c=\"z d="a\"b\\c\n" e=f#g h"#).unwrap();
    let texts: Vec<&str> = t.iter().map(|t| t.text.as_str()).collect();
    assert_eq!(
        texts,
        ["h", "a=x y", "b=p qr", "c=\"z", r#"d=a"b\c\n"#, "e=f"]
    );
    assert_eq!(t[1].col, 3);
    assert!(t[1].quoted_after > 1);
    assert_eq!(t[3].quoted_after, 0);
    assert_eq!(
        shell_split("h a='x").unwrap_err(),
        (5, "unterminated ' quote".into())
    );
    assert_eq!(
        shell_split("h a\\").unwrap_err(),
        (4, "trailing backslash escapes nothing".into())
    );
}

/// Each answer here is what ansible-core 2.17's `ansible-inventory --host` printed
/// for the same line (checked by hand; see pylit.rs for the literal reader).
#[test]
fn values_are_what_ansible_makes_of_them() {
    use super::super::pylit::eval;
    assert_eq!(eval("0"), Some(json!(0)));
    assert_eq!(eval("+5"), Some(json!(5)));
    assert_eq!(
        eval("18446744073709551615"),
        Some(json!(18446744073709551615u64))
    );
    assert_eq!(eval("0x10"), Some(json!(16)));
    for s in [
        "true", "yes", "007", "1.2.3", "1e", "e5", ".", "-", "", "nan", "inf",
    ] {
        assert_eq!(eval(s), None, "{s}");
    }
    assert_eq!(var_value("'it''s'"), json!("its"), "adjacent strings join");
    assert_eq!(var_value(r#""a\tb""#), json!("a\tb"));
    assert_eq!(var_value("x # y"), json!("x # y"));
    assert_eq!(var_value("'x' # y"), json!("x"));
    assert_eq!(var_value("spaced value"), json!("spaced value"));
    // kubespray's node_labels / node_taints on a host line, and Python's None.
    let text = "[k]\nn1 q='42' labels='{\"role\": \"x\", \"n\": 1}' taints='[\"a=b:NoSchedule\"]' none=None plain={\"a\":\"b\"} bare=[1,2] role=\"primary web\" lz=007\n[k:vars]\ngdict={\"z\": 1}\nglist=['a', 'b']\n";
    let (_, inv) = load("pylit", text);
    let inv = inv.expect("valid");
    let v = &inv.host("n1").expect("n1").vars;
    assert_eq!(v["q"], json!(42));
    assert_eq!(v["labels"], json!({"role": "x", "n": 1}));
    assert_eq!(v["taints"], json!(["a=b:NoSchedule"]));
    assert_eq!(v["none"], Value::Null);
    assert_eq!(
        v["plain"],
        json!("{a:b}"),
        "the shell-like split took its quotes"
    );
    assert_eq!(v["bare"], json!([1, 2]));
    assert_eq!(v["role"], json!("primary web"));
    assert_eq!(v["lz"], json!("007"));
    assert_eq!(v["gdict"], json!({"z": 1}));
    assert_eq!(v["glist"], json!(["a", "b"]));
}

#[test]
fn bad_key_value_reports_column() {
    let (file, errs) = errors("badkv", "[web]\nweb1 ansible_user=x oops port=1\n");
    assert_eq!(
        errs,
        [format!(
            "error: expected key=value host variable, found `oops`\n --> {file}:2:21\n  |\n2 | web1 ansible_user=x oops port=1\n  |                     ^^^^\n  = hint: host variables are written `key=value` (quote values with spaces: key=\"a b\")"
        )]
    );
}

#[test]
fn a_child_group_nobody_declares_is_an_error_as_in_ansible() {
    let text = "[kube_node]\nn1\n\n[k8s_cluster:children]\nkube_node\nkube_control_plan\ncalico_rr\n\n[calico_rr]\n";
    let (_, inv) = load("children", text);
    let errs = inv.expect_err("undefined child");
    let all: String = errs.iter().map(|d| d.to_string()).collect();
    assert_eq!(errs.len(), 1, "{all}");
    assert!(
        all.contains("`[k8s_cluster:children]` includes the undefined group `kube_control_plan`"),
        "{all}"
    );
    assert!(all.contains(":6:1"), "{all}");
    assert!(all.contains("hint: declare it"), "{all}");
}

#[test]
fn every_problem_is_reported() {
    let text = "\
[web:hostz]
ignored line in a broken section
[web servers]
[web]
  web1 key=\"unterminated
web[1:x]
web2 =nokey
[ghost:vars]
a=1
[web:vars]
no equals here
ansible_group_priority=high
[web:children]
all
a b
[a:children]
b
[b:children]
a
";
    let (file, errs) = errors("many", text);
    let expected = [
        format!(
            "error: unknown section type `hostz` in `[web:hostz]`\n --> {file}:1:6\n  |\n1 | [web:hostz]\n  |      ^^^^^\n  = hint: sections are `[group]`, `[group:vars]` or `[group:children]`"
        ),
        format!(
            "error: invalid section header `[web servers]`\n --> {file}:3:1\n  |\n3 | [web servers]\n  | ^^^^\n  = hint: sections are `[group]`, `[group:vars]` or `[group:children]`; group names cannot contain spaces, `:` or `]`"
        ),
        format!(
            "error: unterminated \" quote\n --> {file}:5:12\n  |\n5 |   web1 key=\"unterminated\n  |            ^^^^^^^^^^^^^\n  = hint: close the quote, or escape it with a backslash"
        ),
        format!(
            "error: host range bound `x` is not a number or a single letter in `web[1:x]`\n --> {file}:6:1\n  |\n6 | web[1:x]\n  | ^^^^^\n  = hint: host ranges look like `node[01:20]`, `node[a:f]` or `node[1:9:2]`"
        ),
        format!(
            "error: missing variable name in `=nokey`\n --> {file}:7:6\n  |\n7 | web2 =nokey\n  |      ^^^^^^\n  = hint: host variables are written `key=value`"
        ),
        format!(
            "error: expected key=value in `[web:vars]`, found `no equals here`\n  --> {file}:11:1\n   |\n11 | no equals here\n   | ^^\n   = hint: group variables are written `key=value`, one per line"
        ),
        format!(
            "error: ansible_group_priority must be an integer, found `\"high\"`\n  --> {file}:12:24\n   |\n12 | ansible_group_priority=high\n   |                        ^^^^\n   = hint: use a whole number, e.g. ansible_group_priority=10"
        ),
        format!(
            "error: group `all` cannot be a child of `web`\n  --> {file}:14:1\n   |\n14 | all\n   | ^^^\n   = hint: every group is already a child of `all`"
        ),
        format!(
            "error: invalid group name `a b` in `[web:children]`\n  --> {file}:15:1\n   |\n15 | a b\n   | ^\n   = hint: list one child group name per line"
        ),
        format!(
            "error: making `a` a child of `b` creates a cycle: b -> a -> b\n  --> {file}:19:1\n   |\n19 | a\n   | ^\n   = hint: a group cannot be its own ancestor; remove one of these children entries"
        ),
        format!(
            "error: section `[ghost:vars]` is for an undefined group `ghost`\n --> {file}:8:1\n  |\n8 | [ghost:vars]\n  | ^^^^^^\n  = hint: declare the group with a `[ghost]` section or list it under a `:children` section"
        ),
    ];
    assert_eq!(errs.len(), expected.len(), "{errs:#?}");
    for (got, want) in errs.iter().zip(&expected) {
        assert_eq!(got, want);
    }
}

#[test]
fn ipv6_host_line_with_port() {
    let (_, inv) = load(
        "v6",
        "[v6]\n[2001:db8::1]:2222 ansible_user=root\n2001:db8::2\n",
    );
    let inv = inv.unwrap();
    let names: Vec<&str> = inv.hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["2001:db8::1", "2001:db8::2"]);
    assert_eq!(inv.host("2001:db8::1").unwrap().port(), Some(2222));
}
