//! What a host's iptables rules do with one packet: a table as `iptables -S` prints it,
//! walked for a described packet (addresses, interfaces, protocol, port, mark) from a
//! built-in chain to its verdict and the exact rule that gave it. A rule that matches
//! on something this model does not know (an ipset, a socket owner) makes the outcome
//! `UNDETERMINED` at that rule rather than a guess either way.

use std::collections::BTreeMap;

use crate::net::Net;

/// The packet a trace follows: the first packet of a new connection.
#[derive(Clone, Debug, Default)]
pub struct Packet {
    pub src: u32,
    pub dst: u32,
    /// The interface it arrived on (None: generated on the host, as in OUTPUT).
    pub in_if: Option<String>,
    /// The interface it leaves by (None: delivered to the host, as in INPUT).
    pub out_if: Option<String>,
    /// `icmp` (an echo request), `tcp` (a SYN) or `udp`.
    pub proto: String,
    pub dport: Option<u16>,
    pub mark: u32,
}

/// Where a trace ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A rule's terminating target (ACCEPT, DROP, REJECT, MASQUERADE, ...).
    Rule { target: String, rule: String },
    /// The built-in chain's policy.
    Policy { chain: String, policy: String },
    /// A rule whose match or target is not modelled.
    Undetermined { rule: String, why: String },
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Rule { target, rule } => write!(f, "{target} by {rule}"),
            Outcome::Policy { chain, policy } => write!(f, "{policy} (policy of {chain})"),
            Outcome::Undetermined { rule, why } => write!(f, "UNDETERMINED at {rule} ({why})"),
        }
    }
}

/// A three-valued match: a rule whose matches cannot all be decided is undetermined
/// unless one of them surely fails.
#[derive(Clone, Debug, PartialEq, Eq)]
enum M {
    Yes,
    No,
    Unknown(String),
}

impl M {
    fn from(b: bool) -> M {
        if b { M::Yes } else { M::No }
    }

    fn negate(self, neg: bool) -> M {
        match (self, neg) {
            (M::Yes, true) => M::No,
            (M::No, true) => M::Yes,
            (m, _) => m,
        }
    }
}

#[derive(Clone, Debug)]
struct Rule {
    text: String,
    words: Vec<String>,
}

/// One table: each chain's policy (built-in chains) and rules, in order.
#[derive(Clone, Debug, Default)]
pub struct Table {
    chains: BTreeMap<String, (Option<String>, Vec<Rule>)>,
}

