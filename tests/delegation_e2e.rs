//! Step delegation (`run_on`) on real lab hosts: a step planned and applied on the
//! first reachable control-plane host while fixing others, its templates seeing the
//! fixed host's facts; the run's own rollback and `kfix rollback` undo it there. The
//! `etcd` step against a real etcd, delegated the same way.

mod common;

use common::{Etcd, Lab, host, require_root};
use serde_json::{Value, json};

const DELEGATED: &str = r#"id: delegated
title: One step on the control plane for each fixed node
steps:
  - id: record
    run_on: kube_control_plane
    file:
      path: "/etc/kfix-nodes/{{ facts.hostname }}"
      content: "node={{ inventory_hostname }} via={{ delegate.name }} cp={{ delegate.hostname }}\n"
  - id: local
    file: {path: /etc/kfix-local, content: "fixed\n"}
verify:
  - {file: /etc/kfix-local, matches: '(?m)^fixed$'}
"#;

fn inventory(lab: &Lab) -> String {
    let base = std::fs::read_to_string(lab.inventory()).unwrap();
    let path = lab.dir.join("delegation.ini");
    std::fs::write(&path, format!("{base}\n[kube_control_plane]\nh1\nh3\n")).unwrap();
    path.to_str().unwrap().to_string()
}

fn kfix(lab: &Lab, args: &[&str]) -> Value {
    let out = lab.kfix(args);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn run(lab: &Lab, inv: &str, pb: &str, limit: &str, extra: &[&str]) -> Value {
    let cfg = lab.ssh_config();
    let mut args = vec![
        "run",
        pb,
        "-i",
        inv,
        "--ssh-config",
        cfg.to_str().unwrap(),
        "--limit",
        limit,
        "--output",
        "json",
    ];
    args.extend_from_slice(extra);
    kfix(lab, &args)
}

#[test]
fn a_delegated_step_runs_and_is_undone_on_the_control_plane() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(3);
    let inv = inventory(&lab);
    lab.sh("h1", "mkdir -p /etc/kfix-nodes");
    let name = |h: &str| lab.sh(h, "uname -n").trim().to_string();
    let (n1, n2, n3) = (name("h1"), name("h2"), name("h3"));
    let pb = lab.dir.join("delegated.yaml");
    std::fs::write(&pb, DELEGATED).unwrap();
    let pb = pb.to_str().unwrap();
    let before: Vec<String> = ["h1", "h2", "h3"].iter().map(|h| lab.snapshot(h)).collect();

    // Dry-run: each fixed host's `record` step runs on h1, with its own hostname.
    let dry = run(&lab, &inv, pb, "h2:h3", &["--dry-run"]);
    for (h, n) in [("h2", &n2), ("h3", &n3)] {
        let st = &host(&dry, h)["steps"][0];
        assert_eq!(st["run_on"], "h1", "{dry:#}");
        let diff = st["diff"].as_str().unwrap();
        assert!(
            diff.contains(&format!("/etc/kfix-nodes/{n}"))
                && diff.contains(&format!("node={h} via=h1 cp={n1}")),
            "{diff}"
        );
        assert!(host(&dry, h)["steps"][1].get("run_on").is_none(), "{dry:#}");
    }
    let human = lab.kfix(&[
        "run",
        pb,
        "-i",
        &inv,
        "--ssh-config",
        lab.ssh_config().to_str().unwrap(),
        "--limit",
        "h2",
        "--dry-run",
    ]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("record [file] (runs on h1)"), "{text}");
    for (i, h) in ["h1", "h2", "h3"].iter().enumerate() {
        assert_eq!(lab.snapshot(h), before[i], "dry-run changed {h}");
    }

    // Apply: the records land on h1 (not on the fixed hosts), the local file on each.
    let done = run(&lab, &inv, pb, "h2:h3", &["--yes"]);
    assert_eq!(done["summary"]["changed"], 2, "{done:#}");
    for (h, n) in [("h2", &n2), ("h3", &n3)] {
        assert_eq!(
            lab.sh("h1", &format!("cat /etc/kfix-nodes/{n}")),
            format!("node={h} via=h1 cp={n1}\n")
        );
        assert_eq!(lab.sh(h, "cat /etc/kfix-local"), "fixed\n");
        assert_eq!(lab.sh(h, "ls -A /etc/kfix-nodes 2>/dev/null || true"), "");
    }
    assert_eq!(lab.sh("h1", "ls /etc/kfix-local 2>/dev/null || true"), "");
    let id = done["run_id"].as_str().unwrap().to_string();

    // The journal records where each operation ran.
    let hist = lab.kfix(&["history", &id]);
    assert!(hist.status.success());

    // Second run: nothing to do.
    let again = run(&lab, &inv, pb, "h2:h3", &["--yes"]);
    for h in ["h2", "h3"] {
        assert_eq!(host(&again, h)["status"], "healthy", "{again:#}");
    }

    // kfix rollback undoes the delegated operations on h1 and the rest on h2/h3.
    let rb = kfix(&lab, &["rollback", &id, "--yes", "--output", "json"]);
    for h in ["h2", "h3"] {
        assert_eq!(host(&rb, h)["status"], "rolled_back", "{rb:#}");
        let ops = host(&rb, h)["operations"].to_string();
        assert!(ops.contains("on `h1`"), "{ops}");
    }
    for (i, h) in ["h1", "h2", "h3"].iter().enumerate() {
        assert_eq!(lab.snapshot(h), before[i], "rollback left {h} changed");
    }

    // A failing verification rolls the delegated step back on h1 in the run itself.
    let failing = lab.dir.join("delegated-fail.yaml");
    std::fs::write(&failing, DELEGATED.replace("(?m)^fixed$", "(?m)^never$")).unwrap();
    let failed = run(&lab, &inv, failing.to_str().unwrap(), "h2", &["--yes"]);
    assert_eq!(host(&failed, "h2")["status"], "failed", "{failed:#}");
    assert_eq!(host(&failed, "h2")["steps"][0]["status"], "rolled_back");
    for (i, h) in ["h1", "h2", "h3"].iter().enumerate() {
        assert_eq!(
            lab.snapshot(h),
            before[i],
            "in-run rollback left {h} changed"
        );
    }

    // The first reachable host of the pattern: with h1 down, h3 takes the step.
    lab.stop_sshd("h1");
    let dry = run(&lab, &inv, pb, "h2", &["--dry-run"]);
    assert_eq!(host(&dry, "h2")["steps"][0]["run_on"], "h3", "{dry:#}");
    // No reachable host: the fixed host fails with every reason, nothing applied.
    lab.stop_sshd("h3");
    let none = run(&lab, &inv, pb, "h2", &["--dry-run"]);
    let reason = host(&none, "h2")["reason"].as_str().unwrap().to_string();
    assert!(
        reason.contains("run_on `kube_control_plane`: no reachable host")
            && reason.contains("h1:")
            && reason.contains("h3:"),
        "{reason}"
    );
    lab.start_sshd("h1");
    lab.start_sshd("h3");
}

