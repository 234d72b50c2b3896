//! Host patterns in inventory files: `name`, `name:port`, `node[01:20]`, `[ipv6]:port`,
//! expanded within the limits that keep a typo from naming millions of hosts.

#[allow(unused_imports)]
use super::*;

// ---------------------------------------------------------------------------------------------
// Host patterns in inventory files: `name`, `name:port`, `node[01:20]`, `[ipv6]:port`

/// At most this many hosts from one host pattern (protects against `h[0:999999999]`).
pub(super) const MAX_RANGE_HOSTS: usize = 100_000;

/// At most this many hosts in one inventory (three such ranges would be 300,000).
pub const MAX_INVENTORY_HOSTS: usize = 100_000;

/// Splits an optional `:port` off a host pattern and expands its `[a:b(:step)]` ranges.
/// The error is a message about `pattern` as a whole.
pub(super) fn expand_host_pattern(pattern: &str) -> Result<(Vec<String>, Option<u16>), String> {
    let (base, port) = split_port(pattern)?;
    let hosts = if base.contains('[') {
        expand_ranges(base)?
    } else {
        vec![base.to_string()]
    };
    if let Some(h) = hosts.iter().find(|h| h.is_empty()) {
        return Err(format!("invalid host name `{h}` in `{pattern}`"));
    }
    Ok((hosts, port))
}

/// `host:22` and `[addr]:22` carry a port; a bare IPv6 address (several colons) does not.
pub(super) fn split_port(pattern: &str) -> Result<(&str, Option<u16>), String> {
    let mut depth = 0usize;
    let mut colons = Vec::new();
    for (i, c) in pattern.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            ':' if depth == 0 => colons.push(i),
            _ => {}
        }
    }
    let [colon] = colons[..] else {
        return Ok((pattern, None));
    };
    let (base, port) = (&pattern[..colon], &pattern[colon + 1..]);
    if port.is_empty() || !port.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "invalid host `{pattern}`: expected `host` or `host:port`"
        ));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("invalid port `{port}` in `{pattern}` (must be 0-65535)"))?;
    let base = match base.strip_prefix('[').and_then(|b| b.strip_suffix(']')) {
        Some(inner) if inner.matches(':').count() >= 2 => inner,
        _ => base,
    };
    Ok((base, Some(port)))
}

/// Expands every `[begin:end(:step)]` range in `name`, as Ansible's `expand_hostname_range`.
pub(super) fn expand_ranges(name: &str) -> Result<Vec<String>, String> {
    let Some(open) = name.find('[') else {
        return Ok(vec![name.to_string()]);
    };
    let Some(len) = name[open..].find(']') else {
        return Err(format!("unterminated host range in `{name}`"));
    };
    let (head, range, tail) = (
        &name[..open],
        &name[open + 1..open + len],
        &name[open + len + 1..],
    );
    let values = range_values(range).map_err(|e| format!("{e} in `{name}`"))?;
    let tails = expand_ranges(tail)?;
    if values.len().saturating_mul(tails.len()) > MAX_RANGE_HOSTS {
        return Err(format!(
            "host range `{name}` expands to more than {MAX_RANGE_HOSTS} hosts"
        ));
    }
    let mut out = Vec::with_capacity(values.len() * tails.len());
    for v in &values {
        for t in &tails {
            out.push(format!("{head}{v}{t}"));
        }
    }
    Ok(out)
}

/// The values of one range body `begin:end` or `begin:end:step`.
pub(super) fn range_values(range: &str) -> Result<Vec<String>, String> {
    const LETTERS: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let bounds: Vec<&str> = range.split(':').collect();
    let (beg, end, step) = match bounds[..] {
        [b, e] => (b, e, "1"),
        [b, e, s] => (b, e, s),
        _ => return Err("host range must be begin:end or begin:end:step".into()),
    };
    let beg = if beg.is_empty() { "0" } else { beg };
    if end.is_empty() {
        return Err("host range must specify an end value".into());
    }
    let step: usize = match step.parse() {
        Ok(s) if s > 0 => s,
        _ => {
            return Err(format!(
                "host range step `{step}` must be a positive number"
            ));
        }
    };
    if let (Some(b), Some(e)) = (single_letter(beg, LETTERS), single_letter(end, LETTERS)) {
        if b > e {
            return Err("host range must have begin <= end".into());
        }
        return Ok(LETTERS[b..=e]
            .chars()
            .step_by(step)
            .map(String::from)
            .collect());
    }
    let width = if beg.len() > 1 && beg.starts_with('0') {
        if beg.len() != end.len() {
            return Err("host range must specify equal-length begin and end formats".into());
        }
        beg.len()
    } else {
        0
    };
    let parse = |s: &str| -> Result<u64, String> {
        s.parse()
            .map_err(|_| format!("host range bound `{s}` is not a number or a single letter"))
    };
    let (b, e) = (parse(beg)?, parse(end)?);
    if b > e {
        return Err("host range must have begin <= end".into());
    }
    let count = (e - b) / step as u64 + 1;
    if count > MAX_RANGE_HOSTS as u64 {
        return Err(format!(
            "host range expands to more than {MAX_RANGE_HOSTS} hosts"
        ));
    }
    Ok((b..=e)
        .step_by(step)
        .map(|n| format!("{n:0width$}"))
        .collect())
}

pub(super) fn single_letter(s: &str, letters: &str) -> Option<usize> {
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if c.is_ascii_alphabetic() => letters.find(c),
        _ => None,
    }
}