impl Table {
    /// From `iptables -t TABLE -S` output.
    pub fn parse(text: &str) -> Result<Table, String> {
        let mut t = Table::default();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let words =
                shell_words::split(line).map_err(|e| format!("cannot read `{line}`: {e}"))?;
            match words.first().map(String::as_str) {
                Some("-P") if words.len() >= 3 => {
                    t.chains.entry(words[1].clone()).or_default().0 = Some(words[2].clone());
                }
                Some("-N") if words.len() >= 2 => {
                    t.chains.entry(words[1].clone()).or_default();
                }
                Some("-A") if words.len() >= 2 => {
                    t.chains.entry(words[1].clone()).or_default().1.push(Rule {
                        text: line.to_string(),
                        words: words[2..].to_vec(),
                    });
                }
                _ => return Err(format!("unexpected line in `iptables -S` output: `{line}`")),
            }
        }
        Ok(t)
    }

    /// Follow `p` from the built-in chain `chain` to its outcome.
    pub fn trace(&self, chain: &str, p: &Packet) -> Result<Outcome, String> {
        let Some((policy, _)) = self.chains.get(chain) else {
            return Err(format!("no chain {chain} in the table"));
        };
        let Some(policy) = policy else {
            return Err(format!(
                "{chain} is not a built-in chain (it has no policy)"
            ));
        };
        let mut p = p.clone();
        Ok(match self.walk(chain, &mut p, 0)? {
            Flow::Done(o) => o,
            Flow::Return => Outcome::Policy {
                chain: chain.to_string(),
                policy: policy.clone(),
            },
        })
    }

    fn walk(&self, chain: &str, p: &mut Packet, depth: usize) -> Result<Flow, String> {
        if depth > 64 {
            return Err(format!("chains nest deeper than 64 at {chain} (a loop?)"));
        }
        let Some((_, rules)) = self.chains.get(chain) else {
            return Err(format!(
                "a rule jumps to chain {chain}, which does not exist"
            ));
        };
        for r in rules {
            let (m, target, goto, topts) = self.judge(r, p)?;
            // A rule that only logs or annotates does not matter when undecided.
            let continues = target
                .as_deref()
                .is_some_and(|t| CONTINUE.contains(&t) && !matches!(t, "MARK" | "CONNMARK"));
            match m {
                M::No => continue,
                M::Unknown(why) if !continues => {
                    return Ok(Flow::Done(Outcome::Undetermined {
                        rule: r.text.clone(),
                        why,
                    }));
                }
                M::Unknown(_) => continue,
                M::Yes => {}
            }
            let Some(target) = target else {
                continue; // no target: a counting rule
            };
            match target.as_str() {
                "RETURN" => return Ok(Flow::Return),
                "MARK" => {
                    if let Some((v, mask)) = opt(&topts, "--set-xmark").and_then(value_mask) {
                        p.mark = (p.mark & !mask) ^ v;
                    }
                }
                "CONNMARK" => {
                    // A new connection's mark is 0: restoring it clears the masked bits.
                    if topts.iter().any(|w| w == "--restore-mark") {
                        let nf = opt(&topts, "--nfmask")
                            .and_then(|v| parse_u32(&v))
                            .unwrap_or(u32::MAX);
                        let ct = opt(&topts, "--ctmask")
                            .and_then(|v| parse_u32(&v))
                            .unwrap_or(u32::MAX);
                        p.mark &= !(nf & ct);
                    }
                }
                t if CONTINUE.contains(&t) => {}
                t if TERMINAL.contains(&t) => {
                    return Ok(Flow::Done(Outcome::Rule {
                        target: t.to_string(),
                        rule: r.text.clone(),
                    }));
                }
                t if self.chains.contains_key(t) => match self.walk(t, p, depth + 1)? {
                    Flow::Done(o) => return Ok(Flow::Done(o)),
                    // A goto's chain returns to this chain's caller.
                    Flow::Return if goto => return Ok(Flow::Return),
                    Flow::Return => {}
                },
                t => {
                    return Ok(Flow::Done(Outcome::Undetermined {
                        rule: r.text.clone(),
                        why: format!("target {t} is not modelled"),
                    }));
                }
            }
        }
        Ok(Flow::Return)
    }

    /// Does the rule match, and its target (`-j`/`-g`), whether it is a goto, and the
    /// target's options.
    #[allow(clippy::type_complexity)]
    fn judge(
        &self,
        r: &Rule,
        p: &Packet,
    ) -> Result<(M, Option<String>, bool, Vec<String>), String> {
        let w = &r.words;
        let mut all = M::Yes;
        let mut and = |m: M| {
            all = match (&all, m) {
                (M::No, _) | (_, M::No) => M::No,
                (M::Unknown(a), _) => M::Unknown(a.clone()),
                (M::Yes, m) => m,
            }
        };
        let mut target = None;
        let mut goto = false;
        let mut topts = Vec::new();
        let mut i = 0;
        let mut neg = false;
        while i < w.len() {
            let o = w[i].as_str();
            let val = w.get(i + 1).map(String::as_str).unwrap_or("");
            match o {
                "!" => {
                    neg = true;
                    i += 1;
                    continue;
                }
                "-s" | "--source" => and(addr_match(val, p.src).negate(neg)),
                "-d" | "--destination" => and(addr_match(val, p.dst).negate(neg)),
                "-i" | "--in-interface" => and(iface(val, p.in_if.as_deref()).negate(neg)),
                "-o" | "--out-interface" => and(iface(val, p.out_if.as_deref()).negate(neg)),
                "-p" | "--protocol" => and(proto(val, &p.proto).negate(neg)),
                "-f" | "--fragment" => {
                    and(M::No.negate(neg));
                    i += 1;
                    neg = false;
                    continue;
                }
                "-m" | "--match" => {
                    let (args, next) = module_args(w, i + 2);
                    and(module(val, &args, p));
                    i = next;
                    neg = false;
                    continue;
                }
                "-j" | "--jump" | "-g" | "--goto" => {
                    target = Some(val.to_string());
                    goto = o.starts_with("-g");
                    topts = w[(i + 2).min(w.len())..].to_vec();
                    break;
                }
                other => and(M::Unknown(format!("option {other} is not modelled"))),
            }
            neg = false;
            i += 2;
        }
        Ok((all, target, goto, topts))
    }
}

enum Flow {
    Done(Outcome),
    Return,
}

/// Targets that end the packet's walk in this table.
const TERMINAL: &[&str] = &[
    "ACCEPT",
    "DROP",
    "REJECT",
    "QUEUE",
    "NFQUEUE",
    "MASQUERADE",
    "SNAT",
    "DNAT",
    "REDIRECT",
    "NETMAP",
];

