//! `route` steps and the routes probes see: routes selected by destination (exactly, or
//! every route inside a network), device, gateway and a `where` expression, read from
//! `ip route`'s text output (iproute2 before 4.14 has no `-j`: CentOS 7's 3.10 is the
//! field reports' userland); deletion captures every attribute so undo re-adds the
//! route exactly.

use crate::host::{HResult, Host, HostError, failed};
use crate::net::Net;
use crate::plan::{Op, StepPlan, Undo, state_diff};
use crate::playbook::{Presence, RouteSpec, Text};
use crate::quote::Cmd;

/// Route types `ip route` prints before the destination (unicast is not printed).
const TYPES: &[&str] = &[
    "unicast",
    "local",
    "broadcast",
    "multicast",
    "throw",
    "unreachable",
    "prohibit",
    "blackhole",
    "nat",
    "anycast",
];

/// Flags `ip route` prints that describe the route's state, not how it was added.
const STATE_FLAGS: &[&str] = &[
    "linkdown",
    "dead",
    "offload",
    "trap",
    "rt_offload",
    "rt_trap",
    "rt_offload_failed",
    "notify",
];

/// A route as `ip route` prints it, reduced to what identifies and recreates it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The type when not unicast (`blackhole`, `unreachable`, ...).
    pub kind: Option<String>,
    pub dst: String,
    pub dev: Option<String>,
    pub gateway: Option<String>,
    pub metric: Option<u64>,
    pub protocol: Option<String>,
    pub scope: Option<String>,
    pub prefsrc: Option<String>,
    pub onlink: bool,
    /// Other attributes, as printed (`mtu 1400`, `nexthop via … dev … weight 1`):
    /// given back to `ip route add` as they are.
    pub extra: Vec<String>,
    /// The line as `ip route` printed it (whitespace collapsed, nexthops joined).
    pub text: String,
}

impl Route {
    /// One route from `ip route show` text (its continuation lines already joined).
    /// `dev`: the device of `ip route show dev X`, which leaves `dev X` out of its lines.
    pub fn parse(line: &str, dev: Option<&str>) -> Option<Route> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let mut i = 0;
        let kind = match words.first() {
            Some(w) if TYPES.contains(w) => {
                i = 1;
                (*w != "unicast").then(|| w.to_string())
            }
            _ => None,
        };
        let dst = words.get(i)?.to_string();
        i += 1;
        let mut r = Route {
            kind,
            dst,
            dev: dev.map(str::to_string),
            gateway: None,
            metric: None,
            protocol: None,
            scope: None,
            prefsrc: None,
            onlink: false,
            extra: Vec::new(),
            text: words.join(" "),
        };
        while i < words.len() {
            let w = words[i];
            let val = words.get(i + 1).map(|v| v.to_string());
            let mut takes_value = true;
            match w {
                "via" => {
                    // `via inet 10.0.0.1` (newer iproute2 for some families).
                    if val.as_deref() == Some("inet") {
                        i += 1;
                        r.gateway = words.get(i + 1).map(|v| v.to_string());
                    } else {
                        r.gateway = val;
                    }
                }
                "dev" => r.dev = val,
                "proto" => r.protocol = val,
                "scope" => r.scope = val,
                "src" => r.prefsrc = val,
                "metric" => r.metric = val.and_then(|v| v.parse().ok()),
                "onlink" => {
                    r.onlink = true;
                    takes_value = false;
                }
                f if STATE_FLAGS.contains(&f) || f == "pervasive" => takes_value = false,
                "table" => {}
                "nexthop" => {
                    // Multipath: everything after it is the route's hops.
                    r.extra.extend(words[i..].iter().map(|s| s.to_string()));
                    break;
                }
                other => {
                    // An attribute and its value, as printed (`mtu 1400`, `mtu lock 1400`).
                    r.extra.push(other.to_string());
                    if val.as_deref() == Some("lock") {
                        r.extra.push("lock".into());
                        i += 1;
                    }
                    if let Some(v) = words.get(i + 1) {
                        r.extra.push(v.to_string());
                    }
                }
            }
            i += if takes_value { 2 } else { 1 };
        }
        Some(r)
    }

    /// The destination as a network (None for an IPv6 or unusual destination).
    pub fn net(&self) -> Option<Net> {
        Net::parse(&self.dst)
    }

    /// `ip route` arguments that identify (`full`: and recreate) this route.
    pub fn args(&self, full: bool) -> Vec<String> {
        let mut a: Vec<String> = self.kind.iter().cloned().collect();
        a.push(self.dst.clone());
        if let Some(g) = &self.gateway {
            a.extend(["via".into(), g.clone()]);
        }
        if let Some(d) = &self.dev {
            a.extend(["dev".into(), d.clone()]);
        }
        if full {
            if let Some(p) = &self.protocol {
                a.extend(["proto".into(), p.clone()]);
            }
            if let Some(s) = &self.scope {
                a.extend(["scope".into(), s.clone()]);
            }
            if let Some(s) = &self.prefsrc {
                a.extend(["src".into(), s.clone()]);
            }
        }
        a.extend(["metric".into(), self.metric.unwrap_or(0).to_string()]);
        if full {
            if self.onlink {
                a.push("onlink".into());
            }
            a.extend(self.extra.iter().cloned());
        }
        a
    }

    /// Is the route on `dev` (when given) and not on `not_dev` (when given)?
    pub fn on_device(&self, dev: Option<&str>, not_dev: Option<&str>) -> bool {
        let on = self.dev.as_deref();
        dev.is_none_or(|d| on == Some(d)) && not_dev.is_none_or(|d| on != Some(d))
    }

    /// The route as a `where` expression sees it: `route.dst`, `.prefixlen`, `.dev`,
    /// `.via`, `.metric`, `.proto`, `.scope`, `.src`, `.type`, `.line`.
    fn as_value(&self) -> minijinja::Value {
        let net = self.net();
        minijinja::Value::from(minijinja::value::Serde(serde_json::json!({
            "dst": net.map_or(self.dst.clone(), |n| n.to_string()),
            "prefixlen": net.map(|n| n.len),
            "dev": self.dev,
            "via": self.gateway,
            "metric": self.metric.unwrap_or(0),
            "proto": self.protocol,
            "scope": self.scope,
            "src": self.prefsrc,
            "type": self.kind.as_deref().unwrap_or("unicast"),
            "line": self.text,
        })))
    }
}