const ETCD_PURGE: &str = r#"id: etcd-purge
title: Delete the fixed node's records from etcd, from the control plane
vars:
  etcd_endpoints: http://127.0.0.1:2379
steps:
  - id: purge
    run_on: kube_control_plane
    etcd:
      endpoints: "{{ etcd_endpoints }}"
      delete:
        prefix: /kfix-test/nodes/
        where: "key is endingwith('/' ~ inventory_hostname) or (json is mapping and json.node == inventory_hostname)"
"#;

#[test]
fn an_etcd_step_deletes_exactly_the_planned_keys_and_rollback_restores_their_bytes() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(3);
    let inv = inventory(&lab);
    let etcd = Etcd::start(&lab);
    // h2's records: one named after it (not JSON, odd bytes), one whose JSON names it.
    let raw: &[u8] = b"raw\nvalue with \"quotes\" and \\ \x01\n\n";
    etcd.put_bytes("/kfix-test/nodes/h2", raw);
    etcd.put_bytes("/kfix-test/nodes/old-h2", br#"{"node":"h2","x":1}"#);
    etcd.put_bytes("/kfix-test/nodes/h3", br#"{"node":"h3"}"#);
    etcd.put_bytes("/kfix-test/other", b"h2");
    let before = etcd.dump("/kfix-test/");
    let pb = lab.dir.join("etcd-purge.yaml");
    std::fs::write(&pb, ETCD_PURGE).unwrap();
    let pb = pb.to_str().unwrap();
    let e = format!("etcd_endpoints={}", etcd.url);
    let snaps: Vec<String> = ["h1", "h2"].iter().map(|h| lab.snapshot(h)).collect();

    // Dry-run: exactly the two keys and their values, on h1; nothing deleted.
    let dry = run(&lab, &inv, pb, "h2", &["--dry-run", "-e", &e]);
    let st = &host(&dry, "h2")["steps"][0];
    assert_eq!(st["run_on"], "h1", "{dry:#}");
    assert_eq!(st["verdict"], "change", "{dry:#}");
    assert_eq!(
        st["diff"],
        "- /kfix-test/nodes/h2 = raw\\nvalue with \"quotes\" and \\ \\u{1}\\n\\n\n\
         - /kfix-test/nodes/old-h2 = {\"node\":\"h2\",\"x\":1}\n",
        "{dry:#}"
    );
    let cmds = st["commands"].to_string();
    assert!(
        !cmds.contains("old-h2\\\"") && !cmds.contains("raw"),
        "values stay out of argv: {cmds}"
    );
    assert_eq!(etcd.dump("/kfix-test/"), before, "dry-run changed etcd");

    // Apply: those two gone, everything else untouched.
    let done = run(&lab, &inv, pb, "h2", &["--yes", "-e", &e]);
    assert_eq!(host(&done, "h2")["status"], "changed", "{done:#}");
    let left: Vec<String> = etcd
        .dump("/kfix-test/")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(left, ["/kfix-test/nodes/h3", "/kfix-test/other"]);
    let id = done["run_id"].as_str().unwrap().to_string();

    // Second run: nothing to do.
    let again = run(&lab, &inv, pb, "h2", &["--yes", "-e", &e]);
    assert_eq!(host(&again, "h2")["status"], "healthy", "{again:#}");

    // kfix rollback puts both keys back, byte for byte, from h1.
    let rb = kfix(&lab, &["rollback", &id, "--yes", "--output", "json"]);
    assert_eq!(host(&rb, "h2")["status"], "rolled_back", "{rb:#}");
    assert_eq!(
        etcd.dump("/kfix-test/"),
        before,
        "rollback did not restore etcd"
    );
    for (i, h) in ["h1", "h2"].iter().enumerate() {
        assert_eq!(lab.snapshot(h), snaps[i], "{h} changed");
    }

    // A failing verification: the run itself puts the deleted keys back, on h1.
    let failing = lab.dir.join("etcd-purge-fail.yaml");
    std::fs::write(
        &failing,
        format!("{ETCD_PURGE}verify:\n  - {{path: /nonexistent-kfix, exists: true}}\n"),
    )
    .unwrap();
    let failed = run(
        &lab,
        &inv,
        failing.to_str().unwrap(),
        "h2",
        &["--yes", "-e", &e],
    );
    assert_eq!(host(&failed, "h2")["status"], "failed", "{failed:#}");
    assert_eq!(
        host(&failed, "h2")["steps"][0]["status"],
        "rolled_back",
        "{failed:#}"
    );
    assert_eq!(
        etcd.dump("/kfix-test/"),
        before,
        "in-run rollback did not restore etcd"
    );

    // Each delete is a compare-and-delete on the mod_revision seen when planning: at a
    // stale revision etcd refuses it (what kfix's operation reports as "the key changed
    // since it was planned").
    let out = lab.exec(
        "h1",
        &format!(
            "printf 'mod(\"/kfix-test/nodes/h3\") = \"1\"\\n\\ndel \"/kfix-test/nodes/h3\"\\n\\n\\n' | ETCDCTL_API=3 etcdctl --endpoints={} txn",
            etcd.url
        ),
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("FAILURE"));
    assert_eq!(etcd.dump("/kfix-test/"), before);
}

/// A calico v3 node record as calico keeps it in etcd (compact JSON).
fn calico_node(name: &str, cidr: &str) -> String {
    format!(
        "{{\"kind\":\"Node\",\"apiVersion\":\"projectcalico.org/v3\",\"metadata\":{{\"name\":\"{name}\",\"uid\":\"u-{name}\",\"creationTimestamp\":\"2019-03-01T10:00:00Z\"}},\"spec\":{{\"bgp\":{{\"ipv4Address\":\"{cidr}\"}},\"orchRefs\":[{{\"nodeName\":\"{name}\",\"orchestrator\":\"k8s\"}}]}}}}"
    )
}

/// A calico 3.x IPAM block of 64 addresses as libcalico-go stores it (model/block.go's
/// JSON tags, in its field order): `allocs` maps ordinals to attribute indexes, every
/// other ordinal is unallocated; `attrs` are (handle_id, secondary as JSON).
fn calico_block(
    cidr: &str,
    host: &str,
    allocs: &[(usize, usize)],
    attrs: &[(&str, String)],
) -> String {
    let allocations: Vec<String> = (0..64)
        .map(|o| {
            allocs
                .iter()
                .find(|(ord, _)| *ord == o)
                .map_or("null".to_string(), |(_, a)| a.to_string())
        })
        .collect();
    let unallocated: Vec<String> = (0..64)
        .filter(|o| !allocs.iter().any(|(ord, _)| ord == o))
        .map(|o| o.to_string())
        .collect();
    let attributes: Vec<String> = attrs
        .iter()
        .map(|(h, sec)| format!("{{\"handle_id\":\"{h}\",\"secondary\":{sec}}}"))
        .collect();
    format!(
        "{{\"cidr\":\"{cidr}\",\"affinity\":\"host:{host}\",\"strictAffinity\":false,\"allocations\":[{}],\"unallocated\":[{}],\"attributes\":[{}],\"deleted\":false}}",
        allocations.join(","),
        unallocated.join(","),
        attributes.join(",")
    )
}

/// The secondary attributes calico's allocator records for a node's IPIP tunnel
/// address, and for a pod's address (Go maps: sorted keys).
fn tunnel_attr(node: &str) -> (String, String) {
    (
        format!("ipip-tunnel-addr-{node}"),
        format!("{{\"node\":\"{node}\",\"type\":\"ipipTunnelAddress\"}}"),
    )
}
fn pod_attr(node: &str, pod: &str, container: &str) -> (String, String) {
    (
        format!("k8s-pod-network.{container}"),
        format!("{{\"namespace\":\"default\",\"node\":\"{node}\",\"pod\":\"{pod}\"}}"),
    )
}

/// A calico 3 workload endpoint (libcalico-go's v3 WorkloadEndpoint, as stored: the
/// resource version cleared); its name doubles the dashes of each segment.
fn calico_wep(node: &str, pod: &str, container: &str, ip: &str) -> (String, String) {
    let seg = |s: &str| s.replace('-', "--");
    let name = format!("{}-k8s-{}-eth0", seg(node), seg(pod));
    (
        format!("/calico/resources/v3/projectcalico.org/workloadendpoints/default/{name}"),
        format!(
            "{{\"kind\":\"WorkloadEndpoint\",\"apiVersion\":\"projectcalico.org/v3\",\"metadata\":{{\"name\":\"{name}\",\"namespace\":\"default\",\"uid\":\"u-{pod}\",\"creationTimestamp\":\"2019-03-01T10:05:00Z\",\"labels\":{{\"projectcalico.org/namespace\":\"default\",\"projectcalico.org/orchestrator\":\"k8s\"}}}},\"spec\":{{\"orchestrator\":\"k8s\",\"workload\":\"\",\"node\":\"{node}\",\"containerID\":\"{container}\",\"pod\":\"{pod}\",\"endpoint\":\"eth0\",\"ipNetworks\":[\"{ip}/32\"],\"profiles\":[\"kns.default\"],\"interfaceName\":\"cali{container}\",\"mac\":\"\"}}}}"
        ),
    )
}

/// A node's IPAM in calico 3's etcd keyspace: its IPAM host, the affinity of its
/// block, the block (its tunnel address first, then its pods' addresses), the
/// handles, the pods' workload endpoints and its own Felix configuration. Each
/// (key, value).
fn calico_ipam(node: &str, cidr: &str, pods: &[(&str, &str)]) -> Vec<(String, String)> {
    let c = cidr.replace('/', "-");
    let base: Vec<u8> = cidr
        .split('/')
        .next()
        .unwrap()
        .split('.')
        .map(|x| x.parse().unwrap())
        .collect();
    let ip = |o: usize| {
        format!(
            "{}.{}.{}.{}",
            base[0],
            base[1],
            base[2],
            base[3] as usize + o
        )
    };
    let mut attrs = vec![tunnel_attr(node)];
    let mut allocs = vec![(0, 0)];
    let mut out = vec![
        (format!("/calico/ipam/v2/host/{node}"), "{}".to_string()),
        (
            format!("/calico/ipam/v2/host/{node}/ipv4/block/{c}"),
            "{\"state\":\"confirmed\",\"deleted\":false}".to_string(),
        ),
        (
            format!("/calico/ipam/v2/handle/ipip-tunnel-addr-{node}"),
            format!("{{\"block\":{{\"{cidr}\":1}},\"deleted\":false}}"),
        ),
        (
            format!("/calico/resources/v3/projectcalico.org/felixconfigurations/node.{node}"),
            format!(
                "{{\"kind\":\"FelixConfiguration\",\"apiVersion\":\"projectcalico.org/v3\",\"metadata\":{{\"name\":\"node.{node}\",\"uid\":\"f-{node}\",\"creationTimestamp\":\"2019-03-01T10:00:00Z\"}},\"spec\":{{\"defaultEndpointToHostAction\":\"Return\"}}}}"
            ),
        ),
    ];
    for (i, (pod, container)) in pods.iter().enumerate() {
        attrs.push(pod_attr(node, pod, container));
        allocs.push((i + 1, i + 1));
        out.push((
            format!("/calico/ipam/v2/handle/k8s-pod-network.{container}"),
            format!("{{\"block\":{{\"{cidr}\":1}},\"deleted\":false}}"),
        ));
        out.push(calico_wep(node, pod, container, &ip(i + 1)));
    }
    let attrs: Vec<(&str, String)> = attrs.iter().map(|(h, s)| (h.as_str(), s.clone())).collect();
    out.push((
        format!("/calico/ipam/v2/assignment/ipv4/block/{c}"),
        calico_block(cidr, node, &allocs, &attrs),
    ));
    out
}

const CALICO_INIT: &str = r#"#!/bin/sh
# calico-node as a SysV service: a process named calico-node (a copy of sleep) started
# with /etc/default/calico-node's environment, its pid kept in /run.
case "$1" in
  start) [ -f /run/calico-node.pid ] && kill -0 "$(cat /run/calico-node.pid)" 2>/dev/null && exit 0
         [ -r /etc/default/calico-node ] && . /etc/default/calico-node
         setsid /usr/local/bin/calico-node 100000 </dev/null >/dev/null 2>&1 & echo $! > /run/calico-node.pid ;;
  stop) [ -f /run/calico-node.pid ] && kill "$(cat /run/calico-node.pid)" 2>/dev/null; rm -f /run/calico-node.pid ;;
  restart) "$0" stop; "$0" start ;;
  status) [ -f /run/calico-node.pid ] && kill -0 "$(cat /run/calico-node.pid)" 2>/dev/null ;;
