//! Probes: observe a subject on a host (read-only) and test a predicate on it. Used by
//! preconditions, detect and verify.

use std::collections::BTreeMap;

use regex::Regex;

use crate::host::{HResult, Host, HostError};
use crate::plan::{StepPlan, Verdict};
use crate::playbook::{Predicate, Probe, Subject};
use crate::quote::Cmd;
use crate::steps;

/// What a probe saw and whether its predicate held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The predicate held (a skipped probe holds: it fails nothing).
    pub holds: bool,
    /// A short description: the probe's name or subject, and the observed value.
    pub summary: String,
    /// Its `when:` was false: nothing was observed, and it detects nothing.
    pub skipped: bool,
}

/// The observation: a value (absent when the subject does not exist) and an exit code
/// for commands.
struct Seen {
    value: Option<String>,
    code: Option<i32>,
}

fn seen(value: Option<String>) -> Seen {
    Seen { value, code: None }
}

pub fn subject_label(p: &Probe) -> String {
    let t = |x: &crate::playbook::Text| x.value.clone();
    match &p.subject {
        Subject::Sysctl(k) => format!("sysctl {}", t(k)),
        Subject::SysctlPersisted(k) => format!("persisted sysctl {}", t(k)),
        Subject::Command(w) => format!("`{}`", crate::quote::display(&w.value.0)),
        Subject::Link(l) => format!("link {}", t(l)),
        Subject::Path(p) => format!("path {}", t(p)),
        Subject::File(f) => format!("file {}", t(f)),
        Subject::Route { dest, within, .. } if *within => format!("routes inside {}", t(dest)),
        Subject::Route { dest, .. } => format!("route {}", t(dest)),
        Subject::Iptables { table, chain, rule } => format!(
            "iptables -t {} {} {}",
            t(table),
            t(chain),
            rule.value.0.join(" ")
        ),
        Subject::IptablesChain { table, chain } => {
            format!("iptables chain {}/{}", t(table), t(chain))
        }
        Subject::Trace(tr) => format!(
            "a packet {} -> {} through {}/{}",
            t(&tr.value.src),
            t(&tr.value.dst),
            t(&tr.value.table),
            t(&tr.value.chain)
        ),
        Subject::Drift(s) => format!("step {} drift", t(s)),
    }
}

/// The one read-only command [`eval`] will send for `p`, where it is known ahead (a
/// sysctl value, an iptables rule, a table a trace walks): the executor sends it in the last operation's round
/// trip, so that verification finds it answered. None for the other subjects (their
/// reads depend on what they find, or run what the playbook says).
pub fn read_of(p: &Probe, h: &Host) -> HResult<Option<Cmd>> {
    Ok(match &p.subject {
        Subject::Sysctl(k) | Subject::SysctlPersisted(k) => Some(steps::value_read(&h.render(k)?)),
        Subject::Iptables { table, chain, rule } => Some(steps::rule_check(
            &h.render(table)?,
            &h.render(chain)?,
            &h.render_words(rule)?,
        )),
        Subject::Trace(t) => Some(steps::table_rules(&h.render(&t.value.table)?)),
        _ => None,
    })
}

