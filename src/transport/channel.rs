//! The command channel: one long-lived shell per connection that runs each round trip's
//! script, so that a round trip costs the host no new SSH session, login shell or
//! `timeout(1)` — only the fork of a subshell and the programs the script itself starts.
//!
//! The controller starts `sh -s` (through sudo when the host needs it) and writes
//! [`setup_script`] to it, then one [`request`] per round trip. dash parses its input in
//! blocks, so a request costs no byte-by-byte reads. Each request runs `eval` of the
//! quoted line in a subshell (an `exit`, `cd`, variable or syntax error stays there),
//! with stdin from /dev/null or the request's data, between a start mark and an end
//! mark on stdout (a fresh boundary; the end mark with the exit code) and the boundary
//! at the end of stderr: builtins only. A channel that closes before the start mark
//! arrives ran nothing of the request, which then goes once more in a new channel.
//!
//! A shell blocked reading its input would outlive a dead controller, so a watchdog
//! started by the setup (one `sleep` per [`TICK`] seconds) bounds it on the host: it
//! kills the channel's process group when the channel has been idle for [`IDLE`]
//! seconds (counted from the first tick that sees the last request ended, never from
//! one that saw it running: a long request would otherwise leave the channel less
//! than [`IDLE`] of idleness, and the controller, which reuses a channel idle for less
//! than [`REUSE`], would write into a dead one), or when a request has run past its limit (the controller's timeout plus
//! [`super::REMOTE_GRACE`]), as `timeout(1)` does for a command sent on its own. The
//! controller never reuses a channel idle for [`REUSE`] or more (it starts a new one),
//! so the watchdog never kills a channel the controller is about to use.
//!
//! The host's kfix lock is held by the channel's shell itself ([`lock_request`]: `flock`
//! on a descriptor of that shell; every request runs with it closed), so taking it
//! costs no session of its own. While the lock is held the controller keeps the channel
//! busy enough ([`BEAT`]) for the watchdog never to end it; a channel that ends anyway
//! (a timeout, a dead link) takes the lock with it, and the controller takes it again
//! in the next channel before anything else runs there (see `Conn::via_channel`).

use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{Output, TransportError, batch};
use crate::quote::quote_always;

/// Seconds between the watchdog's looks at the channel.
pub const TICK: u64 = 5;
/// Seconds of idleness after which the watchdog ends a channel.
pub const IDLE: u64 = 15;
/// A channel idle this long is not used again: it may be ending.
pub const REUSE: Duration = Duration::from_secs(10);
/// While the channel holds the host lock, a no-op request is sent after this much
/// idleness, so that the channel is never idle for [`REUSE`] (nor for [`IDLE`]).
pub const BEAT: Duration = Duration::from_secs(4);
/// Request data (stdin) larger than this goes in a session of its own.
const MAX_DATA: usize = 1 << 20;
/// The line the setup prints once the watchdog runs: output before it is the login
/// shell's (a chatty `.bashrc`), and without it no request was run.
const READY: &[u8] = b"kfix-channel-ready\n";

/// What the channel's shell runs first: its state (busy with request `k` and its limit,
/// or idle since request `k`), and the watchdog reading it. The state is a pipe only
/// this shell and its watchdog hold, made without a program: a here-document holding
/// the first state on descriptor 8 (a pipe in dash and bash 5.1+, a deleted file in
/// older bash and for long documents; not empty, which bash makes /dev/null), written
/// through /proc/$$/fd/8 (a new writer each time, so that the watchdog reads every
/// line written since its last look and then the end), nothing left behind on the host
/// when the shell ends. No /proc: the setup fails and round trips go in sessions. A
/// shell whose controller went away (SIGPIPE writing an answer) still runs its EXIT
/// trap. `lock_dir` is where the host lock lives ([`super::LOCK_DIR`] on a real host).
pub fn setup_script(tick: u64, idle: u64, lock_dir: &str) -> String {
    format!(
        r#"kfix_lock=
kfix_d={lock_dir}
exec 8<<'kfix-state'
i 0
kfix-state
kfix_s=/proc/$$/fd/8
[ -p "$kfix_s" ] || [ -f "$kfix_s" ] || exit 3
trap '[ -z "$kfix_lock" ] || : > "$kfix_d/owner"' EXIT
trap 'exit 141' PIPE
kfix_q=0
(
  trap '' TERM
  exec </dev/null >/dev/null 2>&1
  n=0; seen='0 i'; s=i; k=0; l=0
  while sleep {tick}; do
    [ -e "$kfix_s" ] || exit 0
    while IFS=' ' read -r a b c; do s=$a; k=$b; l=$c; done < "$kfix_s"
    if [ "$k $s" != "$seen" ]; then n=0; seen="$k $s"; continue; fi
    n=$((n + {tick}))
    if [ "$s" = i ]; then [ "$n" -ge {idle} ] || continue
    else [ "$n" -gt "$l" ] || continue; fi
    kill -TERM 0; sleep {kill_after}; kill -KILL 0
  done
) &
printf 'kfix-channel-ready\n'
"#,
        kill_after = super::REMOTE_KILL_AFTER,
        lock_dir = quote_always(lock_dir),
    )
}

