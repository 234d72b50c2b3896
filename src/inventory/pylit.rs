//! Python literals, as Ansible's INI reader evaluates a value (`ast.literal_eval`):
//! strings (with escapes and adjacent ones joined), ints, floats, `True`/`False`/`None`,
//! lists, tuples and dicts, nested. Anything else (a name, an expression, bytes, a set,
//! a complex number, an int too large for JSON) is not a literal: the caller keeps the
//! text as a string, as Ansible does when `literal_eval` raises.

use serde_json::{Map, Value};

/// The value of `s` if the whole of it is a Python literal.
pub fn eval(s: &str) -> Option<Value> {
    let mut p = P {
        s: s.as_bytes(),
        text: s,
        i: 0,
        depth: 0,
    };
    p.ws();
    let v = p.value()?;
    p.ws();
    (p.i == p.s.len()).then_some(v)
}

struct P<'a> {
    s: &'a [u8],
    text: &'a str,
    i: usize,
    depth: usize,
}

/// Nesting deeper than this is not read (a hostile inventory line cannot recurse away).
const MAX_DEPTH: usize = 64;

impl P<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Option<Value> {
        self.ws();
        match self.peek()? {
            b'[' => self.nested(|p| p.seq(b']')),
            b'(' => self.nested(|p| p.tuple()),
            b'{' => self.nested(|p| p.dict()),
            b'\'' | b'"' => self.strings(),
            b'r' | b'R' | b'u' | b'U' if matches!(self.s.get(self.i + 1), Some(b'\'' | b'"')) => {
                self.strings()
            }
            b'-' | b'+' => {
                let neg = self.peek() == Some(b'-');
                self.i += 1;
                self.ws();
                let n = self.number()?;
                if !neg {
                    return Some(n);
                }
                match n {
                    Value::Number(x) if x.is_i64() => x.as_i64()?.checked_neg().map(Value::from),
                    Value::Number(x) if x.is_u64() => {
                        let u = x.as_u64()?;
                        (u == i64::MAX as u64 + 1).then_some(Value::from(i64::MIN))
                    }
                    Value::Number(x) => {
                        serde_json::Number::from_f64(-x.as_f64()?).map(Value::Number)
                    }
                    _ => None,
                }
            }
            b'0'..=b'9' | b'.' => self.number(),
            _ => self.name(),
        }
    }

    fn nested(&mut self, f: impl FnOnce(&mut Self) -> Option<Value>) -> Option<Value> {
        if self.depth >= MAX_DEPTH {
            return None;
        }
        self.depth += 1;
        self.i += 1;
        let v = f(self);
        self.depth -= 1;
        v
    }

    /// Items up to `close` (the opener already read), a trailing comma allowed.
    fn items(&mut self, close: u8) -> Option<(Vec<Value>, bool)> {
        let mut out = Vec::new();
        let mut comma = false;
        loop {
            if self.eat(close) {
                return Some((out, comma));
            }
            out.push(self.value()?);
            comma = self.eat(b',');
            if !comma {
                return self.eat(close).then_some((out, false));
            }
        }
    }

    fn seq(&mut self, close: u8) -> Option<Value> {
        self.items(close).map(|(v, _)| Value::Array(v))
    }

    /// `()`, `(a,)`, `(a, b)` are tuples (arrays); `(a)` is just `a`.
    fn tuple(&mut self) -> Option<Value> {
        let (mut v, comma) = self.items(b')')?;
        match (v.len(), comma) {
            (1, false) => v.pop(),
            _ => Some(Value::Array(v)),
        }
    }

    /// `{}` or `{k: v, ...}`; a set (`{a, b}`) is not JSON: not a literal here.
    fn dict(&mut self) -> Option<Value> {
        let mut m = Map::new();
        loop {
            if self.eat(b'}') {
                return Some(Value::Object(m));
            }
            let k = self.value()?;
            if !self.eat(b':') {
                return None;
            }
            let v = self.value()?;
            let key = match k {
                Value::String(s) => s,
                Value::Array(_) | Value::Object(_) => return None,
                other => other.to_string(),
            };
            m.insert(key, v);
            if !self.eat(b',') {
                return self.eat(b'}').then_some(Value::Object(m));
            }
        }
    }

    fn name(&mut self) -> Option<Value> {
        let start = self.i;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
        {
            self.i += 1;
        }
        match &self.text[start..self.i] {
            "True" => Some(Value::Bool(true)),
            "False" => Some(Value::Bool(false)),
            "None" => Some(Value::Null),
            _ => None,
        }
    }

    /// Ints (decimal without leading zeros, `0x`, `0o`, `0b`, `_` between digits) and
    /// floats (`1.5`, `.5`, `5.`, `1e3`); no `j` (complex).
    fn number(&mut self) -> Option<Value> {
        let start = self.i;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.'))
            || (matches!(self.peek(), Some(b'+' | b'-'))
                && matches!(self.s.get(self.i.wrapping_sub(1)), Some(b'e' | b'E'))
                && !self.text[start..self.i].starts_with("0x")
                && !self.text[start..self.i].starts_with("0X"))
        {
            self.i += 1;
        }
        let raw = &self.text[start..self.i];
        if raw.starts_with('_') || raw.ends_with('_') || raw.contains("__") {
            return None;
        }
        let t = raw.replace('_', "");
        let radix = |p: &str, r: u32| -> Option<Value> {
            let digits = t.get(2..)?;
            (t.len() > 2 && t[..2].eq_ignore_ascii_case(p))
                .then(|| u64::from_str_radix(digits, r).ok().map(Value::from))
                .flatten()
        };
        if t.len() > 2 && t.as_bytes()[0] == b'0' && t.as_bytes()[1].is_ascii_alphabetic() {
            return radix("0x", 16)
                .or_else(|| radix("0o", 8))
                .or_else(|| radix("0b", 2));
        }
        if t.bytes().all(|c| c.is_ascii_digit()) {
            // Python refuses leading zeros in a decimal int ("007"), but not "000".
            if t.len() > 1 && t.starts_with('0') && t.bytes().any(|c| c != b'0') {
                return None;
            }
            return t
                .parse::<i64>()
                .map(Value::from)
                .or_else(|_| t.parse::<u64>().map(Value::from))
                .ok();
        }
        let (mantissa, exp) = match t.find(['e', 'E']) {
            Some(i) => (&t[..i], Some(&t[i + 1..])),
            None => (t.as_str(), None),
        };
        let (int, frac) = match mantissa.split_once('.') {
            Some((a, b)) => (a, Some(b)),
            None => (mantissa, None),
        };
        let digits = |x: &str| x.bytes().all(|c| c.is_ascii_digit());
        let ok = digits(int)
            && frac.is_none_or(digits)
            && (!int.is_empty() || frac.is_some_and(|f| !f.is_empty()))
            && exp.is_none_or(|e| {
                let e = e.strip_prefix(['-', '+']).unwrap_or(e);
                !e.is_empty() && digits(e)
            })
            && (frac.is_some() || exp.is_some());
        if !ok {
            return None;
        }
        let f: f64 = t.parse().ok()?;
        serde_json::Number::from_f64(f).map(Value::Number)
    }

    /// One or more adjacent string literals, joined (`'a' "b"` is `ab`).
    fn strings(&mut self) -> Option<Value> {
        let mut out = String::new();
        loop {
            self.ws();
            let raw = match self.peek() {
                Some(b'r' | b'R') => {
                    self.i += 1;
                    true
                }
                Some(b'u' | b'U') => {
                    self.i += 1;
                    false
                }
                Some(b'\'' | b'"') => false,
                _ => break,
            };
            out.push_str(&self.string(raw)?);
            self.ws();
            if !matches!(self.peek(), Some(b'\'' | b'"' | b'r' | b'R' | b'u' | b'U')) {
                break;
            }
        }
        Some(Value::String(out))
    }

    fn string(&mut self, raw: bool) -> Option<String> {
        let q = self.peek()?;
        if !matches!(q, b'\'' | b'"') {
            return None;
        }
        let triple = self.s.get(self.i..self.i + 3) == Some(&[q, q, q][..]);
        self.i += if triple { 3 } else { 1 };
        let rest = &self.text[self.i..];
        let mut out = String::new();
        let mut chars = rest.char_indices();
        while let Some((at, c)) = chars.next() {
            if c == q as char {
                let end = at + 1;
                if !triple {
                    self.i += end;
                    return Some(out);
                }
                if rest[at..].starts_with(&String::from_utf8(vec![q, q, q]).ok()?) {
                    self.i += at + 3;
                    return Some(out);
                }
                out.push(c);
                continue;
            }
            if c == '\n' && !triple {
                return None;
            }
            if c != '\\' {
                out.push(c);
                continue;
            }
            let (_, e) = chars.next()?;
            if raw {
                out.push('\\');
                out.push(e);
                continue;
            }
            match e {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                '0' => out.push('\0'),
                'a' => out.push('\x07'),
                'b' => out.push('\x08'),
                'f' => out.push('\x0c'),
                'v' => out.push('\x0b'),
                '\n' => {}
                '\\' | '\'' | '"' => out.push(e),
                'x' | 'u' | 'U' => {
                    let n = match e {
                        'x' => 2,
                        'u' => 4,
                        _ => 8,
                    };
                    let hex: String = (0..n)
                        .filter_map(|_| chars.next().map(|(_, h)| h))
                        .collect();
                    let code = u32::from_str_radix(&hex, 16)
                        .ok()
                        .filter(|_| hex.len() == n)?;
                    out.push(char::from_u32(code)?);
                }
                other => {
                    out.push('\\');
                    out.push(other);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn literals_as_ansible_reads_them() {
        for (text, want) in [
            ("42", json!(42)),
            ("-7", json!(-7)),
            ("1_000", json!(1000)),
            ("0x1F", json!(31)),
            ("1.5", json!(1.5)),
            (".5", json!(0.5)),
            ("1e3", json!(1000.0)),
            ("True", json!(true)),
            ("None", Value::Null),
            ("'a b'", json!("a b")),
            ("\"x\\ty\"", json!("x\ty")),
            ("'a' \"b\"", json!("ab")),
            ("r'\\d+'", json!("\\d+")),
            ("{\"role\": \"x\", \"n\": 1}", json!({"role": "x", "n": 1})),
            ("['a=b:NoSchedule']", json!(["a=b:NoSchedule"])),
            ("[1, [2, (3, 4)], {}]", json!([1, [2, [3, 4]], {}])),
            ("(1,)", json!([1])),
            ("(5)", json!(5)),
            ("{1: 'one'}", json!({"1": "one"})),
            ("  [1, 2,]  ", json!([1, 2])),
        ] {
            assert_eq!(eval(text), Some(want), "{text}");
        }
        for text in [
            "007",
            "yes",
            "true",
            "{a:b}",
            "1.2.3",
            "x + 1",
            "{1, 2}",
            "b'x'",
            "1j",
            "'open",
            "[1, 2",
            "",
            "nan",
            "--1",
            "99999999999999999999999",
        ] {
            assert_eq!(eval(text), None, "{text}");
        }
        // Deep nesting is refused, not recursed into.
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(eval(&deep), None);
    }
}
