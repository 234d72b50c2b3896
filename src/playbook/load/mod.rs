//! Reading a playbook file: YAML → typed [`Playbook`], reporting every problem at once.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::model::*;
use crate::diag::{Diagnostic, Diagnostics, Pos};
use crate::template;
use crate::yaml::{self, At, Kind, Node};

mod decode;
#[cfg(test)]
mod tests;
mod validate;

pub(in crate::playbook) use decode::RawProbe;
use decode::*;
use validate::*;

pub(super) const TOP_KEYS: &[&str] = &[
    "id",
    "title",
    "summary",
    "severity",
    "source",
    "alerts",
    "auto_apply",
    "disruptive",
    "vars",
    "preconditions",
    "detect",
    "steps",
    "verify",
    "rollout",
    "remedy",
    "gather",
    "impact",
    "diagnosis",
    "follow_up",
];
pub(super) const STEP_COMMON: &[&str] = &[
    "id",
    "name",
    "irreversible",
    "when",
    "only_if",
    "timeout",
    "run_on",
];
pub(super) const PROBE_SUBJECTS: &[&str] = &[
    "sysctl",
    "sysctl_persisted",
    "command",
    "link",
    "path",
    "file",
    "route",
    "iptables",
    "iptables_chain",
    "trace",
    "drift",
];

/// Collects diagnostics for one file.
struct Ctx<'a> {
    file: &'a Path,
    text: &'a str,
    errors: Vec<Diagnostic>,
    /// Every variable name a template or expression reads.
    used: BTreeSet<String>,
    /// The text being checked is one where a secret may go (stdin, file content).
    secret_ok: bool,
    /// See [`Playbook::secret_leaks`].
    leaks: BTreeMap<String, Vec<Diagnostic>>,
}

impl Ctx<'_> {
    fn err(&mut self, pos: Pos, msg: impl Into<String>, hint: Option<String>) {
        let mut d = Diagnostic::at(self.file, self.text, pos, msg);
        d.hint = hint;
        self.errors.push(d);
    }

    fn yaml_err(&mut self, e: yaml::Error, fallback: Pos, hint: Option<String>) {
        let hint = hint.or_else(|| hint_for(&e.message));
        self.err(e.pos.unwrap_or(fallback), e.message, hint);
    }

    /// Deserialize a node into `T`, recording an error on failure.
    fn typed<'n, T: Deserialize<'n>>(&mut self, node: &'n Node) -> Option<T> {
        match yaml::from_node::<T>(node) {
            Ok(v) => Some(v),
            Err(e) => {
                self.yaml_err(e, node.pos, None);
                None
            }
        }
    }
}

/// A hint for serde's common messages.
fn hint_for(message: &str) -> Option<String> {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (field, expected) = rest.split_once('`')?;
        let options: Vec<&str> = expected
            .split('`')
            .enumerate()
            .filter(|(i, _)| i % 2 == 1)
            .map(|(_, s)| s)
            .collect();
        return Some(suggest(field, &options));
    }
    if message.starts_with("unknown variant `") {
        return Some("use one of the values listed above".to_string());
    }
    None
}

/// "did you mean `x`?" when a close match exists, else the list of valid names.
pub fn suggest(given: &str, options: &[&str]) -> String {
    let best = options
        .iter()
        .map(|o| (levenshtein(given, o), *o))
        .min()
        .filter(|(d, o)| *d <= 2.max(o.len() / 3));
    match best {
        Some((_, o)) => format!("did you mean `{o}`?"),
        None => format!("expected one of: {}", options.join(", ")),
    }
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let v = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
            cur.push(v);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Load and validate a playbook. Every problem in the file is reported together.
pub fn load(path: &Path) -> Result<Playbook, Diagnostics> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Diagnostics(vec![
            Diagnostic::file(path, format!("cannot read playbook: {e}"))
                .with_hint("pass a playbook file, or an id from `kfix list`"),
        ])
    })?;
    parse(path, &text)
}

/// Playbooks larger than this are refused before parsing: a real one is a few KiB.
pub const MAX_PLAYBOOK_BYTES: usize = 1024 * 1024;

/// Parse playbook text (named `path` in diagnostics).
pub fn parse(path: &Path, text: &str) -> Result<Playbook, Diagnostics> {
    if text.len() > MAX_PLAYBOOK_BYTES {
        return Err(Diagnostics(vec![
            Diagnostic::file(
                path,
                format!(
                    "playbook is larger than {} MiB ({} bytes)",
                    MAX_PLAYBOOK_BYTES / 1024 / 1024,
                    text.len()
                ),
            )
            .with_hint("a playbook describes one fix; move data into files on the host"),
        ]));
    }
    let mut cx = Ctx {
        file: path,
        text,
        errors: Vec::new(),
        used: BTreeSet::new(),
        secret_ok: false,
        leaks: BTreeMap::new(),
    };
    let root = match yaml::parse(text) {
        Ok(n) => n,
        Err(e) => {
            cx.yaml_err(
                e,
                Pos { line: 1, col: 1 },
                Some("the playbook is not valid YAML".into()),
            );
            return Err(Diagnostics(cx.errors));
        }
    };
    let pb = decode(&mut cx, &root, path, text).map(|mut pb| {
        let names: BTreeSet<String> = pb.gather.iter().map(|g| g.name.clone()).collect();
        for v in pb.vars.iter_mut() {
            v.gathered = names.contains(&v.name);
        }
        pb
    });
    let pb = pb.and_then(|pb| {
        validate(&mut cx, &pb);
        let mut pb = pb;
        pb.uses_inventory_hostnames = cx.used.contains("inventory_hostnames");
        for v in pb.vars.iter().filter(|v| v.secret) {
            for d in cx.leaks.get(&v.name).into_iter().flatten() {
                cx.errors.push(d.clone());
            }
        }
        pb.secret_leaks = std::mem::take(&mut cx.leaks);
        cx.errors.is_empty().then_some(pb)
    });
    cx.errors.sort_by_key(|d| d.pos);
    cx.errors
        .dedup_by(|a, b| a.pos == b.pos && a.message == b.message);
    match pb {
        Some(pb) => Ok(pb),
        None => Err(Diagnostics(cx.errors)),
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
