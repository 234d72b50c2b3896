//! `etcd` steps: delete etcd keys (v3 by prefix, v2 by directory, and/or by name,
//! filtered by a `where` expression) through `etcdctl` on the host the step runs on.
//! Planning lists exactly the keys and values it would delete; each delete refuses when
//! the key changed since planning (v3: a transaction on its mod_revision; v2: `rm
//! --with-index`); the undo puts the saved value back (on stdin).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::host::{HResult, Host, HostError, failed};
use crate::plan::{Op, StepPlan, Undo};
use crate::playbook::EtcdSpec;
use crate::quote::Cmd;

/// Run `etcdctl … txn` ("$@" is the etcdctl command) on the compare-and-delete text
/// given on stdin; only `SUCCESS` is success (`FAILURE`: the compare did not hold).
const TXN: &str = r#"out=$("$@" txn) || exit 1
case "$out" in SUCCESS*) exit 0 ;; esac
echo "the key changed since it was planned (etcd transaction: $out); nothing was changed" >&2
exit 1"#;

/// One key as `etcdctl get -w json` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kv {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub mod_revision: i64,
    pub lease: i64,
}

/// Parse `etcdctl get -w json` output (keys and values base64; no `kvs` when empty).
pub fn parse_get(json: &str) -> Result<Vec<Kv>, String> {
    let doc: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("bad `etcdctl get -w json` output: {e}"))?;
    let Some(kvs) = doc.get("kvs") else {
        return Ok(Vec::new());
    };
    let kvs = kvs
        .as_array()
        .ok_or("bad `etcdctl get -w json` output: `kvs` is not a list")?;
    let b64 = |kv: &serde_json::Value, f: &str| -> Result<Vec<u8>, String> {
        match kv.get(f).and_then(|v| v.as_str()) {
            None => Ok(Vec::new()),
            Some(s) => STANDARD
                .decode(s)
                .map_err(|e| format!("bad base64 in `{f}`: {e}")),
        }
    };
    let num = |kv: &serde_json::Value, f: &str| kv.get(f).and_then(|v| v.as_i64()).unwrap_or(0);
    kvs.iter()
        .map(|kv| {
            Ok(Kv {
                key: b64(kv, "key")?,
                value: b64(kv, "value")?,
                mod_revision: num(kv, "mod_revision"),
                lease: num(kv, "lease"),
            })
        })
        .collect()
}

/// Parse `ETCDCTL_API=2 etcdctl -o json get|ls --recursive` output: every leaf node
/// (`lease` is its TTL in seconds, 0 without one; `mod_revision` its modifiedIndex).
pub fn parse_v2(json: &str) -> Result<Vec<Kv>, String> {
    let doc: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| format!("bad `etcdctl -o json` (v2) output: {e}"))?;
    let mut out = Vec::new();
    let mut todo: Vec<&serde_json::Value> = doc.get("node").into_iter().collect();
    while let Some(n) = todo.pop() {
        if n.get("dir").and_then(|d| d.as_bool()).unwrap_or(false) {
            if let Some(kids) = n.get("nodes").and_then(|k| k.as_array()) {
                todo.extend(kids.iter());
            }
            continue;
        }
        let text = |f: &str| n.get(f).and_then(|v| v.as_str()).unwrap_or("");
        let num = |f: &str| n.get(f).and_then(|v| v.as_i64()).unwrap_or(0);
        out.push(Kv {
            key: text("key").as_bytes().to_vec(),
            value: text("value").as_bytes().to_vec(),
            mod_revision: num("modifiedIndex"),
            lease: num("ttl"),
        });
    }
    Ok(out)
}

/// The directories in `ETCDCTL_API=2 etcdctl -o json ls --recursive` output, the
/// listed one included.
pub fn parse_v2_dirs(json: &str) -> Vec<String> {
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(json) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut todo: Vec<&serde_json::Value> = doc.get("node").into_iter().collect();
    while let Some(n) = todo.pop() {
        if n.get("dir").and_then(|d| d.as_bool()).unwrap_or(false) {
            if let Some(k) = n.get("key").and_then(|k| k.as_str()) {
                out.push(k.to_string());
            }
            if let Some(kids) = n.get("nodes").and_then(|k| k.as_array()) {
                todo.extend(kids.iter());
            }
        }
    }
    out.sort();
    out
}

