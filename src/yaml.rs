//! YAML with positions: parse text into a [`Node`] tree (every node knows its line and
//! column) and deserialize typed models from it, so each error points at its token.
//!
//! Parsing uses serde-saphyr (a maintained, panic-free successor of the deprecated
//! serde_yaml, with budgets against alias bombs and deep nesting); see docs/design.md.

use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};
use serde::{Deserialize, Deserializer};

use crate::diag::Pos;

/// A YAML value with the position it was written at.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub kind: Kind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Null => "null",
            Kind::Bool(_) => "a boolean",
            Kind::Int(_) | Kind::UInt(_) => "an integer",
            Kind::Float(_) => "a number",
            Kind::Str(_) => "a string",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The entries of a mapping node.
    pub fn entries(&self) -> Option<&[(Node, Node)]> {
        match &self.kind {
            Kind::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The value under `key` in a mapping node.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entries()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// A scalar as text (numbers and booleans formatted), for string contexts.
    pub fn scalar_text(&self) -> Option<String> {
        match &self.kind {
            Kind::Str(s) => Some(s.clone()),
            Kind::Bool(b) => Some(b.to_string()),
            Kind::Int(i) => Some(i.to_string()),
            Kind::UInt(u) => Some(u.to_string()),
            Kind::Float(f) => Some(f.to_string()),
            Kind::Null | Kind::Seq(_) | Kind::Map(_) => None,
        }
    }

    /// The node as a JSON value (positions dropped), e.g. for variables.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.kind {
            Kind::Null => Value::Null,
            Kind::Bool(b) => Value::Bool(*b),
            Kind::Int(i) => Value::from(*i),
            Kind::UInt(u) => Value::from(*u),
            Kind::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Kind::Str(s) => Value::String(s.clone()),
            Kind::Seq(v) => Value::Array(v.iter().map(Node::to_json).collect()),
            Kind::Map(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| (k.scalar_text().unwrap_or_default(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// An error in YAML text or in the shape of a node, with its position when known.
#[derive(Clone, Debug, PartialEq)]
pub struct Error {
    pub pos: Option<Pos>,
    pub message: String,
}

impl Error {
    fn or_at(mut self, pos: Pos) -> Self {
        if self.pos.is_none() {
            self.pos = Some(pos);
        }
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error {
            pos: None,
            message: msg.to_string(),
        }
    }
}

/// Parse YAML text into a node tree. The document must be a single document; budgets
/// bound aliases, depth and size so hostile input fails cleanly.
pub fn parse(text: &str) -> Result<Node, Error> {
    let options = serde_saphyr::options! {
        strict_booleans: true,
        with_snippet: false,
    };
    serde_saphyr::from_str_with_options::<Node>(text, options).map_err(|e| {
        let pos = e.location().and_then(|l| {
            (l.line() > 0).then(|| Pos {
                line: usize::try_from(l.line()).unwrap_or(usize::MAX),
                col: usize::try_from(l.column()).unwrap_or(usize::MAX),
            })
        });
        let message = e.without_snippet().to_string();
        // serde-saphyr appends its own position; ours is shown separately.
        let message = match message.rfind(" at line ") {
            Some(i) => message[..i].to_string(),
            None => message,
        };
        Error { pos, message }
    })
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = serde_saphyr::Spanned::<Kind>::deserialize(d)?;
        let line = usize::try_from(s.referenced.line()).unwrap_or(0);
        let col = usize::try_from(s.referenced.column()).unwrap_or(0);
        Ok(Node {
            pos: Pos { line, col },
            kind: s.value,
        })
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Kind;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Kind, E> {
                Ok(Kind::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Kind, E> {
                Ok(Kind::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Kind, D::Error> {
                Kind::deserialize(d)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Kind, E> {
                Ok(Kind::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Kind, E> {
                Ok(Kind::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Kind, E> {
                Ok(i64::try_from(v).map_or(Kind::UInt(v), Kind::Int))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Kind, E> {
                Ok(Kind::Float(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Kind, E> {
                Ok(Kind::Str(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Kind, E> {
                Ok(Kind::Str(v))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut a: A) -> Result<Kind, A::Error> {
                let mut v = Vec::new();
                while let Some(n) = a.next_element::<Node>()? {
                    v.push(n);
                }
                Ok(Kind::Seq(v))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut a: A) -> Result<Kind, A::Error> {
                let mut m = Vec::new();
                while let Some(k) = a.next_key::<Node>()? {
                    let v = a.next_value::<Node>()?;
                    m.push((k, v));
                }
                Ok(Kind::Map(m))
            }
        }
        d.deserialize_any(V)
    }
}

/// A value with the position of the YAML node it was read from. Only the [`Node`]
/// deserializer fills the position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct At<T> {
    pub pos: Pos,
    pub value: T,
}

/// A positioned value is described as the value itself.
impl<T: schemars::JsonSchema> schemars::JsonSchema for At<T> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }
    fn schema_id() -> std::borrow::Cow<'static, str> {
        T::schema_id()
    }
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(g)
    }
}

const AT_MARKER: &str = "__kfix_at";

impl<'de, T: Deserialize<'de>> Deserialize<'de> for At<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = At<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a value")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut a: A) -> Result<At<T>, A::Error> {
                let line: usize = a.next_element()?.unwrap_or(0);
                let col: usize = a.next_element()?.unwrap_or(0);
                let value = a
                    .next_element()?
                    .ok_or_else(|| de::Error::custom("missing value"))?;
                Ok(At {
                    pos: Pos { line, col },
                    value,
                })
            }
        }
        d.deserialize_newtype_struct(AT_MARKER, V(std::marker::PhantomData))
    }
}

/// Deserialize a typed value from a node; errors carry the position of the innermost
/// node involved.
pub fn from_node<'de, T: Deserialize<'de>>(node: &'de Node) -> Result<T, Error> {
    T::deserialize(node).map_err(|e| e.or_at(node.pos))
}

struct SeqNodes<'de> {
    iter: std::slice::Iter<'de, Node>,
}

impl<'de> de::SeqAccess<'de> for SeqNodes<'de> {
    type Error = Error;
    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, Error> {
        match self.iter.next() {
            Some(n) => seed.deserialize(n).map(Some).map_err(|e| e.or_at(n.pos)),
            None => Ok(None),
        }
    }
}

struct MapNodes<'de> {
    iter: std::slice::Iter<'de, (Node, Node)>,
    value: Option<&'de Node>,
}

impl<'de> de::MapAccess<'de> for MapNodes<'de> {
    type Error = Error;
    fn next_key_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, Error> {
        match self.iter.next() {
            Some((k, v)) => {
                self.value = Some(v);
                seed.deserialize(k).map(Some).map_err(|e| e.or_at(k.pos))
            }
            None => Ok(None),
        }
    }
    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, Error> {
        let v = self
            .value
            .take()
            .ok_or_else(|| <Error as de::Error>::custom("value without key"))?;
        seed.deserialize(v).map_err(|e| e.or_at(v.pos))
    }
}

/// The position triple fed to [`At`]'s visitor: line, column, then the node itself.
struct AtSeq<'de> {
    node: &'de Node,
    i: u8,
}

impl<'de> de::SeqAccess<'de> for AtSeq<'de> {
    type Error = Error;
    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, Error> {
        self.i += 1;
        match self.i {
            1 => seed
                .deserialize(self.node.pos.line.into_deserializer())
                .map(Some),
            2 => seed
                .deserialize(self.node.pos.col.into_deserializer())
                .map(Some),
            3 => seed.deserialize(self.node).map(Some),
            _ => Ok(None),
        }
    }
}

struct EnumNode<'de> {
    tag: &'de Node,
    value: Option<&'de Node>,
}

impl<'de> de::EnumAccess<'de> for EnumNode<'de> {
    type Error = Error;
    type Variant = Self;
    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Self), Error> {
        let v = seed
            .deserialize(self.tag)
            .map_err(|e| e.or_at(self.tag.pos))?;
        Ok((v, self))
    }
}

impl<'de> de::VariantAccess<'de> for EnumNode<'de> {
    type Error = Error;
    fn unit_variant(self) -> Result<(), Error> {
        match self.value {
            None => Ok(()),
            Some(n) => Err(Error {
                pos: Some(n.pos),
                message: "this variant takes no value".into(),
            }),
        }
    }
    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, Error> {
        match self.value {
            Some(n) => seed.deserialize(n),
            None => Err(Error {
                pos: Some(self.tag.pos),
                message: "this variant needs a value".into(),
            }),
        }
    }
    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        match self.value {
            Some(n) => de::Deserializer::deserialize_seq(n, visitor),
            None => Err(<Error as de::Error>::custom("expected a list")),
        }
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        _f: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.value {
            Some(n) => de::Deserializer::deserialize_map(n, visitor),
            None => Err(<Error as de::Error>::custom("expected a mapping")),
        }
    }
}

