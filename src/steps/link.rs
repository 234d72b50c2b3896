//! `link` steps: a network link absent (its attributes, addresses and routes captured
//! from `ip`'s text output, so undo recreates it for the kinds kfix knows how to
//! rebuild; iproute2 before 4.14 has no `-j`) or present.

use crate::host::{HResult, Host, failed};
use crate::plan::{Op, StepPlan, Undo, state_diff};
use crate::playbook::{LinkSpec, Presence};
use crate::quote::Cmd;

/// A link as `ip -d link show` prints it, reduced to what describes and recreates it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    /// `vxlan`, `bridge`, `dummy`, `veth`, ... (None: a plain device).
    pub kind: Option<String>,
    pub mtu: Option<String>,
    pub mac: Option<String>,
    pub up: bool,
    pub state: Option<String>,
    /// The device this one is enslaved to (`master cni0`).
    pub master: Option<String>,
    /// The words of the kind's detail line (`vxlan id 1 local … dstport 8472 nolearning`).
    pub details: Vec<String>,
}

impl Link {
    /// From `ip -d link show dev NAME` text (one device).
    pub fn parse(text: &str) -> Option<Link> {
        let mut lines = text.lines();
        let first = lines.next()?;
        // `5: flannel.1: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1450 … state UNKNOWN …`
        let (_, rest) = first.split_once(": ")?;
        let (name, rest) = rest.split_once(": ")?;
        let name = name.split('@').next().unwrap_or(name).to_string();
        let flags = rest
            .strip_prefix('<')
            .and_then(|r| r.split_once('>'))
            .map_or("", |(f, _)| f);
        let words: Vec<&str> = rest.split_whitespace().collect();
        let after = |k: &str| {
            words
                .iter()
                .position(|w| *w == k)
                .and_then(|i| words.get(i + 1))
                .map(|v| v.to_string())
        };
        let mut link = Link {
            name,
            up: flags.split(',').any(|f| f == "UP"),
            mtu: after("mtu"),
            state: after("state"),
            master: after("master"),
            ..Link::default()
        };
        for line in lines {
            let w: Vec<&str> = line.split_whitespace().collect();
            match w.first() {
                Some(l) if l.starts_with("link/") => {
                    link.mac = w.get(1).filter(|m| m.contains(':')).map(|m| m.to_string());
                }
                Some(k)
                    if link.kind.is_none()
                        && !k.ends_with("_slave")
                        && !matches!(*k, "addrgenmode" | "altname" | "alias" | "prop")
                        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
                {
                    link.kind = Some(k.to_string());
                    link.details = w.iter().map(|s| s.to_string()).collect();
                }
                _ => {}
            }
        }
        Some(link)
    }

    /// The value after `key` in the kind's detail line (`id`, `local`, `dev`, `dstport`).
    fn detail(&self, key: &str) -> Option<&str> {
        let i = self.details.iter().position(|w| w == key)?;
        self.details.get(i + 1).map(String::as_str)
    }

    fn describe(&self) -> String {
        format!(
            "link {} type {} address {} state {}",
            self.name,
            self.kind.as_deref().unwrap_or("device"),
            self.mac.as_deref().unwrap_or("-"),
            self.state.as_deref().unwrap_or("?")
        )
    }
}

/// `ip -d link show dev NAME`, None when the link does not exist.
pub async fn link_info(h: &Host, name: &str) -> HResult<Option<Link>> {
    let out = h
        .run(&Cmd::new(["ip", "-d", "link", "show", "dev", name]))
        .await?;
    if !out.success() {
        if out.stderr().contains("does not exist") {
            return Ok(None);
        }
        return failed(format!("ip link show {name}: {}", out.stderr()));
    }
    match Link::parse(&out.stdout()) {
        Some(l) => Ok(Some(l)),
        None => failed(format!(
            "unexpected `ip -d link show dev {name}` output: {}",
            out.stdout().lines().next().unwrap_or("")
        )),
    }
}

/// The devices enslaved to `name` (a bridge's ports: the pods' veths on cni0), from
/// `ip -o link show master NAME`.
async fn ports_of(h: &Host, name: &str) -> HResult<Vec<String>> {
    let out = h
        .run(&Cmd::new(["ip", "-o", "link", "show", "master", name]))
        .await?;
    Ok(parse_ports(&out.stdout()))
}

fn parse_ports(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split_once(": ").map(|(_, r)| r))
        .filter_map(|r| r.split_once(": ").map(|(n, _)| n))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

/// IPv4 addresses (`A.B.C.D/LEN`) from `ip -o addr show dev NAME` text.
fn parse_addrs(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let i = w.iter().position(|x| *x == "inet")?;
            w.get(i + 1).map(|a| a.to_string())
        })
        .collect()
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

