//! `kfix check --all`: a lab fleet with a mix of injected faults gives exactly the
//! expected matrix (JSON, cell by cell), the text matrix, and an HTML page that headless
//! Chromium renders with the expected cells (a screenshot is kept under target/).

mod common;

use common::{Lab, require_root};
use serde_json::Value;

fn setup() -> Lab {
    let lab = Lab::up(4);
    // h1 and h2 are flannel nodes of one cluster (tests/lab/flannel.sh).
    lab.flannel(&[], &["h1", "h2"]);
    // h1: a stray route inside the flannel network, no MASQUERADE for the node's own
    // traffic, the CentOS iptables service's FORWARD REJECT, forwarding off (no
    // calico-node runs anywhere here: F4 does not apply).
    lab.sh(
        "h1",
        "ip route add 10.244.0.0/16 dev eth0 && \
         iptables -A FORWARD -j REJECT --reject-with icmp-host-prohibited && \
         sysctl -qw net.ipv4.ip_forward=0",
    );
    // h2: healthy everywhere it applies.
    lab.sh(
        "h2",
        "iptables -t nat -A POSTROUTING -s 10.250.0.0/16 -d 10.244.0.0/16 -j MASQUERADE && \
         sysctl -qw net.ipv4.ip_forward=1 && echo net.ipv4.ip_forward=1 > /etc/sysctl.conf && \
         printf 'root soft nofile 102400\\nroot hard nofile 102400\\n* soft nofile 102400\\n* hard nofile 102400\\n* soft nproc 8192\\n* hard nproc 8192\\n' > /etc/security/limits.conf",
    );
    // h1 and h2 are kubelet nodes with an iSCSI volume; h2 has the iSCSI initiator
    // (installed from the lab's offline apt repository).
    let volume = "mkdir -p /var/lib/kubelet/pods/28837f50-6a33-11e8-a0e1-525400bcf250/volumes/kubernetes.io~iscsi/pvc-284a9188";
    lab.sh("h1", volume);
    lab.sh(
        "h2",
        &format!("{volume} && DEBIAN_FRONTEND=noninteractive apt-get install -qq -y --no-install-recommends open-iscsi >/dev/null"),
    );
    // h3: no flannel (the network playbooks do not apply); forwarding off.
    // h4: unreachable.
    lab.stop_sshd("h4");
    lab
}