/// Keys kfix writes into a transaction's text between double quotes: printable ASCII
/// without quotes, backslashes or spaces, not starting with `-`.
pub fn safe_key(k: &[u8]) -> bool {
    !k.is_empty()
        && k[0] != b'-'
        && k.iter()
            .all(|&b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\')
}

/// Text for a diff line: control characters escaped, the rest as is.
pub fn shown(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// The compare-and-delete transaction for one key at one mod_revision.
pub fn txn_text(key: &str, mod_revision: i64) -> String {
    format!("mod(\"{key}\") = \"{mod_revision}\"\n\ndel \"{key}\"\n\n\n")
}

/// The API version a step uses on this host: 3 unless it says 2.
fn api_of(s: &EtcdSpec, h: &Host) -> HResult<u8> {
    use crate::playbook::EtcdApi;
    let Some(api) = &s.api else { return Ok(3) };
    let v = match &api.value {
        EtcdApi::Fixed(n) => n.to_string(),
        EtcdApi::Template(t) => h.render(&crate::yaml::At {
            pos: api.pos,
            value: t.clone(),
        })?,
    };
    match v.trim() {
        "2" => Ok(2),
        "3" => Ok(3),
        other => failed(h.at(api.pos, &format!("etcd API `{other}`: it is 2 or 3"))),
    }
}

/// A value parsed as JSON, or none.
fn parse_json(b: &[u8]) -> serde_json::Value {
    serde_json::from_slice(b).unwrap_or(serde_json::Value::Null)
}

/// One key chosen: deleted, or (`rewrite`) replaced by a new value (JSON text).
struct Chosen {
    kv: Kv,
    new_value: Option<String>,
}

/// The keys `where` (and `group` or `group_by`) choose among those read, in key order,
/// each with its new value where `rewrite` gives one; each must be one kfix puts in a
/// transaction.
/// With v2 `dirs`, a chosen group's directories come back too, deepest first (each is
/// empty once the group's keys are deleted).
fn select(
    id: &str,
    s: &EtcdSpec,
    h: &Host,
    kvs: Vec<Kv>,
    dirs: &[String],
) -> HResult<(Vec<Chosen>, Vec<String>)> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let listed: std::collections::BTreeMap<String, String> = kvs
        .iter()
        .map(|kv| (text(&kv.key), text(&kv.value)))
        .collect();
    let listed = minijinja::Value::from(minijinja::value::Serde(listed));
    let eval = |w: &crate::playbook::Text, ctx: &minijinja::Value| {
        crate::template::eval_bool(&w.value, ctx)
            .map_err(|e| HostError::Failed(h.at(w.pos, &format!("`where`: {e}"))))
    };
    // `group_by` and `rewrite` run once per key: compiled once.
    let env = crate::template::environment();
    fn compile<'e>(
        env: &'e minijinja::Environment<'static>,
        h: &Host,
        what: &str,
        w: &'e crate::playbook::Text,
    ) -> HResult<crate::template::Compiled<'e>> {
        crate::template::Compiled::new(env, &w.value)
            .map_err(|e| HostError::Failed(h.at(w.pos, &format!("`{what}`: {e}"))))
    }
    let group_by = s
        .delete
        .group_by
        .as_ref()
        .map(|g| compile(&env, h, "group_by", g).map(|c| (c, g)))
        .transpose()?;
    let rewrite = s
        .delete
        .rewrite
        .as_ref()
        .map(|r| compile(&env, h, "rewrite", r).map(|c| (c, r)))
        .transpose()?;
    let value_of = |what: &str,
                    (c, w): &(crate::template::Compiled, &crate::playbook::Text),
                    ctx: &minijinja::Value| {
        c.value(&w.value, ctx)
            .map_err(|e| HostError::Failed(h.at(w.pos, &format!("`{what}`: {e}"))))
    };
    // Each chosen key with its group's name and keys (when grouped).
    type Membership = Option<(String, Vec<String>)>;
    let mut chosen: Vec<(Kv, Membership)> = Vec::new();
    let mut chosen_dirs = Vec::new();
    let regex = match &s.delete.group {
        Some(g) => {
            let src = h.render(g)?;
            Some(
                regex::Regex::new(&src)
                    .map_err(|e| HostError::Failed(h.at(g.pos, &format!("invalid regex: {e}"))))?,
            )
        }
        None => None,
    };
    // The group a key (or a v2 directory, as `PATH/` with no value) belongs to.
    let group_of = |key: &str, value: &str, json: serde_json::Value| -> HResult<Option<String>> {
        if let Some(re) = &regex {
            return Ok(re
                .captures(key)
                .and_then(|c| c.get(1))
                .map(|m| m.as_str().to_string()));
        }
        let Some(g) = &group_by else { return Ok(None) };
        let ctx = minijinja::context! {
            key => key,
            value => value,
            json => minijinja::Value::from(minijinja::value::Serde(json)),
            listed => listed.clone(),
            ..h.ctx.clone()
        };
        let v = value_of("group_by", g, &ctx)?;
        Ok((!v.is_none() && !v.is_undefined())
            .then(|| v.to_string())
            .filter(|n| !n.is_empty()))
    };
    if regex.is_some() || group_by.is_some() {
        let mut groups: std::collections::BTreeMap<String, Vec<Kv>> = Default::default();
        for kv in kvs {
            let json = parse_json(&kv.value);
            if let Some(name) = group_of(&text(&kv.key), &text(&kv.value), json)? {
                groups.entry(name).or_default().push(kv);
            }
        }
        // A directory belongs to a group when its path with a trailing slash matches
        // (or, with `group_by`, names one as a key with no value would).
        let mut group_dirs: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for d in dirs {
            let slashed = format!("{}/", d.trim_end_matches('/'));
            if let Some(name) = group_of(&slashed, "", serde_json::Value::Null)? {
                groups.entry(name.clone()).or_default();
                group_dirs.entry(name).or_default().push(d.clone());
            }
        }
        let names: Vec<String> = groups.keys().cloned().collect();
        for (name, members) in groups {
            let keys: std::collections::BTreeMap<String, String> = members
                .iter()
                .map(|kv| (text(&kv.key), text(&kv.value)))
                .collect();
            if let Some(w) = &s.delete.filter {
                let json: std::collections::BTreeMap<String, serde_json::Value> = members
                    .iter()
                    .map(|kv| (text(&kv.key), parse_json(&kv.value)))
                    .collect();
                let ctx = minijinja::context! {
                    group => name.clone(),
                    groups => names.clone(),
                    keys => keys.clone(),
                    json => minijinja::Value::from(minijinja::value::Serde(json)),
                    listed => listed.clone(),
                    ..h.ctx.clone()
                };
                if !eval(w, &ctx)? {
                    continue;
                }
            }
            let members_keys: Vec<String> = keys.keys().cloned().collect();
            chosen.extend(
                members
                    .into_iter()
                    .map(|kv| (kv, Some((name.clone(), members_keys.clone())))),
            );
            chosen_dirs.extend(group_dirs.remove(&name).unwrap_or_default());
        }
        chosen.sort_by(|a, b| a.0.key.cmp(&b.0.key));
        // A directory's own entries sort after it: the reverse order empties it first.
        chosen_dirs.sort();
        chosen_dirs.reverse();
    } else {
        for kv in kvs {
            if let Some(w) = &s.delete.filter {
                let json = parse_json(&kv.value);
                let ctx = minijinja::context! {
                    key => text(&kv.key),
                    value => text(&kv.value),
                    json => minijinja::value::Value::from(minijinja::value::Serde(json)),
                    listed => listed.clone(),
                    ..h.ctx.clone()
                };
                if !eval(w, &ctx)? {
                    continue;
                }
            }
            chosen.push((kv, None));
        }
    }
    let unsafe_key = chosen
        .iter()
        .map(|(kv, _)| kv.key.as_slice())
        .chain(chosen_dirs.iter().map(|d| d.as_bytes()))
        .find(|k| !safe_key(k));
    if let Some(k) = unsafe_key {
        return failed(h.at(
            s.endpoints.pos,
            &format!(
                "etcd step `{id}`: key {:?} has characters kfix does not put in an etcd transaction (quotes, backslashes, spaces, control characters or a leading `-`)",
                shown(k)
            ),
        ));
    }
    let mut out = Vec::with_capacity(chosen.len());
    for (kv, group) in chosen {
        let new_value = match &rewrite {
            None => None,
            Some(r) => {
                let (group, keys) = group.unwrap_or_default();
                let ctx = minijinja::context! {
                    key => text(&kv.key),
                    value => text(&kv.value),
                    json => minijinja::Value::from(minijinja::value::Serde(parse_json(&kv.value))),
                    group => group,
                    keys => keys,
                    listed => listed.clone(),
                    ..h.ctx.clone()
                };
                let v = value_of("rewrite", r, &ctx)?;
                if v.is_none() || v.is_undefined() {
                    None
                } else {
                    let json = serde_json::to_string(&v).map_err(|e| {
                        HostError::Failed(h.at(r.1.pos, &format!("`rewrite`: not JSON: {e}")))
                    })?;
                    Some(json)
                }
            }
        };
        out.push(Chosen { kv, new_value });
    }
    Ok((out, chosen_dirs))
}

