//! Calico's etcd datastore as libcalico-go keeps it (for `purge-stale-calico-node`):
//! which node a key belongs to, and an IPAM block as calico leaves it once a node's
//! tunnel addresses and its affinity are released. Key layouts and block semantics
//! follow libcalico-go's backend model and IPAM (block.go, block_affinity.go,
//! ipam_handle.go, ipam_host.go, resource.go; ipam.go's release and affinity release).

use serde_json::Value;

/// Where calico 3 keeps its v3 resources.
pub const RESOURCES: &str = "/calico/resources/v3/projectcalico.org/";
const IPAM_HOST: &str = "/calico/ipam/v2/host/";
const IPAM_BLOCK: &str = "/calico/ipam/v2/assignment/";
const IPAM_HANDLE: &str = "/calico/ipam/v2/handle/";

/// The handles calico's allocator gives a node's own addresses (its IPIP, VXLAN and
/// WireGuard tunnel devices), by node name.
pub const TUNNEL_HANDLES: [&str; 3] = [
    "ipip-tunnel-addr-",
    "vxlan-tunnel-addr-",
    "wireguard-tunnel-addr-",
];

/// An IPAM handle calico treats as no allocation (a block holding only these is empty).
const WINDOWS_RESERVED: &str = "windows-reserved-ipam-handle";

/// The node a calico key (or, ending in `/`, a v2 directory) belongs to, or none.
/// Calico 2: its trees `/calico/v1/host/NAME/` and `/calico/bgp/v1/host/NAME/`.
/// Calico 3: its node record
/// (`…/nodes/NAME`), what names it in `spec.node` (workload endpoints, host endpoints,
/// BGP peers), its own Felix and BGP configuration (`node.NAME`), its IPAM host and
/// block affinities (`/calico/ipam/v2/host/NAME[/ipv4/block/CIDR]`), a block affine to
/// it (`"affinity": "host:NAME"`) and its tunnel addresses' handles.
pub fn owner(key: &str, json: &Value) -> Option<String> {
    let spec_node = || {
        json.get("spec")
            .and_then(|s| s.get("node"))
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .map(str::to_string)
    };
    if let Some(rest) = key.strip_prefix(RESOURCES) {
        let (kind, name) = rest.split_once('/')?;
        return match kind {
            "nodes" => Some(name.to_string()).filter(|n| !n.is_empty() && !n.contains('/')),
            "workloadendpoints" | "hostendpoints" | "bgppeers" => spec_node(),
            "felixconfigurations" | "bgpconfigurations" => name
                .strip_prefix("node.")
                .filter(|n| !n.is_empty())
                .map(str::to_string),
            _ => None,
        };
    }
    // Calico 2 (etcd's v2 keyspace): a host's tree of config and workload endpoints,
    // and its BGP data.
    for tree in ["/calico/v1/host/", "/calico/bgp/v1/host/"] {
        if let Some(rest) = key.strip_prefix(tree) {
            let (name, _) = rest.split_once('/')?;
            return Some(name.to_string()).filter(|n| !n.is_empty());
        }
    }
    if let Some(rest) = key.strip_prefix(IPAM_HOST) {
        let name = rest.split('/').next()?;
        return Some(name.to_string()).filter(|n| !n.is_empty());
    }
    if key.starts_with(IPAM_BLOCK) {
        return json
            .get("affinity")
            .and_then(Value::as_str)
            .and_then(|a| a.strip_prefix("host:"))
            .filter(|n| !n.is_empty())
            .map(str::to_string);
    }
    if let Some(handle) = key.strip_prefix(IPAM_HANDLE) {
        return TUNNEL_HANDLES
            .iter()
            .find_map(|p| handle.strip_prefix(p))
            .filter(|n| !n.is_empty())
            .map(str::to_string);
    }
    None
}