#[test]
fn check_all_gives_the_expected_matrix() {
    if !require_root() {
        return;
    }
    let lab = setup();
    let (inv, cfg) = (lab.inventory(), lab.ssh_config());
    let check_all = |output: &[&str]| {
        let mut args = vec![
            "check",
            "--all",
            "-i",
            inv.to_str().unwrap(),
            "--ssh-config",
            cfg.to_str().unwrap(),
        ];
        args.extend_from_slice(output);
        lab.kfix(&args)
    };
    let before: Vec<String> = ["h1", "h2", "h3"].iter().map(|h| lab.snapshot(h)).collect();
    let out = check_all(&["--output", "json"]);
    assert_eq!(out.status.code(), Some(1), "problems were found");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let pbs = [
        "docker-overlay2",
        "flannel-bogus-route",
        "flannel-docker-order",
        "forward-policy-accept",
        "iscsi-initiator",
        "kernel-cgroup-leak",
        "kube-proxy-eviction",
        "persist-ip-forward",
        "purge-stale-calico-node",
        "raise-nofile-limits",
        "reset-flannel-cni",
        "rp-filter-loose",
        "service-masquerade",
        "stale-flannel-subnet-lease",
    ];
    assert_eq!(doc["playbooks"], serde_json::json!(pbs));
    let (na, ok, x, unk) = ("not_applicable", "healthy", "present", "unknown");
    let expected: &[(&str, [&str; 14])] = &[
        ("h1", [na, x, na, ok, x, na, na, x, na, na, x, ok, x, na]),
        (
            "h3",
            [na, na, na, na, na, na, na, x, na, na, na, ok, na, na],
        ),
        ("h4", [unk; 14]),
        (
            "h2",
            [na, ok, na, ok, ok, na, na, ok, na, na, ok, ok, ok, na],
        ),
    ];
    let rows = doc["hosts"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    for ((host, cells), row) in expected.iter().zip(rows) {
        assert_eq!(row["host"], *host, "worst hosts first: {doc:#}");
        for (pb, want) in pbs.iter().zip(cells) {
            assert_eq!(
                row["cells"][pb]["state"], *want,
                "{host} / {pb}: {:#}",
                row["cells"][pb]
            );
        }
    }
    assert_eq!(
        doc["totals"],
        serde_json::json!({
            "docker-overlay2": 0, "flannel-bogus-route": 1, "flannel-docker-order": 0, "forward-policy-accept": 0, "iscsi-initiator": 1, "kernel-cgroup-leak": 0, "kube-proxy-eviction": 0,
            "persist-ip-forward": 2, "purge-stale-calico-node": 0, "raise-nofile-limits": 0, "reset-flannel-cni": 1, "rp-filter-loose": 0,
            "service-masquerade": 1, "stale-flannel-subnet-lease": 0
        })
    );
    assert!(
        rows[2]["cells"]["persist-ip-forward"]["reason"]
            .as_str()
            .unwrap()
            .contains("unreachable")
    );
    for (h, b) in ["h1", "h2", "h3"].iter().zip(&before) {
        assert_eq!(&lab.snapshot(h), b, "check changed {h}");
    }
    // Probes travel in batches: a reachable host's scan takes a few round trips, each
    // carrying several commands (one command per round trip without batching), all in
    // one session: the host's command channel.
    for row in &rows[..] {
        let (trips, cmds, sessions) = (
            row["round_trips"].as_u64().unwrap(),
            row["commands"].as_u64().unwrap(),
            row["sessions"].as_u64().unwrap(),
        );
        if row["host"] == "h4" {
            assert_eq!((trips, cmds, sessions), (0, 0, 0));
        } else {
            assert!(trips <= 10 && cmds >= 2 * trips, "{row:#}");
            assert_eq!(sessions, 1, "{row:#}");
        }
    }

    // Text: a matrix, folded to one line per problem when the terminal is narrow.
    let out = check_all(&[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("HOST  docker-overlay2  flannel-bogus-route"),
        "{text}"
    );
    assert!(text.contains("\nPROBLEM"), "{text}");

    // node_exporter textfile metrics: 1 present, 0 healthy, unknown apart, n/a absent.
    let prom = lab.dir.join("kfix.prom");
    let out = check_all(&["--output", "prom", prom.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let metrics = std::fs::read_to_string(&prom).unwrap();
    for (host, cells) in expected {
        for (pb, want) in pbs.iter().zip(cells) {
            let labels = format!("{{node=\"{host}\",playbook=\"{pb}\"}}");
            let line = match *want {
                "present" => Some(format!("kfix_problem{labels} 1\n")),
                "healthy" => Some(format!("kfix_problem{labels} 0\n")),
                "unknown" => Some(format!("kfix_check_unknown{labels} 1\n")),
                _ => None,
            };
            match line {
                Some(l) => assert!(metrics.contains(&l), "{l} missing:\n{metrics}"),
                None => assert!(!metrics.contains(&labels), "{labels} is n/a:\n{metrics}"),
            }
        }
    }
    let lint = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("promtool check metrics < {}", prom.display()))
        .output()
        .unwrap();
    assert!(
        lint.status.success(),
        "{}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );

    // HTML, rendered by headless Chromium.
    let page = lab.dir.join("matrix.html");
    let out = check_all(&[
        "--output",
        "html",
        page.to_str().unwrap(),
        "--runbook-base-url",
        "https://runbooks.example.com/kfix",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        html.contains(
            "<td class=\"present\" data-host=\"h1\" data-playbook=\"flannel-bogus-route\""
        )
    );
    let chromium = ["chromium", "chromium-browser"].into_iter().find(|c| {
        std::process::Command::new("which")
            .arg(c)
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let Some(chromium) = chromium else {
        panic!("chromium is not installed (tests/lab/install-deps.sh installs it)");
    };
    let profile = lab.dir.join("chromium-profile");
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-quic",
    ];
    let url = format!("file://{}", page.display());
    let dom = std::process::Command::new(chromium)
        .args(common)
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--dump-dom", &url])
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    for (host, cells) in expected {
        for (pb, want) in pbs.iter().zip(cells) {
            let class = match *want {
                "present" => "present",
                "healthy" => "healthy",
                "not_applicable" => "na",
                _ => "unknown",
            };
            let cell = format!("<td class=\"{class}\" data-host=\"{host}\" data-playbook=\"{pb}\"");
            assert!(dom.contains(&cell), "rendered page lacks {cell}");
            // Every problem and unknown is written out with its reason, not only in a
            // tooltip, its playbook linked to its runbook.
            if matches!(*want, "present" | "unknown") {
                let row = format!(
                    "<tr class=\"{class}\"><th scope=\"row\">{host}</th><td><a href=\"https://runbooks.example.com/kfix/{pb}.md\">{pb}</a></td>"
                );
                assert!(dom.contains(&row), "rendered page lacks {row}");
            }
        }
    }
    // When, on which inventory, and each playbook's severity.
    let inv_text = format!("inventory <code>{}</code>", inv.display());
    assert!(dom.contains(&inv_text), "{dom}");
    assert!(dom.contains("<time datetime=\"20"), "{dom}");
    assert!(
        dom.contains("<span class=\"sev sev-critical\">critical</span>"),
        "{dom}"
    );
    assert!(dom.contains("<td class=\"reason\">unreachable: "), "{dom}");
    // It prints: a PDF of the page (landscape, the print style sheet).
    let pdf = lab.dir.join("matrix.pdf");
    let printed = std::process::Command::new(chromium)
        .args(common)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--print-to-pdf={}", pdf.display()))
        .arg("--no-pdf-header-footer")
        .arg(&url)
        .output()
        .unwrap();
    let bytes = std::fs::read(&pdf).unwrap_or_default();
    assert!(
        bytes.starts_with(b"%PDF") && bytes.len() > 5_000,
        "{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    let shot = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/check-all-matrix.png");
    let _ = std::fs::remove_file(&shot);
    let st = std::process::Command::new(chromium)
        .args(common)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", shot.display()))
        .args(["--window-size=1100,420", &url])
        .output()
        .unwrap();
    assert!(
        st.status.success() && shot.exists(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
}
