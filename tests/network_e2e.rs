//! The network playbooks (F1, F2, F6, F9, F11, F12) on lab hosts shaped like real
//! clusters: a flannel data plane built as flannel programs it (tests/lab/flannel.sh),
//! the values each playbook needs read from the node (no `-e`), each fault as the real
//! software leaves it (Debian's dockerd, rules copied from the upstream code or file
//! that makes them), and beside each fault a healthy twin of the same kind of cluster
//! that must come out untouched. One host of F1, F2 and F6 runs an `ip` that refuses
//! `-j`, as iproute2 before 4.14 (CentOS 7) does.

mod common;

use common::playbook::{
    assert_same, check_status, kfix_json, lifecycle, lifecycle_of, skipped, status,
};
use common::{Lab, host, require_root};
use serde_json::Value;

/// The reason `kfix check` gives for `h`.
fn check_reason(doc: &Value, h: &str) -> String {
    host(&doc["checks"][0], h)["reason"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// `kfix check ID` and the reason it gives for `h`, which must be a problem.
#[track_caller]
fn evidence(lab: &Lab, id: &str, h: &str, extra: &[&str]) -> String {
    let doc = kfix_json(lab, "check", id, extra);
    assert_eq!(check_status(&doc, h), "problem", "{doc:#}");
    check_reason(&doc, h)
}

/// A real run limited to `h` leaves it byte for byte as it was, and says why.
#[track_caller]
fn untouched(lab: &Lab, id: &str, h: &str, want: &str) {
    let before = lab.snapshot(h);
    let doc = kfix_json(lab, "run", id, &["--yes", "--limit", h]);
    assert_eq!(status(&doc, h), want, "{doc:#}");
    assert_same(&lab.snapshot(h), &before, &format!("{id} changed {h}"));
}

/// Routes a node of the cluster legitimately has beside flannel's: another network
/// (172.16.0.0/12, F1's old default), a wider one that holds the flannel network, and
/// flannel's own host-gw style route to another node's lease through that node.
const LEGIT_ROUTES: &str = "ip route add 172.16.0.0/12 via 10.250.0.1 dev eth0 && \
    ip route add 10.0.0.0/8 via 10.250.0.1 dev eth0 && \
    ip route add 10.244.9.0/24 via 10.250.0.19 dev eth0";

#[test]
fn f1_flannel_bogus_route() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(4);
    lab.flannel(&[], &["h1", "h2", "h3"]);
    lab.old_iproute("h3");
    for h in ["h1", "h2", "h3"] {
        lab.sh(h, LEGIT_ROUTES);
    }
    // The cluster's own bogus route: its flannel network on eth0 (report 000's shape,
    // on this cluster's network); on h3 a part of the network, through eth0.
    lab.sh("h1", "ip route add 10.244.0.0/16 dev eth0 proto static");
    lab.sh("h3", "ip route add 10.244.5.0/24 dev eth0 metric 50");
    let why = evidence(&lab, "flannel-bogus-route", "h1", &[]);
    assert!(
        why.contains("`10.244.0.0/16 dev eth0 proto static scope link`"),
        "the route as `ip route` prints it: {why}"
    );
    assert!(
        evidence(&lab, "flannel-bogus-route", "h3", &[])
            .contains("10.244.5.0/24 dev eth0 scope link metric 50"),
        "read from text where `ip -j` is refused"
    );
    lifecycle(&lab, "flannel-bogus-route", &[], |lab, h| {
        let routes = lab.sh(h, "ip route show");
        for keep in [
            "10.0.0.0/8 via 10.250.0.1 dev eth0",
            "10.244.1.0/24 dev cni0 proto kernel scope link src 10.244.1.1",
            "10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink",
            "10.244.3.0/24 via 10.244.3.0 dev flannel.1 onlink",
            "10.244.9.0/24 via 10.250.0.19 dev eth0",
            "172.16.0.0/12 via 10.250.0.1 dev eth0",
        ] {
            assert!(routes.contains(keep), "{keep} must stay:\n{routes}");
        }
        assert!(!routes.contains("10.244.0.0/16"), "{routes}");
    });
    // The second faulty host (old `ip`) was rolled back by the forced verify failure;
    // a real run there fixes it too.
    let doc = kfix_json(
        &lab,
        "run",
        "flannel-bogus-route",
        &["--yes", "--limit", "h3"],
    );
    assert_eq!(status(&doc, "h3"), "changed", "{doc:#}");
    assert!(
        !lab.sh("h3", "ip route show")
            .contains("10.244.5.0/24 dev eth0")
    );
    untouched(&lab, "flannel-bogus-route", "h2", "healthy");
    skipped(&lab, "flannel-bogus-route", "h4", &[]);
}

/// kube-proxy 1.9's nat rules (kubernetes pkg/proxy/iptables/proxier.go of that
/// generation): service traffic is masqueraded only when marked.
const KUBE_PROXY_NAT: &str = "iptables -t nat -N KUBE-POSTROUTING && iptables -t nat -N KUBE-MARK-MASQ && \
    iptables -t nat -I POSTROUTING -m comment --comment 'kubernetes postrouting rules' -j KUBE-POSTROUTING && \
    iptables -t nat -A KUBE-POSTROUTING -m comment --comment 'kubernetes service traffic requiring SNAT' -m mark --mark 0x4000/0x4000 -j MASQUERADE && \
    iptables -t nat -A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000";

/// Docker's masquerade of its own bridge (libnetwork drivers/bridge/setup_ip_tables.go).
const DOCKER_NAT: &str =
    "iptables -t nat -A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE";

/// flannel v0.9-v0.12 with --ip-masq (network/ipmasq.go `rules()`), lease 10.244.2.0/24.
const FLANNEL_IPMASQ: &str = "iptables -t nat -A POSTROUTING -s 10.244.0.0/16 -d 10.244.0.0/16 -j RETURN && \
    iptables -t nat -A POSTROUTING -s 10.244.0.0/16 ! -d 224.0.0.0/4 -j MASQUERADE && \
    iptables -t nat -A POSTROUTING ! -s 10.244.0.0/16 -d 10.244.2.0/24 -j RETURN && \
    iptables -t nat -A POSTROUTING ! -s 10.244.0.0/16 -d 10.244.0.0/16 -j MASQUERADE";

#[test]
fn f2_service_masquerade() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(5);
    lab.flannel(&[], &["h1", "h2", "h3", "h4"]);
    lab.old_iproute("h3");
    // Faulty: flannel without --ip-masq (the report's era), kube-proxy and docker.
    for h in ["h1", "h3"] {
        lab.sh(h, &format!("{KUBE_PROXY_NAT} && {DOCKER_NAT}"));
    }
    // Healthy twins: flannel masquerades node -> pod traffic itself; h4 has the
    // report's rule built from its own values already.
    lab.sh("h2", &format!("{KUBE_PROXY_NAT} && {FLANNEL_IPMASQ}"));
    lab.sh(
        "h4",
        &format!("{KUBE_PROXY_NAT} && iptables -t nat -A POSTROUTING -s 10.250.0.0/16 -d 10.244.0.0/16 -j MASQUERADE"),
    );
    assert!(
        evidence(&lab, "service-masquerade", "h1", &[])
            .contains("`ACCEPT (policy of POSTROUTING)`")
    );
    lifecycle(&lab, "service-masquerade", &[], |lab, h| {
        assert_eq!(
            lab.sh(h, "iptables -t nat -S POSTROUTING"),
            "-P POSTROUTING ACCEPT\n\
             -A POSTROUTING -s 10.250.0.0/16 -d 10.244.0.0/16 -j MASQUERADE\n\
             -A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n\
             -A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE\n",
            "the node's subnet (eth0's) to the flannel network, first; the rest kept"
        );
    });
    // Values from the node, variables only override.
    let dry = kfix_json(
        &lab,
        "run",
        "service-masquerade",
        &[
            "--dry-run",
            "--limit",
            "h3",
            "-e",
            "node_cidr=10.250.0.0/24",
        ],
    );
    let diff = host(&dry, "h3")["steps"][0]["diff"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        diff.contains("-s 10.250.0.0/24 -d 10.244.0.0/16 -j MASQUERADE"),
        "{dry:#}"
    );
    untouched(&lab, "service-masquerade", "h4", "healthy");
    skipped(&lab, "service-masquerade", "h5", &[]);
}

