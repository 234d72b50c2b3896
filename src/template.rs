//! Templating: minijinja with strict undefined variables, bounded work, no HTML escaping.
//!
//! Rendered values are data: kfix never splices a rendered string into shell syntax
//! (commands are argument vectors quoted by `quote`), so no shell-quoting filter exists.

use std::collections::BTreeSet;

use minijinja::{Environment, UndefinedBehavior, Value};

/// The names every template may use besides the playbook's declared vars.
pub const BUILTIN_NAMES: &[&str] = &[
    "facts",
    "inventory_hostname",
    "groups",
    "kfix",
    "gathered",
    "delegate",
    "inventory_hostnames",
];

fn env() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
        .keep_trailing_newline(true)
        .build()
    {
        env.set_syntax(syntax);
    }
    // Bound the work a template may do: a hostile or buggy loop fails, not hangs.
    env.set_fuel(Some(200_000));
    env.set_recursion_limit(64);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    add_net_filters(&mut env);
    add_calico_filters(&mut env);
    env
}

/// Calico 3's datastore (src/calico.rs): `key | calico_owner(json)` is the node a key
/// belongs to (none when no node's), `block | calico_release_block(handles)` the IPAM
/// block as calico leaves it once those handles' addresses and its affinity are
/// released (none when it is then empty, for calico deletes it).
fn add_calico_filters(env: &mut Environment<'static>) {
    fn json(v: &Value) -> Result<serde_json::Value, minijinja::Error> {
        serde_json::to_value(v).map_err(|e| {
            minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.to_string())
        })
    }
    env.add_filter(
        "calico_owner",
        |key: String, value: Value| -> Result<Value, minijinja::Error> {
            Ok(crate::calico::owner(&key, &json(&value)?).map_or(Value::from(()), Value::from))
        },
    );
    env.add_filter(
        "calico_release_block",
        |block: Value, handles: Vec<String>| -> Result<Value, minijinja::Error> {
            let b = json(&block)?;
            match crate::calico::release_block(&b, &handles) {
                Ok(Some(v)) => Ok(Value::from(minijinja::value::Serde(v))),
                Ok(None) => Ok(Value::from(())),
                Err(e) => Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    format!("calico_release_block: {e}"),
                )),
            }
        },
    );
}

/// IPv4 filters for values read from a node (src/net.rs): `"10.244.1.1/24" | network`
/// is `10.244.1.0/24`, `| ip` is `10.244.1.1`, `| prefixlen` is `24`, and
/// `"10.244.0.0/16" | address_outside("10.244.1.1/24")` an address of another node's
/// pods. A value that is not an IPv4 address or network is an error, never a guess.
fn add_net_filters(env: &mut Environment<'static>) {
    use crate::net::Net;
    fn parse(s: &str, what: &str) -> Result<Net, minijinja::Error> {
        Net::parse(s).ok_or_else(|| {
            minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                format!("{what}: `{s}` is not an IPv4 address or network"),
            )
        })
    }
    // A value read from a node, matched literally inside a regex.
    env.add_filter("regex_escape", |s: String| regex::escape(&s));
    // A value spliced into a shell script, as one single-quoted word: the one way a
    // template may appear in the script of `sh -c` (see [`unquoted_in_shell_script`]).
    env.add_filter("shell_quote", |s: String| shell_quote(&s));
    env.add_filter("network", |s: String| -> Result<String, minijinja::Error> {
        Ok(parse(&s, "network")?.network().to_string())
    });
    env.add_filter("ip", |s: String| -> Result<String, minijinja::Error> {
        Ok(parse(&s, "ip")?.address().to_string())
    });
    env.add_filter("prefixlen", |s: String| -> Result<u8, minijinja::Error> {
        Ok(parse(&s, "prefixlen")?.len)
    });
    env.add_filter(
        "host",
        |net: String, n: u32| -> Result<String, minijinja::Error> {
            let nn = parse(&net, "host")?.network();
            let size = 1u64 << (32 - u32::from(nn.len));
            if u64::from(n) >= size {
                return Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    format!("host: {net} has no address number {n}"),
                ));
            }
            Ok(std::net::Ipv4Addr::from(nn.addr + n).to_string())
        },
    );
    env.add_filter(
        "address_outside",
        |net: String, except: String| -> Result<String, minijinja::Error> {
            let n = parse(&net, "address_outside")?;
            let e = parse(&except, "address_outside")?;
            n.address_outside(e)
                .map(|a| a.address().to_string())
                .ok_or_else(|| {
                    minijinja::Error::new(
                        minijinja::ErrorKind::InvalidOperation,
                        format!("address_outside: {net} has no address outside {except}"),
                    )
                })
        },
    );
}