/// How a request runs in the channel's shell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// In a subshell without the lock's descriptor: a command of the one quoting path.
    Subshell,
    /// In the shell itself: kfix's own lock requests, which keep a descriptor open.
    Shell,
}

/// One round trip's text: `line` (a line of the one quoting path) run with `data` on its
/// stdin, killed on the host after `limit` seconds, its output framed by `boundary`: a
/// start mark (`BOUNDARY s`, a builtin printed before `line` runs; a channel that closes
/// before it reaches the controller ran nothing of the request) and an end mark with the
/// exit code.
pub fn request(line: &str, data: Option<&str>, limit: u64, boundary: &str, mode: Mode) -> String {
    let line = quote_always(line);
    let run = match (mode, data) {
        (Mode::Shell, _) => format!("{{ eval {line}; }} </dev/null"),
        (Mode::Subshell, Some(d)) => {
            format!(
                "printf '%s' {} | ( eval {line} ) 8<&- 9>&-",
                quote_always(d)
            )
        }
        (Mode::Subshell, None) => format!("( eval {line} ) 8<&- 9>&- </dev/null"),
    };
    format!(
        "kfix_q=$((kfix_q + 1)); echo \"b $kfix_q {limit}\" > \"$kfix_s\"\n\
         printf '%s s\\n' {boundary}\n\
         {run}\n\
         kfix_r=$?; echo \"i $kfix_q\" > \"$kfix_s\"\n\
         printf '\\n%s e %s\\n' {boundary} \"$kfix_r\"; printf '\\n%s e\\n' {boundary} >&2\n"
    )
}

/// Take the host's kfix lock in the channel's shell (run with [`Mode::Shell`]): `flock`
/// on descriptor 9 of that shell, which holds it until [`RELEASE`] or until the shell
/// ends (its EXIT trap clears the owner record). With `wait` > 0 (taking it again after
/// the channel that held it ended), a lock whose record is still `owner`'s is waited for
/// up to `wait` seconds: the old channel's shell lets it go once its watchdog has ended
/// the command it was running. Prints `locked PREVIOUS-OWNER` (a record left by a run
/// that died holding the lock), `held OWNER` or `error: …`. A redirection that fails
/// under `command` does not end the shell.
pub fn lock_request(owner: &str, wait: u64) -> String {
    format!(
        r#"kfix_o=
if ! {{ [ -d "$kfix_d" ] || mkdir -p -- "$kfix_d" 2>/dev/null; }}; then echo "error: cannot create $kfix_d"
elif ! command exec 9>>"$kfix_d/lock"; then echo "error: cannot open $kfix_d/lock"
else
  [ -f "$kfix_d/owner" ] && IFS= read -r kfix_o <"$kfix_d/owner"
  if flock -n 9 || {{ [ {wait} -gt 0 ] && [ "$kfix_o" = {owner} ] && flock -w {wait} 9; }}; then
    printf '%s\n' {owner} > "$kfix_d/owner"; kfix_lock=1; echo "locked $kfix_o"
  else exec 9>&-; echo "held $kfix_o"; fi
fi 2>/dev/null"#,
        owner = quote_always(owner)
    )
}

/// Give the lock up (run with [`Mode::Shell`]): the owner record cleared first.
pub const RELEASE: &str = ": > \"$kfix_d/owner\"; kfix_lock=; exec 9>&-";

/// Data a request can carry on its stdin (text the shell can hold in a word).
pub fn carriable(data: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(data).ok()?;
    (s.len() <= MAX_DATA && !s.contains('\0')).then_some(s)
}

/// The process behind a channel, kept so that closing can wait for it.
pub enum Proc {
    Local(tokio::process::Child),
    Ssh(openssh::Child<std::sync::Arc<openssh::Session>>),
}

type Reader = Box<dyn AsyncRead + Send + Unpin>;

/// A running channel.
pub struct Channel {
    proc: Proc,
    stdin: Box<dyn AsyncWrite + Send + Unpin>,
    stdout: Reader,
    stderr: Reader,
    /// The setup, sent along with the first request.
    setup: Option<String>,
    last_used: Instant,
}

/// How a request went.
pub enum Call {
    /// The channel never came up (its setup failed): the request did not run.
    NotStarted,
    /// The channel had ended before the request started (no start mark came back before
    /// an error or the end of its output): the request did not run.
    Gone,
    Done(Result<Output, TransportError>),
}

impl Channel {
    pub fn new(
        proc: Proc,
        stdin: Box<dyn AsyncWrite + Send + Unpin>,
        stdout: Reader,
        stderr: Reader,
        setup: String,
    ) -> Channel {
        Channel {
            proc,
            stdin,
            stdout,
            stderr,
            setup: Some(setup),
            last_used: Instant::now(),
        }
    }

    /// Idle too long to be used again?
    pub fn stale(&self) -> bool {
        self.last_used.elapsed() >= REUSE
    }

    /// How long since the last answer.
    pub fn idle(&self) -> Duration {
        self.last_used.elapsed()
    }