async fn observe(p: &Probe, h: &Host, plans: &BTreeMap<String, StepPlan>) -> HResult<Seen> {
    Ok(match &p.subject {
        Subject::Sysctl(k) => seen(steps::runtime_value(h, &h.render(k)?).await?),
        Subject::SysctlPersisted(k) => seen(steps::persisted_value(h, &h.render(k)?).await?),
        Subject::Command(w) => {
            let out = h.run(&Cmd::new(h.render_words(w)?)).await?;
            Seen {
                value: out.success().then(|| out.stdout().trim().to_string()),
                code: out.code,
            }
        }
        Subject::Link(l) => {
            let name = h.render(l)?;
            seen(crate::steps::link_exists(h, &name).await?.then_some(name))
        }
        Subject::Path(p) => {
            let path = h.render(p)?;
            seen(h.path_exists(&path).await?.then_some(path))
        }
        Subject::File(f) => {
            let path = h.render(f)?;
            seen(
                h.read_content(&path)
                    .await?
                    .map(|c| String::from_utf8_lossy(&c).into_owned()),
            )
        }
        Subject::Route {
            dest,
            within,
            dev,
            not_dev,
            table,
            filter,
        } => {
            let sel = steps::RouteSelect {
                dest: steps::normalize_dest(&h.render(dest)?),
                within: *within,
                dev: h.render_opt(dev)?,
                not_dev: h.render_opt(not_dev)?,
                via: None,
                metric: None,
                table: h.render_opt(table)?.unwrap_or_else(|| "main".into()),
                filter: filter.clone(),
            };
            let lines: Vec<String> = steps::select_routes(h, &sel)
                .await?
                .into_iter()
                .map(|r| r.text)
                .collect();
            seen((!lines.is_empty()).then(|| lines.join("\n")))
        }
        Subject::Iptables { table, chain, rule } => {
            let rule = h.render_words(rule)?;
            let ok = steps::rule_exists(h, &h.render(table)?, &h.render(chain)?, &rule).await?;
            seen(ok.then(|| rule.join(" ")))
        }
        Subject::IptablesChain { table, chain } => {
            let rules = steps::list_rules(h, &h.render(table)?, Some(&h.render(chain)?)).await?;
            seen(rules.map(|r| r.join("\n")))
        }
        Subject::Trace(t) => seen(Some(trace(&t.value, h).await?)),
        Subject::Drift(id) => {
            // What the step would change is the evidence: its diff's removed and added
            // lines (a route, a rule as the host prints it), else just that it would.
            let seen_plan = plans
                .get(&id.value)
                .filter(|p| p.verdict != Verdict::NoChange);
            seen(seen_plan.map(|p| {
                // What is there and would go, as the host prints it; what is missing.
                let lines: Vec<String> = p
                    .diff
                    .lines()
                    .filter_map(|l| match (l.strip_prefix("- "), l.strip_prefix("+ ")) {
                        (Some(gone), _) => Some(gone.to_string()),
                        (_, Some(missing)) => Some(format!("missing: {missing}")),
                        _ => None,
                    })
                    .collect();
                if lines.is_empty() {
                    "would change".to_string()
                } else {
                    lines.join("\n")
                }
            }))
        }
    })
}

/// Where the packet a `trace` probe describes ends in the host's rules.
async fn trace(t: &crate::playbook::TraceSpec, h: &Host) -> HResult<String> {
    let addr = |v: &crate::playbook::Text| -> HResult<u32> {
        let s = h.render(v)?;
        crate::net::Net::parse(&s)
            .map(|n| n.addr)
            .ok_or_else(|| HostError::Failed(h.at(v.pos, &format!("`{s}` is not an IPv4 address"))))
    };
    let table = h.render(&t.table)?;
    let chain = h.render(&t.chain)?;
    let proto = h.render_opt(&t.proto)?.unwrap_or_else(|| "icmp".into());
    if !matches!(proto.as_str(), "icmp" | "tcp" | "udp") {
        return crate::host::failed(h.at(
            t.chain.pos,
            &format!("a trace's `proto` is icmp, tcp or udp, not `{proto}`"),
        ));
    }
    let number = |v: &Option<crate::playbook::Text>| -> HResult<Option<u32>> {
        let Some(v) = v else { return Ok(None) };
        let s = h.render(v)?;
        let n = match s.strip_prefix("0x") {
            Some(x) => u32::from_str_radix(x, 16).ok(),
            None => s.parse().ok(),
        };
        n.map(Some)
            .ok_or_else(|| HostError::Failed(h.at(v.pos, &format!("`{s}` is not a number"))))
    };
    let packet = crate::trace::Packet {
        src: addr(&t.src)?,
        dst: addr(&t.dst)?,
        in_if: h.render_opt(&t.in_if)?.filter(|s| !s.is_empty()),
        out_if: h.render_opt(&t.out)?.filter(|s| !s.is_empty()),
        proto,
        dport: number(&t.dport)?.and_then(|p| u16::try_from(p).ok()),
        mark: number(&t.mark)?.unwrap_or(0),
    };
    let out = h.run(&steps::table_rules(&table)).await?;
    if !out.success() {
        return crate::host::failed(format!("iptables -t {table} -S: {}", out.stderr()));
    }
    let rules = crate::trace::Table::parse(&out.stdout())
        .map_err(|e| HostError::Failed(format!("iptables -t {table} -S: {e}")))?;
    rules
        .trace(&chain, &packet)
        .map(|o| o.to_string())
        .map_err(|e| HostError::Failed(format!("tracing through {table}/{chain}: {e}")))
}

