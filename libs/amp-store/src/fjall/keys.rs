//! Composite keys as byte strings that sort as the tuples they encode, so a keyspace's
//! byte order is redb's tuple order and a key range is a tuple range.
//!
//! - A string (or byte string) is its bytes with each `0x00` written `0x00 0xFF`, then the
//!   terminator `0x00 0x01`: a shorter string sorts before every longer one it prefixes, and
//!   the encoding of a component is a prefix of every key that starts with it. Nothing we
//!   store is known to hold `0x00` (ids are checked at ingest), but kv keys are free text, so
//!   escaping is cheaper than proving it.
//! - A `u64` is 8 bytes big-endian; an `i64` the same with its sign bit flipped, so negative
//!   numbers sort before positive ones.
//!
//! Every encoded key is non-empty (fjall refuses empty keys), a string's at least its
//! terminator.

use crate::{Error, Result};

/// Escapes `0x00` inside a string component.
const ESCAPE: u8 = 0xFF;
/// Ends a string component (`0x00` then this).
const END: u8 = 0x01;

/// A key being built, component by component.
#[derive(Debug, Default, Clone)]
pub(super) struct Key(Vec<u8>);

impl Key {
    /// An empty key.
    pub(super) fn new() -> Self {
        Self(Vec::with_capacity(48))
    }

    /// Appends a string component.
    pub(super) fn str(self, s: &str) -> Self {
        self.bytes(s.as_bytes())
    }

    /// Appends a byte-string component.
    pub(super) fn bytes(mut self, b: &[u8]) -> Self {
        for &x in b {
            self.0.push(x);
            if x == 0 {
                self.0.push(ESCAPE);
            }
        }
        self.0.extend_from_slice(&[0, END]);
        self
    }

    /// Appends a `u64` component.
    pub(super) fn u64(mut self, n: u64) -> Self {
        self.0.extend_from_slice(&n.to_be_bytes());
        self
    }

    /// Appends an `i64` component.
    pub(super) fn i64(self, n: i64) -> Self {
        self.u64(flip(n))
    }

    /// The encoded key.
    pub(super) fn done(self) -> Vec<u8> {
        self.0
    }
}

/// The key of one string: `Key::new().str(s)`.
pub(super) fn one(s: &str) -> Vec<u8> {
    Key::new().str(s).done()
}

/// `n` with its sign bit flipped, as a `u64` that sorts as `n` does.
fn flip(n: i64) -> u64 {
    (n as u64) ^ (1 << 63)
}

/// Reads a key's components back, in the order they were written.
pub(super) struct Reader<'a>(&'a [u8]);

/// A key that does not decode.
fn corrupt(what: &str) -> Error {
    Error::Corrupt(format!("fjall key: {what}"))
}

impl<'a> Reader<'a> {
    /// Reads `key` from its first component.
    pub(super) fn new(key: &'a [u8]) -> Self {
        Self(key)
    }

    /// The next string component.
    ///
    /// Fails when it is not terminated or not UTF-8.
    pub(super) fn str(&mut self) -> Result<String> {
        String::from_utf8(self.bytes()?).map_err(|_| corrupt("component is not UTF-8"))
    }

    /// The next byte-string component.
    ///
    /// Fails when it is not terminated or has a bad escape.
    pub(super) fn bytes(&mut self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.0.len());
        let mut i = 0;
        loop {
            match (self.0.get(i), self.0.get(i + 1)) {
                (Some(0), Some(&END)) => {
                    self.0 = &self.0[i + 2..];
                    return Ok(out);
                }
                (Some(0), Some(&ESCAPE)) => {
                    out.push(0);
                    i += 2;
                }
                (Some(0), _) => return Err(corrupt("bad escape")),
                (Some(&x), _) => {
                    out.push(x);
                    i += 1;
                }
                (None, _) => return Err(corrupt("unterminated component")),
            }
        }
    }

    /// The next `u64` component.
    ///
    /// Fails when fewer than 8 bytes are left.
    pub(super) fn u64(&mut self) -> Result<u64> {
        let Some((n, rest)) = self.0.split_first_chunk::<8>() else {
            return Err(corrupt("truncated integer"));
        };
        self.0 = rest;
        Ok(u64::from_be_bytes(*n))
    }

    /// The next `i64` component.
    ///
    /// Fails when fewer than 8 bytes are left.
    pub(super) fn i64(&mut self) -> Result<i64> {
        Ok((self.u64()? ^ (1 << 63)) as i64)
    }
}

