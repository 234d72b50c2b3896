//! Transports: how a command reaches a host (the local machine, or SSH), with timeouts
//! and become (sudo). Everything sent is a [`Cmd`] rendered by the one quoting path.

mod local;
mod ssh;

use std::path::PathBuf;
use std::time::Duration;

use crate::quote::Cmd;

pub use ssh::SshOptions;

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
            } => Link::Ssh(Box::new(
                ssh::Ssh::connect(address, *port, user.as_deref(), key_file.as_deref(), opts)
                    .await?,
            )),
        };
        Ok(Conn {
            link,
            become_,
            command_timeout,
        })
    }

    /// Run a command with the connection's default timeout.
    pub async fn run(&self, cmd: &Cmd) -> Result<Output, TransportError> {
        self.run_with_timeout(cmd, self.command_timeout).await
    }

    pub async fn run_with_timeout(
        &self,
        cmd: &Cmd,
        timeout: Duration,
    ) -> Result<Output, TransportError> {
        let cmd = if self.become_.enabled {
            cmd.clone().with_become(self.become_.user.as_deref())
        } else {
            cmd.clone()
        };
        let line = cmd.to_shell();
        let fut = async {
            match &self.link {
                Link::Local => local::run(&line, cmd.stdin.as_deref()).await,
                Link::Ssh(s) => s.run(&line, cmd.stdin.as_deref()).await,
            }
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(TransportError::Timeout(timeout)),
        }
    }

    /// Close the connection (SSH: stop the master, remove its control socket).
    pub async fn close(self) {
        if let Link::Ssh(s) = self.link {
            s.close().await;
        }
    }
}
