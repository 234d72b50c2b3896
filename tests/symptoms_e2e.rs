//! Symptom-verified remediation: each field report's symptom reproduced on a real data
//! plane (tests/lab/flannel.sh: VXLAN, bridges and pods in network namespaces, as
//! flannel programs them), shown by the symptom itself (a ping), then: `kfix check`
//! reports the problem, `kfix run` cures the symptom, `kfix rollback` brings it back,
//! and a healthy twin keeps working throughout.

mod common;

use common::playbook::{check_status, kfix_json, out_json, status};
use common::{Lab, host, require_root};

/// Does a ping from `from`'s pod to `to` get its answer?
fn answers(lab: &Lab, from: &str, to: &str) -> bool {
    lab.pod_ping(from, to).starts_with("64 bytes from ")
}

/// `kfix check ID`: the check status of each host named.
#[track_caller]
fn checked(lab: &Lab, id: &str, want: &[(&str, &str)]) {
    let doc = kfix_json(lab, "check", id, &[]);
    for (h, w) in want {
        assert_eq!(check_status(&doc, h), *w, "{h}: {doc:#}");
    }
}

/// A real run of `id` on `limit` that changes every host it names; its run id.
#[track_caller]
fn fixed(lab: &Lab, id: &str, limit: &str, extra: &[&str]) -> (String, serde_json::Value) {
    let mut args = vec!["--yes", "--limit", limit];
    args.extend_from_slice(extra);
    let doc = kfix_json(lab, "run", id, &args);
    for h in limit.split(':') {
        assert_eq!(status(&doc, h), "changed", "{doc:#}");
    }
    (doc["run_id"].as_str().unwrap_or("").to_string(), doc)
}

/// `kfix rollback RUN`, which must roll every host back.
#[track_caller]
fn rolled_back(lab: &Lab, run: &str) {
    let doc = out_json(&lab.kfix(&["rollback", run, "--yes", "--output", "json"]));
    for h in doc["hosts"].as_array().cloned().unwrap_or_default() {
        assert_eq!(h["status"], "rolled_back", "{doc:#}");
    }
}

#[test]
fn a_healthy_flannel_lab_carries_pod_traffic_across_hosts() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(3);
    lab.flannel(&[], &["h1", "h2", "h3"]);
    for (from, to) in [
        ("h1", "10.244.2.2"),
        ("h2", "10.244.3.2"),
        ("h3", "10.244.1.2"),
    ] {
        assert!(answers(&lab, from, to), "{from} -> {to}");
    }
    // A node reaches another node's pod too (from its flannel.1 address).
    assert!(
        lab.sh("h1", "ping -n -c1 -W1 10.244.3.2")
            .contains("64 bytes from")
    );
    // Flannel before v0.6 (the whole network on flannel.1, report 000's route table).
    let old = Lab::up(2);
    old.flannel(&["--whole-network"], &["h1", "h2"]);
    assert_eq!(
        old.sh("h1", "ip route show exact 10.244.0.0/16").trim(),
        "10.244.0.0/16 dev flannel.1 proto kernel scope link src 10.244.1.0"
    );
    assert!(answers(&old, "h1", "10.244.2.2") && answers(&old, "h2", "10.244.1.2"));
}

/// Report 003: `ping 10.244.7.2` answered "From 10.244.7.0 icmp_seq=1 Destination Host
/// Prohibited": the node's FORWARD chain rejected pod traffic (the CentOS iptables
/// service's rule, loaded here from its file as its unit does).
#[test]
fn f6_a_forward_reject_answers_destination_host_prohibited_until_the_reset() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(3);
    lab.flannel(&[], &["h1", "h2", "h3"]);
    lab.write_file(
        "h2",
        "/etc/sysconfig/iptables",
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         -A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT\n-A INPUT -p icmp -j ACCEPT\n\
         -A INPUT -i lo -j ACCEPT\n-A INPUT -p tcp -m state --state NEW -m tcp --dport 22 -j ACCEPT\n\
         -A INPUT -p udp -m udp --dport 8472 -j ACCEPT\n\
         -A INPUT -j REJECT --reject-with icmp-host-prohibited\n\
         -A FORWARD -j REJECT --reject-with icmp-host-prohibited\nCOMMIT\n",
    );
    lab.sh("h2", "iptables-restore </etc/sysconfig/iptables");
    let prohibited = "From 10.244.2.0 icmp_seq=1 Destination Host Prohibited";
    assert_eq!(lab.pod_ping("h1", "10.244.2.2"), prohibited);
    assert!(answers(&lab, "h3", "10.244.1.2"), "the healthy twin");
    checked(
        &lab,
        "reset-flannel-cni",
        &[("h1", "healthy"), ("h2", "problem"), ("h3", "healthy")],
    );
    let (run, doc) = fixed(
        &lab,
        "reset-flannel-cni",
        "h2",
        &["-e", "verify_reach=true"],
    );
    assert!(answers(&lab, "h1", "10.244.2.2"), "cured");
    assert!(answers(&lab, "h3", "10.244.1.2"));
    // The opt-in check of the symptom ran, and the report says what it saw.
    let verified = host(&doc, "h2")["verified"].to_string();
    assert!(
        verified.contains("another node answers over flannel from this node")
            && verified.contains("bytes from"),
        "{doc:#}"
    );
    rolled_back(&lab, &run);
    assert_eq!(lab.pod_ping("h1", "10.244.2.2"), prohibited, "back");
    assert!(answers(&lab, "h3", "10.244.1.2"));
}