esac
"#;

/// kubectl on the control-plane host: logs its call and answers from tables, as the
/// playbook's jsonpath prints: /etc/kfix-pods (`NODE POD ADDRESS`: calico-node pods),
/// /etc/kfix-nodes (`NODE ADDRESS`: InternalIPs), /etc/kfix-workloads (`NODE NAMESPACE
/// POD HOSTNETWORK`). A query that matches nothing prints nothing and exits 0, as
/// kubectl; `delete pod POD -o name` prints `pod/POD`.
const KUBECTL: &str = r#"#!/bin/sh
printf '%s\n' "$*" >> /var/log/kfix-kubectl.log
node=
for a in "$@"; do case "$a" in spec.nodeName=*) node=${a#spec.nodeName=} ;; esac; done
case "$*" in
  "get node "*) while read -r n ip; do [ "$n" = "$3" ] && printf '%s' "$ip"; done </etc/kfix-nodes ;;
  "get pods --all-namespaces "*) while read -r n ns pod hn; do [ "$n" = "$node" ] && echo "$ns $pod $hn"; done </etc/kfix-workloads ;;
  *" get pod "*) while read -r n pod ip; do [ "$n" = "$node" ] && echo "$pod $ip"; done </etc/kfix-pods ;;
  *" delete pod "*) prev=; for a in "$@"; do [ "$prev" = pod ] && echo "pod/$a"; prev=$a; done ;;
