//! Fuzz target: an Alertmanager webhook body as `kfix serve` parses it, then each alert
//! mapped to a playbook (the shipped ones) and to a host of a small inventory.
#![no_main]

use std::sync::{Arc, OnceLock};

use kfix::inventory::{Host, Inventory};
use kfix::playbook::Playbook;
use kfix::serve::alert::Hostnames;
use libfuzzer_sys::fuzz_target;

const INVENTORY: &str =
    "[kube_node]\nnode-1 ansible_host=10.0.0.1\nnode-2.example.com ansible_host=fd00::2\n";

fn world() -> &'static (Vec<Arc<Playbook>>, Vec<Host>, Hostnames) {
    static W: OnceLock<(Vec<Arc<Playbook>>, Vec<Host>, Hostnames)> = OnceLock::new();
    W.get_or_init(|| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../playbooks");
        let mut pbs = Vec::new();
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if let Ok(pb) = kfix::playbook::load(&e.path()) {
                pbs.push(Arc::new(pb));
            }
        }
        let hosts: Vec<Host> = Inventory::parse(std::path::Path::new("fuzz.ini"), INVENTORY)
            .map(|inv| inv.select(None).map(|v| v.into_iter().cloned().collect()))
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let hostnames = Hostnames::from_reports(
            [
                ("ip-10-0-0-1".to_string(), "node-1".to_string()),
                ("shared".to_string(), "node-1".to_string()),
                ("shared".to_string(), "node-2.example.com".to_string()),
            ],
            &hosts,
        );
        (pbs, hosts, hostnames)
    })
}

fuzz_target!(|data: &[u8]| {
    let (pbs, hosts, hostnames) = world();
    if let Ok(hook) = kfix::serve::alert::parse(data) {
        for a in &hook.alerts {
            let _ = a.key();
            let _ = kfix::serve::alert::playbook_for(a, pbs);
            let _ = kfix::serve::alert::host_for(a, hosts, hostnames);
        }
    }
});