/// A token safe to put on an `ip -batch` line: it came from the host's own `ip`
/// output, and is refused unless it is a plain word.
fn tok(s: &str) -> Option<String> {
    (!s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._:/@-".contains(c)))
    .then(|| s.to_string())
}

/// What hangs off a link besides its own attributes, read before it is deleted.
#[derive(Default)]
struct Parts {
    /// IPv4 addresses, `A.B.C.D/LEN`.
    addrs: Vec<String>,
    routes: Vec<super::route::Route>,
    /// Permanent neighbour entries: (address, MAC).
    neighbours: Vec<(String, String)>,
    /// A VXLAN device's forwarding entries: (MAC, remote address).
    fdb: Vec<(String, String)>,
    /// A bridge's ports.
    ports: Vec<String>,
}

/// `ip neigh show dev NAME nud permanent` text: `10.244.3.0 lladdr 0e:fa:… PERMANENT`.
fn parse_neighbours(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let i = w.iter().position(|x| *x == "lladdr")?;
            Some((w.first()?.to_string(), w.get(i + 1)?.to_string()))
        })
        .collect()
}

/// `bridge fdb show dev NAME` text: a VXLAN device's static remotes,
/// `0e:fa:… dst 10.250.0.13 self permanent` (other entries are the kernel's own).
fn parse_fdb(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let i = w.iter().position(|x| *x == "dst")?;
            (w.contains(&"self") && w.contains(&"permanent"))
                .then(|| Some((w.first()?.to_string(), w.get(i + 1)?.to_string())))?
        })
        .collect()
}

/// [`RECREATE`]'s stdin for a deleted link, or why it cannot be recreated.
fn recreate(link: &Link, parts: &Parts) -> Result<String, String> {
    let (addrs, routes) = (&parts.addrs, &parts.routes);
    let kind = link.kind.as_deref().unwrap_or("unknown");
    let name = tok(&link.name).ok_or("unusual link name")?;
    let mut add = format!("link add {name}");
    if let Some(mtu) = link.mtu.as_deref().and_then(tok) {
        add.push_str(&format!(" mtu {mtu}"));
    }
    if let Some(mac) = link.mac.as_deref().and_then(tok) {
        add.push_str(&format!(" address {mac}"));
    }
    match kind {
        "vxlan" => {
            let id = link.detail("id").and_then(tok).ok_or("vxlan without id")?;
            add.push_str(&format!(" type vxlan id {id}"));
            if let Some(l) = link.detail("local").and_then(tok) {
                add.push_str(&format!(" local {l}"));
            }
            if let Some(l) = link.detail("dev").and_then(tok) {
                add.push_str(&format!(" dev {l}"));
            }
            if let Some(p) = link.detail("dstport").and_then(tok) {
                add.push_str(&format!(" dstport {p}"));
            }
            if link.details.iter().any(|w| w == "nolearning") {
                add.push_str(" nolearning");
            }
        }
        "bridge" | "dummy" => add.push_str(&format!(" type {kind}")),
        other => return Err(format!("kfix cannot recreate a `{other}` link")),
    }
    let mut lines = vec![add];
    if let Some(m) = link.master.as_deref().and_then(tok) {
        lines.push(format!("link set {name} master {m}"));
    }
    for a in addrs {
        if let Some(a) = tok(a) {
            lines.push(format!("address add {a} dev {name}"));
        }
    }
    if link.up {
        lines.push(format!("link set {name} up"));
    }
    for (ip, mac) in &parts.neighbours {
        let (Some(ip), Some(mac)) = (tok(ip), tok(mac)) else {
            return Err(format!("its neighbour entry {ip} {mac} has unusual words"));
        };
        lines.push(format!(
            "neigh replace {ip} lladdr {mac} dev {name} nud permanent"
        ));
    }
    for r in routes {
        if r.protocol.as_deref() == Some("kernel") {
            continue;
        }
        let words: Option<Vec<String>> = r.args(true).iter().map(|w| tok(w)).collect();
        match words {
            Some(w) => lines.push(format!("route add {}", w.join(" "))),
            None => return Err(format!("its route `{}` has unusual words", r.text)),
        }
    }
    lines.push("--".into());
    for (mac, dst) in &parts.fdb {
        let (Some(mac), Some(dst)) = (tok(mac), tok(dst)) else {
            return Err(format!(
                "its forwarding entry {mac} {dst} has unusual words"
            ));
        };
        lines.push(format!("fdb {mac} {dst}"));
    }
    for p in &parts.ports {
        if let Some(p) = tok(p) {
            lines.push(format!("port {p}"));
        }
    }
    Ok(lines.join("\n") + "\n")
}

