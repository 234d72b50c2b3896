//! `iptables` steps: a rule present/absent (checked with `-C`), a chain or table
//! flushed (saved first with `iptables-save`, restored with `iptables-restore`), a policy.

use crate::host::{HResult, Host, failed};
use crate::plan::{Op, Scope, StepPlan, Undo, state_diff};
use crate::playbook::{IptablesSpec, Presence};
use crate::quote::Cmd;

fn ipt(table: &str, args: &[&str], rule: &[String]) -> Cmd {
    let mut v: Vec<String> = vec!["iptables".into(), "-w".into(), "-t".into(), table.into()];
    v.extend(args.iter().map(|s| s.to_string()));
    v.extend(rule.iter().cloned());
    Cmd::new(v)
}

/// `iptables -S` of a whole table (policies, chains and rules): a flush's fingerprint,
/// and what a `trace` probe reads.
pub fn table_rules(table: &str) -> Cmd {
    ipt(table, &["-S"], &[])
}

/// `iptables -C`: the read [`rule_exists`] makes, and an added rule's fingerprint (the
/// same command, so the re-check's read is also the `before`).
pub fn check(table: &str, chain: &str, rule: &[String]) -> Cmd {
    ipt(table, &["-C", chain], rule)
}

/// Does the rule exist? `iptables -C`: 0 yes, 1 no, anything else is an error.
pub async fn rule_exists(h: &Host, table: &str, chain: &str, rule: &[String]) -> HResult<bool> {
    let out = h.run(&check(table, chain, rule)).await?;
    match out.code {
        Some(0) => Ok(true),
        Some(1) if out.stderr().is_empty() || out.stderr().contains("matching rule") => Ok(false),
        _ => failed(format!(
            "iptables -t {table} -C {chain} {}: {}",
            rule.join(" "),
            out.stderr()
        )),
    }
}

/// `iptables -S` lines of a chain (or the whole table); None when the chain is missing.
pub async fn list_rules(
    h: &Host,
    table: &str,
    chain: Option<&str>,
) -> HResult<Option<Vec<String>>> {
    let mut args = vec!["-S"];
    if let Some(c) = chain {
        args.push(c);
    }
    let out = h.run(&ipt(table, &args, &[])).await?;
    if !out.success() {
        let err = out.stderr();
        // iptables-legacy says "No chain", iptables-nft "does not exist" or, for a chain
        // missing from the table, "is incompatible".
        if err.contains("No chain")
            || err.contains("does not exist")
            || err.contains("is incompatible")
        {
            return Ok(None);
        }
        return failed(format!("iptables -t {table} -S: {err}"));
    }
    Ok(Some(out.stdout().lines().map(str::to_string).collect()))
}

/// The position (1-based) of a rule in `-S CHAIN` output, matching word for word after
/// dropping the implicit `-m <proto>` iptables adds.
fn position(rules: &[String], chain: &str, rule: &[String]) -> Option<usize> {
    let want: Vec<&str> = rule.iter().map(String::as_str).collect();
    rules
        .iter()
        .filter(|l| l.starts_with("-A "))
        .position(|l| {
            let words = shell_words::split(l).unwrap_or_default();
            if words.get(1).map(String::as_str) != Some(chain) {
                return false;
            }
            let mut got: Vec<&str> = Vec::new();
            let mut i = 2;
            while i < words.len() {
                let w = words[i].as_str();
                let proto = words.get(i + 1).map(String::as_str);
                if w == "-m"
                    && matches!(proto, Some("tcp" | "udp" | "icmp"))
                    && want.windows(2).all(|p| p != ["-m", proto.unwrap_or("")])
                {
                    i += 2;
                    continue;
                }
                got.push(w);
                i += 1;
            }
            got == want
        })
        .map(|p| p + 1)
}

/// Every operation's state (its probe) is as narrow as its undo allows: other chains may
/// change as they like (kube-proxy rewrites its own all the time). An added rule's:
/// whether it is there ([`check`]); a deleted rule's or a policy's: its chain as `-S`
/// prints it (no counters), since the undo puts the rule back at its position; a
/// flush's: the whole table, which its undo restores. Operations of one run on the same
/// table all take the whole table when they differ (`plan::unify_fingerprints`).
pub async fn plan(id: &str, s: &IptablesSpec, h: &Host) -> HResult<StepPlan> {
    let table = h.render(&s.table)?;
    let mut p = plan_ops(id, s, h, &table).await?;
    for op in p.ops.iter_mut() {
        op.scope = Some(Scope {
            key: format!("iptables -t {table}"),
            whole: table_rules(&table),
            point: op
                .fingerprint
                .as_ref()
                .is_some_and(|c| c.argv.iter().any(|a| a == "-C")),
        });
    }
    Ok(p)
}