esac
exit 0
"#;

/// F7 against a real etcd holding calico's v3 datastore layout, on nodes named the ways
/// calico names them. h2's hostname is mixed case (`Node-A.Example`): calico v3 keys its
/// live record by the lowercased name. h3 is `k8s-h3` in Kubernetes (kubelet's
/// --hostname-override): calico-node, a DaemonSet pod, cached that name in
/// /var/lib/calico/nodename. h1 (the control-plane host, with etcd and kubectl) runs
/// calico-node as a service with NODENAME=cp-h1. Each was renamed before: its old
/// record claims its address. h4, named plainly, has only its live record: a healthy
/// twin. Only the three old records go.
#[test]
fn f7_purge_stale_calico_node_against_a_real_etcd() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(4);
    let inv = inventory(&lab);
    let etcd = Etcd::start(&lab);
    let renamed = ["h1", "h2", "h3"];
    let h2_name = "Node-A.Example";
    lab.sh("h2", &format!("hostname {h2_name}"));
    let cidr = |h: &str| {
        let out = lab.sh(h, "ip -4 -o addr show scope global");
        out.split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .unwrap()
            .to_string()
    };
    let live = |h: &str| match h {
        "h1" => "cp-h1".to_string(),
        "h2" => h2_name.to_lowercase(),
        "h3" => "k8s-h3".to_string(),
        _ => lab.sh(h, "uname -n").trim().to_string(),
    };
    let prefix = "/calico/resources/v3/projectcalico.org/nodes/";
    for h in ["h1", "h2", "h3", "h4"] {
        etcd.put_bytes(
            &format!("{prefix}{}", live(h)),
            calico_node(&live(h), &cidr(h)).as_bytes(),
        );
    }
    for h in renamed {
        etcd.put_bytes(
            &format!("{prefix}AMZ-IAD12-old-{h}"),
            calico_node(&format!("AMZ-IAD12-old-{h}"), &cidr(h)).as_bytes(),
        );
    }
    // A stale record of a machine kfix does not fix here: left alone.
    etcd.put_bytes(
        &format!("{prefix}retired"),
        calico_node("retired", "10.9.9.9/24").as_bytes(),
    );
    // Calico's IPAM, endpoints and per-node configuration (what `calicoctl delete node`
    // removes) of two old names, of h4's live name and of the retired machine, and
    // calico's global keys. h1's old block holds only its tunnel address; h2's also the
    // address of a pod still running on the node (web-2), whose workload endpoint
    // names the old name.
    let old = |h: &str| format!("AMZ-IAD12-old-{h}");
    type NodeIpam<'a> = (String, &'a str, Vec<(&'a str, &'a str)>);
    let ipam: [NodeIpam; 4] = [
        (old("h1"), "10.244.1.0/26", vec![]),
        (old("h2"), "10.244.2.0/26", vec![("web-2", "c2c2")]),
        (live("h4"), "10.244.4.0/26", vec![("web-4", "c4c4")]),
        ("retired".to_string(), "10.244.9.0/26", vec![]),
    ];
    for (node, cidr, pods) in &ipam {
        for (k, v) in calico_ipam(node, cidr, pods) {
            etcd.put_bytes(&k, v.as_bytes());
        }
    }
    etcd.put_bytes(
        "/calico/resources/v3/projectcalico.org/ippools/default-ipv4-ippool",
        br#"{"kind":"IPPool","apiVersion":"projectcalico.org/v3","metadata":{"name":"default-ipv4-ippool","uid":"p1","creationTimestamp":"2019-03-01T09:00:00Z"},"spec":{"cidr":"10.244.0.0/16","ipipMode":"Always","natOutgoing":true,"blockSize":26,"nodeSelector":"all()"}}"#,
    );
    etcd.put_bytes(
        "/calico/resources/v3/projectcalico.org/felixconfigurations/default",
        br#"{"kind":"FelixConfiguration","apiVersion":"projectcalico.org/v3","metadata":{"name":"default","uid":"f0","creationTimestamp":"2019-03-01T09:00:00Z"},"spec":{"logSeverityScreen":"Info","reportingInterval":"0s"}}"#,
    );
    // What kfix deletes for each renamed host (every key of its old name but the pod's
    // handle, which calico frees when the pod goes), and h2's old block as calico
    // leaves it once its affinity and tunnel address are released.
    let h2_block_key = "/calico/ipam/v2/assignment/ipv4/block/10.244.2.0-26".to_string();
    let removed = |h: &str| -> std::collections::BTreeSet<String> {
        let mut keys: std::collections::BTreeSet<String> = [format!("{prefix}{}", old(h))].into();
        if let Some((node, cidr, pods)) = ipam.iter().find(|(n, _, _)| *n == old(h)) {
            keys.extend(
                calico_ipam(node, cidr, pods)
                    .into_iter()
                    .map(|(k, _)| k)
                    .filter(|k| *k != h2_block_key && !k.contains("k8s-pod-network.")),
            );
        }
        keys
    };
    let h2_block_after = {
        let before: Value = serde_json::from_str(
            &calico_ipam(&old("h2"), "10.244.2.0/26", &[("web-2", "c2c2")])
                .into_iter()
                .find(|(k, _)| *k == h2_block_key)
                .unwrap()
                .1,
        )
        .unwrap();
        let mut b = before.clone();
        b["affinity"] = Value::Null;
        b["allocations"][0] = Value::Null;
        b["allocations"][1] = json!(0);
        b["unallocated"].as_array_mut().unwrap().push(json!(0));
        b["attributes"].as_array_mut().unwrap().remove(0);
        b
    };
    let before = etcd.dump("/calico/");
    // Calico 3 writes a .conflist; h1 keeps calico 2's .conf name.
    for (h, conf) in [
        ("h1", "10-calico.conf"),
        ("h2", "10-calico.conflist"),
        ("h3", "10-calico.conflist"),
        ("h4", "10-calico.conflist"),
    ] {
        lab.sh(
            h,
            &format!("mkdir -p /etc/cni/net.d && echo '{{\"name\":\"k8s-pod-network\"}}' > /etc/cni/net.d/{conf}"),
        );
    }
    lab.sh(
        "h3",
        "mkdir -p /var/lib/calico && printf k8s-h3 > /var/lib/calico/nodename",
    );
    lab.write_file(
        "h1",
        "/etc/default/calico-node",
        "NODENAME=cp-h1\nexport NODENAME\n",
    );
    for h in ["h1", "h2"] {
        lab.write_file(h, "/etc/init.d/calico-node", CALICO_INIT);
        lab.sh(
            h,
            "cp /bin/sleep /usr/local/bin/calico-node && chmod 755 /etc/init.d/calico-node && /etc/init.d/calico-node start",
        );
    }
    lab.write_file("h1", "/usr/local/bin/kubectl", KUBECTL);
    lab.sh("h1", "chmod 755 /usr/local/bin/kubectl");
    let ip = |h: &str| cidr(h).split('/').next().unwrap().to_string();
    lab.write_file(
        "h1",
        "/etc/kfix-pods",
        &format!(
            "k8s-h3 calico-node-7xk2p {}\nk8s-h2 calico-node-q9z4d {}\n",
            ip("h3"),
            ip("h2")
        ),
    );
    let e = format!("etcd_endpoints={}", etcd.url);
    let pb = "purge-stale-calico-node";
    let jsonpath = r#"jsonpath={range .items[*]}{.metadata.name}{" "}{.status.podIP}{"\n"}{end}"#;
    let get_call = |node: &str| {
        format!(
            "-n kube-system get pod -l k8s-app=calico-node --field-selector spec.nodeName={node} -o {jsonpath}\n"
        )
    };
    let kubectl_call = format!(
        "{}-n kube-system delete pod calico-node-7xk2p -o name\n",
        get_call("k8s-h3")
    );

    // Dry-run: per node exactly its old record, and the restart its setup needs; h4 is
    // healthy.
    let all = "h1:h2:h3:h4";
    let dry = run(&lab, &inv, pb, all, &["--dry-run", "-e", &e]);
    assert_eq!(host(&dry, "h4")["status"], "healthy", "{dry:#}");
    for (h, mode) in [("h1", "unit"), ("h2", "unit"), ("h3", "daemonset")] {
        assert_eq!(host(&dry, h)["status"], "would_change", "{dry:#}");
        let steps = host(&dry, h)["steps"].as_array().unwrap();
        assert_eq!(steps[0]["run_on"], "h1");
        let diff = steps[0]["diff"].as_str().unwrap();
        if h == "h3" {
            assert_eq!(
                diff,
                format!(
                    "- {prefix}AMZ-IAD12-old-{h} = {}\n",
                    calico_node(&format!("AMZ-IAD12-old-{h}"), &cidr(h))
                ),
                "{dry:#}"
            );
        }
        let minus: std::collections::BTreeSet<String> = diff
            .lines()
            .filter_map(|l| l.strip_prefix("- "))
            .map(|l| l.split(" = ").next().unwrap().to_string())
            .filter(|k| *k != h2_block_key)
            .collect();
        assert_eq!(minus, removed(h), "{h}: {diff}");
        let plus: Vec<&str> = diff.lines().filter(|l| l.starts_with("+ ")).collect();
        if h == "h2" {
            let (k, v) = plus[0][2..].split_once(" = ").unwrap();
            assert_eq!(k, h2_block_key);
            assert_eq!(serde_json::from_str::<Value>(v).unwrap(), h2_block_after);
            assert_eq!(plus.len(), 1, "{diff}");
        } else {
            assert!(plus.is_empty(), "{diff}");
        }
        assert!(
            steps[1]["reason"]
                .as_str()
                .unwrap()
                .contains("only_if not met: etcd's v2 API holds calico 2's host data"),
            "calico 2's step, looked for by default (auto): {dry:#}"
        );
        let (unit, pod) = (&steps[2], &steps[3]);
        if mode == "unit" {
            assert_eq!(unit["verdict"], "change", "{dry:#}");
            assert!(unit["reason"].is_null());
            assert!(
                pod["reason"].as_str().unwrap().contains("skipped"),
                "{dry:#}"
            );
        } else {
            assert!(
                unit["reason"].as_str().unwrap().contains("skipped"),
                "{dry:#}"
            );
            assert_eq!(pod["run_on"], "h1");
            let cmd = pod["commands"][0].as_str().unwrap();
            assert!(
                cmd.starts_with("sh -c ") && cmd.contains(" sh kube-system k8s-h3 "),
                "{dry:#}"
            );
        }
    }
    assert_eq!(etcd.dump("/calico/"), before, "dry-run changed etcd");

    // Apply: the three old records go, every live one and the retired one stay.
    let pid = |h: &str| lab.sh(h, "cat /run/calico-node.pid");
    let pids0 = [pid("h1"), pid("h2")];
    let done = run(&lab, &inv, pb, all, &["--yes", "-e", &e]);
    assert_eq!(host(&done, "h4")["status"], "healthy", "{done:#}");
    for h in renamed {
        assert_eq!(host(&done, h)["status"], "changed", "{done:#}");
    }
    // Every other key is as it was, byte for byte; h2's old block is released.
    let gone: std::collections::BTreeSet<String> =
        renamed.iter().flat_map(|h| removed(h)).collect();
    let after = etcd.dump("/calico/");
    let want: Vec<(String, Vec<u8>)> = before
        .iter()
        .filter(|(k, _)| !gone.contains(k) && *k != h2_block_key)
        .cloned()
        .collect();
    let rest: Vec<(String, Vec<u8>)> = after
        .iter()
        .filter(|(k, _)| *k != h2_block_key)
        .cloned()
        .collect();
    assert_eq!(rest, want);
    let block = &after.iter().find(|(k, _)| *k == h2_block_key).unwrap().1;
    assert_eq!(
        serde_json::from_slice::<Value>(block).unwrap(),
        h2_block_after
    );
    assert_ne!(pid("h1"), pids0[0], "calico-node restarted on h1");
    assert_ne!(pid("h2"), pids0[1], "calico-node restarted on h2");
    assert_eq!(lab.sh("h1", "cat /var/log/kfix-kubectl.log"), kubectl_call);
    let id = done["run_id"].as_str().unwrap().to_string();

    // Second run: nothing to do.
    let again = run(&lab, &inv, pb, all, &["--yes", "-e", &e]);
    for h in ["h1", "h2", "h3", "h4"] {
        assert_eq!(host(&again, h)["status"], "healthy", "{again:#}");
    }

    // Rollback restores the deleted records byte for byte.
    let rb = kfix(&lab, &["rollback", &id, "--yes", "--output", "json"]);
    for h in renamed {
        assert_eq!(host(&rb, h)["status"], "rolled_back", "{rb:#}");
    }
    assert_eq!(
        etcd.dump("/calico/"),
        before,
        "rollback did not restore etcd"
    );

    // Report 002's last step, opt-in: the pods on the node's container network are
    // restarted (not those on the host network, not another node's), after calico-node.
    lab.write_file("h1", "/etc/kfix-nodes", &format!("k8s-h3 {}\n", ip("h3")));
    lab.write_file(
        "h1",
        "/etc/kfix-workloads",
        "k8s-h3 default web-1 \nk8s-h3 kube-system kube-proxy-x9 true\nk8s-h2 default web-2 \n",
    );
    lab.sh("h1", ": > /var/log/kfix-kubectl.log");
    let pods = run(
        &lab,
        &inv,
        pb,
        "h3",
        &["--yes", "-e", &e, "-e", "restart_pods=true"],
    );
    assert_eq!(host(&pods, "h3")["status"], "changed", "{pods:#}");
    let log = lab.sh("h1", "cat /var/log/kfix-kubectl.log");
    let calls: Vec<&str> = log.lines().collect();
    assert_eq!(
        calls[..2].join("\n") + "\n",
        kubectl_call,
        "calico-node first"
    );
    assert_eq!(
        calls[2],
        r#"get node k8s-h3 -o jsonpath={.status.addresses[?(@.type=="InternalIP")].address}"#
    );
    assert!(
        calls[3].starts_with("get pods --all-namespaces --field-selector spec.nodeName=k8s-h3 "),
        "{log}"
    );
    assert_eq!(calls[4..], ["-n default delete pod web-1 -o name"], "{log}");
    let id = pods["run_id"].as_str().unwrap().to_string();
    let rb = kfix(&lab, &["rollback", &id, "--yes", "--output", "json"]);
    assert_eq!(host(&rb, "h3")["status"], "rolled_back", "{rb:#}");
    assert_eq!(etcd.dump("/calico/"), before);

    // A node whose live record kfix cannot find under any of its names (calico cached
    // another name) has nothing deleted: its old record could be the live one.
    lab.sh("h3", "printf k8s-other > /var/lib/calico/nodename");
    let unsure = run(&lab, &inv, pb, "h3", &["--dry-run", "-e", &e]);
    assert_eq!(host(&unsure, "h3")["status"], "healthy", "{unsure:#}");
    lab.sh("h3", "printf k8s-h3 > /var/lib/calico/nodename");

    // The restart finds no pod under the node's Kubernetes name (here an operator's
    // wrong -e), or the pod of that name is another node's (its address is not this
    // node's): the step fails, nothing is deleted there, and the host is rolled back.
    for (name, says) in [
        (
            "k8s-other",
            "no calico-node pod of this node (node k8s-other, namespace kube-system)".to_string(),
        ),
        (
            "k8s-h2",
            format!(
                "calico-node pod calico-node-q9z4d of node k8s-h2 has address {}, none of this node's: not deleted",
                ip("h2")
            ),
        ),
    ] {
        lab.sh("h1", ": > /var/log/kfix-kubectl.log");
        let k8s = format!("k8s_node_name={name}");
        let missed = run(&lab, &inv, pb, "h3", &["--yes", "-e", &e, "-e", &k8s]);
        let h3 = host(&missed, "h3");
        assert_eq!(h3["status"], "failed", "{missed:#}");
        let why = h3["reason"].as_str().unwrap();
        assert!(
            why.contains(&says) && why.contains("rolled back"),
            "{missed:#}"
        );
        assert_eq!(h3["steps"][0]["status"], "rolled_back", "{missed:#}");
        assert_eq!(etcd.dump("/calico/"), before);
        assert_eq!(
            lab.sh("h1", "cat /var/log/kfix-kubectl.log"),
            get_call(name)
        );
    }

    // An inventory host that does not answer: its hostname is unknown, so nothing is
    // planned anywhere.
    lab.stop_sshd("h3");
    let partial = run(&lab, &inv, pb, "h2", &["--dry-run", "-e", &e]);
    let reason = host(&partial, "h2")["reason"].as_str().unwrap().to_string();
    assert!(
        reason.contains("`inventory_hostnames`: 1 inventory host did not answer")
            && reason.contains("h3:"),
        "{reason}"
    );
    lab.start_sshd("h3");
    for h in ["h1", "h2"] {
        lab.sh(h, "/etc/init.d/calico-node stop");
    }

    // A rewrite is a compare-and-put at the planned mod_revision, in etcdctl's txn
    // language: etcd stores the value kfix quoted byte for byte, and refuses a stale
    // revision (the value stays).
    let got: Value = serde_json::from_slice(
        &etcd
            .ctl_etcdctl(&["get", &h2_block_key, "-w", "json"])
            .stdout,
    )
    .unwrap();
    let rev = got["kvs"][0]["mod_revision"].as_i64().unwrap();
    let tricky = "{\"a\":\"quote \\\" backslash \\\\ newline \\n\",\"raw\":\"tab\t ü\"}";
    let txn = kfix::steps::etcd::put_txn_text(&h2_block_key, rev, tricky);
    lab.write_file("h1", "/tmp/kfix-txn", &txn);
    let apply = || {
        let out = lab.exec(
            "h1",
            &format!(
                "ETCDCTL_API=3 etcdctl --endpoints={} txn < /tmp/kfix-txn",
                etcd.url
            ),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(apply().starts_with("SUCCESS"), "{txn}");
    let stored = |k: &str| -> Vec<u8> {
        etcd.dump(k)
            .into_iter()
            .find(|(key, _)| key == k)
            .unwrap()
            .1
    };
    assert_eq!(stored(&h2_block_key), tricky.as_bytes());
    etcd.put_bytes(&h2_block_key, b"changed by someone else");
    assert!(apply().starts_with("FAILURE"));
    assert_eq!(stored(&h2_block_key), b"changed by someone else");
}

/// Every v2 directory under `dir` (sorted), for comparing trees.
fn v2_dirs(etcd: &Etcd, dir: &str) -> Vec<String> {
    let out = etcd.v2(&["ls", "--recursive", "-p", dir]);
    let mut d: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.ends_with('/'))
        .map(String::from)
        .collect();
    d.sort();
    d
}

