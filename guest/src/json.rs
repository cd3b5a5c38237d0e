//! A small JSON value, parser and compact serializer.
//!
//! Written for the wasm size budget (see the crate docs: serde_json and sha2 would add about
//! 50 KB to a 107 KB component). Properties:
//!
//! * objects keep their members in source order; a repeated key keeps the position of its
//!   first occurrence and the value of its last (as Go's `encoding/json` keeps the last value);
//! * numbers are kept as their source text (validated against the JSON grammar), so they
//!   round-trip byte for byte and no precision is lost;
//! * strings support every escape, including `\u` surrogate pairs; a lone surrogate is an error;
//! * nesting is limited to [`MAX_DEPTH`] so that hostile input cannot exhaust the stack;
//! * [`Value::to_json`] is compact and deterministic: the same value always gives the same bytes.

/// The deepest nesting of arrays and objects the parser accepts.
pub const MAX_DEPTH: usize = 128;

/// A JSON value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, as its source text.
    Number(String),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<Value>),
    /// An object, members in order.
    Object(Vec<(String, Value)>),
}

/// A parse error: what went wrong and at which byte offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// What is wrong.
    pub message: String,
    /// Byte offset into the input.
    pub offset: usize,
}

impl ParseError {
    /// `"<message> at byte <offset>"`.
    pub fn describe(&self) -> String {
        crate::text::fill(
            "{m} at byte {o}",
            &[("m", &self.message), ("o", &crate::text::num(self.offset))],
        )
    }
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Value {
    /// Builds a string value.
    #[inline(never)] // one copy in wasm, not one per call site
    pub fn str(s: &str) -> Value {
        Value::String(s.to_string())
    }

    /// Builds an array of strings.
    pub fn str_array<S: AsRef<str>>(items: &[S]) -> Value {
        Value::Array(items.iter().map(|s| Value::str(s.as_ref())).collect())
    }

    /// Builds an object from `(key, value)` pairs, in order.
    #[inline(never)] // one copy in wasm, not one per call site
    pub fn object(members: Vec<(&str, Value)>) -> Value {
        Value::Object(
            members
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    }

    /// The member `key` of an object (`None` for other values or an absent key).
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Follows a path of object keys.
    pub fn pointer(&self, path: &[&str]) -> Option<&Value> {
        path.iter().try_fold(self, |v, key| v.get(key))
    }

    /// The string, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The items, if this is an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }

    /// The members, if this is an object.
    pub fn as_object(&self) -> Option<&[(String, Value)]> {
        match self {
            Value::Object(members) => Some(members),
            _ => None,
        }
    }

    /// The name of this value's JSON type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "a list",
            Value::Object(_) => "an object",
        }
    }

    /// Compact, deterministic JSON text.
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        write_value(&mut out, self);
        out
    }
}

/// `s` as a JSON string literal, for quoting user text in messages (smaller in wasm than
/// `{:?}`, which pulls in Unicode tables).
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    write_string(&mut out, s);
    out
}

/// Parses one JSON text (surrounding whitespace allowed, nothing else after it).
pub fn parse(input: &str) -> Result<Value, ParseError> {
    let mut p = Parser {
        src: input,
        bytes: input.as_bytes(),
        pos: 0,
    };
    p.skip_ws();
    let v = p.value(0)?;
    p.skip_ws();
    if p.pos != p.bytes.len() {
        return Err(p.error("trailing characters after the JSON value"));
    }
    Ok(v)
}

