//! The host lock: one kfix run changes a host at a time (a lock file under
//! [`LOCK_DIR`] (/run/kfix),
//! held by a heartbeat through the command channel or a session of its own, expiring
//! when its holder dies).

#[allow(unused_imports)]
use super::*;

/// Holds the lock while its stdin is open and the controller's heartbeat (a newline every
/// few seconds) keeps coming: on EOF, or after LOCK_EXPIRY seconds of silence (a network
/// partition the host's sshd has not noticed), it clears the owner record and exits.
/// A lock found free but with an owner record left behind was held by a run that died
/// without releasing it: that owner is reported as stale.
pub(super) const LOCK_SCRIPT: &str = r#"d=$3
[ -d "$d" ] || mkdir -p -- "$d" 2>/dev/null || { echo "error: cannot create $d"; exit 3; }
exec 9>>"$d/lock" || { echo "error: cannot open $d/lock"; exit 3; }
if ! flock -n 9; then echo "held $(cat "$d/owner" 2>/dev/null)"; exit 4; fi
prev=; [ -f "$d/owner" ] && IFS= read -r prev <"$d/owner"
printf '%s\n' "$1" > "$d/owner"
echo "locked $prev"
while timeout "$2" sh -c 'IFS= read -r beat'; do :; done
rm -f -- "$d/owner""#;

/// How long the lock of a run that is gone (killed, or its link lost) can outlast it,
/// for commands bounded by `timeout`: its command channel ends once the command it was
/// running has ended (its watchdog kills one past its limit within a tick), or once it
/// has been idle for [`channel::IDLE`]; a lock held in a session of its own expires
/// after [`LOCK_EXPIRY`].
pub fn lock_outlives_run_by(timeout: Duration) -> Duration {
    let channel = remote_limit(timeout).max(channel::IDLE) + channel::TICK + REMOTE_KILL_AFTER;
    Duration::from_secs(channel.max(LOCK_EXPIRY))
}

/// Seconds between the controller's heartbeats to a lock holder.
pub(super) const LOCK_HEARTBEAT: u64 = 5;
/// Seconds without a heartbeat after which a lock holder gives the lock up.
pub const LOCK_EXPIRY: u64 = 30;

/// Write a newline to the lock holder every LOCK_HEARTBEAT seconds until aborted (which
/// drops the pipe: the holder sees EOF and releases the lock).
pub(super) fn heartbeat<W: tokio::io::AsyncWrite + Unpin + Send + 'static>(
    mut w: W,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(LOCK_HEARTBEAT)).await;
            if w.write_all(b"\n").await.is_err() || w.flush().await.is_err() {
                return;
            }
        }
    })
}

/// A long-running remote (or local) process with an open stdin.
pub enum Held {
    Local {
        child: tokio::process::Child,
        stdin: Option<tokio::process::ChildStdin>,
        stdout: tokio::io::BufReader<tokio::process::ChildStdout>,
    },
    Ssh {
        child: openssh::Child<std::sync::Arc<openssh::Session>>,
        stdin: Option<openssh::ChildStdin>,
        stdout: tokio::io::BufReader<openssh::ChildStdout>,
    },
}

impl Held {
    pub(super) async fn read_line(&mut self) -> Result<String, TransportError> {
        use tokio::io::AsyncBufReadExt;
        let mut line = String::new();
        let r = match self {
            Held::Local { stdout, .. } => stdout.read_line(&mut line).await,
            Held::Ssh { stdout, .. } => stdout.read_line(&mut line).await,
        };
        r.map_err(|e| TransportError::Unreachable(format!("lock holder: {e}")))?;
        Ok(line)
    }

    /// Hand stdin to a heartbeat task.
    pub(super) fn take_stdin_heartbeat(&mut self) -> Option<tokio::task::JoinHandle<()>> {
        match self {
            Held::Local { stdin, .. } => stdin.take().map(heartbeat),
            Held::Ssh { stdin, .. } => stdin.take().map(heartbeat),
        }
    }

    /// Close stdin and wait (briefly) for the holder to clean up and exit.
    pub(super) async fn release(self) {
        let wait = std::time::Duration::from_secs(10);
        match self {
            Held::Local {
                mut child, stdin, ..
            } => {
                drop(stdin);
                let _ = tokio::time::timeout(wait, child.wait()).await;
            }
            Held::Ssh { child, stdin, .. } => {
                drop(stdin);
                let _ = tokio::time::timeout(wait, child.wait()).await;
            }
        }
    }
}

/// A host's kfix lock, held by this run.
pub struct HostLock(pub(super) Holder);

