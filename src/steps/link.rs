//! `link` steps: a network link absent (its attributes, addresses and routes captured
//! so undo recreates it, for the kinds kfix knows how to rebuild) or present.

use serde_json::Value;

use crate::host::{HResult, Host, failed};
use crate::plan::{Op, StepPlan, Undo, state_diff};
use crate::playbook::{LinkSpec, Presence};
use crate::quote::Cmd;

/// `ip -d -j link show dev NAME`, None when the link does not exist.
pub async fn link_info(h: &Host, name: &str) -> HResult<Option<Value>> {
    let out = h
        .run(&Cmd::new(["ip", "-d", "-j", "link", "show", "dev", name]))
        .await?;
    if !out.success() {
        if out.stderr().contains("does not exist") {
            return Ok(None);
        }
        return failed(format!("ip link show {name}: {}", out.stderr()));
    }
    let v: Value = serde_json::from_str(&out.stdout())
        .map_err(|e| crate::host::HostError::Failed(format!("bad `ip -j link` output: {e}")))?;
    Ok(v.as_array().and_then(|a| a.first()).cloned())
}

/// Does the link exist? A name the kernel accepts for a device is first looked up in
/// /sys/class/net by the shell itself (no program; that sysfs lists the devices of the
/// network namespace it was mounted in, the host's own on a node); only a name not
/// found there is asked of `ip`, which also knows a device's alternative names.
pub async fn link_exists(h: &Host, name: &str) -> HResult<bool> {
    if device_name(name) {
        let out = h.run(&Cmd::script(LINK_LOOKUP, [name])).await?;
        return match out.success() {
            true => Ok(true),
            false if out.stderr().contains("does not exist") => Ok(false),
            false => failed(format!("ip link show {name}: {}", out.stderr())),
        };
    }
    Ok(link_info(h, name).await?.is_some())
}

/// `$1` in /sys/class/net (nothing printed), else `ip`'s answer. A device there is a
/// directory (`bonding_masters`, a file, is not one).
const LINK_LOOKUP: &str = r#"[ -d "/sys/class/net/$1" ] || ip -o link show dev "$1""#;

/// A name the kernel could give a device (`dev_valid_name`): 1 to 15 bytes, not `.` or
/// `..`, no `/`, `:` or whitespace; so a path under /sys/class/net names that device.
fn device_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() < 16
        && n != "."
        && n != ".."
        && !n
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == 0x0b || b.is_ascii_whitespace())
}

/// A token safe to put on an `ip -batch` line: it came from the host's own `ip -j`
/// output, and is refused unless it is a plain word.
fn tok(v: &Value) -> Option<String> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    (!s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._:/@-".contains(c)))
    .then_some(s)
}