/// Targets after which the packet goes on to the next rule (they log, count or
/// annotate; MARK and CONNMARK are applied to the packet's mark).
const CONTINUE: &[&str] = &[
    "LOG",
    "NFLOG",
    "ULOG",
    "TRACE",
    "AUDIT",
    "TCPMSS",
    "TCPOPTSTRIP",
    "CHECKSUM",
    "CT",
    "NOTRACK",
    "DSCP",
    "TOS",
    "TTL",
    "CLASSIFY",
    "SET",
    "MARK",
    "CONNMARK",
];

/// A module's options (`[!] --opt value...`) up to the next core option; and where the
/// rule goes on.
fn module_args(w: &[String], mut i: usize) -> (Vec<(bool, String, Vec<String>)>, usize) {
    let mut args: Vec<(bool, String, Vec<String>)> = Vec::new();
    let mut neg = false;
    while i < w.len() {
        let x = w[i].as_str();
        if x == "!" && w.get(i + 1).is_some_and(|n| n.starts_with("--")) {
            neg = true;
            i += 1;
            continue;
        }
        if x.starts_with("--") {
            args.push((neg, x.to_string(), Vec::new()));
            neg = false;
            i += 1;
            continue;
        }
        if x.starts_with('-') && x.len() == 2 || x == "!" {
            break;
        }
        if let Some(last) = args.last_mut() {
            last.2.push(x.to_string());
        }
        i += 1;
    }
    (args, i)
}

fn addr_match(v: &str, a: u32) -> M {
    // iptables -S prints one address per rule; a list is split into several rules.
    match Net::parse(v) {
        Some(n) => M::from(n.contains_addr(a)),
        None => M::Unknown(format!("address {v} is not modelled")),
    }
}

fn iface(pattern: &str, name: Option<&str>) -> M {
    let Some(name) = name else {
        return M::No;
    };
    M::from(match pattern.strip_suffix('+') {
        Some(prefix) => name.starts_with(prefix),
        None => name == pattern,
    })
}

fn proto_number(p: &str) -> &str {
    match p {
        "1" => "icmp",
        "6" => "tcp",
        "17" => "udp",
        other => other,
    }
}

fn proto(rule: &str, packet: &str) -> M {
    let r = proto_number(rule);
    M::from(r == "all" || r == "0" || r == proto_number(packet))
}