async fn plan_ops(id: &str, s: &IptablesSpec, h: &Host, table: &str) -> HResult<StepPlan> {
    // The loader has checked that the step has exactly one of rule, flush and policy,
    // and a chain for a rule or a policy.
    let chain = h.render_opt(&s.chain)?;
    if let Some(rule) = &s.rule {
        let Some(chain) = chain else {
            return failed(h.at(rule.pos, "an iptables `rule` needs `chain`"));
        };
        let rule = h.render_words(rule)?;
        let exists =
            !h.predicted_flushed(table, &chain) && rule_exists(h, table, &chain, &rule).await?;
        let verb = if s.insert && s.state == Presence::Present {
            "-I"
        } else {
            "-A"
        };
        let line = format!("-t {table} {verb} {chain} {}", rule.join(" "));
        return Ok(match (s.state, exists) {
            (Presence::Present, true) | (Presence::Absent, false) => {
                StepPlan::no_change(id, "iptables", None)
            }
            (Presence::Present, false) => {
                let add = if s.insert {
                    ipt(table, &["-I", &chain], &rule)
                } else {
                    ipt(table, &["-A", &chain], &rule)
                };
                let op = Op::new(
                    format!("add rule {line}"),
                    add,
                    Undo::Cmd(ipt(table, &["-D", &chain], &rule)),
                )
                .fingerprint(check(table, &chain, &rule));
                StepPlan::change(id, "iptables", state_diff(&[], &[line]), vec![op])
            }
            (Presence::Absent, true) => {
                let rules = list_rules(h, table, Some(&chain))
                    .await?
                    .unwrap_or_default();
                let undo = match position(&rules, &chain, &rule) {
                    Some(n) => ipt(table, &["-I", &chain, &n.to_string()], &rule),
                    None => ipt(table, &["-A", &chain], &rule),
                };
                let op = Op::new(
                    format!("delete rule {line}"),
                    ipt(table, &["-D", &chain], &rule),
                    Undo::Cmd(undo),
                )
                .fingerprint(ipt(table, &["-S", &chain], &[]));
                StepPlan::change(id, "iptables", state_diff(&[line], &[]), vec![op])
            }
        });
    }
    if let Some(policy) = &s.policy {
        let Some(chain) = chain else {
            return failed(h.at(policy.pos, "an iptables `policy` needs `chain`"));
        };
        let policy = h.render(policy)?;
        let rules = list_rules(h, table, Some(&chain)).await?;
        let Some(found) = rules
            .iter()
            .flatten()
            .find_map(|l| l.strip_prefix(&format!("-P {chain} ")).map(str::to_string))
        else {
            return failed(format!(
                "chain {chain} in table {table} has no policy (not a built-in chain?)"
            ));
        };
        let current = h.predicted_policy(table, &chain).unwrap_or(found);
        if current == policy {
            return Ok(StepPlan::no_change(id, "iptables", None));
        }
        h.predict_policy(table, &chain, &policy);
        let op = Op::new(
            format!("set policy of {chain} to {policy}"),
            ipt(table, &["-P", &chain, &policy], &[]),
            Undo::Cmd(ipt(table, &["-P", &chain, &current], &[])),
        )
        .fingerprint(ipt(table, &["-S", &chain], &[]));
        let diff = state_diff(
            &[format!("-t {table} -P {chain} {current}")],
            &[format!("-t {table} -P {chain} {policy}")],
        );
        return Ok(StepPlan::change(id, "iptables", diff, vec![op]));
    }
    // flush
    let rules = list_rules(h, table, chain.as_deref()).await?;
    let Some(rules) = rules else {
        return Ok(StepPlan::no_change(
            id,
            "iptables",
            Some(format!(
                "chain {} does not exist",
                chain.unwrap_or_default()
            )),
        ));
    };
    let removed: Vec<String> = rules
        .iter()
        .filter(|l| l.starts_with("-A "))
        .cloned()
        .collect();
    let chains: Vec<String> = if chain.is_none() && s.delete_chains {
        rules
            .iter()
            .filter(|l| l.starts_with("-N "))
            .cloned()
            .collect()
    } else {
        Vec::new()
    };
    if removed.is_empty() && chains.is_empty() {
        return Ok(StepPlan::no_change(id, "iptables", None));
    }
    h.predict_flush(table, chain.as_deref().unwrap_or("*"));
    let saved = h.run(&Cmd::new(["iptables-save", "-t", table])).await?;
    if !saved.success() {
        return failed(format!("iptables-save -t {table}: {}", saved.stderr()));
    }
    // The table as the flush will find it: with the policies earlier steps set (so the
    // re-plan before applying, which reads them set, saves the same bytes).
    let saved = with_policies(
        &strip_save_comments(&saved.stdout()),
        &h.predicted_policies(table),
    );
    let restore = Cmd::new(["iptables-restore", "-w"]).with_stdin(saved);
    let mut ops = Vec::new();
    let mut flush_args = vec!["-F"];
    if let Some(c) = &chain {
        flush_args.push(c);
    }
    ops.push(
        Op::new(
            format!(
                "flush {} in table {table} ({} rules, saved for undo)",
                chain.as_deref().unwrap_or("every chain"),
                removed.len()
            ),
            ipt(table, &flush_args, &[]),
            Undo::Cmd(restore.clone()),
        )
        .fingerprint(ipt(table, &["-S"], &[])),
    );
    if !chains.is_empty() {
        ops.push(
            Op::new(
                format!(
                    "delete {} user-defined chains in table {table}",
                    chains.len()
                ),
                ipt(table, &["-X"], &[]),
                // Restoring the saved table recreates chains and rules together.
                Undo::Cmd(restore),
            )
            .fingerprint(ipt(table, &["-S"], &[])),
        );
    }
    let before: Vec<String> = chains
        .iter()
        .chain(removed.iter())
        .map(|l| format!("-t {table} {l}"))
        .collect();
    Ok(StepPlan::change(
        id,
        "iptables",
        state_diff(&before, &[]),
        ops,
    ))
}

