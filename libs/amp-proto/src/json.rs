//! Canonical JSON for payload hashing.
//!
//! The payload hash is computed over the payload **as received**, never over a struct round
//! trip: a struct would drop unknown fields, reorder keys or reformat numbers, and the hash
//! the sender signed would no longer match. This module parses raw JSON text into a light
//! tree that keeps each number's literal text and each object's key order, then writes it
//! back in one of the forms senders are known to hash:
//!
//! * [`CanonicalForm::SORTED`]: keys sorted by UTF-8 bytes at every level, compact, raw UTF-8,
//!   numbers printed as jq 1.6 prints them. This is the form of the spec's test vectors and of
//!   the shell client (`jq -cS`).
//! * the same with JavaScript number formatting (`JSON.stringify` of a sorted object);
//! * the same with numbers kept as their literal text;
//! * insertion order (older clients, `JSON.stringify(payload)`), with raw UTF-8 or with
//!   Python's `ensure_ascii` escaping (`json.dumps(payload, separators=(',', ':'))`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;

/// A JSON value that borrows from the text it was parsed from where it can.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// A number, kept as its literal text.
    Number(&'a str),
    /// A string, with escapes decoded.
    String(Cow<'a, str>),
    /// An array.
    Array(Vec<Value<'a>>),
    /// An object in received key order; a repeated key keeps its first position and its last
    /// value (what both `JSON.parse` and jq do).
    Object(Vec<(Cow<'a, str>, Value<'a>)>),
}

/// Why a text is not JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid JSON at byte {offset}: {reason}")]
pub struct ParseError {
    /// Byte offset where parsing stopped.
    pub offset: usize,
    /// What was wrong there.
    pub reason: &'static str,
}

/// How numbers are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberStyle {
    /// As jq 1.6 prints them (the shell client): via `f64`, shortest round-trip digits,
    /// exponent form when the decimal point is more than 15 places past the digits or at
    /// least 4 places before them (`1e+20`, `1e-05`), `-0` kept.
    Jq16,
    /// As JavaScript's `JSON.stringify` prints them: shortest digits, exponent from `1e21` and
    /// below `1e-6`, `-0` printed as `0`.
    JavaScript,
    /// The literal text as received.
    Literal,
}

/// How non-ASCII text is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StringStyle {
    /// Raw UTF-8; only `"`, `\`, control characters and DEL escaped (jq 1.6).
    Utf8,
    /// Raw UTF-8; only `"`, `\` and control characters escaped (JavaScript).
    Utf8KeepDel,
    /// Everything outside printable ASCII escaped as `\uXXXX` (Python `ensure_ascii`).
    Ascii,
}

/// The order object members are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrder {
    /// Sorted by UTF-8 bytes at every level (jq `-S`).
    Sorted,
    /// As received.
    Received,
    /// As a JavaScript object holds them after its keys were inserted sorted: array-index keys
    /// (`"0"`, `"17"`) first in numeric order, then the others sorted by UTF-8 bytes.
    JsSorted,
    /// As a JavaScript object holds them after `JSON.parse`: array-index keys first in numeric
    /// order, then the others as received.
    JsReceived,
}

/// One way of writing a JSON value compactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CanonicalForm {
    /// Member order.
    pub keys: KeyOrder,
    /// Number formatting.
    pub numbers: NumberStyle,
    /// String escaping.
    pub strings: StringStyle,
}