struct Parser<'a> {
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, message: &str) -> ParseError {
        ParseError {
            message: message.to_string(),
            offset: self.pos,
        }
    }

    /// The source text from `start` to the current position (empty if not on char
    /// boundaries, which the callers rule out: both ends are next to ASCII bytes).
    fn slice(&self, start: usize) -> &str {
        self.src.get(start..self.pos).unwrap_or_default()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn expect_literal(&mut self, lit: &str, v: Value) -> Result<Value, ParseError> {
        if self.bytes[self.pos..].starts_with(lit.as_bytes()) {
            self.pos += lit.len();
            Ok(v)
        } else {
            Err(self.error("invalid literal"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, ParseError> {
        match self.peek() {
            None => Err(self.error("unexpected end of input")),
            Some(b'n') => self.expect_literal("null", Value::Null),
            Some(b't') => self.expect_literal("true", Value::Bool(true)),
            Some(b'f') => self.expect_literal("false", Value::Bool(false)),
            Some(b'"') => self.string().map(Value::String),
            Some(b'[') => self.array(depth + 1),
            Some(b'{') => self.object(depth + 1),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.error("unexpected character")),
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, ParseError> {
        if depth > MAX_DEPTH {
            return Err(self.error("nesting too deep"));
        }
        self.pos += 1; // '['
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.skip_ws();
            items.push(self.value(depth)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(self.error("expected ',' or ']' in a list")),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, ParseError> {
        /// Objects with at least this many members get a key index.
        const INDEX_OBJECTS_FROM: usize = 16;
        if depth > MAX_DEPTH {
            return Err(self.error("nesting too deep"));
        }
        self.pos += 1; // '{'
        let mut members: Vec<(String, Value)> = Vec::new();
        // Duplicate keys: the last value wins, in the first key's place (as serde_json's
        // preserve_order map). A linear scan for small objects; an index once an object is
        // large, so that an object of N keys is not O(N²) (a module gets untrusted input).
        let mut index: Option<std::collections::BTreeMap<String, usize>> = None;
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Object(members));
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a string key in an object"));
            }
            let key = self.string()?;
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.error("expected ':' after an object key"));
            }
            self.pos += 1;
            self.skip_ws();
            let value = self.value(depth)?;
            if index.is_none() && members.len() >= INDEX_OBJECTS_FROM {
                index = Some(
                    members
                        .iter()
                        .enumerate()
                        .map(|(i, (k, _))| (k.clone(), i))
                        .collect(),
                );
            }
            let found = match &index {
                Some(ix) => ix.get(&key).copied(),
                None => members.iter().position(|(k, _)| *k == key),
            };
            match found {
                Some(i) => members[i].1 = value,
                None => {
                    if let Some(ix) = index.as_mut() {
                        ix.insert(key.clone(), members.len());
                    }
                    members.push((key, value));
                }
            }
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Value::Object(members));
                }
                _ => return Err(self.error("expected ',' or '}' in an object")),
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<Value, ParseError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.error("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(self.error("invalid number: no digits after '.'"));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(self.error("invalid number: no digits in the exponent"));
            }
        }
        // The range holds ASCII digits and signs, so it is on char boundaries.
        Ok(Value::Number(self.slice(start).to_string()))
    }

    fn hex4(&mut self) -> Result<u32, ParseError> {
        let mut n = 0u32;
        for _ in 0..4 {
            let d = match self.peek() {
                Some(c @ b'0'..=b'9') => c - b'0',
                Some(c @ b'a'..=b'f') => c - b'a' + 10,
                Some(c @ b'A'..=b'F') => c - b'A' + 10,
                _ => return Err(self.error("invalid \\u escape")),
            };
            n = n * 16 + u32::from(d);
            self.pos += 1;
        }
        Ok(n)
    }

    fn unicode_escape(&mut self) -> Result<char, ParseError> {
        let first = self.hex4()?;
        let code = match first {
            0xD800..=0xDBFF => {
                if !self.bytes[self.pos..].starts_with(b"\\u") {
                    return Err(self.error("lone high surrogate in \\u escape"));
                }
                self.pos += 2;
                let second = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return Err(self.error("invalid low surrogate in \\u escape"));
                }
                0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err(self.error("lone low surrogate in \\u escape")),
            c => c,
        };
        char::from_u32(code).ok_or_else(|| self.error("invalid \\u escape"))
    }

    fn string(&mut self) -> Result<String, ParseError> {
        self.pos += 1; // opening quote
        let mut out = String::new();
        loop {
            // Copy the run of plain bytes at once; the input is a &str, and the run ends at an
            // ASCII byte ('"', '\\' or a control character), so it is a char boundary.
            let start = self.pos;
            self.pos = plain_run(self.bytes, start);
            out.push_str(self.slice(start));
            match self.peek() {
                None => return Err(self.error("unterminated string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let c = self
                        .peek()
                        .ok_or_else(|| self.error("unterminated string"))?;
                    self.pos += 1;
                    match c {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => out.push(self.unicode_escape()?),
                        _ => {
                            self.pos -= 1;
                            return Err(self.error("invalid escape in string"));
                        }
                    }
                }
                Some(_) => return Err(self.error("control character in string")),
            }
        }
    }
}

fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(n),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(members) => {
            out.push('{');
            for (i, (k, item)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, k);
                out.push(':');
                write_value(out, item);
            }
            out.push('}');
        }
    }
}

/// Whether a byte must be escaped in a JSON string: `"`, `\` or a control character.
fn needs_escape(b: u8) -> bool {
    b == b'"' || b == b'\\' || b < 0x20
}