pub(super) enum Holder {
    /// Held by the connection's command channel, kept alive by `beat`.
    Channel {
        slot: Arc<tokio::sync::Mutex<ChannelSlot>>,
        beat: tokio::task::JoinHandle<()>,
        timeout: Duration,
    },
    /// Held by a session of its own ([`LOCK_SCRIPT`]), for hosts without a channel.
    Session {
        held: Option<Box<Held>>,
        beat: Option<tokio::task::JoinHandle<()>>,
    },
}

impl HostLock {
    pub async fn release(mut self) {
        match &mut self.0 {
            Holder::Channel {
                slot,
                beat,
                timeout,
            } => {
                beat.abort();
                let _ = beat.await;
                let Ok(mut slot) = tokio::time::timeout(*timeout, slot.lock()).await else {
                    // A command still runs: the lock goes when the channel ends.
                    return;
                };
                slot.lock_owner = None;
                if let Some(ch) = slot.running.as_mut()
                    && !matches!(
                        ch.call_in_shell(channel::RELEASE, *timeout).await,
                        channel::Call::Done(Ok(_))
                    )
                {
                    // Ending the channel releases the lock.
                    slot.running = None;
                }
            }
            Holder::Session { held, beat } => {
                if let Some(b) = beat.take() {
                    b.abort();
                    let _ = b.await;
                }
                if let Some(h) = held.take() {
                    h.release().await;
                }
            }
        }
    }
}

impl Drop for HostLock {
    /// A lock dropped without [`HostLock::release`] stops being kept alive: the channel
    /// holding it ends when idle (or with the connection).
    fn drop(&mut self) {
        match &mut self.0 {
            Holder::Channel { beat, .. } => beat.abort(),
            Holder::Session { beat, .. } => {
                if let Some(b) = beat.take() {
                    b.abort();
                }
            }
        }
    }
}

/// While the channel holds the lock, keep it from going idle (a no-op request after
/// [`channel::BEAT`] of idleness; a channel busy with a command is not idle). A channel
/// the no-op fails in is dropped: the next round trip takes the lock again.
pub(super) fn keep_alive(
    slot: Arc<tokio::sync::Mutex<ChannelSlot>>,
    timeout: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(channel::BEAT / 4).await;
            let Ok(mut s) = slot.try_lock() else { continue };
            let Some(ch) = s.running.as_mut() else {
                continue;
            };
            if ch.idle() >= channel::BEAT
                && !matches!(
                    ch.call(":", None, timeout).await,
                    channel::Call::Done(Ok(_))
                )
            {
                s.lose(timeout);
            }
        }
    })
}

/// What a lock request in a channel found.
pub(super) enum Taken {
    /// Ours now; a previous owner's record was left behind (a run that died holding it).
    Locked(Option<String>),
    Held(String),
}

/// What the answer to [`channel::lock_request`] says.
pub(super) fn taken(out: &Output) -> Result<Taken, TransportError> {
    let out = out.stdout();
    let first = out.lines().next().unwrap_or_default();
    if let Some(prev) = first.strip_prefix("locked") {
        let prev = prev.trim();
        Ok(Taken::Locked((!prev.is_empty()).then(|| prev.to_string())))
    } else if let Some(by) = first.strip_prefix("held") {
        Ok(Taken::Held(by.trim().to_string()))
    } else {
        Err(lock_error(first))
    }
}

/// Take the lock again for `owner` in `slot`'s new channel, before anything else runs in
/// it (see [`channel::lock_request`] for `wait`). None: the channel ended before the
/// request ran, or the host cannot run one (then [`ChannelSlot::off`] is set).
pub(super) async fn take_in_channel(
    slot: &mut ChannelSlot,
    owner: &str,
    wait: u64,
    timeout: Duration,
) -> Option<Result<Taken, TransportError>> {
    let ch = slot.running.as_mut()?;
    let timeout = timeout + Duration::from_secs(wait);
    let out = match ch
        .call_in_shell(&channel::lock_request(owner, wait), timeout)
        .await
    {
        channel::Call::NotStarted => {
            slot.running = None;
            slot.off = true;
            return None;
        }
        channel::Call::Done(Err(e)) => {
            slot.lose(timeout);
            return Some(Err(e));
        }
        channel::Call::Gone => {
            slot.running = None;
            return None;
        }
        channel::Call::Done(Ok(out)) => out,
    };
    let taken = taken(&out);
    if let Ok(Taken::Locked(_)) = taken {
        slot.lock_owner = Some(owner.to_string());
    }
    Some(taken)
}

pub enum LockOutcome {
    Acquired {
        lock: HostLock,
        stale_owner: Option<String>,
    },
    /// Another run holds it; `owner` is what that run recorded (run id, operator, pid).
    Held { owner: String },
}

/// A lock script's `error: …` line as an error.
pub(super) fn lock_error(line: &str) -> TransportError {
    let why = line.trim();
    TransportError::Io(format!(
        "cannot take the host lock: {}",
        why.strip_prefix("error: ").unwrap_or(why)
    ))
}
