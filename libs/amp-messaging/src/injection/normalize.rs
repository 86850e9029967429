//! Text normalisation before pattern matching (SEC-16), and the obfuscation signals it sees on
//! the way: invisible characters inside words and Latin words with look-alike letters.
//!
//! The pipeline is: drop invisible characters, NFKC, fold look-alikes to ASCII, lowercase,
//! collapse whitespace. Folding runs before lowercasing because a capital Greek Eta looks like
//! `H` but its lowercase form does not look like `h`.

use unicode_normalization::UnicodeNormalization;

/// Zero-width, bidi-control and other invisible formatting characters.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'                      // soft hyphen
            | '\u{034F}'                // combining grapheme joiner
            | '\u{061C}'                // Arabic letter mark
            | '\u{180E}'                // Mongolian vowel separator
            | '\u{200B}'..='\u{200F}'   // zero-width space/joiners, LRM, RLM
            | '\u{202A}'..='\u{202E}'   // bidi embeddings and overrides
            | '\u{2060}'..='\u{2064}'   // word joiner, invisible operators
            | '\u{2066}'..='\u{2069}'   // bidi isolates
            | '\u{FEFF}' // zero-width no-break space / BOM
    )
}

/// Bidi embeddings, overrides and isolates: reorder what the reader sees ("Trojan Source").
fn is_bidi_override(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// The ASCII letter a Cyrillic or Greek look-alike stands for, plus typographic punctuation
/// that patterns write in ASCII. `None` when `c` is not in the table.
pub fn fold_homoglyph(c: char) -> Option<char> {
    let folded = match c {
        // Cyrillic, lowercase.
        'а' => 'a',
        'ԁ' => 'd',
        'е' => 'e',
        'һ' => 'h',
        'і' => 'i',
        'ј' => 'j',
        'к' => 'k',
        'ӏ' => 'l',
        'о' => 'o',
        'р' => 'p',
        'ԛ' => 'q',
        'ѕ' => 's',
        'с' => 'c',
        'у' => 'y',
        'ԝ' => 'w',
        'х' => 'x',
        // Cyrillic, uppercase.
        'А' => 'A',
        'В' => 'B',
        'Е' => 'E',
        'Һ' => 'H',
        'І' => 'I',
        'Ј' => 'J',
        'К' => 'K',
        'М' => 'M',
        'Н' => 'H',
        'О' => 'O',
        'Р' => 'P',
        'Ѕ' => 'S',
        'С' => 'C',
        'Т' => 'T',
        'У' | 'Ү' => 'Y',
        'Х' => 'X',
        'Ԝ' => 'W',
        // Greek, uppercase.
        'Α' => 'A',
        'Β' => 'B',
        'Ε' => 'E',
        'Ζ' => 'Z',
        'Η' => 'H',
        'Ι' => 'I',
        'Κ' => 'K',
        'Μ' => 'M',
        'Ν' => 'N',
        'Ο' => 'O',
        'Ρ' => 'P',
        'Τ' => 'T',
        'Υ' => 'Y',
        'Χ' => 'X',
        // Greek, lowercase.
        'α' => 'a',
        'ι' => 'i',
        'κ' => 'k',
        'ν' => 'v',
        'ο' => 'o',
        'ρ' => 'p',
        'υ' => 'u',
        'χ' => 'x',
        'ϲ' => 'c',
        'ϳ' => 'j',
        // Latin extensions that read as plain letters.
        'ı' => 'i',
        'ȷ' => 'j',
        'ɑ' => 'a',
        'ɡ' => 'g',
        // Typographic punctuation.
        '\u{2018}' | '\u{2019}' | '\u{201B}' | '\u{2032}' => '\'',
        '\u{201C}' | '\u{201D}' | '\u{201F}' | '\u{2033}' => '"',
        '\u{2010}'..='\u{2015}' | '\u{2212}' => '-',
        _ => return None,
    };
    Some(folded)
}

/// Whether `c` is a look-alike *letter* (not folded punctuation).
fn is_homoglyph_letter(c: char) -> bool {
    fold_homoglyph(c).is_some_and(|f| f.is_ascii_alphabetic())
}

/// The text patterns are matched against: invisible characters removed, NFKC, look-alikes
/// folded, lowercased, whitespace runs collapsed to one space and trimmed.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    let visible = text.chars().filter(|c| !is_invisible(*c));
    for c in visible.nfkc() {
        // NFKC can reveal nothing invisible, but it can produce look-alikes (e.g. from
        // compatibility forms), so fold after it.
        let c = fold_homoglyph(c).unwrap_or(c);
        if c.is_whitespace() {
            pending_space = !out.is_empty();
            continue;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        out.extend(c.to_lowercase());
    }
    out
}

/// Whether the original text hides something from a reader or a keyword filter: a bidi
/// override anywhere, an invisible character between two word characters, or a word mixing
/// ASCII letters with look-alike letters.
///
/// Deliberately lenient elsewhere: a leading byte-order mark, a zero-width joiner inside an
/// emoji sequence, or a word written entirely in Cyrillic or Greek are ordinary text.
pub fn has_obfuscation(text: &str) -> bool {
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if is_bidi_override(c) {
            return true;
        }
        if is_invisible(c) {
            let before = chars[..i].iter().rev().find(|c| !is_invisible(**c));
            let after = chars[i + 1..].iter().find(|c| !is_invisible(**c));
            if matches!((before, after), (Some(b), Some(a)) if b.is_alphanumeric() && a.is_alphanumeric())
            {
                return true;
            }
        }
    }
    mixed_script_word(&chars)
}