fn parse_u32(s: &str) -> Option<u32> {
    match s.strip_prefix("0x") {
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// `VALUE[/MASK]` as iptables prints marks.
fn value_mask(s: String) -> Option<(u32, u32)> {
    match s.split_once('/') {
        Some((v, m)) => Some((parse_u32(v)?, parse_u32(m)?)),
        None => Some((parse_u32(&s)?, u32::MAX)),
    }
}

/// The first value of a target option (`--reject-with X`).
fn opt(words: &[String], name: &str) -> Option<String> {
    let i = words.iter().position(|w| w == name)?;
    words.get(i + 1).cloned()
}

fn port_in(list: &str, port: u16) -> bool {
    list.split(',').any(|r| match r.split_once(':') {
        Some((a, b)) => {
            a.parse::<u16>().is_ok_and(|a| a <= port) && b.parse::<u16>().is_ok_and(|b| port <= b)
        }
        None => r.parse::<u16>().is_ok_and(|x| x == port),
    })
}

/// A match module's verdict on the packet.
fn module(name: &str, args: &[(bool, String, Vec<String>)], p: &Packet) -> M {
    let mut all = M::Yes;
    for (neg, o, vals) in args {
        let v = vals.first().map(String::as_str).unwrap_or("");
        let m = match (name, o.as_str()) {
            ("comment", _) | ("limit", _) => M::Yes,
            ("conntrack", "--ctstate") | ("state", "--state") => {
                M::from(v.split(',').any(|s| s == "NEW"))
            }
            ("mark", "--mark") => match value_mask(v.to_string()) {
                Some((val, mask)) => M::from(p.mark & mask == val),
                None => M::Unknown(format!("mark {v} is not modelled")),
            },
            ("tcp" | "udp", "--dport" | "--destination-port")
            | ("multiport", "--dports" | "--destination-ports" | "--ports") => match p.dport {
                Some(port) => M::from(port_in(v, port)),
                None => M::Unknown("the packet has no port".into()),
            },
            ("tcp", "--syn") => M::from(p.proto == "tcp"),
            ("tcp", "--tcp-flags") => {
                // The first packet is a SYN: compared flags must be exactly SYN.
                let mask: Vec<&str> = v.split(',').collect();
                let set: Vec<&str> = vals
                    .get(1)
                    .map(|s| s.split(',').collect())
                    .unwrap_or_default();
                let syn_in_mask = mask.iter().any(|f| *f == "SYN" || *f == "ALL");
                M::from(set.iter().all(|f| *f == "SYN") && (set.is_empty() || syn_in_mask))
            }
            ("icmp", "--icmp-type") => M::from(matches!(v, "8" | "8/0" | "echo-request" | "any")),
            ("addrtype", "--src-type" | "--dst-type") => {
                let types: Vec<&str> = v.split(',').collect();
                if types.contains(&"UNICAST") {
                    M::Yes
                } else if types
                    .iter()
                    .all(|t| matches!(*t, "BROADCAST" | "MULTICAST" | "ANYCAST" | "BLACKHOLE"))
                {
                    M::No
                } else {
                    M::Unknown(format!("addrtype {v} is not modelled"))
                }
            }
            ("iprange", "--src-range" | "--dst-range") => {
                let a = if o == "--src-range" { p.src } else { p.dst };
                match v
                    .split_once('-')
                    .and_then(|(x, y)| Some((Net::parse(x)?, Net::parse(y)?)))
                {
                    Some((x, y)) => M::from(x.addr <= a && a <= y.addr),
                    None => M::Unknown(format!("range {v} is not modelled")),
                }
            }
            // A routed packet (flannel.1 -> cni0) is not bridged.
            ("physdev", "--physdev-is-bridged") => M::No,
            ("pkttype", "--pkt-type") => M::from(v == "unicast"),
            _ => M::Unknown(format!("-m {name} {o} is not modelled")),
        }
        .negate(*neg);
        all = match (all, m) {
            (M::No, _) | (_, M::No) => M::No,
            (M::Unknown(a), _) => M::Unknown(a),
            (M::Yes, m) => m,
        };
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> u32 {
        Net::parse(s).expect("address").addr
    }

    /// A packet from another node's pod (in on flannel.1) to a pod here (out on cni0).
    fn to_pod() -> Packet {
        Packet {
            src: ip("10.244.2.2"),
            dst: ip("10.244.1.2"),
            in_if: Some("flannel.1".into()),
            out_if: Some("cni0".into()),
            proto: "icmp".into(),
            ..Packet::default()
        }
    }

    fn trace(rules: &str, chain: &str, p: &Packet) -> String {
        Table::parse(rules)
            .expect("parses")
            .trace(chain, p)
            .expect("traces")
            .to_string()
    }

    /// The CentOS 7 iptables service's FORWARD rule (report 003's "Destination Host
    /// Prohibited") after Docker 17's chains, whose isolation rules carry interfaces.
    #[test]
    fn the_centos_reject_refuses_pod_traffic_and_dockers_isolation_does_not() {
        let rules = "-P INPUT ACCEPT\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT\n-N DOCKER\n-N DOCKER-ISOLATION\n\
            -A FORWARD -j DOCKER-ISOLATION\n-A FORWARD -o docker0 -j DOCKER\n\
            -A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
            -A FORWARD -i docker0 ! -o docker0 -j ACCEPT\n-A FORWARD -i docker0 -o docker0 -j ACCEPT\n\
            -A FORWARD -j REJECT --reject-with icmp-host-prohibited\n\
            -A DOCKER-ISOLATION -i br-0f1e2d3c4b5a -o docker0 -j DROP\n\
            -A DOCKER-ISOLATION -i docker0 -o br-0f1e2d3c4b5a -j DROP\n\
            -A DOCKER-ISOLATION -j RETURN\n";
        assert_eq!(
            trace(rules, "FORWARD", &to_pod()),
            "REJECT by -A FORWARD -j REJECT --reject-with icmp-host-prohibited"
        );
        // Pods on docker0 (report 001's layout): docker's own rule accepts them out.
        let from_docker0 = Packet {
            in_if: Some("docker0".into()),
            out_if: Some("flannel.1".into()),
            ..to_pod()
        };
        assert_eq!(
            trace(rules, "FORWARD", &from_docker0),
            "ACCEPT by -A FORWARD -i docker0 ! -o docker0 -j ACCEPT"
        );
    }

    /// Docker 20.10's policy DROP with flannel's ACCEPT rules: harmless; without them
    /// the policy drops pod traffic.
    #[test]
    fn a_drop_policy_is_harmless_where_an_accept_rule_covers_the_pod_network() {
        let docker = "-P FORWARD DROP\n-N DOCKER\n-N DOCKER-ISOLATION-STAGE-1\n-N DOCKER-ISOLATION-STAGE-2\n-N DOCKER-USER\n\
            -A FORWARD -j DOCKER-USER\n-A FORWARD -j DOCKER-ISOLATION-STAGE-1\n\
            -A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
            -A FORWARD -o docker0 -j DOCKER\n-A FORWARD -i docker0 ! -o docker0 -j ACCEPT\n-A FORWARD -i docker0 -o docker0 -j ACCEPT\n\
            -A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2\n\
            -A DOCKER-ISOLATION-STAGE-1 -j RETURN\n-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP\n\
            -A DOCKER-ISOLATION-STAGE-2 -j RETURN\n-A DOCKER-USER -j RETURN\n";
        assert_eq!(
            trace(docker, "FORWARD", &to_pod()),
            "DROP (policy of FORWARD)"
        );
        let flannel = format!(
            "{docker}-A FORWARD -s 10.244.0.0/16 -m comment --comment \"flanneld forward\" -j ACCEPT\n-A FORWARD -d 10.244.0.0/16 -m comment --comment \"flanneld forward\" -j ACCEPT\n"
        );
        assert_eq!(
            trace(&flannel, "FORWARD", &to_pod()),
            "ACCEPT by -A FORWARD -s 10.244.0.0/16 -m comment --comment \"flanneld forward\" -j ACCEPT"
        );
    }

    /// Marks, gotos, negations and what is not modelled.
    #[test]
    fn marks_gotos_and_the_undetermined() {
        let kube = "-P POSTROUTING ACCEPT\n-N KUBE-POSTROUTING\n\
            -A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n\
            -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
            -A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0\n\
            -A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n";
        let node = Packet {
            src: ip("192.168.2.10"),
            dst: ip("10.244.2.2"),
            out_if: Some("flannel.1".into()),
            proto: "icmp".into(),
            ..Packet::default()
        };
        assert_eq!(
            trace(kube, "POSTROUTING", &node),
            "ACCEPT (policy of POSTROUTING)"
        );
        let marked = Packet {
            mark: 0x4000,
            ..node.clone()
        };
        assert!(
            trace(kube, "POSTROUTING", &marked).starts_with("MASQUERADE by -A KUBE-POSTROUTING")
        );
        let flannel = format!(
            "{kube}-A POSTROUTING -s 10.244.0.0/16 -d 10.244.0.0/16 -j RETURN\n\
             -A POSTROUTING -s 10.244.0.0/16 ! -d 224.0.0.0/4 -j MASQUERADE\n\
             -A POSTROUTING ! -s 10.244.0.0/16 -d 10.244.1.0/24 -j RETURN\n\
             -A POSTROUTING ! -s 10.244.0.0/16 -d 10.244.0.0/16 -j MASQUERADE\n"
        );
        assert_eq!(
            trace(&flannel, "POSTROUTING", &node),
            "MASQUERADE by -A POSTROUTING ! -s 10.244.0.0/16 -d 10.244.0.0/16 -j MASQUERADE"
        );
        let goto = "-P FORWARD DROP\n-N A\n-N B\n-A FORWARD -g A\n-A FORWARD -j ACCEPT\n-A A -j B\n-A B -j RETURN\n";
        assert_eq!(
            trace(goto, "FORWARD", &to_pod()),
            "DROP (policy of FORWARD)"
        );
        let set =
            "-P FORWARD DROP\n-A FORWARD -m set --match-set cali40all-ipam-pools src -j ACCEPT\n";
        assert!(trace(set, "FORWARD", &to_pod()).starts_with("UNDETERMINED at -A FORWARD -m set"));
        // A rule that surely fails on another match is not undetermined.
        let set2 = "-P FORWARD DROP\n-A FORWARD -i eth9 -m set --match-set x src -j ACCEPT\n";
        assert_eq!(
            trace(set2, "FORWARD", &to_pod()),
            "DROP (policy of FORWARD)"
        );
        // Logging rules with unknown matches do not stop the walk.
        let log = "-P FORWARD ACCEPT\n-A FORWARD -m set --match-set x src -j LOG\n-A FORWARD -m conntrack --ctstate INVALID -j DROP\n";
        assert_eq!(
            trace(log, "FORWARD", &to_pod()),
            "ACCEPT (policy of FORWARD)"
        );
        assert!(
            Table::parse("-A X -j Y\n")
                .expect("parses")
                .trace("X", &to_pod())
                .is_err()
        );
    }
}
