//! Transports: how a command reaches a host (the local machine, or SSH), with timeouts
//! and become (sudo). Everything sent is a [`Cmd`] rendered by the one quoting path.

pub mod batch;
pub mod channel;
pub(crate) mod local;
mod lock;
mod ssh;

pub use lock::*;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::quote::Cmd;

pub use ssh::{HANDSHAKES_IN_FLIGHT, Handshakes, SshOptions};

/// What a command left behind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim().to_string()
    }
}

/// Why a command could not be run at all (as opposed to running and failing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransportError {
    /// The host could not be reached or the connection died.
    Unreachable(String),
    /// The command did not finish in time.
    Timeout(Duration),
    /// A local error (spawning, pipes).
    Io(String),
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransportError::Unreachable(s) => write!(f, "unreachable: {s}"),
            TransportError::Timeout(d) => write!(f, "timed out after {}s", d.as_secs()),
            TransportError::Io(s) => write!(f, "{s}"),
        }
    }
}

impl TransportError {
    /// The error as a report's reason: an unreachable host's is ssh's own words (the
    /// report's status already says `unreachable`); the others as they display.
    pub fn reason(&self) -> String {
        match self {
            TransportError::Unreachable(why) => why.clone(),
            other => other.to_string(),
        }
    }
}

/// How to run as root on the target.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Become {
    pub enabled: bool,
    pub user: Option<String>,
}

/// Where and how to connect to one host.
#[derive(Clone, Debug)]
pub enum Target {
    Local,
    Ssh {
        address: String,
        port: Option<u16>,
        user: Option<String>,
        key_file: Option<PathBuf>,
        /// Jump hosts to go through (`ssh -J`), from the inventory's ProxyJump.
        jump: Vec<String>,
    },
}

enum Link {
    Local,
    Ssh(Box<ssh::Ssh>),
}

/// An open connection to a host.
pub struct Conn {
    link: Link,
    become_: Become,
    command_timeout: Duration,
    /// Concurrent reads share round trips (see [`batch`]).
    batch: batch::Batcher,
    /// The host's command channel (see [`channel`]), started by the first round trip;
    /// it holds the host lock when this connection has it.
    channel: Arc<tokio::sync::Mutex<ChannelSlot>>,
    /// The channel that held the lock ended and another run took the lock since: no
    /// more commands go to this host.
    lock_lost: AtomicBool,
    /// Remote round trips so far (a batch is one), and the commands they carried.
    round_trips: AtomicU64,
    commands: AtomicU64,
    /// Sessions opened: round trips sent on their own, and channels started.
    sessions: AtomicU64,
    /// Where the host lock lives on the host ([`SshOptions::host_lock_dir`]).
    lock_dir: String,
}

/// A connection's traffic: a batch is one round trip carrying many commands; a round
/// trip in the command channel opens no session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub round_trips: u64,
    pub commands: u64,
    /// Sessions opened (each a login shell on the host): round trips sent on their own
    /// and command channels started. A host lock held in a session of its own (hosts
    /// without a channel) is not counted.
    pub sessions: u64,
}

impl std::ops::AddAssign for Traffic {
    /// Two connections' traffic to one host (a host read again over a new connection).
    fn add_assign(&mut self, other: Traffic) {
        self.round_trips += other.round_trips;
        self.commands += other.commands;
        self.sessions += other.sessions;
    }
}

#[derive(Default)]
struct ChannelSlot {
    running: Option<channel::Channel>,
    /// The host could not run a channel (its setup failed): every round trip goes in a
    /// session of its own.
    off: bool,
    /// The lock this connection holds in its channel, by owner record: a new channel
    /// takes it again before it runs anything else.
    lock_owner: Option<String>,
    /// The host-side limit (seconds) of the request the last channel ended in: how
    /// long its command may still hold the old channel's shell.
    ended_limit: u64,
}

impl ChannelSlot {
    /// Drop the running channel after a request bounded by `timeout` failed in it: its
    /// state is unknown (the command may still run until the watchdog ends it), so it
    /// is never used again.
    fn lose(&mut self, timeout: Duration) {
        self.running = None;
        self.ended_limit = remote_limit(timeout);
    }
}

/// Where every host keeps kfix's lock (a lock file and the owner's record): on tmpfs, so
/// a reboot frees it.
pub const LOCK_DIR: &str = "/run/kfix";

/// Seconds the remote side lets a command run beyond kfix's own timeout before it kills
/// it (SIGTERM, then SIGKILL [`REMOTE_KILL_AFTER`] s later).
pub const REMOTE_GRACE: u64 = 2;
pub const REMOTE_KILL_AFTER: u64 = 3;

