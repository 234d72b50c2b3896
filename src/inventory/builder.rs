//! Building an inventory from what the INI and YAML readers found: hosts, groups and
//! their variables, reconciled and merged with Ansible's precedence (group_vars/,
//! host_vars/ included).

#[allow(unused_imports)]
use super::*;

// ---------------------------------------------------------------------------------------------
// Building an inventory (shared by the INI and YAML readers)

/// Hosts, groups and inventory-file variables as read, before reconciliation and merging.
#[derive(Default)]
pub(super) struct Builder {
    pub(super) hosts: Vec<String>,
    pub(super) host_vars: HashMap<String, Vars>,
    pub(super) groups: BTreeMap<String, Group>,
    pub(super) group_order: Vec<String>,
    pub(super) members: HashSet<(String, String)>,
    pub(super) priority: HashMap<String, i64>,
}

impl Builder {
    pub(super) fn new() -> Builder {
        let mut b = Builder::default();
        b.add_group("all");
        b.add_group("ungrouped");
        b
    }

    pub(super) fn add_group(&mut self, name: &str) {
        if !self.groups.contains_key(name) {
            self.groups.insert(name.to_string(), Group::default());
            self.group_order.push(name.to_string());
        }
    }

    /// Adds `host` (once) to the inventory and to `group`.
    pub(super) fn add_host(&mut self, group: &str, host: &str) {
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

    pub(super) fn set_host_var(&mut self, host: &str, key: &str, value: Value) {
        self.host_vars
            .entry(host.to_string())
            .or_default()
            .insert(key.to_string(), value);
    }

    /// Sets an inventory-file group variable; `ansible_group_priority` sets the group's
    /// merge priority instead (as Ansible does) and must be an integer.
    pub(super) fn set_group_var(
        &mut self,
        group: &str,
        key: &str,
        value: Value,
    ) -> Result<(), String> {
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
    pub(super) fn add_child(&mut self, parent: &str, child: &str) -> Result<(), (String, String)> {
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
    pub(super) fn child_path(&self, from: &str, to: &str) -> Option<Vec<String>> {
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
    pub(super) fn finish(
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
    pub(super) fn reconcile(&mut self) {
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
    pub(super) fn parents(&self) -> HashMap<&str, Vec<&str>> {
        let mut parents: HashMap<&str, Vec<&str>> = HashMap::new();
        for (name, g) in &self.groups {
            for c in &g.children {
                parents.entry(c.as_str()).or_default().push(name.as_str());
            }
        }
        parents
    }

    /// Each group's depth: the longest chain of `children` from `all` (`all` is 0).
    pub(super) fn depths(&self) -> HashMap<&str, usize> {
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
    pub(super) fn load_vars_files(
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

pub(super) fn extend(into: &mut Vars, from: &Vars) {
    into.extend(from.iter().map(|(k, v)| (k.clone(), v.clone())));
}

/// Extensions Ansible accepts for vars files (besides none).
pub(super) const VARS_EXTENSIONS: [&str; 3] = ["yml", "yaml", "json"];

/// Ansible's lookup: the first of `name` (file or directory), `name.yml`, `name.yaml`,
/// `name.json`; a directory yields its vars files in sorted order, recursively.
pub(super) fn vars_files(base: &Path, name: &str) -> Vec<PathBuf> {
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

pub(super) fn dir_vars_files(dir: &Path, depth: usize, found: &mut Vec<PathBuf>) {
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
