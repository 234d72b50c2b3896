//! `path` steps: a path made absent by moving it aside (never deleting it), so undo
//! can move it back. The default place is the run's backup directory under
//! /var/lib/kfix, outside any directory other programs scan.

use crate::host::{HResult, Host};
use crate::plan::{Op, StepPlan, Undo, state_diff};
use crate::playbook::PathSpec;
use crate::quote::Cmd;

pub const BACKUP_ROOT: &str = "/var/lib/kfix/backup";

/// Move $1 to $2 (creating $2's parent).
const MOVE: &str = r#"set -e
mkdir -p -- "$(dirname -- "$2")"
[ ! -e "$2" ] || { echo "$2 already exists" >&2; exit 1; }
mv -- "$1" "$2""#;

/// Undo: move $2 back to $1; whatever now sits at $1 is moved aside to $2.replaced.
/// Then remove the backup directories left empty (up to the first non-empty parent).
const MOVE_BACK: &str = r#"set -e
if [ -e "$1" ] || [ -L "$1" ]; then rm -rf -- "$2.replaced"; mv -- "$1" "$2.replaced"; fi
mv -- "$2" "$1"
case "$2" in /var/lib/kfix/backup/*) rmdir -p -- "$(dirname -- "$2")" 2>/dev/null || true ;; esac"#;

pub async fn plan(id: &str, s: &PathSpec, h: &Host) -> HResult<StepPlan> {
    let path = h.render(&s.path)?;
    if !h.path_exists(&path).await? {
        return Ok(StepPlan::no_change(id, "path", None));
    }
    let aside = match h.render_opt(&s.aside_to)? {
        Some(a) => a,
        None => format!(
            "{BACKUP_ROOT}/{}{}",
            h.run_id,
            if path.starts_with('/') {
                path.clone()
            } else {
                format!("/{path}")
            }
        ),
    };
    let op = Op {
        timeout_secs: Some(3600),
        ..Op::new(
            format!("move {path} aside to {aside}"),
            Cmd::script(MOVE, [path.clone(), aside.clone()]),
            Undo::Cmd(Cmd::script(MOVE_BACK, [path.clone(), aside.clone()])),
        )
        // Only the copy set aside decides whether the move can be undone: whatever
        // appears at the original path later (docker re-creating its data root on
        // start) is itself set aside by the undo, so it is not drift.
        .fingerprint(Cmd::script(
            r#"if [ -e "$1" ] || [ -L "$1" ]; then echo "present $1"; else echo "absent $1"; fi"#,
            [aside.clone()],
        ))
    };
    // Set aside, it still takes its room on the disk (F5's old data root is what the
    // disk alert was about): say how much, and how to let it go once confirmed.
    let du = h
        .run(&Cmd::script(
            r#"du -sk -- "$1" 2>/dev/null | { read -r k _ && echo "$k"; }"#,
            [path.clone()],
        ))
        .await?;
    let size = du
        .stdout()
        .trim()
        .parse::<u64>()
        .map_or("its size unknown".to_string(), human_kib);
    h.predict_path(&path, false);
    h.predict_path(&aside, true);
    h.predict_file(&path, None, None);
    let diff = state_diff(
        &[path.to_string()],
        &[format!("{aside}  (moved aside, kept for undo)")],
    );
    let mut p = StepPlan::change(id, "path", diff, vec![op]);
    p.note = Some(format!(
        "{path} ({size}) stays on its filesystem at {aside}: once the change is confirmed and no rollback will be wanted, free it with `rm -rf {aside}`"
    ));
    Ok(p)
}

/// A size in KiB as people read it: `812 KiB`, `3.4 MiB`, `12.0 GiB`.
fn human_kib(k: u64) -> String {
    match k {
        0..1024 => format!("{k} KiB"),
        1024..1_048_576 => format!("{:.1} MiB", k as f64 / 1024.0),
        _ => format!("{:.1} GiB", k as f64 / 1_048_576.0),
    }
}

impl super::Plan for PathSpec {
    async fn plan(&self, step: &crate::playbook::Step, h: &Host) -> HResult<StepPlan> {
        plan(&step.id, self, h).await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_as_people_read_them() {
        assert_eq!(super::human_kib(812), "812 KiB");
        assert_eq!(super::human_kib(3482), "3.4 MiB");
        assert_eq!(super::human_kib(12_582_912), "12.0 GiB");
    }
}