/// Reports 001 and 004: after a network restart forwarding is off, and pods on the node
/// are cut off from the other nodes; h3 has it off in its configuration, so `sysctl
/// --system` (a reboot, a network restart that reloads it) turns it off again.
#[test]
fn f3_forwarding_off_cuts_the_nodes_pods_off() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(3);
    lab.flannel(&[], &["h1", "h2", "h3"]);
    lab.sh("h2", "sysctl -qw net.ipv4.ip_forward=0");
    lab.write_file(
        "h3",
        "/etc/sysctl.d/60-forwarding.conf",
        "net.ipv4.ip_forward = 0\n",
    );
    lab.sh("h3", "sysctl -q --system >/dev/null");
    assert!(!answers(&lab, "h1", "10.244.2.2"));
    assert!(!answers(&lab, "h1", "10.244.3.2"));
    assert!(
        !answers(&lab, "h3", "10.244.1.2"),
        "and the node's own pods are cut off"
    );
    checked(
        &lab,
        "persist-ip-forward",
        &[("h2", "problem"), ("h3", "problem")],
    );
    let (run, _) = fixed(&lab, "persist-ip-forward", "h2:h3", &[]);
    assert!(answers(&lab, "h1", "10.244.2.2") && answers(&lab, "h1", "10.244.3.2"));
    lab.sh("h3", "sysctl -q --system >/dev/null");
    assert!(
        answers(&lab, "h1", "10.244.3.2"),
        "still on after sysctl --system"
    );
    rolled_back(&lab, &run);
    assert!(!answers(&lab, "h1", "10.244.2.2"), "back");
    lab.sh("h3", "sysctl -q --system >/dev/null");
    assert!(
        !answers(&lab, "h1", "10.244.3.2"),
        "back after sysctl --system"
    );
}

/// Report 000: a second route for the flannel network on eth0, there before flannel's
/// own (which the kernel then lists after it), sends pod traffic out of eth0. The
/// flannel of that report put the whole network on flannel.1.
#[test]
fn f1_a_stray_route_ahead_of_flannels_takes_pod_traffic_off_the_overlay() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(3);
    lab.flannel(&["--whole-network"], &["h1", "h2", "h3"]);
    // The stray route is there when flanneld (re)starts and addresses flannel.1.
    lab.sh(
        "h1",
        "service flanneld stop && ip addr flush dev flannel.1 && \
         ip route add 10.244.0.0/16 dev eth0 && service flanneld start",
    );
    assert_eq!(
        lab.sh("h1", "ip route show exact 10.244.0.0/16"),
        "10.244.0.0/16 dev eth0 scope link \n10.244.0.0/16 dev flannel.1 proto kernel scope link src 10.244.1.0 \n"
    );
    assert!(!answers(&lab, "h1", "10.244.2.2"));
    assert!(answers(&lab, "h2", "10.244.3.2"), "the healthy twin");
    checked(
        &lab,
        "flannel-bogus-route",
        &[("h1", "problem"), ("h2", "healthy"), ("h3", "healthy")],
    );
    let (run, _) = fixed(
        &lab,
        "flannel-bogus-route",
        "h1",
        &["-e", "verify_reach=true"],
    );
    assert!(answers(&lab, "h1", "10.244.2.2"), "cured");
    rolled_back(&lab, &run);
    // Back where it was: ahead of flannel's route, so pod traffic leaves by eth0 again.
    assert!(
        lab.sh("h1", "ip route show exact 10.244.0.0/16")
            .starts_with("10.244.0.0/16 dev eth0 scope link \n")
    );
    assert!(!answers(&lab, "h1", "10.244.2.2"), "back");
    assert!(answers(&lab, "h2", "10.244.3.2"));
}

