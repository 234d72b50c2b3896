//! `kfix rollback RUN_ID`: undo what a run applied, from its journal, host by host in
//! reverse order — after checking that nothing changed the touched state since.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::exec::{fingerprint, target_from};
use crate::journal::{Journal, OnRec, Record, TargetRec};
use crate::plan::{Undo, Written};
use crate::quote::Cmd;
use crate::transport::{Conn, SshOptions};

/// One journaled operation and what became of it.
#[derive(Clone, Debug)]
struct OpState {
    index: usize,
    step: String,
    desc: String,
    undo: Undo,
    fingerprint: Option<Cmd>,
    before: Option<String>,
    /// The delegate host it ran on (`run_on`), if not the fixed host.
    on: Option<OnRec>,
    /// `Some((ok, after))` once the run recorded the outcome.
    done: Option<(bool, Option<String>)>,
    /// The file it wrote and the digest of the bytes (a file write).
    wrote: Option<Written>,
    undone: bool,
}

/// Everything a run journaled about one host.
#[derive(Clone, Debug)]
pub struct HostOps {
    pub host: String,
    target: TargetRec,
    ops: Vec<OpState>,
}

/// The header of a run's journal.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunInfo {
    pub run_id: String,
    pub started_unix: u64,
    pub operator: String,
    pub playbook: String,
    pub playbook_hash: String,
    pub inventory: Option<String>,
    pub limit: Option<String>,
    pub ssh_config: Option<String>,
    pub finished: bool,
    pub hosts: BTreeMap<String, String>,
}