/// Routes from `ip route show` text: continuation lines (a multipath route's
/// `nexthop`s, indented) belong to the route above them.
pub fn parse_routes(text: &str, dev: Option<&str>) -> Vec<Route> {
    let mut lines: Vec<String> = Vec::new();
    for l in text.lines() {
        if l.trim().is_empty() {
            continue;
        }
        match lines.last_mut() {
            Some(last) if l.starts_with([' ', '\t']) => {
                last.push(' ');
                last.push_str(l.trim());
            }
            _ => lines.push(l.trim().to_string()),
        }
    }
    lines.iter().filter_map(|l| Route::parse(l, dev)).collect()
}

/// Which routes a probe or step means, its templates rendered.
pub struct Select {
    pub dest: String,
    /// Every route whose destination is `dest` or a network inside it, instead of
    /// exactly `dest`.
    pub within: bool,
    pub dev: Option<String>,
    pub not_dev: Option<String>,
    pub via: Option<String>,
    pub metric: Option<u32>,
    pub table: String,
    /// A minijinja expression over `route` that a route must satisfy.
    pub filter: Option<Text>,
}

impl Select {
    /// The one read: exactly the destination, or every route of the table under it
    /// (`root`: prefixes equal to or longer than it).
    fn read(&self) -> Cmd {
        let how = if self.within { "root" } else { "exact" };
        Cmd::new([
            "ip",
            "route",
            "show",
            "table",
            self.table.as_str(),
            how,
            self.dest.as_str(),
        ])
    }
}

/// Normalise a destination the way `ip` prints it (a host route has no /32).
pub fn normalize_dest(d: &str) -> String {
    d.strip_suffix("/32").unwrap_or(d).to_string()
}

/// The routes `sel` selects on the host, in the order `ip route` lists them.
pub async fn select(h: &Host, sel: &Select) -> HResult<Vec<Route>> {
    let (all, chosen) = listed(h, sel).await?;
    Ok(chosen.into_iter().map(|i| all[i].clone()).collect())
}