/// Report 002's era: calico 2.x keeps a host under /calico/v1/host/NAME/ and
/// /calico/bgp/v1/host/NAME/ in the etcd v2 keyspace (keys from calico's etcd data
/// model), names it by the hostname as it is, and writes 10-calico.conf. h2 is now
/// `ip-….ec2.internal`; its data under its old name `AMZ-IAD12-H2` (the report's
/// style) still claims its address. The old host's keys and its emptied directories go,
/// with its IPAM affinities and empty block; its block that holds a running pod's
/// address stays, without affinity (released as calico does); h2's live data,
/// calico's global keys and h1 (a healthy twin whose name is mixed case: calico 2 does
/// not lowercase) stay; rollback restores the tree.
#[test]
fn f7_calico_2_host_data_in_the_etcd_v2_keyspace() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(3); // the inventory names h1-h3; h3 has no calico
    let inv = inventory(&lab);
    let etcd = Etcd::start(&lab);
    let ip = |h: &str| {
        let out = lab.sh(h, "ip -4 -o addr show scope global");
        let cidr = out
            .split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .unwrap()
            .to_string();
        cidr.split('/').next().unwrap().to_string()
    };
    let h1_name = format!("Ctl-{}", lab.sh("h1", "uname -n").trim());
    lab.sh("h1", &format!("hostname {h1_name}"));
    let h2_name = format!("ip-{}.ec2.internal", ip("h2").replace('.', "-"));
    lab.sh("h2", &format!("hostname {h2_name}"));
    let host_data = |name: &str, addr: &str, pod: &str| {
        vec![
            (format!("/calico/v1/host/{name}/bird_ip"), addr.to_string()),
            (
                format!("/calico/v1/host/{name}/config/marker"),
                "created".to_string(),
            ),
            (
                format!("/calico/v1/host/{name}/workload/k8s/default.{pod}/endpoint/eth0"),
                format!(
                    "{{\"state\":\"active\",\"name\":\"cali0ef24b1\",\"mac\":\"ee:ee:ee:ee:ee:ee\",\"profile_ids\":[\"k8s_ns.default\"],\"ipv4_nets\":[\"192.168.5.3/32\"],\"ipv6_nets\":[],\"labels\":{{\"app\":\"{pod}\"}}}}"
                ),
            ),
            (
                format!("/calico/bgp/v1/host/{name}/ip_addr_v4"),
                addr.to_string(),
            ),
        ]
    };
    let mut keys = host_data(&h1_name, &ip("h1"), "web-1");
    keys.extend(host_data(&h2_name, &ip("h2"), "web-2"));
    let old = host_data("AMZ-IAD12-H2", &ip("h2"), "web-0");
    keys.extend(old.clone());
    // The old name's IPAM, as calico 2 kept it: block affinities whose value is the
    // empty string (the Python IPAM's), a block holding web-0's address (a pod still
    // running on the node: the block stays, without affinity) and an empty one
    // (deleted). libcalico-go 1.x's block has no `deleted` field.
    let block = |cidr: &str, allocs: &[(usize, usize)], attrs: &[(&str, String)]| {
        calico_block(cidr, "AMZ-IAD12-H2", allocs, attrs).replace(",\"deleted\":false}", "}")
    };
    let busy_block = (
        "/calico/ipam/v2/assignment/ipv4/block/192.168.5.0-26".to_string(),
        block(
            "192.168.5.0/26",
            &[(3, 0)],
            &[("k8s-pod-network.web0cid", "null".to_string())],
        ),
    );
    let ipam_old = vec![
        (
            "/calico/ipam/v2/host/AMZ-IAD12-H2/ipv4/block/192.168.5.0-26".to_string(),
            String::new(),
        ),
        (
            "/calico/ipam/v2/host/AMZ-IAD12-H2/ipv4/block/192.168.5.64-26".to_string(),
            String::new(),
        ),
        (
            "/calico/ipam/v2/assignment/ipv4/block/192.168.5.64-26".to_string(),
            block("192.168.5.64/26", &[], &[]),
        ),
    ];
    keys.extend(ipam_old.clone());
    keys.push(busy_block.clone());
    let busy_after = {
        let mut b: Value = serde_json::from_str(&busy_block.1).unwrap();
        b["affinity"] = Value::Null;
        b
    };
    // What goes: the host's data and its IPAM but the busy block.
    let mut old = old;
    old.extend(ipam_old);
    keys.push(("/calico/v1/config/LogSeverityScreen".into(), "info".into()));
    keys.push(("/calico/bgp/v1/global/as_num".into(), "64512".into()));
    for (k, v) in &keys {
        let out = etcd.v2(&["set", "--", k, v]);
        assert!(out.status.success(), "{out:?}");
    }
    let before = (etcd.dump_v2("/calico"), v2_dirs(&etcd, "/calico"));
    for h in ["h1", "h2"] {
        lab.sh(h, "mkdir -p /etc/cni/net.d && echo '{\"name\":\"calico-k8s-network\",\"type\":\"calico\"}' > /etc/cni/net.d/10-calico.conf");
    }
    lab.write_file("h2", "/etc/init.d/calico-node", CALICO_INIT);
    lab.sh(
        "h2",
        "cp /bin/sleep /usr/local/bin/calico-node && chmod 755 /etc/init.d/calico-node && /etc/init.d/calico-node start",
    );
    let pid0 = lab.sh("h2", "cat /run/calico-node.pid");
    let pb = "purge-stale-calico-node";
    let e = format!("etcd_endpoints={}", etcd.url);
    // The default keyspace (auto) finds calico 2's data where etcd's v2 API serves it;
    // naming calico 2's keyspace plans the same.
    let args = |mode: &'static str| vec![mode, "-e", &e];

    let dry = run(&lab, &inv, pb, "h1:h2", &args("--dry-run"));
    let v1 = run(
        &lab,
        &inv,
        pb,
        "h1:h2",
        &["--dry-run", "-e", &e, "-e", "calico_keyspace=v1"],
    );
    assert_eq!(
        host(&v1, "h2")["steps"][1]["diff"],
        host(&dry, "h2")["steps"][1]["diff"]
    );
    // Calico 3's keyspace (through the v3 API) is looked at too, and is empty here.
    assert_eq!(
        host(&dry, "h2")["steps"][0]["reason"],
        "no key to delete",
        "{dry:#}"
    );
    assert_eq!(host(&dry, "h1")["status"], "healthy", "{dry:#}");
    assert_eq!(host(&dry, "h2")["status"], "would_change", "{dry:#}");
    let mut want = String::new();
    let mut leaves = old.clone();
    leaves.push(busy_block.clone());
    leaves.sort();
    for (k, v) in &leaves {
        want.push_str(&format!("- {k} = {v}\n"));
    }
    for d in [
        "/calico/v1/host/AMZ-IAD12-H2/workload/k8s/default.web-0/endpoint",
        "/calico/v1/host/AMZ-IAD12-H2/workload/k8s/default.web-0",
        "/calico/v1/host/AMZ-IAD12-H2/workload/k8s",
        "/calico/v1/host/AMZ-IAD12-H2/workload",
        "/calico/v1/host/AMZ-IAD12-H2/config",
        "/calico/v1/host/AMZ-IAD12-H2",
        "/calico/ipam/v2/host/AMZ-IAD12-H2/ipv4/block",
        "/calico/ipam/v2/host/AMZ-IAD12-H2/ipv4",
        "/calico/ipam/v2/host/AMZ-IAD12-H2",
        "/calico/bgp/v1/host/AMZ-IAD12-H2",
    ] {
        want.push_str(&format!(
            "- {d}/ (a directory, empty once the keys above are deleted)\n"
        ));
    }
    let step = &host(&dry, "h2")["steps"][1];
    let diff = step["diff"].as_str().unwrap();
    let (plus, minus): (Vec<&str>, Vec<&str>) = diff.lines().partition(|l| l.starts_with("+ "));
    assert_eq!(minus.join("\n") + "\n", want, "{dry:#}");
    let [plus] = plus[..] else {
        panic!("one key is replaced: {diff}")
    };
    let (k, v) = plus[2..].split_once(" = ").unwrap();
    assert_eq!(k, busy_block.0);
    assert_eq!(serde_json::from_str::<Value>(v).unwrap(), busy_after);
    assert_eq!(
        (etcd.dump_v2("/calico"), v2_dirs(&etcd, "/calico")),
        before,
        "dry-run changed etcd"
    );

    let done = run(&lab, &inv, pb, "h1:h2", &args("--yes"));
    assert_eq!(host(&done, "h2")["status"], "changed", "{done:#}");
    assert_eq!(host(&done, "h1")["status"], "healthy", "{done:#}");
    let mut kept: Vec<(String, String, i64)> = keys
        .iter()
        .filter(|kv| !old.contains(kv) && kv.0 != busy_block.0)
        .map(|(k, v)| (k.clone(), v.clone(), 0))
        .collect();
    kept.sort();
    let (busy, rest): (Vec<_>, Vec<_>) = etcd
        .dump_v2("/calico")
        .into_iter()
        .partition(|(k, _, _)| *k == busy_block.0);
    assert_eq!(rest, kept);
    assert_eq!(
        serde_json::from_str::<Value>(&busy[0].1).unwrap(),
        busy_after
    );
    let dirs = v2_dirs(&etcd, "/calico");
    assert!(
        !dirs.iter().any(|d| d.contains("/host/AMZ-IAD12-H2")),
        "{dirs:?}"
    );
    assert_ne!(
        lab.sh("h2", "cat /run/calico-node.pid"),
        pid0,
        "calico-node restarted"
    );
    let id = done["run_id"].as_str().unwrap().to_string();

    let rb = kfix(&lab, &["rollback", &id, "--yes", "--output", "json"]);
    assert_eq!(host(&rb, "h2")["status"], "rolled_back", "{rb:#}");
    assert_eq!(
        (etcd.dump_v2("/calico"), v2_dirs(&etcd, "/calico")),
        before,
        "rollback did not restore the tree"
    );
    lab.sh("h2", "/etc/init.d/calico-node stop");
}