impl CanonicalForm {
    /// The primary form: the test vectors and `jq -cS`.
    pub const SORTED: Self = Self {
        keys: KeyOrder::Sorted,
        numbers: NumberStyle::Jq16,
        strings: StringStyle::Utf8,
    };
    /// Sorted keys, JavaScript numbers and strings (`JSON.stringify` of a key-sorted object).
    pub const SORTED_JS: Self = Self {
        keys: KeyOrder::JsSorted,
        numbers: NumberStyle::JavaScript,
        strings: StringStyle::Utf8KeepDel,
    };
    /// Sorted keys, numbers as their literal text.
    pub const SORTED_LITERAL: Self = Self {
        keys: KeyOrder::Sorted,
        numbers: NumberStyle::Literal,
        strings: StringStyle::Utf8,
    };
    /// Received key order, JavaScript formatting (`JSON.stringify(payload)`).
    pub const INSERTION: Self = Self {
        keys: KeyOrder::JsReceived,
        numbers: NumberStyle::JavaScript,
        strings: StringStyle::Utf8KeepDel,
    };
    /// Received key order, numbers and strings as received: the compact form of the input.
    pub const AS_RECEIVED: Self = Self {
        keys: KeyOrder::Received,
        numbers: NumberStyle::Literal,
        strings: StringStyle::Utf8KeepDel,
    };
    /// Received key order, Python `json.dumps(payload, separators=(',', ':'))`.
    pub const INSERTION_ASCII: Self = Self {
        keys: KeyOrder::Received,
        numbers: NumberStyle::Literal,
        strings: StringStyle::Ascii,
    };
}

/// Parses JSON text; trailing whitespace is allowed, anything else after the value is not.
/// A key repeated in an object keeps its first position and its last value.
///
/// Fails on anything that is not a single well-formed JSON value, or nested deeper than
/// [`MAX_DEPTH`].
pub fn parse(text: &str) -> Result<Value<'_>, ParseError> {
    parse_with(text, false)
}

/// [`parse`], refusing any object that repeats a key (at any depth).
///
/// Parsers disagree on which of two equal keys wins (first, last, or an error), so a payload
/// with one could show our validation one `message` and a client another; the spec's wire
/// format forbids them. Fails as [`parse`] does, and with [`DUPLICATE_KEY`] as the reason.
pub fn parse_strict(text: &str) -> Result<Value<'_>, ParseError> {
    parse_with(text, true)
}

/// The [`ParseError::reason`] of a repeated object key in [`parse_strict`].
pub const DUPLICATE_KEY: &str = "duplicate object key";

/// Members an object may have before its keys are looked up through a hash map rather than
/// by a scan (a scan per member is quadratic in a hostile object of many keys).
const SCAN_MEMBERS: usize = 16;

fn parse_with(text: &str, unique_keys: bool) -> Result<Value<'_>, ParseError> {
    let mut p = Parser {
        src: text,
        bytes: text.as_bytes(),
        pos: 0,
        depth: 0,
        unique_keys,
    };
    p.skip_ws();
    let v = p.value()?;
    p.skip_ws();
    if p.pos != p.bytes.len() {
        return Err(p.err("trailing characters"));
    }
    Ok(v)
}

/// Maximum nesting depth accepted (arrays and objects), so hostile input cannot exhaust the
/// stack.
pub const MAX_DEPTH: usize = 128;

struct Parser<'a> {
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
    depth: usize,
    unique_keys: bool,
}

impl<'a> Parser<'a> {
    fn err(&self, reason: &'static str) -> ParseError {
        ParseError {
            offset: self.pos,
            reason,
        }
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, lit: &str) -> Result<(), ParseError> {
        if self.bytes[self.pos..].starts_with(lit.as_bytes()) {
            self.pos += lit.len();
            Ok(())
        } else {
            Err(self.err("invalid literal"))
        }
    }