/// Every route the selection's read lists (in the kernel's order), and which of them
/// the selection chooses.
async fn listed(h: &Host, sel: &Select) -> HResult<(Vec<Route>, Vec<usize>)> {
    if sel.within && Net::parse(&sel.dest).is_none() {
        return failed(format!(
            "`within` needs an IPv4 network, got `{}`",
            sel.dest
        ));
    }
    let out = h.run(&sel.read()).await?;
    if !out.success() {
        return failed(format!(
            "cannot list routes {} {}: {}",
            if sel.within { "inside" } else { "to" },
            sel.dest,
            out.stderr()
        ));
    }
    let all = parse_routes(&out.stdout(), None);
    let mut chosen = Vec::new();
    for (i, r) in all.iter().enumerate() {
        if !r.on_device(sel.dev.as_deref(), sel.not_dev.as_deref())
            || sel
                .via
                .as_ref()
                .is_some_and(|g| r.gateway.as_ref() != Some(g))
            || sel
                .metric
                .is_some_and(|m| r.metric.unwrap_or(0) != u64::from(m))
        {
            continue;
        }
        if let Some(w) = &sel.filter {
            let ctx = minijinja::context! { route => r.as_value(), ..h.ctx.clone() };
            let keep = crate::template::eval_bool(&w.value, &ctx)
                .map_err(|e| HostError::Failed(h.at(w.pos, &format!("`where`: {e}"))))?;
            if !keep {
                continue;
            }
        }
        chosen.push(i);
    }
    Ok((all, chosen))
}

/// How a deleted route is put back where it was among the routes of the same
/// destination and metric: the kernel uses the first of them, so the order is what a
/// route does (report 000's stray route shadowed flannel's because it came first).
/// `prepend` when it was first, `append` when another came before it; neither fails on
/// those other routes, as `add` would.
fn readd_verb(all: &[Route], i: usize) -> &'static str {
    let r = &all[i];
    let first = all
        .iter()
        .position(|o| o.dst == r.dst && o.metric.unwrap_or(0) == r.metric.unwrap_or(0));
    if first == Some(i) {
        "prepend"
    } else {
        "append"
    }
}

/// The selection a step's fields describe.
fn selection(s: &RouteSpec, h: &Host) -> HResult<Select> {
    Ok(Select {
        dest: normalize_dest(&h.render(&s.dest)?),
        within: s.within,
        dev: h.render_opt(&s.dev)?,
        not_dev: h.render_opt(&s.not_dev)?,
        via: h.render_opt(&s.via)?,
        metric: s.metric,
        table: h
            .render_opt(&s.table)?
            .unwrap_or_else(|| "main".to_string()),
        filter: s.filter.clone(),
    })
}

pub async fn plan(id: &str, s: &RouteSpec, h: &Host) -> HResult<StepPlan> {
    let sel = selection(s, h)?;
    let (all, chosen) = listed(h, &sel).await?;
    let matching: Vec<Route> = chosen.iter().map(|&i| all[i].clone()).collect();
    let table = sel.table.clone();
    let table_args = |mut a: Vec<String>| {
        if table != "main" {
            a.extend(["table".into(), table.clone()]);
        }
        a
    };
    // Each route's fingerprint: the routes to exactly its destination.
    let probe =
        |dst: &str| Cmd::new(["ip", "route", "show", "table", table.as_str(), "exact", dst]);
    let ip = |verb: &str, args: Vec<String>| {
        let mut v = vec!["ip".to_string(), "route".to_string(), verb.to_string()];
        v.extend(table_args(args));
        Cmd::new(v)
    };
    match s.state {
        Presence::Absent => {
            if matching.is_empty() {
                return Ok(StepPlan::no_change(id, "route", None));
            }
            let ops = chosen
                .iter()
                .map(|&i| {
                    let r = &all[i];
                    Op::new(
                        format!("delete route {}", r.text),
                        ip("del", r.args(false)),
                        Undo::Cmd(ip(readd_verb(&all, i), r.args(true))),
                    )
                    .fingerprint(probe(&r.dst))
                })
                .collect();
            let before: Vec<String> = matching.iter().map(|r| r.text.clone()).collect();
            Ok(StepPlan::change(id, "route", state_diff(&before, &[]), ops))
        }
        Presence::Present => {
            if sel.within {
                return failed(h.at(
                    s.dest.pos,
                    "`within` selects routes to delete; a `present` route names one destination",
                ));
            }
            if !matching.is_empty() {
                return Ok(StepPlan::no_change(id, "route", None));
            }
            let mut r = Route {
                kind: None,
                dst: sel.dest.clone(),
                dev: sel.dev.clone(),
                gateway: sel.via.clone(),
                metric: sel.metric.map(u64::from),
                protocol: None,
                scope: None,
                prefsrc: None,
                onlink: false,
                extra: Vec::new(),
                text: String::new(),
            };
            r.text = r.args(false).join(" ");
            let op = Op::new(
                format!("add route {}", r.text),
                ip("add", r.args(false)),
                Undo::Cmd(ip("del", r.args(false))),
            )
            .fingerprint(probe(&r.dst));
            Ok(StepPlan::change(
                id,
                "route",
                state_diff(&[], &[r.text.clone()]),
                vec![op],
            ))
        }
    }
}