/// The CentOS 7 iptables service's /etc/sysconfig/iptables (iptables-services), byte
/// for byte, as its unit loads it; with flannel's VXLAN port opened in INPUT, as the
/// report's node had it (its pods' packets arrived and were rejected in FORWARD).
const CENTOS_IPTABLES: &str = "# sample configuration for iptables service
# you can edit this manually or use system-config-firewall
# please do not ask us to add additional ports/services to this default configuration
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p icmp -j ACCEPT
-A INPUT -i lo -j ACCEPT
-A INPUT -p tcp -m state --state NEW -m tcp --dport 22 -j ACCEPT
-A INPUT -j REJECT --reject-with icmp-host-prohibited
-A FORWARD -j REJECT --reject-with icmp-host-prohibited
COMMIT
";

fn centos_firewall(lab: &Lab, h: &str) {
    lab.write_file(h, "/etc/sysconfig/iptables", CENTOS_IPTABLES);
    lab.sh(
        h,
        "iptables-restore </etc/sysconfig/iptables && \
         iptables -I INPUT 5 -p udp -m udp --dport 8472 -j ACCEPT",
    );
}

/// Docker 17.03 (libnetwork of that release: drivers/bridge/setup_ip_tables.go, each
/// rule inserted with -I as it does) with docker0 and one user-defined network.
const DOCKER_1703_ISOLATION: &str = "iptables -N DOCKER && iptables -N DOCKER-ISOLATION && \
    iptables -A FORWARD -j DOCKER-ISOLATION && \
    iptables -A FORWARD -o br-0123456789ab -j DOCKER && \
    iptables -A FORWARD -o br-0123456789ab -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT && \
    iptables -A FORWARD -i br-0123456789ab ! -o br-0123456789ab -j ACCEPT && \
    iptables -A FORWARD -i br-0123456789ab -o br-0123456789ab -j ACCEPT && \
    iptables -A FORWARD -o docker0 -j DOCKER && \
    iptables -A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT && \
    iptables -A FORWARD -i docker0 ! -o docker0 -j ACCEPT && \
    iptables -A FORWARD -i docker0 -o docker0 -j ACCEPT && \
    iptables -A DOCKER-ISOLATION -j RETURN && \
    iptables -I DOCKER-ISOLATION -i br-0123456789ab -o docker0 -j DROP && \
    iptables -I DOCKER-ISOLATION -i docker0 -o br-0123456789ab -j DROP";