/// A batch script longer than this travels on stdin rather than as an argument (Linux
/// takes at most 128 KiB in one argument).
const MAX_INLINE_SCRIPT: usize = 100 * 1024;

/// The shell line for `cmd`, bounded on the host itself by `timeout(1)` where it exists:
/// a command outlives a dead controller (killed, or its link gone) by at most its
/// timeout plus [`REMOTE_GRACE`], so no remote command, lock-free session or ssh master
/// lingers for ever. Hosts without `timeout` run the command as it is.
pub fn bounded_line(cmd: &Cmd, timeout: Duration) -> String {
    bounded_line_of(&cmd.to_shell(), timeout)
}

/// Whole seconds a command may run on the host: kfix's timeout rounded up, plus
/// [`REMOTE_GRACE`].
fn remote_limit(timeout: Duration) -> u64 {
    timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0) + REMOTE_GRACE
}

fn bounded_line_of(line: &str, timeout: Duration) -> String {
    let secs = remote_limit(timeout);
    format!(
        "if command -v timeout >/dev/null 2>&1; then exec timeout -k {REMOTE_KILL_AFTER} {secs} {line}; else exec {line}; fi"
    )
}

/// A new command channel had also ended before a request reached it.
fn channel_gone() -> TransportError {
    TransportError::Unreachable(
        "the command channel ended before a request reached it, twice".into(),
    )
}

impl Conn {
    /// Connect (SSH: one master connection per host, host keys checked strictly).
    pub async fn open(
        target: &Target,
        become_: Become,
        opts: &SshOptions,
        command_timeout: Duration,
    ) -> Result<Conn, TransportError> {
        let link = match target {
            Target::Local => Link::Local,
            Target::Ssh {
                address,
                port,
                user,
                key_file,
                jump,
            } => Link::Ssh(Box::new(
                ssh::Ssh::connect(
                    address,
                    *port,
                    user.as_deref(),
                    key_file.as_deref(),
                    jump,
                    opts,
                )
                .await?,
            )),
        };
        Ok(Conn {
            link,
            become_,
            command_timeout,
            batch: batch::Batcher::default(),
            channel: Arc::new(tokio::sync::Mutex::new(ChannelSlot::default())),
            lock_lost: AtomicBool::new(false),
            round_trips: AtomicU64::new(0),
            commands: AtomicU64::new(0),
            sessions: AtomicU64::new(0),
            lock_dir: opts.host_lock_dir.clone(),
        })
    }

    /// What went over the connection so far.
    pub fn traffic(&self) -> Traffic {
        Traffic {
            round_trips: self.round_trips.load(Ordering::Relaxed),
            commands: self.commands.load(Ordering::Relaxed),
            sessions: self.sessions.load(Ordering::Relaxed),
        }
    }

    /// Run a command with the connection's default timeout. Commands without stdin
    /// that concurrent callers issue at the same moment share one round trip.
    pub async fn run(&self, cmd: &Cmd) -> Result<Output, TransportError> {
        let b = &self.batch;
        if cmd.stdin.is_none()
            && let Some(role) = b.join(cmd.clone())
        {
            let rx = match role {
                batch::Role::Follower(rx) => rx,
                batch::Role::Leader(rx) => {
                    // Let the other probes polled in this pass join the wave.
                    tokio::task::yield_now().await;
                    self.send_wave(b.take()).await;
                    rx
                }
            };
            if let Ok(Some(answer)) = rx.await {
                self.commands.fetch_add(1, Ordering::Relaxed);
                return answer;
            }
        }
        self.run_with_timeout(cmd, self.command_timeout).await
    }

    async fn send_wave(&self, wave: Vec<(Cmd, batch::Waiter)>) {
        // The same read asked by several callers at once runs once: each gets its answer.
        let mut cmds: Vec<Cmd> = Vec::new();
        let mut waiters: Vec<Vec<batch::Waiter>> = Vec::new();
        for (cmd, w) in wave {
            match cmds.iter().position(|c| c.argv == cmd.argv) {
                Some(i) => waiters[i].push(w),
                None => {
                    cmds.push(cmd);
                    waiters.push(vec![w]);
                }
            }
        }
        if let [one] = &cmds[..] {
            let answer = self.send(one, self.command_timeout).await;
            for w in waiters.into_iter().flatten() {
                let _ = w.send(Some(answer.clone()));
            }
            return;
        }
        let boundary = batch::boundary();
        let script = batch::script(&cmds);
        // On the command line (inlined in the command channel) unless it is too long
        // for one argument.
        let script = if script.len() <= MAX_INLINE_SCRIPT {
            Cmd::new(["sh", "-c", &script, "kfix", &boundary])
        } else {
            Cmd::new(["sh", "-s", "--", &boundary]).with_stdin(script)
        };
        match self.send(&script, self.command_timeout).await {
            Ok(out) => {
                let parsed = batch::parse(&out, &boundary, cmds.len());
                for (ws, o) in waiters.into_iter().zip(parsed) {
                    for w in ws {
                        let _ = w.send(o.clone().map(Ok));
                    }
                }
            }
            Err(e) => {
                for w in waiters.into_iter().flatten() {
                    let _ = w.send(Some(Err(e.clone())));
                }
            }
        }
    }