/// `s` as the double-quoted string of an etcdctl transaction (Go's quoting rules).
pub fn go_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The compare-and-put transaction for one key at one mod_revision.
pub fn put_txn_text(key: &str, mod_revision: i64, value: &str) -> String {
    format!(
        "mod(\"{key}\") = \"{mod_revision}\"\n\nput \"{key}\" {}\n\n\n",
        go_quoted(value)
    )
}

pub async fn plan(id: &str, s: &EtcdSpec, h: &Host) -> HResult<StepPlan> {
    let v2 = api_of(s, h)? == 2;
    let mut base = vec![
        "env".to_string(),
        if v2 { "ETCDCTL_API=2" } else { "ETCDCTL_API=3" }.to_string(),
        "etcdctl".to_string(),
        format!("--endpoints={}", h.render(&s.endpoints)?),
    ];
    let tls = if v2 {
        [
            ("ca-file", &s.cacert),
            ("cert-file", &s.cert),
            ("key-file", &s.key),
        ]
    } else {
        [("cacert", &s.cacert), ("cert", &s.cert), ("key", &s.key)]
    };
    for (flag, t) in tls {
        // An empty value (a playbook default for "no TLS") passes no flag.
        if let Some(t) = t {
            let v = h.render(t)?;
            if !v.is_empty() {
                base.push(format!("--{flag}={v}"));
            }
        }
    }
    let etcdctl = |args: &[&str]| {
        let mut v = base.clone();
        v.extend(args.iter().map(|a| a.to_string()));
        Cmd::new(v)
    };
    let read = |what: String| {
        let hint = format!(
            "\n  = hint: is etcdctl (etcd-client) installed on the host the step runs on ({}), and etcd reachable at its endpoints?",
            h.facts.hostname
        );
        move |e: HostError| HostError::Failed(format!("etcd step `{id}`: {what}: {e}{hint}"))
    };
    let mut kvs: Vec<Kv> = Vec::new();
    // v2 directories (a `group` deletes its own once they are empty).
    let mut dirs: Vec<String> = Vec::new();
    // v2: a missing key or directory is exit 4 with etcd's error 100; nothing to delete.
    let read_v2 = |args: Vec<String>, what: String| {
        let cmd = etcdctl(&args.iter().map(String::as_str).collect::<Vec<_>>());
        async move {
            let out = h.run(&cmd).await.map_err(read(what.clone()))?;
            if out.success() {
                let text = out.stdout();
                let kvs = parse_v2(&text).map_err(|e| {
                    HostError::Failed(h.at(s.endpoints.pos, &format!("etcd step `{id}`: {e}")))
                })?;
                Ok((kvs, parse_v2_dirs(&text)))
            } else if out.stderr().contains("100: Key not found") {
                Ok((Vec::new(), Vec::new()))
            } else {
                Err(read(what)(HostError::Failed(out.stderr())))
            }
        }
    };
    if v2 {
        if let Some(p) = &s.delete.prefix {
            let p = h.render(p)?;
            let args = ["-o", "json", "ls", "--recursive", "--", &p];
            let (leaves, d) = read_v2(
                args.map(String::from).to_vec(),
                format!("reading directory {p}"),
            )
            .await?;
            kvs.extend(leaves);
            dirs.extend(d);
        }
        for k in &s.delete.keys {
            let k = h.render(k)?;
            let args = ["-o", "json", "get", "--", &k];
            let (leaves, _) =
                read_v2(args.map(String::from).to_vec(), format!("reading key {k}")).await?;
            kvs.extend(leaves);
        }
    }
    if let (false, Some(p)) = (v2, &s.delete.prefix) {
        let p = h.render(p)?;
        let out = h
            .run_ok(&etcdctl(&["get", "--prefix", "-w", "json", "--", &p]))
            .await
            .map_err(read(format!("reading prefix {p}")))?;
        kvs.extend(parse_get(&out.stdout()).map_err(|e| {
            HostError::Failed(h.at(s.endpoints.pos, &format!("etcd step `{id}`: {e}")))
        })?);
    }
    for k in s.delete.keys.iter().filter(|_| !v2) {
        let k = h.render(k)?;
        let out = h
            .run_ok(&etcdctl(&["get", "-w", "json", "--", &k]))
            .await
            .map_err(read(format!("reading key {k}")))?;
        kvs.extend(parse_get(&out.stdout()).map_err(|e| {
            HostError::Failed(h.at(s.endpoints.pos, &format!("etcd step `{id}`: {e}")))
        })?);
    }
    kvs.sort_by(|a, b| a.key.cmp(&b.key));
    kvs.dedup_by(|a, b| a.key == b.key);
    let (chosen, chosen_dirs) = select(id, s, h, kvs, &dirs)?;
    if chosen.is_empty() && chosen_dirs.is_empty() {
        return Ok(StepPlan::no_change(
            id,
            "etcd",
            Some("no key to delete".into()),
        ));
    }
    // v2's `set KEY` reads the value from stdin, byte for byte, but refuses an empty
    // one ("value required"): an empty value is the argument "" (calico 2's block
    // affinities hold one).
    let v2_set = |value: &[u8], key: &str| {
        if value.is_empty() {
            etcdctl(&["set", "--", key, ""])
        } else {
            etcdctl(&["set", "--", key]).with_stdin(value.to_vec())
        }
    };
    let mut diff = String::new();
    let mut ops = Vec::new();
    for Chosen { kv, new_value } in chosen {
        let key = String::from_utf8_lossy(&kv.key).into_owned();
        diff.push_str(&format!("- {key} = {}\n", shown(&kv.value)));
        if let Some(new) = new_value {
            // Replaced, not deleted: a compare-and-put on the planned revision (v3: a
            // transaction on mod_revision; v2: `set --swap-with-index`), the value on
            // stdin for v2 and in the transaction's text for v3.
            diff.push_str(&format!("+ {key} = {}\n", shown(new.as_bytes())));
            if kv.lease != 0 {
                diff.push_str(&format!(
                    "  ({}: the new value and the undo's are not)\n",
                    if v2 {
                        format!("TTL {}s", kv.lease)
                    } else {
                        format!("attached to lease {:x}", kv.lease)
                    }
                ));
            }
            let index = kv.mod_revision.to_string();
            let (put, undo, probe) = if v2 {
                (
                    etcdctl(&["set", "--swap-with-index", &index, "--", &key])
                        .with_stdin(new.into_bytes()),
                    v2_set(&kv.value, &key),
                    etcdctl(&["get", "--", &key]),
                )
            } else {
                let mut put = vec!["sh".to_string(), "-c".into(), TXN.into(), "kfix".into()];
                put.extend(base.iter().cloned());
                (
                    Cmd::new(put).with_stdin(put_txn_text(&key, kv.mod_revision, &new)),
                    etcdctl(&["put", "--", &key]).with_stdin(kv.value.clone()),
                    etcdctl(&["get", "--print-value-only", "--", &key]),
                )
            };
            ops.push(
                Op::new(
                    format!("replace etcd key {key} (revision {index})"),
                    put,
                    Undo::Cmd(undo),
                )
                .fingerprint(probe),
            );
            continue;
        }
        if kv.lease != 0 && v2 {
            diff.push_str(&format!(
                "  (TTL {}s: the undo puts the value back without one)\n",
                kv.lease
            ));
        } else if kv.lease != 0 {
            diff.push_str(&format!(
                "  (attached to lease {:x}: the undo puts the value back without it)\n",
                kv.lease
            ));
        }
        let (del, undo, probe) = if v2 {
            let index = kv.mod_revision.to_string();
            (
                etcdctl(&["rm", "--with-index", &index, "--", &key]),
                v2_set(&kv.value, &key),
                etcdctl(&["get", "--", &key]),
            )
        } else {
            let mut del = vec!["sh".to_string(), "-c".into(), TXN.into(), "kfix".into()];
            del.extend(base.iter().cloned());
            (
                Cmd::new(del).with_stdin(txn_text(&key, kv.mod_revision)),
                etcdctl(&["put", "--", &key]).with_stdin(kv.value.clone()),
                etcdctl(&["get", "--keys-only", "--", &key]),
            )
        };
        ops.push(
            Op::new(
                format!("delete etcd key {key} (mod_revision {})", kv.mod_revision),
                del,
                Undo::Cmd(undo),
            )
            .fingerprint(probe),
        );
    }
    for d in chosen_dirs {
        diff.push_str(&format!(
            "- {d}/ (a directory, empty once the keys above are deleted)\n"
        ));
        ops.push(
            Op::new(
                format!("remove etcd directory {d}"),
                etcdctl(&["rmdir", "--", &d]),
                Undo::Cmd(etcdctl(&["mkdir", "--", &d])),
            )
            .fingerprint(etcdctl(&["ls", "--", &d])),
        );
    }
    Ok(StepPlan::change(id, "etcd", diff, ops))
}

