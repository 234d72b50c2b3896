//! The one undo executor: how a recorded undo runs, for a failed run's rollback
//! (`apply.rs`) and `kfix rollback` alike.

#[allow(unused_imports)]
use super::*;

/// Run one operation's undo on the connection where the operation ran. `run`: whether
/// this is the one run of an [`Undo::Last`] (see [`crate::plan::undo_order`]). `what`
/// names the operation in errors (`step \`id\``, or its description in backticks).
pub async fn run_undo(undo: &Undo, run: bool, conn: &Conn, what: &str) -> Result<(), String> {
    match undo {
        Undo::Last(_) if !run => Ok(()),
        Undo::Cmd(c) | Undo::Last(c) => match conn.run(c).await {
            Ok(o) if o.success() => Ok(()),
            Ok(o) => Err(format!("undo of {what} failed: {}", o.stderr())),
            Err(e) => Err(format!("undo of {what}: {e}")),
        },
        Undo::Nothing => Ok(()),
        Undo::Impossible(why) => Err(format!("{what} cannot be undone: {why}")),
    }
}
