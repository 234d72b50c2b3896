//! YAML inventory reader (Ansible's `all: {hosts, vars, children}` format) and the
//! `group_vars/`/`host_vars/` file reader, parsed with serde-saphyr under a resource budget.

use super::{Builder, Vars, expand_host_pattern};
use crate::diag::{Diagnostic, Pos};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_saphyr::{Error as YamlError, MessageFormatter, Spanned};
use std::fmt;
use std::path::Path;

/// A YAML node with its position, kept until the inventory structure has been checked.
type Node = Spanned<Raw>;

#[derive(Debug)]
enum Raw {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Raw {
    fn kind(&self) -> &'static str {
        match self {
            Raw::Null => "null",
            Raw::Bool(_) => "boolean",
            Raw::Int(_) | Raw::UInt(_) | Raw::Float(_) => "number",
            Raw::Str(_) => "string",
            Raw::Seq(_) => "sequence",
            Raw::Map(_) => "mapping",
        }
    }
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Raw, E> {
        Ok(Raw::UInt(v))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_string()))
    }
    fn visit_u128<E>(self, v: u128) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_string()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Raw, E> {
        Ok(Raw::Str(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Raw, E> {
        Ok(Raw::Str(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_unit<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_none<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
        Raw::deserialize(d)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
        Raw::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Raw::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Node>()? {
            let value = map.next_value::<Node>()?;
            entries.push((key, value));
        }
        Ok(Raw::Map(entries))
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<Raw, A::Error> {
        Err(de::Error::custom("unsupported YAML tag"))
    }
}

/// Parser options: PyYAML-like scalars (`0755` is octal, `.nan` stays text) and a budget that
/// bounds size, nesting and alias expansion (alias bombs fail fast instead of eating memory).
fn options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_events = 1_000_000;
    budget.max_nodes = 250_000;
    budget.max_aliases = 10_000;
    budget.max_anchors = 10_000;
    budget.max_depth = 64;
    budget.max_documents = 1;
    budget.max_total_scalar_bytes = 16 * 1024 * 1024;
    budget.max_merge_keys = 1_000;
    let mut opts = serde_saphyr::Options::default();
    opts.budget = Some(budget);
    opts.alias_limits.max_total_replayed_events = 250_000;
    opts.alias_limits.max_replay_stack_depth = 32;
    opts.with_snippet = false;
    opts.legacy_octal_numbers = true;
    opts.non_finite_float_policy = serde_saphyr::options::NonFiniteFloatPolicy::AsString;
    opts
}

/// Reads a YAML inventory into `b`; returns every problem found.
pub(super) fn parse_inventory(file: &Path, source: &str, b: &mut Builder) -> Vec<Diagnostic> {
    let mut cx = Ctx::new(file, source);
    let root = match cx.parse() {
        Some(root) => root,
        None => return cx.diags,
    };
    let at = pos(&root);
    match root.value {
        Raw::Null => {}
        Raw::Map(entries) => {
            for (key, value) in entries {
                if let Some(name) = cx.key_text(&key) {
                    cx.group(b, &name, value);
                }
            }
        }
        other => cx.error(
            at,
            format!(
                "a YAML inventory must be a mapping of groups, found a {}",
                other.kind()
            ),
            "start with `all:` and put `hosts:`, `vars:` and `children:` under it",
        ),
    }
    cx.diags
}

/// Reads a `group_vars/`/`host_vars/` file (YAML or JSON): a mapping, or empty.
pub(super) fn parse_vars_file(file: &Path, source: &str) -> Result<Vars, Vec<Diagnostic>> {
    let mut cx = Ctx::new(file, source);
    let mut vars = Vars::new();
    if let Some(root) = cx.parse() {
        let at = pos(&root);
        match root.value {
            Raw::Null => {}
            Raw::Map(entries) => cx.vars(entries, |k, v| {
                vars.insert(k.to_string(), v);
                Ok(())
            }),
            other => cx.error(
                at,
                format!(
                    "a vars file must be a mapping of variable names to values, found a {}",
                    other.kind()
                ),
                "write one `name: value` per line",
            ),
        }
    }
    if cx.diags.is_empty() {
        Ok(vars)
    } else {
        Err(cx.diags)
    }
}

fn pos(node: &Node) -> Pos {
    Pos {
        line: usize::try_from(node.referenced.line()).unwrap_or(0),
        col: usize::try_from(node.referenced.column()).unwrap_or(0),
    }
}

const GROUP_KEYS: [&str; 3] = ["hosts", "vars", "children"];

struct Ctx<'a> {
    file: &'a Path,
    source: &'a str,
    diags: Vec<Diagnostic>,
}

impl<'a> Ctx<'a> {
    fn new(file: &'a Path, source: &'a str) -> Self {
        Ctx {
            file,
            source,
            diags: Vec::new(),
        }
    }

    fn error(&mut self, pos: Pos, msg: impl Into<String>, hint: impl Into<String>) {
        let d = if pos.line == 0 {
            Diagnostic::file(self.file, msg)
        } else {
            Diagnostic::at(self.file, self.source, pos, msg)
        };
        self.diags.push(d.with_hint(hint));
    }

    /// The document's root node (`None` for an empty document or a syntax error, which is
    /// recorded). Parsing recurses once per nesting level with large frames in debug builds,
    /// so it runs on its own thread with a big stack; the budget's depth limit then stops
    /// deep input long before that stack runs out, whatever thread the caller is on.
    fn parse(&mut self) -> Option<Node> {
        const PARSER_STACK_BYTES: usize = 64 * 1024 * 1024;
        let (file, source) = (self.file, self.source);
        let parse = move || {
            serde_saphyr::from_str_with_options::<Option<Node>>(source, options())
                .map_err(|e| Box::new(yaml_error(file, source, &e)))
        };
        let result = std::thread::scope(|scope| {
            let handle = std::thread::Builder::new()
                .name("kfix-yaml".into())
                .stack_size(PARSER_STACK_BYTES)
                .spawn_scoped(scope, parse)
                .map_err(|e| {
                    Box::new(Diagnostic::file(
                        file,
                        format!("cannot start the YAML parser: {e}"),
                    ))
                })?;
            handle.join().unwrap_or_else(|_| {
                Err(Box::new(Diagnostic::file(file, "the YAML parser crashed")))
            })
        });
        match result {
            Ok(root) => root,
            Err(d) => {
                self.diags.push(*d);
                None
            }
        }
    }

    /// One group: `null` or a mapping of `hosts`, `vars` and `children`.
    fn group(&mut self, b: &mut Builder, name: &str, node: Node) {
        b.add_group(name);
        let at = pos(&node);
        let entries = match node.value {
            Raw::Null => return,
            Raw::Map(entries) => entries,
            other => {
                return self.error(
                    at,
                    format!(
                        "group `{name}` must be a mapping with `hosts`, `vars` or `children`, found a {}",
                        other.kind()
                    ),
                    "write `hosts:`, `vars:` and `children:` as keys under the group",
                );
            }
        };
        for (key, value) in entries {
            let Some(k) = self.key_text(&key) else {
                continue;
            };
            match k.as_str() {
                "hosts" => self.hosts(b, name, value),
                "vars" => {
                    let Some(entries) = self.section_map(name, "vars", value) else {
                        continue;
                    };
                    self.vars(entries, |k, v| {
                        b.set_group_var(name, k, v).map_err(|m| {
                            (m, "use a whole number, e.g. `ansible_group_priority: 10`")
                        })
                    });
                }
                "children" => {
                    let Some(entries) = self.section_map(name, "children", value) else {
                        continue;
                    };
                    for (child_key, child) in entries {
                        let Some(child_name) = self.key_text(&child_key) else {
                            continue;
                        };
                        self.group(b, &child_name, child);
                        if let Err((msg, hint)) = b.add_child(name, &child_name) {
                            self.error(pos(&child_key), msg, hint);
                        }
                    }
                }
                other => {
                    let hint = match closest(other, &GROUP_KEYS) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => "a group can only have `hosts`, `vars` and `children`".into(),
                    };
                    self.error(
                        pos(&key),
                        format!("unknown key `{other}` in group `{name}`"),
                        hint,
                    );
                }
            }
        }
    }

    /// `hosts:` — host patterns, each with a mapping of variables or nothing.
    fn hosts(&mut self, b: &mut Builder, group: &str, node: Node) {
        let Some(entries) = self.section_map(group, "hosts", node) else {
            return;
        };
        for (key, value) in entries {
            let Some(pattern) = self.key_text(&key) else {
                continue;
            };
            let (hosts, port) = match expand_host_pattern(&pattern) {
                Ok(x) => x,
                Err(msg) => {
                    let hint = "host ranges look like `node[01:20]`, `node[a:f]` or `node[1:9:2]`";
                    self.error(pos(&key), msg, hint);
                    continue;
                }
            };
            let mut vars = Vec::new();
            let at = pos(&value);
            match value.value {
                Raw::Null => {}
                Raw::Map(entries) => self.vars(entries, |k, v| {
                    let empty = v.is_null() || v.as_str().is_some_and(str::is_empty);
                    if matches!(k, "ansible_host" | "ansible_ssh_host") && empty {
                        return Err((
                            format!("`{k}` is empty: host `{pattern}` has no address"),
                            "give the address (`ansible_host: 10.0.0.1`), or drop the variable to use the host name",
                        ));
                    }
                    vars.push((k.to_string(), v));
                    Ok(())
                }),
                other => {
                    self.error(
                        at,
                        format!(
                            "variables of host `{pattern}` must be a mapping, found a {}",
                            other.kind()
                        ),
                        format!("write `{pattern}:` alone, or with `name: value` lines under it"),
                    );
                    continue;
                }
            }
            for h in &hosts {
                b.add_host(group, h);
                if let Some(port) = port {
                    b.set_host_var(h, "ansible_port", Value::from(port));
                }
                for (k, v) in &vars {
                    b.set_host_var(h, k, v.clone());
                }
            }
        }
    }

    /// The entries of a group's `hosts`/`vars`/`children` section; a bare string `x` means
    /// `{x: null}` (as Ansible allows), `null` means none.
    fn section_map(&mut self, group: &str, section: &str, node: Node) -> Option<Vec<(Node, Node)>> {
        let at = pos(&node);
        match node.value {
            Raw::Null => None,
            Raw::Map(entries) => Some(entries),
            Raw::Str(s) => {
                let (referenced, defined) = (node.referenced, node.defined);
                let key = Spanned {
                    value: Raw::Str(s),
                    referenced,
                    defined,
                };
                let value = Spanned {
                    value: Raw::Null,
                    referenced,
                    defined,
                };
                Some(vec![(key, value)])
            }
            other => {
                let hint = match section {
                    "vars" => "write one `name: value` per line under `vars:`".to_string(),
                    _ => format!(
                        "list each name as a key under `{section}:`, e.g. `{section}: {{a: , b: }}`"
                    ),
                };
                self.error(
                    at,
                    format!(
                        "`{section}` of group `{group}` must be a mapping, found a {}",
                        other.kind()
                    ),
                    hint,
                );
                None
            }
        }
    }

    /// Converts each `name: value` entry and hands it to `set`; bad entries are reported.
    fn vars(
        &mut self,
        entries: Vec<(Node, Node)>,
        mut set: impl FnMut(&str, Value) -> Result<(), (String, &'static str)>,
    ) {
        for (key, value) in entries {
            let Some(k) = self.key_text(&key) else {
                continue;
            };
            let at = pos(&value);
            match self.json_value(value) {
                Ok(v) => {
                    if let Err((msg, hint)) = set(&k, v) {
                        self.error(at, msg, hint);
                    }
                }
                Err((p, msg)) => self.error(p, msg, "use a string key"),
            }
        }
    }

    /// A mapping key as text: strings as they are, other scalars as written in the file.
    fn key_text(&mut self, key: &Node) -> Option<String> {
        match &key.value {
            Raw::Str(s) => Some(s.clone()),
            Raw::Seq(_) | Raw::Map(_) => {
                let msg = format!("a {} cannot be used as a key here", key.value.kind());
                self.error(pos(key), msg, "use a plain name as the key");
                None
            }
            other => Some(self.scalar_text(key).map(str::to_string).unwrap_or_else(
                || match other {
                    Raw::Bool(b) => b.to_string(),
                    Raw::Int(n) => n.to_string(),
                    Raw::UInt(n) => n.to_string(),
                    Raw::Float(f) => f.to_string(),
                    _ => "null".to_string(),
                },
            )),
        }
    }

    /// The source text of a scalar node (where it is defined, for aliases).
    fn scalar_text(&self, node: &Node) -> Option<&'a str> {
        let span = node.defined.span();
        let start = usize::try_from(span.byte_offset()?).ok()?;
        let len = usize::try_from(span.byte_len()?).ok()?;
        self.source.get(start..start.checked_add(len)?)
    }

    /// A value as JSON. Booleans follow YAML 1.1 as PyYAML (Ansible) reads it: `y`/`n` and
    /// odd casings stay strings.
    fn json_value(&mut self, node: Node) -> Result<Value, (Pos, String)> {
        Ok(match node.value {
            Raw::Null => Value::Null,
            Raw::Bool(b) => match self.scalar_text(&node) {
                Some(t) if !is_pyyaml_bool(t) => Value::String(t.to_string()),
                _ => Value::Bool(b),
            },
            Raw::Int(n) => Value::from(n),
            Raw::UInt(n) => Value::from(n),
            Raw::Float(f) => serde_json::Number::from_f64(f)
                .map(Value::Number)
                .unwrap_or_else(|| Value::String(f.to_string())),
            Raw::Str(s) => Value::String(s),
            Raw::Seq(items) => Value::Array(
                items
                    .into_iter()
                    .map(|i| self.json_value(i))
                    .collect::<Result<_, _>>()?,
            ),
            Raw::Map(entries) => {
                let mut map = serde_json::Map::new();
                for (k, v) in entries {
                    if matches!(k.value, Raw::Seq(_) | Raw::Map(_)) {
                        let msg = format!("a {} cannot be used as a mapping key", k.value.kind());
                        return Err((pos(&k), msg));
                    }
                    let key = self.key_text(&k).unwrap_or_default();
                    map.insert(key, self.json_value(v)?);
                }
                Value::Object(map)
            }
        })
    }
}

fn is_pyyaml_bool(text: &str) -> bool {
    matches!(
        text,
        "yes"
            | "Yes"
            | "YES"
            | "no"
            | "No"
            | "NO"
            | "true"
            | "True"
            | "TRUE"
            | "false"
            | "False"
            | "FALSE"
            | "on"
            | "On"
            | "ON"
            | "off"
            | "Off"
            | "OFF"
    )
}

/// A serde-saphyr error as a diagnostic at its position, with a hint for budget breaches.
fn yaml_error(file: &Path, source: &str, err: &YamlError) -> Diagnostic {
    let mut inner = err;
    while let YamlError::AliasError { error, .. } | YamlError::WithSnippet { error, .. } = inner {
        inner = error;
    }
    let msg: String = serde_saphyr::UserMessageFormatter
        .format_message(inner)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let d = match err.location().filter(|l| l.line() > 0) {
        Some(l) => {
            let p = Pos {
                line: usize::try_from(l.line()).unwrap_or(0),
                col: usize::try_from(l.column()).unwrap_or(0),
            };
            Diagnostic::at(file, source, p, msg)
        }
        None => Diagnostic::file(file, msg),
    };
    let over_budget = matches!(
        inner,
        YamlError::Budget { .. }
            | YamlError::AliasReplayLimitExceeded { .. }
            | YamlError::AliasExpansionLimitExceeded { .. }
            | YamlError::AliasReplayStackDepthExceeded { .. }
    );
    if over_budget {
        d.with_hint(
            "the file is too big, too deeply nested or expands too many aliases \
             (limits guard against alias bombs)",
        )
    } else {
        d
    }
}

/// The candidate within edit distance 2 of `word`, if any.
fn closest<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
#[path = "yaml_tests.rs"]
mod tests;