/// Report 000's service IP: from node a a service answers only when its pod is local.
/// The node's packet to the service IP takes the node's address as source (its route,
/// here eth0's), kube-proxy's DNAT sends it to a pod on node b over flannel.1, and node
/// b, which filters reverse paths strictly, drops a source it would not route back by
/// flannel.1. The report's fix masquerades on node a (F2); loosening node b's filter
/// (F12) cures it too.
#[test]
fn f2_f12_a_service_whose_pod_is_remote_answers_only_masqueraded_or_loosely_filtered() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(3);
    lab.flannel(&[], &["h1", "h2", "h3"]);
    // kube-proxy's DNAT for a service whose only pod is h2's (icmp, so ping shows it).
    for h in ["h1", "h3"] {
        lab.sh(
            h,
            "ip route add 10.96.0.0/12 dev eth0 && \
             iptables -t nat -A OUTPUT -d 10.96.0.10/32 -p icmp -j DNAT --to-destination 10.244.2.2",
        );
    }
    // The healthy twin h3 masquerades node -> pod traffic (flannel's --ip-masq rules).
    lab.sh(
        "h3",
        "iptables -t nat -A POSTROUTING -s 10.244.0.0/16 -d 10.244.0.0/16 -j RETURN && \
         iptables -t nat -A POSTROUTING -s 10.244.0.0/16 ! -d 224.0.0.0/4 -j MASQUERADE && \
         iptables -t nat -A POSTROUTING ! -s 10.244.0.0/16 -d 10.244.3.0/24 -j RETURN && \
         iptables -t nat -A POSTROUTING ! -s 10.244.0.0/16 -d 10.244.0.0/16 -j MASQUERADE",
    );
    lab.sh("h2", "sysctl -qw net.ipv4.conf.all.rp_filter=1");
    let service = |h: &str| {
        lab.sh(h, "ping -n -c1 -W1 10.96.0.10 || true")
            .contains("bytes from")
    };
    assert!(!service("h1"), "the service does not answer node h1");
    assert!(
        lab.sh("h1", "ping -n -c1 -W1 10.244.2.2")
            .contains("bytes from"),
        "the pod's own IP does (from flannel.1's address)"
    );
    assert!(service("h3"), "the healthy twin");
    checked(
        &lab,
        "service-masquerade",
        &[("h1", "problem"), ("h3", "healthy")],
    );
    checked(&lab, "rp-filter-loose", &[("h2", "problem")]);
    // F2 on node a.
    let (run, _) = fixed(
        &lab,
        "service-masquerade",
        "h1",
        &["-e", "verify_reach=true"],
    );
    assert!(service("h1"), "cured by masquerading");
    rolled_back(&lab, &run);
    assert!(!service("h1"), "back");
    // F12 on node b.
    let (run, _) = fixed(&lab, "rp-filter-loose", "h2", &[]);
    assert!(
        service("h1"),
        "cured by loose filtering on the receiving node"
    );
    rolled_back(&lab, &run);
    assert!(!service("h1"), "back");
    assert!(service("h3"));
}

/// Report 001: the FORWARD policy drops pod traffic; here dockerd set it (it turns IP
/// forwarding on itself when it starts), and the fix outlasts a docker restart.
#[test]
fn f9_a_drop_policy_dockerd_set_stops_pod_traffic() {
    if !require_root() {
        return;
    }
    let lab = Lab::up_with_systemd(3, &["h2"]);
    lab.sh(
        "h2",
        "sysctl -qw net.ipv4.ip_forward=0 && systemctl start docker.service && \
         iptables -S FORWARD | grep -qx -- '-P FORWARD DROP'",
    );
    lab.flannel(&[], &["h1", "h2", "h3"]);
    assert!(!answers(&lab, "h1", "10.244.2.2"));
    assert!(!answers(&lab, "h2", "10.244.1.2"));
    assert!(answers(&lab, "h3", "10.244.1.2"), "the healthy twin");
    checked(
        &lab,
        "forward-policy-accept",
        &[("h1", "healthy"), ("h2", "problem"), ("h3", "healthy")],
    );
    let (run, _) = fixed(&lab, "forward-policy-accept", "h2", &[]);
    assert!(answers(&lab, "h1", "10.244.2.2") && answers(&lab, "h2", "10.244.1.2"));
    // A network restart turns forwarding off; dockerd, restarted, turns it on and sets
    // the DROP policy again: the rules the fix added stay in front of it.
    lab.sh(
        "h2",
        "sysctl -qw net.ipv4.ip_forward=0 && systemctl restart docker.service && \
         iptables -S FORWARD | grep -qx -- '-P FORWARD DROP'",
    );
    assert!(
        answers(&lab, "h1", "10.244.2.2"),
        "a docker restart keeps it"
    );
    rolled_back(&lab, &run);
    assert!(!answers(&lab, "h1", "10.244.2.2"), "back");
    assert!(answers(&lab, "h3", "10.244.1.2"));
}
