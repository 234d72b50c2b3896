//! `--limit` host patterns, Ansible's pattern language: `all`/`*`, host and group names,
//! globs, `~regex`, unions (`a:b`, `a,b`), `&` intersections, `!` exclusions, `[i]`/`[a:b]`
//! subscripts and `@file` lists.

use super::{Host, Inventory};
use std::collections::HashSet;
use std::io::Read;

/// `@file` limit lists larger than this are refused.
const MAX_LIMIT_FILE_BYTES: u64 = 1024 * 1024;

/// The hosts `limit` selects (all when `None`), in inventory order. Ansible's evaluation:
/// unions first (in order), then intersections, then exclusions; a pattern with only
/// intersections/exclusions starts from `all`.
pub(super) fn select<'a>(inv: &'a Inventory, limit: Option<&str>) -> Result<Vec<&'a Host>, String> {
    select_warn(inv, limit).map(|(hosts, _)| hosts)
}

/// [`select`], and a warning for each union term that matches no host (as Ansible's
/// "Could not match supplied host pattern"). Stricter than Ansible where it would widen
/// the selection: a malformed pattern (an unclosed `[`, a stray `]`) and an exclusion
/// that matches no host (a typo there keeps the host it meant to leave out) are errors.
pub(super) fn select_warn<'a>(
    inv: &'a Inventory,
    limit: Option<&str>,
) -> Result<(Vec<&'a Host>, Vec<String>), String> {
    let Some(limit) = limit else {
        return Ok((inv.hosts.iter().collect(), Vec::new()));
    };
    let mut terms = Vec::new();
    for term in split_pattern(limit)? {
        match term.strip_prefix('@') {
            Some(file) => terms.extend(read_limit_file(file)?),
            None => terms.push(term),
        }
    }
    if terms.is_empty() {
        return Err(format!("empty --limit pattern '{limit}'"));
    }
    let (mut unions, mut intersections, mut exclusions) = (Vec::new(), Vec::new(), Vec::new());
    for t in &terms {
        if let Some(rest) = t.strip_prefix('&') {
            intersections.push(rest);
        } else if let Some(rest) = t.strip_prefix('!') {
            exclusions.push(rest);
        } else {
            unions.push(t.as_str());
        }
    }
    if unions.is_empty() {
        unions.push("all");
    }

    for t in &terms {
        check_brackets(limit, t)?;
    }
    let mut warnings = Vec::new();
    let mut selected = vec![false; inv.hosts.len()];
    for p in unions {
        let m = match_term(inv, p)?;
        if !m.iter().any(|x| *x) {
            // `node1:22`: `:` separates patterns, so this is node1 OR a host named 22.
            if !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()) {
                return Err(format!(
                    "--limit '{limit}': '{p}' matches no host, and looks like a port: `:` separates patterns, it does not give a port\n  = hint: name the host alone (its port comes from the inventory: ansible_port or `host:port` on its line)"
                ));
            }
            warnings.push(format!("--limit: '{p}' matches no host; it is ignored"));
        }
        for (s, m) in selected.iter_mut().zip(m) {
            *s |= m;
        }
    }
    for p in intersections {
        for (s, m) in selected.iter_mut().zip(match_term(inv, p)?) {
            *s &= m;
        }
    }
    for p in exclusions {
        let m = match_term(inv, p)?;
        if !m.iter().any(|x| *x) {
            return Err(format!(
                "--limit: the exclusion '!{p}' matches no host, so it would leave out nothing\n  = hint: check the name (a typo here widens the selection); or drop the exclusion"
            ));
        }
        for (s, m) in selected.iter_mut().zip(m) {
            *s &= !m;
        }
    }
    let hosts: Vec<&Host> = inv
        .hosts
        .iter()
        .zip(selected)
        .filter_map(|(h, s)| s.then_some(h))
        .collect();
    if hosts.is_empty() {
        return Err(format!("no hosts matched --limit '{limit}'"));
    }
    Ok((hosts, warnings))
}