/// The part of a multi-line value that a `matches` predicate found (the lines it
/// matches), else the whole value.
fn shown_part(v: &str, pred: &Predicate, h: &Host) -> HResult<String> {
    let Predicate::Matches(t) = pred else {
        return Ok(v.to_string());
    };
    if !v.contains('\n') {
        return Ok(v.to_string());
    }
    let Ok(re) = Regex::new(&h.render(t)?) else {
        return Ok(v.to_string());
    };
    let hits: Vec<&str> = v.lines().filter(|l| re.is_match(l)).collect();
    Ok(if hits.is_empty() {
        v.to_string()
    } else {
        hits.join("\n")
    })
}

/// What a probe saw, as a reason can carry it: the exact lines (a rule, a route, a
/// value as the host's tools print them), joined by `; `, up to a bound.
pub fn evidence(v: &str) -> String {
    const LINES: usize = 8;
    const LINE_CHARS: usize = 240;
    let lines: Vec<&str> = v.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut shown: Vec<String> = lines
        .iter()
        .take(LINES)
        .map(|l| {
            let l = l.trim_end();
            if l.chars().count() > LINE_CHARS {
                format!("{}…", l.chars().take(LINE_CHARS).collect::<String>())
            } else {
                l.to_string()
            }
        })
        .collect();
    if lines.len() > LINES {
        shown.push(format!("… and {} more lines", lines.len() - LINES));
    }
    shown.join("; ")
}

/// Evaluate independent probes (detection, verification) concurrently, so that the
/// reads they issue at the same moment share one round trip; outcomes in their order.
pub async fn eval_all(
    probes: &[Probe],
    h: &Host,
    plans: &BTreeMap<String, StepPlan>,
) -> Vec<HResult<Outcome>> {
    futures_util::future::join_all(probes.iter().map(|p| eval(p, h, plans))).await
}

/// Plan one step on a host: no change, said why, when its `when:` is false or one of its
/// `only_if:` probes does not hold; else what [`crate::steps::plan`] plans. Never changes
/// the host.
pub async fn plan_step(step: &crate::playbook::Step, h: &Host) -> HResult<StepPlan> {
    if let Some(w) = &step.when {
        let on = crate::template::eval_bool(&w.value, &h.ctx)
            .map_err(|e| HostError::Failed(h.at(w.pos, &e)))?;
        if !on {
            return Ok(StepPlan::no_change(
                &step.id,
                step.kind.name(),
                Some(format!("skipped: `when: {}` is false", w.value)),
            ));
        }
    }
    for probe in &step.only_if {
        let o = eval(probe, h, &Default::default()).await?;
        if !o.holds {
            return Ok(StepPlan::no_change(
                &step.id,
                step.kind.name(),
                Some(format!("skipped: only_if not met: {}", o.summary)),
            ));
        }
    }
    crate::steps::plan(step, h).await
}

