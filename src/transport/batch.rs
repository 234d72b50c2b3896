//! Batching: commands that concurrent callers issue on one connection at the same
//! moment travel to the host as one script (one round trip) and come back framed, each
//! with its own exit code, stdout and stderr.
//!
//! Only commands without stdin join a wave (reads: probes, planning, fingerprints); the
//! executor's operations never do. The first caller of a wave becomes its leader: it
//! yields once so that the other callers polled in the same pass queue their commands,
//! then sends them all. The script is one argument of `sh -c` (inlined in the host's
//! command channel; on stdin when it is too long for one argument) and runs each
//! command in order with stdin from /dev/null; after each, a fresh
//! [`boundary`] (the script's `$1`), the command's index and exit code end its stdout,
//! and the boundary and index end its stderr: builtins only, no temporary file or extra
//! process. A command the script did not report (a killed shell) is run again on its own
//! by the caller.

use std::sync::Mutex;

use tokio::sync::oneshot;

use super::{Output, TransportError};
use crate::quote::Cmd;

/// The script (its `$1` is a [`boundary`]) that runs `cmds` in order, each a line of the
/// one quoting path ([`Cmd::to_script_line`]).
pub fn script(cmds: &[Cmd]) -> String {
    let mut s = String::new();
    for (i, c) in cmds.iter().enumerate() {
        s.push_str(&format!(
            "{} </dev/null; c=$?; printf '\\n%s {i} %s\\n' \"$1\" \"$c\"; printf '\\n%s {i}\\n' \"$1\" >&2\n",
            c.to_script_line()
        ));
    }
    s
}

/// A marker no command's output will contain by chance: it ends each output of a
/// [`pair_script`].
pub fn boundary() -> String {
    use sha2::Digest;
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let seed = format!("{}:{}:{n}", std::process::id(), now.as_nanos());
    let h = sha2::Sha256::digest(seed.as_bytes());
    let hex: String = h.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("KFIX-{hex}")
}

/// The script (its `$1` is a [`boundary`]) that runs `cmd`, reading the script's stdin,
/// then each of `probes` in order (stdin from /dev/null, stderr dropped): each stdout is
/// followed by a newline, the boundary and the exit code, so no temporary file or extra
/// process is needed. All are lines of the one quoting path.
pub fn pair_script(cmd: &Cmd, probes: &[&Cmd]) -> String {
    const END: &str = "c=$?; printf '\\n%s %s\\n' \"$1\" \"$c\"\n";
    let mut s = format!("{}; {END}", cmd.to_script_line());
    for p in probes {
        s.push_str(&format!(
            "{} </dev/null 2>/dev/null; {END}",
            p.to_script_line()
        ));
    }
    s
}

/// Split a [`pair_script`]'s stdout into the operation's output (with the whole
/// stderr) and its `n` probes' outputs; None for an output that did not end with the
/// boundary (and for every output after it).
pub fn parse_pair(out: &Output, boundary: &str, n: usize) -> (Option<Output>, Vec<Option<Output>>) {
    let marker = format!("\n{boundary} ");
    let mut rest = out.stdout.as_slice();
    let mut outputs = (0..=n).map(|i| {
        let (stdout, code, after) = frame(rest, marker.as_bytes())?;
        rest = after;
        // stderr is the operation's; the probes' was dropped.
        let stderr = if i == 0 {
            out.stderr.clone()
        } else {
            Vec::new()
        };
        Some(Output {
            code,
            stdout: stdout.to_vec(),
            stderr,
        })
    });
    let first = outputs.next().flatten();
    let probed = whole_prefix(outputs, first.is_some(), n);
    (first, probed)
}