/// A link's fingerprint: its index and MAC when present (a link deleted and created
/// again since, by its software or anyone, has another index), else `absent`.
const LINK_PROBE: &str = r#"if [ -d "/sys/class/net/$1" ]; then read -r i <"/sys/class/net/$1/ifindex" && read -r a <"/sys/class/net/$1/address" && echo "present $i $a"
elif ip -o link show dev "$1" >/dev/null 2>&1; then echo present; else echo absent; fi"#;

/// Recreate link `$1` as it was: a link of that name created since (by its software,
/// after a restart) is replaced; stdin is the `ip -batch` lines (the link, its master,
/// addresses, state, permanent neighbours, routes), then a `--` line, then `fdb MAC DST`
/// lines (a VXLAN device's forwarding entries) and `port NAME` lines (a bridge's ports,
/// re-attached when they still exist).
const RECREATE: &str = r#"set -e
n=$1 b= x= more=
while IFS= read -r l; do
  if [ -n "$more" ]; then x="$x$l
"; elif [ "$l" = -- ]; then more=1; else b="$b$l
"; fi
done
if ip link show dev "$n" >/dev/null 2>&1; then ip link delete "$n"; fi
printf %s "$b" | ip -batch -
printf %s "$x" | while read -r k a d; do
  case $k in
    fdb) bridge fdb append "$a" dev "$n" dst "$d" self permanent ;;
    port) if ip link show dev "$a" >/dev/null 2>&1; then ip link set "$a" master "$n"; fi ;;
  esac
done"#;