/// Whether any word (a run of letters, invisible characters ignored) has both an ASCII letter
/// and a look-alike letter.
fn mixed_script_word(chars: &[char]) -> bool {
    let (mut ascii, mut lookalike) = (false, false);
    for &c in chars {
        if is_invisible(c) {
            continue;
        }
        if c.is_alphabetic() {
            ascii |= c.is_ascii_alphabetic();
            lookalike |= is_homoglyph_letter(c);
            if ascii && lookalike {
                return true;
            }
        } else {
            (ascii, lookalike) = (false, false);
        }
    }
    false
}

/// Decodes standard or URL-safe base64 (padding optional). `None` on a character outside
/// both alphabets.
pub fn decode_base64(run: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(run.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in run.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xFF) as u8);
        }
    }
    Some(out)
}

/// Whether decoded bytes read as human text (UTF-8, almost no control characters, several
/// words), which random keys, hashes and binary attachments do not.
pub fn is_readable_text(bytes: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    let total = text.chars().count();
    if total < 16 {
        return false;
    }
    let control = text
        .chars()
        .filter(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        .count();
    let spaces = text.chars().filter(|c| *c == ' ').count();
    control * 20 <= total && spaces >= 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_folds_and_collapses() {
        assert_eq!(
            normalize("  Ign\u{200B}оrе\u{00AD}  ALL\n\tprevious  "),
            "ignore all previous"
        );
        // NFKC: fullwidth and mathematical letters become ASCII.
        assert_eq!(normalize("ｉｇｎｏｒｅ 𝐚𝐥𝐥"), "ignore all");
        // Greek capitals fold before lowercasing.
        assert_eq!(normalize("ΗΕΛΛΟ"), "heλλo");
        assert_eq!(
            normalize("don\u{2019}t \u{201C}x\u{201D} rm \u{2013}rf"),
            "don't \"x\" rm -rf"
        );
    }

    #[test]
    fn obfuscation_signals() {
        assert!(has_obfuscation("ig\u{200B}nore"));
        assert!(has_obfuscation("abc \u{202E}fdp.exe"));
        assert!(has_obfuscation("ignоre")); // Cyrillic o inside a Latin word
        assert!(!has_obfuscation("\u{FEFF}Hello, world"));
        assert!(!has_obfuscation("family: 👨\u{200D}👩\u{200D}👧"));
        assert!(!has_obfuscation("Привет, как дела? Build is green."));
        assert!(!has_obfuscation("plain ASCII text"));
    }

    #[test]
    fn base64_decoding() {
        assert_eq!(
            decode_base64("aGVsbG8gd29ybGQ=").as_deref(),
            Some(&b"hello world"[..])
        );
        assert_eq!(
            decode_base64("aGVsbG8gd29ybGQ").as_deref(),
            Some(&b"hello world"[..])
        );
        assert_eq!(decode_base64("a*b"), None);
        assert!(is_readable_text(b"this is some hidden text"));
        assert!(!is_readable_text(&[0x9f, 0x00, 0x12, 0xff, 0x10, 0x20]));
        assert!(!is_readable_text(b"{\"alg\":\"HS256\",\"typ\":\"JWT\"}"));
    }
}
