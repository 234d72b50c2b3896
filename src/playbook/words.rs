//! A command or rule as words: one string split like a shell would (never run by one),
//! each `{{ }}` kept inside its word, or a list of words.

use schemars::JsonSchema;
use serde::Deserialize;

use crate::yaml::At;

/// A string from the playbook with its position; may hold a template.
pub type Text = At<String>;

/// A command or rule written as one string (split like a shell would, but never run
/// by one) or as a list of words. Each word is templated on its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Words(pub Vec<String>);

impl<'de> Deserialize<'de> for Words {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Words;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a command string or a list of words")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Words, E> {
                let words = split_words(s)
                    .map_err(|e| E::custom(format!("cannot split into words: {e}")))?;
                if words.is_empty() {
                    return Err(E::custom("empty command"));
                }
                Ok(Words(words))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Words, A::Error> {
                let mut v = Vec::new();
                while let Some(w) = a.next_element::<String>()? {
                    v.push(w);
                }
                if v.is_empty() {
                    return Err(serde::de::Error::custom("empty command"));
                }
                Ok(Words(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Words {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Words".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A command as one string (split into words like a shell would, but never run by one; each `{{ }}` stays inside its word) or as a list of words.",
            "anyOf": [
                {"type": "string", "minLength": 1},
                {"type": "array", "items": {"type": "string"}, "minItems": 1}
            ]
        })
    }
}

/// Split a command string into words like a shell would (quotes, backslashes), keeping
/// each `{{ ... }}` template expression inside the word it appears in, so a value is
/// rendered into exactly one argument.
pub fn split_words(s: &str) -> Result<Vec<String>, String> {
    const OPEN: char = '\u{e000}';
    const CLOSE: char = '\u{e001}';
    let mut exprs = Vec::new();
    let mut masked = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start..].find("}}") else {
            break;
        };
        masked.push_str(&rest[..start]);
        masked.push(OPEN);
        masked.push_str(&exprs.len().to_string());
        masked.push(CLOSE);
        exprs.push(rest[start..start + len + 2].to_string());
        rest = &rest[start + len + 2..];
    }
    masked.push_str(rest);
    let words = shell_words::split(&masked).map_err(|e| e.to_string())?;
    Ok(words
        .into_iter()
        .map(|w| {
            let mut it = w.split(OPEN);
            let mut out = it.next().unwrap_or("").to_string();
            for part in it {
                if let Some((n, tail)) = part.split_once(CLOSE) {
                    out.push_str(
                        n.parse::<usize>()
                            .ok()
                            .and_then(|i| exprs.get(i))
                            .map_or("", String::as_str),
                    );
                    out.push_str(tail);
                }
            }
            out
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::split_words;

    #[test]
    fn templates_stay_one_word() {
        assert_eq!(
            split_words("-s {{ node_cidr }} -d '{{ a }} b' x{{ c | default('d e') }}y")
                .expect("splits"),
            vec![
                "-s",
                "{{ node_cidr }}",
                "-d",
                "{{ a }} b",
                "x{{ c | default('d e') }}y"
            ]
        );
        assert!(split_words("unterminated 'quote").is_err());
    }
}