const ETCD_V2_PURGE: &str = r#"id: etcd-v2-purge
title: Delete flannel leases (etcd v2) that carry the retired VTEP MAC
vars:
  etcd_endpoints: http://127.0.0.1:2379
steps:
  - id: purge
    run_on: kube_control_plane
    etcd:
      api: 2
      endpoints: "{{ etcd_endpoints }}"
      delete:
        prefix: /coreos.com/network/subnets
        where: "json is mapping and json.BackendData.VtepMAC == '0a:00:00:00:99:99'"
"#;

/// The v2 API (old flannel): leases are a directory; a lease with a TTL comes back
/// without it, everything else byte for byte.
#[test]
fn an_etcd_v2_step_deletes_by_index_and_rollback_restores_the_values() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(2);
    let inv = inventory(&lab);
    let etcd = Etcd::start(&lab);
    let lease = |mac: &str| {
        format!(
            "{{\"PublicIP\":\"10.0.0.1\",\"BackendType\":\"vxlan\",\"BackendData\":{{\"VtepMAC\":\"{mac}\"}}}}"
        )
    };
    let dir = "/coreos.com/network/subnets";
    let set = |k: &str, v: &str, ttl: Option<&str>| {
        let mut args = vec!["set"];
        if let Some(t) = ttl {
            args.extend(["--ttl", t]);
        }
        args.extend(["--", k, v]);
        assert!(etcd.v2(&args).status.success());
    };
    set(
        &format!("{dir}/10.100.41.0-24"),
        &lease("0a:00:00:00:99:99"),
        None,
    );
    set(
        &format!("{dir}/10.100.42.0-24"),
        &lease("0a:00:00:00:00:02"),
        None,
    );
    set(
        &format!("{dir}/10.100.43.0-24"),
        &lease("0a:00:00:00:99:99"),
        Some("86400"),
    );
    let before = etcd.dump_v2(dir);
    assert_eq!(before.len(), 3);
    let pb = lab.dir.join("etcd-v2-purge.yaml");
    std::fs::write(&pb, ETCD_V2_PURGE).unwrap();
    let pb = pb.to_str().unwrap();
    let e = format!("etcd_endpoints={}", etcd.url);

    let dry = run(&lab, &inv, pb, "h2", &["--dry-run", "-e", &e]);
    let st = &host(&dry, "h2")["steps"][0];
    assert_eq!(
        st["diff"],
        format!(
            "- {dir}/10.100.41.0-24 = {}\n- {dir}/10.100.43.0-24 = {}\n  (TTL {}s: the undo puts the value back without one)\n",
            lease("0a:00:00:00:99:99"),
            lease("0a:00:00:00:99:99"),
            before[2].2
        ),
        "{dry:#}"
    );
    assert!(
        st["commands"][0]
            .as_str()
            .unwrap()
            .starts_with("env ETCDCTL_API=2 etcdctl"),
        "{dry:#}"
    );
    assert_eq!(etcd.dump_v2(dir), before);

    let done = run(&lab, &inv, pb, "h2", &["--yes", "-e", &e]);
    assert_eq!(host(&done, "h2")["status"], "changed", "{done:#}");
    let left: Vec<String> = etcd.dump_v2(dir).into_iter().map(|(k, _, _)| k).collect();
    assert_eq!(left, [format!("{dir}/10.100.42.0-24")]);
    let again = run(&lab, &inv, pb, "h2", &["--yes", "-e", &e]);
    assert_eq!(host(&again, "h2")["status"], "healthy", "{again:#}");

    let id = done["run_id"].as_str().unwrap().to_string();
    let rb = kfix(&lab, &["rollback", &id, "--yes", "--output", "json"]);
    assert_eq!(host(&rb, "h2")["status"], "rolled_back", "{rb:#}");
    let restored: Vec<(String, String)> = etcd
        .dump_v2(dir)
        .into_iter()
        .map(|(k, v, _)| (k, v))
        .collect();
    let want: Vec<(String, String)> = before.into_iter().map(|(k, v, _)| (k, v)).collect();
    assert_eq!(restored, want, "values back byte for byte (the TTL is not)");
}
