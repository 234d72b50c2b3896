//! Inventory: loads Ansible INI/YAML inventories plus `group_vars/` and `host_vars/`, merges
//! variables with Ansible's precedence, and selects hosts with `--limit` patterns.

mod ini;
mod pattern;
mod pylit;
mod yaml;

use crate::diag::Diagnostic;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Variables of a host or group, by name.
pub type Vars = BTreeMap<String, serde_json::Value>;

/// One inventory host with its group memberships and fully merged variables.
#[derive(Clone, Debug, PartialEq)]
pub struct Host {
    /// `inventory_hostname`.
    pub name: String,
    /// Every group the host belongs to, including parents via `children` and `all` (sorted).
    pub groups: Vec<String>,
    /// Merged variables, lowest to highest precedence: `all`'s inventory vars, other groups'
    /// inventory vars (by depth, `ansible_group_priority`, name), `group_vars/all`,
    /// `group_vars/<group>` (same order), the host's inventory vars, `host_vars/<host>`.
    pub vars: HostVars,
}

/// A host's variables: the merged group variables, shared (one copy per distinct set of
/// groups, not one per host: 100,000 hosts of one range hold one map), and the host's
/// own (inventory host vars, `host_vars/`, `-u`), which win.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostVars {
    shared: std::sync::Arc<Vars>,
    own: Vars,
}

impl HostVars {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.own.get(key).or_else(|| self.shared.get(key))
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Set a host's own variable (over any group's).
    pub fn insert(&mut self, key: String, value: Value) {
        self.own.insert(key, value);
    }

    /// The names whose value is an Ansible Vault ciphertext, the host's own over the
    /// groups'; `cache` remembers each shared group map's (by address), so a large
    /// inventory looks through each map once.
    pub fn vault_keys(
        &self,
        cache: &mut std::collections::HashMap<*const Vars, Vec<String>>,
    ) -> Vec<String> {
        let vault = |v: &Value| {
            v.as_str()
                .is_some_and(|s| s.trim_start().starts_with("$ANSIBLE_VAULT;"))
        };
        let shared = cache
            .entry(std::sync::Arc::as_ptr(&self.shared))
            .or_insert_with(|| {
                self.shared
                    .iter()
                    .filter(|(_, v)| vault(v))
                    .map(|(k, _)| k.clone())
                    .collect()
            });
        let mut out: Vec<String> = shared
            .iter()
            .filter(|k| !self.own.contains_key(*k))
            .cloned()
            .collect();
        out.extend(
            self.own
                .iter()
                .filter(|(_, v)| vault(v))
                .map(|(k, _)| k.clone()),
        );
        out.sort();
        out
    }

    /// Every variable, by name, the host's own over the groups'.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Value)> {
        let merged: BTreeMap<&String, &Value> = self.shared.iter().chain(self.own.iter()).collect();
        merged.into_iter()
    }
}

/// A host's own variables, with no group's.
impl From<Vars> for HostVars {
    fn from(own: Vars) -> Self {
        HostVars {
            shared: Default::default(),
            own,
        }
    }
}

impl FromIterator<(String, Value)> for HostVars {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(it: I) -> Self {
        Vars::from_iter(it).into()
    }
}

impl<'a> IntoIterator for &'a HostVars {
    type Item = (&'a String, &'a Value);
    type IntoIter = Box<dyn Iterator<Item = (&'a String, &'a Value)> + 'a>;
    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

impl std::ops::Index<&str> for HostVars {
    type Output = Value;
    fn index(&self, key: &str) -> &Value {
        static NULL: Value = Value::Null;
        self.get(key).unwrap_or(&NULL)
    }
}

impl serde::Serialize for HostVars {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

/// A loaded inventory: hosts in inventory order and every group by name.
#[derive(Clone, Debug, Default)]
pub struct Inventory {
    pub hosts: Vec<Host>,
    pub groups: BTreeMap<String, Group>,
}

/// One group: its direct hosts and child groups (declaration order) and its own variables
/// (inventory-file vars overlaid with its `group_vars/` file).
#[derive(Clone, Debug, Default)]
pub struct Group {
    pub hosts: Vec<String>,
    pub children: Vec<String>,
    pub vars: Vars,
}

impl Inventory {
    /// Loads an INI or YAML inventory (by extension: `.yml`/`.yaml`/`.json` are YAML, `.ini`
    /// is INI, anything else is sniffed) and the `group_vars/`/`host_vars/` next to it.
    /// Every problem found is reported, not just the first.
    pub fn load(path: &Path) -> Result<Inventory, Vec<Diagnostic>> {
        let source = read_source(path, "inventory").map_err(|d| vec![*d])?;
        let dir = match path.parent() {
            Some(p) if p.as_os_str().is_empty() => Path::new("."),
            Some(p) => p,
            None => Path::new("."),
        };
        Self::build(path, &source, Some(dir))
    }

    /// Parse inventory text (named `path` in diagnostics) without reading
    /// `group_vars/`/`host_vars/`: what the fuzz target drives.
    pub fn parse(path: &Path, source: &str) -> Result<Inventory, Vec<Diagnostic>> {
        Self::build(path, source, None)
    }

    fn build(
        path: &Path,
        source: &str,
        vars_dir: Option<&Path>,
    ) -> Result<Inventory, Vec<Diagnostic>> {
        if let Some(d) = toml_inventory(path, source) {
            return Err(vec![d]);
        }
        let mut builder = Builder::new();
        let mut diags = match Format::of(path, source) {
            Format::Ini => ini::parse(path, source, &mut builder),
            Format::Yaml => yaml::parse_inventory(path, source, &mut builder),
        };
        if builder.hosts.len() > MAX_INVENTORY_HOSTS {
            diags.push(
                Diagnostic::file(
                    path,
                    format!(
                        "the inventory has {} hosts, more than kfix takes ({MAX_INVENTORY_HOSTS})",
                        builder.hosts.len()
                    ),
                )
                .with_hint("split the fleet into inventories of at most that many hosts (a range such as node[0:99999] counts each host)"),
            );
            return Err(diags);
        }
        let inv = builder.finish(vars_dir, diags)?;
        let problems = inv.connection_problems(path);
        if problems.is_empty() {
            Ok(inv)
        } else {
            Err(problems)
        }
    }

