//! INI inventory reader: Ansible's `[group]`, `[group:vars]` and `[group:children]` sections,
//! host lines with shell-like `key=value` variables, host ranges and `host:port`.

use super::{Builder, expand_host_pattern};
use crate::diag::{Diagnostic, Pos};
use serde_json::Value;
use std::collections::HashSet;
use std::path::Path;

/// What the lines of the current section are.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Hosts,
    Vars,
    Children,
    /// After a broken section header: ignore lines until the next header.
    Skip,
}

/// Reads an INI inventory into `b`; returns every problem found (it keeps going after one).
pub(super) fn parse(file: &Path, source: &str, b: &mut Builder) -> Vec<Diagnostic> {
    let mut p = Parser {
        file,
        source,
        diags: Vec::new(),
    };
    let mut group = "ungrouped".to_string();
    let mut state = State::Hosts;
    // Groups declared by a section or as a child; `[g:vars]` of any other group is an error.
    let mut declared: HashSet<String> = HashSet::from(["all".into(), "ungrouped".into()]);
    let mut vars_sections: Vec<(String, Pos)> = Vec::new();
    // (child, parent, where) of every `[parent:children]` entry.
    let mut child_refs: Vec<(String, String, Pos)> = Vec::new();

    for (i, raw) in source.lines().enumerate() {
        let line_no = i + 1;
        let lead = raw.chars().take_while(|c| c.is_whitespace()).count();
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let at = |col: usize| Pos {
            line: line_no,
            col: lead + col,
        };
        if line.starts_with('[') {
            match parse_header(line) {
                Header::Section {
                    name,
                    kind,
                    kind_col,
                } => {
                    state = match kind {
                        None | Some("hosts") => State::Hosts,
                        Some("vars") => State::Vars,
                        Some("children") => State::Children,
                        Some(other) => {
                            p.error(
                                at(kind_col),
                                format!("unknown section type `{other}` in `[{name}:{other}]`"),
                                "sections are `[group]`, `[group:vars]` or `[group:children]`",
                            );
                            State::Skip
                        }
                    };
                    group = name.to_string();
                    match state {
                        State::Hosts | State::Children => {
                            declared.insert(group.clone());
                            b.add_group(&group);
                        }
                        State::Vars => vars_sections.push((group.clone(), at(1))),
                        State::Skip => {}
                    }
                    continue;
                }
                Header::Invalid => {
                    p.error(
                        at(1),
                        format!("invalid section header `{line}`"),
                        "sections are `[group]`, `[group:vars]` or `[group:children]`; \
                         group names cannot contain spaces, `:` or `]`",
                    );
                    state = State::Skip;
                    continue;
                }
                // `[2001:db8::1]:22 ...` is a host line.
                Header::HostLine => {}
            }
        }
        match state {
            State::Hosts => p.host_line(line, lead, line_no, &group, b),
            State::Vars => p.var_line(line, lead, line_no, &group, b),
            State::Children => {
                let name = line.split('#').next().unwrap_or("").trim();
                let valid = !name.is_empty()
                    && !name.contains(|c: char| c.is_whitespace() || c == ':' || c == ']');
                if !valid {
                    p.error(
                        at(1),
                        format!("invalid group name `{line}` in `[{group}:children]`"),
                        "list one child group name per line",
                    );
                    continue;
                }
                child_refs.push((name.to_string(), group.clone(), at(1)));
                if let Err((msg, hint)) = b.add_child(&group, name) {
                    p.error(at(1), msg, hint);
                }
            }
            State::Skip => {}
        }
    }

    // As Ansible: a child group no `[child]` or `[child:children]` section declares is an
    // error, not an empty group (a typo would leave hosts out of the parent).
    for (child, parent, pos) in child_refs {
        if !declared.contains(&child) {
            p.error(
                pos,
                format!("`[{parent}:children]` includes the undefined group `{child}`"),
                format!(
                    "declare it (an empty `[{child}]` section will do), or fix the name; Ansible refuses this file too"
                ),
            );
        }
    }
    for (group, pos) in vars_sections {
        if !declared.contains(&group) {
            p.error(
                pos,
                format!("section `[{group}:vars]` is for an undefined group `{group}`"),
                format!(
                    "declare the group with a `[{group}]` section or list it under a `:children` section"
                ),
            );
        }
    }
    p.diags
}

