//! Inventory: loads Ansible INI/YAML inventories plus `group_vars/` and `host_vars/`, merges
//! variables with Ansible's precedence, and selects hosts with `--limit` patterns.

mod builder;
mod ini;
mod pattern;
mod pylit;
mod ranges;
#[cfg(test)]
mod tests;
mod vars;
mod yaml;

use builder::*;
pub use ranges::MAX_INVENTORY_HOSTS;
use ranges::*;
pub use vars::HostVars;

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
