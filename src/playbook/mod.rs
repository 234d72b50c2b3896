//! Playbooks: the typed model, loading with positioned diagnostics, the shipped ones
//! (built into the binary), and lookup by id.

mod kinds;
mod load;
mod model;
pub mod schema;
mod words;

pub use load::{MAX_PLAYBOOK_BYTES, hex, load, parse, suggest};
pub use model::*;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::diag::{Diagnostic, Diagnostics};

mod builtin {
    include!(concat!(env!("OUT_DIR"), "/builtin_playbooks.rs"));
}

/// Where a playbook comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Shipped in the binary (the repository's playbooks/ when it was built).
    Builtin,
    /// A file of `--playbook-dir` (adding a playbook, or overriding a built-in by id),
    /// or a path given on the command line.
    File(PathBuf),
}

impl Source {
    pub fn describe(&self) -> String {
        match self {
            Source::Builtin => "built in".to_string(),
            Source::File(p) => p.display().to_string(),
        }
    }
}

/// The path a built-in playbook's diagnostics, runbook page and journal name.
fn builtin_path(name: &str) -> PathBuf {
    PathBuf::from(format!("<built-in>/{name}"))
}

/// The built-in playbooks, parsed.
fn builtins() -> Result<Vec<Playbook>, Diagnostics> {
    builtin::BUILTIN
        .iter()
        .map(|(name, text)| parse(&builtin_path(name), text))
        .collect()
}

/// Every playbook a command sees, sorted by id: the built-in ones, each replaced by a
/// playbook of `dir` with the same id, plus `dir`'s others. A playbook of `dir` that
/// does not load is an error (named at its file and line).
pub fn catalog(dir: Option<&Path>) -> Result<Vec<(Playbook, Source)>, Diagnostics> {
    let mut by_id: BTreeMap<String, (Playbook, Source)> = BTreeMap::new();
    for pb in builtins()? {
        by_id.insert(pb.id.clone(), (pb, Source::Builtin));
    }
    if let Some(d) = dir {
        if !d.is_dir() {
            return Err(Diagnostics(vec![
                Diagnostic::file(d, "--playbook-dir: not a directory")
                    .with_hint("a directory of *.yaml playbooks (KFIX_PLAYBOOK_DIR sets it too)"),
            ]));
        }
        let mut errors = Vec::new();
        for f in discover(d) {
            match load(&f) {
                Ok(pb) => {
                    by_id.insert(pb.id.clone(), (pb, Source::File(f)));
                }
                Err(e) => errors.extend(e.0),
            }
        }
        if !errors.is_empty() {
            return Err(Diagnostics(errors));
        }
    }
    Ok(by_id.into_values().collect())
}

/// Resolve a PLAYBOOK argument: a path to a file, else an id — in `dir`
/// (`<dir>/<id>.yaml` or `.yml`, or any file there whose `id:` matches), else built in.
pub fn resolve(arg: &str, dir: Option<&Path>) -> Result<(Playbook, Source), Diagnostics> {
    let p = Path::new(arg);
    if p.is_file() {
        return load(p).map(|pb| (pb, Source::File(p.to_path_buf())));
    }
    if let Some(d) = dir {
        for ext in ["yaml", "yml"] {
            let cand = d.join(format!("{arg}.{ext}"));
            if cand.is_file() {
                return load(&cand).map(|pb| (pb, Source::File(cand)));
            }
        }
        for f in discover(d) {
            if let Ok(pb) = load(&f)
                && pb.id == arg
            {
                return Ok((pb, Source::File(f)));
            }
        }
    }
    let shipped = builtins()?;
    if let Some(pb) = shipped.iter().find(|pb| pb.id == arg) {
        return Ok((pb.clone(), Source::Builtin));
    }
    let mut ids: Vec<String> = shipped.iter().map(|pb| pb.id.clone()).collect();
    if let Some(d) = dir {
        ids.extend(
            discover(d)
                .iter()
                .filter_map(|f| f.file_stem().map(|s| s.to_string_lossy().into_owned())),
        );
    }
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let place = dir.map_or_else(
        || "the built-in playbooks".to_string(),
        |d| format!("{} and the built-in playbooks", d.display()),
    );
    Err(Diagnostics(vec![
        Diagnostic::file(
            Path::new(arg),
            format!("no playbook `{arg}` (looked for a file, and for an id in {place})"),
        )
        .with_hint(format!(
            "{} (`kfix list` shows them all)",
            suggest(arg, &refs)
        )),
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