fn describe(e: &minijinja::Error) -> String {
    let mut s = e.kind().to_string();
    if let Some(d) = e.detail() {
        s.push_str(": ");
        s.push_str(d);
    }
    s
}

/// Does this string use template syntax at all?
/// `s` as one POSIX shell word: single-quoted, a `'` inside as `'\''`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// `s` as it is typed in a shell: unchanged when it needs no quoting (a plain path),
/// else [`shell_quote`]d.
pub fn shell_quote_if_needed(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '/' | '.' | '_' | '-' | ':' | '+' | '=' | '@' | ',')
        });
    if plain { s.to_string() } else { shell_quote(s) }
}

/// The shells whose `-c` argument is a script (a program's base name).
const SHELLS: &[&str] = &["sh", "bash", "dash", "ash", "ksh", "mksh", "zsh", "busybox"];

/// In a command's words, the index of each shell script: the operand after a shell's
/// options when they include `-c` (`sh -c`, `bash -ec`, `bash -o pipefail -c`, also
/// behind a wrapper such as `timeout 5 sh -c` or `nsenter -t 1 -n sh -c`).
pub fn shell_scripts(words: &[String]) -> Vec<usize> {
    let mut found = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let base = words[i].rsplit('/').next().unwrap_or("");
        if !SHELLS.contains(&base) {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        if base == "busybox" && words.get(j).is_some_and(|w| SHELLS.contains(&w.as_str())) {
            j += 1;
        }
        let mut c = false;
        while let Some(w) = words.get(j) {
            if w == "--" {
                j += 1;
                break;
            }
            if (w.starts_with('-') || w.starts_with('+')) && w.len() > 1 && !w.starts_with("--") {
                c |= w.contains('c');
                if w[1..].starts_with('o') && w.len() == 2 {
                    j += 1;
                }
                j += 1;
                continue;
            }
            if w.starts_with("--") {
                j += 1;
                continue;
            }
            break;
        }
        if c && j < words.len() {
            found.push(j);
        }
        i = j.max(i + 1);
    }
    found
}

/// The first `{{ ... }}` of a shell script (the `-c` argument of a shell) whose value is
/// not passed through `shell_quote` as its last filter: that value would be shell code
/// (`-e 'v=x; touch /tmp/pwned #'`). `{% ... %}` blocks only choose fixed text and are
/// allowed. Values belong in the words after the script, read as `"$1"`.
pub fn unquoted_in_shell_script(script: &str) -> Option<String> {
    // `… | shell_quote` as the last filter.
    let quoted = |inner: &str| {
        inner
            .strip_suffix("shell_quote")
            .is_some_and(|r| r.trim_end().ends_with('|'))
    };
    let mut rest = script;
    while let Some(at) = rest.find("{{") {
        let after = &rest[at + 2..];
        let Some(end) = after.find("}}") else {
            return Some(after.trim().to_string());
        };
        let inner = after[..end]
            .trim_start_matches(['-', '+'])
            .trim_end_matches(['-', '+'])
            .trim();
        if !quoted(inner) {
            return Some(inner.to_string());
        }
        rest = &after[end + 2..];
    }
    None
}

/// Of `names` (those `src` reads), the ones `src` uses other than as a bare
/// `{{ NAME }}`: in a filter, an expression or a `{% ... %}` block.
pub fn names_not_bare(src: &str, names: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = src;
    while let Some(at) = rest.find(['{']) {
        let after = &rest[at + 1..];
        let close = match after.chars().next() {
            Some('{') => "}}",
            Some('%') => "%}",
            _ => {
                rest = after;
                continue;
            }
        };
        let body = &after[1..];
        let end = body.find(close).unwrap_or(body.len());
        let inner = body[..end]
            .trim_start_matches(['-', '+'])
            .trim_end_matches(['-', '+'])
            .trim();
        // The identifiers the segment uses, each once (a name is a whole identifier:
        // `pw` is not in `pwd`).
        let words: BTreeSet<&str> = inner
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .collect();
        for n in names {
            if words.contains(n.as_str()) && !(close == "}}" && inner == n) {
                out.insert(n.clone());
            }
        }
        rest = &body[(end + close.len()).min(body.len())..];
    }
    out
}

