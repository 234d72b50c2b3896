//! The SSH transport: the openssh crate in native-mux mode, one master per host,
//! strict host-key checking, the user's ssh_config honoured.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use openssh::{ControlPersist, KnownHosts, Session, SessionBuilder, Stdio};
use tokio::io::AsyncWriteExt;

use super::{Output, TransportError};

/// SSH handshakes a run has in flight at most. A handshake costs CPU at both ends
/// (OpenSSH's default sntrup761 key exchange, about 0.07 s of the controller's per
/// host): a thousand started at once share the CPUs so evenly that each ends only when
/// nearly all do, and kfix itself, one process among two thousand, reaches a connected
/// host only after its master's ControlPersist has run out (measured on 2 CPUs: 383 of
/// 1000 hosts lost that way, none with this limit; docs/scale.md). Over a real network,
/// where a handshake mostly waits on round trips, 64 in flight still connect hundreds
/// of hosts a second.
pub const HANDSHAKES_IN_FLIGHT: u32 = 64;

/// Settings shared by every SSH connection of a run.
#[derive(Clone, Debug)]
pub struct SshOptions {
    pub config_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    /// Where control sockets live (a private directory of this run).
    pub control_dir: PathBuf,
    /// `Strict` unless the operator explicitly chose otherwise.
    pub accept_new_host_keys: bool,
    /// The run's handshake slots, shared by every clone of these options.
    pub handshakes: Handshakes,
    /// Where the host lock lives on every host: [`super::LOCK_DIR`], the same for every
    /// run, or two runs would not see each other; only tests over the local transport
    /// point it elsewhere (this machine's own /run is not theirs to lock).
    pub host_lock_dir: String,
}

/// At most so many SSH handshakes at once (`--max-handshakes`; a connection holds its
/// slot until its master is up).
#[derive(Clone, Debug)]
pub struct Handshakes(std::sync::Arc<tokio::sync::Semaphore>);

impl Handshakes {
    pub fn new(limit: u32) -> Handshakes {
        let limit = usize::try_from(limit.max(1)).unwrap_or(1);
        Handshakes(std::sync::Arc::new(tokio::sync::Semaphore::new(limit)))
    }
}

impl Default for Handshakes {
    fn default() -> Self {
        Handshakes::new(HANDSHAKES_IN_FLIGHT)
    }
}

pub struct Ssh {
    session: std::sync::Arc<Session>,
}

impl Ssh {
    pub async fn connect(
        address: &str,
        port: Option<u16>,
        user: Option<&str>,
        key_file: Option<&Path>,
        jump: &[String],
        opts: &SshOptions,
    ) -> Result<Ssh, TransportError> {
        let mut b = SessionBuilder::default();
        b.known_hosts_check(if opts.accept_new_host_keys {
            KnownHosts::Add
        } else {
            KnownHosts::Strict
        })
        .connect_timeout(opts.connect_timeout)
        .server_alive_interval(Duration::from_secs(5))
        .control_directory(&opts.control_dir)
        // A master whose controller died (SIGKILL) exits by itself after 30 s idle: long
        // enough to outlast the wait between a fleet's phases (planning every host, then
        // the next playbook of `kfix run A B`); a master that went idle for longer (the
        // operator reading the plan) is reopened (engine, pool).
        .control_persist(ControlPersist::IdleFor(
            NonZeroUsize::new(30).unwrap_or(NonZeroUsize::MIN),
        ));
        if let Some(f) = &opts.config_file {
            b.config_file(f);
        }
        if let Some(u) = user {
            b.user(u.to_string());
        }
        if let Some(p) = port {
            b.port(p);
        }
        if let Some(k) = key_file {
            b.keyfile(k);
        }
        if !jump.is_empty() {
            b.jump_hosts(jump);
        }
        // The slot is held until the master is up (never closed: the semaphore lives
        // as long as the options).
        let _slot = opts.handshakes.0.acquire().await.ok();
        let session = b
            .connect_mux(address)
            .await
            .map_err(|e| TransportError::Unreachable(describe(&e)))?;
        Ok(Ssh {
            session: std::sync::Arc::new(session),
        })
    }

    pub async fn run(&self, line: &str, stdin: Option<&[u8]>) -> Result<Output, TransportError> {
        let mut cmd = self.session.raw_command(line);
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().await.map_err(|e| self.classify(e))?;
        if let (Some(data), Some(mut pipe)) = (stdin, child.stdin().take()) {
            pipe.write_all(data)
                .await
                .map_err(|e| TransportError::Io(format!("writing stdin: {e}")))?;
            drop(pipe);
        }
        let out = match child.wait_with_output().await {
            Ok(out) => out,
            // openssh turns exit status 127 into an error; it is a result like any other.
            Err(openssh::Error::Remote(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Output {
                    code: Some(127),
                    stdout: Vec::new(),
                    stderr: b"command not found (exit 127)".to_vec(),
                });
            }
            Err(e) => return Err(self.classify(e)),
        };
        Ok(Output {
            code: out.status.code(),
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }

    fn classify(&self, e: openssh::Error) -> TransportError {
        TransportError::Unreachable(describe(&e))
    }

    /// Is the master connection still up?
    pub async fn alive(&self) -> bool {
        self.session.check().await.is_ok()
    }

    /// Start a long-running command whose stdin stays open (the host lock).
    pub async fn spawn_held(&self, line: &str) -> Result<super::Held, TransportError> {
        let mut cmd = self.session.clone().arc_raw_command(line);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().await.map_err(|e| self.classify(e))?;
        let stdin = child.stdin().take();
        let stdout = child.stdout().take();
        match (stdin, stdout) {
            (Some(i), Some(o)) => Ok(super::Held::Ssh {
                child,
                stdin: Some(i),
                stdout: tokio::io::BufReader::new(o),
            }),
            _ => Err(TransportError::Io("no pipes to the lock holder".into())),
        }
    }

    /// Start `line` with all three pipes open: the command channel.
    pub async fn spawn_channel(
        &self,
        line: &str,
        setup: String,
    ) -> Result<super::channel::Channel, TransportError> {
        let mut cmd = self.session.clone().arc_raw_command(line);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().await.map_err(|e| self.classify(e))?;
        let (i, o, e) = (
            child.stdin().take(),
            child.stdout().take(),
            child.stderr().take(),
        );
        match (i, o, e) {
            (Some(i), Some(o), Some(e)) => Ok(super::channel::Channel::new(
                super::channel::Proc::Ssh(child),
                Box::new(i),
                Box::new(o),
                Box::new(e),
                setup,
            )),
            _ => Err(TransportError::Io("no pipes to the command channel".into())),
        }
    }

    pub async fn close(self) {
        // The lock holder may still share the session; it closes when the last one goes.
        if let Ok(s) = std::sync::Arc::try_unwrap(self.session) {
            let _ = s.close().await;
        }
    }
}

/// openssh's errors, with the reason ssh gave (e.g. host key verification failed).
fn describe(e: &openssh::Error) -> String {
    use std::error::Error as _;
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    s
}