    fn value(&mut self) -> Result<Value<'a>, ParseError> {
        match self.bytes.get(self.pos) {
            None => Err(self.err("unexpected end of input")),
            Some(b'n') => self.eat("null").map(|()| Value::Null),
            Some(b't') => self.eat("true").map(|()| Value::Bool(true)),
            Some(b'f') => self.eat("false").map(|()| Value::Bool(false)),
            Some(b'"') => self.string().map(Value::String),
            Some(b'[') => self.array(),
            Some(b'{') => self.object(),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.err("unexpected character")),
        }
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err("nesting too deep"));
        }
        Ok(())
    }

    fn array(&mut self) -> Result<Value<'a>, ParseError> {
        self.enter()?;
        self.pos += 1;
        let mut items = Vec::new();
        self.skip_ws();
        if self.bytes.get(self.pos) == Some(&b']') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.skip_ws();
            items.push(self.value()?);
            self.skip_ws();
            match self.bytes.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    self.depth -= 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(self.err("expected ',' or ']'")),
            }
        }
    }

    fn object(&mut self) -> Result<Value<'a>, ParseError> {
        self.enter()?;
        self.pos += 1;
        let mut members: Vec<(Cow<'a, str>, Value<'a>)> = Vec::new();
        let mut index: Option<HashMap<Cow<'a, str>, usize>> = None;
        self.skip_ws();
        if self.bytes.get(self.pos) == Some(&b'}') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(Value::Object(members));
        }
        loop {
            self.skip_ws();
            if self.bytes.get(self.pos) != Some(&b'"') {
                return Err(self.err("expected object key"));
            }
            let key = self.string()?;
            self.skip_ws();
            if self.bytes.get(self.pos) != Some(&b':') {
                return Err(self.err("expected ':'"));
            }
            self.pos += 1;
            self.skip_ws();
            let value = self.value()?;
            let found = match &index {
                Some(map) => map.get(&key).copied(),
                None => members.iter().position(|(k, _)| *k == key),
            };
            match found {
                Some(_) if self.unique_keys => return Err(self.err(DUPLICATE_KEY)),
                Some(i) => members[i].1 = value,
                None => {
                    if let Some(map) = &mut index {
                        map.insert(key.clone(), members.len());
                    }
                    members.push((key, value));
                    if index.is_none() && members.len() > SCAN_MEMBERS {
                        index = Some(
                            members
                                .iter()
                                .enumerate()
                                .map(|(i, (k, _))| (k.clone(), i))
                                .collect(),
                        );
                    }
                }
            }
            self.skip_ws();
            match self.bytes.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    self.depth -= 1;
                    return Ok(Value::Object(members));
                }
                _ => return Err(self.err("expected ',' or '}'")),
            }
        }
    }

    fn number(&mut self) -> Result<Value<'a>, ParseError> {
        let start = self.pos;
        if self.bytes.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        match self.bytes.get(self.pos) {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.err("invalid number")),
        }
        if self.bytes.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            if !matches!(self.bytes.get(self.pos), Some(b'0'..=b'9')) {
                return Err(self.err("invalid number"));
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.bytes.get(self.pos) {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.bytes.get(self.pos) {
                self.pos += 1;
            }
            if !matches!(self.bytes.get(self.pos), Some(b'0'..=b'9')) {
                return Err(self.err("invalid number"));
            }
            self.digits();
        }
        Ok(Value::Number(&self.src[start..self.pos]))
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    fn string(&mut self) -> Result<Cow<'a, str>, ParseError> {
        self.pos += 1; // opening quote
        let start = self.pos;
        // Fast path: no escapes.
        loop {
            match self.bytes.get(self.pos) {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    let s = &self.src[start..self.pos];
                    self.pos += 1;
                    return Ok(Cow::Borrowed(s));
                }
                Some(b'\\') => break,
                Some(0x00..=0x1f) => return Err(self.err("control character in string")),
                Some(_) => self.pos += 1,
            }
        }
        let mut out = String::with_capacity(self.pos - start + 16);
        out.push_str(&self.src[start..self.pos]);
        loop {
            match self.bytes.get(self.pos) {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(Cow::Owned(out));
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let c = match self.bytes.get(self.pos) {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            self.pos += 1;
                            let c = self.unicode_escape()?;
                            out.push(c);
                            continue;
                        }
                        _ => return Err(self.err("invalid escape")),
                    };
                    self.pos += 1;
                    out.push(c);
                }
                Some(0x00..=0x1f) => return Err(self.err("control character in string")),
                Some(_) => {
                    // Copy one whole UTF-8 character; `src` is a str so boundaries are valid.
                    let rest = &self.src[self.pos..];
                    let next = rest.find(['"', '\\']).unwrap_or(rest.len());
                    let chunk = &rest[..next];
                    if chunk.bytes().any(|b| b < 0x20) {
                        return Err(self.err("control character in string"));
                    }
                    out.push_str(chunk);
                    self.pos += next;
                }
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, ParseError> {
        let h = self
            .bytes
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| self.err("short unicode escape"))?;
        let mut v = 0u32;
        for &b in h {
            let d = (b as char)
                .to_digit(16)
                .ok_or_else(|| self.err("invalid unicode escape"))?;
            v = v * 16 + d;
        }
        self.pos += 4;
        Ok(v)
    }

    /// Decodes `XXXX` (after `\u`), joining surrogate pairs. A lone surrogate becomes U+FFFD,
    /// as jq does.
    fn unicode_escape(&mut self) -> Result<char, ParseError> {
        let hi = self.hex4()?;
        if (0xD800..0xDC00).contains(&hi) {
            if self.bytes[self.pos..].starts_with(b"\\u") {
                let save = self.pos;
                self.pos += 2;
                let lo = self.hex4()?;
                if (0xDC00..0xE000).contains(&lo) {
                    let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                    return Ok(char::from_u32(c).unwrap_or('\u{FFFD}'));
                }
                self.pos = save;
            }
            return Ok('\u{FFFD}');
        }
        Ok(char::from_u32(hi).unwrap_or('\u{FFFD}'))
    }
}