/// `iptables-save` text with these built-in chains' policies (`:CHAIN POLICY [0:0]`).
fn with_policies(saved: &str, policies: &[(String, String)]) -> String {
    saved
        .lines()
        .map(|l| {
            let chain = l
                .strip_prefix(':')
                .and_then(|r| r.split_whitespace().next());
            match chain.and_then(|c| policies.iter().find(|(pc, _)| pc == c)) {
                Some((c, p)) => format!(":{c} {p} [0:0]\n"),
                None => format!("{l}\n"),
            }
        })
        .collect()
}

/// iptables-save output without its timestamped comment lines, so a re-plan of the same
/// state yields the same undo data.
fn strip_save_comments(s: &str) -> String {
    s.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        // Counters change between runs; restoring them is not needed.
        .lines()
        .map(|l| {
            if l.starts_with(':') {
                l.rsplit_once(' ')
                    .map_or(l.to_string(), |(a, _)| format!("{a} [0:0]"))
            } else {
                l.to_string()
            }
        })
        .map(|l| l + "\n")
        .collect()
}

impl super::Plan for IptablesSpec {
    async fn plan(&self, step: &crate::playbook::Step, h: &Host) -> HResult<StepPlan> {
        plan(&step.id, self, h).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_rule_position_ignoring_implicit_match() {
        let rules: Vec<String> = [
            "-P INPUT ACCEPT",
            "-N X",
            "-A X -s 10.0.0.0/8 -j RETURN",
            "-A X -p tcp -m tcp --dport 80 -j DROP",
            "-A X -j RETURN",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let r = |s: &str| shell_words::split(s).expect("words");
        assert_eq!(
            position(&rules, "X", &r("-p tcp --dport 80 -j DROP")),
            Some(2)
        );
        assert_eq!(position(&rules, "X", &r("-j RETURN")), Some(3));
        assert_eq!(position(&rules, "X", &r("-j ACCEPT")), None);
    }

    #[test]
    fn a_saved_table_takes_the_policies_planned_before_it() {
        let s = "*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:DOCKER - [0:0]\n-A INPUT -p tcp --dport 22 -j ACCEPT\nCOMMIT\n";
        assert_eq!(
            with_policies(s, &[("INPUT".into(), "ACCEPT".into())]),
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:DOCKER - [0:0]\n-A INPUT -p tcp --dport 22 -j ACCEPT\nCOMMIT\n"
        );
    }

    #[test]
    fn save_output_is_made_stable() {
        let s = "# Generated by iptables-save v1.8.9 on Mon\n*nat\n:POSTROUTING ACCEPT [12:345]\n-A POSTROUTING -j MASQUERADE\nCOMMIT\n# Completed\n";
        assert_eq!(
            strip_save_comments(s),
            "*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -j MASQUERADE\nCOMMIT\n"
        );
    }
}