/// Split a [`script`]'s output into the `n` commands' outputs; `None` for a command
/// whose frame did not arrive whole.
pub fn parse(out: &Output, boundary: &str, n: usize) -> Vec<Option<Output>> {
    let (mut so, mut se) = (out.stdout.as_slice(), out.stderr.as_slice());
    let outputs = (0..n).map(|i| {
        let (stdout, code, rest_o) = frame(so, format!("\n{boundary} {i} ").as_bytes())?;
        let (stderr, rest_e) = split_at_marker(se, format!("\n{boundary} {i}\n").as_bytes())?;
        (so, se) = (rest_o, rest_e);
        Some(Output {
            code,
            stdout: stdout.to_vec(),
            stderr: stderr.to_vec(),
        })
    });
    whole_prefix(outputs, true, n)
}

/// `n` outputs: those of `outputs` up to the first that did not arrive whole (when
/// `go_on`), None from there on: an output after a missing frame is never trusted.
fn whole_prefix(
    mut outputs: impl Iterator<Item = Option<Output>>,
    go_on: bool,
    n: usize,
) -> Vec<Option<Output>> {
    let mut res = Vec::with_capacity(n);
    let mut whole = go_on;
    for _ in 0..n {
        let o = if whole {
            outputs.next().flatten()
        } else {
            None
        };
        whole = o.is_some();
        res.push(o);
    }
    res
}

/// The output before `marker` in `s`, the exit code after it (to the end of its line)
/// and what follows that line.
pub(super) fn frame<'a>(s: &'a [u8], marker: &[u8]) -> Option<(&'a [u8], Option<i32>, &'a [u8])> {
    let (out, tail) = split_at_marker(s, marker)?;
    let nl = tail.iter().position(|&b| b == b'\n')?;
    let code = String::from_utf8_lossy(&tail[..nl]).trim().parse().ok();
    Some((out, code, &tail[nl + 1..]))
}

/// `(before, after)` the first `marker` in `s`.
pub(super) fn split_at_marker<'a>(s: &'a [u8], marker: &[u8]) -> Option<(&'a [u8], &'a [u8])> {
    let at = s.windows(marker.len()).position(|w| w == marker)?;
    Some((&s[..at], &s[at + marker.len()..]))
}

/// A command's answer: its output, the wave's transport error, or `None` when the wave
/// did not frame it (the caller runs it on its own).
pub type Answer = Option<Result<Output, TransportError>>;
pub type Waiter = oneshot::Sender<Answer>;

/// The queue of a wave being formed.
#[derive(Default)]
pub struct Batcher {
    state: Mutex<Wave>,
}

#[derive(Default)]
struct Wave {
    queue: Vec<(Cmd, Waiter)>,
    leader: bool,
}

/// What a caller of [`Batcher::join`] does next.
pub enum Role {
    /// Wait for the leader's answer.
    Follower(oneshot::Receiver<Answer>),
    /// Send the wave (this caller's command included) and answer everyone.
    Leader(oneshot::Receiver<Answer>),
}

impl Batcher {
    /// Queue a command in the forming wave.
    pub fn join(&self, cmd: Cmd) -> Option<Role> {
        let (tx, rx) = oneshot::channel();
        let mut w = self.state.lock().ok()?;
        w.queue.push((cmd, tx));
        if w.leader {
            Some(Role::Follower(rx))
        } else {
            w.leader = true;
            Some(Role::Leader(rx))
        }
    }