/// The `ip -batch` lines that recreate a deleted link, or why it cannot be recreated.
fn recreate(name: &str, link: &Value, addrs: &Value, routes: &Value) -> Result<String, String> {
    let info = link.get("linkinfo");
    let kind = info
        .and_then(|i| i.get("info_kind"))
        .and_then(tok)
        .unwrap_or_else(|| "unknown".to_string());
    let name = tok(&Value::String(name.to_string())).ok_or("unusual link name")?;
    let mut add = format!("link add {name}");
    if let Some(mtu) = link.get("mtu").and_then(tok) {
        add.push_str(&format!(" mtu {mtu}"));
    }
    if let Some(mac) = link.get("address").and_then(tok) {
        add.push_str(&format!(" address {mac}"));
    }
    let data = info.and_then(|i| i.get("info_data"));
    match kind.as_str() {
        "vxlan" => {
            let d = data.ok_or("vxlan link without info_data")?;
            let id = d.get("id").and_then(tok).ok_or("vxlan without id")?;
            add.push_str(&format!(" type vxlan id {id}"));
            if let Some(l) = d.get("local").and_then(tok) {
                add.push_str(&format!(" local {l}"));
            }
            if let Some(l) = d.get("link").and_then(tok) {
                add.push_str(&format!(" dev {l}"));
            }
            if let Some(p) = d.get("port").and_then(tok) {
                add.push_str(&format!(" dstport {p}"));
            }
            if d.get("learning").and_then(Value::as_bool) == Some(false) {
                add.push_str(" nolearning");
            }
        }
        "bridge" | "dummy" => add.push_str(&format!(" type {kind}")),
        other => return Err(format!("kfix cannot recreate a `{other}` link")),
    }
    let mut lines = vec![add];
    for a in addrs
        .as_array()
        .and_then(|a| a.first())
        .and_then(|l| l.get("addr_info"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(local), Some(plen)) = (
            a.get("local").and_then(tok),
            a.get("prefixlen").and_then(tok),
        ) else {
            continue;
        };
        if local.starts_with("fe80:") {
            continue;
        }
        lines.push(format!("address add {local}/{plen} dev {name}"));
    }
    let up = link
        .get("flags")
        .and_then(Value::as_array)
        .is_some_and(|f| f.iter().any(|x| x.as_str() == Some("UP")));
    if up {
        lines.push(format!("link set {name} up"));
    }
    for r in routes.as_array().into_iter().flatten() {
        if r.get("protocol").and_then(Value::as_str) == Some("kernel") {
            continue;
        }
        let Some(dst) = r.get("dst").and_then(tok) else {
            continue;
        };
        let mut l = format!("route add {dst}");
        if let Some(g) = r.get("gateway").and_then(tok) {
            l.push_str(&format!(" via {g}"));
        }
        l.push_str(&format!(" dev {name}"));
        for (k, arg) in [
            ("protocol", "proto"),
            ("scope", "scope"),
            ("prefsrc", "src"),
            ("metric", "metric"),
        ] {
            if let Some(v) = r.get(k).and_then(tok) {
                l.push_str(&format!(" {arg} {v}"));
            }
        }
        if r.get("flags")
            .and_then(Value::as_array)
            .is_some_and(|f| f.iter().any(|x| x.as_str() == Some("onlink")))
        {
            l.push_str(" onlink");
        }
        lines.push(l);
    }
    Ok(lines.join("\n") + "\n")
}

fn describe(name: &str, link: &Value) -> String {
    let kind = link
        .get("linkinfo")
        .and_then(|i| i.get("info_kind"))
        .and_then(Value::as_str)
        .unwrap_or("device");
    let mac = link.get("address").and_then(Value::as_str).unwrap_or("-");
    let state = link.get("operstate").and_then(Value::as_str).unwrap_or("?");
    format!("link {name} type {kind} address {mac} state {state}")
}

pub async fn plan(id: &str, s: &LinkSpec, h: &Host) -> HResult<StepPlan> {
    let mut p = plan_ops(id, s, h).await?;
    let name = h.render(&s.name)?;
    for op in p.ops.iter_mut() {
        op.probe = Some(Cmd::script(
            r#"ip -o link show dev "$1" >/dev/null 2>&1 && echo present || echo absent"#,
            [name.clone()],
        ));
    }
    Ok(p)
}

