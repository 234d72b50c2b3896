//! Alertmanager's webhook payload (version 4) and how an alert is mapped to a playbook
//! and an inventory host. Pure functions: no I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::inventory::Host as InvHost;
use crate::playbook::Playbook;

/// The webhook body Alertmanager posts (`webhook_config`, payload version 4).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    pub version: String,
    /// Each alert has its own `status`; the group's (and `receiver`, `groupLabels`, ...)
    /// are not needed.
    pub alerts: Vec<Alert>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub status: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub starts_at: String,
    #[serde(default)]
    pub fingerprint: String,
}

impl Alert {
    pub fn name(&self) -> &str {
        self.labels.get("alertname").map_or("", String::as_str)
    }

    /// Alertmanager's fingerprint, or (from another sender) one derived from the labels.
    pub fn key(&self) -> String {
        if !self.fingerprint.is_empty() {
            return self.fingerprint.clone();
        }
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for (k, v) in &self.labels {
            h.update(k.as_bytes());
            h.update([0]);
            h.update(v.as_bytes());
            h.update([0]);
        }
        h.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// Parse a webhook body, with a message fit for a 400 answer.
pub fn parse(body: &[u8]) -> Result<Webhook, String> {
    let w: Webhook =
        serde_json::from_slice(body).map_err(|e| format!("not an Alertmanager webhook: {e}"))?;
    if w.version != "4" {
        return Err(format!(
            "webhook payload version {:?} is not supported (kfix reads version \"4\")",
            w.version
        ));
    }
    Ok(w)
}

/// The playbook an alert asks for: among the playbooks whose `alerts:` name the
/// alertname with matching labels, exactly one, or the one its `kfix_playbook`
/// annotation names. Whoever can post an alert cannot pick any other playbook.
pub fn playbook_for<'a>(
    a: &Alert,
    pbs: &'a [std::sync::Arc<Playbook>],
) -> Result<&'a Playbook, String> {
    let mut found: Vec<&Playbook> = pbs
        .iter()
        .filter(|p| {
            p.alerts.iter().any(|m| {
                m.alertname == a.name() && m.labels.iter().all(|(k, v)| a.labels.get(k) == Some(v))
            })
        })
        .map(|p| p.as_ref())
        .collect();
    if let Some(id) = a.annotations.get("kfix_playbook") {
        if !pbs.iter().any(|p| &p.id == id) {
            return Err(format!("annotation kfix_playbook={id:?} names no playbook"));
        }
        found.retain(|p| &p.id == id);
        if found.is_empty() {
            return Err(format!(
                "annotation kfix_playbook={id:?}: that playbook does not list alertname {:?} under `alerts:`, so this alert cannot select it",
                a.name()
            ));
        }
    }
    match found[..] {
        [one] => Ok(one),
        [] => Err(format!(
            "no playbook handles alertname {:?} (playbooks list theirs under `alerts:`)",
            a.name()
        )),
        _ => Err(format!(
            "alertname {:?} matches several playbooks ({}); add label matchers or a kfix_playbook annotation",
            a.name(),
            found
                .iter()
                .map(|p| p.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// `instance` without its port: `10.0.0.5:9100` → `10.0.0.5`, `[fd00::1]:9100` → `fd00::1`.
pub fn strip_port(instance: &str) -> &str {
    if let Some(rest) = instance.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match instance.rsplit_once(':') {
        // One colon: host:port. More: a bare IPv6 address.
        Some((host, port)) if !host.contains(':') && port.parse::<u16>().is_ok() => host,
        _ => instance,
    }
}

/// The hostnames inventory hosts reported, mapped back to their inventory names only
/// where that is unambiguous. A host's report is its own word: a hostname two hosts
/// report, or one that is another inventory host's name or address, is a conflict —
/// it picks no host (never the last one to answer), and the server logs it.
#[derive(Clone, Debug, Default)]
pub struct Hostnames {
    pub by_name: BTreeMap<String, String>,
    /// Reported hostname → the inventory hosts that claim it (or whose name or address
    /// it is).
    pub conflicts: BTreeMap<String, Vec<String>>,
}

impl Hostnames {
    /// From (reported hostname, inventory name) pairs.
    pub fn from_reports(
        reports: impl IntoIterator<Item = (String, String)>,
        hosts: &[InvHost],
    ) -> Hostnames {
        let mut claims: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (reported, inv) in reports {
            if !reported.is_empty() {
                claims.entry(reported).or_default().push(inv);
            }
        }
        let mut out = Hostnames::default();
        for (reported, mut by) in claims {
            by.sort();
            by.dedup();
            // The name or address of another inventory host: the inventory's word wins.
            let owners: Vec<String> = hosts
                .iter()
                .filter(|h| {
                    (h.name == reported || h.address() == reported) && !by.contains(&h.name)
                })
                .map(|h| h.name.clone())
                .collect();
            if by.len() == 1 && owners.is_empty() {
                out.by_name.insert(reported, by.remove(0));
            } else if by.len() > 1 || !owners.is_empty() {
                by.extend(owners);
                by.sort();
                out.conflicts.insert(reported, by);
            }
        }
        out
    }
}

/// The inventory host an alert is about: `labels.node`, else `labels.instance` without
/// its port, matched against inventory names, then `ansible_host`, then the hostnames
/// the hosts reported (`hostnames`: reported name → inventory name), then the first
/// label of a fully qualified name. A hostname several hosts claim picks none.
pub fn host_for<'a>(
    a: &Alert,
    hosts: &'a [InvHost],
    hostnames: &Hostnames,
) -> Result<&'a InvHost, String> {
    let wanted = match (a.labels.get("node"), a.labels.get("instance")) {
        (Some(n), _) if !n.is_empty() => n.as_str(),
        (_, Some(i)) if !i.is_empty() => strip_port(i),
        _ => return Err("the alert has no `node` or `instance` label".into()),
    };
    let short = wanted.split('.').next().unwrap_or(wanted);
    let by_inventory = hosts
        .iter()
        .find(|h| h.name == wanted)
        .or_else(|| hosts.iter().find(|h| h.address() == wanted));
    if by_inventory.is_none()
        && let Some(claimed) = hostnames.conflicts.get(wanted)
    {
        return Err(format!(
            "node {wanted:?} is a hostname several inventory hosts claim ({}): kfix picks none; label the alert with the inventory name or address",
            claimed.join(", ")
        ));
    }
    by_inventory
        .or_else(|| {
            let inv = hostnames.by_name.get(wanted)?;
            hosts.iter().find(|h| &h.name == inv)
        })
        .or_else(|| hosts.iter().find(|h| h.name == short))
        .ok_or_else(|| format!("node {wanted:?} is not in the inventory (or outside --limit)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(labels: &[(&str, &str)]) -> Alert {
        Alert {
            status: "firing".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: BTreeMap::new(),
            starts_at: String::new(),
            fingerprint: String::new(),
        }
    }

    fn inv_host(name: &str, addr: &str) -> InvHost {
        InvHost {
            name: name.into(),
            groups: vec!["all".into()],
            vars: [("ansible_host".to_string(), serde_json::Value::from(addr))]
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn hosts_by_node_instance_address_or_short_name() {
        let hosts = vec![
            inv_host("node-1", "10.0.0.1"),
            inv_host("node-2", "10.0.0.2"),
        ];
        let reported = Hostnames::from_reports(
            [("ip-10-0-0-2.internal".to_string(), "node-2".to_string())],
            &hosts,
        );
        let pick = |labels: &[(&str, &str)]| {
            host_for(&alert(labels), &hosts, &reported).map(|h| h.name.clone())
        };
        assert_eq!(pick(&[("node", "node-2")]).unwrap(), "node-2");
        assert_eq!(pick(&[("instance", "10.0.0.1:9100")]).unwrap(), "node-1");
        assert_eq!(
            pick(&[("node", "node-2.prod.example.com")]).unwrap(),
            "node-2"
        );
        assert_eq!(
            pick(&[("node", "ip-10-0-0-2.internal")]).unwrap(),
            "node-2",
            "by the hostname the host reported"
        );
        assert!(
            pick(&[("instance", "10.0.0.9:9100")])
                .unwrap_err()
                .contains("not in the inventory")
        );
        assert!(
            pick(&[("job", "x")])
                .unwrap_err()
                .contains("no `node` or `instance` label")
        );
    }

    proptest::proptest! {
        /// Hostile label values (shell syntax, templates, control characters, huge
        /// strings) are data: they pick an inventory host only by exact name or address
        /// (or the first label of a dotted name), never by a pattern, and never panic.
        #[test]
        fn hostile_labels_are_only_compared(node in "\\PC{0,200}", inst in "\\PC{0,200}", name in "\\PC{0,50}") {
            let hosts = vec![inv_host("node-1", "10.0.0.1")];
            let a = alert(&[("alertname", name.as_str()), ("node", node.as_str()), ("instance", inst.as_str())]);
            if let Ok(h) = host_for(&a, &hosts, &Hostnames::default()) {
                let wanted = if node.is_empty() { strip_port(&inst) } else { node.as_str() };
                let short = wanted.split('.').next().unwrap_or(wanted);
                proptest::prop_assert!(wanted == "node-1" || wanted == "10.0.0.1" || short == "node-1");
                proptest::prop_assert_eq!(&h.name, "node-1");
            }
            let _ = playbook_for(&a, &[]);
            let _ = a.key();
        }
    }

    #[test]
    fn a_hostname_two_hosts_claim_picks_neither_and_the_inventory_wins() {
        let hosts = vec![
            inv_host("node-1", "10.0.0.1"),
            inv_host("node-2", "10.0.0.2"),
            inv_host("node-3", "10.0.0.3"),
        ];
        // node-3 says it is node-2's hostname and node-1's name and address.
        let names = Hostnames::from_reports(
            [
                ("web".to_string(), "node-2".to_string()),
                ("web".to_string(), "node-3".to_string()),
                ("node-1".to_string(), "node-3".to_string()),
                ("10.0.0.1".to_string(), "node-3".to_string()),
                ("db".to_string(), "node-1".to_string()),
            ],
            &hosts,
        );
        assert_eq!(names.by_name.len(), 1, "{names:?}");
        assert_eq!(names.by_name["db"], "node-1");
        assert_eq!(names.conflicts["web"], ["node-2", "node-3"]);
        assert_eq!(names.conflicts["node-1"], ["node-1", "node-3"]);
        let pick = |node: &str| {
            host_for(&alert(&[("node", node)]), &hosts, &names).map(|h| h.name.clone())
        };
        assert!(
            pick("web")
                .unwrap_err()
                .contains("several inventory hosts claim (node-2, node-3)")
        );
        assert_eq!(
            pick("node-1").unwrap(),
            "node-1",
            "the inventory's name wins"
        );
        assert_eq!(pick("10.0.0.1").unwrap(), "node-1", "and its address");
        assert_eq!(pick("db").unwrap(), "node-1");
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("10.0.0.5:9100"), "10.0.0.5");
        assert_eq!(strip_port("node-1.example.com:9100"), "node-1.example.com");
        assert_eq!(strip_port("[fd00::1]:9100"), "fd00::1");
        assert_eq!(strip_port("fd00::1"), "fd00::1");
        assert_eq!(strip_port("node-1"), "node-1");
    }

    #[test]
    fn an_annotation_picks_only_among_the_playbooks_that_list_the_alert() {
        let pb = |id: &str, alert: &str| {
            let text = format!(
                "id: {id}\ntitle: T\nalerts: [{alert}]\nsteps:\n  - id: s\n    file: {{path: /etc/x, content: x}}\n"
            );
            std::sync::Arc::new(
                crate::playbook::parse(std::path::Path::new("p.yaml"), &text).expect("valid"),
            )
        };
        let pbs = vec![
            pb("fix-a", "A"),
            pb("fix-a2", "A"),
            pb("wipe-node", "Other"),
        ];
        let mut a = alert(&[("alertname", "A")]);
        assert!(
            playbook_for(&a, &pbs)
                .unwrap_err()
                .contains("several playbooks")
        );
        a.annotations
            .insert("kfix_playbook".into(), "fix-a2".into());
        assert_eq!(playbook_for(&a, &pbs).unwrap().id, "fix-a2");
        // Whoever can post an alert cannot pick a playbook that does not list it.
        a.annotations
            .insert("kfix_playbook".into(), "wipe-node".into());
        let e = playbook_for(&a, &pbs).unwrap_err();
        assert!(e.contains("does not list alertname \"A\""), "{e}");
        a.annotations.insert("kfix_playbook".into(), "nope".into());
        assert!(
            playbook_for(&a, &pbs)
                .unwrap_err()
                .contains("names no playbook")
        );
    }

    #[test]
    fn bodies_are_checked() {
        assert!(
            parse(b"{")
                .unwrap_err()
                .starts_with("not an Alertmanager webhook")
        );
        assert!(
            parse(br#"{"version":"3","status":"firing","alerts":[]}"#)
                .unwrap_err()
                .contains("version \"3\" is not supported")
        );
        let w = parse(br#"{"version":"4","status":"firing","receiver":"kfix","alerts":[{"status":"firing","labels":{"alertname":"A","node":"n1"},"annotations":{},"startsAt":"2026-11-23T10:00:00Z","fingerprint":"abc"}]}"#)
            .unwrap();
        assert_eq!(w.alerts[0].name(), "A");
        assert_eq!(w.alerts[0].key(), "abc");
        let a = alert(&[("alertname", "A"), ("node", "x")]);
        assert_eq!(a.key(), a.clone().key(), "derived keys are stable");
        assert_ne!(a.key(), alert(&[("alertname", "A"), ("node", "y")]).key());
    }
}