/// Brackets in a name or glob term must pair up: `web[1` or `web]` is a typo that
/// Ansible would quietly read as something wider. (A `~regex` term is checked by the
/// regex parser.)
fn check_brackets(limit: &str, term: &str) -> Result<(), String> {
    let t = term.trim_start_matches(['&', '!']);
    if t.starts_with('~') {
        return Ok(());
    }
    let mut open = false;
    for c in t.chars() {
        match c {
            '[' if open => return Err(malformed(limit, &format!("'{t}' opens '[' twice"))),
            '[' => open = true,
            ']' if !open => return Err(malformed(limit, &format!("'{t}' has a ']' with no '['"))),
            ']' => open = false,
            _ => {}
        }
    }
    if open {
        return Err(malformed(
            limit,
            &format!("'{t}' has a '[' that is never closed"),
        ));
    }
    Ok(())
}

fn malformed(limit: &str, what: &str) -> String {
    format!(
        "malformed --limit pattern '{limit}': {what}\n  = hint: a subscript is NAME[i], NAME[a:b] or NAME[a:] (quote the pattern for the shell); nothing was selected"
    )
}

/// Ansible's `split_host_pattern`: commas separate if there are any; otherwise colons do,
/// except inside `[...]` and in a bare IPv6 address.
fn split_pattern(pattern: &str) -> Result<Vec<String>, String> {
    let parts: Vec<String> = if pattern.contains(',') {
        pattern.split(',').map(String::from).collect()
    } else if is_ipv6(pattern.trim()) {
        vec![pattern.to_string()]
    } else {
        let mut parts = Vec::new();
        let mut cur = String::new();
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                ':' => parts.push(std::mem::take(&mut cur)),
                ']' => return Err(malformed(pattern, "a ']' with no '['")),
                c if c.is_whitespace() => parts.push(std::mem::take(&mut cur)),
                '[' => {
                    let rest: String = chars.clone().collect();
                    match rest.find(']') {
                        Some(end) => {
                            cur.push('[');
                            cur.push_str(&rest[..=end]);
                            for _ in 0..rest[..=end].chars().count() {
                                chars.next();
                            }
                        }
                        None => return Err(malformed(pattern, "a '[' that is never closed")),
                    }
                }
                c => cur.push(c),
            }
        }
        parts.push(cur);
        parts
    };
    Ok(parts
        .into_iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect())
}

fn is_ipv6(s: &str) -> bool {
    s.matches(':').count() >= 2
        && s.chars()
            .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
}

