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

/// The playbook an alert asks for: its `kfix_playbook` annotation, else the playbooks
/// whose `alerts:` name the alertname with matching labels (exactly one must).
pub fn playbook_for<'a>(
    a: &Alert,
    pbs: &'a [std::sync::Arc<Playbook>],
) -> Result<&'a Playbook, String> {
    if let Some(id) = a.annotations.get("kfix_playbook") {
        return pbs
            .iter()
            .find(|p| &p.id == id)
            .map(|p| p.as_ref())
            .ok_or_else(|| format!("annotation kfix_playbook={id:?} names no playbook"));
    }
    let found: Vec<&Playbook> = pbs
        .iter()
        .filter(|p| {
            p.alerts.iter().any(|m| {
                m.alertname == a.name() && m.labels.iter().all(|(k, v)| a.labels.get(k) == Some(v))
            })
        })
        .map(|p| p.as_ref())
        .collect();
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

/// The inventory host an alert is about: `labels.node`, else `labels.instance` without
/// its port, matched against inventory names, then `ansible_host`, then the hostnames
/// the hosts reported (`hostnames`: reported name → inventory name), then the first
/// label of a fully qualified name.
pub fn host_for<'a>(
    a: &Alert,
    hosts: &'a [InvHost],
    hostnames: &BTreeMap<String, String>,
) -> Result<&'a InvHost, String> {
    let wanted = match (a.labels.get("node"), a.labels.get("instance")) {
        (Some(n), _) if !n.is_empty() => n.as_str(),
        (_, Some(i)) if !i.is_empty() => strip_port(i),
        _ => return Err("the alert has no `node` or `instance` label".into()),
    };
    let short = wanted.split('.').next().unwrap_or(wanted);
    hosts
        .iter()
        .find(|h| h.name == wanted)
        .or_else(|| hosts.iter().find(|h| h.address() == wanted))
        .or_else(|| {
            let inv = hostnames.get(wanted)?;
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
        let reported: BTreeMap<String, String> =
            [("ip-10-0-0-2.internal".to_string(), "node-2".to_string())]
                .into_iter()
                .collect();
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
            if let Ok(h) = host_for(&a, &hosts, &BTreeMap::new()) {
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
    fn ports_are_stripped() {
        assert_eq!(strip_port("10.0.0.5:9100"), "10.0.0.5");
        assert_eq!(strip_port("node-1.example.com:9100"), "node-1.example.com");
        assert_eq!(strip_port("[fd00::1]:9100"), "fd00::1");
        assert_eq!(strip_port("fd00::1"), "fd00::1");
        assert_eq!(strip_port("node-1"), "node-1");
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
