//! A host's plan as data: per step a verdict, a human diff and the exact operations
//! that apply will run, each with the operation that undoes it.

use serde::Serialize;

use crate::quote::Cmd;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Change,
    NoChange,
    Unknown,
    /// In reports only: the step would change the host, but the problem the playbook
    /// fixes is not there, so nothing will be done (a healthy host's steps).
    NotNeeded,
}

impl Verdict {
    /// The name JSON and the journal use.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Change => "change",
            Verdict::NoChange => "no_change",
            Verdict::Unknown => "unknown",
            Verdict::NotNeeded => "not_needed",
        }
    }
}

/// How an operation is undone.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Undo {
    /// Run this command.
    Cmd(Cmd),
    /// Run this command after every other undo of the host (once per command): a
    /// restart, so that the configuration the rollback restored takes effect.
    Last(Cmd),
    /// The operation leaves no state to restore.
    Nothing,
    /// It cannot be undone, and why.
    Impossible(String),
}

/// The order in which undos run: every operation's own undo, last first, then the
/// `Undo::Last` ones, last first. Each comes with whether to run it: a `Last` command
/// already run where it runs (`at`: the host) is not run again. Indices into `undos`.
pub fn undo_order<K: PartialEq>(undos: &[(&Undo, K)]) -> Vec<(usize, bool)> {
    let is_last = |i: &usize| matches!(undos[*i].0, Undo::Last(_));
    let mut order: Vec<(usize, bool)> = (0..undos.len())
        .rev()
        .filter(|i| !is_last(i))
        .map(|i| (i, true))
        .collect();
    for i in (0..undos.len()).rev().filter(is_last) {
        let again = order
            .iter()
            .any(|(j, run)| *run && undos[*j].0 == undos[i].0 && undos[*j].1 == undos[i].1);
        order.push((i, !again));
    }
    order
}

/// One operation on the host, and how to undo it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    pub desc: String,
    pub cmd: Cmd,
    pub undo: Undo,
    /// Overrides the run's command timeout (long operations such as moving data).
    pub timeout_secs: Option<u64>,
    /// A read-only command whose output fingerprints the state this operation changes;
    /// recorded before and after it runs, so `kfix rollback` can tell whether the host
    /// drifted since (None: the state cannot be fingerprinted, e.g. a raw command).
    pub fingerprint: Option<Cmd>,
    /// A state other operations may share (an iptables table), when `probe` covers only
    /// part of it; see [`unify_fingerprints`].
    pub scope: Option<Scope>,
    /// A read (the step's plan made it) whose answer holds what `probe` prints, and
    /// where: when that read is in the round trip anyway, `probe` is not sent.
    pub fingerprint_in: Option<(Cmd, ReadPart)>,
    /// The file this operation writes and the sha256 of the bytes it writes: when the
    /// file's stamp has changed since (a later run's rollback rewrote it), `kfix
    /// rollback` compares the content instead (see [`Written`]).
    pub wrote: Option<Written>,
}

/// A part of a `host::read_files_script` answer that is, byte for byte, what an
/// operation's probe prints: the executor takes the probe's answer from the read when
/// the read is in the same round trip anyway (the re-check's, verification's), instead
/// of running the probe. `kfix rollback` runs the probe itself; the answers agree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadPart {
    /// The tail, as `[ -e "$1" ] || exit 3; cat -- "$1"` of the tail's path prints it
    /// (a sysctl key's runtime value).
    Tail,
    /// `host::file_probe` of this path: the stamp of the file whose resolved path it is, or
    /// `absent` when it is one of the paths read and does not exist.
    Stamp(String),
}

/// A file a run wrote: where, and the sha256 (hex) of the bytes written. Known on the
/// controller when planning, so recording it costs the run nothing.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Written {
    pub path: String,
    pub sha256: String,
}

/// A state several operations may touch parts of, and the probe that covers all of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    pub key: String,
    pub whole: Cmd,
    /// The operation's probe sees its own change only (an added rule's `iptables -C`):
    /// no other operation of the scope changes what it prints.
    pub point: bool,
}

impl Op {
    pub fn new(desc: impl Into<String>, cmd: Cmd, undo: Undo) -> Self {
        Op {
            desc: desc.into(),
            cmd,
            undo,
            timeout_secs: None,
            fingerprint: None,
            scope: None,
            fingerprint_in: None,
            wrote: None,
        }
    }

    pub fn fingerprint(mut self, fingerprint: Cmd) -> Self {
        self.fingerprint = Some(fingerprint);
        self
    }

    /// `probe`'s answer is `part` of what `read` prints (see [`Op::fingerprint_in`]).
    pub fn fingerprint_in(mut self, read: Cmd, part: ReadPart) -> Self {
        self.fingerprint_in = Some((read, part));
        self
    }
}

/// Operations of one host's plan (`on[i]`: where step `i` runs) that share a scope but
/// would fingerprint it differently all fingerprint the whole of it instead, unless
/// every one of them only sees its own change (two added rules, each `-C`: one's
/// fingerprint is not changed by the other, and the rest of the table, which a docker
/// restart rebuilds, is no reason to refuse a rollback).
/// `kfix rollback` compares, for each probe, only the last operation with it: an
/// earlier operation's narrower (or wider) view would be changed by the later ones and
/// read as drift, and an undo that restores the whole state (a flushed table) needs it
/// exactly as the run left it.
pub fn unify_fingerprints(plans: &mut [StepPlan], on: &[Option<usize>]) {
    let key = |i: usize, s: &Scope| (on.get(i).copied().flatten(), s.key.clone());
    type Seen = (Vec<Option<Cmd>>, bool);
    let mut probes: std::collections::BTreeMap<(Option<usize>, String), Seen> =
        std::collections::BTreeMap::new();
    for (i, p) in plans.iter().enumerate() {
        for op in &p.ops {
            if let Some(s) = &op.scope {
                let (seen, all_point) = probes.entry(key(i, s)).or_insert((Vec::new(), true));
                if !seen.contains(&op.fingerprint) {
                    seen.push(op.fingerprint.clone());
                }
                *all_point &= s.point;
            }
        }
    }
    for (i, p) in plans.iter_mut().enumerate() {
        for op in p.ops.iter_mut() {
            if let Some(s) = &op.scope
                && probes
                    .get(&key(i, s))
                    .is_some_and(|(v, all_point)| v.len() > 1 && !all_point)
            {
                op.fingerprint = Some(s.whole.clone());
                op.fingerprint_in = None;
            }
        }
    }
}