impl super::Plan for RouteSpec {
    async fn plan(&self, step: &crate::playbook::Step, h: &Host) -> HResult<StepPlan> {
        plan(&step.id, self, h).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ip route` text as iproute2 6.1 prints it, and as CentOS 7's iproute 3.10 does
    /// (two spaces between fields, `proto`/`scope` in another order).
    #[test]
    fn routes_are_read_from_text_old_and_new() {
        let new = "default via 10.0.2.2 dev eth0 proto dhcp src 10.0.2.15 metric 100 \n\
                   10.244.0.0/16 dev eth0 proto static scope link metric 5 linkdown \n\
                   10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink \n\
                   blackhole 10.244.9.0/24 proto bird \n\
                   10.9.9.9 dev eth0 scope link mtu lock 1400 \n\
                   10.8.0.0/16 proto static metric 20 \n\
                   \tnexthop via 10.0.2.3 dev eth0 weight 1 \n\
                   \tnexthop via 10.0.2.4 dev eth0 weight 1 \n";
        let r = parse_routes(new, None);
        assert_eq!(r.len(), 6);
        assert_eq!(r[0].gateway.as_deref(), Some("10.0.2.2"));
        assert_eq!(r[0].metric, Some(100));
        assert_eq!(r[0].prefsrc.as_deref(), Some("10.0.2.15"));
        assert_eq!(
            r[1].args(true).join(" "),
            "10.244.0.0/16 dev eth0 proto static scope link metric 5",
            "linkdown is a state, not an attribute"
        );
        assert_eq!(
            r[2].args(true).join(" "),
            "10.244.2.0/24 via 10.244.2.0 dev flannel.1 metric 0 onlink"
        );
        assert_eq!(r[3].kind.as_deref(), Some("blackhole"));
        assert_eq!(
            r[3].args(true).join(" "),
            "blackhole 10.244.9.0/24 proto bird metric 0"
        );
        assert_eq!(r[4].extra, ["mtu", "lock", "1400"]);
        assert_eq!(r[4].net().map(|n| n.len), Some(32));
        assert_eq!(
            r[5].args(true).join(" "),
            "10.8.0.0/16 proto static metric 20 nexthop via 10.0.2.3 dev eth0 weight 1 nexthop via 10.0.2.4 dev eth0 weight 1"
        );
        let old = "172.16.0.0/12 dev eth0  scope link \n\
                   172.16.0.0/12 dev flannel.1  proto kernel  scope link  src 172.16.74.0 \n\
                   192.168.2.0/24 dev enp0s3  proto kernel  scope link  src 192.168.2.10  metric 100 \n";
        let r = parse_routes(old, None);
        assert_eq!(r[0].text, "172.16.0.0/12 dev eth0 scope link");
        assert_eq!(r[1].dev.as_deref(), Some("flannel.1"));
        assert_eq!(r[2].metric, Some(100));
        assert_eq!(r[2].protocol.as_deref(), Some("kernel"));
        // Put back in its place among routes of one destination and metric.
        let same = parse_routes(
            "10.244.0.0/16 dev eth0 scope link \n10.244.0.0/16 dev flannel.1 proto kernel scope link src 10.244.1.0 \n10.244.0.0/16 dev eth1 metric 5 \n",
            None,
        );
        assert_eq!(
            (0..3).map(|i| readd_verb(&same, i)).collect::<Vec<_>>(),
            ["prepend", "append", "prepend"]
        );
        // `ip route show dev X` leaves the device out.
        let r = parse_routes("10.244.2.0/24 via 10.244.2.0 onlink \n", Some("flannel.1"));
        assert_eq!(r[0].dev.as_deref(), Some("flannel.1"));
    }
}