/// Fold a journal into its header and per-host operations.
pub fn fold(records: &[Record]) -> (RunInfo, Vec<HostOps>) {
    let mut info = RunInfo::default();
    let mut hosts: Vec<HostOps> = Vec::new();
    let find = |hosts: &mut Vec<HostOps>, h: &str| hosts.iter().position(|x| x.host == h);
    for r in records {
        match r {
            Record::Run {
                run_id,
                started_unix,
                operator,
                playbook,
                playbook_hash,
                inventory,
                limit,
                ssh_config,
                ..
            } => {
                info.run_id = run_id.clone();
                info.started_unix = *started_unix;
                info.operator = operator.clone();
                info.playbook = playbook.clone();
                info.playbook_hash = playbook_hash.clone();
                info.inventory = inventory.clone();
                info.limit = limit.clone();
                info.ssh_config = ssh_config.clone();
            }
            Record::Host { host, target } => {
                if find(&mut hosts, host).is_none() {
                    hosts.push(HostOps {
                        host: host.clone(),
                        target: target.clone(),
                        ops: Vec::new(),
                    });
                }
            }
            Record::Op {
                host,
                step,
                index,
                desc,
                undo,
                fingerprint,
                before,
                on,
                wrote,
            } => {
                if let Some(i) = find(&mut hosts, host) {
                    hosts[i].ops.push(OpState {
                        index: *index,
                        step: step.clone(),
                        desc: desc.clone(),
                        undo: undo.clone(),
                        fingerprint: fingerprint.clone(),
                        before: before.clone(),
                        on: on.clone(),
                        done: None,
                        undone: false,
                        wrote: wrote.clone(),
                    });
                }
            }
            Record::OpDone {
                host,
                index,
                ok,
                after,
                ..
            } => {
                if let Some(i) = find(&mut hosts, host)
                    && let Some(op) = hosts[i].ops.iter_mut().find(|o| o.index == *index)
                {
                    op.done = Some((*ok, after.clone()));
                }
            }
            Record::Settled { host, index, after } => {
                if let Some(i) = find(&mut hosts, host)
                    && let Some(op) = hosts[i].ops.iter_mut().find(|o| o.index == *index)
                    && let Some((_, a)) = op.done.as_mut()
                {
                    *a = after.clone();
                }
            }
            Record::Undone {
                host,
                index,
                ok: true,
                ..
            } => {
                if let Some(i) = find(&mut hosts, host)
                    && let Some(op) = hosts[i].ops.iter_mut().find(|o| o.index == *index)
                {
                    op.undone = true;
                }
            }
            Record::HostDone { host, status, .. } => {
                info.hosts.insert(host.clone(), status.clone());
            }
            Record::End { .. } => info.finished = true,
            Record::Undone { .. } | Record::Plan { .. } => {}
        }
    }
    (info, hosts)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum RollbackStatus {
    RolledBack,
    WouldRollBack,
    NothingToUndo,
    Refused,
    Failed,
    Unreachable,
}

impl RollbackStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RollbackStatus::RolledBack => "rolled_back",
            RollbackStatus::WouldRollBack => "would_roll_back",
            RollbackStatus::NothingToUndo => "nothing_to_undo",
            RollbackStatus::Refused => "refused",
            RollbackStatus::Failed => "failed",
            RollbackStatus::Unreachable => "unreachable",
        }
    }

    pub fn is_ok(self) -> bool {
        matches!(
            self,
            RollbackStatus::RolledBack
                | RollbackStatus::WouldRollBack
                | RollbackStatus::NothingToUndo
        )
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct RollbackReport {
    pub host: String,
    pub status: RollbackStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The operations undone (or that would be), newest first.
    pub operations: Vec<String>,
}

/// What the rollback must undo on a host: operations that ran (or may have, when the
/// controller died before recording the outcome) and were not undone yet.
fn candidates(h: &HostOps) -> Vec<OpState> {
    h.ops
        .iter()
        .filter(|o| !o.undone && o.done.as_ref().is_none_or(|(ok, _)| *ok))
        .cloned()
        .collect()
}

/// Roll one host back. `journal` receives `undone` records (not in a dry-run).
pub async fn rollback_host(
    run_id: &str,
    h: HostOps,
    ssh: &SshOptions,
    timeout: std::time::Duration,
    dry_run: bool,
    journal: Option<Arc<Journal>>,
    secrets: &[(String, String)],
) -> RollbackReport {
    let mut rep = RollbackReport {
        host: h.host.clone(),
        status: RollbackStatus::Failed,
        reason: None,
        operations: Vec::new(),
    };
    let mut ops = candidates(&h);
    // The journal keeps no secret: put back the values the operator gave again.
    for op in ops.iter_mut() {
        if let Undo::Cmd(c) | Undo::Last(c) = &op.undo {
            match crate::journal::unseal(c, secrets) {
                Ok(u) if matches!(op.undo, Undo::Last(_)) => op.undo = Undo::Last(u),
                Ok(u) => op.undo = Undo::Cmd(u),
                Err(missing) => {
                    rep.status = RollbackStatus::Refused;
                    rep.reason = Some(format!(
                        "undoing `{}` (step `{}`) restores content that held the secret {}, which the journal does not keep; nothing was undone\n  = hint: give it again: {}",
                        op.desc,
                        op.step,
                        missing
                            .iter()
                            .map(|m| format!("`{m}`"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        missing
                            .iter()
                            .map(|m| format!("--secret-file {m}=PATH"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    ));
                    return rep;
                }
            }
        }
    }
    if ops.is_empty() {
        rep.status = RollbackStatus::NothingToUndo;
        return rep;
    }
    let (target, become_) = target_from(&h.target);
    let conn = match Conn::open(&target, become_, ssh, timeout).await {
        Ok(c) => c,
        Err(e) => {
            rep.status = RollbackStatus::Unreachable;
            rep.reason = Some(e.to_string());
            return rep;
        }
    };
    let owner = format!(
        "rollback of run {run_id} by {} (pid {})",
        crate::journal::operator(),
        std::process::id()
    );
    // The run being rolled back may still hold the lock: killed, its last command is
    // still running on the host, and its lock goes when that command has ended. Wait
    // for that (and only for that run's lock).
    let outlives = crate::transport::lock_outlives_run_by(timeout);
    let deadline = std::time::Instant::now() + outlives;
    let taken = loop {
        let taken = conn.lock(&owner).await;
        match &taken {
            Ok(crate::transport::LockOutcome::Held { owner: by })
                if by.starts_with(&format!("run {run_id} "))
                    && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            _ => break taken,
        }
    };
    let lock = match taken {
        Ok(crate::transport::LockOutcome::Acquired { lock, .. }) => lock,
        Ok(crate::transport::LockOutcome::Held { owner }) => {
            rep.reason = Some(format!(
                "the host is locked by another kfix run ({owner}); nothing was undone (the lock of a run that is gone is released within {}s)",
                outlives.as_secs()
            ));
            conn.close().await;
            return rep;
        }
        Err(e) => {
            rep.status = RollbackStatus::Unreachable;
            rep.reason = Some(format!("taking the host lock: {e}"));
            conn.close().await;
            return rep;
        }
    };
    // Operations that ran on a delegate (`run_on`) are undone there, over their own
    // connection (no lock on the delegate, as in the run).
    let mut others: Vec<(String, Conn)> = Vec::new();
    for on in ops.iter().filter_map(|o| o.on.as_ref()) {
        if others.iter().any(|(n, _)| *n == on.host) {
            continue;
        }
        let (t, b) = target_from(&on.target);
        match Conn::open(&t, b, ssh, timeout).await {
            Ok(c) => others.push((on.host.clone(), c)),
            Err(e) => {
                rep.status = RollbackStatus::Unreachable;
                rep.reason = Some(format!(
                    "the delegate host `{}` (run_on) is unreachable: {e}; nothing was undone",
                    on.host
                ));
                for (_, c) in others {
                    c.close().await;
                }
                lock.release().await;
                conn.close().await;
                return rep;
            }
        }
    }
    let conns = Conns {
        main: &conn,
        others: &others,
    };
    let out = UndoJournal { journal, secrets };
    let mut rep = undo_locked(run_id, &h, ops, &conns, dry_run, &out, rep).await;
    if let Some(r) = rep.reason.as_mut() {
        crate::secrets::mask(r, secrets);
    }
    for (_, c) in others {
        c.close().await;
    }
    lock.release().await;
    conn.close().await;
    rep
}

/// The fixed host's connection and its delegates' (by inventory name).
struct Conns<'a> {
    main: &'a Conn,
    others: &'a [(String, Conn)],
}

impl Conns<'_> {
    /// Where an operation ran, so where its probe and undo run.
    fn of(&self, op: &OpState) -> &Conn {
        op.on
            .as_ref()
            .and_then(|on| self.others.iter().find(|(n, _)| *n == on.host))
            .map_or(self.main, |(_, c)| c)
    }
}

/// Where a rollback records what it undid (nowhere in a dry-run), secrets sealed.
struct UndoJournal<'a> {
    journal: Option<Arc<Journal>>,
    secrets: &'a [(String, String)],
}

impl UndoJournal<'_> {
    fn put(&self, r: Record) {
        if let Some(j) = &self.journal {
            let _ = j.record(&r.sealed(self.secrets));
        }
    }
}

/// Whether the file a write operation wrote holds exactly the bytes it wrote, with the
/// mode and owner its `after` stamp recorded: a file whose stamp changed only because a
/// later run's rollback rewrote it (new inode, new change time) with what this run left
/// is not drift. One read of the file, on the rollback path only.
async fn holds_what_was_written(conn: &Conn, wrote: Option<&Written>, after: &str) -> bool {
    let Some(w) = wrote else { return false };
    let read = Cmd::script(
        r#"[ -e "$1" ] || exit 3; TZ=UTC0 stat -c '%a %u %g' -- "$1" && cat -- "$1""#,
        [w.path.clone()],
    );
    let Ok(out) = conn.run(&read).await else {
        return false;
    };
    let Some(nl) = out.stdout.iter().position(|&b| b == b'\n') else {
        return false;
    };
    let (stamp, content) = (&out.stdout[..nl], &out.stdout[nl + 1..]);
    let recorded: Vec<&str> = after
        .strip_prefix("0:")
        .unwrap_or("")
        .split_whitespace()
        .take(3)
        .collect();
    let now: Vec<String> = String::from_utf8_lossy(stamp)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    out.success()
        && recorded.len() == 3
        && now == recorded
        && crate::playbook::hex(&<sha2::Sha256 as sha2::Digest>::digest(content)) == w.sha256
}

/// The rollback proper, with the host lock held.
async fn undo_locked(
    run_id: &str,
    h: &HostOps,
    mut ops: Vec<OpState>,
    conns: &Conns<'_>,
    dry_run: bool,
    journal: &UndoJournal<'_>,
    mut rep: RollbackReport,
) -> RollbackReport {
    // Drift check before anything changes. For each fingerprinted state, only the last
    // operation on it can be compared now: the host must be exactly as that operation
    // left it. An operation whose outcome was never recorded is skipped when the state is
    // still what it was before it.
    let mut skip = Vec::new();
    let mut checked: Vec<(Option<String>, Cmd)> = Vec::new();
    for op in ops.iter().rev() {
        let Some(probe) = &op.fingerprint else {
            continue;
        };
        let key = (op.on.as_ref().map(|o| o.host.clone()), probe.clone());
        if checked.contains(&key) {
            continue;
        }
        checked.push(key);
        let now = fingerprint(conns.of(op), &op.fingerprint).await;
        match &op.done {
            Some((_, Some(after)))
                if now.as_ref() != Some(after)
                    && !holds_what_was_written(conns.of(op), op.wrote.as_ref(), after).await =>
            {
                rep.status = RollbackStatus::Refused;
                rep.reason = Some(format!(
                    "the host changed since run {run_id}: the state `{}` (step `{}`) left is gone; nothing was undone",
                    op.desc, op.step
                ));
                return rep;
            }
            None if now.is_some() && now == op.before => skip.push(op.index),
            _ => {}
        }
    }
    ops.retain(|o| !skip.contains(&o.index));
    let undos: Vec<(&Undo, Option<&str>)> = ops
        .iter()
        .map(|o| (&o.undo, o.on.as_ref().map(|on| on.host.as_str())))
        .collect();
    let order = crate::plan::undo_order(&undos);
    rep.operations = order
        .iter()
        .map(|(i, _)| &ops[*i])
        .map(|o| match &o.on {
            Some(on) => format!("undo `{}` (step `{}`) on `{}`", o.desc, o.step, on.host),
            None => format!("undo `{}` (step `{}`)", o.desc, o.step),
        })
        .collect();
    if dry_run {
        rep.status = RollbackStatus::WouldRollBack;
        return rep;
    }
    let total = ops.len();
    for (i, run) in order {
        let op = &ops[i];
        let what = format!("`{}`", op.desc);
        let res = crate::exec::run_undo(&op.undo, run, conns.of(op), &what).await;
        journal.put(Record::Undone {
            host: h.host.clone(),
            index: op.index,
            ok: res.is_ok(),
            by: "rollback".into(),
            error: res.as_ref().err().cloned(),
        });
        if let Err(e) = res {
            rep.reason = Some(e);
            return rep;
        }
    }
    rep.status = RollbackStatus::RolledBack;
    rep.reason = Some(format!("undid {}", crate::text::count(total, "operation")));
    rep
}