    pub async fn run_with_timeout(
        &self,
        cmd: &Cmd,
        timeout: Duration,
    ) -> Result<Output, TransportError> {
        self.commands.fetch_add(1, Ordering::Relaxed);
        self.send(cmd, timeout).await
    }

    /// `cmd` as the target runs it (through sudo when the host needs it).
    fn becomes(&self, cmd: &Cmd) -> Cmd {
        if self.become_.enabled {
            cmd.clone().with_become(self.become_.user.as_deref())
        } else {
            cmd.clone()
        }
    }

    /// One round trip: in the command channel when it can carry `cmd` and is free,
    /// else in a session of its own.
    async fn send(&self, cmd: &Cmd, timeout: Duration) -> Result<Output, TransportError> {
        if self.lock_lost.load(Ordering::Relaxed) {
            return Err(lock_lost());
        }
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        if let Some(answer) = self.via_channel(cmd, timeout).await {
            return answer;
        }
        let cmd = self.becomes(cmd);
        self.send_line(&cmd.to_shell(), cmd.stdin.as_deref(), timeout)
            .await
    }

    /// `cmd` in the command channel; None when it goes in a session instead: its stdin
    /// is not text, the channel is busy with another caller's command, or the host
    /// cannot run one.
    async fn via_channel(
        &self,
        cmd: &Cmd,
        timeout: Duration,
    ) -> Option<Result<Output, TransportError>> {
        let data = match &cmd.stdin {
            Some(d) => Some(channel::carriable(d)?),
            None => None,
        };
        let mut slot = self.channel.try_lock().ok()?;
        // The request runs in a subshell of the channel's shell: the body goes in as is.
        let body = cmd.to_subshell_body();
        self.in_channel(&mut slot, &body, data, channel::Mode::Subshell, timeout)
            .await
    }

    /// `line` in the command channel held in `slot` (started when there is none, or the
    /// last one has been idle too long; a new one first takes again the host lock this
    /// connection holds). A channel found ended when the request reaches it (its
    /// watchdog ended it while the controller, busy elsewhere, was slow to send: the
    /// channel closed before the request's start mark) ran nothing, so the request goes
    /// once more in a new channel. None: the host cannot run a channel.
    async fn in_channel(
        &self,
        slot: &mut ChannelSlot,
        line: &str,
        data: Option<&str>,
        mode: channel::Mode,
        timeout: Duration,
    ) -> Option<Result<Output, TransportError>> {
        for attempt in 0..2 {
            let started = match self.ready_channel(slot, timeout).await? {
                Ok(started) => started,
                Err(e) => return Some(Err(e)),
            };
            if started && let Some(owner) = slot.lock_owner.clone() {
                // The lock ended with the channel that held it: take it again before
                // anything else runs on the host, waiting for the old channel's shell to
                // end (its watchdog ends a command past its limit within a tick).
                let wait = slot.ended_limit + channel::TICK + REMOTE_KILL_AFTER + 1;
                match take_in_channel(slot, &owner, wait, timeout).await {
                    Some(Ok(Taken::Locked(_))) => {}
                    Some(Err(e)) => return Some(Err(e)),
                    Some(Ok(Taken::Held(_))) | None => {
                        slot.lock_owner = None;
                        self.lock_lost.store(true, Ordering::Relaxed);
                        return Some(Err(lock_lost()));
                    }
                }
            }
            let ch = slot.running.as_mut()?;
            match ch.send(line, data, timeout, mode).await {
                channel::Call::Done(Ok(out)) => return Some(Ok(out)),
                channel::Call::Done(Err(e)) => {
                    slot.lose(timeout);
                    return Some(Err(e));
                }
                channel::Call::NotStarted => {
                    slot.running = None;
                    slot.off = true;
                    return None;
                }
                channel::Call::Gone if attempt == 0 => slot.running = None,
                channel::Call::Gone => break,
            }
        }
        slot.running = None;
        Some(Err(channel_gone()))
    }

