//! The round trips of one host's apply, behind one interface the executor calls: what
//! travels with what (an operation's fingerprints before and after, the next
//! operation's, verification's reads with the last operation) so each distinct read is
//! sent once and no round trip is spent on a read another one can carry; and `settle`,
//! the state the run left, read in one round trip.

#[allow(unused_imports)]
use super::*;

use crate::plan::Op;
use crate::quote::Cmd;
use crate::transport::Output;

/// The round-trip plan of one host's apply, made before its first step.
pub(super) struct Trips {
    /// Fingerprints are taken (the run has a journal).
    journaling: bool,
    /// (step, operation) of the last operation that runs on the host itself: it carries
    /// verification's reads.
    last_op: Option<(usize, usize)>,
    /// Verification's reads known ahead, each once.
    verify_reads: Vec<Cmd>,
}

impl Trips {
    /// Verification's reads known ahead travel in the round trip of the last operation
    /// (when it runs on this host): one round trip less, and none at all where a read is
    /// the operation's own fingerprint (an added rule's `iptables -C`).
    pub(super) fn new(
        pb: &Playbook,
        plans: &[StepPlan],
        step_on: &[Option<usize>],
        host: &Host,
        journaling: bool,
    ) -> Trips {
        let last_op = plans
            .iter()
            .enumerate()
            .rev()
            .find(|(_, p)| p.verdict != Verdict::NoChange && !p.ops.is_empty())
            .map(|(i, p)| (i, p.ops.len() - 1))
            .filter(|(i, _)| step_on.get(*i).copied().flatten().is_none());
        let mut verify_reads: Vec<Cmd> = Vec::new();
        // Nothing to send them with when no operation runs on the host.
        if last_op.is_some() {
            for c in pb
                .verify
                .iter()
                .filter_map(|p| probe::read_of(p, host).ok().flatten())
            {
                if host.refuse_exposed(&c).is_ok() && !verify_reads.contains(&c) {
                    verify_reads.push(c);
                }
            }
        }
        Trips {
            journaling,
            last_op,
            verify_reads,
        }
    }

    /// The round trips of step `i`, started in its re-check's wave: the fingerprints of
    /// the states its operations start from (see [`fingerprints_before`]).
    pub(super) async fn step(&self, conn: &Conn, i: usize, planned: &StepPlan) -> StepTrips<'_> {
        let journaling = self.journaling && planned.verdict != Verdict::NoChange;
        let befores = match journaling {
            true => fingerprints_before(conn, &planned.ops).await,
            false => Vec::new(),
        };
        StepTrips {
            trips: self,
            step: i,
            journaling,
            befores,
            carried: None,
        }
    }
}

/// One step's operations as they go out.
pub(super) struct StepTrips<'a> {
    trips: &'a Trips,
    step: usize,
    journaling: bool,
    /// The `before` of each operation known from the re-check's round trip.
    befores: Vec<Option<String>>,
    /// The `before` of the next operation, read in the previous one's round trip.
    carried: Option<String>,
}

impl StepTrips<'_> {
    /// The fingerprint of the state operation `k` starts from: carried by an earlier
    /// round trip, else read now (None without a journal).
    pub(super) async fn before(&mut self, conn: &Conn, k: usize, op: &Op) -> Option<String> {
        match self
            .carried
            .take()
            .or_else(|| self.befores.get_mut(k)?.take())
        {
            Some(b) => Some(b),
            None if self.journaling => fingerprint(conn, &op.fingerprint).await,
            None => None,
        }
    }

    /// Runs operation `k` of `ops` on `conn` with the fingerprint of what it left, of
    /// what the next operation starts from (and, after the host's last operation,
    /// verification's reads, primed into `host`'s reads): one round trip, each distinct
    /// read once. Returns the operation's result and the fingerprint after it.
    pub(super) async fn run(
        &mut self,
        host: &Host,
        conn: &Conn,
        ops: &[Op],
        k: usize,
        timeout: Duration,
    ) -> (Result<Output, TransportError>, Option<String>) {
        let op = &ops[k];
        let next_known = self.befores.get(k + 1).is_some_and(Option::is_some);
        let next_probe = ops
            .get(k + 1)
            .filter(|_| !next_known)
            .and_then(|n| n.fingerprint.as_ref());
        let (this_probe, next_probe) = match self.journaling {
            true => (op.fingerprint.as_ref(), next_probe),
            false => (None, None),
        };
        let ahead: &[Cmd] = match self.trips.last_op == Some((self.step, k)) {
            true => &self.trips.verify_reads,
            false => &[],
        };
        // What the operation leaves, from one of verification's reads when one holds
        // it: the probe is not sent.
        let after_ahead = this_probe.is_some()
            && op
                .fingerprint_in
                .as_ref()
                .is_some_and(|(c, _)| ahead.contains(c));
        let this_probe = this_probe.filter(|_| !after_ahead);
        let mut probes: Vec<&Cmd> = Vec::new();
        for c in this_probe.into_iter().chain(next_probe).chain(ahead) {
            if !probes.contains(&c) {
                probes.push(c);
            }
        }
        let (res, after) = if probes.is_empty() {
            (conn.run_with_timeout(&op.cmd, timeout).await, None)
        } else {
            match conn.run_then_probe(&op.cmd, &probes, timeout).await {
                Ok((out, probed)) => {
                    let answer = |c: &Cmd| {
                        let at = probes.iter().position(|p| *p == c)?;
                        probed.get(at)?.as_ref()
                    };
                    let after = match after_ahead {
                        true => {
                            crate::host::fingerprint_answer(op, answer).map(|o| fingerprint_of(&o))
                        }
                        false => this_probe.and_then(answer).map(fingerprint_of),
                    };
                    if let Some(next) = next_probe {
                        self.carried = answer(next).map(fingerprint_of);
                    }
                    // Answers sent along lost their stderr: one that is neither yes (0)
                    // nor no (1) is asked again, so an error can say why.
                    if !ahead.is_empty() && out.success() {
                        host.reads.prime(
                            probes
                                .iter()
                                .zip(&probed)
                                .filter_map(|(c, o)| Some(((*c).clone(), o.clone()?)))
                                .filter(|(_, o)| matches!(o.code, Some(0 | 1)))
                                .collect(),
                        );
                    }
                    (Ok(out), after)
                }
                Err(e) => (Err(e), fingerprint(conn, &op.fingerprint).await),
            }
        };
        // Verification's read did not hold it after all (it changed while read): the
        // probe on its own (a failed round trip already asked it).
        let after = match after {
            None if after_ahead && res.is_ok() => fingerprint(conn, &op.fingerprint).await,
            a => a,
        };
        (res, after)
    }
}