pub fn is_template(src: &str) -> bool {
    src.contains("{{") || src.contains("{%") || src.contains("{#")
}

/// Check a template's syntax; return the top-level variable names it reads.
pub fn check(src: &str) -> Result<BTreeSet<String>, String> {
    if !is_template(src) {
        return Ok(BTreeSet::new());
    }
    let env = env();
    let t = env.template_from_str(src).map_err(|e| describe(&e))?;
    Ok(t.undeclared_variables(false).into_iter().collect())
}

/// Check a `when:` expression; return the variable names it reads.
pub fn check_expr(src: &str) -> Result<BTreeSet<String>, String> {
    let env = env();
    let e = env.compile_expression(src).map_err(|e| describe(&e))?;
    Ok(e.undeclared_variables(false).into_iter().collect())
}

/// A variable's value as it reads in a rendered command: a string as itself, anything
/// else as its JSON text (`8`, `true`, `["a"]`).
pub fn json_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Render a template string against a context.
pub fn render(src: &str, ctx: &Value) -> Result<String, String> {
    if !is_template(src) {
        return Ok(src.to_string());
    }
    env().render_str(src, ctx.clone()).map_err(|e| describe(&e))
}

/// Evaluate a `when:` expression for truthiness.
/// An expression compiled once, evaluated for many items (an etcd step's keys):
/// `Compiled::new(&env, src)` with the environment from [`environment`].
pub struct Compiled<'e>(minijinja::Expression<'e, 'e>);

/// The environment expressions are compiled in (kfix's filters, strict undefined).
pub fn environment() -> Environment<'static> {
    env()
}

impl<'e> Compiled<'e> {
    pub fn new(env: &'e Environment<'static>, src: &'e str) -> Result<Self, String> {
        env.compile_expression(src)
            .map(Compiled)
            .map_err(|e| describe(&e))
    }

    /// The expression's value; undefined is an error.
    pub fn value(&self, src: &str, ctx: &Value) -> Result<Value, String> {
        let v = self.0.eval(ctx.clone()).map_err(|e| describe(&e))?;
        if v.is_undefined() {
            return Err(format!("`{src}` is undefined"));
        }
        Ok(v)
    }
}

pub fn eval_bool(src: &str, ctx: &Value) -> Result<bool, String> {
    let env = env();
    let e = env.compile_expression(src).map_err(|e| describe(&e))?;
    let v = e.eval(ctx.clone()).map_err(|e| describe(&e))?;
    if v.is_undefined() {
        return Err(format!("`{src}` is undefined"));
    }
    Ok(v.is_true())
}

