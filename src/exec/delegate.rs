//! Delegation (`run_on`): the hosts steps are delegated to, connected while planning,
//! and which host each step runs on.

#[allow(unused_imports)]
use super::*;

/// A host a step is delegated to (`run_on`): planned and applied over its own
/// connection, while templates still see the fixed host's variables and facts (plus
/// `delegate.name` and `delegate.hostname`). No host lock is taken on it: many fixed
/// hosts may delegate to one control-plane host at once.
pub struct Delegate {
    /// Its inventory name.
    pub name: String,
    /// How to reach it again (journaled with each operation that ran on it).
    pub target: TargetRec,
    /// The delegate's connection and facts (what step logic reads), with the fixed
    /// host's template context.
    pub host: Host,
}

/// Close the connections of delegate hosts.
pub(super) async fn close_delegates(ds: Vec<Delegate>) {
    for d in ds {
        Conn::close_shared(d.host.conn).await;
    }
}

/// The host step `i` plans and applies on: its delegate, or the fixed host.
pub(super) fn step_host<'a>(
    host: &'a Host,
    delegates: &'a [Delegate],
    step_on: &[Option<usize>],
    i: usize,
) -> &'a Host {
    match step_on.get(i).copied().flatten() {
        Some(d) => delegates.get(d).map_or(host, |d| &d.host),
        None => host,
    }
}

/// Connect the delegates of every step with `run_on` (the first reachable host each
/// pattern selects; a host already connected for an earlier step is reused). On error
/// the delegates connected so far stay in `delegates` (to be closed).
pub(super) async fn resolve_delegates(
    pb: &Playbook,
    host: &Host,
    s: &RunSettings,
    delegates: &mut Vec<Delegate>,
    step_on: &mut Vec<Option<usize>>,
) -> Result<(), String> {
    let mut by_pattern: BTreeMap<String, usize> = BTreeMap::new();
    for step in &pb.steps {
        let Some(t) = &step.run_on else {
            step_on.push(None);
            continue;
        };
        let pattern = host
            .render(t)
            .map_err(|e| format!("step `{}`: run_on: {e}", step.id))?;
        if let Some(&i) = by_pattern.get(&pattern) {
            step_on.push(Some(i));
            continue;
        }
        let candidates = s.config.inventory.select(Some(&pattern)).map_err(|e| {
            format!(
                "step `{}`: run_on `{pattern}`: {e}\n  = hint: name an inventory host or group (`kfix inventory --limit '{pattern}'` lists what it selects)",
                step.id
            )
        })?;
        let mut tried = Vec::new();
        let mut found = None;
        for c in candidates {
            if let Some(i) = delegates.iter().position(|d| d.name == c.name) {
                found = Some(i);
                break;
            }
            match connect(c, s, true).await {
                Ok((conn, facts)) => {
                    let ctx = minijinja::context! {
                        delegate => minijinja::context! {
                            name => c.name.clone(),
                            hostname => facts.hostname.clone(),
                        },
                        ..host.ctx.clone()
                    };
                    delegates.push(Delegate {
                        name: c.name.clone(),
                        target: target_rec(c),
                        host: Host::assessing(
                            conn,
                            ctx,
                            facts,
                            host.run_id.clone(),
                            host.playbook_file.clone(),
                            host.secrets.clone(),
                        ),
                    });
                    found = Some(delegates.len() - 1);
                    break;
                }
                Err((_, why)) => tried.push(format!("{}: {why}", c.name)),
            }
        }
        match found {
            Some(i) => {
                by_pattern.insert(pattern, i);
                step_on.push(Some(i));
            }
            None => {
                return Err(format!(
                    "step `{}`: run_on `{pattern}`: no reachable host ({})",
                    step.id,
                    tried.join("; ")
                ));
            }
        }
    }
    Ok(())
}