async fn plan_ops(id: &str, s: &LinkSpec, h: &Host) -> HResult<StepPlan> {
    let name = h.render(&s.name)?;
    let link = link_info(h, &name).await?;
    match (s.state, link) {
        (Presence::Absent, None) | (Presence::Present, Some(_)) => {
            Ok(StepPlan::no_change(id, "link", None))
        }
        (Presence::Absent, Some(link)) => {
            let addrs = h
                .run_ok(&Cmd::new([
                    "ip",
                    "-j",
                    "address",
                    "show",
                    "dev",
                    name.as_str(),
                ]))
                .await?;
            let routes = h
                .run_ok(&Cmd::new([
                    "ip",
                    "-j",
                    "route",
                    "show",
                    "dev",
                    name.as_str(),
                ]))
                .await?;
            let parse = |o: &crate::transport::Output| {
                serde_json::from_str::<Value>(&o.stdout()).unwrap_or(Value::Null)
            };
            let undo = match recreate(&name, &link, &parse(&addrs), &parse(&routes)) {
                Ok(batch) => Undo::Cmd(Cmd::new(["ip", "-batch", "-"]).with_stdin(batch)),
                Err(why) => Undo::Impossible(why),
            };
            let op = Op::new(
                format!("delete link {name}"),
                Cmd::new(["ip", "link", "delete", name.as_str()]),
                undo,
            );
            Ok(StepPlan::change(
                id,
                "link",
                state_diff(&[describe(&name, &link)], &[]),
                vec![op],
            ))
        }
        (Presence::Present, None) => {
            let Some(kind) = h.render_opt(&s.kind)? else {
                return failed(h.at(s.name.pos, "a `present` link needs `kind`"));
            };
            let mut argv = vec![
                "ip".to_string(),
                "link".into(),
                "add".into(),
                name.clone(),
                "type".into(),
                kind.clone(),
            ];
            for a in &s.args {
                argv.push(h.render(a)?);
            }
            let ops = vec![
                Op::new(
                    format!("add link {name} type {kind}"),
                    Cmd::new(argv),
                    Undo::Cmd(Cmd::new(["ip", "link", "delete", name.as_str()])),
                ),
                Op::new(
                    format!("set {name} up"),
                    Cmd::new(["ip", "link", "set", name.as_str(), "up"]),
                    Undo::Nothing,
                ),
            ];
            Ok(StepPlan::change(
                id,
                "link",
                state_diff(&[], &[format!("link {name} type {kind} state UP")]),
                ops,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lookup_finds_a_device_in_sysfs_without_ip_and_asks_ip_otherwise() {
        let run = |name: &str, path: &str| {
            std::process::Command::new("/bin/sh")
                .args(["-c", LINK_LOOKUP, "kfix", name])
                .env("PATH", path)
                .output()
                .expect("sh")
        };
        // `lo` is in every network namespace's sysfs: found with no `ip` on the PATH.
        let lo = run("lo", "/nonexistent");
        assert!(lo.status.success() && lo.stdout.is_empty(), "{lo:?}");
        let none = run("kfixnone0", "/usr/sbin:/usr/bin:/sbin:/bin");
        assert!(!none.status.success(), "{none:?}");
        assert!(
            String::from_utf8_lossy(&none.stderr).contains("does not exist"),
            "{none:?}"
        );
    }

    #[test]
    fn only_a_name_the_kernel_could_give_is_looked_up_as_a_sysfs_path() {
        for ok in [
            "flannel.1",
            "cni0",
            "eth0.100",
            "veth1234abcd@if",
            "a23456789012345",
        ] {
            assert!(device_name(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a:b",
            "a b",
            "a\tb",
            "a\x0bb",
            "a234567890123456",
        ] {
            assert!(!device_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn recreates_vxlan_with_addresses_and_routes() {
        let link: Value = serde_json::from_str(
            r#"{"ifname":"flannel.1","mtu":1450,"address":"aa:bb:cc:dd:ee:ff","flags":["BROADCAST","UP"],
                "linkinfo":{"info_kind":"vxlan","info_data":{"id":1,"local":"10.0.0.5","port":8472,"learning":false}}}"#,
        )
        .expect("json");
        let addrs: Value = serde_json::from_str(r#"[{"addr_info":[{"local":"172.16.3.0","prefixlen":32},{"local":"fe80::1","prefixlen":64}]}]"#).expect("json");
        let routes: Value = serde_json::from_str(
            r#"[{"dst":"172.16.4.0/24","gateway":"172.16.4.0","dev":"flannel.1","flags":["onlink"]},{"dst":"172.16.3.0/24","protocol":"kernel","dev":"flannel.1"}]"#,
        )
        .expect("json");
        assert_eq!(
            recreate("flannel.1", &link, &addrs, &routes).expect("recreatable"),
            "link add flannel.1 mtu 1450 address aa:bb:cc:dd:ee:ff type vxlan id 1 local 10.0.0.5 dstport 8472 nolearning\n\
             address add 172.16.3.0/32 dev flannel.1\nlink set flannel.1 up\n\
             route add 172.16.4.0/24 via 172.16.4.0 dev flannel.1 onlink\n"
        );
        let veth: Value =
            serde_json::from_str(r#"{"linkinfo":{"info_kind":"veth"}}"#).expect("json");
        assert!(recreate("v0", &veth, &Value::Null, &Value::Null).is_err());
        let evil: Value =
            serde_json::from_str(r#"{"linkinfo":{"info_kind":"dummy"},"address":"x; reboot"}"#)
                .expect("json");
        assert!(
            !recreate("d0", &evil, &Value::Null, &Value::Null)
                .expect("ok")
                .contains("reboot")
        );
    }
}
