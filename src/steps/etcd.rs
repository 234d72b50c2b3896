//! `etcd` steps: delete etcd v3 keys (by prefix and/or name, filtered by a `where`
//! expression) through `etcdctl` on the host the step runs on. Planning lists exactly
//! the keys and values it would delete; each delete is a transaction that refuses when
//! the key's mod_revision moved since planning; the undo puts the saved value back.

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
echo "the key changed since it was planned (etcd transaction: $out); nothing was deleted" >&2
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

pub async fn plan(id: &str, s: &EtcdSpec, h: &Host) -> HResult<StepPlan> {
    let mut base = vec![
        "env".to_string(),
        "ETCDCTL_API=3".to_string(),
        "etcdctl".to_string(),
        format!("--endpoints={}", h.render(&s.endpoints)?),
    ];
    for (flag, t) in [("cacert", &s.cacert), ("cert", &s.cert), ("key", &s.key)] {
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
    if let Some(p) = &s.delete.prefix {
        let p = h.render(p)?;
        let out = h
            .run_ok(&etcdctl(&["get", "--prefix", "-w", "json", "--", &p]))
            .await
            .map_err(read(format!("reading prefix {p}")))?;
        kvs.extend(parse_get(&out.stdout()).map_err(|e| {
            HostError::Failed(h.at(s.endpoints.pos, &format!("etcd step `{id}`: {e}")))
        })?);
    }
    for k in &s.delete.keys {
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
    let mut chosen = Vec::new();
    for kv in kvs {
        if let Some(w) = &s.delete.filter {
            let value = String::from_utf8_lossy(&kv.value).into_owned();
            let json = serde_json::from_slice::<serde_json::Value>(&kv.value)
                .unwrap_or(serde_json::Value::Null);
            let ctx = minijinja::context! {
                key => String::from_utf8_lossy(&kv.key).into_owned(),
                value => value,
                json => minijinja::value::Value::from(minijinja::value::Serde(json)),
                ..h.ctx.clone()
            };
            let keep = crate::template::eval_bool(&w.value, &ctx)
                .map_err(|e| HostError::Failed(h.at(w.pos, &format!("`where`: {e}"))))?;
            if !keep {
                continue;
            }
        }
        if !safe_key(&kv.key) {
            return failed(h.at(
                s.endpoints.pos,
                &format!(
                    "etcd step `{id}`: key {:?} has characters kfix does not put in an etcd transaction (quotes, backslashes, spaces, control characters or a leading `-`)",
                    shown(&kv.key)
                ),
            ));
        }
        chosen.push(kv);
    }
    if chosen.is_empty() {
        return Ok(StepPlan::no_change(
            id,
            "etcd",
            Some("no key to delete".into()),
        ));
    }
    let mut diff = String::new();
    let mut ops = Vec::new();
    for kv in chosen {
        let key = String::from_utf8_lossy(&kv.key).into_owned();
        diff.push_str(&format!("- {key} = {}\n", shown(&kv.value)));
        if kv.lease != 0 {
            diff.push_str(&format!(
                "  (attached to lease {:x}: the undo puts the value back without it)\n",
                kv.lease
            ));
        }
        let mut del = vec!["sh".to_string(), "-c".into(), TXN.into(), "kfix".into()];
        del.extend(base.iter().cloned());
        let del = Cmd::new(del).with_stdin(txn_text(&key, kv.mod_revision));
        let undo = etcdctl(&["put", "--", &key]).with_stdin(kv.value.clone());
        let probe = etcdctl(&["get", "--keys-only", "--", &key]);
        ops.push(
            Op::new(
                format!("delete etcd key {key} (mod_revision {})", kv.mod_revision),
                del,
                Undo::Cmd(undo),
            )
            .probe(probe),
        );
    }
    Ok(StepPlan::change(id, "etcd", diff, ops))
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