impl<'de> de::Deserializer<'de> for &'de Node {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        let r = match &self.kind {
            Kind::Null => v.visit_unit(),
            Kind::Bool(b) => v.visit_bool(*b),
            Kind::Int(i) => v.visit_i64(*i),
            Kind::UInt(u) => v.visit_u64(*u),
            Kind::Float(f) => v.visit_f64(*f),
            Kind::Str(s) => v.visit_borrowed_str(s),
            Kind::Seq(items) => v.visit_seq(SeqNodes { iter: items.iter() }),
            Kind::Map(m) => v.visit_map(MapNodes {
                iter: m.iter(),
                value: None,
            }),
        };
        r.map_err(|e| e.or_at(self.pos))
    }

    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        self.deserialize_string(v)
    }

    /// Scalars read as text where a string is expected (`value: 1` is the string "1").
    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        let r = match &self.kind {
            Kind::Str(s) => v.visit_borrowed_str(s),
            Kind::Bool(_) | Kind::Int(_) | Kind::UInt(_) | Kind::Float(_) => {
                v.visit_string(self.scalar_text().unwrap_or_default())
            }
            _ => return self.deserialize_any(v),
        };
        r.map_err(|e: Error| e.or_at(self.pos))
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        match self.kind {
            Kind::Null => v.visit_none(),
            _ => v.visit_some(self),
        }
        .map_err(|e| e.or_at(self.pos))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        v: V,
    ) -> Result<V::Value, Error> {
        if name == AT_MARKER {
            return v.visit_seq(AtSeq { node: self, i: 0 });
        }
        v.visit_newtype_struct(self).map_err(|e| e.or_at(self.pos))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Error> {
        let access = match &self.kind {
            Kind::Str(_) => EnumNode {
                tag: self,
                value: None,
            },
            Kind::Map(m) if m.len() == 1 => EnumNode {
                tag: &m[0].0,
                value: Some(&m[0].1),
            },
            _ => {
                return Err(Error {
                    pos: Some(self.pos),
                    message: format!(
                        "expected a name or a one-key mapping, found {}",
                        self.type_name()
                    ),
                });
            }
        };
        v.visit_enum(access).map_err(|e| e.or_at(self.pos))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct T {
        name: At<String>,
        count: Option<u32>,
        #[serde(default)]
        tags: Vec<String>,
    }

    #[test]
    fn positions_of_values_and_errors() {
        let n = parse("name: web\ncount: 3\ntags: [a, 1]\n").expect("parses");
        let t: T = from_node(&n).expect("typed");
        assert_eq!(t.name.value, "web");
        assert_eq!(t.name.pos, Pos { line: 1, col: 7 });
        assert_eq!(t.count, Some(3));
        assert_eq!(t.tags, vec!["a", "1"]);

        let n = parse("name: web\ncount: many\n").expect("parses");
        let e = from_node::<T>(&n).expect_err("wrong type");
        assert_eq!(e.pos, Some(Pos { line: 2, col: 8 }));
        assert!(e.message.contains("invalid type"), "{}", e.message);

        let n = parse("name: web\ncolour: red\n").expect("parses");
        let e = from_node::<T>(&n).expect_err("unknown field");
        assert_eq!(e.pos, Some(Pos { line: 2, col: 1 }));
        assert!(
            e.message.starts_with("unknown field `colour`"),
            "{}",
            e.message
        );

        let n = parse("count: 1\n").expect("parses");
        let e = from_node::<T>(&n).expect_err("missing");
        assert_eq!(e.pos, Some(Pos { line: 1, col: 1 }));
        assert_eq!(e.message, "missing field `name`");
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = parse("a: [1, 2\nb: c\n").expect_err("bad yaml");
        assert!(e.pos.is_some(), "{e:?}");
    }

    #[test]
    fn alias_bomb_is_rejected() {
        let mut s = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            s.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        assert!(parse(&s).is_err());
    }
}