    /// Values kfix would misuse: an address, user or key file that begins with `-` (an
    /// ssh option such as `-oProxyCommand=…`, not a host), a port that is not a number
    /// from 1 to 65535 (never quietly the default 22), a templated connection value
    /// (kfix does not render inventory templates: `{{ ip }}` is no address), and an
    /// Ansible Vault ciphertext (`!vault`: kfix does not decrypt, and never uses the
    /// ciphertext as the value).
    fn connection_problems(&self, path: &Path) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        // Group variables are shared between hosts (one map per set of groups): each
        // map is looked through once, not once per host.
        let mut shared_vaults: std::collections::HashMap<*const Vars, Vec<String>> =
            Default::default();
        for h in &self.hosts {
            for k in h.vars.vault_keys(&mut shared_vaults) {
                out.push(
                    Diagnostic::file(
                        path,
                        format!("host `{}`: `{k}` is an Ansible Vault ciphertext (!vault)", h.name),
                    )
                    .with_hint(format!(
                        "kfix does not decrypt vault values: decrypt it (ansible-vault view) into a file only you can read and pass it with --secret-file {k}=PATH"
                    )),
                );
            }
            if let Err(why) = h.jump_hosts() {
                out.push(
                    Diagnostic::file(path, format!("host `{}`: {why}", h.name)).with_hint(
                        "put other ssh options in an ssh_config `Host` block and pass it with --ssh-config (kfix checks host keys strictly whatever it says)",
                    ),
                );
            }
            for k in [
                "ansible_password",
                "ansible_ssh_pass",
                "ansible_ssh_password",
                "ansible_become_password",
                "ansible_become_pass",
                "ansible_sudo_pass",
            ] {
                if h.vars.get(k).is_some_and(|v| !v.is_null()) {
                    out.push(
                        Diagnostic::file(path, format!("host `{}`: `{k}` is set, and kfix types no passwords", h.name))
                            .with_hint("kfix logs in with keys (ansible_ssh_private_key_file, an agent or ssh_config) and becomes root with `sudo -n`: give the user NOPASSWD sudo, and drop the password"),
                    );
                }
            }
            for k in [
                "ansible_host",
                "ansible_ssh_host",
                "ansible_user",
                "ansible_ssh_user",
                "ansible_port",
                "ansible_ssh_port",
                "ansible_private_key_file",
                "ansible_ssh_private_key_file",
            ] {
                if let Some(s) = h.vars.get(k).and_then(Value::as_str)
                    && crate::template::is_template(s)
                {
                    out.push(
                        Diagnostic::file(
                            path,
                            format!("host `{}`: `{k}` is a template (`{s}`)", h.name),
                        )
                        .with_hint("kfix does not render inventory templates: write the value itself (the address, user, port), as `ansible-inventory --host NAME` would resolve it"),
                    );
                }
            }
            let mut bad = |what: &str, value: &str, hint: &str| {
                out.push(
                    Diagnostic::file(path, format!("host `{}`: {what} `{value}`", h.name))
                        .with_hint(hint),
                )
            };
            let dash =
                "ssh would read it as an option; a host, user or key file never begins with `-`";
            if h.address().starts_with('-') {
                bad("address begins with `-`:", h.address(), dash);
            }
            if let Some(u) = h.user().filter(|u| u.starts_with('-')) {
                bad("user begins with `-`:", u, dash);
            }
            if let Some(k) = h.key_file().filter(|k| k.starts_with('-')) {
                bad("private key file begins with `-`:", k, dash);
            }
            if let Some((k, v)) = ["ansible_ssh_port", "ansible_port"]
                .iter()
                .find_map(|k| h.vars.get(k).filter(|v| !v.is_null()).map(|v| (*k, v)))
                && h.port().is_none_or(|p| p == 0)
            {
                let v = v
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string());
                bad(
                    &format!("{k} is not a port:"),
                    &v,
                    "a port is a number from 1 to 65535",
                );
            }
        }
        out
    }

    /// An inventory of one host, `localhost`, with `ansible_connection=local` (in `all` and,
    /// like any host listed in no other group, `ungrouped`).
    pub fn localhost() -> Inventory {
        let mut builder = Builder::new();
        builder.add_host("ungrouped", "localhost");
        builder.set_host_var("localhost", "ansible_connection", Value::from("local"));
        builder.finish(None, Vec::new()).unwrap_or_default()
    }

    /// An inventory of these host names only (in `all` and `ungrouped`), for patterns
    /// over hosts whose inventory is gone.
    pub fn of_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Inventory {
        let mut builder = Builder::new();
        for n in names {
            builder.add_host("ungrouped", n);
        }
        builder.finish(None, Vec::new()).unwrap_or_default()
    }

    /// The host named `name`, if the inventory has it.
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// The hosts matching an Ansible `--limit` pattern (all hosts when `None`), in inventory
    /// order. Fails when the pattern is invalid or matches no host.
    pub fn select(&self, limit: Option<&str>) -> Result<Vec<&Host>, String> {
        pattern::select(self, limit)
    }

    /// [`Inventory::select`], with a warning for each part of the pattern that matches
    /// no host.
    pub fn select_warn(&self, limit: Option<&str>) -> Result<(Vec<&Host>, Vec<String>), String> {
        pattern::select_warn(self, limit)
    }
}

impl Host {
    /// The address to connect to: `ansible_host` (or `ansible_ssh_host`), else the name.
    pub fn address(&self) -> &str {
        self.last_str(&["ansible_host", "ansible_ssh_host"])
            .unwrap_or(&self.name)
    }

    /// `ansible_port` / `ansible_ssh_port` (the latter wins, as in Ansible's ssh plugin).
    pub fn port(&self) -> Option<u16> {
        ["ansible_ssh_port", "ansible_port"]
            .iter()
            .find_map(|k| self.vars.get(k).filter(|v| !v.is_null()))
            .and_then(|v| match v {
                Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            })
    }

    /// `ansible_user` / `ansible_ssh_user` (the latter wins).
    pub fn user(&self) -> Option<&str> {
        self.last_str(&["ansible_user", "ansible_ssh_user"])
    }

    /// `ansible_private_key_file` / `ansible_ssh_private_key_file` (the latter wins).
    pub fn key_file(&self) -> Option<&str> {
        self.last_str(&["ansible_private_key_file", "ansible_ssh_private_key_file"])
    }