    /// A channel in `slot` to use: the running one unless it has been idle too long,
    /// else a new one (Ok(true)). None: the host cannot run one (a link that cannot
    /// start one cannot run a command on its own either: that round trip reports why).
    async fn ready_channel(
        &self,
        slot: &mut ChannelSlot,
        timeout: Duration,
    ) -> Option<Result<bool, TransportError>> {
        if slot.off {
            return None;
        }
        if let Some(old) = slot.running.take_if(|c| c.stale()) {
            old.close().await;
        }
        if slot.running.is_some() {
            return Some(Ok(false));
        }
        let line = self.becomes(&Cmd::new(["sh", "-s"])).to_shell();
        let setup = channel::setup_script(channel::TICK, channel::IDLE, &self.lock_dir);
        let start = async {
            match &self.link {
                Link::Local => local::spawn_channel(&line, setup).await,
                Link::Ssh(s) => s.spawn_channel(&line, setup).await,
            }
        };
        let Ok(started) = tokio::time::timeout(timeout, start).await else {
            return Some(Err(TransportError::Timeout(timeout)));
        };
        slot.running = Some(started.ok()?);
        self.sessions.fetch_add(1, Ordering::Relaxed);
        Some(Ok(true))
    }

    /// Run `cmd` (with its stdin), then each of `probes`, in one round trip: how the
    /// executor applies an operation and fingerprints the state it left (and the state
    /// the next operation starts from). A probe's output is None when the host did not
    /// report it; when the operation's end was not reported either, the raw output stands
    /// for the operation (taken as failed unless it exited 0).
    pub async fn run_then_probe(
        &self,
        cmd: &Cmd,
        probes: &[&Cmd],
        timeout: Duration,
    ) -> Result<(Output, Vec<Option<Output>>), TransportError> {
        let boundary = batch::boundary();
        let script = batch::pair_script(cmd, probes);
        self.commands
            .fetch_add(1 + probes.len() as u64, Ordering::Relaxed);
        // One sudo for them all (the script runs as the target user).
        let mut pair = Cmd::new(["sh", "-c", &script, "kfix", &boundary]);
        pair.stdin = cmd.stdin.clone();
        let out = self.send(&pair, timeout).await?;
        match batch::parse_pair(&out, &boundary, probes.len()) {
            (Some(o), probed) => Ok((o, probed)),
            (None, probed) => Ok((
                Output {
                    code: out.code.filter(|c| *c != 0).or(Some(-1)),
                    ..out
                },
                probed,
            )),
        }
    }

