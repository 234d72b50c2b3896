//! `etcd`: keys deleted (or rewritten) through `etcdctl` on the host, each value saved.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{KindSpec, LoadChecks, Text, push_some};
use crate::diag::Pos;
use crate::template;
use crate::yaml::At;

/// `etcd` steps (v3 API, through `etcdctl` on the host the step runs on).
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EtcdSpec {
    /// The etcd API: 3 (default) or 2 (old flannel's keys; `prefix` is then a directory),
    /// or a template giving one (`"{{ etcd_api }}"`: a site's choice).
    pub api: Option<At<EtcdApi>>,
    /// Client URL(s), comma-separated (`etcdctl --endpoints`).
    pub endpoints: Text,
    /// TLS files on the host (`--cacert`, `--cert`, `--key`).
    pub cacert: Option<Text>,
    pub cert: Option<Text>,
    pub key: Option<Text>,
    pub delete: EtcdDelete,
}

/// An `etcd` step's API: a number, or a template rendered per host.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(untagged)]
pub enum EtcdApi {
    Fixed(u8),
    Template(String),
}

/// Which keys an `etcd` step deletes: every key under `prefix` and every key in `keys`
/// (those that exist), kept when `where` holds for it.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EtcdDelete {
    pub prefix: Option<Text>,
    #[serde(default)]
    pub keys: Vec<Text>,
    /// A minijinja expression over `key`, `value` (text) and `json` (the value parsed
    /// as JSON, or none): the key is deleted only when it is true. With `group`, it is
    /// asked once per group and sees `group` (the captured name), `groups` (every
    /// group's name), `keys` (the group's keys and their values) and `json` (the
    /// group's keys and their values parsed). It always sees `listed`: every key read,
    /// with its value (text).
    #[serde(rename = "where")]
    pub filter: Option<Text>,
    /// A regex with one capture group: the keys it matches are grouped by what it
    /// captures (e.g. a node's name in a record spread over many keys), and a group is
    /// deleted whole or not at all. Keys it does not match are never deleted.
    pub group: Option<Text>,
    /// Instead of `group`: a minijinja expression over `key`, `value` and `json` (one
    /// key) naming the group the key belongs to, or none for no group (e.g. `key |
    /// calico_owner(json)`: the node a calico key belongs to, from its path or its value).
    pub group_by: Option<Text>,
    /// A minijinja expression over a chosen key (`key`, `value`, `json` — the key's value
    /// parsed —, and with a group `group` and `keys`): where it gives a value other than
    /// none, the key is not deleted but replaced by that value as JSON (a compare-and-put
    /// on the key's revision, undone by putting the old value back).
    pub rewrite: Option<Text>,
}

/// What an expression over one key sees.
const ONE_KEY: &[&str] = &["key", "value", "json", "listed"];
/// What an expression over a group of keys sees.
const GROUP: &[&str] = &["group", "groups", "keys", "json", "listed"];

impl KindSpec for EtcdSpec {
    fn plans_by_builtin_reads(&self) -> bool {
        false
    }

    fn describe(&self) -> String {
        let d = &self.delete;
        let mut what: Vec<String> = Vec::new();
        if let Some(p) = &d.prefix {
            what.push(format!("under `{}`", p.value));
        }
        if !d.keys.is_empty() {
            let keys: Vec<&str> = d.keys.iter().map(|k| k.value.as_str()).collect();
            what.push(format!("named `{}`", keys.join("`, `")));
        }
        let filter = if d.filter.is_some() {
            " that the step's selection keeps"
        } else {
            ""
        };
        format!(
            "etcd keys {}{filter} deleted (each value saved for undo)",
            what.join(" and ")
        )
    }

    fn texts(&self) -> Vec<Text> {
        let mut v = vec![self.endpoints.clone()];
        push_some(
            &mut v,
            [&self.cacert, &self.cert, &self.key, &self.delete.prefix],
        );
        v.extend(self.delete.keys.iter().cloned());
        v
    }

    fn check(&self, id: &str, pos: Pos, c: &mut dyn LoadChecks) {
        let d = &self.delete;
        if let Some(api) = &self.api {
            match &api.value {
                EtcdApi::Fixed(2 | 3) => {}
                EtcdApi::Template(t) if template::is_template(t) => c.text(&At {
                    pos: api.pos,
                    value: t.clone(),
                }),
                EtcdApi::Template(t) if matches!(t.as_str(), "2" | "3") => {}
                other => c.error(
                    api.pos,
                    format!("etcd step `{id}`: unknown etcd API {other:?}"),
                    Some("`api: 3` (the default), `api: 2`, or a template giving one".into()),
                ),
            }
        }
        if d.prefix.is_none() && d.keys.is_empty() {
            c.error(
                pos,
                format!("etcd step `{id}` deletes nothing"),
                Some("give `delete: {prefix: ...}` and/or `delete: {keys: [...]}`".into()),
            );
        }
        if let (Some(g), Some(_)) = (&d.group_by, &d.group) {
            c.error(
                g.pos,
                format!("etcd step `{id}` has both `group` and `group_by`"),
                Some("a key's group comes from one of them: the key's path (`group`) or an expression (`group_by`)".into()),
            );
        }
        let grouped = d.group.is_some() || d.group_by.is_some();
        if let Some(g) = &d.group_by {
            c.expr(g, ONE_KEY);
        }
        if let Some(r) = &d.rewrite {
            let mut names = ONE_KEY.to_vec();
            if grouped {
                names.extend(["group", "groups", "keys"]);
            }
            c.expr(r, &names);
        }
        if let Some(w) = &d.filter {
            c.expr(w, if grouped { GROUP } else { ONE_KEY });
        }
        if let Some(g) = &d.group
            && !template::is_template(&g.value)
        {
            match regex::Regex::new(&g.value) {
                Ok(re) if re.captures_len() == 2 => {}
                Ok(_) => c.error(
                    g.pos,
                    "an etcd `group` regex needs exactly one capture group".to_string(),
                    Some("capture what names the group, e.g. '^/calico/v1/host/([^/]+)/'; use (?:...) for other parentheses".into()),
                ),
                Err(err) => c.error(
                    g.pos,
                    format!(
                        "invalid regex: {}",
                        err.to_string().lines().last().unwrap_or("")
                    ),
                    None,
                ),
            }
        }
    }
}