/// Whether some byte of the little-endian word `w` must be escaped ([`needs_escape`]).
///
/// The word tricks are exact as a yes/no answer: `(x - 0x0101…) & !x & 0x8080…` is nonzero
/// iff some byte of `x` is zero, and `(w - 0x2020…) & !w & 0x8080…` iff some byte of `w` is
/// below 0x20 (a byte with its high bit set is never below it, and `!w` clears those).
fn word_needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGHS;
    control | zero_byte(w ^ (ONES * u64::from(b'"'))) | zero_byte(w ^ (ONES * u64::from(b'\\')))
        != 0
}

/// The index of the first byte at or after `start` that must be escaped, or the length.
///
/// Eight bytes at a time: a byte-by-byte loop was the guest's largest fixed cost (the VAP's
/// CEL text is written once per call, ~20 KB: 36 % of a call natively at N = 0, and more in
/// wasm). The run ends at an ASCII byte, so in a `&str` it is a char boundary.
fn plain_run(bytes: &[u8], start: usize) -> usize {
    let mut i = start;
    for chunk in bytes.get(start..).unwrap_or_default().chunks_exact(8) {
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        if word_needs_escape(word) {
            break;
        }
        i += 8;
    }
    while bytes.get(i).is_some_and(|&b| !needs_escape(b)) {
        i += 1;
    }
    i
}