/// The fingerprint of the state an operation touches: exit code and output of its probe.
pub async fn fingerprint(
    conn: &crate::transport::Conn,
    fingerprint: &Option<crate::quote::Cmd>,
) -> Option<String> {
    let p = fingerprint.as_ref()?;
    let out = conn.run(p).await.ok()?;
    Some(fingerprint_of(&out))
}

/// The fingerprints of the states a step's operations start from, taken in the
/// re-check's round trip: the first operation's from the step's own read when that read
/// holds it (asked here too, it joins the re-check's wave and runs once), else by its
/// probe; a later operation's from the same read when it holds it and no operation
/// before it in the step touches that state (the same probe or scope), else None (read
/// in the round trip of the operation before it).
pub(super) async fn fingerprints_before(
    conn: &crate::transport::Conn,
    ops: &[crate::plan::Op],
) -> Vec<Option<String>> {
    let Some(first) = ops.first() else {
        return Vec::new();
    };
    let read = match &first.fingerprint_in {
        Some((read, _)) => conn.run(read).await.ok().map(|out| (read, out)),
        None => None,
    };
    let from_read = |op: &crate::plan::Op| {
        let (cmd, out) = read.as_ref()?;
        crate::host::fingerprint_answer(op, |c| (c == *cmd).then_some(out))
            .map(|o| fingerprint_of(&o))
    };
    let mut befores = vec![match from_read(first) {
        Some(f) => Some(f),
        None => fingerprint(conn, &first.fingerprint).await,
    }];
    for (k, op) in ops.iter().enumerate().skip(1) {
        let touched = ops[..k].iter().any(|e| {
            e.fingerprint == op.fingerprint
                || matches!((&e.scope, &op.scope), (Some(a), Some(b)) if a.key == b.key)
        });
        befores.push(if touched { None } else { from_read(op) });
    }
    befores
}

/// A probe's output as the journal records it.
pub(super) fn fingerprint_of(out: &crate::transport::Output) -> String {
    format!("{}:{}", out.code.unwrap_or(-1), out.stdout())
}

/// The state the run left, for `kfix rollback`'s drift check: when a later step's effect
/// cannot be seen by kfix (a service restart, a command, a package), the state an
/// earlier operation left may have changed since its own fingerprint was taken
/// (flanneld recreating a device a step deleted). Each such state is read again, all in
/// one round trip per host, and journaled as `settled` (only the last operation on a
/// state is compared, so only it is read).
pub(super) async fn settle(
    pb: &Playbook,
    host: &Host,
    delegates: &[Delegate],
    applied: &[DoneOp],
    hj: &HostJournal<'_>,
) -> Result<(), String> {
    // A later step whose effect kfix cannot read back (a restart, a command, a package).
    let opaque = |step: usize| !pb.steps[step].kind.spec().effect_is_readable();
    let mut last: Vec<&DoneOp> = Vec::new();
    for (k, a) in applied.iter().enumerate() {
        let Some(probe) = &a.fingerprint else {
            continue;
        };
        let later_opaque = applied[k + 1..]
            .iter()
            .any(|b| b.step != a.step && opaque(b.step));
        let superseded = applied[k + 1..]
            .iter()
            .any(|b| b.on == a.on && b.fingerprint.as_ref() == Some(probe));
        if later_opaque && !superseded {
            last.push(a);
        }
    }
    let reads = futures_util::future::join_all(last.iter().map(|a| {
        let conn = match a.on.and_then(|d| delegates.get(d)) {
            Some(d) => &d.host.conn,
            None => &host.conn,
        };
        fingerprint(conn, &a.fingerprint)
    }))
    .await;
    for (a, after) in last.into_iter().zip(reads) {
        hj.put(Record::Settled {
            host: hj.host.clone(),
            index: a.index,
            after,
        })
        .await
        .map_err(|e| {
            format!("the state it left could not be journaled for `kfix rollback`: {e}")
        })?;
    }
    Ok(())
}