/// A stored `u64` value (8 bytes big-endian).
///
/// Fails when the value is not 8 bytes.
pub(super) fn u64_value(b: &[u8]) -> Result<u64> {
    <[u8; 8]>::try_from(b)
        .map(u64::from_be_bytes)
        .map_err(|_| Error::Corrupt("fjall value: not an 8-byte integer".into()))
}

/// A stored `i64` value (8 bytes big-endian, two's complement).
///
/// Fails when the value is not 8 bytes.
pub(super) fn i64_value(b: &[u8]) -> Result<i64> {
    u64_value(b).map(|n| n as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted<T: Ord + Clone>(mut v: Vec<T>) -> Vec<T> {
        v.sort();
        v
    }

    #[test]
    fn strings_sort_as_tuples() {
        let tuples: Vec<(String, String)> = [
            ("", ""),
            ("", "a"),
            ("a", ""),
            ("a", "\0"),
            ("a", "\0\0"),
            ("a", "\u{1}"),
            ("a", "b"),
            ("a\0", ""),
            ("a\0b", "a"),
            ("a\u{1}", ""),
            ("ab", ""),
            ("ab", "zz"),
            ("b", ""),
            ("é", "x"),
            ("\u{10FFFF}", "y"),
        ]
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
        let by_tuple = sorted(tuples.clone());
        let mut by_key = tuples.clone();
        by_key.sort_by_key(|(a, b)| Key::new().str(a).str(b).done());
        assert_eq!(by_key, by_tuple);
    }

    #[test]
    fn integers_sort_as_numbers() {
        let signed = [
            i64::MIN,
            -1_000_000,
            -1,
            0,
            1,
            255,
            256,
            1_700_000_000_000,
            i64::MAX,
        ];
        for w in signed.windows(2) {
            assert!(
                Key::new().i64(w[0]).done() < Key::new().i64(w[1]).done(),
                "{w:?}"
            );
        }
        let unsigned = [0, 1, 255, 256, 65_536, u64::MAX - 1, u64::MAX];
        for w in unsigned.windows(2) {
            assert!(
                Key::new().u64(w[0]).done() < Key::new().u64(w[1]).done(),
                "{w:?}"
            );
        }
    }

    #[test]
    fn mixed_tuples_sort_as_tuples() {
        let mut tuples = Vec::new();
        for t in [-5i64, 0, 7, 1_700_000_000_000] {
            for a in ["", "a", "a\0", "ab", "b"] {
                for s in [0u64, 1, 300, u64::MAX] {
                    tuples.push((t, a.to_owned(), s));
                }
            }
        }
        let by_tuple = sorted(tuples.clone());
        let mut by_key = tuples.clone();
        by_key.sort_by_key(|(t, a, s)| Key::new().i64(*t).str(a).u64(*s).done());
        assert_eq!(by_key, by_tuple);
    }

    #[test]
    fn a_component_prefixes_every_key_that_starts_with_it() {
        let prefix = one("agt_1");
        assert!(Key::new().str("agt_1").u64(9).done().starts_with(&prefix));
        assert!(Key::new().str("agt_1").str("m").done().starts_with(&prefix));
        assert!(!Key::new().str("agt_10").u64(9).done().starts_with(&prefix));
        assert!(!one("").is_empty());
    }

    #[test]
    fn reads_back_what_was_written() {
        let key = Key::new()
            .i64(-42)
            .str("a\0b")
            .bytes(&[0, 0xFF, 1, 0])
            .u64(7)
            .done();
        let mut r = Reader::new(&key);
        assert_eq!(r.i64().expect("i64"), -42);
        assert_eq!(r.str().expect("str"), "a\0b");
        assert_eq!(r.bytes().expect("bytes"), vec![0, 0xFF, 1, 0]);
        assert_eq!(r.u64().expect("u64"), 7);
        assert!(Reader::new(b"abc").str().is_err());
        assert!(Reader::new(&[1, 2, 3]).u64().is_err());
    }
}
