//! Probe batching for read-only scans: commands that concurrent probes issue at the same
//! moment travel to the host as one script (one round trip) and come back framed, each
//! with its own exit code, stdout and stderr.
//!
//! Only a connection that never writes (`kfix check --all`) batches. The first caller
//! of a wave becomes its leader: it yields once so that the other probes polled in the
//! same pass queue their commands, then sends them all. The script arrives on stdin (no
//! command-line length limit); each command runs with stdin from /dev/null, its output in
//! a private temporary directory, and its frame is `KFIXB <index> <code> <out bytes>
//! <err bytes>` followed by the raw bytes. A command the script did not report (a full
//! /tmp, a killed shell) is run again on its own by the caller.

use std::sync::Mutex;

use tokio::sync::oneshot;

use super::{Output, TransportError};
use crate::quote::Cmd;

/// Per-command fixed script: runs one command line, captures its output, frames it.
const PRELUDE: &str = "d=$(mktemp -d) || exit 97\ntrap 'rm -rf \"$d\"' EXIT\n\
r() { i=$1; shift; \"$@\" </dev/null >\"$d/o\" 2>\"$d/e\"; c=$?; \
printf 'KFIXB %s %s %s %s\\n' \"$i\" \"$c\" \"$(wc -c <\"$d/o\")\" \"$(wc -c <\"$d/e\")\"; \
cat \"$d/o\" \"$d/e\"; }\n";

/// The script that runs `cmds` in order (each through the one quoting path).
pub fn script(cmds: &[Cmd]) -> Vec<u8> {
    let mut s = PRELUDE.to_string();
    for (i, c) in cmds.iter().enumerate() {
        s.push_str(&format!("r {i} {}\n", c.to_shell()));
    }
    s.into_bytes()
}

/// Split the framed output; `None` for a command with no (complete) frame.
pub fn parse(out: &[u8], n: usize) -> Vec<Option<Output>> {
    let mut res: Vec<Option<Output>> = vec![None; n];
    let mut rest = out;
    while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
        let header = String::from_utf8_lossy(&rest[..nl]).into_owned();
        let mut w = header.split_whitespace();
        if w.next() != Some("KFIXB") {
            break;
        }
        let nums: Vec<usize> = w.filter_map(|x| x.parse().ok()).collect();
        let [i, code, lo, le] = nums[..] else {
            break;
        };
        let body = &rest[nl + 1..];
        if i >= n || body.len() < lo + le {
            break;
        }
        res[i] = Some(Output {
            code: i32::try_from(code).ok(),
            stdout: body[..lo].to_vec(),
            stderr: body[lo..lo + le].to_vec(),
        });
        rest = &body[lo + le..];
    }
    res
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

    fn run_locally(cmds: &[Cmd]) -> Vec<Option<Output>> {
        let mut child = std::process::Command::new("sh")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("sh runs");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&script(cmds))
            .expect("script written");
        let out = child.wait_with_output().expect("sh finishes");
        parse(&out.stdout, cmds.len())
    }

    #[test]
    fn each_command_keeps_its_own_output_and_code() {
        let cmds = vec![
            Cmd::new(["printf", "a\\nKFIXB 9 9 9 9\\n"]),
            Cmd::script("echo oops >&2; exit 3", Vec::<String>::new()),
            Cmd::new(["printf", "%s", "no newline; $(not run) `x` 'q'"]),
            // A command that reads stdin must not eat the rest of the script.
            Cmd::new(["cat"]),
            Cmd::new(["true"]),
        ];
        let res = run_locally(&cmds);
        let res: Vec<Output> = res.into_iter().map(|o| o.expect("framed")).collect();
        assert_eq!(res[0].stdout, b"a\nKFIXB 9 9 9 9\n");
        assert_eq!(res[0].code, Some(0));
        assert_eq!(res[1].code, Some(3));
        assert_eq!(res[1].stderr, b"oops\n");
        assert_eq!(res[2].stdout, b"no newline; $(not run) `x` 'q'");
        assert_eq!(res[3].stdout, b"");
        assert_eq!(res[4].code, Some(0));
    }

    #[test]
    fn truncated_output_leaves_the_rest_unanswered() {
        let out = b"KFIXB 0 0 2 0\nokKFIXB 1 0 10 0\nshort";
        let res = parse(out, 3);
        assert_eq!(
            res[0].as_ref().map(|o| o.stdout.clone()),
            Some(b"ok".to_vec())
        );
        assert!(res[1].is_none() && res[2].is_none());
        assert_eq!(parse(b"garbage\n", 1), vec![None]);
    }
}
