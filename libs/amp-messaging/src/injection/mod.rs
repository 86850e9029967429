//! The prompt-injection scanner (spec-next 07, appendix A), shared by the router (message
//! content) and the attachment scan (text attachments' content): a TOML pattern database (appendix A categories) compiled once
//! into one [`RegexSet`], run over normalised text, plus encoding heuristics.
//!
//! The built-in database is `patterns.toml` beside this file; an operator's own file in the
//! same format replaces it without a code change (SEC-16). The `regex` crate matches in time
//! linear in the input, and input is capped at [`MAX_SCAN_BYTES`], so a scan's cost is bounded
//! whatever the sender writes.
//!
//! Patterns are compiled with ASCII semantics (`\b`, `\w`, `.` and case folding are ASCII or
//! bytewise; non-ASCII literals match their UTF-8 bytes exactly). Unicode word boundaries would
//! push the engine off its DFA onto a far slower path for any text with a non-ASCII character,
//! and normalisation has already folded look-alikes to ASCII.

use std::path::Path;

use regex::Regex;
use regex::bytes::{RegexSet, RegexSetBuilder};
use serde::Deserialize;

pub mod normalize;

use self::normalize::{decode_base64, has_obfuscation, is_readable_text, normalize};

/// Longest input scanned; the rest of a longer text is ignored.
pub const MAX_SCAN_BYTES: usize = 256 * 1024;

/// The category the encoding heuristics report.
const ENCODING_TRICKS: &str = "encoding_tricks";

/// The built-in database.
const BUILTIN_PATTERNS: &str = include_str!("patterns.toml");

/// Base64-looking runs worth decoding: long enough that ordinary words and short ids do not
/// qualify (standard and URL-safe alphabets).
const BASE64_RUN: &str = r"[A-Za-z0-9+/_-]{40,}={0,2}";

/// At most this many base64 runs are decoded per scan.
const MAX_DECODED_RUNS: usize = 16;

/// Compiled-program budget for the whole pattern set, with headroom over the default for
/// operators' larger databases.
const SET_SIZE_LIMIT: usize = 64 * 1024 * 1024;

/// Why a pattern database cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    /// The database file could not be read.
    #[error("cannot read pattern database {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// The text is not TOML in the database format.
    #[error("pattern database is not valid: {0}")]
    Toml(#[from] toml::de::Error),
    /// A category id is empty or not `[a-z0-9_.-]`.
    #[error("category id '{0}' must be 1-64 characters of a-z, 0-9, '_', '.' and '-'")]
    InvalidId(String),
    /// Two categories share an id.
    #[error("category '{0}' appears more than once")]
    DuplicateCategory(String),
    /// A pattern is not a valid regular expression.
    #[error("pattern {index} of category '{category}' is not a valid regex: {source}")]
    InvalidPattern {
        /// The category holding the pattern.
        category: String,
        /// The pattern's position in that category's list, from 0.
        index: usize,
        /// The regex compiler's message.
        #[source]
        source: regex::Error,
    },
    /// The patterns are valid one by one but too large together.
    #[error("pattern set cannot be compiled: {0}")]
    Set(#[source] regex::Error),
}

/// The database file format.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Database {
    /// Whether to run the encoding heuristics (invisible characters, look-alike letters,
    /// base64 that decodes to text).
    #[serde(default = "default_true")]
    encoding_heuristics: bool,
    /// Categories, in reporting order.
    #[serde(default)]
    categories: Vec<CategorySpec>,
}

/// One category in the database file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CategorySpec {
    /// The id reported in `security.injection_flags`.
    id: String,
    /// Free text for people reading the file.
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    /// Case-insensitive regexes over normalised text.
    #[serde(default)]
    patterns: Vec<String>,
    /// How grave a detection is (spec-next 07's `warning`, `high`, `critical`); `warning`
    /// when omitted.
    #[serde(default)]
    severity: Severity,
}

/// How grave a detection is (spec-next 07 "Quarantine Metadata": `warning`, `high`,
/// `critical`), the input of 07's default severity-to-verdict table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Flag and deliver.
    #[default]
    Warning,
    /// Quarantine.
    High,
    /// Block.
    Critical,
}

impl Severity {
    /// The spec's word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Warning => "warning",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

fn default_true() -> bool {
    true
}

/// Scans text for prompt-injection patterns (appendix A) and reports category ids.
///
/// Build it once ([`InjectionScanner::builtin`] or [`InjectionScanner::from_toml`]) and share
/// it: scanning takes `&self` and compiles nothing.
#[derive(Debug, Clone)]
pub struct InjectionScanner {
    /// Category ids, in reporting order.
    categories: Vec<String>,
    /// Each category's severity, in the same order.
    severities: Vec<Severity>,
    /// Every pattern of every category.
    set: RegexSet,
    /// For each pattern in `set`, the index of its category.
    pattern_category: Vec<usize>,
    /// Whether the encoding heuristics run.
    encoding_heuristics: bool,
    /// Where `encoding_tricks` sits in `categories`, if the database lists it.
    encoding_slot: Option<usize>,
    /// Finds base64-looking runs in the original text.
    base64_run: Regex,
}

impl InjectionScanner {
    /// The built-in database (the eight appendix A categories).
    ///
    /// Fails only if the embedded file is broken, which a unit test rules out.
    pub fn builtin() -> Result<Self, PatternError> {
        Self::from_toml(BUILTIN_PATTERNS)
    }