/// Evaluate a probe on a host. `plans` supplies step plans for `drift` probes.
pub async fn eval(p: &Probe, h: &Host, plans: &BTreeMap<String, StepPlan>) -> HResult<Outcome> {
    if let Some(w) = &p.when {
        let on = crate::template::eval_bool(&w.value, &h.ctx)
            .map_err(|e| HostError::Failed(h.at(w.pos, &format!("`when`: {e}"))))?;
        if !on {
            return Ok(Outcome {
                holds: true,
                summary: format!(
                    "{} (not checked: `when: {}` is false)",
                    p.name.clone().unwrap_or_else(|| subject_label(p)),
                    w.value
                ),
                skipped: true,
            });
        }
    }
    let s = observe(p, h, plans).await.map_err(|e| match e {
        HostError::Failed(m) if !m.starts_with(&h.playbook_file) => {
            HostError::Failed(h.at(p.pos, &m))
        }
        other => other,
    })?;
    let regex = |t: &crate::playbook::Text| -> HResult<Regex> {
        let src = h.render(t)?;
        Regex::new(&src).map_err(|e| HostError::Failed(h.at(t.pos, &format!("invalid regex: {e}"))))
    };
    let holds = match &p.predicate {
        Predicate::Exists(b) => s.value.is_some() == *b,
        Predicate::Equals(t) => s.value.as_deref() == Some(h.render(t)?.as_str()),
        Predicate::NotEquals(t) => s.value.as_deref() != Some(h.render(t)?.as_str()),
        Predicate::Matches(t) => {
            let re = regex(t)?;
            s.value.as_deref().is_some_and(|v| re.is_match(v))
        }
        Predicate::NotMatches(t) => {
            let re = regex(t)?;
            !s.value.as_deref().is_some_and(|v| re.is_match(v))
        }
        Predicate::Exit(n) => s.code == Some(*n),
    };
    let label = p.name.clone().unwrap_or_else(|| subject_label(p));
    let observed = match (&s.value, s.code) {
        (_, Some(c)) if c != 0 => format!("exit {c}"),
        (Some(v), _) => format!("`{}`", evidence(&shown_part(v, &p.predicate, h)?)),
        (None, _) => "absent".to_string(),
    };
    Ok(Outcome {
        holds,
        summary: format!("{label} (observed: {observed})"),
        skipped: false,
    })
}

/// Where a gathered value comes from, for messages.
pub fn gather_source(g: &crate::playbook::Gather) -> String {
    use crate::playbook::GatherSource;
    let what = match &g.source {
        GatherSource::File(f) => format!("file {}", f.value),
        GatherSource::Command(w) => format!("`{}`", crate::quote::display(&w.value.0)),
        GatherSource::Value(t) => format!("`{}`", t.value),
    };
    match &g.regex {
        Some(r) => format!("{what}, regex `{}`", r.value),
        None => what,
    }
}