/// What a step would do on one host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepPlan {
    pub id: String,
    pub kind: &'static str,
    pub verdict: Verdict,
    /// Human-readable diff: unified diff for files, `-`/`+` state lines otherwise.
    pub diff: String,
    /// Why the verdict is `unknown`, or why the step was skipped.
    pub reason: Option<String>,
    pub ops: Vec<Op>,
    /// Why it cannot be undone, when it cannot.
    pub irreversible: Option<String>,
    /// What the operator must know about this change beyond its diff (what a rollback
    /// will not bring back, say).
    pub note: Option<String>,
}

impl StepPlan {
    pub fn no_change(id: &str, kind: &'static str, reason: Option<String>) -> Self {
        StepPlan {
            id: id.to_string(),
            kind,
            verdict: Verdict::NoChange,
            diff: String::new(),
            reason,
            ops: Vec::new(),
            irreversible: None,
            note: None,
        }
    }

    pub fn change(id: &str, kind: &'static str, diff: String, ops: Vec<Op>) -> Self {
        StepPlan {
            id: id.to_string(),
            kind,
            verdict: Verdict::Change,
            diff,
            reason: None,
            ops,
            irreversible: None,
            note: None,
        }
    }

    /// The same operations, ignoring descriptions: what a re-check compares.
    pub fn same_ops(&self, other: &StepPlan) -> bool {
        self.verdict == other.verdict
            && self.ops.len() == other.ops.len()
            && self
                .ops
                .iter()
                .zip(&other.ops)
                .all(|(a, b)| a.cmd == b.cmd && a.undo == b.undo)
    }
}

/// `-`/`+` lines for a state change (routes, rules, values, services).
pub fn state_diff(before: &[String], after: &[String]) -> String {
    let mut s = String::new();
    for b in before {
        s.push_str("- ");
        s.push_str(b);
        s.push('\n');
    }
    for a in after {
        s.push_str("+ ");
        s.push_str(a);
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A step of one operation with `probe`, in `scope`.
    fn step(probe: &str, scope: Option<&str>) -> StepPlan {
        let mut o = Op::new("o", Cmd::new(["true"]), Undo::Nothing).fingerprint(Cmd::new([probe]));
        o.scope = scope.map(|k| Scope {
            key: k.into(),
            whole: Cmd::new(["whole", k]),
            point: probe.starts_with("rule"),
        });
        StepPlan::change("s", "iptables", String::new(), vec![o])
    }

    fn probes(plans: &[StepPlan]) -> Vec<Vec<String>> {
        plans
            .iter()
            .map(|p| {
                p.ops
                    .iter()
                    .map(|o| {
                        o.fingerprint
                            .as_ref()
                            .map_or(String::new(), |c| c.argv.join(" "))
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn operations_sharing_a_scope_with_different_probes_all_take_the_whole() {
        let mut plans = vec![
            step("table", Some("t")),
            step("rule", Some("t")),
            step("rule", Some("u")),
            step("chain", Some("v")),
            step("chain", Some("v")),
            step("stat", None),
            // Two added rules (each sees only itself) keep their own probes.
            step("rule-a", Some("w")),
            step("rule-b", Some("w")),
        ];
        // Step 2 runs on a delegate: its table is another host's.
        let mut elsewhere = plans.clone();
        unify_fingerprints(&mut plans, &[None; 8]);
        assert_eq!(
            probes(&plans),
            [
                vec!["whole t"],
                vec!["whole t"],
                vec!["rule"],
                vec!["chain"],
                vec!["chain"],
                vec!["stat"],
                vec!["rule-a"],
                vec!["rule-b"]
            ]
        );
        unify_fingerprints(
            &mut elsewhere,
            &[None, Some(0), None, None, None, None, None, None],
        );
        assert_eq!(probes(&elsewhere)[..2], [vec!["table"], vec!["rule"]]);
    }

    #[test]
    fn restarts_are_undone_after_everything_else_they_depend_on() {
        let c = |s: &str| Cmd::new([s]);
        let (file, restart, stop, sysctl) = (
            Undo::Cmd(c("restore-file")),
            Undo::Last(c("restart")),
            Undo::Cmd(c("stop")),
            Undo::Cmd(c("sysctl")),
        );
        // Applied: file, restart, sysctl, stop, restart again; one restart elsewhere.
        let undos = [
            (&file, "h1"),
            (&restart, "h1"),
            (&sysctl, "h1"),
            (&stop, "h1"),
            (&restart, "h1"),
            (&restart, "cp1"),
        ];
        assert_eq!(
            undo_order(&undos),
            vec![
                (3, true),
                (2, true),
                (0, true),
                (5, true),
                (4, true),
                (1, false)
            ]
        );
        assert_eq!(undo_order::<()>(&[]), Vec::<(usize, bool)>::new());
    }
}