    /// The leader takes the wave; later callers start the next one.
    pub fn take(&self) -> Vec<(Cmd, Waiter)> {
        match self.state.lock() {
            Ok(mut w) => {
                w.leader = false;
                std::mem::take(&mut w.queue)
            }
            Err(_) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::transport::tests::sh;

    fn output(o: std::process::Output) -> Output {
        Output {
            code: o.status.code(),
            stdout: o.stdout,
            stderr: o.stderr,
        }
    }

    fn run_locally(cmds: &[Cmd]) -> Vec<Option<Output>> {
        let b = boundary();
        let out = output(sh(&["-s", "--", &b], script(cmds).as_bytes()));
        parse(&out, &b, cmds.len())
    }

    #[test]
    fn each_command_keeps_its_own_output_and_code() {
        let cmds = vec![
            // Another run's frame (a stale boundary) is just output.
            Cmd::new(["printf", "a\\n%s 1 0\\n", &boundary()]),
            Cmd::script("echo oops >&2; exit 3", Vec::<String>::new()),
            Cmd::new(["printf", "%s", "no newline; $(not run) `x` 'q'"]),
            // A command that reads stdin must not eat the rest of the script.
            Cmd::new(["cat"]),
            Cmd::new(["true"]),
        ];
        let res = run_locally(&cmds);
        let res: Vec<Output> = res.into_iter().map(|o| o.expect("framed")).collect();
        assert!(res[0].stdout.starts_with(b"a\nKFIX-") && res[0].stdout.ends_with(b" 1 0\n"));
        assert_eq!(res[0].code, Some(0));
        assert_eq!(res[1].code, Some(3));
        assert_eq!(res[1].stderr, b"oops\n");
        assert_eq!(res[2].stdout, b"no newline; $(not run) `x` 'q'");
        assert_eq!(res[3].stdout, b"");
        assert_eq!(res[4].code, Some(0));
    }

    #[test]
    fn a_pair_feeds_stdin_to_the_operation_and_probes_what_it_left() {
        let d = std::env::temp_dir().join(format!("kfix-pair-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("dir");
        let f = d.join("f").display().to_string();
        let op = Cmd::script(r#"cat > "$1"; echo wrote >&2; exit 3"#, [f.as_str()]);
        let probe = Cmd::new(["cat", f.as_str()]);
        // The next operation's state, read in the same round trip.
        let next = Cmd::script(r#"echo no >&2; printf 'x'; exit 1"#, Vec::<String>::new());
        let b = boundary();
        assert_ne!(b, boundary(), "a fresh boundary each time");
        let out = output(sh(
            &["-c", &pair_script(&op, &[&probe, &next]), "kfix", &b],
            b"new content; $(not run)\n",
        ));
        let (o, p) = parse_pair(&out, &b, 2);
        let o = o.expect("op framed");
        assert_eq!((o.code, o.stderr.as_slice()), (Some(3), &b"wrote\n"[..]));
        let [p, n] = &p[..] else { panic!("two probes") };
        let (p, n) = (p.as_ref().expect("probe"), n.as_ref().expect("next"));
        assert_eq!(
            (p.code, p.stdout.as_slice()),
            (Some(0), &b"new content; $(not run)\n"[..])
        );
        assert_eq!(
            (n.code, n.stdout.as_slice(), n.stderr.as_slice()),
            (Some(1), &b"x"[..], &b""[..])
        );
        // Cut short after the operation: its output stands, the probes' are unknown.
        let cut = Output {
            stdout: format!("x\n{b} 0\npartial").into_bytes(),
            ..Output::default()
        };
        let (o, p) = parse_pair(&cut, &b, 2);
        assert_eq!(
            o.map(|o| (o.code, o.stdout)),
            Some((Some(0), b"x".to_vec()))
        );
        assert_eq!(p, vec![None, None]);
        std::fs::remove_dir_all(&d).expect("cleanup");
    }

    #[test]
    fn truncated_output_leaves_the_rest_unanswered() {
        let b = boundary();
        let out = Output {
            code: Some(0),
            stdout: format!("ok\n{b} 0 0\nmore\n{b} 1 2\nshort").into_bytes(),
            // The second command's stderr frame never arrived.
            stderr: format!("\n{b} 0\nhalf").into_bytes(),
        };
        let res = parse(&out, &b, 3);
        assert_eq!(
            res[0].as_ref().map(|o| (o.code, o.stdout.clone())),
            Some((Some(0), b"ok".to_vec()))
        );
        assert!(res[1].is_none() && res[2].is_none());
        assert_eq!(parse(&Output::default(), &b, 1), vec![None]);
    }
}