    /// A database in the built-in file's format (see `patterns.toml`).
    ///
    /// Fails on invalid TOML, unknown fields, bad or duplicate category ids, or an invalid
    /// regex (the error names the category and the pattern's index).
    pub fn from_toml(text: &str) -> Result<Self, PatternError> {
        let db: Database = toml::from_str(text)?;
        let mut categories = Vec::with_capacity(db.categories.len());
        let mut severities = Vec::with_capacity(db.categories.len());
        let mut patterns = Vec::new();
        let mut pattern_category = Vec::new();
        for (slot, category) in db.categories.into_iter().enumerate() {
            if !valid_id(&category.id) {
                return Err(PatternError::InvalidId(category.id));
            }
            if categories.contains(&category.id) {
                return Err(PatternError::DuplicateCategory(category.id));
            }
            for (index, pattern) in category.patterns.into_iter().enumerate() {
                // Compiled alone first so that an error can say which pattern is wrong.
                if let Err(source) = regex::bytes::RegexBuilder::new(&pattern)
                    .case_insensitive(true)
                    .unicode(false)
                    .size_limit(SET_SIZE_LIMIT)
                    .build()
                {
                    return Err(PatternError::InvalidPattern {
                        category: category.id,
                        index,
                        source,
                    });
                }
                patterns.push(pattern);
                pattern_category.push(slot);
            }
            categories.push(category.id);
            severities.push(category.severity);
        }
        let set = RegexSetBuilder::new(&patterns)
            .case_insensitive(true)
            .unicode(false)
            .size_limit(SET_SIZE_LIMIT)
            .build()
            .map_err(PatternError::Set)?;
        let base64_run = Regex::new(BASE64_RUN).map_err(|source| PatternError::InvalidPattern {
            category: ENCODING_TRICKS.to_owned(),
            index: 0,
            source,
        })?;
        let encoding_slot = categories.iter().position(|c| c == ENCODING_TRICKS);
        Ok(Self {
            categories,
            severities,
            set,
            pattern_category,
            encoding_heuristics: db.encoding_heuristics,
            encoding_slot,
            base64_run,
        })
    }

    /// A database read from a file, as [`InjectionScanner::from_toml`].
    ///
    /// Fails when the file cannot be read, or as `from_toml` does.
    pub fn from_file(path: &Path) -> Result<Self, PatternError> {
        let text = std::fs::read_to_string(path).map_err(|source| PatternError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// The category ids this scanner can report, in reporting order.
    pub fn categories(&self) -> impl Iterator<Item = &str> {
        self.categories.iter().map(String::as_str)
    }

    /// The severity of category `id` (`warning` for an id the database does not list, such
    /// as `encoding_tricks` reported by the heuristics alone).
    pub fn severity(&self, id: &str) -> Severity {
        self.categories
            .iter()
            .position(|c| c == id)
            .map_or(Severity::Warning, |i| self.severities[i])
    }

    /// The distinct category ids whose patterns match `text`, in the database's order
    /// (`encoding_tricks` last if the database does not list it). Only the first
    /// [`MAX_SCAN_BYTES`] of `text` are looked at.
    pub fn scan(&self, text: &str) -> Vec<&str> {
        let text = truncate(text, MAX_SCAN_BYTES);
        let mut hits = vec![false; self.categories.len()];
        self.mark(&normalize(text), &mut hits);
        let mut encoding = false;
        if self.encoding_heuristics {
            encoding = has_obfuscation(text);
            for run in self.base64_run.find_iter(text).take(MAX_DECODED_RUNS) {
                let Some(bytes) = decode_base64(run.as_str()) else {
                    continue;
                };
                if is_readable_text(&bytes) {
                    // Text hidden in base64 is itself a trick; what it says is scanned too.
                    encoding = true;
                    self.mark(&normalize(&String::from_utf8_lossy(&bytes)), &mut hits);
                }
            }
        }
        if let (true, Some(slot)) = (encoding, self.encoding_slot) {
            hits[slot] = true;
        }
        let mut found: Vec<&str> = self
            .categories
            .iter()
            .zip(&hits)
            .filter(|(_, hit)| **hit)
            .map(|(id, _)| id.as_str())
            .collect();
        if encoding && self.encoding_slot.is_none() {
            found.push(ENCODING_TRICKS);
        }
        found
    }

    /// Sets `hits[c]` for every category `c` with a pattern matching `normalized`.
    fn mark(&self, normalized: &str, hits: &mut [bool]) {
        for pattern in self.set.matches(normalized.as_bytes()).iter() {
            hits[self.pattern_category[pattern]] = true;
        }
    }
}

/// Category ids are short machine words.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-'))
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
pub fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests;