    /// The jump hosts of `ansible_ssh_common_args` / `ansible_ssh_extra_args` (kubespray's
    /// bastion set-up: `-o ProxyJump=user@bastion`, `-J bastion`), the only ssh options
    /// kfix takes from an inventory. Anything else there is an error naming it: kfix
    /// never passes an inventory's options to ssh unread, nor drops them.
    pub fn jump_hosts(&self) -> Result<Vec<String>, String> {
        let mut jump = Vec::new();
        for key in ["ansible_ssh_common_args", "ansible_ssh_extra_args"] {
            let Some(v) = self.vars.get(key).filter(|v| !v.is_null()) else {
                continue;
            };
            let text = v
                .as_str()
                .ok_or_else(|| format!("`{key}` is not a string"))?;
            let words = shell_words::split(text).map_err(|e| format!("`{key}`: {e}"))?;
            let mut it = words.iter();
            while let Some(w) = it.next() {
                let opt = match w.as_str() {
                    "-o" | "-J" => it
                        .next()
                        .map(|v| format!("{w}{v}"))
                        .ok_or_else(|| format!("`{key}`: `{w}` without a value"))?,
                    _ => w.clone(),
                };
                let hosts = if let Some(h) = opt.strip_prefix("-J") {
                    h.to_string()
                } else if let Some(o) = opt.strip_prefix("-o") {
                    let (name, value) = o
                        .split_once(['=', ' '])
                        .map(|(n, v)| (n.trim(), v.trim()))
                        .unwrap_or((o, ""));
                    if !name.eq_ignore_ascii_case("ProxyJump") || value.is_empty() {
                        return Err(format!(
                            "`{key}` holds `{opt}`: kfix takes only ProxyJump (-o ProxyJump=HOST, -J HOST) from an inventory"
                        ));
                    }
                    value.to_string()
                } else {
                    return Err(format!(
                        "`{key}` holds `{opt}`: kfix takes only ProxyJump (-o ProxyJump=HOST, -J HOST) from an inventory"
                    ));
                };
                for h in hosts.split(',').map(str::trim).filter(|h| !h.is_empty()) {
                    if h.starts_with('-') {
                        return Err(format!("`{key}`: jump host `{h}` begins with `-`"));
                    }
                    if h != "none" {
                        jump.push(h.to_string());
                    }
                }
            }
        }
        Ok(jump)
    }

    /// Whether `ansible_connection` is `local`.
    pub fn is_local(&self) -> bool {
        self.last_str(&["ansible_connection"]) == Some("local")
    }

    /// `ansible_become` with Ansible truthiness (`true`/`yes`/`on`/`1`/`y`/`t`, any case).
    pub fn become_(&self) -> bool {
        self.vars.get("ansible_become").is_some_and(truthy)
    }

    /// `ansible_become_user`.
    pub fn become_user(&self) -> Option<&str> {
        self.last_str(&["ansible_become_user"])
    }

    /// The string value of the last of `keys` that is set (Ansible's "last alias wins").
    fn last_str(&self, keys: &[&str]) -> Option<&str> {
        keys.iter()
            .rev()
            .find_map(|k| self.vars.get(k).filter(|v| !v.is_null()))
            .and_then(Value::as_str)
    }
}

/// Ansible's `boolean()` for a variable value.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() == Some(1.0),
        Value::String(s) => {
            let s = s.trim().to_ascii_lowercase();
            matches!(s.as_str(), "y" | "yes" | "on" | "1" | "true" | "t" | "1.0")
        }
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Reading files

/// Inventory and vars files larger than this are refused.
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Reads a UTF-8 text file of bounded size, without a leading byte-order mark.
fn read_source(path: &Path, what: &str) -> Result<String, Box<Diagnostic>> {
    let cannot =
        |e: std::io::Error| Box::new(Diagnostic::file(path, format!("cannot read {what}: {e}")));
    let meta = std::fs::metadata(path).map_err(cannot)?;
    if meta.is_dir() {
        return Err(Box::new(
            Diagnostic::file(path, format!("{what} path is a directory"))
                .with_hint("pass a single INI or YAML inventory file"),
        ));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        let mib = MAX_FILE_BYTES / 1024 / 1024;
        let msg = format!("{what} is larger than {mib} MiB");
        return Err(Box::new(Diagnostic::file(path, msg)));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        Box::new(Diagnostic::file(
            path,
            format!("{what} is not valid UTF-8: {e}"),
        ))
    })?;
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Ini,
    Yaml,
}

/// Ansible's TOML inventory (`.toml`, or sections such as `[all.hosts]` /
/// `[web.vars]` with `key = value` lines): not read by kfix, said so, instead of an
/// INI error about a group named `all.hosts`.
fn toml_inventory(path: &Path, source: &str) -> Option<Diagnostic> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let toml_section = source.lines().map(str::trim).any(|l| {
        l.strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .is_some_and(|n| {
                [".hosts", ".vars", ".children"]
                    .iter()
                    .any(|s| n.ends_with(s))
            })
    });
    (ext.as_deref() == Some("toml") || toml_section).then(|| {
        Diagnostic::file(path, "TOML inventories are not supported")
            .with_hint("convert it: ansible-inventory -i INVENTORY.toml --list -y > inventory.yaml (kfix reads INI and YAML)")
    })
}