struct Parser<'a> {
    file: &'a Path,
    source: &'a str,
    diags: Vec<Diagnostic>,
}

impl Parser<'_> {
    fn error(&mut self, pos: Pos, msg: impl Into<String>, hint: impl Into<String>) {
        self.diags
            .push(Diagnostic::at(self.file, self.source, pos, msg).with_hint(hint));
    }

    /// `name[:port] key=value key2="quoted value" # comment`
    fn host_line(&mut self, line: &str, lead: usize, line_no: usize, group: &str, b: &mut Builder) {
        let at = |col: usize| Pos {
            line: line_no,
            col: lead + col,
        };
        let tokens = match shell_split(line) {
            Ok(t) => t,
            Err((col, msg)) => {
                let hint = "close the quote, or escape it with a backslash";
                return self.error(at(col), msg, hint);
            }
        };
        let Some((first, rest)) = tokens.split_first() else {
            return;
        };
        if first.text.contains('=') && !first.text.starts_with('[') {
            return self.error(
                at(first.col),
                format!(
                    "a host line starts with its host name, found `{}`",
                    first.text
                ),
                "write `NAME key=value ...` (e.g. `node-1 ansible_host=10.0.0.1`)",
            );
        }
        let (hosts, port) = match expand_host_pattern(&first.text) {
            Ok(x) => x,
            Err(msg) => {
                let hint = "host ranges look like `node[01:20]`, `node[a:f]` or `node[1:9:2]`";
                return self.error(at(first.col), msg, hint);
            }
        };
        let mut vars = Vec::new();
        let mut ok = true;
        for t in rest {
            let Some(eq) = t.text.find('=') else {
                self.error(
                    at(t.col),
                    format!("expected key=value host variable, found `{}`", t.text),
                    "host variables are written `key=value` (quote values with spaces: key=\"a b\")",
                );
                ok = false;
                continue;
            };
            if eq == 0 {
                self.error(
                    at(t.col),
                    format!("missing variable name in `{}`", t.text),
                    "host variables are written `key=value`",
                );
                ok = false;
                continue;
            }
            let key = &t.text[..eq];
            if matches!(key, "ansible_host" | "ansible_ssh_host") && t.text.len() == eq + 1 {
                self.error(
                    at(t.col),
                    format!("`{key}` is empty: host `{}` has no address", first.text),
                    "give the address (`ansible_host=10.0.0.1`), or drop the variable to use the host name",
                );
                ok = false;
                continue;
            }
            // As Ansible: the word, its quotes removed, read as a Python literal
            // (`quoted='42'` is 42, `labels='{"a": "b"}'` a dict), else the text.
            let text = &t.text[eq + 1..];
            let value = super::pylit::eval(text).unwrap_or_else(|| Value::String(text.into()));
            vars.push((t.text[..eq].to_string(), value));
        }
        if !ok {
            return;
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

    /// `key=value` in a `[group:vars]` section: the value is the rest of the line, read as a
    /// Python literal where it is one (quoted string, int, float, True/False).
    fn var_line(&mut self, line: &str, lead: usize, line_no: usize, group: &str, b: &mut Builder) {
        let at = Pos {
            line: line_no,
            col: lead + 1,
        };
        let Some((key, raw)) = line.split_once('=') else {
            let msg = format!("expected key=value in `[{group}:vars]`, found `{line}`");
            return self.error(
                at,
                msg,
                "group variables are written `key=value`, one per line",
            );
        };
        let key = key.trim();
        if key.is_empty() {
            let msg = format!("missing variable name in `{line}`");
            return self.error(
                at,
                msg,
                "group variables are written `key=value`, one per line",
            );
        }
        if let Err(msg) = b.set_group_var(group, key, var_value(raw.trim())) {
            let before = line.len() - raw.trim_start().len();
            let value_at = Pos {
                line: line_no,
                col: lead + line[..before].chars().count() + 1,
            };
            self.error(
                value_at,
                msg,
                "use a whole number, e.g. ansible_group_priority=10",
            );
        }
    }
}

enum Header<'a> {
    Section {
        name: &'a str,
        kind: Option<&'a str>,
        /// 1-based column of `kind` in the trimmed line.
        kind_col: usize,
    },
    Invalid,
    HostLine,
}