/// flannel v0.9.1's FORWARD rules (network/iptables.go `ForwardRules`), appended: on
/// CentOS they land after the REJECT (flannel#1033).
const FLANNEL_FORWARD_V091: &str = "iptables -A FORWARD -s 10.244.0.0/16 -j ACCEPT && iptables -A FORWARD -d 10.244.0.0/16 -j ACCEPT";

#[test]
fn f6_reset_flannel_cni() {
    if !require_root() {
        return;
    }
    let lab = Lab::up_with_systemd(5, &["h2"]);
    lab.flannel(&[], &["h1", "h2", "h3", "h5"]);
    lab.old_iproute("h3");
    centos_firewall(&lab, "h1");
    centos_firewall(&lab, "h3");
    lab.sh("h3", FLANNEL_FORWARD_V091);
    // A hardened INPUT: policy DROP, SSH let in by the service's rule. Flushing that
    // without opening the policy first would cut the session kfix runs over.
    for h in ["h1", "h3"] {
        lab.sh(h, "iptables -P INPUT DROP");
    }
    // Another healthy twin: Docker 17.03's rules with a user-defined network, the
    // isolation pair bound to the two bridges (what `iptables -L` prints as bare
    // `DROP all -- 0.0.0.0/0 0.0.0.0/0`, report 003's listing), copied from libnetwork.
    lab.sh("h5", DOCKER_1703_ISOLATION);
    // The healthy twin runs Debian's dockerd 20.10 with a user-defined network: its
    // own isolation chains, DROP rules included, made by dockerd itself.
    lab.sh(
        "h2",
        "systemctl start docker.service && docker network create kfixnet >/dev/null && \
         iptables -S DOCKER-ISOLATION-STAGE-2 | grep -q -- '-j DROP'",
    );
    // The report's symptom, from a pod on the healthy node.
    assert_eq!(
        lab.pod_ping("h2", "10.244.1.2"),
        "From 10.244.1.0 icmp_seq=1 Destination Host Prohibited"
    );
    let why = evidence(&lab, "reset-flannel-cni", "h1", &[]);
    assert!(
        why.contains("`REJECT by -A FORWARD -j REJECT --reject-with icmp-host-prohibited`"),
        "{why}"
    );
    // The plan opens the policies before it flushes, and says what a rollback leaves.
    let dry = kfix_json(
        &lab,
        "run",
        "reset-flannel-cni",
        &["--dry-run", "--limit", "h1"],
    );
    let steps = host(&dry, "h1")["steps"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let bridge = steps
        .iter()
        .find(|s| s["id"] == "delete-cni-bridge")
        .cloned();
    assert!(
        bridge
            .as_ref()
            .and_then(|s| s["note"].as_str())
            .is_some_and(|n| n.contains("vethpod")),
        "{dry:#}"
    );
    lifecycle_of(
        &lab,
        "reset-flannel-cni",
        &[],
        true,
        // Where the reset moved state aside, and what the restarted services made
        // again in the meantime (moved there by the rollback).
        &["/var/lib/kfix"],
        true,
        |lab, h| {
            assert_eq!(
                lab.sh(h, "iptables -S"),
                "-P INPUT ACCEPT\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT\n"
            );
            // flanneld and kubelet (restarted by the playbook) made the node's network
            // again: the other nodes' pods reach this node's pod.
            assert_eq!(
                &lab.pod_ping("h2", "10.244.1.2")[..14],
                "64 bytes from ",
                "pod traffic flows again"
            );
            assert!(
                lab.sh(h, "cat /run/flannel/subnet.env")
                    .contains("FLANNEL_SUBNET=10.244.1.1/24")
            );
            assert!(
                lab.sh(h, "find /var/lib/kfix/backup -name 10-flannel.conflist")
                    .contains("10-flannel.conflist"),
                "moved aside, not deleted"
            );
        },
    );
    // h3 (old `ip`) was rolled back by the forced verify failure: refused again.
    assert_eq!(
        lab.pod_ping("h2", "10.244.3.2"),
        "From 10.244.3.0 icmp_seq=1 Destination Host Prohibited"
    );
    // Without the full flush: only the CentOS REJECT goes; the rest stays.
    let doc = kfix_json(
        &lab,
        "run",
        "reset-flannel-cni",
        &["-e", "flush_all_iptables=false", "--yes", "--limit", "h3"],
    );
    assert_eq!(status(&doc, "h3"), "changed", "{doc:#}");
    assert_eq!(
        lab.sh("h3", "iptables -S FORWARD"),
        "-P FORWARD ACCEPT\n-A FORWARD -s 10.244.0.0/16 -j ACCEPT\n-A FORWARD -d 10.244.0.0/16 -j ACCEPT\n"
    );
    assert!(
        lab.sh("h3", "iptables -S INPUT")
            .contains("-A INPUT -j REJECT --reject-with icmp-host-prohibited")
    );
    assert_eq!(&lab.pod_ping("h2", "10.244.3.2")[..14], "64 bytes from ");
    untouched(&lab, "reset-flannel-cni", "h2", "healthy");
    untouched(&lab, "reset-flannel-cni", "h5", "healthy");
    skipped(&lab, "reset-flannel-cni", "h4", &[]);
}

/// flannel v0.2x's FORWARD rules (pkg/trafficmngr/iptables/iptables.go `forwardRules`).
const FLANNEL_FWD_CHAIN: &str = "iptables -N FLANNEL-FWD && \
    iptables -A FORWARD -m comment --comment 'flanneld forward' -j FLANNEL-FWD && \
    iptables -A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment 'flanneld forward' -j ACCEPT && \
    iptables -A FLANNEL-FWD -d 10.244.0.0/16 -m comment --comment 'flanneld forward' -j ACCEPT";

/// Docker 17.03's filter rules for docker0 (libnetwork of that release: `-o docker0 -j
/// DOCKER` above the conntrack rule), with the FORWARD policy 1.13+ sets.
const DOCKER_1703_FILTER: &str = "iptables -N DOCKER && iptables -N DOCKER-ISOLATION && \
    iptables -A FORWARD -j DOCKER-ISOLATION && iptables -A FORWARD -o docker0 -j DOCKER && \
    iptables -A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT && \
    iptables -A FORWARD -i docker0 ! -o docker0 -j ACCEPT && \
    iptables -A FORWARD -i docker0 -o docker0 -j ACCEPT && \
    iptables -A DOCKER-ISOLATION -j RETURN && iptables -P FORWARD DROP";

#[test]
fn f9_forward_policy_accept() {
    if !require_root() {
        return;
    }
    let lab = Lab::up_with_systemd(4, &["h1", "h2"]);
    // dockerd turns IP forwarding on itself, so it sets the FORWARD policy to DROP.
    for h in ["h1", "h2"] {
        lab.sh(
            h,
            "sysctl -qw net.ipv4.ip_forward=0 && systemctl start docker.service && \
             iptables -S FORWARD | grep -qx -- '-P FORWARD DROP'",
        );
    }
    // h3: report 001's layout, pods on docker0 and no CNI at all.
    lab.flannel(&[], &["h1", "h2", "h3:docker0"]);
    lab.sh("h2", FLANNEL_FWD_CHAIN);
    lab.sh("h3", DOCKER_1703_FILTER);
    assert!(
        evidence(&lab, "forward-policy-accept", "h1", &[]).contains("`DROP (policy of FORWARD)`")
    );
    assert_eq!(lab.pod_ping("h2", "10.244.1.2"), "no answer");
    lifecycle(&lab, "forward-policy-accept", &[], |lab, h| {
        let rules = lab.sh(h, "iptables -S FORWARD");
        assert!(
            rules.starts_with(
                "-P FORWARD DROP\n\
                 -A FORWARD -d 10.244.0.0/16 -m comment --comment \"kfix forward-policy-accept\" -j ACCEPT\n\
                 -A FORWARD -s 10.244.0.0/16 -m comment --comment \"kfix forward-policy-accept\" -j ACCEPT\n"
            ),
            "{rules}"
        );
        assert_eq!(&lab.pod_ping("h2", "10.244.1.2")[..14], "64 bytes from ");
    });
    // The fix outlasts dockerd setting the policy again (it does when it starts with
    // forwarding off: after a network restart, as in reports 001 and 004); dockerd
    // keeps rules it does not own.
    lab.sh(
        "h1",
        "iptables -P FORWARD ACCEPT && sysctl -qw net.ipv4.ip_forward=0 && \
         systemctl restart docker.service && iptables -S FORWARD | grep -qx -- '-P FORWARD DROP'",
    );
    let doc = kfix_json(&lab, "check", "forward-policy-accept", &["--limit", "h1"]);
    assert_eq!(check_status(&doc, "h1"), "healthy", "{doc:#}");
    assert_eq!(&lab.pod_ping("h2", "10.244.1.2")[..14], "64 bytes from ");
    // h3 (rolled back by the forced failure): the report's own command, on request.
    let dry = kfix_json(
        &lab,
        "run",
        "forward-policy-accept",
        &["--dry-run", "--limit", "h3", "-e", "method=policy"],
    );
    let changed: Vec<Value> = host(&dry, "h3")["steps"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|s| s["verdict"] == "change")
        .collect();
    assert_eq!(changed.len(), 1, "{dry:#}");
    assert_eq!(
        changed[0]["diff"],
        "- -t filter -P FORWARD DROP\n+ -t filter -P FORWARD ACCEPT\n"
    );
    untouched(&lab, "forward-policy-accept", "h2", "healthy");
    skipped(&lab, "forward-policy-accept", "h4", &[]);
}

/// flanneld as the CentOS flannel package runs it, stood in by a oneshot unit that
/// writes what flanneld and mk-docker-opts.sh write (flannel's dist/mk-docker-opts.sh
/// output, as run with `-k DOCKER_NETWORK_OPTIONS -d /run/flannel/docker`); and the
/// package's docker.service drop-in, which makes docker read that file.
fn flannel_docker_wiring(lab: &Lab, h: &str, subnet: &str) {
    lab.write_file(h, "/etc/kfix-lab/lease", &format!("SUBNET={subnet}\n"));
    lab.write_file(
        h,
        "/usr/local/sbin/kfix-lab-flanneld",
        "#!/bin/sh\nset -e\n. /etc/kfix-lab/lease\nmkdir -p /run/flannel\n\
         printf 'FLANNEL_NETWORK=10.100.0.0/16\\nFLANNEL_SUBNET=%s\\nFLANNEL_MTU=1450\\nFLANNEL_IPMASQ=false\\n' \"$SUBNET\" >/run/flannel/subnet.env\n\
         printf 'DOCKER_OPT_BIP=\"--bip=%s\"\\nDOCKER_OPT_IPMASQ=\"--ip-masq=true\"\\nDOCKER_OPT_MTU=\"--mtu=1450\"\\nDOCKER_NETWORK_OPTIONS=\" --bip=%s --ip-masq=true --mtu=1450\"\\n' \"$SUBNET\" \"$SUBNET\" >/run/flannel/docker\n",
    );
    lab.write_file(
        h,
        "/etc/systemd/system/flanneld.service",
        "[Unit]\nDescription=flanneld stand-in (kfix lab)\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/usr/local/sbin/kfix-lab-flanneld\n",
    );
    lab.write_file(
        h,
        "/etc/systemd/system/docker.service.d/flannel.conf",
        "[Service]\nEnvironmentFile=-/run/flannel/docker\nExecStart=\nExecStart=/usr/sbin/dockerd -H fd:// $DOCKER_OPTS $DOCKER_NETWORK_OPTIONS\n",
    );
    lab.sh(
        h,
        "chmod 0755 /usr/local/sbin/kfix-lab-flanneld && systemctl daemon-reload",
    );
}

fn docker0(lab: &Lab, h: &str) -> String {
    let line = lab.sh(h, "ip -4 -o addr show dev docker0");
    line.split_whitespace().nth(3).unwrap_or("").to_string()
}

#[test]
fn f11_flannel_docker_order() {
    if !require_root() {
        return;
    }
    let lab = Lab::up_with_systemd(4, &["h1", "h2", "h3", "h4"]);
    for h in ["h1", "h2", "h3"] {
        flannel_docker_wiring(&lab, h, "10.100.28.1/24");
    }
    // The fault, made by the real programs: docker started before flanneld.
    for h in ["h1", "h3"] {
        lab.sh(
            h,
            "systemctl start docker.service && systemctl start flanneld.service",
        );
    }
    lab.sh(
        "h2",
        "systemctl start flanneld.service && systemctl start docker.service",
    );
    // h4: a kube-flannel CNI node, where docker0 on docker's default network is by design.
    lab.write_file("h4", "/run/flannel/subnet.env", "FLANNEL_NETWORK=10.100.0.0/16\nFLANNEL_SUBNET=10.100.31.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n");
    lab.sh("h4", "systemctl start docker.service");
    assert_eq!(docker0(&lab, "h1"), "172.17.0.1/16");
    assert_eq!(docker0(&lab, "h2"), "10.100.28.1/24");
    assert!(
        evidence(&lab, "flannel-docker-order", "h1", &[]).contains("inet 172.17.0.1/16"),
        "docker0's address as `ip` prints it"
    );
    let dry = kfix_json(&lab, "run", "flannel-docker-order", &["--dry-run"]);
    for (h, want) in [
        ("h1", "would_change"),
        ("h2", "healthy"),
        ("h3", "would_change"),
        ("h4", "skipped"),
    ] {
        assert_eq!(status(&dry, h), want, "{dry:#}");
    }
    let before_h3 = lab.snapshot("h3");
    let files = |snap: &str| {
        snap.split("## files")
            .nth(1)
            .unwrap_or("")
            .lines()
            .filter(|l| !l.contains("/var/lib/docker/"))
            .map(str::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    };
    // Undone with `kfix rollback` after a later run edited the drop-in, newest first:
    // the files are as before (docker keeps the bridge its restart gave it), then the
    // fix is made again for what follows.
    let before_h1 = lab.snapshot("h1");
    let first = kfix_json(
        &lab,
        "run",
        "flannel-docker-order",
        &["--yes", "--limit", "h1"],
    );
    assert_eq!(status(&first, "h1"), "changed", "{first:#}");
    common::playbook::undo_history_with_a_later_edit_seen(
        &lab,
        "h1",
        first["run_id"].as_str().unwrap(),
        &before_h1,
        &[],
        files,
    );
    // The fault again, as the real programs make it (the rollback's restart left
    // docker on flannel's bridge, which docker also keeps in its network store):
    // docker started before flanneld.
    lab.sh(
        "h1",
        "systemctl stop docker.socket docker.service flanneld.service && rm -rf /run/flannel /var/lib/docker/network && ip link del docker0 && \
         systemctl start docker.service && systemctl start flanneld.service",
    );
    assert_eq!(docker0(&lab, "h1"), "172.17.0.1/16");
    let run = kfix_json(
        &lab,
        "run",
        "flannel-docker-order",
        &["--yes", "--limit", "h1"],
    );
    assert_eq!(status(&run, "h1"), "changed", "{run:#}");
    assert_eq!(docker0(&lab, "h1"), "10.100.28.1/24");
    assert_eq!(
        lab.sh(
            "h1",
            "cat /etc/systemd/system/docker.service.d/kfix-flannel-order.conf"
        ),
        "# Written by kfix (flannel-docker-order): docker takes its bridge address from\n\
         # flannel (/run/flannel/docker), so it starts once flanneld has written it.\n\
         [Unit]\nWants=flanneld.service\nAfter=flanneld.service\n"
    );
    assert!(
        lab.exec("h1", "test -e /etc/docker/daemon.json")
            .status
            .code()
            != Some(0),
        "no bip in daemon.json beside the --bip flag"
    );
    let again = kfix_json(
        &lab,
        "run",
        "flannel-docker-order",
        &["--yes", "--limit", "h1"],
    );
    assert_eq!(status(&again, "h1"), "healthy", "{again:#}");
    // The order lasts: after a new lease and a cold start, docker pulls flanneld in first.
    lab.sh(
        "h1",
        "echo SUBNET=10.100.40.1/24 >/etc/kfix-lab/lease && \
         systemctl stop docker.socket docker.service flanneld.service && rm -rf /run/flannel && \
         systemctl start docker.service",
    );
    assert_eq!(docker0(&lab, "h1"), "10.100.40.1/24");
    // A forced verify failure: the drop-in goes (and systemd forgets it); docker keeps
    // the bridge the restart gave it, which a rollback cannot and should not undo.
    let failing = common::playbook::failing_copy(&lab, "flannel-docker-order");
    let rb = kfix_json(&lab, "run", &failing, &["--yes", "--limit", "h3"]);
    assert_eq!(status(&rb, "h3"), "failed", "{rb:#}");
    assert!(
        lab.exec(
            "h3",
            "test -e /etc/systemd/system/docker.service.d/kfix-flannel-order.conf"
        )
        .status
        .code()
            != Some(0)
    );
    assert!(
        !lab.sh("h3", "systemctl show -p After --value docker.service")
            .contains("flanneld")
    );
    assert_eq!(docker0(&lab, "h3"), "10.100.28.1/24");
    assert_same(
        &files(&lab.snapshot("h3")),
        &files(&before_h3),
        "rollback left files changed",
    );
    untouched(&lab, "flannel-docker-order", "h2", "healthy");
    skipped(&lab, "flannel-docker-order", "h4", &[]);
}

#[test]
fn f12_rp_filter_loose() {
    if !require_root() {
        return;
    }
    let lab = Lab::up(4);
    // h1: strict on one interface while `all` is 0 (the kernel takes the larger).
    lab.sh("h1", "sysctl -qw net.ipv4.conf.eth0.rp_filter=1");
    // h3: strict everywhere, now and after sysctl --system.
    lab.sh(
        "h3",
        "sysctl -qw net.ipv4.conf.all.rp_filter=1 net.ipv4.conf.default.rp_filter=1",
    );
    lab.write_file(
        "h3",
        "/etc/sysctl.d/10-network-security.conf",
        "net.ipv4.conf.default.rp_filter=1\nnet.ipv4.conf.all.rp_filter=1\n",
    );
    // h4: a Calico node (calico-node wrote its node name; its CNI config), strict as
    // felix wants it.
    lab.write_file("h4", "/var/lib/calico/nodename", "h4");
    lab.write_file("h4", "/etc/cni/net.d/10-calico.conflist", "{\"name\": \"k8s-pod-network\", \"cniVersion\": \"0.3.1\", \"plugins\": [{\"type\": \"calico\"}]}\n");
    lab.sh("h4", "sysctl -qw net.ipv4.conf.all.rp_filter=1");
    assert!(
        evidence(&lab, "rp-filter-loose", "h1", &[])
            .contains("net.ipv4.conf.eth0.rp_filter = 1 (all = 0)")
    );
    // The healthy twin h2: nothing strict, though its steps would write a setting.
    let dry = kfix_json(
        &lab,
        "run",
        "rp-filter-loose",
        &["--dry-run", "--limit", "h2"],
    );
    assert_eq!(status(&dry, "h2"), "healthy", "{dry:#}");
    for s in host(&dry, "h2")["steps"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        assert_eq!(s["verdict"], "not_needed", "{dry:#}");
        assert_eq!(s["diff"], "", "{dry:#}");
    }
    let human = lab.kfix_fleet(&["run", "rp-filter-loose", "--dry-run", "--limit", "h2"]);
    let text = String::from_utf8_lossy(&human.stdout).to_string();
    assert!(!text.contains(" change"), "{text}");
    let row = text
        .lines()
        .skip_while(|l| !l.starts_with("HOST "))
        .find(|l| l.starts_with("h2 "))
        .unwrap_or("");
    assert_eq!(
        row.split_whitespace().nth(2),
        Some("0"),
        "CHANGES 0: {text}"
    );
    lifecycle(&lab, "rp-filter-loose", &[], |lab, h| {
        assert_eq!(
            lab.sh(h, "cat /proc/sys/net/ipv4/conf/all/rp_filter /proc/sys/net/ipv4/conf/default/rp_filter"),
            "2\n2\n"
        );
    });
    assert_eq!(
        lab.sh("h1", "cat /proc/sys/net/ipv4/conf/eth0/rp_filter"),
        "1\n",
        "the interface's own value stays: `all` = 2 makes it loose"
    );
    // The Calico node: skipped, untouched (felix would exit on 2).
    skipped(&lab, "rp-filter-loose", "h4", &[]);
}
