//! The local transport: the same shell line an SSH host would get, run by `sh -c` here.

use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::{Output, TransportError};

pub async fn run(line: &str, stdin: Option<&[u8]>) -> Result<Output, TransportError> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(line)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| TransportError::Io(format!("cannot start sh: {e}")))?;
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(data)
            .await
            .map_err(|e| TransportError::Io(format!("writing stdin: {e}")))?;
        drop(pipe);
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| TransportError::Io(format!("waiting for command: {e}")))?;
    Ok(Output {
        code: out.status.code(),
        stdout: out.stdout,
        stderr: out.stderr,
    })
}

/// Start a long-running `sh -c LINE` whose stdin stays open (the host lock).
pub async fn spawn_held(line: &str) -> Result<super::Held, TransportError> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(line)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| TransportError::Io(format!("cannot start sh: {e}")))?;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    match (stdin, stdout) {
        (Some(i), Some(o)) => Ok(super::Held::Local {
            child,
            stdin: Some(i),
            stdout: tokio::io::BufReader::new(o),
        }),
        _ => Err(TransportError::Io("no pipes to the lock holder".into())),
    }
}

/// Start `sh -c LINE` with all three pipes open, in a process group of its own (the
/// channel's watchdog ends its group, not kfix's): the command channel.
pub async fn spawn_channel(
    line: &str,
    setup: String,
) -> Result<super::channel::Channel, TransportError> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(line)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| TransportError::Io(format!("cannot start sh: {e}")))?;
    let (i, o, e) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    match (i, o, e) {
        (Some(i), Some(o), Some(e)) => Ok(super::channel::Channel::new(
            super::channel::Proc::Local(child),
            Box::new(i),
            Box::new(o),
            Box::new(e),
            setup,
        )),
        _ => Err(TransportError::Io("no pipes to the command channel".into())),
    }
}
