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

/// A private temporary directory for the outputs, removed on exit.
const TEMP_DIR: &str = "d=$(mktemp -d) || exit 97\ntrap 'rm -rf \"$d\"' EXIT\n";

/// `f INDEX`: frame the output of the command that just ran (its code in $c).
const FRAME: &str = "f() { printf 'KFIXB %s %s %s %s\\n' \"$1\" \"$c\" \"$(wc -c <\"$d/o\")\" \"$(wc -c <\"$d/e\")\"; \
cat \"$d/o\" \"$d/e\"; }\n";

/// `r INDEX CMD...`: run one command line with stdin from /dev/null and frame it.
const RUN: &str = "r() { i=$1; shift; \"$@\" </dev/null >\"$d/o\" 2>\"$d/e\"; c=$?; f \"$i\"; }\n";

/// The script that runs `cmds` in order (each through the one quoting path).
pub fn script(cmds: &[Cmd]) -> Vec<u8> {
    let mut s = format!("{TEMP_DIR}{FRAME}{RUN}");
    for (i, c) in cmds.iter().enumerate() {
        s.push_str(&format!("r {i} {}\n", c.to_shell()));
    }
    s.into_bytes()
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
/// then `probe` (stdin from /dev/null, stderr dropped): each stdout is followed by a
/// newline, the boundary and the exit code, so no temporary file or extra process is
/// needed. Both are lines of the one quoting path.
pub fn pair_script(cmd: &Cmd, probe: &Cmd) -> String {
    format!(
        "{}; c=$?; printf '\\n%s %s\\n' \"$1\" \"$c\"\n{} </dev/null 2>/dev/null; c=$?; printf '\\n%s %s\\n' \"$1\" \"$c\"\n",
        cmd.to_shell(),
        probe.to_shell()
    )
}

/// Split a [`pair_script`]'s stdout into the two outputs (stderr is the operation's);
/// None for an output that did not end with the boundary.
pub fn parse_pair(out: &Output, boundary: &str) -> (Option<Output>, Option<Output>) {
    let marker = format!("\n{boundary} ");
    let mut rest = out.stdout.as_slice();
    let mut next = |stderr: Vec<u8>| -> Option<Output> {
        let at = rest
            .windows(marker.len())
            .position(|w| w == marker.as_bytes())?;
        let stdout = rest[..at].to_vec();
        let tail = &rest[at + marker.len()..];
        let nl = tail.iter().position(|&b| b == b'\n')?;
        let code = String::from_utf8_lossy(&tail[..nl]).trim().parse().ok();
        rest = &tail[nl + 1..];
        Some(Output {
            code,
            stdout,
            stderr,
        })
    };
    let first = next(out.stderr.clone());
    let second = first.as_ref().and_then(|_| next(Vec::new()));
    (first, second)
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

    use crate::transport::tests::sh;

    fn run_locally(cmds: &[Cmd]) -> Vec<Option<Output>> {
        let out = sh(&[], &script(cmds));
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
    fn a_pair_feeds_stdin_to_the_operation_and_probes_what_it_left() {
        let d = std::env::temp_dir().join(format!("kfix-pair-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("dir");
        let f = d.join("f").display().to_string();
        let op = Cmd::script(r#"cat > "$1"; echo wrote >&2; exit 3"#, [f.as_str()]);
        let probe = Cmd::new(["cat", f.as_str()]);
        let b = boundary();
        assert_ne!(b, boundary(), "a fresh boundary each time");
        let out = sh(
            &["-c", &pair_script(&op, &probe), "kfix", &b],
            b"new content; $(not run)\n",
        );
        let out = Output {
            code: out.status.code(),
            stdout: out.stdout,
            stderr: out.stderr,
        };
        let (o, p) = parse_pair(&out, &b);
        let (o, p) = (o.expect("op framed"), p.expect("probe framed"));
        assert_eq!((o.code, o.stderr.as_slice()), (Some(3), &b"wrote\n"[..]));
        assert_eq!(p.stdout, b"new content; $(not run)\n");
        assert_eq!(p.code, Some(0));
        // Cut short after the operation: its output stands, the probe's is unknown.
        let cut = Output {
            stdout: format!("x\n{b} 0\npartial").into_bytes(),
            ..Output::default()
        };
        let (o, p) = parse_pair(&cut, &b);
        assert_eq!(
            o.map(|o| (o.code, o.stdout)),
            Some((Some(0), b"x".to_vec()))
        );
        assert!(p.is_none());
        std::fs::remove_dir_all(&d).expect("cleanup");
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