/// Writes `s` as a JSON string literal: `"` and `\` escaped, control characters as
/// `\n`/`\r`/`\t`/`\b`/`\f` or `\u00XX`; everything else (including non-ASCII) verbatim.
/// Copies unescaped runs whole, found eight bytes at a time ([`plain_run`]).
fn write_string(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(s.len() + 2);
    out.push('"');
    let mut start = 0;
    loop {
        let i = plain_run(bytes, start);
        out.push_str(s.get(start..i).unwrap_or_default());
        let Some(&b) = bytes.get(i) else { break };
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            _ => {
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
            }
        }
        start = i + 1;
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    #[test]
    fn duplicate_keys_in_large_objects_keep_the_first_place_and_the_last_value() {
        let mut text = String::from("{");
        for i in 0..40 {
            text.push_str(&format!("\"k{i}\":{i},"));
        }
        text.push_str("\"k3\":\"last\",\"k39\":0,\"new\":1}");
        let v = super::parse(&text).expect("json");
        let super::Value::Object(m) = v else {
            panic!("an object")
        };
        assert_eq!(m.len(), 41);
        assert_eq!(m[3].0, "k3");
        assert_eq!(m[3].1, super::Value::String("last".into()));
        assert_eq!(m[39].1, super::Value::Number("0".into()));
        assert_eq!(m[40].0, "new");
    }

    use super::*;

    fn roundtrip(s: &str) -> String {
        parse(s)
            .map(|v| v.to_json())
            .unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn parses_scalars() {
        assert_eq!(parse("null"), Ok(Value::Null));
        assert_eq!(parse(" true "), Ok(Value::Bool(true)));
        assert_eq!(parse("false"), Ok(Value::Bool(false)));
        assert_eq!(parse("\"x\""), Ok(Value::str("x")));
        assert_eq!(parse("-0.5e+10"), Ok(Value::Number("-0.5e+10".into())));
    }

    #[test]
    fn numbers_keep_their_source_text() {
        for n in [
            "0",
            "-0",
            "12345678901234567890123",
            "1.0",
            "1E5",
            "1e-7",
            "3.14159",
        ] {
            assert_eq!(roundtrip(n), n);
        }
    }

    #[test]
    fn rejects_bad_numbers() {
        for n in [
            "01", "1.", ".5", "-", "+1", "1e", "1e+", "0x10", "NaN", "Infinity",
        ] {
            assert!(parse(n).is_err(), "{n} must be rejected");
        }
    }

    #[test]
    fn objects_keep_order_and_the_last_duplicate() {
        assert_eq!(
            roundtrip(r#"{"b":1,"a":2,"c":3}"#),
            r#"{"b":1,"a":2,"c":3}"#
        );
        assert_eq!(roundtrip(r#"{"a":1,"b":2,"a":3}"#), r#"{"a":3,"b":2}"#);
        let v = parse(r#"{"a":{"b":{"c":"d"}}}"#).unwrap();
        assert_eq!(
            v.pointer(&["a", "b", "c"]).and_then(Value::as_str),
            Some("d")
        );
        assert_eq!(v.pointer(&["a", "x"]), None);
    }

    #[test]
    fn compact_output_drops_whitespace() {
        assert_eq!(
            roundtrip(" { \"a\" : [ 1 , 2 , { } , [ ] ] ,\n\t\"b\" : null } "),
            r#"{"a":[1,2,{},[]],"b":null}"#
        );
    }

    #[test]
    fn the_word_scan_finds_the_first_byte_to_escape() {
        // Every ASCII byte at every place of a 17-byte run, from every start: the word scan
        // stops where a byte-by-byte scan does.
        for b in 0..=0x7fu8 {
            for at in 0..17 {
                let mut bytes = *b"abcdefghijklmnopq";
                bytes[at] = b;
                for start in 0..17 {
                    let slow = (start..17).find(|&i| needs_escape(bytes[i])).unwrap_or(17);
                    assert_eq!(
                        plain_run(&bytes, start),
                        slow,
                        "{b:#x} at {at} from {start}"
                    );
                }
            }
        }
        // Bytes of non-ASCII text never need escaping (lead and continuation bytes).
        let text = "é\u{7f}ü€😀 — aaaaaaaa\u{1f}";
        assert_eq!(plain_run(text.as_bytes(), 0), text.len() - 1);
        let long = r#""aaaaaaaa\"bbbbbbbbbbbbbbbb\\cccccccc\u0001dddddddd\n""#;
        assert_eq!(roundtrip(long), long);
    }

    #[test]
    fn string_escapes() {
        let v = parse(r#""q\" b\\ s\/ \b\f\n\r\t \u0041\u00e9\u4e2d""#).unwrap();
        assert_eq!(v, Value::str("q\" b\\ s/ \u{8}\u{c}\n\r\t Aé中"));
        assert_eq!(v.to_json(), "\"q\\\" b\\\\ s/ \\b\\f\\n\\r\\t Aé中\"");
        // Other control characters use \u00XX.
        assert_eq!(Value::str("\u{1}\u{1f}").to_json(), r#""\u0001\u001f""#);
    }

    #[test]
    fn surrogate_pairs() {
        assert_eq!(parse(r#""\ud83d\ude00""#), Ok(Value::str("😀")));
        assert_eq!(parse(r#""\uD834\uDD1E""#), Ok(Value::str("𝄞")));
        assert_eq!(Value::str("😀").to_json(), "\"😀\"");
        for bad in [
            r#""\ud83d""#,
            r#""\ud83dx""#,
            r#""\ud83d\u0041""#,
            r#""\ude00""#,
            r#""\u12""#,
            r#""\uzzzz""#,
        ] {
            assert!(parse(bad).is_err(), "{bad} must be rejected");
        }
    }

    #[test]
    fn utf8_passes_through() {
        assert_eq!(roundtrip("\"héllo wörld ✓\""), "\"héllo wörld ✓\"");
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in [
            "",
            "   ",
            "{",
            "[1,]",
            "[1 2]",
            "{\"a\" 1}",
            "{\"a\":1,}",
            "{a:1}",
            "\"abc",
            "\"a\nb\"",
            "\"\\x\"",
            "nul",
            "truex",
            "[] []",
            "'a'",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn depth_is_limited() {
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse(&ok).is_ok());
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(parse(&deep).is_err());
        let hostile = "{\"a\":".repeat(100_000);
        assert!(parse(&hostile).is_err());
    }

    #[test]
    fn agrees_with_serde_json() {
        let samples = [
            r#"{"apiVersion":"v1","items":[1,2.5,-3e2,true,false,null,"s\u00e9"],"nested":{"k":[{"a":[]}]}}"#,
            r#"["\ud83d\ude00", "tab\there", "\u0000", "slash\/"]"#,
        ];
        for s in samples {
            let ours = parse(s).unwrap().to_json();
            let theirs: serde_json::Value = serde_json::from_str(s).unwrap();
            let reparsed: serde_json::Value = serde_json::from_str(&ours).unwrap();
            assert_eq!(reparsed, theirs);
        }
    }

    #[test]
    fn builders() {
        let v = Value::object(vec![
            ("b", Value::str_array(&["x", "y"])),
            ("a", Value::Bool(false)),
        ]);
        assert_eq!(v.to_json(), r#"{"b":["x","y"],"a":false}"#);
        assert_eq!(v.type_name(), "an object");
        assert_eq!(v.get("a"), Some(&Value::Bool(false)));
        assert_eq!(Value::Null.get("a"), None);
    }
}