pub async fn plan(id: &str, s: &LinkSpec, h: &Host) -> HResult<StepPlan> {
    let mut p = plan_ops(id, s, h).await?;
    let name = h.render(&s.name)?;
    for op in p.ops.iter_mut() {
        op.fingerprint = Some(Cmd::script(LINK_PROBE, [name.clone()]));
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
            let text = |args: &[&str]| {
                let mut argv: Vec<String> = args.iter().map(|a| a.to_string()).collect();
                argv.push(name.clone());
                let cmd = Cmd::new(argv);
                async move { h.run_ok(&cmd).await }
            };
            let addrs = text(&["ip", "-o", "address", "show", "dev"]).await?;
            let routes = text(&["ip", "route", "show", "dev"]).await?;
            let routes = super::route::parse_routes(&routes.stdout(), Some(&name));
            let neighbours = match link.kind.as_deref() {
                Some("vxlan") => {
                    let n = h
                        .run_ok(&Cmd::new([
                            "ip",
                            "neigh",
                            "show",
                            "dev",
                            name.as_str(),
                            "nud",
                            "permanent",
                        ]))
                        .await?;
                    let f = text(&["bridge", "fdb", "show", "dev"]).await?;
                    (parse_neighbours(&n.stdout()), parse_fdb(&f.stdout()))
                }
                _ => (Vec::new(), Vec::new()),
            };
            let ports = match link.kind.as_deref() {
                Some("bridge") => ports_of(h, &name).await?,
                _ => Vec::new(),
            };
            let parts = Parts {
                addrs: parse_addrs(&addrs.stdout()),
                routes,
                neighbours: neighbours.0,
                fdb: neighbours.1,
                ports: ports.clone(),
            };
            let undo = match recreate(&link, &parts) {
                Ok(input) => Undo::Cmd(Cmd::script(RECREATE, [name.clone()]).with_stdin(input)),
                Err(why) => Undo::Impossible(why),
            };
            let op = Op::new(
                format!("delete link {name}"),
                Cmd::new(["ip", "link", "delete", name.as_str()]),
                undo,
            );
            let mut p = StepPlan::change(id, "link", state_diff(&[link.describe()], &[]), vec![op]);
            // A bridge's ports (the pods' veths on cni0) drop off it with the bridge.
            // A rollback re-attaches those still there; pods recreated in between have
            // new veths on the bridge their software made, which the rollback replaces.
            if !ports.is_empty() {
                p.note = Some(format!(
                    "{} device(s) attached to {name} ({}) are detached with it: their pods are off the network until they are restarted (a rollback re-attaches those still there, not the veths of pods started since)",
                    ports.len(),
                    crate::text::list_some(&ports, 10)
                ));
            }
            Ok(p)
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

impl super::Plan for LinkSpec {
    async fn plan(&self, step: &crate::playbook::Step, h: &Host) -> HResult<StepPlan> {
        plan(&step.id, self, h).await
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

    /// `ip -d link show` as iproute2 6.1 prints a flannel.1, and as CentOS 7's
    /// iproute 3.10 does (no `-j` there); addresses and routes from text too.
    #[test]
    fn recreates_vxlan_with_addresses_and_routes_from_text() {
        let new = "5: flannel.1: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1450 qdisc noqueue state UNKNOWN mode DEFAULT group default \n    link/ether aa:bb:cc:dd:ee:ff brd ff:ff:ff:ff:ff:ff promiscuity 0  allmulti 0 minmtu 68 maxmtu 65535 \n    vxlan id 1 local 10.0.0.5 dev eth0 srcport 0 0 dstport 8472 nolearning ttl auto ageing 300 udpcsum noudp6zerocsumtx noudp6zerocsumrx addrgenmode eui64 numtxqueues 1 numrxqueues 1 gso_max_size 65536 gso_max_segs 65535 \n";
        let old = "5: flannel.1: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1450 qdisc noqueue state UNKNOWN mode DEFAULT \n    link/ether aa:bb:cc:dd:ee:ff brd ff:ff:ff:ff:ff:ff promiscuity 0 \n    vxlan id 1 local 10.0.0.5 dev eth0 port 32768 61000 dstport 8472 nolearning ageing 300 \n";
        let addrs = parse_addrs(
            "5: flannel.1    inet 172.16.3.0/32 scope global flannel.1\\       valid_lft forever preferred_lft forever\n5: flannel.1    inet6 fe80::1/64 scope link \\       valid_lft forever preferred_lft forever\n",
        );
        assert_eq!(addrs, ["172.16.3.0/32"]);
        let routes = crate::steps::route::parse_routes(
            "172.16.4.0/24 via 172.16.4.0 onlink \n172.16.3.0/24 proto kernel scope link src 172.16.3.0 \n",
            Some("flannel.1"),
        );
        let parts = Parts {
            addrs,
            routes,
            neighbours: parse_neighbours("172.16.4.0 lladdr 0e:fa:00:00:00:04 PERMANENT\n"),
            fdb: parse_fdb(
                "0e:fa:00:00:00:04 dst 10.0.0.6 self permanent\n00:00:00:00:00:00 dev flannel.1 self\n",
            ),
            ports: Vec::new(),
        };
        for text in [new, old] {
            let link = Link::parse(text).expect("parses");
            assert_eq!(link.kind.as_deref(), Some("vxlan"));
            assert_eq!(
                recreate(&link, &parts).expect("recreatable"),
                "link add flannel.1 mtu 1450 address aa:bb:cc:dd:ee:ff type vxlan id 1 local 10.0.0.5 dev eth0 dstport 8472 nolearning\n\
                 address add 172.16.3.0/32 dev flannel.1\nlink set flannel.1 up\n\
                 neigh replace 172.16.4.0 lladdr 0e:fa:00:00:00:04 dev flannel.1 nud permanent\n\
                 route add 172.16.4.0/24 via 172.16.4.0 dev flannel.1 metric 0 onlink\n\
                 --\nfdb 0e:fa:00:00:00:04 10.0.0.6\n"
            );
        }
        let bridge = Link::parse("6: cni0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default qlen 1000\n    link/ether 02:42:0a:f4:01:01 brd ff:ff:ff:ff:ff:ff promiscuity 0 \n    bridge forward_delay 1500 hello_time 200 max_age 2000 \n").expect("parses");
        assert_eq!(bridge.kind.as_deref(), Some("bridge"));
        assert_eq!(
            bridge.describe(),
            "link cni0 type bridge address 02:42:0a:f4:01:01 state UP"
        );
        let veth = Link::parse("7: veth1@if2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue master cni0 state UP mode DEFAULT group default \n    link/ether 16:aa:bb:cc:dd:ee brd ff:ff:ff:ff:ff:ff link-netns pod1 promiscuity 1 \n    veth \n    bridge_slave state forwarding priority 32 cost 2 \n").expect("parses");
        assert_eq!(
            (veth.name.as_str(), veth.master.as_deref()),
            ("veth1", Some("cni0"))
        );
        assert!(recreate(&veth, &Parts::default()).is_err());
        let plain = Link::parse("2: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default qlen 1000\n    link/ether 0e:11:22:33:44:55 brd ff:ff:ff:ff:ff:ff promiscuity 0 addrgenmode eui64 numtxqueues 1\n").expect("parses");
        assert_eq!(plain.kind, None);
        let mut evil = bridge.clone();
        evil.mac = Some("x; reboot".into());
        let ports = Parts {
            ports: vec!["vethpod".into(), "x;y".into()],
            ..Parts::default()
        };
        let batch = recreate(&evil, &ports).expect("ok");
        assert!(
            !batch.contains("reboot") && !batch.contains("x;y"),
            "{batch}"
        );
        assert!(batch.ends_with("--\nport vethpod\n"), "{batch}");
        assert_eq!(
            parse_ports(
                "7: veth1@if2: <BROADCAST,UP> mtu 1500 master cni0 state UP\n8: veth2@if2: <UP> mtu 1500 master cni0\n"
            ),
            ["veth1", "veth2"]
        );
    }
}