/// Ansible's `^\[([^:\]\s]+)(?::(\w+))?\]\s*(?:\#.*)?$`; a line that starts with `[` but does
/// not end with `]` is not a header (it may be a `[ipv6]:port` host).
fn parse_header(line: &str) -> Header<'_> {
    let inner = &line[1..];
    let name_len = inner
        .find(|c: char| c == ':' || c == ']' || c.is_whitespace())
        .unwrap_or(inner.len());
    let name = &inner[..name_len];
    let mut rest = &inner[name_len..];
    let mut kind = None;
    let mut kind_col = 0;
    if let Some(after) = rest.strip_prefix(':') {
        let len = after
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        kind = Some(&after[..len]);
        kind_col = 1 + name.chars().count() + 2;
        rest = &after[len..];
    }
    let tail = rest.strip_prefix(']').map(str::trim_start);
    let valid = !name.is_empty()
        && kind.is_none_or(|k| !k.is_empty())
        && tail.is_some_and(|t| t.is_empty() || t.starts_with('#'));
    if valid {
        Header::Section {
            name,
            kind,
            kind_col,
        }
    } else if line
        .split('#')
        .next()
        .unwrap_or("")
        .trim_end()
        .ends_with(']')
    {
        Header::Invalid
    } else {
        Header::HostLine
    }
}

/// One word of a host line.
#[derive(Debug)]
struct Token {
    text: String,
    /// 1-based column of the token's first character in the trimmed line.
    col: usize,
    /// Byte length of `text` when its last quoted part ended (0 if never quoted): the value
    /// of `key="v"` is quoted when this is past the `=`.
    quoted_after: usize,
}

/// POSIX shell-like splitting as Python's `shlex.split(line, comments=True)`: whitespace
/// separates words, `'...'` is literal, `"..."` allows `\"` and `\\`, a backslash outside
/// quotes escapes the next character, `#` outside quotes starts a comment.
/// Errors carry the 1-based column of the problem.
fn shell_split(line: &str) -> Result<Vec<Token>, (usize, String)> {
    let chars: Vec<char> = line.chars().collect();
    let mut tokens: Vec<Token> = Vec::new();
    let mut cur: Option<Token> = None;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        if c.is_whitespace() {
            tokens.extend(cur.take());
            i += 1;
            continue;
        }
        if c == '#' {
            break;
        }
        let tok = cur.get_or_insert_with(|| Token {
            text: String::new(),
            col,
            quoted_after: 0,
        });
        match c {
            '\\' => {
                let Some(&next) = chars.get(i + 1) else {
                    return Err((col, "trailing backslash escapes nothing".into()));
                };
                tok.text.push(next);
                i += 2;
            }
            '\'' | '"' => {
                let mut j = i + 1;
                loop {
                    let Some(&q) = chars.get(j) else {
                        return Err((col, format!("unterminated {c} quote")));
                    };
                    if q == c {
                        break;
                    }
                    if c == '"' && q == '\\' && matches!(chars.get(j + 1), Some('"' | '\\')) {
                        j += 1;
                    }
                    tok.text.push(chars[j]);
                    j += 1;
                }
                tok.quoted_after = tok.text.len() + 1;
                i = j + 1;
            }
            _ => {
                tok.text.push(c);
                i += 1;
            }
        }
    }
    tokens.extend(cur);
    Ok(tokens)
}

/// A `[group:vars]` value: a Python literal (optionally followed by a `#` comment, which
/// Python's `literal_eval` ignores), else the raw text.
fn var_value(raw: &str) -> Value {
    if let Some(v) = super::pylit::eval(raw) {
        return v;
    }
    if let Some(hash) = comment_start(raw) {
        let before = raw[..hash].trim();
        if let Some(v) = super::pylit::eval(before) {
            return v;
        }
    }
    Value::String(raw.to_string())
}

/// Byte index of the first `#` outside quotes.
fn comment_start(s: &str) -> Option<usize> {
    let mut quote = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '#') => return Some(i),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
#[path = "ini_tests.rs"]
mod tests;