/// Render every string inside a JSON value (keys stay literal).
pub fn render_json(v: &serde_json::Value, ctx: &Value) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    Ok(match v {
        J::String(s) => J::String(render(s, ctx)?),
        J::Array(a) => J::Array(
            a.iter()
                .map(|x| render_json(x, ctx))
                .collect::<Result<_, _>>()?,
        ),
        J::Object(o) => J::Object(
            o.iter()
                .map(|(k, x)| Ok((k.clone(), render_json(x, ctx)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_undefined_is_an_error() {
        let ctx = Value::from(minijinja::value::Serde(serde_json::json!({"a": "x"})));
        assert_eq!(render("{{ a }}-y", &ctx).as_deref(), Ok("x-y"));
        let e = render("{{ b }}", &ctx).expect_err("undefined");
        assert!(e.contains("undefined"), "{e}");
    }

    #[test]
    fn check_reports_variables_and_syntax() {
        let vars =
            check("{{ a }} {{ facts.hostname }} {% for x in l %}{{ x }}{% endfor %}").expect("ok");
        assert_eq!(
            vars.into_iter().collect::<Vec<_>>(),
            vec!["a", "facts", "l"]
        );
        assert!(check("{{ a ").is_err());
        assert!(check("no template").expect("ok").is_empty());
    }

    #[test]
    fn shell_scripts_are_found_behind_options_and_wrappers() {
        let w = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            shell_scripts(&w(&["sh", "-c", "x", "kfix", "{{ v }}"])),
            [2]
        );
        assert_eq!(
            shell_scripts(&w(&["/bin/bash", "-e", "-o", "pipefail", "-c", "x"])),
            [5]
        );
        assert_eq!(shell_scripts(&w(&["bash", "-ec", "x"])), [2]);
        assert_eq!(shell_scripts(&w(&["timeout", "5", "sh", "-c", "x"])), [4]);
        assert_eq!(shell_scripts(&w(&["busybox", "sh", "-c", "x"])), [3]);
        assert!(shell_scripts(&w(&["sh", "/usr/local/bin/script.sh", "-c"])).is_empty());
        assert!(shell_scripts(&w(&["ip", "route", "show"])).is_empty());
        assert!(shell_scripts(&w(&["sh", "-c"])).is_empty());
    }

    #[test]
    fn a_value_in_a_shell_script_must_be_shell_quoted() {
        assert_eq!(unquoted_in_shell_script("test -e \"/x/$1\""), None);
        assert_eq!(
            unquoted_in_shell_script("test -e /x/{{ v }}").as_deref(),
            Some("v")
        );
        assert_eq!(
            unquoted_in_shell_script("test -e {{ v | shell_quote }} && {{- w -}}").as_deref(),
            Some("w")
        );
        assert_eq!(
            unquoted_in_shell_script("{% if v %}a{% endif %} {{ v|shell_quote }}"),
            None
        );
        assert!(unquoted_in_shell_script("{{ v | shell_quote | upper }}").is_some());
        // The filter's output is one word, whatever the value holds.
        let v = "x'; touch /tmp/pwned #\n$(id)";
        let out = std::process::Command::new("sh")
            .args(["-c", &format!("printf %s {}", shell_quote(v))])
            .output()
            .expect("sh");
        assert_eq!(out.stdout, v.as_bytes());
    }

    #[test]
    fn names_used_other_than_bare_are_found() {
        let names: BTreeSet<String> = ["pw".to_string(), "x".to_string()].into();
        let got = |s: &str| names_not_bare(s, &names).into_iter().collect::<Vec<_>>();
        assert!(got("token={{ pw }} {{x}} {{- pw -}}").is_empty());
        assert_eq!(got("{{ pw | reverse }}"), ["pw"]);
        assert_eq!(got("{{ pw[0] }}{{ x }}"), ["pw"]);
        assert_eq!(got("{% if pw %}{{ x ~ 'a' }}{% endif %}"), ["pw", "x"]);
        assert_eq!(got("{{ pwd }}"), Vec::<String>::new());
    }

    #[test]
    fn hostile_values_are_rendered_verbatim() {
        let evil = "; rm -rf / $(id) `id` 'q' \"d\"\n-x ünï";
        let ctx = Value::from(minijinja::value::Serde(serde_json::json!({"v": evil})));
        assert_eq!(render("{{ v }}", &ctx).expect("renders"), evil);
    }

    #[test]
    fn runaway_loops_run_out_of_fuel() {
        let ctx = Value::from(minijinja::value::Serde(serde_json::json!({})));
        let e = render(
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            &ctx,
        );
        assert!(e.is_err());
    }

    #[test]
    fn network_filters_compute_from_what_a_node_says_and_refuse_the_rest() {
        let ctx = Value::from(minijinja::value::Serde(serde_json::json!({
            "addr": "192.168.2.17/24", "net": "10.244.0.0/16", "sub": "10.244.0.1/24", "bad": "eth0"
        })));
        let r = |t: &str| render(t, &ctx);
        assert_eq!(r("{{ addr | network }}").as_deref(), Ok("192.168.2.0/24"));
        assert_eq!(r("{{ addr | ip }}").as_deref(), Ok("192.168.2.17"));
        assert_eq!(r("{{ sub | prefixlen }}").as_deref(), Ok("24"));
        assert_eq!(
            r("{{ net | address_outside(sub) }}").as_deref(),
            Ok("10.244.1.1")
        );
        assert!(
            r("{{ bad | network }}")
                .expect_err("not an address")
                .contains("eth0")
        );
        assert_eq!(
            r("{{ sub | network | host(2) }}").as_deref(),
            Ok("10.244.0.2")
        );
        assert!(r("{{ sub | host(256) }}").is_err());
        assert_eq!(
            r("{{ addr | regex_escape }}").as_deref(),
            Ok(r"192\.168\.2\.17/24")
        );
        assert!(eval_bool("(sub | network) == '10.244.0.0/24'", &ctx).expect("evaluates"));
    }

    #[test]
    fn when_expressions() {
        let ctx = Value::from(minijinja::value::Serde(
            serde_json::json!({"persist": false, "n": 3}),
        ));
        assert_eq!(eval_bool("persist", &ctx), Ok(false));
        assert_eq!(eval_bool("n > 2", &ctx), Ok(true));
        assert!(eval_bool("nope", &ctx).is_err());
    }
}
