//! Playbooks: the typed model, loading with positioned diagnostics, and lookup by id.

mod load;
mod model;

pub use load::{MAX_PLAYBOOK_BYTES, hex, load, parse, suggest};
pub use model::*;

use std::path::{Path, PathBuf};

use crate::diag::{Diagnostic, Diagnostics};

/// Resolve a PLAYBOOK argument: a path to a file, or an id found in `dir`
/// (`<dir>/<id>.yaml` or `.yml`, or any file there whose `id:` matches).
pub fn resolve(arg: &str, dir: &Path) -> Result<PathBuf, Diagnostics> {
    let p = Path::new(arg);
    if p.is_file() {
        return Ok(p.to_path_buf());
    }
    for ext in ["yaml", "yml"] {
        let cand = dir.join(format!("{arg}.{ext}"));
        if cand.is_file() {
            return Ok(cand);
        }
    }
    let all = discover(dir);
    for f in &all {
        if let Ok(pb) = load(f)
            && pb.id == arg
        {
            return Ok(f.clone());
        }
    }
    let ids: Vec<String> = all
        .iter()
        .filter_map(|f| f.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let hint = if refs.is_empty() {
        format!(
            "no playbooks in {}; pass --playbook-dir or KFIX_PLAYBOOK_DIR",
            dir.display()
        )
    } else {
        suggest(arg, &refs)
    };
    Err(Diagnostics(vec![
        Diagnostic::file(
            Path::new(arg),
            format!(
                "no playbook `{arg}` (looked for a file, and for an id in {})",
                dir.display()
            ),
        )
        .with_hint(hint),
    ]))
}

/// Every `.yaml`/`.yml` file in a playbook directory, sorted.
pub fn discover(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        })
        .collect();
    v.sort();
    v
}
