//! A host's variables: its own over the groups' (shared between hosts, one map per set
//! of groups), read without merging.

#[allow(unused_imports)]
use super::*;

/// A host's variables: the merged group variables, shared (one copy per distinct set of
/// groups, not one per host: 100,000 hosts of one range hold one map), and the host's
/// own (inventory host vars, `host_vars/`, `-u`), which win.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostVars {
    pub(super) shared: std::sync::Arc<Vars>,
    pub(super) own: Vars,
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