/// A block after its node's tunnel addresses (the allocations whose attribute's
/// `handle_id` is one of `handles`) are released and its affinity is released, as
/// calico's IPAM does: each released ordinal's allocation becomes null and the ordinal
/// goes to the end of `unallocated`; attributes no allocation refers to any more are
/// dropped and the allocations renumbered; `affinity` becomes null and
/// `sequenceNumber` (where the block has one) counts the update. None when the block is
/// then empty: calico deletes an empty block whose affinity it releases.
pub fn release_block(block: &Value, handles: &[String]) -> Result<Option<Value>, String> {
    let mut b = block.clone();
    let obj = b.as_object_mut().ok_or("an IPAM block is a JSON object")?;
    let attrs: Vec<Value> = match obj.get("attributes") {
        Some(Value::Array(a)) => a.clone(),
        None | Some(Value::Null) => Vec::new(),
        Some(_) => return Err("an IPAM block's `attributes` is a list".into()),
    };
    let handle_of = |i: usize| {
        attrs
            .get(i)
            .and_then(|a| a.get("handle_id"))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let released: Vec<bool> = (0..attrs.len())
        .map(|i| handle_of(i).is_some_and(|h| handles.contains(&h)))
        .collect();
    // Old attribute index → new one, for those kept.
    let mut renumber = vec![None; attrs.len()];
    let mut kept = Vec::new();
    for (i, a) in attrs.iter().enumerate() {
        if !released[i] {
            renumber[i] = Some(kept.len());
            kept.push(a.clone());
        }
    }
    let Some(Value::Array(allocs)) = obj.get("allocations").cloned() else {
        return Err("an IPAM block has an `allocations` list".into());
    };
    let mut freed = Vec::new();
    let mut new_allocs = Vec::with_capacity(allocs.len());
    for (ordinal, a) in allocs.iter().enumerate() {
        match a {
            Value::Null => new_allocs.push(Value::Null),
            v => {
                let i = v
                    .as_u64()
                    .and_then(|i| usize::try_from(i).ok())
                    .filter(|i| *i < attrs.len())
                    .ok_or_else(|| format!("allocation {ordinal} names no attribute: {v}"))?;
                match renumber[i] {
                    Some(n) => new_allocs.push(Value::from(n)),
                    None => {
                        new_allocs.push(Value::Null);
                        freed.push(ordinal);
                    }
                }
            }
        }
    }
    let empty = new_allocs.iter().all(|a| match a.as_u64() {
        None => true,
        Some(n) => {
            kept.get(n as usize)
                .and_then(|k| k.get("handle_id"))
                .and_then(Value::as_str)
                == Some(WINDOWS_RESERVED)
        }
    });
    if empty {
        return Ok(None);
    }
    if !freed.is_empty() {
        let mut unallocated = match obj.get("unallocated") {
            Some(Value::Array(u)) => u.clone(),
            _ => Vec::new(),
        };
        unallocated.extend(freed.iter().map(|o| Value::from(*o)));
        obj.insert("unallocated".into(), Value::Array(unallocated));
        if let Some(Value::Object(seq)) = obj.get_mut("sequenceNumberForAllocation") {
            for o in &freed {
                seq.remove(&o.to_string());
            }
        }
    }
    obj.insert("allocations".into(), Value::Array(new_allocs));
    obj.insert("attributes".into(), Value::Array(kept));
    obj.insert("affinity".into(), Value::Null);
    if let Some(n) = obj.get("sequenceNumber").and_then(Value::as_u64) {
        obj.insert("sequenceNumber".into(), Value::from(n + 1));
    }
    Ok(Some(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_belong_to_the_node_calico_keeps_them_for() {
        let none = Value::Null;
        let r = RESOURCES;
        assert_eq!(
            owner(&format!("{r}nodes/ip-10-0-0-12"), &none).as_deref(),
            Some("ip-10-0-0-12")
        );
        let wep = json!({"spec": {"node": "amz-old", "pod": "web-1"}});
        let key = format!("{r}workloadendpoints/default/amz--old-k8s-web--1-eth0");
        assert_eq!(owner(&key, &wep).as_deref(), Some("amz-old"));
        assert_eq!(
            owner(
                &format!("{r}bgppeers/rr-1"),
                &json!({"spec": {"node": "n1"}})
            )
            .as_deref(),
            Some("n1")
        );
        assert_eq!(
            owner(&format!("{r}bgppeers/global"), &json!({"spec": {}})),
            None
        );
        assert_eq!(
            owner(&format!("{r}felixconfigurations/node.n1"), &none).as_deref(),
            Some("n1")
        );
        assert_eq!(
            owner(&format!("{r}felixconfigurations/default"), &none),
            None
        );
        assert_eq!(
            owner(&format!("{r}ippools/default-ipv4-ippool"), &none),
            None
        );
        assert_eq!(
            owner("/calico/ipam/v2/host/n1", &json!({})).as_deref(),
            Some("n1")
        );
        assert_eq!(
            owner(
                "/calico/ipam/v2/host/n1/ipv4/block/10.244.5.0-26",
                &json!({"state": "confirmed"})
            )
            .as_deref(),
            Some("n1")
        );
        let block = json!({"cidr": "10.244.5.0/26", "affinity": "host:n1"});
        assert_eq!(
            owner(
                "/calico/ipam/v2/assignment/ipv4/block/10.244.5.0-26",
                &block
            )
            .as_deref(),
            Some("n1")
        );
        assert_eq!(
            owner(
                "/calico/ipam/v2/assignment/ipv4/block/10.244.6.0-26",
                &json!({"affinity": null})
            ),
            None
        );
        assert_eq!(
            owner("/calico/ipam/v2/handle/ipip-tunnel-addr-n1", &none).as_deref(),
            Some("n1")
        );
        assert_eq!(
            owner("/calico/ipam/v2/handle/k8s-pod-network.0123abcd", &none),
            None
        );
        // Calico 2's trees, and their directories.
        let o = |k: &str| owner(k, &Value::Null);
        assert_eq!(
            o("/calico/v1/host/AMZ-IAD12-H2/config/marker").as_deref(),
            Some("AMZ-IAD12-H2")
        );
        assert_eq!(
            o("/calico/bgp/v1/host/AMZ-IAD12-H2/ip_addr_v4").as_deref(),
            Some("AMZ-IAD12-H2")
        );
        assert_eq!(
            o("/calico/v1/host/AMZ-IAD12-H2/").as_deref(),
            Some("AMZ-IAD12-H2")
        );
        assert_eq!(o("/calico/v1/host/"), None);
        assert_eq!(o("/calico/ipam/v2/host/"), None);
        assert_eq!(o("/calico/ipam/v2/host/n1/ipv4/").as_deref(), Some("n1"));
        assert_eq!(o("/calico/bgp/v1/global/as_num"), None);
    }

    fn block(allocations: Value, unallocated: Value, attributes: Value) -> Value {
        json!({"cidr": "10.244.5.0/30", "affinity": "host:n1", "strictAffinity": false,
               "allocations": allocations, "unallocated": unallocated,
               "attributes": attributes, "deleted": false})
    }

    #[test]
    fn a_block_with_only_the_tunnel_address_is_deleted() {
        let b = block(
            json!([0, null, null, null]),
            json!([1, 2, 3]),
            json!([{"handle_id": "ipip-tunnel-addr-n1", "secondary": {"node": "n1", "type": "ipipTunnelAddress"}}]),
        );
        let handles = vec!["ipip-tunnel-addr-n1".to_string()];
        assert_eq!(release_block(&b, &handles).unwrap(), None);
    }

    #[test]
    fn a_block_with_pods_keeps_them_and_loses_its_affinity_and_tunnel_address() {
        let b = block(
            json!([0, 1, null, 2]),
            json!([2]),
            json!([
                {"handle_id": "ipip-tunnel-addr-n1", "secondary": {"node": "n1", "type": "ipipTunnelAddress"}},
                {"handle_id": "k8s-pod-network.aaa", "secondary": {"namespace": "default", "node": "n1", "pod": "web-1"}},
                {"handle_id": "k8s-pod-network.bbb", "secondary": {"namespace": "default", "node": "n1", "pod": "web-2"}}
            ]),
        );
        let handles = vec![
            "ipip-tunnel-addr-n1".to_string(),
            "vxlan-tunnel-addr-n1".to_string(),
        ];
        let got = release_block(&b, &handles).unwrap().unwrap();
        assert_eq!(got["affinity"], Value::Null);
        assert_eq!(got["allocations"], json!([null, 0, null, 1]));
        assert_eq!(got["unallocated"], json!([2, 0]));
        assert_eq!(got["attributes"][0]["handle_id"], "k8s-pod-network.aaa");
        assert_eq!(got["attributes"].as_array().unwrap().len(), 2);
        assert_eq!(got["cidr"], "10.244.5.0/30");
        // Nothing to release: only the affinity goes.
        let got = release_block(&b, &[]).unwrap().unwrap();
        assert_eq!(got["allocations"], b["allocations"]);
        assert_eq!(got["affinity"], Value::Null);
    }

    #[test]
    fn newer_blocks_count_the_update_and_forget_released_sequence_numbers() {
        let mut b = block(
            json!([0, 1, null, null]),
            json!([2, 3]),
            json!([{"handle_id": "vxlan-tunnel-addr-n1"}, {"handle_id": "k8s-pod-network.a"}]),
        );
        b["sequenceNumber"] = json!(7);
        b["sequenceNumberForAllocation"] = json!({"0": 3, "1": 6});
        let got = release_block(&b, &["vxlan-tunnel-addr-n1".to_string()])
            .unwrap()
            .unwrap();
        assert_eq!(got["sequenceNumber"], 8);
        assert_eq!(got["sequenceNumberForAllocation"], json!({"1": 6}));
        // Only a Windows-reserved allocation left: empty, as calico counts it.
        let w = block(
            json!([0, 1, null, null]),
            json!([2, 3]),
            json!([{"handle_id": "ipip-tunnel-addr-n1"}, {"handle_id": "windows-reserved-ipam-handle"}]),
        );
        assert_eq!(
            release_block(&w, &["ipip-tunnel-addr-n1".to_string()]).unwrap(),
            None
        );
    }

    #[test]
    fn a_malformed_block_is_an_error_not_a_guess() {
        assert!(release_block(&json!("x"), &[]).is_err());
        assert!(release_block(&json!({"allocations": [5], "attributes": []}), &[]).is_err());
        assert!(release_block(&json!({"attributes": []}), &[]).is_err());
    }
}