impl Value<'_> {
    /// Writes this value compactly in `form`, appending to `out`.
    pub fn write(&self, form: CanonicalForm, out: &mut String) {
        match self {
            Value::Null => out.push_str("null"),
            Value::Bool(true) => out.push_str("true"),
            Value::Bool(false) => out.push_str("false"),
            Value::Number(lit) => write_number(lit, form.numbers, out),
            Value::String(s) => write_string(s, form.strings, out),
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(form, out);
                }
                out.push(']');
            }
            Value::Object(members) => {
                out.push('{');
                if form.keys == KeyOrder::Received || members.len() < 2 {
                    write_members(members.iter(), form, out);
                } else {
                    let mut ordered: Vec<&(Cow<'_, str>, Value<'_>)> = members.iter().collect();
                    match form.keys {
                        KeyOrder::Sorted => {
                            ordered.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                        }
                        KeyOrder::JsSorted => ordered.sort_by(|a, b| {
                            js_index(&a.0)
                                .cmp(&js_index(&b.0))
                                .then_with(|| a.0.as_bytes().cmp(b.0.as_bytes()))
                        }),
                        KeyOrder::JsReceived | KeyOrder::Received => {
                            ordered.sort_by_key(|m| js_index(&m.0));
                        }
                    }
                    write_members(ordered.into_iter(), form, out);
                }
                out.push('}');
            }
        }
    }

    /// This value written compactly in `form`.
    pub fn to_canonical(&self, form: CanonicalForm) -> String {
        let mut out = String::new();
        self.write(form, &mut out);
        out
    }
}

/// Sort key putting JavaScript array-index keys (`0` … `4294967294`, canonical digits) first
/// in numeric order; every other key compares equal (`u64::MAX`), so a stable sort keeps
/// their order.
fn js_index(key: &str) -> u64 {
    let canonical = !key.is_empty()
        && key.len() <= 10
        && key.bytes().all(|b| b.is_ascii_digit())
        && (key == "0" || !key.starts_with('0'));
    match key.parse::<u64>() {
        Ok(n) if canonical && n < u64::from(u32::MAX) => n,
        _ => u64::MAX,
    }
}

