use super::*;
use serde_json::json;

/// A fresh scratch directory under the system temp dir (unique per call, so tests
/// running in parallel never share one).
/// Removes its directory when the test ends.
pub(super) struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(super) fn scratch(name: &str) -> Scratch {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("kfix-inv-{pid}-{n}-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

pub(super) fn write(dir: &Path, rel: &str, text: &str) -> PathBuf {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn localhost_inventory() {
    let inv = Inventory::localhost();
    assert_eq!(inv.hosts.len(), 1);
    let h = inv.host("localhost").unwrap();
    assert_eq!(h.groups, ["all", "ungrouped"]);
    assert!(h.is_local());
    assert_eq!(h.address(), "localhost");
    assert_eq!(inv.groups["ungrouped"].hosts, ["localhost"]);
    assert_eq!(inv.groups["all"].children, ["ungrouped"]);
}

#[test]
fn host_accessors() {
    let mut vars = Vars::new();
    vars.insert("ansible_host".into(), json!("10.0.0.5"));
    vars.insert("ansible_port".into(), json!(2222));
    vars.insert("ansible_user".into(), json!("deploy"));
    vars.insert("ansible_ssh_private_key_file".into(), json!("~/.ssh/id"));
    vars.insert("ansible_become".into(), json!("yes"));
    vars.insert("ansible_become_user".into(), json!("root"));
    let h = Host {
        name: "web1".into(),
        groups: vec!["all".into()],
        vars: vars.into(),
    };
    assert_eq!(h.address(), "10.0.0.5");
    assert_eq!(h.port(), Some(2222));
    assert_eq!(h.user(), Some("deploy"));
    assert_eq!(h.key_file(), Some("~/.ssh/id"));
    assert!(h.become_());
    assert_eq!(h.become_user(), Some("root"));
    assert!(!h.is_local());

    let mut h2 = Host {
        name: "db".into(),
        groups: vec![],
        vars: HostVars::default(),
    };
    assert_eq!(h2.address(), "db");
    assert_eq!(h2.port(), None);
    assert!(!h2.become_());
    h2.vars.insert("ansible_ssh_port".into(), json!("2200"));
    h2.vars.insert("ansible_ssh_user".into(), json!("ops"));
    h2.vars
        .insert("ansible_private_key_file".into(), json!("k"));
    assert_eq!(h2.port(), Some(2200));
    assert_eq!(h2.user(), Some("ops"));
    assert_eq!(h2.key_file(), Some("k"));
    h2.vars.insert("ansible_port".into(), json!(99999));
    assert_eq!(h2.port(), Some(2200), "ansible_ssh_port wins");
}

#[test]
fn a_tiny_inventory_cannot_make_a_huge_one() {
    // Three ranges of 100,000 hosts in a few bytes: refused before any host is made.
    let three = "[a]\na[0:99999]\n[b]\nb[0:99999]\n[c]\nc[0:99999]\n";
    let errs = Inventory::parse(Path::new("hosts.ini"), three).expect_err("too many");
    let text = errs.iter().map(|d| d.to_string()).collect::<String>();
    assert!(
        text.contains("300000 hosts, more than kfix takes (100000)"),
        "{text}"
    );
    assert!(text.contains("hint:"), "{text}");
    // Group variables are one map per set of groups, shared by its hosts; a host's
    // own variable is its own and wins.
    let mut big = String::from("[big]\nn[0:19999]\nspecial x=own\n[big:vars]\n");
    for i in 0..50 {
        big.push_str(&format!("v{i}=value-{i}\n"));
    }
    big.push_str("x=group\n");
    let inv = Inventory::parse(Path::new("hosts.ini"), &big).expect("valid");
    assert_eq!(inv.hosts.len(), 20_001);
    let first = &inv.hosts[0].vars.shared;
    assert!(
        inv.hosts
            .iter()
            .all(|h| std::sync::Arc::ptr_eq(&h.vars.shared, first))
    );
    assert_eq!(inv.hosts[0].vars["x"], json!("group"));
    assert_eq!(inv.host("special").unwrap().vars["x"], json!("own"));
    assert_eq!(inv.host("special").unwrap().vars.iter().count(), 51);
    assert_eq!(inv.hosts[7].vars["v49"], json!("value-49"));
}

#[test]
fn jump_hosts_are_the_only_ssh_options_an_inventory_gives() {
    let mut h = Host {
        name: "n".into(),
        groups: vec![],
        vars: HostVars::default(),
    };
    let mut with = |common: &str, extra: Option<&str>| {
        h.vars
            .insert("ansible_ssh_common_args".into(), json!(common));
        if let Some(e) = extra {
            h.vars.insert("ansible_ssh_extra_args".into(), json!(e));
        }
        h.jump_hosts()
    };
    assert_eq!(with("-o ProxyJump=root@b1", None).unwrap(), ["root@b1"]);
    assert_eq!(
        with("-oProxyJump=b1,b2:2222", None).unwrap(),
        ["b1", "b2:2222"]
    );
    assert_eq!(
        with("-o 'ProxyJump b1'", Some("-J b2")).unwrap(),
        ["b1", "b2"]
    );
    assert_eq!(with("", Some("")).unwrap(), Vec::<String>::new());
    for bad in [
        "-o StrictHostKeyChecking=no",
        "-o ProxyCommand=nc %h %p",
        "-v",
        "-J -oX",
        "-o",
    ] {
        assert!(with(bad, Some("")).is_err(), "{bad}");
    }
}

#[test]
fn vault_values_templated_connections_and_toml_are_refused() {
    let text = "all:\n  hosts:\n    n1:\n      ansible_host: '{{ ip }}'\n      ip: 10.0.0.1\n      ansible_become_password: !vault |\n        $ANSIBLE_VAULT;1.1;AES256\n        62313365396662343061393464336163383764373764613633653634306231386433626436623361\n";
    let errs = Inventory::parse(Path::new("hosts.yaml"), text).expect_err("refused");
    let all: String = errs.iter().map(|d| d.to_string()).collect();
    assert!(
        all.contains("`ansible_become_password` is an Ansible Vault ciphertext"),
        "{all}"
    );
    assert!(
        all.contains("--secret-file ansible_become_password=PATH"),
        "{all}"
    );
    assert!(
        all.contains("`ansible_host` is a template (`{{ ip }}`)"),
        "{all}"
    );
    // A group's vault value is reported for each host that does not set its own.
    let text = "all:\n  children:\n    k:\n      vars:\n        token: !vault |\n          $ANSIBLE_VAULT;1.1;AES256\n          6231\n      hosts:\n        n1: {}\n        n2: {token: plain}\n        n3: {}\n";
    let errs = Inventory::parse(Path::new("hosts.yaml"), text).expect_err("refused");
    let all: Vec<String> = errs
        .iter()
        .map(|d| d.to_string())
        .filter(|d| d.contains("Vault"))
        .collect();
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(all[0].contains("host `n1`: `token`") && all[1].contains("host `n3`: `token`"));
    for (name, text) in [
        ("hosts.toml", "[all.hosts]\nn1 = {}\n"),
        (
            "hosts",
            "[web.hosts]\nn1 = { ansible_host = \"10.0.0.1\" }\n",
        ),
    ] {
        let errs = Inventory::parse(Path::new(name), text).expect_err("toml");
        let all: String = errs.iter().map(|d| d.to_string()).collect();
        assert!(all.contains("TOML inventories are not supported"), "{all}");
        assert!(all.contains("ansible-inventory"), "{all}");
    }
}

#[test]
fn connection_values_ssh_would_misread_are_refused() {
    let text = "[k]\nn1 ansible_host=-oProxyCommand=touch\\ /tmp/x\nn2 ansible_user=-oX=y\nn3 ansible_port=22x\nn4 ansible_port=0\nn5 ansible_ssh_private_key_file=-i\nok ansible_host=10.0.0.1 ansible_port=2222 ansible_user=deploy\n";
    let errs = Inventory::parse(Path::new("hosts.ini"), text).expect_err("refused");
    let all: Vec<String> = errs.iter().map(|d| d.to_string()).collect();
    let all = all.join("\n");
    for want in [
        "host `n1`: address begins with `-`",
        "host `n2`: user begins with `-`",
        "host `n3`: ansible_port is not a port: `22x`",
        "host `n4`: ansible_port is not a port: `0`",
        "host `n5`: private key file begins with `-`",
    ] {
        assert!(all.contains(want), "{want}: {all}");
    }
    assert!(!all.contains("`ok`"), "{all}");
    assert!(all.contains("hint:"), "{all}");
}

#[test]
fn become_truthiness() {
    for (v, want) in [
        (json!(true), true),
        (json!("True"), true),
        (json!("yes"), true),
        (json!("on"), true),
        (json!("1"), true),
        (json!(1), true),
        (json!(false), false),
        (json!("no"), false),
        (json!("0"), false),
        (json!(0), false),
        (json!("maybe"), false),
        (json!(null), false),
    ] {
        assert_eq!(truthy(&v), want, "{v}");
    }
}

#[test]
fn host_ranges() {
    let e = |p: &str| expand_host_pattern(p).map(|(h, port)| (h.join(","), port));
    assert_eq!(e("web1").unwrap(), ("web1".into(), None));
    assert_eq!(e("web1:2222").unwrap(), ("web1".into(), Some(2222)));
    assert_eq!(e("node[01:03]").unwrap().0, "node01,node02,node03");
    assert_eq!(e("node[1:10:4]").unwrap().0, "node1,node5,node9");
    assert_eq!(e("node[:2]").unwrap().0, "node0,node1,node2");
    assert_eq!(e("db-[a:c].lan").unwrap().0, "db-a.lan,db-b.lan,db-c.lan");
    assert_eq!(e("10.0.0.[1:3]").unwrap().0, "10.0.0.1,10.0.0.2,10.0.0.3");
    assert_eq!(e("r[1:2]n[a:b]").unwrap().0, "r1na,r1nb,r2na,r2nb");
    assert_eq!(e("n[08:10]:22").unwrap(), ("n08,n09,n10".into(), Some(22)));
    assert_eq!(e("2001:db8::1").unwrap(), ("2001:db8::1".into(), None));
    assert_eq!(
        e("[2001:db8::1]:2222").unwrap(),
        ("2001:db8::1".into(), Some(2222))
    );
    assert_eq!(
        e("n[1:3:0]").unwrap_err(),
        "host range step `0` must be a positive number in `n[1:3:0]`"
    );
    assert_eq!(
        e("n[01:5]").unwrap_err(),
        "host range must specify equal-length begin and end formats in `n[01:5]`"
    );
    assert_eq!(
        e("n[5:1]").unwrap_err(),
        "host range must have begin <= end in `n[5:1]`"
    );
    assert_eq!(
        e("n[1:2").unwrap_err(),
        "unterminated host range in `n[1:2`"
    );
    assert_eq!(
        e("n[1]").unwrap_err(),
        "host range must be begin:end or begin:end:step in `n[1]`"
    );
    assert_eq!(
        e("n[x:10]").unwrap_err(),
        "host range bound `x` is not a number or a single letter in `n[x:10]`"
    );
    assert_eq!(
        e("web:").unwrap_err(),
        "invalid host `web:`: expected `host` or `host:port`"
    );
    assert_eq!(
        e("web:70000").unwrap_err(),
        "invalid port `70000` in `web:70000` (must be 0-65535)"
    );
    assert_eq!(
        e("n[0:999999999]").unwrap_err(),
        "host range expands to more than 100000 hosts in `n[0:999999999]`"
    );
    assert_eq!(
        e("a[0:999]b[0:999]").unwrap_err(),
        "host range `a[0:999]b[0:999]` expands to more than 100000 hosts"
    );
}

#[test]
fn format_detection() {
    let f = |p: &str, s: &str| Format::of(Path::new(p), s);
    assert_eq!(f("hosts.yml", "[web]\n"), Format::Yaml);
    assert_eq!(f("hosts.ini", "all:\n"), Format::Ini);
    assert_eq!(f("hosts", "# c\nall:\n  hosts:\n"), Format::Yaml);
    assert_eq!(f("hosts", "---\n"), Format::Yaml);
    assert_eq!(f("hosts", "[web]\nweb1\n"), Format::Ini);
    assert_eq!(f("hosts", "web1:2222 ansible_user=x\n"), Format::Ini);
    assert_eq!(f("hosts", "web1\n"), Format::Ini);
    assert_eq!(f("hosts", ""), Format::Ini);
}

#[test]
fn load_missing_file_and_directory() {
    let dir = scratch("missing");
    let err = Inventory::load(&dir.join("nope.ini")).unwrap_err();
    assert_eq!(
        err[0].to_string(),
        format!(
            "error: cannot read inventory: No such file or directory (os error 2)\n --> {}",
            dir.join("nope.ini").display()
        )
    );
    let err = Inventory::load(&dir).unwrap_err();
    assert_eq!(
        err[0].to_string(),
        format!(
            "error: inventory path is a directory\n --> {}\n  = hint: pass a single INI or YAML inventory file",
            dir.display()
        )
    );
}

#[test]
fn group_and_host_vars_precedence() {
    let dir = scratch("precedence");
    let inv_path = write(
        &dir,
        "hosts.ini",
        "[web]\nweb1 from_host=inv\nweb2\n\n[prod:children]\nweb\n\n\
             [all:vars]\nfrom_all=inv\nlayer=all-inv\n\n[prod:vars]\nlayer=prod-inv\nfrom_prod=inv\n\n\
             [web:vars]\nlayer=web-inv\n",
    );
    write(
        &dir,
        "group_vars/all.yml",
        "layer: all-file\nfrom_all: file\nonly_all_file: 1\n",
    );
    write(&dir, "group_vars/prod.yaml", "from_prod: file\n");
    write(
        &dir,
        "group_vars/web/10-base.yml",
        "web_a: base\nweb_b: base\n",
    );
    write(&dir, "group_vars/web/20-over.json", "{\"web_b\": \"over\"}");
    write(&dir, "group_vars/web/.hidden.yml", "web_a: hidden\n");
    write(&dir, "group_vars/web/notes.txt", "not: loaded\n");
    write(&dir, "group_vars/unknown.yml", "nobody: here\n");
    write(
        &dir,
        "host_vars/web1.yml",
        "from_host: file\nlayer: web1-file\n",
    );
    let inv = Inventory::load(&inv_path).unwrap();

    let web1 = inv.host("web1").unwrap();
    assert_eq!(web1.groups, ["all", "prod", "web"]);
    let expected = json!({
        "from_all": "file",        // group_vars/all beats [all:vars]
        "from_prod": "file",       // group_vars/prod beats [prod:vars]
        "from_host": "file",       // host_vars beats the host line
        "layer": "web1-file",      // host_vars beat everything
        "only_all_file": 1,
        "web_a": "base",           // .hidden.yml and notes.txt are skipped
        "web_b": "over",           // directory files merge in sorted order
    });
    assert_eq!(serde_json::to_value(&web1.vars).unwrap(), expected);

    // Real Ansible precedence: every group_vars/ file beats every inventory-file group
    // var, so group_vars/all.yml overrides [web:vars] here.
    let web2 = inv.host("web2").unwrap();
    assert_eq!(web2.vars["layer"], json!("all-file"));
    assert_eq!(inv.groups["web"].vars["web_b"], json!("over"));
    assert_eq!(inv.groups["web"].vars["layer"], json!("web-inv"));
    assert!(!inv.groups.contains_key("unknown"));
}

#[test]
fn group_depth_and_priority_order() {
    let dir = scratch("depth");
    let path = write(
        &dir,
        "hosts.ini",
        "[a]\nh1\n[b]\nh1\n[c]\nh1\n[parent:children]\nc\n\
             [a:vars]\nx=a\n[b:vars]\nx=b\n[c:vars]\nx=c\n[parent:vars]\nx=parent\n\
             [all:vars]\nx=all\ny=all\n",
    );
    let inv = Inventory::load(&path).unwrap();
    // c is deepest (all -> parent -> c), so it wins; a and b (depth 1) lose to it.
    assert_eq!(inv.host("h1").unwrap().vars["x"], json!("c"));
    assert_eq!(inv.host("h1").unwrap().vars["y"], json!("all"));

    let path = write(
        &dir,
        "prio.ini",
        "[a]\nh1\n[b]\nh1\n[a:vars]\nx=a\nansible_group_priority=5\n[b:vars]\nx=b\n",
    );
    let inv = Inventory::load(&path).unwrap();
    // Same depth: b would win alphabetically, but a's priority 5 beats b's default 1.
    assert_eq!(inv.host("h1").unwrap().vars["x"], json!("a"));
    assert!(!inv.groups["a"].vars.contains_key("ansible_group_priority"));
}

#[test]
fn bad_vars_files_are_all_reported() {
    let dir = scratch("badvars");
    let path = write(&dir, "hosts.ini", "web1\n[db]\ndb1 bad\n");
    write(&dir, "group_vars/all.yml", "a: 1\n- b\n");
    write(&dir, "host_vars/web1.yml", "- just\n- a list\n");
    let err = Inventory::load(&path).unwrap_err();
    let text: Vec<String> = err.iter().map(|d| d.to_string()).collect();
    assert_eq!(text.len(), 3, "{text:#?}");
    assert_eq!(
        text[0],
        format!(
            "error: expected key=value host variable, found `bad`\n --> {}:3:5\n  |\n3 | db1 bad\n  |     ^^^\n  = hint: host variables are written `key=value` (quote values with spaces: key=\"a b\")",
            path.display()
        )
    );
    assert_eq!(
        text[1],
        format!(
            "error: while parsing a block mapping, did not find expected key\n --> {}:2:3\n  |\n2 | - b\n  |   ^",
            dir.join("group_vars/all.yml").display()
        )
    );
    assert_eq!(
        text[2],
        format!(
            "error: a vars file must be a mapping of variable names to values, found a sequence\n --> {}:1:1\n  |\n1 | - just\n  | ^\n  = hint: write one `name: value` per line",
            dir.join("host_vars/web1.yml").display()
        )
    );
}