    /// One round trip of an already quoted line, bounded on both ends.
    async fn send_line(
        &self,
        line: &str,
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Output, TransportError> {
        let line = bounded_line_of(line, timeout);
        self.sessions.fetch_add(1, Ordering::Relaxed);
        let fut = async {
            match &self.link {
                Link::Local => local::run(&line, stdin).await,
                Link::Ssh(s) => s.run(&line, stdin).await,
            }
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(TransportError::Timeout(timeout)),
        }
    }

    /// Take the host's kfix lock (flock on [`LOCK_DIR`]/lock), held until [`HostLock::release`]
    /// or until this controller dies: the holder is the command channel's shell (a lock
    /// session where the host cannot run a channel), which ends when its input closes,
    /// once the command it was running has ended, so a killed run never leaves the lock
    /// held for longer than [`lock_outlives_run_by`].
    pub async fn lock(&self, owner: &str) -> Result<LockOutcome, TransportError> {
        if let Some(taken) = self.lock_in_channel(owner).await {
            return taken;
        }
        let mut cmd = Cmd::script(
            LOCK_SCRIPT,
            [
                owner.to_string(),
                LOCK_EXPIRY.to_string(),
                self.lock_dir.clone(),
            ],
        );
        if self.become_.enabled {
            cmd = cmd.with_become(self.become_.user.as_deref());
        }
        let line = cmd.to_shell();
        let mut held = match &self.link {
            Link::Local => local::spawn_held(&line).await?,
            Link::Ssh(s) => s.spawn_held(&line).await?,
        };
        let first = tokio::time::timeout(self.command_timeout, held.read_line())
            .await
            .map_err(|_| TransportError::Timeout(self.command_timeout))??;
        if let Some(prev) = first.strip_prefix("locked") {
            let prev = prev.trim();
            let beat = held.take_stdin_heartbeat();
            Ok(LockOutcome::Acquired {
                lock: HostLock(Holder::Session {
                    held: Some(Box::new(held)),
                    beat,
                }),
                stale_owner: (!prev.is_empty()).then(|| prev.to_string()),
            })
        } else if let Some(owner) = first.strip_prefix("held") {
            held.release().await;
            Ok(LockOutcome::Held {
                owner: owner.trim().to_string(),
            })
        } else {
            held.release().await;
            Err(lock_error(&first))
        }
    }

    /// The lock taken in the command channel; None when the host cannot run one.
    async fn lock_in_channel(&self, owner: &str) -> Option<Result<LockOutcome, TransportError>> {
        let timeout = self.command_timeout;
        let Ok(mut slot) = tokio::time::timeout(timeout, self.channel.lock()).await else {
            return Some(Err(TransportError::Timeout(timeout)));
        };
        let line = channel::lock_request(owner, 0);
        let answer = self
            .in_channel(&mut slot, &line, None, channel::Mode::Shell, timeout)
            .await?;
        Some(answer.and_then(|out| match taken(&out)? {
            Taken::Locked(stale_owner) => {
                slot.lock_owner = Some(owner.to_string());
                Ok(LockOutcome::Acquired {
                    lock: HostLock(Holder::Channel {
                        slot: self.channel.clone(),
                        beat: keep_alive(self.channel.clone(), timeout),
                        timeout,
                    }),
                    stale_owner,
                })
            }
            Taken::Held(owner) => Ok(LockOutcome::Held { owner }),
        }))
    }

    /// Is the connection still usable? (An SSH master may have exited while the operator
    /// read the plan: it is idle-limited so that a killed controller leaves none behind.)
    pub async fn alive(&self) -> bool {
        match &self.link {
            Link::Local => true,
            Link::Ssh(s) => s.alive().await,
        }
    }

    /// Close a shared connection once its last user lets go of it.
    pub async fn close_shared(this: std::sync::Arc<Conn>) {
        if let Ok(c) = std::sync::Arc::try_unwrap(this) {
            c.close().await;
        }
    }

    /// Close the connection (SSH: end the command channel, stop the master, remove its
    /// control socket).
    pub async fn close(self) {
        let running = self.channel.lock().await.running.take();
        if let Some(ch) = running {
            ch.close().await;
        }
        if let Link::Ssh(s) = self.link {
            s.close().await;
        }
    }
}

/// Why a host whose lock was lost runs nothing more.
fn lock_lost() -> TransportError {
    TransportError::Io(
        "the host lock was lost (the command channel holding it ended) and could not be taken again; nothing more runs on this host".into(),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Is the host lock kept in `lock_dir` (a [`SshOptions::host_lock_dir`]) free? Asked
    /// as another run would: `flock -n`.
    pub(crate) fn lock_free(lock_dir: &std::path::Path) -> bool {
        std::process::Command::new("flock")
            .args(["-n", &lock_dir.join("lock").display().to_string(), "true"])
            .status()
            .expect("flock")
            .success()
    }

    /// `sh ARGS…` on this machine with `stdin` written to it: the tests' stand-in for a
    /// host's shell.
    pub(crate) fn sh(args: &[&str], stdin: &[u8]) -> std::process::Output {
        sh_with_env(args, stdin, &[])
    }

    /// [`sh`] with these environment variables set (PATH too).
    pub(crate) fn sh_with_env(
        args: &[&str],
        stdin: &[u8],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> std::process::Output {
        use std::io::Write;
        let mut child = std::process::Command::new("sh")
            .args(args)
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("sh");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin)
            .expect("write");
        child.wait_with_output().expect("wait")
    }

    fn run_line(line: &str, stdin: &[u8]) -> std::process::Output {
        sh(&["-c", line], stdin)
    }

    #[test]
    fn a_bounded_line_keeps_exit_code_stdin_and_quoting() {
        let cmd = Cmd::new([
            "sh",
            "-c",
            "cat; printf '%s' \"$1\"; exit 7",
            "x",
            "a'b; $(c)",
        ]);
        let out = run_line(&bounded_line(&cmd, Duration::from_secs(30)), b"in-");
        assert_eq!(out.status.code(), Some(7));
        assert_eq!(out.stdout, b"in-a'b; $(c)");
        assert!(bounded_line(&cmd, Duration::from_millis(1500)).contains("timeout -k 3 4 "));
    }

    #[test]
    fn a_bounded_line_dies_on_the_host_after_its_timeout_and_grace() {
        let cmd = Cmd::new(["sh", "-c", "sleep 30; echo survived"]);
        let started = std::time::Instant::now();
        let out = run_line(&bounded_line(&cmd, Duration::ZERO), b"");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "killed at ~2 s"
        );
        assert_eq!(out.status.code(), Some(124), "timeout(1)'s status");
        assert!(out.stdout.is_empty());
    }
}