fn write_members<'v, 'a: 'v>(
    members: impl Iterator<Item = &'v (Cow<'a, str>, Value<'a>)>,
    form: CanonicalForm,
    out: &mut String,
) {
    for (i, (k, v)) in members.enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(k, form.strings, out);
        out.push(':');
        v.write(form, out);
    }
}

fn write_string(s: &str, style: StringStyle, out: &mut String) {
    out.push('"');
    let mut plain_from = 0;
    for (i, c) in s.char_indices() {
        let escape: Option<&str> = match c {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            '\u{8}' => Some("\\b"),
            '\u{c}' => Some("\\f"),
            _ => None,
        };
        let needs_hex = match c {
            '\u{0}'..='\u{1f}' => escape.is_none(),
            '\u{7f}' => style != StringStyle::Utf8KeepDel,
            c if !c.is_ascii() => style == StringStyle::Ascii,
            _ => false,
        };
        if escape.is_none() && !needs_hex {
            continue;
        }
        out.push_str(&s[plain_from..i]);
        plain_from = i + c.len_utf8();
        if let Some(e) = escape {
            out.push_str(e);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{u:04x}");
            }
        }
    }
    out.push_str(&s[plain_from..]);
    out.push('"');
}

fn write_number(lit: &str, style: NumberStyle, out: &mut String) {
    if style == NumberStyle::Literal {
        out.push_str(lit);
        return;
    }
    // The grammar checked by the parser is a subset of what `f64::from_str` accepts.
    let mut x: f64 = lit.parse().unwrap_or(0.0);
    if x.is_infinite() {
        // jq 1.6 clamps to ±DBL_MAX; JavaScript would print null, which no sender signs.
        x = f64::MAX.copysign(x);
    }
    if x == 0.0 {
        out.push_str(if x.is_sign_negative() && style == NumberStyle::Jq16 {
            "-0"
        } else {
            "0"
        });
        return;
    }
    if x < 0.0 {
        out.push('-');
    }
    // Shortest round-trip digits and decimal exponent, from Rust's own shortest formatting.
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let ndigits = digits.len() as i32;
    let decpt = exp + 1; // position of the decimal point relative to the first digit
    let exponential = match style {
        NumberStyle::Jq16 => decpt <= -4 || decpt > ndigits + 15,
        _ => !(-6 < decpt && decpt <= 21),
    };
    if exponential {
        out.push_str(&digits[..1]);
        if ndigits > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let e = decpt - 1;
        match style {
            NumberStyle::Jq16 => {
                let _ = write!(out, "e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs());
            }
            _ => {
                let _ = write!(out, "e{}{}", if e < 0 { '-' } else { '+' }, e.abs());
            }
        }
    } else if decpt <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-decpt) as usize));
        out.push_str(&digits);
    } else if decpt >= ndigits {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (decpt - ndigits) as usize));
    } else {
        out.push_str(&digits[..decpt as usize]);
        out.push('.');
        out.push_str(&digits[decpt as usize..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jq(text: &str) -> String {
        parse(text)
            .expect("valid json")
            .to_canonical(CanonicalForm::SORTED)
    }

    #[test]
    fn numbers_as_jq_16_prints_them() {
        // Expected values produced by `jq -cS .` of jq 1.6 (Debian bookworm).
        assert_eq!(
            jq(
                r#"{"b":1.0,"a":[1e3,-0,100000000000000000001,0.00001,0.0001,1e17,1e16,123456789012345678,1.5e300]}"#
            ),
            r#"{"a":[1000,-0,1e+20,1e-05,0.0001,1e+17,1e+16,123456789012345680,1.5e+300],"b":1}"#
        );
        assert_eq!(
            jq("[1e400,-1e400]"),
            "[1.7976931348623157e+308,-1.7976931348623157e+308]"
        );
        assert_eq!(
            jq("[0.1,2.5,-3.25e-2,12345.678]"),
            "[0.1,2.5,-0.0325,12345.678]"
        );
    }

    #[test]
    fn numbers_as_javascript_prints_them() {
        let v =
            parse("[1.0,1e3,-0,1e21,1e20,0.000001,0.0000001,123456789012345678]").expect("json");
        assert_eq!(
            v.to_canonical(CanonicalForm::SORTED_JS),
            "[1,1000,0,1e+21,100000000000000000000,0.000001,1e-7,123456789012345680]"
        );
    }

    #[test]
    fn strings_escaped_as_jq_does() {
        let v = parse(r#"["\u007f\u0001é\u2028\"\\\/\n\t😀"]"#).expect("json");
        assert_eq!(
            v.to_canonical(CanonicalForm::SORTED),
            "[\"\\u007f\\u0001é\u{2028}\\\"\\\\/\\n\\t😀\"]"
        );
        assert_eq!(
            v.to_canonical(CanonicalForm::INSERTION_ASCII),
            "[\"\\u007f\\u0001\\u00e9\\u2028\\\"\\\\/\\n\\t\\ud83d\\ude00\"]"
        );
    }

    #[test]
    fn javascript_puts_index_keys_first() {
        let v = parse(r#"{"b":1,"10":2,"2":3,"a":4,"01":5}"#).expect("json");
        assert_eq!(
            v.to_canonical(CanonicalForm::SORTED_JS),
            r#"{"2":3,"10":2,"01":5,"a":4,"b":1}"#
        );
        assert_eq!(
            v.to_canonical(CanonicalForm::INSERTION),
            r#"{"2":3,"10":2,"b":1,"a":4,"01":5}"#
        );
        assert_eq!(
            v.to_canonical(CanonicalForm::SORTED),
            r#"{"01":5,"10":2,"2":3,"a":4,"b":1}"#
        );
    }

    #[test]
    fn strict_parsing_refuses_repeated_keys_at_any_depth() {
        for text in [
            r#"{"message":"a","message":"b"}"#,
            r#"{"context":{"x":1,"y":2,"x":3}}"#,
            r#"[{"k":1,"k":1}]"#,
        ] {
            assert_eq!(
                parse_strict(text).map_err(|e| e.reason),
                Err(DUPLICATE_KEY),
                "{text}"
            );
            assert!(parse(text).is_ok(), "{text}");
        }
        // Past the scan threshold the keys are looked up in a map: same answers.
        let many: Vec<String> = (0..40).map(|i| format!(r#""k{i}":{i}"#)).collect();
        let unique = format!("{{{}}}", many.join(","));
        assert!(parse_strict(&unique).is_ok());
        let repeated = format!(r#"{{{},"k3":0}}"#, many.join(","));
        assert_eq!(
            parse_strict(&repeated).map_err(|e| e.reason),
            Err(DUPLICATE_KEY)
        );
        assert_eq!(
            jq(&repeated),
            jq(&format!(
                "{{{}}}",
                many.join(",").replace(r#""k3":3"#, r#""k3":0"#)
            ))
        );
    }

    #[test]
    fn keys_sorted_by_bytes_at_every_level_and_duplicates_keep_last() {
        assert_eq!(
            jq(r#"{"b":{"z":1,"é":2,"a":3},"a":[{"y":1,"x":2}],"b2":null,"a":0}"#),
            r#"{"a":0,"b":{"a":3,"z":1,"é":2},"b2":null}"#
        );
    }

    #[test]
    fn rejects_malformed_and_too_deep_input() {
        for bad in [
            "",
            "{",
            "[1,]",
            "{\"a\"}",
            "01",
            "1.",
            "\"\\x\"",
            "tru",
            "[1] 2",
            "\"a\u{1}\"",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should fail");
        }
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(parse(&deep).is_err());
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn surrogates_join_and_lone_ones_become_replacement() {
        assert_eq!(jq(r#""\ud83d\ude00""#), "\"😀\"");
        assert_eq!(jq(r#""\ud83dx""#), "\"\u{FFFD}x\"");
    }
}
