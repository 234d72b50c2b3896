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
    /// The channel had ended before the request reached it (its input refused the
    /// request's first bytes): the request did not run.
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
        self.exchange(line, data, timeout, Mode::Subshell).await
    }

    /// Run kfix's own `line` in the channel's shell itself (see [`Mode::Shell`]).
    pub async fn call_in_shell(&mut self, line: &str, timeout: Duration) -> Call {
        self.exchange(line, None, timeout, Mode::Shell).await
    }

    async fn exchange(
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
        // The first write tells a channel that has already ended (its shell gone: the
        // watchdog ended it while idle) from one that breaks during the request: only
        // when none of the request was taken is it certain that nothing of it ran.
        let bytes = text.as_bytes();
        let written = match tokio::time::timeout_at(deadline, self.stdin.write(bytes)).await {
            Err(_) => return Call::Done(Err(TransportError::Timeout(timeout))),
            // A new channel that refuses its setup never came up (as when it ends
            // before printing that it is ready).
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::BrokenPipe && fresh => {
                return Call::NotStarted;
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => return Call::Gone,
            Ok(Err(e)) => {
                return Call::Done(Err(TransportError::Unreachable(format!(
                    "command channel: {e}"
                ))));
            }
            Ok(Ok(n)) => n,
        };
        let rest = &bytes[written..];
        let exchange = async {
            self.stdin.write_all(rest).await?;
            self.stdin.flush().await?;
            let (o, e) = tokio::join!(
                read_to_marker(&mut self.stdout, &mut out, out_marker.as_bytes(), true),
                read_to_marker(&mut self.stderr, &mut err, err_marker.as_bytes(), false),
            );
            Ok::<_, std::io::Error>(o? && e?)
        };
        let whole = tokio::time::timeout_at(deadline, exchange).await;
        let mut stdout = out.as_slice();
        if fresh {
            match find(stdout, READY, 0) {
                Some(at) => stdout = &stdout[at + READY.len()..],
                None if whole.is_ok() => return Call::NotStarted,
                None => {}
            }
        }
        let whole = match whole {
            Err(_) => return Call::Done(Err(TransportError::Timeout(timeout))),
            Ok(Err(e)) => {
                return Call::Done(Err(TransportError::Unreachable(format!(
                    "command channel: {e}"
                ))));
            }
            Ok(Ok(whole)) => whole,
        };
        // Where this request's output starts: after its start mark. Without the mark the
        // shell ended before the request ran (the watchdog ended the channel as the
        // request was on its way: a write to an SSH client whose remote shell has just
        // ended is still taken).
        let started = find(stdout, start_marker.as_bytes(), 0);
        if !whole {
            if started.is_none() {
                return Call::Gone;
            }
            return Call::Done(Err(TransportError::Unreachable(
                "the command channel closed in the middle of a command".into(),
            )));
        }
        let Some(at) = started else {
            return Call::Done(Err(TransportError::Io(
                "the command channel's answer had no start mark".into(),
            )));
        };
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
mod tests {
    use super::*;
    use crate::quote::Cmd;
    use crate::transport::{Become, Conn, SshOptions, Target};

    async fn local() -> Conn {
        let opts = SshOptions {
            config_file: None,
            connect_timeout: Duration::from_secs(5),
            control_dir: std::env::temp_dir(),
            accept_new_host_keys: false,
            handshakes: Default::default(),
            host_lock_dir: crate::transport::LOCK_DIR.into(),
        };
        Conn::open(
            &Target::Local,
            Become::default(),
            &opts,
            Duration::from_secs(20),
        )
        .await
        .expect("local conn")
    }

    /// Processes on this machine whose command line is exactly `argv`.
    fn procs(argv: &[&str]) -> usize {
        let want = argv.join("\0") + "\0";
        std::fs::read_dir("/proc")
            .expect("/proc")
            .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
            .filter(|c| c == want.as_bytes())
            .count()
    }

    #[tokio::test]
    async fn round_trips_share_one_shell_and_keep_codes_output_quoting_and_stdin() {
        let conn = local().await;
        let pid = Cmd::script("printf '%s' \"$$\"", Vec::<String>::new());
        let first = conn.run(&pid).await.expect("pid").stdout();
        assert!(!first.is_empty());
        // An exit, a cd and a variable stay in their request.
        let leaky = Cmd::script("cd /; x=set; echo out; echo err >&2; exit 3", [""]);
        let out = conn.run(&leaky).await.expect("leaky");
        assert_eq!(
            (out.code, out.stdout(), out.stderr()),
            (Some(3), "out\n".to_string(), "err".to_string())
        );
        let state = Cmd::script("printf '%s:%s' \"$PWD\" \"$x\"", Vec::<String>::new());
        let cwd = std::env::current_dir().expect("cwd");
        assert_eq!(
            conn.run(&state).await.expect("state").stdout(),
            format!("{}:", cwd.display())
        );
        // Arguments are data; stdin arrives byte for byte (no newline added).
        let hostile = "a'b; $(touch /tmp/kfix-pwned) `x` \"q\"\n\\n %s";
        let echo = Cmd::new(["printf", "%s|", hostile]);
        assert_eq!(
            conn.run(&echo).await.expect("echo").stdout(),
            format!("{hostile}|")
        );
        let cat = Cmd::new(["cat"]).with_stdin(hostile.as_bytes().to_vec());
        let out = conn.run(&cat).await.expect("cat");
        assert_eq!(out.stdout(), hostile);
        // A script the shell cannot parse fails its own request only.
        let broken = Cmd::script("if then", Vec::<String>::new());
        assert_eq!(conn.run(&broken).await.expect("broken").code, Some(2));
        assert_eq!(conn.run(&pid).await.expect("pid").stdout(), first);
        assert_eq!(
            conn.traffic().sessions,
            1,
            "every round trip in the one channel"
        );
        assert_eq!(conn.traffic().round_trips, 7);
        assert!(!std::path::Path::new("/tmp/kfix-pwned").exists());
        conn.close().await;
    }

    #[tokio::test]
    async fn the_same_read_asked_at_once_runs_once_in_one_round_trip() {
        let conn = local().await;
        let log = std::env::temp_dir().join(format!("kfix-wave-{}", std::process::id()));
        let _ = std::fs::remove_file(&log);
        let counted = Cmd::script("echo ran >> \"$1\"; echo same", [log.display().to_string()]);
        let other = Cmd::new(["echo", "other"]);
        let (a, b, c) = tokio::join!(conn.run(&counted), conn.run(&counted), conn.run(&other));
        assert_eq!(a.expect("a").stdout(), "same\n");
        assert_eq!(b.expect("b").stdout(), "same\n");
        assert_eq!(c.expect("c").stdout(), "other\n");
        assert_eq!(std::fs::read_to_string(&log).expect("log"), "ran\n");
        assert_eq!(conn.traffic().round_trips, 1);
        std::fs::remove_file(&log).expect("cleanup");
        conn.close().await;
    }

    #[tokio::test]
    async fn data_the_shell_cannot_hold_goes_in_a_session_of_its_own() {
        let conn = local().await;
        let data = b"a\0b\xff".to_vec();
        let out = conn
            .run(&Cmd::new(["od", "-An", "-tx1"]).with_stdin(data))
            .await
            .expect("od");
        assert_eq!(
            out.stdout().split_whitespace().collect::<Vec<_>>(),
            ["61", "00", "62", "ff"]
        );
        assert_eq!(conn.traffic().sessions, 1, "a session, no channel");
        conn.run(&Cmd::new(["true"])).await.expect("true");
        assert_eq!(conn.traffic().sessions, 2, "then the channel");
        conn.close().await;
    }

    #[tokio::test]
    async fn a_timed_out_request_ends_its_channel_and_the_watchdog_ends_the_command() {
        let conn = local().await;
        // A duration no other process runs (another test process may run this test).
        let secs = format!("37.{}", std::process::id());
        let sleeper = ["sleep", secs.as_str()];
        let slow = Cmd::new(sleeper);
        let err = conn
            .run_with_timeout(&slow, Duration::from_secs(1))
            .await
            .expect_err("timed out");
        assert_eq!(err, TransportError::Timeout(Duration::from_secs(1)));
        assert_eq!(procs(&sleeper), 1, "still running right after");
        // A new channel serves the next round trip.
        assert!(conn.run(&Cmd::new(["true"])).await.expect("true").success());
        assert_eq!(conn.traffic().sessions, 2);
        // Limit 1 + 2 s, seen by the watchdog within two ticks.
        let deadline = Instant::now() + Duration::from_secs(1 + 2 + 2 * TICK + 3);
        while procs(&sleeper) > 0 {
            assert!(Instant::now() < deadline, "the watchdog kills the command");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        conn.close().await;
    }

    /// The process group of a channel's shell and what its state descriptor is.
    async fn group_and_state(ch: &mut Channel) -> (String, String) {
        let Call::Done(Ok(out)) = ch
            .call(
                "ps -o pgid= -p $$ | tr -d ' \\n'; echo; ls -l \"$kfix_s\"",
                None,
                Duration::from_secs(5),
            )
            .await
        else {
            panic!("no answer");
        };
        let said = out.stdout();
        let (group, state) = said.split_once('\n').expect("two lines");
        (group.to_string(), state.to_string())
    }

    fn group_alive(group: &str) -> bool {
        std::process::Command::new("pgrep")
            .args(["-g", group])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("pgrep")
            .success()
    }

    /// A controller that keeps the pipe open but sends nothing (as a dead one whose ssh
    /// master lingers): the watchdog ends the channel after `idle` seconds, and then
    /// itself; nothing is left on the host.
    async fn ends_when_idle(shell: &str, setup: String) -> String {
        let mut ch = crate::transport::local::spawn_channel(shell, setup)
            .await
            .expect("spawn");
        let (group, state) = group_and_state(&mut ch).await;
        // Busy for longer than the idle bound, then idle again: the watchdog follows.
        let Call::Done(Ok(out)) = ch
            .call("sleep 4; echo slept", None, Duration::from_secs(9))
            .await
        else {
            panic!("no answer");
        };
        assert_eq!(
            out.stdout(),
            "slept\n",
            "a request longer than the idle bound is not cut"
        );
        let Proc::Local(child) = &mut ch.proc else {
            panic!("local")
        };
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .expect("ended within 10 s")
            .expect("status");
        assert!(!status.success());
        let deadline = Instant::now() + Duration::from_secs(5);
        while group_alive(&group) {
            assert!(Instant::now() < deadline, "the watchdog ends too");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        state
    }

    #[tokio::test]
    async fn a_request_finding_its_channel_ended_goes_in_a_new_one() {
        // The channel's shell ends between two requests (as the watchdog ends an idle
        // one while the controller is slow to send): the next request, none of which
        // reached a shell, runs in a new channel instead of failing the host.
        let conn = local().await;
        let group = conn
            .run(&Cmd::new(["sh", "-c", "ps -o pgid= -p $PPID | tr -d ' '"]))
            .await
            .expect("first request");
        let group = group.stdout().trim().to_string();
        assert!(!group.is_empty());
        assert_eq!(conn.traffic().sessions, 1);
        let killed = std::process::Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{group}")])
            .status()
            .expect("kill");
        assert!(killed.success());
        // Dead (a zombie until reaped: its descriptors, the channel's input among
        // them, closed at its death).
        tokio::time::sleep(Duration::from_millis(200)).await;
        let out = conn
            .run(&Cmd::new(["echo", "again"]))
            .await
            .expect("run in a new channel, not 'Broken pipe'");
        assert_eq!(out.stdout(), "again\n");
        assert_eq!(conn.traffic().sessions, 2, "a second channel");
    }

    #[tokio::test]
    async fn a_request_reaching_a_shell_that_has_just_ended_is_gone_not_failed() {
        // Over SSH the controller writes to the ssh client, which takes the request
        // even when the remote shell has just ended (the watchdog ended the channel as
        // the request was on its way); only the output's end says so. Here the shell
        // ends and something else keeps its input open, as the client does.
        let line = "sh -s; exec sleep 3 >&- 2>&-";
        let mut ch = crate::transport::local::spawn_channel(
            line,
            setup_script(TICK, IDLE, crate::transport::LOCK_DIR),
        )
        .await
        .expect("spawn");
        let Call::Done(Ok(out)) = ch.call("echo up", None, Duration::from_secs(5)).await else {
            panic!("no answer");
        };
        assert_eq!(out.stdout(), "up\n");
        // The shell ends in the middle of a request: that one ran, it is not resent.
        let Call::Done(Err(e)) = ch.call_in_shell("exit 0", Duration::from_secs(5)).await else {
            panic!("a request that started is a failure, not 'nothing ran'");
        };
        assert!(e.to_string().contains("in the middle"), "{e}");
        let marker = std::env::temp_dir().join(format!("kfix-gone-{}", std::process::id()));
        let touch = format!("touch {}", marker.display());
        assert!(
            matches!(
                ch.call(&touch, None, Duration::from_secs(5)).await,
                Call::Gone
            ),
            "taken by the input, never run: gone"
        );
        assert!(!marker.exists());
        ch.close().await;
    }

    #[tokio::test]
    async fn a_request_that_started_before_its_channel_died_is_not_run_again() {
        let conn = local().await;
        let log = std::env::temp_dir().join(format!("kfix-once-{}", std::process::id()));
        let _ = std::fs::remove_file(&log);
        // Each run appends a line, then the channel's whole process group is killed.
        let script = "echo ran >> \"$1\"; kill -s KILL -- -$(ps -o pgid= -p $$ | tr -d ' ')";
        let err = conn
            .run(&Cmd::script(script, [log.display().to_string()]))
            .await
            .expect_err("the channel died under the request");
        assert!(err.to_string().contains("in the middle"), "{err}");
        let ran = std::fs::read_to_string(&log).expect("log");
        std::fs::remove_file(&log).expect("cleanup");
        assert_eq!(ran, "ran\n", "run once, never resent");
    }

    #[tokio::test]
    async fn idleness_is_counted_from_the_end_of_the_last_request() {
        // Idle bound 3 s, a tick a second; a request busy for 4 s that a tick sees
        // running. Measured from that tick, the channel would be "idle" 3 s about 1 s
        // after the request ended; it must stay usable for the idle bound after it.
        let mut ch = crate::transport::local::spawn_channel(
            "exec sh -s",
            setup_script(1, 3, crate::transport::LOCK_DIR),
        )
        .await
        .expect("spawn");
        let Call::Done(Ok(out)) = ch
            .call("sleep 4; echo slept", None, Duration::from_secs(9))
            .await
        else {
            panic!("no answer");
        };
        assert_eq!(out.stdout(), "slept\n");
        tokio::time::sleep(Duration::from_millis(2000)).await;
        let Call::Done(Ok(out)) = ch.call("echo again", None, Duration::from_secs(5)).await else {
            panic!("the channel ended 2 s after its last request, under the 3 s idle bound");
        };
        assert_eq!(out.stdout(), "again\n");
        ch.close().await;
    }

    #[tokio::test]
    async fn an_idle_channel_ends_by_itself_and_leaves_nothing() {
        let state =
            ends_when_idle("exec sh -s", setup_script(1, 3, crate::transport::LOCK_DIR)).await;
        assert!(state.contains("pipe:["), "{state}");
    }

    #[tokio::test]
    async fn the_state_also_works_where_the_shell_makes_here_documents_files() {
        // bash before 5.1 (and any bash for a long document) puts a here-document in a
        // deleted temporary file rather than a pipe.
        let long = format!("\n{}kfix-state\n", "i 0\n".repeat(20_000));
        let setup =
            setup_script(1, 3, crate::transport::LOCK_DIR).replace("\ni 0\nkfix-state\n", &long);
        assert_ne!(setup, setup_script(1, 3, crate::transport::LOCK_DIR));
        let state = ends_when_idle("exec bash -s", setup).await;
        assert!(state.contains("(deleted)"), "{state}");
    }

    #[tokio::test]
    async fn what_the_login_shell_prints_is_not_output_and_a_failed_setup_runs_nothing() {
        let chatty = "echo motd; echo warn >&2; exec sh -s";
        let mut ch = crate::transport::local::spawn_channel(
            chatty,
            setup_script(TICK, IDLE, crate::transport::LOCK_DIR),
        )
        .await
        .expect("spawn");
        let Call::Done(Ok(out)) = ch.call("echo hi", None, Duration::from_secs(5)).await else {
            panic!("no answer");
        };
        assert_eq!(out.stdout(), "hi\n");
        ch.close().await;
        let marker = std::env::temp_dir().join(format!("kfix-ch-{}", std::process::id()));
        let line = format!("touch {}", marker.display());
        let mut broken = crate::transport::local::spawn_channel(
            "exit 1",
            setup_script(TICK, IDLE, crate::transport::LOCK_DIR),
        )
        .await
        .expect("spawn");
        assert!(matches!(
            broken.call(&line, None, Duration::from_secs(5)).await,
            Call::NotStarted
        ));
        assert!(!marker.exists());
    }

    /// A channel whose host lock lives in `dir` (this machine's own /run is left alone).
    async fn lock_channel(dir: &std::path::Path) -> Channel {
        let setup = setup_script(TICK, IDLE, &dir.display().to_string());
        crate::transport::local::spawn_channel("exec sh -s", setup)
            .await
            .expect("spawn")
    }

    async fn in_shell(ch: &mut Channel, line: &str) -> String {
        let Call::Done(Ok(out)) = ch.call_in_shell(line, Duration::from_secs(20)).await else {
            panic!("no answer to {line}");
        };
        out.stdout()
    }

    fn free(dir: &std::path::Path) -> bool {
        std::process::Command::new("flock")
            .args(["-n", &dir.join("lock").display().to_string(), "true"])
            .status()
            .expect("flock")
            .success()
    }

    #[tokio::test]
    async fn the_channel_holds_the_lock_its_commands_do_not_and_it_goes_with_the_shell() {
        let dir = std::env::temp_dir().join(format!("kfix-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut a = lock_channel(&dir).await;
        assert_eq!(
            in_shell(&mut a, &lock_request("run A", 0)).await,
            "locked \n"
        );
        assert!(!free(&dir), "held by A's shell");
        assert_eq!(
            std::fs::read_to_string(dir.join("owner")).expect("owner"),
            "run A\n"
        );
        // A command started in the channel does not hold the lock's descriptor: a
        // daemon it leaves behind would keep the lock for ever.
        let Call::Done(Ok(out)) = a
            .call("ls -l /proc/self/fd/", None, Duration::from_secs(5))
            .await
        else {
            panic!("no answer");
        };
        assert!(!out.stdout().contains("lock"), "{}", out.stdout());
        // Another run is told who holds it, and keeps nothing open.
        let mut b = lock_channel(&dir).await;
        assert_eq!(
            in_shell(&mut b, &lock_request("run B", 0)).await,
            "held run A\n"
        );
        // Taking it again after a channel ended waits only for a record of one's own.
        let started = Instant::now();
        assert_eq!(
            in_shell(&mut b, &lock_request("run B", 30)).await,
            "held run A\n"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no wait for another run's lock"
        );
        let mut a2 = lock_channel(&dir).await;
        let retake = lock_request("run A", 30);
        let waiting = tokio::spawn(async move {
            let Call::Done(Ok(out)) = a2.call_in_shell(&retake, Duration::from_secs(40)).await
            else {
                panic!("no answer");
            };
            (out.stdout(), a2)
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!waiting.is_finished(), "waits for the old channel");
        // The old channel ends (its stdin closed): the lock passes to the new one.
        a.close().await;
        let (said, mut a2) = waiting.await.expect("join");
        assert_eq!(said, "locked run A\n");
        assert!(!free(&dir));
        // Released: the record cleared first, then the lock.
        in_shell(&mut a2, RELEASE).await;
        assert!(free(&dir));
        assert_eq!(
            std::fs::read_to_string(dir.join("owner")).expect("owner"),
            ""
        );
        // A channel that ends holding the lock clears the record as it goes.
        assert_eq!(
            in_shell(&mut b, &lock_request("run B", 0)).await,
            "locked \n"
        );
        b.close().await;
        assert!(free(&dir));
        assert_eq!(
            std::fs::read_to_string(dir.join("owner")).expect("owner"),
            ""
        );
        a2.close().await;
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