impl super::Plan for EtcdSpec {
    async fn plan(&self, step: &crate::playbook::Step, h: &Host) -> HResult<StepPlan> {
        plan(&step.id, self, h).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_output_is_decoded_byte_for_byte() {
        let out = r#"{"header":{"revision":5},"kvs":[{"key":"L2sveA==","create_revision":2,"mod_revision":4,"version":1,"value":"YQpiCgo="}],"count":1}"#;
        let kvs = parse_get(out).unwrap();
        assert_eq!(
            kvs,
            vec![Kv {
                key: b"/k/x".to_vec(),
                value: b"a\nb\n\n".to_vec(),
                mod_revision: 4,
                lease: 0,
            }]
        );
        assert_eq!(parse_get(r#"{"header":{"revision":3}}"#).unwrap(), vec![]);
        assert!(parse_get("not json").is_err());
    }

    #[test]
    fn v2_trees_are_flattened_to_their_leaves() {
        let out = r#"{"action":"get","node":{"key":"/k","dir":true,"nodes":[{"key":"/k/y","value":"{\"v\":1}","ttl":30,"modifiedIndex":4},{"key":"/k/sub","dir":true,"nodes":[{"key":"/k/sub/z","value":"a\nb\n","modifiedIndex":5}]}]}}"#;
        let mut kvs = parse_v2(out).unwrap();
        kvs.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(
            kvs,
            vec![
                Kv {
                    key: b"/k/sub/z".to_vec(),
                    value: b"a\nb\n".to_vec(),
                    mod_revision: 5,
                    lease: 0,
                },
                Kv {
                    key: b"/k/y".to_vec(),
                    value: br#"{"v":1}"#.to_vec(),
                    mod_revision: 4,
                    lease: 30,
                },
            ]
        );
    }

    #[test]
    fn v2_directories_are_listed_with_the_listed_one() {
        let out = r#"{"action":"get","node":{"key":"/k","dir":true,"nodes":[{"key":"/k/y","value":"1"},{"key":"/k/sub","dir":true,"nodes":[{"key":"/k/sub/deeper","dir":true}]}]}}"#;
        assert_eq!(parse_v2_dirs(out), ["/k", "/k/sub", "/k/sub/deeper"]);
        assert!(parse_v2_dirs("not json").is_empty());
    }

    #[test]
    fn a_rewritten_value_is_quoted_as_etcdctl_txn_reads_it() {
        // etcdctl's txn reads a double-quoted operand with Go's unquoting.
        assert_eq!(
            put_txn_text("/k", 7, r#"{"a":"x\n","b":null}"#),
            "mod(\"/k\") = \"7\"\n\nput \"/k\" \"{\\\"a\\\":\\\"x\\\\n\\\",\\\"b\\\":null}\"\n\n\n"
        );
        assert_eq!(go_quoted("a\nb\u{1}ü"), "\"a\\nb\\u0001ü\"");
    }

    #[test]
    fn only_plain_keys_go_into_a_transaction() {
        assert!(safe_key(
            b"/calico/resources/v3/projectcalico.org/nodes/ip-10-0-0-1"
        ));
        assert!(safe_key(b"/coreos.com/network/subnets/10.100.41.0-24"));
        for bad in [&b""[..], b"-x", b"/a b", b"/a\"b", b"/a\\b", b"/a\nb"] {
            assert!(!safe_key(bad), "{bad:?}");
        }
        assert_eq!(
            txn_text("/k/x", 7),
            "mod(\"/k/x\") = \"7\"\n\ndel \"/k/x\"\n\n\n"
        );
        assert_eq!(shown(b"{\"a\":1}\n"), "{\"a\":1}\\n");
    }
}