impl Format {
    /// By extension, else by the first meaningful line: `---`, a flow mapping, or a first
    /// word ending in `:` means YAML; anything else (`[group]`, a host line) is INI.
    fn of(path: &Path, source: &str) -> Format {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("yml" | "yaml" | "json") => return Format::Yaml,
            Some("ini") => return Format::Ini,
            _ => {}
        }
        let first = source
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'));
        match first {
            Some(l) if l.starts_with("---") || l.starts_with('{') => Format::Yaml,
            Some(l) if !l.starts_with('[') => {
                let word = l.split_whitespace().next().unwrap_or("");
                if word.ends_with(':') {
                    Format::Yaml
                } else {
                    Format::Ini
                }
            }
            _ => Format::Ini,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Host patterns in inventory files: `name`, `name:port`, `node[01:20]`, `[ipv6]:port`

/// At most this many hosts from one host pattern (protects against `h[0:999999999]`).
const MAX_RANGE_HOSTS: usize = 100_000;

/// At most this many hosts in one inventory (three such ranges would be 300,000).
pub const MAX_INVENTORY_HOSTS: usize = 100_000;

/// Splits an optional `:port` off a host pattern and expands its `[a:b(:step)]` ranges.
/// The error is a message about `pattern` as a whole.
fn expand_host_pattern(pattern: &str) -> Result<(Vec<String>, Option<u16>), String> {
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
fn split_port(pattern: &str) -> Result<(&str, Option<u16>), String> {
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
fn expand_ranges(name: &str) -> Result<Vec<String>, String> {
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
fn range_values(range: &str) -> Result<Vec<String>, String> {
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

fn single_letter(s: &str, letters: &str) -> Option<usize> {
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if c.is_ascii_alphabetic() => letters.find(c),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Building an inventory (shared by the INI and YAML readers)

/// Hosts, groups and inventory-file variables as read, before reconciliation and merging.
#[derive(Default)]
struct Builder {
    hosts: Vec<String>,
    host_vars: HashMap<String, Vars>,
    groups: BTreeMap<String, Group>,
    group_order: Vec<String>,
    members: HashSet<(String, String)>,
    priority: HashMap<String, i64>,
}

impl Builder {
    fn new() -> Builder {
        let mut b = Builder::default();
        b.add_group("all");
        b.add_group("ungrouped");
        b
    }

    fn add_group(&mut self, name: &str) {
        if !self.groups.contains_key(name) {
            self.groups.insert(name.to_string(), Group::default());
            self.group_order.push(name.to_string());
        }
    }

    /// Adds `host` (once) to the inventory and to `group`.
    fn add_host(&mut self, group: &str, host: &str) {
        self.add_group(group);
        if !self.host_vars.contains_key(host) {
            self.hosts.push(host.to_string());
            self.host_vars.insert(host.to_string(), Vars::new());
        }
        if self.members.insert((group.to_string(), host.to_string()))
            && let Some(g) = self.groups.get_mut(group)
        {
            g.hosts.push(host.to_string());
        }
    }

    fn set_host_var(&mut self, host: &str, key: &str, value: Value) {
        self.host_vars
            .entry(host.to_string())
            .or_default()
            .insert(key.to_string(), value);
    }

    /// Sets an inventory-file group variable; `ansible_group_priority` sets the group's
    /// merge priority instead (as Ansible does) and must be an integer.
    fn set_group_var(&mut self, group: &str, key: &str, value: Value) -> Result<(), String> {
        self.add_group(group);
        if key == "ansible_group_priority" {
            let p = match &value {
                Value::Number(n) => n.as_i64(),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            };
            let p = p.ok_or_else(|| {
                format!("ansible_group_priority must be an integer, found `{value}`")
            })?;
            self.priority.insert(group.to_string(), p);
            return Ok(());
        }
        if let Some(g) = self.groups.get_mut(group) {
            g.vars.insert(key.to_string(), value);
        }
        Ok(())
    }

    /// Makes `child` (created if new) a child of `parent`. Refuses `all` as a child and any
    /// edge that would make a cycle; the error is `(message, hint)`.
    fn add_child(&mut self, parent: &str, child: &str) -> Result<(), (String, String)> {
        self.add_group(parent);
        if child == "all" {
            return Err((
                format!("group `all` cannot be a child of `{parent}`"),
                "every group is already a child of `all`".into(),
            ));
        }
        if child == parent {
            return Err((
                format!("group `{child}` cannot be a child of itself"),
                format!("remove `{child}` from the children of `{parent}`"),
            ));
        }
        if let Some(path) = self.child_path(child, parent) {
            let cycle = std::iter::once(parent)
                .chain(path.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(" -> ");
            return Err((
                format!("making `{child}` a child of `{parent}` creates a cycle: {cycle}"),
                "a group cannot be its own ancestor; remove one of these children entries".into(),
            ));
        }
        self.add_group(child);
        if let Some(g) = self.groups.get_mut(parent)
            && !g.children.iter().any(|c| c == child)
        {
            g.children.push(child.to_string());
        }
        Ok(())
    }

    /// The chain of groups from `from` down to `to` through `children`, if `to` descends
    /// from `from` (both ends included).
    fn child_path(&self, from: &str, to: &str) -> Option<Vec<String>> {
        let mut came_from: HashMap<&str, &str> = HashMap::new();
        let mut stack = vec![from];
        let mut seen: HashSet<&str> = HashSet::from([from]);
        while let Some(g) = stack.pop() {
            if g == to {
                let mut path = vec![to.to_string()];
                let mut cur = to;
                while let Some(prev) = came_from.get(cur) {
                    path.push(prev.to_string());
                    cur = prev;
                }
                path.reverse();
                return Some(path);
            }
            for c in self
                .groups
                .get(g)
                .map(|g| g.children.as_slice())
                .unwrap_or(&[])
            {
                if seen.insert(c) {
                    came_from.insert(c, g);
                    stack.push(c);
                }
            }
        }
        None
    }

    /// Reconciles groups as Ansible does (parentless groups become children of `all`; hosts
    /// in no other group are `ungrouped`), loads `group_vars/`/`host_vars/` from `vars_dir`,
    /// and merges every host's variables. Fails with `diags` plus any vars-file problems.
    fn finish(
        mut self,
        vars_dir: Option<&Path>,
        mut diags: Vec<Diagnostic>,
    ) -> Result<Inventory, Vec<Diagnostic>> {
        self.reconcile();
        let parents = self.parents();
        let depth = self.depths();

        let (group_files, host_files) = match vars_dir {
            Some(dir) => (
                self.load_vars_files(dir, "group_vars", &self.group_order, &mut diags),
                self.load_vars_files(dir, "host_vars", &self.hosts, &mut diags),
            ),
            None => (HashMap::new(), HashMap::new()),
        };
        if !diags.is_empty() {
            return Err(diags);
        }

        let mut direct: HashMap<&str, Vec<&str>> = HashMap::new();
        for name in &self.group_order {
            for h in self
                .groups
                .get(name)
                .map(|g| g.hosts.as_slice())
                .unwrap_or(&[])
            {
                direct.entry(h.as_str()).or_default().push(name);
            }
        }
        let empty = Vars::new();
        let mut hosts = Vec::with_capacity(self.hosts.len());
        // Merged group variables, one map per distinct (ordered) set of groups.
        let mut shared: HashMap<Vec<&str>, std::sync::Arc<Vars>> = HashMap::new();
        for name in &self.hosts {
            let mut groups: BTreeSet<&str> = BTreeSet::from(["all"]);
            let mut stack: Vec<&str> = direct.get(name.as_str()).cloned().unwrap_or_default();
            while let Some(g) = stack.pop() {
                if groups.insert(g) {
                    stack.extend(parents.get(g).into_iter().flatten().copied());
                }
            }
            let mut ordered: Vec<&str> = groups.iter().copied().filter(|g| *g != "all").collect();
            ordered.sort_by_key(|g| {
                let prio = self.priority.get(*g).copied().unwrap_or(1);
                (depth.get(g).copied().unwrap_or(0), prio, *g)
            });
            let inv = |g: &str| self.groups.get(g).map(|g| &g.vars).unwrap_or(&empty);
            let file = |g: &str| group_files.get(g).unwrap_or(&empty);
            let group_vars = shared
                .entry(ordered.clone())
                .or_insert_with(|| {
                    let mut vars = inv("all").clone();
                    for g in &ordered {
                        extend(&mut vars, inv(g));
                    }
                    extend(&mut vars, file("all"));
                    for g in &ordered {
                        extend(&mut vars, file(g));
                    }
                    std::sync::Arc::new(vars)
                })
                .clone();
            let mut own = self.host_vars.get(name).cloned().unwrap_or_default();
            extend(&mut own, host_files.get(name).unwrap_or(&empty));
            hosts.push(Host {
                name: name.clone(),
                groups: groups.into_iter().map(String::from).collect(),
                vars: HostVars {
                    shared: group_vars,
                    own,
                },
            });
        }

        let mut groups = self.groups;
        for (name, g) in &mut groups {
            if let Some(file_vars) = group_files.get(name) {
                extend(&mut g.vars, file_vars);
            }
        }
        Ok(Inventory { hosts, groups })
    }

    /// Parentless groups become children of `all`; hosts only in `all` (or nowhere) join
    /// `ungrouped`, hosts in any other group leave it.
    fn reconcile(&mut self) {
        let has_parent: HashSet<String> = self
            .groups
            .values()
            .flat_map(|g| g.children.iter().cloned())
            .collect();
        let roots: Vec<String> = self
            .group_order
            .iter()
            .filter(|g| *g != "all" && !has_parent.contains(*g))
            .cloned()
            .collect();
        if let Some(all) = self.groups.get_mut("all") {
            all.children.extend(roots);
        }
        let grouped: HashSet<&str> = self
            .members
            .iter()
            .filter(|(g, _)| g != "all" && g != "ungrouped")
            .map(|(_, h)| h.as_str())
            .collect();
        let ungrouped: Vec<String> = self
            .hosts
            .iter()
            .filter(|h| !grouped.contains(h.as_str()))
            .cloned()
            .collect();
        let members: HashSet<(String, String)> = self
            .members
            .iter()
            .filter(|(g, h)| g != "ungrouped" || !grouped.contains(h.as_str()))
            .cloned()
            .chain(
                ungrouped
                    .iter()
                    .map(|h| ("ungrouped".to_string(), h.clone())),
            )
            .collect();
        self.members = members;
        if let Some(g) = self.groups.get_mut("ungrouped") {
            g.hosts = ungrouped;
        }
    }

    /// Each group's parents.
    fn parents(&self) -> HashMap<&str, Vec<&str>> {
        let mut parents: HashMap<&str, Vec<&str>> = HashMap::new();
        for (name, g) in &self.groups {
            for c in &g.children {
                parents.entry(c.as_str()).or_default().push(name.as_str());
            }
        }
        parents
    }

    /// Each group's depth: the longest chain of `children` from `all` (`all` is 0).
    fn depths(&self) -> HashMap<&str, usize> {
        let mut indegree: HashMap<&str, usize> = HashMap::new();
        for g in self.groups.values() {
            for c in &g.children {
                *indegree.entry(c.as_str()).or_default() += 1;
            }
        }
        let mut depth: HashMap<&str, usize> = HashMap::new();
        let mut queue: Vec<&str> = self
            .groups
            .keys()
            .map(String::as_str)
            .filter(|g| !indegree.contains_key(g))
            .collect();
        while let Some(g) = queue.pop() {
            let d = depth.get(g).copied().unwrap_or(0);
            for c in self
                .groups
                .get(g)
                .map(|g| g.children.as_slice())
                .unwrap_or(&[])
            {
                let cd = depth.entry(c.as_str()).or_insert(0);
                *cd = (*cd).max(d + 1);
                if let Some(n) = indegree.get_mut(c.as_str()) {
                    *n -= 1;
                    if *n == 0 {
                        queue.push(c);
                    }
                }
            }
        }
        depth
    }

    /// Loads `<dir>/<kind>/<name>` for every name that has such a file or directory.
    fn load_vars_files(
        &self,
        dir: &Path,
        kind: &str,
        names: &[String],
        diags: &mut Vec<Diagnostic>,
    ) -> HashMap<String, Vars> {
        let base = dir.join(kind);
        let mut out = HashMap::new();
        if !base.is_dir() {
            return out;
        }
        for name in names {
            let unsafe_name =
                name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\', '\0']);
            if unsafe_name {
                continue;
            }
            let files = vars_files(&base, name);
            if files.is_empty() {
                continue;
            }
            let mut vars = Vars::new();
            for file in files {
                match read_source(&file, "vars file") {
                    Ok(src) => match yaml::parse_vars_file(&file, &src) {
                        Ok(v) => extend(&mut vars, &v),
                        Err(d) => diags.extend(d),
                    },
                    Err(d) => diags.push(*d),
                }
            }
            out.insert(name.clone(), vars);
        }
        out
    }
}

fn extend(into: &mut Vars, from: &Vars) {
    into.extend(from.iter().map(|(k, v)| (k.clone(), v.clone())));
}

/// Extensions Ansible accepts for vars files (besides none).
const VARS_EXTENSIONS: [&str; 3] = ["yml", "yaml", "json"];

/// Ansible's lookup: the first of `name` (file or directory), `name.yml`, `name.yaml`,
/// `name.json`; a directory yields its vars files in sorted order, recursively.
fn vars_files(base: &Path, name: &str) -> Vec<PathBuf> {
    let candidates = std::iter::once(base.join(name)).chain(
        VARS_EXTENSIONS
            .iter()
            .map(|e| base.join(format!("{name}.{e}"))),
    );
    for path in candidates {
        if path.is_dir() {
            let mut found = Vec::new();
            dir_vars_files(&path, 0, &mut found);
            return found;
        }
        if path.is_file() {
            return vec![path];
        }
    }
    Vec::new()
}

fn dir_vars_files(dir: &Path, depth: usize, found: &mut Vec<PathBuf>) {
    const MAX_DEPTH: usize = 8;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.') && !n.ends_with('~'))
        .collect();
    names.sort();
    for n in names {
        let path = dir.join(&n);
        let ext = Path::new(&n).extension().and_then(|e| e.to_str());
        if path.is_dir() {
            if ext.is_none() && depth < MAX_DEPTH {
                dir_vars_files(&path, depth + 1, found);
            }
        } else if path.is_file() && ext.is_none_or(|e| VARS_EXTENSIONS.contains(&e)) {
            found.push(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A fresh scratch directory under the system temp dir (unique per call, so tests
    /// running in parallel never share one).
    /// Removes its directory when the test ends.
    pub(super) struct Scratch(PathBuf);

    impl std::ops::Deref for Scratch {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    pub(super) fn scratch(name: &str) -> Scratch {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("kfix-inv-{pid}-{n}-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub(super) fn write(dir: &Path, rel: &str, text: &str) -> PathBuf {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn localhost_inventory() {
        let inv = Inventory::localhost();
        assert_eq!(inv.hosts.len(), 1);
        let h = inv.host("localhost").unwrap();
        assert_eq!(h.groups, ["all", "ungrouped"]);
        assert!(h.is_local());
        assert_eq!(h.address(), "localhost");
        assert_eq!(inv.groups["ungrouped"].hosts, ["localhost"]);
        assert_eq!(inv.groups["all"].children, ["ungrouped"]);
    }

    #[test]
    fn host_accessors() {
        let mut vars = Vars::new();
        vars.insert("ansible_host".into(), json!("10.0.0.5"));
        vars.insert("ansible_port".into(), json!(2222));
        vars.insert("ansible_user".into(), json!("deploy"));
        vars.insert("ansible_ssh_private_key_file".into(), json!("~/.ssh/id"));
        vars.insert("ansible_become".into(), json!("yes"));
        vars.insert("ansible_become_user".into(), json!("root"));
        let h = Host {
            name: "web1".into(),
            groups: vec!["all".into()],
            vars: vars.into(),
        };
        assert_eq!(h.address(), "10.0.0.5");
        assert_eq!(h.port(), Some(2222));
        assert_eq!(h.user(), Some("deploy"));
        assert_eq!(h.key_file(), Some("~/.ssh/id"));
        assert!(h.become_());
        assert_eq!(h.become_user(), Some("root"));
        assert!(!h.is_local());

        let mut h2 = Host {
            name: "db".into(),
            groups: vec![],
            vars: HostVars::default(),
        };
        assert_eq!(h2.address(), "db");
        assert_eq!(h2.port(), None);
        assert!(!h2.become_());
        h2.vars.insert("ansible_ssh_port".into(), json!("2200"));
        h2.vars.insert("ansible_ssh_user".into(), json!("ops"));
        h2.vars
            .insert("ansible_private_key_file".into(), json!("k"));
        assert_eq!(h2.port(), Some(2200));
        assert_eq!(h2.user(), Some("ops"));
        assert_eq!(h2.key_file(), Some("k"));
        h2.vars.insert("ansible_port".into(), json!(99999));
        assert_eq!(h2.port(), Some(2200), "ansible_ssh_port wins");
    }

    #[test]
    fn a_tiny_inventory_cannot_make_a_huge_one() {
        // Three ranges of 100,000 hosts in a few bytes: refused before any host is made.
        let three = "[a]\na[0:99999]\n[b]\nb[0:99999]\n[c]\nc[0:99999]\n";
        let errs = Inventory::parse(Path::new("hosts.ini"), three).expect_err("too many");
        let text = errs.iter().map(|d| d.to_string()).collect::<String>();
        assert!(
            text.contains("300000 hosts, more than kfix takes (100000)"),
            "{text}"
        );
        assert!(text.contains("hint:"), "{text}");
        // Group variables are one map per set of groups, shared by its hosts; a host's
        // own variable is its own and wins.
        let mut big = String::from("[big]\nn[0:19999]\nspecial x=own\n[big:vars]\n");
        for i in 0..50 {
            big.push_str(&format!("v{i}=value-{i}\n"));
        }
        big.push_str("x=group\n");
        let inv = Inventory::parse(Path::new("hosts.ini"), &big).expect("valid");
        assert_eq!(inv.hosts.len(), 20_001);
        let first = &inv.hosts[0].vars.shared;
        assert!(
            inv.hosts
                .iter()
                .all(|h| std::sync::Arc::ptr_eq(&h.vars.shared, first))
        );
        assert_eq!(inv.hosts[0].vars["x"], json!("group"));
        assert_eq!(inv.host("special").unwrap().vars["x"], json!("own"));
        assert_eq!(inv.host("special").unwrap().vars.iter().count(), 51);
        assert_eq!(inv.hosts[7].vars["v49"], json!("value-49"));
    }

    #[test]
    fn jump_hosts_are_the_only_ssh_options_an_inventory_gives() {
        let mut h = Host {
            name: "n".into(),
            groups: vec![],
            vars: HostVars::default(),
        };
        let mut with = |common: &str, extra: Option<&str>| {
            h.vars
                .insert("ansible_ssh_common_args".into(), json!(common));
            if let Some(e) = extra {
                h.vars.insert("ansible_ssh_extra_args".into(), json!(e));
            }
            h.jump_hosts()
        };
        assert_eq!(with("-o ProxyJump=root@b1", None).unwrap(), ["root@b1"]);
        assert_eq!(
            with("-oProxyJump=b1,b2:2222", None).unwrap(),
            ["b1", "b2:2222"]
        );
        assert_eq!(
            with("-o 'ProxyJump b1'", Some("-J b2")).unwrap(),
            ["b1", "b2"]
        );
        assert_eq!(with("", Some("")).unwrap(), Vec::<String>::new());
        for bad in [
            "-o StrictHostKeyChecking=no",
            "-o ProxyCommand=nc %h %p",
            "-v",
            "-J -oX",
            "-o",
        ] {
            assert!(with(bad, Some("")).is_err(), "{bad}");
        }
    }

    #[test]
    fn vault_values_templated_connections_and_toml_are_refused() {
        let text = "all:\n  hosts:\n    n1:\n      ansible_host: '{{ ip }}'\n      ip: 10.0.0.1\n      ansible_become_password: !vault |\n        $ANSIBLE_VAULT;1.1;AES256\n        62313365396662343061393464336163383764373764613633653634306231386433626436623361\n";
        let errs = Inventory::parse(Path::new("hosts.yaml"), text).expect_err("refused");
        let all: String = errs.iter().map(|d| d.to_string()).collect();
        assert!(
            all.contains("`ansible_become_password` is an Ansible Vault ciphertext"),
            "{all}"
        );
        assert!(
            all.contains("--secret-file ansible_become_password=PATH"),
            "{all}"
        );
        assert!(
            all.contains("`ansible_host` is a template (`{{ ip }}`)"),
            "{all}"
        );
        // A group's vault value is reported for each host that does not set its own.
        let text = "all:\n  children:\n    k:\n      vars:\n        token: !vault |\n          $ANSIBLE_VAULT;1.1;AES256\n          6231\n      hosts:\n        n1: {}\n        n2: {token: plain}\n        n3: {}\n";
        let errs = Inventory::parse(Path::new("hosts.yaml"), text).expect_err("refused");
        let all: Vec<String> = errs
            .iter()
            .map(|d| d.to_string())
            .filter(|d| d.contains("Vault"))
            .collect();
        assert_eq!(all.len(), 2, "{all:?}");
        assert!(all[0].contains("host `n1`: `token`") && all[1].contains("host `n3`: `token`"));
        for (name, text) in [
            ("hosts.toml", "[all.hosts]\nn1 = {}\n"),
            (
                "hosts",
                "[web.hosts]\nn1 = { ansible_host = \"10.0.0.1\" }\n",
            ),
        ] {
            let errs = Inventory::parse(Path::new(name), text).expect_err("toml");
            let all: String = errs.iter().map(|d| d.to_string()).collect();
            assert!(all.contains("TOML inventories are not supported"), "{all}");
            assert!(all.contains("ansible-inventory"), "{all}");
        }
    }

    #[test]
    fn connection_values_ssh_would_misread_are_refused() {
        let text = "[k]\nn1 ansible_host=-oProxyCommand=touch\\ /tmp/x\nn2 ansible_user=-oX=y\nn3 ansible_port=22x\nn4 ansible_port=0\nn5 ansible_ssh_private_key_file=-i\nok ansible_host=10.0.0.1 ansible_port=2222 ansible_user=deploy\n";
        let errs = Inventory::parse(Path::new("hosts.ini"), text).expect_err("refused");
        let all: Vec<String> = errs.iter().map(|d| d.to_string()).collect();
        let all = all.join("\n");
        for want in [
            "host `n1`: address begins with `-`",
            "host `n2`: user begins with `-`",
            "host `n3`: ansible_port is not a port: `22x`",
            "host `n4`: ansible_port is not a port: `0`",
            "host `n5`: private key file begins with `-`",
        ] {
            assert!(all.contains(want), "{want}: {all}");
        }
        assert!(!all.contains("`ok`"), "{all}");
        assert!(all.contains("hint:"), "{all}");
    }

    #[test]
    fn become_truthiness() {
        for (v, want) in [
            (json!(true), true),
            (json!("True"), true),
            (json!("yes"), true),
            (json!("on"), true),
            (json!("1"), true),
            (json!(1), true),
            (json!(false), false),
            (json!("no"), false),
            (json!("0"), false),
            (json!(0), false),
            (json!("maybe"), false),
            (json!(null), false),
        ] {
            assert_eq!(truthy(&v), want, "{v}");
        }
    }

    #[test]
    fn host_ranges() {
        let e = |p: &str| expand_host_pattern(p).map(|(h, port)| (h.join(","), port));
        assert_eq!(e("web1").unwrap(), ("web1".into(), None));
        assert_eq!(e("web1:2222").unwrap(), ("web1".into(), Some(2222)));
        assert_eq!(e("node[01:03]").unwrap().0, "node01,node02,node03");
        assert_eq!(e("node[1:10:4]").unwrap().0, "node1,node5,node9");
        assert_eq!(e("node[:2]").unwrap().0, "node0,node1,node2");
        assert_eq!(e("db-[a:c].lan").unwrap().0, "db-a.lan,db-b.lan,db-c.lan");
        assert_eq!(e("10.0.0.[1:3]").unwrap().0, "10.0.0.1,10.0.0.2,10.0.0.3");
        assert_eq!(e("r[1:2]n[a:b]").unwrap().0, "r1na,r1nb,r2na,r2nb");
        assert_eq!(e("n[08:10]:22").unwrap(), ("n08,n09,n10".into(), Some(22)));
        assert_eq!(e("2001:db8::1").unwrap(), ("2001:db8::1".into(), None));
        assert_eq!(
            e("[2001:db8::1]:2222").unwrap(),
            ("2001:db8::1".into(), Some(2222))
        );
        assert_eq!(
            e("n[1:3:0]").unwrap_err(),
            "host range step `0` must be a positive number in `n[1:3:0]`"
        );
        assert_eq!(
            e("n[01:5]").unwrap_err(),
            "host range must specify equal-length begin and end formats in `n[01:5]`"
        );
        assert_eq!(
            e("n[5:1]").unwrap_err(),
            "host range must have begin <= end in `n[5:1]`"
        );
        assert_eq!(
            e("n[1:2").unwrap_err(),
            "unterminated host range in `n[1:2`"
        );
        assert_eq!(
            e("n[1]").unwrap_err(),
            "host range must be begin:end or begin:end:step in `n[1]`"
        );
        assert_eq!(
            e("n[x:10]").unwrap_err(),
            "host range bound `x` is not a number or a single letter in `n[x:10]`"
        );
        assert_eq!(
            e("web:").unwrap_err(),
            "invalid host `web:`: expected `host` or `host:port`"
        );
        assert_eq!(
            e("web:70000").unwrap_err(),
            "invalid port `70000` in `web:70000` (must be 0-65535)"
        );
        assert_eq!(
            e("n[0:999999999]").unwrap_err(),
            "host range expands to more than 100000 hosts in `n[0:999999999]`"
        );
        assert_eq!(
            e("a[0:999]b[0:999]").unwrap_err(),
            "host range `a[0:999]b[0:999]` expands to more than 100000 hosts"
        );
    }

    #[test]
    fn format_detection() {
        let f = |p: &str, s: &str| Format::of(Path::new(p), s);
        assert_eq!(f("hosts.yml", "[web]\n"), Format::Yaml);
        assert_eq!(f("hosts.ini", "all:\n"), Format::Ini);
        assert_eq!(f("hosts", "# c\nall:\n  hosts:\n"), Format::Yaml);
        assert_eq!(f("hosts", "---\n"), Format::Yaml);
        assert_eq!(f("hosts", "[web]\nweb1\n"), Format::Ini);
        assert_eq!(f("hosts", "web1:2222 ansible_user=x\n"), Format::Ini);
        assert_eq!(f("hosts", "web1\n"), Format::Ini);
        assert_eq!(f("hosts", ""), Format::Ini);
    }

    #[test]
    fn load_missing_file_and_directory() {
        let dir = scratch("missing");
        let err = Inventory::load(&dir.join("nope.ini")).unwrap_err();
        assert_eq!(
            err[0].to_string(),
            format!(
                "error: cannot read inventory: No such file or directory (os error 2)\n --> {}",
                dir.join("nope.ini").display()
            )
        );
        let err = Inventory::load(&dir).unwrap_err();
        assert_eq!(
            err[0].to_string(),
            format!(
                "error: inventory path is a directory\n --> {}\n  = hint: pass a single INI or YAML inventory file",
                dir.display()
            )
        );
    }

    #[test]
    fn group_and_host_vars_precedence() {
        let dir = scratch("precedence");
        let inv_path = write(
            &dir,
            "hosts.ini",
            "[web]\nweb1 from_host=inv\nweb2\n\n[prod:children]\nweb\n\n\
             [all:vars]\nfrom_all=inv\nlayer=all-inv\n\n[prod:vars]\nlayer=prod-inv\nfrom_prod=inv\n\n\
             [web:vars]\nlayer=web-inv\n",
        );
        write(
            &dir,
            "group_vars/all.yml",
            "layer: all-file\nfrom_all: file\nonly_all_file: 1\n",
        );
        write(&dir, "group_vars/prod.yaml", "from_prod: file\n");
        write(
            &dir,
            "group_vars/web/10-base.yml",
            "web_a: base\nweb_b: base\n",
        );
        write(&dir, "group_vars/web/20-over.json", "{\"web_b\": \"over\"}");
        write(&dir, "group_vars/web/.hidden.yml", "web_a: hidden\n");
        write(&dir, "group_vars/web/notes.txt", "not: loaded\n");
        write(&dir, "group_vars/unknown.yml", "nobody: here\n");
        write(
            &dir,
            "host_vars/web1.yml",
            "from_host: file\nlayer: web1-file\n",
        );
        let inv = Inventory::load(&inv_path).unwrap();

        let web1 = inv.host("web1").unwrap();
        assert_eq!(web1.groups, ["all", "prod", "web"]);
        let expected = json!({
            "from_all": "file",        // group_vars/all beats [all:vars]
            "from_prod": "file",       // group_vars/prod beats [prod:vars]
            "from_host": "file",       // host_vars beats the host line
            "layer": "web1-file",      // host_vars beat everything
            "only_all_file": 1,
            "web_a": "base",           // .hidden.yml and notes.txt are skipped
            "web_b": "over",           // directory files merge in sorted order
        });
        assert_eq!(serde_json::to_value(&web1.vars).unwrap(), expected);

        // Real Ansible precedence: every group_vars/ file beats every inventory-file group
        // var, so group_vars/all.yml overrides [web:vars] here.
        let web2 = inv.host("web2").unwrap();
        assert_eq!(web2.vars["layer"], json!("all-file"));
        assert_eq!(inv.groups["web"].vars["web_b"], json!("over"));
        assert_eq!(inv.groups["web"].vars["layer"], json!("web-inv"));
        assert!(!inv.groups.contains_key("unknown"));
    }

    #[test]
    fn group_depth_and_priority_order() {
        let dir = scratch("depth");
        let path = write(
            &dir,
            "hosts.ini",
            "[a]\nh1\n[b]\nh1\n[c]\nh1\n[parent:children]\nc\n\
             [a:vars]\nx=a\n[b:vars]\nx=b\n[c:vars]\nx=c\n[parent:vars]\nx=parent\n\
             [all:vars]\nx=all\ny=all\n",
        );
        let inv = Inventory::load(&path).unwrap();
        // c is deepest (all -> parent -> c), so it wins; a and b (depth 1) lose to it.
        assert_eq!(inv.host("h1").unwrap().vars["x"], json!("c"));
        assert_eq!(inv.host("h1").unwrap().vars["y"], json!("all"));

        let path = write(
            &dir,
            "prio.ini",
            "[a]\nh1\n[b]\nh1\n[a:vars]\nx=a\nansible_group_priority=5\n[b:vars]\nx=b\n",
        );
        let inv = Inventory::load(&path).unwrap();
        // Same depth: b would win alphabetically, but a's priority 5 beats b's default 1.
        assert_eq!(inv.host("h1").unwrap().vars["x"], json!("a"));
        assert!(!inv.groups["a"].vars.contains_key("ansible_group_priority"));
    }

    #[test]
    fn bad_vars_files_are_all_reported() {
        let dir = scratch("badvars");
        let path = write(&dir, "hosts.ini", "web1\n[db]\ndb1 bad\n");
        write(&dir, "group_vars/all.yml", "a: 1\n- b\n");
        write(&dir, "host_vars/web1.yml", "- just\n- a list\n");
        let err = Inventory::load(&path).unwrap_err();
        let text: Vec<String> = err.iter().map(|d| d.to_string()).collect();
        assert_eq!(text.len(), 3, "{text:#?}");
        assert_eq!(
            text[0],
            format!(
                "error: expected key=value host variable, found `bad`\n --> {}:3:5\n  |\n3 | db1 bad\n  |     ^^^\n  = hint: host variables are written `key=value` (quote values with spaces: key=\"a b\")",
                path.display()
            )
        );
        assert_eq!(
            text[1],
            format!(
                "error: while parsing a block mapping, did not find expected key\n --> {}:2:3\n  |\n2 | - b\n  |   ^",
                dir.join("group_vars/all.yml").display()
            )
        );
        assert_eq!(
            text[2],
            format!(
                "error: a vars file must be a mapping of variable names to values, found a sequence\n --> {}:1:1\n  |\n1 | - just\n  | ^\n  = hint: write one `name: value` per line",
                dir.join("host_vars/web1.yml").display()
            )
        );
    }
}
