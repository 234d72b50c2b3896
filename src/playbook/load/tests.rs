use super::*;

fn errors(text: &str) -> String {
    match parse(Path::new("pb.yaml"), text) {
        Ok(_) => panic!("expected errors"),
        Err(d) => d.to_string(),
    }
}

const GOOD: &str = "id: demo
title: Demo
vars:
  iface: flannel.1
steps:
  - id: s1
    link: {name: \"{{ iface }}\", state: absent}
";

#[test]
fn a_huge_playbook_is_refused_before_parsing() {
    let huge = format!("{GOOD}summary: \"{}\"\n", "x".repeat(MAX_PLAYBOOK_BYTES));
    let e = errors(&huge);
    assert!(e.contains("playbook is larger than 1 MiB"), "{e}");
    assert!(e.contains("hint:"), "{e}");
}

#[test]
fn a_secret_goes_only_bare_into_stdin_or_file_content() {
    let ok = "id: demo
title: Demo
vars:
  pw: {default: '', secret: true}
steps:
  - id: f
    file: {path: /etc/x, content: \"pw={{ pw }}\\n\"}
  - id: l
    file_lines: {path: /etc/y, lines: [{regexp: '^pw=', line: 'pw={{ pw }}'}]}
  - id: c
    command: {run: [sh, -c, 'cat >/etc/z'], stdin: '{{ pw }}', creates: /etc/z, undo: [rm, -f, /etc/z]}
";
    let pb = parse(Path::new("pb.yaml"), ok).expect("valid");
    assert!(!pb.secret_leaks.contains_key("pw"), "{:?}", pb.secret_leaks);
    for (from, to) in [
        (
            "content: \"pw={{ pw }}\\n\"",
            "content: \"pw={{ pw | reverse }}\"",
        ),
        (
            "stdin: '{{ pw }}'",
            "stdin: '{{ pw|replace(\"\", \" \") }}'",
        ),
        ("path: /etc/x", "path: '/etc/{{ pw }}'"),
        (
            "run: [sh, -c, 'cat >/etc/z']",
            "run: [sh, -c, 'cat >\"$1\"', sh, '{{ pw }}']",
        ),
        ("regexp: '^pw='", "regexp: '^{{ pw }}'"),
        ("  - id: f\n", "  - id: f\n    when: pw == 'x'\n"),
    ] {
        assert!(ok.contains(from), "{from}");
        let e = errors(&ok.replace(from, to));
        assert!(
            e.contains("secret variable `pw` is used where its value can leak"),
            "{to}: {e}"
        );
        assert!(e.contains("hint: a secret goes only into"), "{e}");
    }
    // Not declared secret: accepted, and the leaks are known for --secret-file.
    let plain = ok
        .replace(", secret: true", "")
        .replace("path: /etc/x", "path: '/etc/{{ pw }}'");
    let pb = parse(Path::new("pb.yaml"), &plain).expect("valid");
    assert_eq!(pb.secret_leaks["pw"].len(), 1);
    assert!(
        pb.secret_leaks["pw"][0].to_string().contains("pb.yaml:7:"),
        "{}",
        pb.secret_leaks["pw"][0]
    );
}

#[test]
fn a_template_inside_a_shell_script_is_refused_unless_shell_quoted() {
    let text = "id: demo
title: Demo
vars:
  v: x
detect:
  - command: [sh, -c, 'test -e /x/{{ v }}']
    exit: 0
steps:
  - id: s1
    command:
      run: [bash, -ec, 'echo {{ v }}']
      unless: [timeout, '5', sh, -c, 'test -e /x/{{ v }}']
      undo: [sh, -c, 'rm -f /x/\"$1\"', sh, '{{ v }}']
";
    let e = errors(text);
    assert_eq!(e.matches("inside a shell script").count(), 3, "{e}");
    assert!(e.contains("hint: pass the value as an argument"), "{e}");
    assert!(e.contains("shell_quote"), "{e}");
    // As arguments, or quoted by the filter: accepted.
    let ok = text
        .replace("'test -e /x/{{ v }}'", "'test -e \"/x/$1\"', sh, '{{ v }}'")
        .replace("'echo {{ v }}'", "'echo {{ v | shell_quote }}'");
    parse(Path::new("pb.yaml"), &ok).expect("valid");
}

#[test]
fn run_on_is_a_step_field_checked_like_any_template() {
    let text = "id: demo
title: Demo
steps:
  - id: s1
    run_on: kube_control_plane
    file: {path: \"/etc/x/{{ facts.hostname }}\", content: \"{{ delegate.name }}\"}
";
    let pb = parse(Path::new("pb.yaml"), text).expect("valid");
    assert_eq!(
        pb.steps[0].run_on.as_ref().map(|t| t.value.as_str()),
        Some("kube_control_plane")
    );
    let e = errors(&text.replace("kube_control_plane", "\"{{ nope }}\""));
    assert!(e.contains("nope"), "{e}");
    let e = errors(&text.replace("run_on", "run_onn"));
    assert!(e.contains("unknown step field `run_onn`"), "{e}");
    assert!(e.contains("run_on"), "{e}");
}

#[test]
fn an_etcd_step_names_what_it_deletes_and_filters_by_key_value_json() {
    let text = "id: demo
title: Demo
steps:
  - id: s1
    etcd:
      endpoints: http://127.0.0.1:2379
      delete:
        prefix: /calico/
        where: \"json.node == facts.hostname and key is startingwith(value)\"
";
    parse(Path::new("pb.yaml"), text).expect("valid");
    let e = errors(&text.replace("facts.hostname", "nodez"));
    assert!(e.contains("nodez"), "{e}");
    let e = errors(&text.replace("        prefix: /calico/\n", "").replace(
        "        where: \"json.node == facts.hostname and key is startingwith(value)\"\n",
        "        keys: []\n",
    ));
    assert!(e.contains("etcd step `s1` deletes nothing"), "{e}");
    assert!(e.contains("hint:"), "{e}");
}

#[test]
fn a_gathered_variable_comes_from_the_node_and_has_no_default() {
    let ok = "id: g\ntitle: G\nvars:\n  net:\n    description: the network\n\
                  gather:\n  net: {file: /run/flannel/subnet.env, regex: 'NET=(\\S+)'}\n  \
                  sub: {value: \"{{ net | network }}\"}\n\
                  steps:\n  - id: s\n    route: {dest: \"{{ net }}\", within: true, where: \"route.dev != 'x'\", state: absent}\n";
    let pb = parse(Path::new("g.yaml"), ok).expect("valid");
    assert!(pb.vars[0].gathered);
    // A default would be one site's value, applied wherever the read finds nothing.
    let defaulted = ok.replace(
        "    description: the network\n",
        "    default: 10.244.0.0/16\n",
    );
    let e = errors(&defaulted);
    assert!(
        e.contains("`net` is gathered from each host (`gather: net`): it has no default"),
        "{e}"
    );
    assert!(e.contains("set it with `-e net=...`"), "{e}");
    // Preconditions run before anything is gathered.
    let early = ok.replace(
        "steps:",
        "preconditions:\n  - {path: \"{{ net }}\"}\nsteps:",
    );
    assert!(
        errors(&early).contains("a precondition cannot use `net`"),
        "{}",
        errors(&early)
    );
    // A route's `where` is an expression that sees `route`; a probe's `when` too is
    // checked before any host.
    let bad_where = ok.replace("route.dev != 'x'", "rout.dev != 'x'");
    assert!(errors(&bad_where).contains("undefined variable `rout`"));
    let bad_when = ok.replace(
        "steps:",
        "verify:\n  - {path: /x, when: \"nosuch\"}\nsteps:",
    );
    assert!(errors(&bad_when).contains("undefined variable `nosuch`"));
}

#[test]
fn an_etcd_group_needs_one_capture_and_its_where_sees_the_group() {
    let pb = |group: &str, filter: &str| {
        format!(
            "id: demo\ntitle: Demo\nsteps:\n  - id: s1\n    etcd:\n      endpoints: http://127.0.0.1:2379\n      delete:\n        prefix: /calico\n        group: '{group}'\n        where: \"{filter}\"\n"
        )
    };
    let ok = pb(
        "^/calico/(?:bgp/)?v1/host/([^/]+)/",
        "group in groups and keys and json and listed",
    );
    parse(Path::new("pb.yaml"), &ok).expect("valid");
    let none = errors(&pb("^/calico/v1/host/", "group != ''"));
    assert!(none.contains("exactly one capture group"), "{none}");
    let two = errors(&pb("^/calico/(v1|bgp)/host/([^/]+)/", "group != ''"));
    assert!(
        two.contains("exactly one capture group") && two.contains("(?:"),
        "{two}"
    );
    let bad = errors(&pb("^/calico/(", "group != ''"));
    assert!(bad.contains("invalid regex"), "{bad}");
    // A group's `where` sees the group, not one key.
    let key = errors(&pb("^/calico/v1/host/([^/]+)/", "key != ''"));
    assert!(key.contains("key"), "{key}");
}

#[test]
fn an_etcd_group_by_and_rewrite_are_checked_at_load() {
    let pb = |extra: &str| {
        format!(
            "id: demo\ntitle: Demo\nsteps:\n  - id: s1\n    etcd:\n      endpoints: http://127.0.0.1:2379\n{extra}      delete:\n        prefix: /calico/\n        group_by: \"key | calico_owner(json)\"\n        where: \"group in groups and keys and json and listed\"\n        rewrite: \"json | calico_release_block(['ipip-tunnel-addr-' ~ group]) if key is startingwith('/calico/ipam/') else none\"\n"
        )
    };
    parse(Path::new("pb.yaml"), &pb("")).expect("valid");
    parse(Path::new("pb.yaml"), &pb("      api: 2\n")).expect("valid on v2 too");
    let both = errors(&pb("").replace(
        "        group_by:",
        "        group: '^/calico/([^/]+)'\n        group_by:",
    ));
    assert!(both.contains("both `group` and `group_by`"), "{both}");
    // `group_by` sees one key, not a group.
    let bad = errors(&pb("").replace("key | calico_owner(json)", "group | calico_owner(json)"));
    assert!(bad.contains("group"), "{bad}");
    let unknown = errors(&pb("").replace("else none", "else nothing_here"));
    assert!(unknown.contains("nothing_here"), "{unknown}");
}

#[test]
fn a_variable_s_choices_are_a_list_holding_its_default() {
    let pb = |choices: &str| {
        format!(
            "id: demo\ntitle: Demo\nvars:\n  mode:\n    default: auto\n    choices: {choices}\nsteps:\n  - id: s\n    link: {{name: \"x{{{{ mode }}}}\", state: absent}}\n"
        )
    };
    let ok = parse(Path::new("pb.yaml"), &pb("[auto, v3]")).expect("valid");
    assert_eq!(ok.vars[0].choices.len(), 2);
    let missing = errors(&pb("[v3, v1]"));
    assert!(
        missing.contains("the default is not one of its `choices`"),
        "{missing}"
    );
    let scalar = errors(&pb("v3"));
    assert!(scalar.contains("`choices` is a list"), "{scalar}");
}

#[test]
fn an_iptables_step_does_one_thing_and_names_its_chain() {
    let pb = |spec: &str| {
        format!("id: demo\ntitle: Demo\nsteps:\n  - id: s\n    iptables: {{{spec}}}\n")
    };
    parse(Path::new("pb.yaml"), &pb("chain: FORWARD, rule: -j ACCEPT")).expect("valid");
    parse(Path::new("pb.yaml"), &pb("flush: true")).expect("a whole table");
    let two = errors(&pb("chain: FORWARD, rule: -j ACCEPT, policy: ACCEPT"));
    assert!(
        two.contains("more than one of `rule`, `flush: true` and `policy`"),
        "{two}"
    );
    let none = errors(&pb("chain: FORWARD"));
    assert!(none.contains("has none of"), "{none}");
    let chainless = errors(&pb("rule: -j ACCEPT"));
    assert!(
        chainless.contains("a `rule` needs its `chain`"),
        "{chainless}"
    );
    let policy = errors(&pb("policy: ACCEPT"));
    assert!(policy.contains("a `policy` needs its `chain`"), "{policy}");
}

#[test]
fn a_playbook_reading_inventory_hostnames_says_so() {
    let pb = parse(Path::new("pb.yaml"), GOOD).expect("valid");
    assert!(!pb.uses_inventory_hostnames);
    let text = GOOD.replace(
        "state: absent}",
        "state: absent}\n    when: \"facts.hostname in inventory_hostnames\"",
    );
    let pb = parse(Path::new("pb.yaml"), &text).expect("valid");
    assert!(pb.uses_inventory_hostnames);
}

#[test]
fn a_good_playbook_loads() {
    let pb = parse(Path::new("pb.yaml"), GOOD).expect("valid");
    assert_eq!(pb.id, "demo");
    assert_eq!(pb.steps.len(), 1);
    assert_eq!(pb.vars[0].default, serde_json::json!("flannel.1"));
}

#[test]
fn every_error_is_reported_at_once_with_position_and_hint() {
    let text = "id: demo
title: Demo
stepz: []
vars:
  iface: eth0
steps:
  - id: s1
    link: {name: \"{{ ifac }}\", stat: absent}
  - id: s2
    sysctl: {key: net.ipv4.ip_forward, value: 1, persist: maybe}
  - id: s3
    routes: {dest: 10.0.0.0/8}
";
    assert_eq!(
        errors(text),
        "error: unknown playbook field `stepz`
 --> pb.yaml:3:1
  |
3 | stepz: []
  | ^^^^^
  = hint: did you mean `steps`?

error: unknown field `stat`, expected one of `name`, `state`, `kind`, `args`
 --> pb.yaml:8:32
  |
8 |     link: {name: \"{{ ifac }}\", stat: absent}
  |                                ^^^^
  = hint: did you mean `state`?

error: invalid type: string \"maybe\", expected a boolean
  --> pb.yaml:10:59
   |
10 |     sysctl: {key: net.ipv4.ip_forward, value: 1, persist: maybe}
   |                                                           ^^^^^

error: unknown step field `routes`
  --> pb.yaml:12:5
   |
12 |     routes: {dest: 10.0.0.0/8}
   |     ^^^^^^
   = hint: did you mean `route`?

error: 4 problems found"
    );
}

#[test]
fn templates_are_checked_before_any_host() {
    let text = "id: demo
title: Demo
vars:
  iface: eth0
steps:
  - id: s1
    link: {name: \"{{ ifac }}\", state: absent}
  - id: s2
    link: {name: \"{{ iface \", state: absent}
";
    let e = errors(text);
    assert!(
        e.contains("error: undefined variable `ifac`\n --> pb.yaml:7:18"),
        "{e}"
    );
    assert!(e.contains("= hint: did you mean `iface`?"), "{e}");
    assert!(e.contains("error: bad template: syntax error"), "{e}");
    assert!(e.contains("--> pb.yaml:9:18"), "{e}");
}

#[test]
fn missing_fields_and_bad_yaml() {
    assert_eq!(
        errors("title: x\n"),
        "error: missing field `id`
 --> pb.yaml:1:1
  |
1 | title: x
  | ^^^^^
  = hint: add `id: my-fix` (lowercase letters, digits, dashes)

error: missing field `steps`
 --> pb.yaml:1:1
  |
1 | title: x
  | ^^^^^
  = hint: a playbook needs at least one step (or, for detection only, a `remedy:`)

error: 2 problems found"
    );
    let e = errors("id: x\ntitle: [unclosed\n");
    assert!(e.starts_with("error: "), "{e}");
    assert!(e.contains("pb.yaml:"), "{e}");
    assert!(e.contains("hint: the playbook is not valid YAML"), "{e}");
}

#[test]
fn undo_is_required_for_commands() {
    let text = "id: demo\ntitle: Demo\nsteps:\n  - id: c\n    command: {run: [true]}\n";
    let e = errors(text);
    assert!(
        e.starts_with("error: step `c` cannot be undone\n --> pb.yaml:4:5"),
        "{e}"
    );
    assert!(
        e.contains("hint: add `undo:` to the command, or `irreversible: \"<why>\"`"),
        "{e}"
    );
}

#[test]
fn probes_have_one_subject_and_one_predicate() {
    let text = "id: demo\ntitle: Demo\ndetect:\n  - {sysctl: a.b, link: x}\n  - {sysctl: a.b, equals: '1', matches: '1'}\n  - {drift: nope}\nsteps:\n  - id: s\n    link: {name: x, state: absent}\n";
    let e = errors(text);
    assert!(
        e.contains("error: a probe has one subject, found sysctl and link"),
        "{e}"
    );
    assert!(
        e.contains("error: a probe has at most one predicate"),
        "{e}"
    );
    assert!(e.contains("error: `drift` names no step `nope`"), "{e}");
}

#[test]
fn every_shipped_playbook_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks");
    let files = crate::playbook::discover(&dir);
    assert!(files.len() >= 6);
    for f in files {
        if let Err(e) = load(&f) {
            panic!("{}: {e}", f.display());
        }
    }
}