/// Read one `gather:` value from the host (None when absent or unmatched). Values are
/// gathered in order, so a later one may use an earlier one in its templates.
pub async fn gather_one(g: &crate::playbook::Gather, h: &Host) -> HResult<Option<String>> {
    use crate::playbook::GatherSource;
    let at = |e: HostError| match e {
        HostError::Failed(m) if !m.starts_with(&h.playbook_file) => {
            HostError::Failed(h.at(g.pos, &format!("gathering `{}`: {m}", g.name)))
        }
        other => other,
    };
    let raw = match &g.source {
        GatherSource::File(f) => {
            let path = h.render(f)?;
            h.read_content(&path)
                .await
                .map_err(at)?
                .map(|c| String::from_utf8_lossy(&c).into_owned())
        }
        GatherSource::Command(w) => {
            let out = h.run(&Cmd::new(h.render_words(w)?)).await.map_err(at)?;
            out.success().then(|| out.stdout())
        }
        GatherSource::Value(t) => Some(h.render(t)?).filter(|v| !v.trim().is_empty()),
    };
    Ok(match (&raw, &g.regex) {
        (Some(text), Some(r)) => {
            let src = h.render(r)?;
            let re = Regex::new(&src)
                .map_err(|e| HostError::Failed(h.at(r.pos, &format!("invalid regex: {e}"))))?;
            re.captures(text)
                .and_then(|c| c.get(1))
                .map(|m| m.as_str().to_string())
        }
        (Some(text), None) => Some(text.trim().to_string()),
        (None, _) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{Become, Conn, SshOptions, Target};

    /// Evidence is the observed lines as the host printed them, not "3 lines".
    #[test]
    fn evidence_shows_the_lines_up_to_a_bound() {
        assert_eq!(
            evidence("REJECT by -A FORWARD -j REJECT --reject-with icmp-host-prohibited"),
            "REJECT by -A FORWARD -j REJECT --reject-with icmp-host-prohibited"
        );
        assert_eq!(
            evidence("10.244.0.0/16 dev eth0 scope link\n\n172.16.0.0/12 dev eth0\n"),
            "10.244.0.0/16 dev eth0 scope link; 172.16.0.0/12 dev eth0"
        );
        let many: String = (0..12).map(|i| format!("line {i}\n")).collect();
        assert!(evidence(&many).ends_with("line 7; … and 4 more lines"));
    }

    /// What verification will read, sent ahead, is exactly what it then reads: a
    /// sysctl probe on this machine (read-only) finds its answer remembered.
    #[tokio::test]
    async fn a_probes_read_known_ahead_is_the_read_it_makes() {
        let text = r#"id: t
title: t
summary: t
severity: info
source: test
steps:
  - id: s
    sysctl: {key: net.ipv4.ip_forward, value: "1"}
verify:
  - sysctl: net/ipv4/ip_forward
    exists: true
  - sysctl_persisted: net.ipv4.ip_forward
    exists: true
  - iptables: "-s 10.0.0.0/8 -j MASQUERADE"
    table: nat
    chain: POSTROUTING
    exists: true
"#;
        let pb =
            crate::playbook::parse(std::path::Path::new("t.yaml"), text).expect("playbook parses");
        let opts = SshOptions {
            config_file: None,
            connect_timeout: std::time::Duration::from_secs(5),
            control_dir: std::env::temp_dir(),
            accept_new_host_keys: false,
            handshakes: Default::default(),
            host_lock_dir: crate::transport::LOCK_DIR.into(),
        };
        let conn = Conn::open(
            &Target::Local,
            Become::default(),
            &opts,
            std::time::Duration::from_secs(20),
        )
        .await
        .expect("local conn");
        let h = Host::assessing(
            std::sync::Arc::new(conn),
            minijinja::Value::from(()),
            Default::default(),
            "r".into(),
            "t.yaml".into(),
            Vec::new(),
        );
        let reads: Vec<Option<Cmd>> = pb
            .verify
            .iter()
            .map(|p| read_of(p, &h).expect("renders"))
            .collect();
        // Both sysctl probes read the key in one command; the rule is its `iptables -C`.
        assert_eq!(reads[0], reads[1]);
        let rule = reads[2].as_ref().expect("a rule's read is known");
        assert!(rule.argv.contains(&"-C".to_string()), "{rule:?}");
        // Primed with an answer whose runtime value (the read's tail) is made up,
        // evaluation takes it and sends nothing.
        let sysctl = reads[0].clone().expect("a sysctl's read is known");
        h.reads.disable();
        let mut fake = h.conn.run(&sysctl).await.expect("reads");
        let mark = crate::host::TAIL_MARK;
        let at = fake
            .stdout
            .windows(mark.len())
            .rposition(|w| w == mark)
            .expect("the read has a tail");
        fake.stdout.truncate(at + mark.len());
        fake.stdout.extend_from_slice(b"42\n");
        let sent = h.conn.traffic().commands;
        h.reads.prime(vec![(sysctl, fake)]);
        let o = eval(&pb.verify[0], &h, &BTreeMap::new())
            .await
            .expect("evaluates");
        assert!(o.summary.contains("`42`"), "{o:?}");
        assert_eq!(h.conn.traffic().commands, sent, "nothing more was sent");
    }
}