    /// Run `line` with `data` on its stdin; `timeout` bounds the wait here and (plus
    /// [`super::REMOTE_GRACE`]) the request on the host. After an error the channel is
    /// not to be used again.
    pub async fn call(&mut self, line: &str, data: Option<&str>, timeout: Duration) -> Call {
        self.send(line, data, timeout, Mode::Subshell).await
    }

    /// Run kfix's own `line` in the channel's shell itself (see [`Mode::Shell`]).
    pub async fn call_in_shell(&mut self, line: &str, timeout: Duration) -> Call {
        self.send(line, None, timeout, Mode::Shell).await
    }

    /// Run `line` as `mode` says (a [`Mode::Shell`] request takes no data).
    pub async fn send(
        &mut self,
        line: &str,
        data: Option<&str>,
        timeout: Duration,
        mode: Mode,
    ) -> Call {
        let fresh = self.setup.is_some();
        let boundary = batch::boundary();
        let mut text = self.setup.take().unwrap_or_default();
        text.push_str(&request(
            line,
            data,
            super::remote_limit(timeout),
            &boundary,
            mode,
        ));
        let start_marker = format!("{boundary} s\n");
        let out_marker = format!("\n{boundary} e ");
        let err_marker = format!("\n{boundary} e\n");
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let deadline = tokio::time::Instant::now() + timeout;
        let exchange = async {
            self.stdin.write_all(text.as_bytes()).await?;
            self.stdin.flush().await?;
            let (o, e) = tokio::join!(
                read_to_marker(&mut self.stdout, &mut out, out_marker.as_bytes(), true),
                read_to_marker(&mut self.stderr, &mut err, err_marker.as_bytes(), false),
            );
            Ok::<_, std::io::Error>(o? && e?)
        };
        let whole = match tokio::time::timeout_at(deadline, exchange).await {
            Err(_) => return Call::Done(Err(TransportError::Timeout(timeout))),
            Ok(whole) => whole,
        };
        let mut stdout = out.as_slice();
        if fresh {
            match find(stdout, READY, 0) {
                Some(at) => stdout = &stdout[at + READY.len()..],
                // A new channel that ends (or refuses its setup) before saying it is
                // ready never came up.
                None => return Call::NotStarted,
            }
        }
        // Where this request's output starts: after its start mark. A channel that ends
        // before the mark reaches the controller (an error writing the request, or
        // reading its answer, or the end of the answer) ran nothing of it: its shell had
        // ended (the watchdog ended it while idle, or as the request was on its way: a
        // write to an SSH client whose remote shell has just ended is still taken).
        let started = find(stdout, start_marker.as_bytes(), 0);
        let Some(at) = started else {
            return match whole {
                Ok(true) => Call::Done(Err(TransportError::Io(
                    "the command channel's answer had no start mark".into(),
                ))),
                Ok(false) | Err(_) => Call::Gone,
            };
        };
        match whole {
            Ok(true) => {}
            Ok(false) => {
                return Call::Done(Err(TransportError::Unreachable(
                    "the command channel closed in the middle of a command".into(),
                )));
            }
            Err(e) => {
                return Call::Done(Err(TransportError::Unreachable(format!(
                    "command channel: {e} in the middle of a command"
                ))));
            }
        }
        let stdout = &stdout[at + start_marker.len()..];
        let parsed = batch::frame(stdout, out_marker.as_bytes())
            .zip(batch::split_at_marker(&err, err_marker.as_bytes()));
        let Some(((stdout, code, _), (stderr, _))) = parsed else {
            return Call::Done(Err(TransportError::Io(
                "the command channel's answer was not framed".into(),
            )));
        };
        self.last_used = Instant::now();
        Call::Done(Ok(Output {
            code,
            stdout: stdout.to_vec(),
            stderr: stderr.to_vec(),
        }))
    }

    /// Close the channel's stdin (its shell exits, removing its state) and wait briefly.
    pub async fn close(self) {
        let Channel { proc, stdin, .. } = self;
        drop(stdin);
        let wait = Duration::from_secs(2);
        match proc {
            Proc::Local(mut c) => {
                let _ = tokio::time::timeout(wait, c.wait()).await;
            }
            Proc::Ssh(c) => {
                let _ = tokio::time::timeout(wait, c.wait()).await;
            }
        }
    }
}

/// Read from `r` into `buf` until it holds `marker` (and, `then_line`, the rest of that
/// line); false at end of input before that.
async fn read_to_marker(
    r: &mut Reader,
    buf: &mut Vec<u8>,
    marker: &[u8],
    then_line: bool,
) -> std::io::Result<bool> {
    let mut chunk = vec![0u8; 16 * 1024];
    let mut from = 0;
    loop {
        if let Some(at) = find(buf, marker, from) {
            let end = at + marker.len();
            if !then_line || buf[end..].contains(&b'\n') {
                return Ok(true);
            }
        } else {
            from = buf.len().saturating_sub(marker.len());
        }
        let n = r.read(&mut chunk).await?;
        if n == 0 {
            return Ok(false);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Where `needle` first occurs in `hay` at or after `from`.
fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

#[cfg(test)]
#[path = "channel_tests.rs"]
mod tests;