/// The non-empty, trimmed lines of an `@file` (e.g. an Ansible `.retry` file).
fn read_limit_file(file: &str) -> Result<Vec<String>, String> {
    let cannot = |e: std::io::Error| format!("cannot read --limit file '{file}': {e}");
    let mut bytes = Vec::new();
    std::fs::File::open(file)
        .and_then(|f| f.take(MAX_LIMIT_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_LIMIT_FILE_BYTES {
        return Err(format!("--limit file '{file}' is larger than 1 MiB"));
    }
    let text =
        String::from_utf8(bytes).map_err(|_| format!("--limit file '{file}' is not UTF-8"))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

/// Which hosts (by inventory index) one term without its `&`/`!` prefix matches.
fn match_term(inv: &Inventory, term: &str) -> Result<Vec<bool>, String> {
    if term.is_empty() {
        return Err("empty pattern after '&' or '!' in --limit".into());
    }
    // A plain host name is never reinterpreted (as a glob or subscript).
    if inv.host(term).is_some() {
        return Ok(inv.hosts.iter().map(|h| h.name == term).collect());
    }
    let (expr, subscript) = split_subscript(term);
    let matcher = Matcher::new(expr)?;
    let groups: HashSet<&str> = inv
        .groups
        .keys()
        .map(String::as_str)
        .filter(|g| matcher.is_match(g))
        .collect();
    let by_name = groups.is_empty() || expr.starts_with('~') || expr.contains(['.', '?', '*', '[']);
    let mut mask: Vec<bool> = inv
        .hosts
        .iter()
        .map(|h| {
            h.groups.iter().any(|g| groups.contains(g.as_str()))
                || (by_name && matcher.is_match(&h.name))
        })
        .collect();
    if let Some(sub) = subscript {
        let matched: Vec<usize> = (0..mask.len()).filter(|i| mask[*i]).collect();
        let picked = sub
            .apply(&matched)
            .ok_or_else(|| format!("no hosts matched the subscripted pattern '{term}'"))?;
        mask = vec![false; mask.len()];
        for i in picked {
            mask[i] = true;
        }
    }
    Ok(mask)
}

/// `web[0]`, `web[-1]`, `web[1:3]` (inclusive), `web[2:]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Subscript {
    Index(i64),
    Range(usize, Option<usize>),
}

impl Subscript {
    /// The picked items, or `None` for an index out of range (as Ansible's `IndexError`).
    fn apply(self, items: &[usize]) -> Option<Vec<usize>> {
        let n = items.len();
        match self {
            Subscript::Index(i) => {
                let idx = if i < 0 {
                    n.checked_sub(usize::try_from(i.unsigned_abs()).ok()?)?
                } else {
                    usize::try_from(i).ok()?
                };
                items.get(idx).map(|h| vec![*h])
            }
            // Python: `end == 0` is falsy, so `[x:0]` picks the single item `x`.
            Subscript::Range(start, Some(0)) => items.get(start).map(|h| vec![*h]),
            Subscript::Range(start, end) => {
                let end = end.unwrap_or(n.saturating_sub(1)).min(n.saturating_sub(1));
                Some(
                    items
                        .get(start..=end)
                        .map(<[usize]>::to_vec)
                        .unwrap_or_default(),
                )
            }
        }
    }
}

/// Ansible's `PATTERN_WITH_SUBSCRIPT` (not applied to `~regex`).
fn split_subscript(term: &str) -> (&str, Option<Subscript>) {
    if term.starts_with('~') || !term.ends_with(']') {
        return (term, None);
    }
    let Some(open) = term.rfind('[') else {
        return (term, None);
    };
    let (head, inner) = (&term[..open], &term[open + 1..term.len() - 1]);
    if head.is_empty() {
        return (term, None);
    }
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    let index = inner.strip_prefix('-').unwrap_or(inner);
    if digits(index) {
        return match inner.parse() {
            Ok(i) => (head, Some(Subscript::Index(i))),
            Err(_) => (term, None),
        };
    }
    if let Some(sep) = inner.find([':', '-']) {
        let (start, end) = (&inner[..sep], &inner[sep + 1..]);
        if digits(start) && (end.is_empty() || digits(end)) {
            let end = if end.is_empty() {
                Ok(None)
            } else {
                end.parse().map(Some)
            };
            if let (Ok(start), Ok(end)) = (start.parse(), end) {
                return (head, Some(Subscript::Range(start, end)));
            }
        }
    }
    (term, None)
}

/// A name matcher: `~regex` (anchored at the start, like Python's `re.match`) or a glob
/// (`*`, `?`, `[seq]`, `[!seq]`, matching the whole name, like `fnmatch`).
struct Matcher(regex::Regex);

impl Matcher {
    fn new(expr: &str) -> Result<Matcher, String> {
        let source = match expr.strip_prefix('~') {
            Some(re) => format!("^(?:{re})"),
            None => glob_to_regex(expr),
        };
        regex::RegexBuilder::new(&source)
            .size_limit(1 << 20)
            .build()
            .map(Matcher)
            .map_err(|e| {
                let text = e.to_string();
                let last = text.lines().last().unwrap_or("").trim();
                let detail = last.strip_prefix("error: ").unwrap_or(last).to_string();
                format!("invalid pattern '{expr}' in --limit: {detail}")
            })
    }

    fn is_match(&self, name: &str) -> bool {
        self.0.is_match(name)
    }
}

/// Python's `fnmatch.translate`.
fn glob_to_regex(glob: &str) -> String {
    let chars: Vec<char> = glob.chars().collect();
    let mut out = String::from("(?s)^(?:");
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' => out.push_str(".*"),
            '?' => out.push('.'),
            '[' => {
                let mut j = i;
                if chars.get(j) == Some(&'!') {
                    j += 1;
                }
                if chars.get(j) == Some(&']') {
                    j += 1;
                }
                while j < chars.len() && chars[j] != ']' {
                    j += 1;
                }
                if j >= chars.len() {
                    out.push_str(r"\[");
                    continue;
                }
                let class = &chars[i..j];
                out.push('[');
                let body = match class.first() {
                    Some('!') => {
                        out.push('^');
                        &class[1..]
                    }
                    _ => class,
                };
                for &c in body {
                    if c != '-' && c.is_ascii_punctuation() {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push(']');
                i = j + 1;
            }
            c => out.push_str(&regex::escape(&c.to_string())),
        }
    }
    out.push_str(")$");
    out
}

#[cfg(test)]
mod tests {
    use super::super::tests::{scratch, write};
    use super::*;

    fn inventory() -> Inventory {
        let dir = scratch("pattern");
        let path = write(
            &dir,
            "hosts",
            "bastion\n\
             [web]\nweb1\nweb2\nweb3\n\
             [db]\ndb1\ndb2\n\
             [staging]\nweb3\ndb2\n\
             [prod:children]\nweb\ndb\n\
             [v6]\n2001:db8::1\n",
        );
        Inventory::load(&path).unwrap()
    }

    fn names(inv: &Inventory, limit: &str) -> Result<String, String> {
        let hosts = inv.select(Some(limit))?;
        Ok(hosts
            .iter()
            .map(|h| h.name.as_str())
            .collect::<Vec<_>>()
            .join(" "))
    }

    #[test]
    fn every_pattern_form() {
        let inv = inventory();
        let all = "bastion web1 web2 web3 db1 db2 2001:db8::1";
        let cases = [
            ("all", all),
            ("*", all),
            ("web2", "web2"),
            ("db", "db1 db2"),
            ("prod", "web1 web2 web3 db1 db2"),
            ("ungrouped", "bastion"),
            ("web*", "web1 web2 web3"),
            ("w?b1", "web1"),
            ("we[a-c]?", "web1 web2 web3"),
            ("web[!12]", "web3"),
            ("prod*", "web1 web2 web3 db1 db2"),
            ("~web[13]", "web1 web3"),
            ("~(db|bast)", "bastion db1 db2"),
            ("db2:web1", "web1 db2"),
            ("db2,web1", "web1 db2"),
            ("db:web1:db", "web1 db1 db2"),
            ("prod:&staging", "web3 db2"),
            ("prod:!staging", "web1 web2 db1"),
            ("!staging:web", "web1 web2"),
            ("&web", "web1 web2 web3"),
            ("!prod", "bastion 2001:db8::1"),
            ("prod:!web:&staging", "db2"),
            ("web[0]", "web1"),
            ("web[-1]", "web3"),
            ("web[1:]", "web2 web3"),
            ("prod[1:2]", "web2 web3"),
            ("web[2:0]", "web3"),
            ("2001:db8::1", "2001:db8::1"),
            (" web1 , db1 ", "web1 db1"),
        ];
        for (limit, want) in cases {
            assert_eq!(names(&inv, limit).as_deref(), Ok(want), "limit {limit:?}");
        }
        assert_eq!(names(&inv, "web1").unwrap(), "web1");
        assert_eq!(inv.select(None).unwrap().len(), 7);
    }

    #[test]
    fn limit_file() {
        let inv = inventory();
        let dir = scratch("pattern-file");
        let file = write(&dir, "retry", "web2\n\n  db1  \n!bastion\n");
        let limit = format!("@{}", file.display());
        assert_eq!(names(&inv, &limit).unwrap(), "web2 db1");
        let limit = format!("@{}:&staging", file.display());
        assert_eq!(
            names(&inv, &limit).unwrap_err(),
            format!("no hosts matched --limit '{limit}'")
        );
        let missing = dir.join("missing");
        assert_eq!(
            names(&inv, &format!("@{}", missing.display())).unwrap_err(),
            format!(
                "cannot read --limit file '{}': No such file or directory (os error 2)",
                missing.display()
            )
        );
    }

    #[test]
    fn errors() {
        let inv = inventory();
        assert_eq!(
            names(&inv, "nosuch").unwrap_err(),
            "no hosts matched --limit 'nosuch'"
        );
        assert_eq!(
            names(&inv, "web:&db").unwrap_err(),
            "no hosts matched --limit 'web:&db'"
        );
        assert_eq!(
            names(&inv, "all:!all").unwrap_err(),
            "no hosts matched --limit 'all:!all'"
        );
        assert_eq!(names(&inv, "").unwrap_err(), "empty --limit pattern ''");
        assert_eq!(
            names(&inv, " , ").unwrap_err(),
            "empty --limit pattern ' , '"
        );
        assert_eq!(
            names(&inv, "web:!").unwrap_err(),
            "empty pattern after '&' or '!' in --limit"
        );
        assert_eq!(
            names(&inv, "web[7]").unwrap_err(),
            "no hosts matched the subscripted pattern 'web[7]'"
        );
        assert_eq!(
            names(&inv, "~web(").unwrap_err(),
            "invalid pattern '~web(' in --limit: unclosed group"
        );
    }

    #[test]
    fn splitting() {
        let split = |p: &str| split_pattern(p).unwrap();
        assert_eq!(split("a:b"), ["a", "b"]);
        assert_eq!(split("a:&b:!c"), ["a", "&b", "!c"]);
        assert_eq!(split("web[1:2]:db"), ["web[1:2]", "db"]);
        assert_eq!(split("a,b:c"), ["a", "b:c"]);
        assert_eq!(split("fe80::1"), ["fe80::1"]);
        assert_eq!(split("a b"), ["a", "b"]);
    }

    /// What Ansible reads as something wider (an unbalanced `[` dropped: the whole group,
    /// or everything) is an error here, and nothing is selected.
    #[test]
    fn malformed_patterns_select_nothing() {
        let inv = inventory();
        for limit in [
            "web[1",
            "all[",
            "~[",
            "web[0:",
            "web]",
            "web[1,db1",
            "db1,web[0",
            "web[[1]]",
        ] {
            let e = names(&inv, limit).unwrap_err();
            assert!(
                e.starts_with(&format!("malformed --limit pattern '{limit}'"))
                    || e.starts_with(&format!(
                        "invalid pattern '{}'",
                        limit.trim_start_matches(['&', '!'])
                    )),
                "{limit}: {e}"
            );
            if e.starts_with("malformed") {
                assert!(e.contains("hint: a subscript is NAME[i]"), "{e}");
            }
        }
    }

    /// `node1:22` is not a host and its port: refused, not read as node1 OR 22.
    #[test]
    fn a_port_in_a_limit_is_refused() {
        let inv =
            Inventory::parse(std::path::Path::new("h.ini"), "[k]\nnode1\nnode2\n").expect("valid");
        let e = select_warn(&inv, Some("node1:22")).expect_err("a port");
        assert!(e.contains("looks like a port"), "{e}");
        assert!(e.contains("hint:"), "{e}");
    }

    /// A union term that matches nothing warns (as Ansible); an exclusion that matches
    /// nothing is an error (a typo there would keep the host it meant to leave out).
    #[test]
    fn terms_that_match_nothing() {
        let inv = inventory();
        let (hosts, warnings) = select_warn(&inv, Some("web1,nosuch")).unwrap();
        assert_eq!(hosts.len(), 1);
        assert_eq!(
            warnings,
            ["--limit: 'nosuch' matches no host; it is ignored"]
        );
        let (_, none) = select_warn(&inv, Some("web1,db1")).unwrap();
        assert!(none.is_empty());
        let e = names(&inv, "prod:!web4").unwrap_err();
        assert!(
            e.starts_with("--limit: the exclusion '!web4' matches no host") && e.contains("hint:"),
            "{e}"
        );
    }

    #[test]
    fn subscripts_and_globs() {
        assert_eq!(
            split_subscript("web[3]"),
            ("web", Some(Subscript::Index(3)))
        );
        assert_eq!(
            split_subscript("web[-2]"),
            ("web", Some(Subscript::Index(-2)))
        );
        assert_eq!(
            split_subscript("web[1:4]"),
            ("web", Some(Subscript::Range(1, Some(4))))
        );
        assert_eq!(
            split_subscript("web[1-4]"),
            ("web", Some(Subscript::Range(1, Some(4))))
        );
        assert_eq!(
            split_subscript("web[2:]"),
            ("web", Some(Subscript::Range(2, None)))
        );
        assert_eq!(split_subscript("web[ab]"), ("web[ab]", None));
        assert_eq!(split_subscript("~w[0]"), ("~w[0]", None));
        assert_eq!(glob_to_regex("a*b?[!x-z]"), r"(?s)^(?:a.*b.[^x-z])$");
        assert_eq!(glob_to_regex("a[.b"), r"(?s)^(?:a\[\.b)$");
        assert_eq!(glob_to_regex("[]]"), r"(?s)^(?:[\]])$");
    }
}
