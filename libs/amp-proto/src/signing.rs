//! The canonical signing string and payload hash (spec 04 v1.1, the test vectors), and
//! verification of a sender's signature over a message as received.
//!
//! `from|to|subject|priority|in_reply_to|payload_hash`, with an absent `in_reply_to` as the
//! empty string and `payload_hash` = base64(SHA-256(compact JSON, keys sorted at every level)).
//!
//! Verification tries the primary form first; only when it fails does it try, in order, the
//! fallbacks real senders need (SPEC-CHECKLIST §4.1 and D6): other number formatting, the
//! received key order (older clients), Python's `ensure_ascii`, and the subject as the shell
//! client mangles it. Each accepted message records which form matched. Nothing else is
//! accepted: the signature must still be by the sender's key over these exact fields.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest as _, Sha256};

use crate::json::{self, CanonicalForm};
use crate::keys::{self, PublicKey, SecretKey, SignatureError};

/// The envelope fields a sender signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedFields<'a> {
    /// Sender address.
    pub from: &'a str,
    /// Recipient address, as the sender wrote it.
    pub to: &'a str,
    /// Subject.
    pub subject: &'a str,
    /// Priority name (`normal` when the sender gave none).
    pub priority: &'a str,
    /// The replied-to id, or the empty string.
    pub in_reply_to: &'a str,
}

/// `from|to|subject|priority|in_reply_to|payload_hash`.
pub fn canonical_string(f: &SignedFields<'_>, payload_hash: &str) -> String {
    let mut s = String::with_capacity(
        f.from.len() + f.to.len() + f.subject.len() + f.in_reply_to.len() + 64,
    );
    for part in [
        f.from,
        f.to,
        f.subject,
        f.priority,
        f.in_reply_to,
        payload_hash,
    ] {
        s.push_str(part);
        s.push('|');
    }
    s.pop();
    s
}

/// base64(SHA-256(bytes)).
pub fn sha256_b64(bytes: &[u8]) -> String {
    B64.encode(Sha256::digest(bytes))
}

/// The payload hash in the primary form: sorted keys, compact, jq 1.6 numbers.
///
/// Fails when `raw_payload` is not JSON.
pub fn payload_hash(raw_payload: &str) -> Result<String, json::ParseError> {
    let v = json::parse(raw_payload)?;
    Ok(sha256_b64(v.to_canonical(CanonicalForm::SORTED).as_bytes()))
}

/// Signs a message as a client does: over the canonical string with the primary hash.
///
/// Fails when `raw_payload` is not JSON.
pub fn sign_message(
    key: &SecretKey,
    fields: &SignedFields<'_>,
    raw_payload: &str,
) -> Result<String, json::ParseError> {
    let hash = payload_hash(raw_payload)?;
    Ok(key.sign_b64(canonical_string(fields, &hash).as_bytes()))
}

/// Which payload serialisation a verified signature was made over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashForm {
    /// Sorted keys, jq 1.6 numbers (the primary form).
    Sorted,
    /// Sorted keys, JavaScript numbers.
    SortedJs,
    /// Sorted keys, numbers as received.
    SortedLiteral,
    /// Received key order (`JSON.stringify`).
    Insertion,
    /// Received key order with `ensure_ascii` (Python `json.dumps`).
    InsertionAscii,
}

impl HashForm {
    /// Every form, primary first.
    pub const ALL: [HashForm; 5] = [
        HashForm::Sorted,
        HashForm::SortedJs,
        HashForm::SortedLiteral,
        HashForm::Insertion,
        HashForm::InsertionAscii,
    ];

    fn canonical_form(self) -> CanonicalForm {
        match self {
            HashForm::Sorted => CanonicalForm::SORTED,
            HashForm::SortedJs => CanonicalForm::SORTED_JS,
            HashForm::SortedLiteral => CanonicalForm::SORTED_LITERAL,
            HashForm::Insertion => CanonicalForm::INSERTION,
            HashForm::InsertionAscii => CanonicalForm::INSERTION_ASCII,
        }
    }

    /// A short name for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            HashForm::Sorted => "sorted",
            HashForm::SortedJs => "sorted_js",
            HashForm::SortedLiteral => "sorted_literal",
            HashForm::Insertion => "insertion",
            HashForm::InsertionAscii => "insertion_ascii",
        }
    }
}

/// Which form of the subject a verified signature was made over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubjectForm {
    /// As received.
    Exact,
    /// Trailing newlines removed (shell `$(…)` substitution).
    TrailingNewlinesStripped,
    /// `jq @tsv` escaping then `read -r` trimming (the shell client's flat-body path).
    TsvEscaped,
}

/// How a signature was verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// The payload serialisation that matched.
    pub hash_form: HashForm,
    /// The subject form that matched.
    pub subject_form: SubjectForm,
}

impl Verified {
    /// Whether the primary form matched (no fallback was needed).
    pub fn is_primary(&self) -> bool {
        self.hash_form == HashForm::Sorted && self.subject_form == SubjectForm::Exact
    }
}

/// Why a message signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The signature text is not base64 of 64 bytes.
    #[error("signature is not base64 of 64 bytes")]
    Malformed,
    /// No accepted form verifies.
    #[error("signature does not verify")]
    Invalid,
    /// The payload is not JSON.
    #[error("payload is not valid JSON")]
    PayloadNotJson,
}

/// Verifies `signature_b64` by `key` over a message with these fields and this raw payload.
///
/// Fails when the signature is malformed, the payload is not JSON, or no accepted form
/// verifies.
pub fn verify_message(
    key: &PublicKey,
    fields: &SignedFields<'_>,
    raw_payload: &str,
    signature_b64: &str,
) -> Result<Verified, VerifyError> {
    let sig = keys::decode_signature(signature_b64).map_err(|e| match e {
        SignatureError::Malformed | SignatureError::Mismatch => VerifyError::Malformed,
    })?;
    let tree = json::parse(raw_payload).map_err(|_| VerifyError::PayloadNotJson)?;

    let mut text = String::with_capacity(raw_payload.len());
    tree.write(CanonicalForm::SORTED, &mut text);
    let primary_hash = sha256_b64(text.as_bytes());
    if key
        .verify_raw(canonical_string(fields, &primary_hash).as_bytes(), &sig)
        .is_ok()
    {
        return Ok(Verified {
            hash_form: HashForm::Sorted,
            subject_form: SubjectForm::Exact,
        });
    }

    // Fallbacks: each distinct serialisation once, each distinct subject once.
    let mut hashes: Vec<(HashForm, String)> = vec![(HashForm::Sorted, primary_hash)];
    let mut seen_texts = vec![text];
    for form in &HashForm::ALL[1..] {
        let t = tree.to_canonical(form.canonical_form());
        if !seen_texts.contains(&t) {
            hashes.push((*form, sha256_b64(t.as_bytes())));
            seen_texts.push(t);
        }
    }
    let mut subjects: Vec<(SubjectForm, String)> =
        vec![(SubjectForm::Exact, fields.subject.to_owned())];
    for (form, s) in [
        (
            SubjectForm::TrailingNewlinesStripped,
            fields.subject.trim_end_matches(['\n', '\r']).to_owned(),
        ),
        (SubjectForm::TsvEscaped, tsv_read_subject(fields.subject)),
    ] {
        if !subjects.iter().any(|(_, x)| *x == s) {
            subjects.push((form, s));
        }
    }
    for (subject_form, subject) in &subjects {
        for (hash_form, hash) in &hashes {
            if *subject_form == SubjectForm::Exact && *hash_form == HashForm::Sorted {
                continue; // already tried
            }
            let f = SignedFields { subject, ..*fields };
            if key
                .verify_raw(canonical_string(&f, hash).as_bytes(), &sig)
                .is_ok()
            {
                return Ok(Verified {
                    hash_form: *hash_form,
                    subject_form: *subject_form,
                });
            }
        }
    }
    Err(VerifyError::Invalid)
}

/// The subject as the shell client signs it on its flat-body path: `jq -r '…|@tsv'` escapes
/// `\`, tab, CR and LF, then `read -r` trims surrounding whitespace.
fn tsv_read_subject(subject: &str) -> String {
    let mut out = String::with_capacity(subject.len());
    for c in subject.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.trim_matches(|c| c == ' ' || c == '\t' || c == '\n')
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(subject: &'a str) -> SignedFields<'a> {
        SignedFields {
            from: "alice@acme.crabmail.ai",
            to: "bob@acme.crabmail.ai",
            subject,
            priority: "normal",
            in_reply_to: "",
        }
    }

    #[test]
    fn canonical_string_keeps_empty_parts() {
        assert_eq!(
            canonical_string(&fields("Hello"), "H="),
            "alice@acme.crabmail.ai|bob@acme.crabmail.ai|Hello|normal||H="
        );
        let empty = SignedFields {
            from: "",
            to: "",
            subject: "",
            priority: "",
            in_reply_to: "",
        };
        assert_eq!(canonical_string(&empty, ""), "|||||");
    }

    #[test]
    fn primary_form_verifies_first() {
        let sk = SecretKey::generate();
        let payload = r#"{"type":"notification","message":"Hello","context":{"n":1.0}}"#;
        let sig = sign_message(&sk, &fields("Hello"), payload).expect("json");
        let v = verify_message(&sk.public(), &fields("Hello"), payload, &sig).expect("ok");
        assert!(v.is_primary());
    }

    #[test]
    fn insertion_order_and_ascii_fallbacks() {
        let sk = SecretKey::generate();
        let payload = r#"{"type":"t","message":"héllo","context":{"z":1,"a":2.50}}"#;
        for (form, hf) in [
            (CanonicalForm::INSERTION, HashForm::Insertion),
            (CanonicalForm::INSERTION_ASCII, HashForm::InsertionAscii),
            (CanonicalForm::SORTED_LITERAL, HashForm::SortedLiteral),
        ] {
            let text = json::parse(payload).expect("json").to_canonical(form);
            let canon = canonical_string(&fields("s"), &sha256_b64(text.as_bytes()));
            let sig = sk.sign_b64(canon.as_bytes());
            let v = verify_message(&sk.public(), &fields("s"), payload, &sig).expect("fallback");
            assert_eq!(v.hash_form, hf);
        }
    }

    #[test]
    fn shell_subject_mangling_accepted() {
        let sk = SecretKey::generate();
        let payload = r#"{"type":"t","message":"m"}"#;
        let received = "  multi\tline\nsubject\\ ";
        let signed_as = "multi\\tline\\nsubject\\\\";
        let sig = sign_message(&sk, &fields(signed_as), payload).expect("json");
        let v = verify_message(&sk.public(), &fields(received), payload, &sig).expect("tsv");
        assert_eq!(v.subject_form, SubjectForm::TsvEscaped);

        let sig = sign_message(&sk, &fields("subject"), payload).expect("json");
        let v = verify_message(&sk.public(), &fields("subject\n"), payload, &sig).expect("nl");
        assert_eq!(v.subject_form, SubjectForm::TrailingNewlinesStripped);
    }

    #[test]
    fn wrong_key_or_field_fails() {
        let sk = SecretKey::generate();
        let payload = r#"{"type":"t","message":"m"}"#;
        let sig = sign_message(&sk, &fields("s"), payload).expect("json");
        let other = SecretKey::generate().public();
        assert_eq!(
            verify_message(&other, &fields("s"), payload, &sig),
            Err(VerifyError::Invalid)
        );
        assert_eq!(
            verify_message(&sk.public(), &fields("t"), payload, &sig),
            Err(VerifyError::Invalid)
        );
        assert_eq!(
            verify_message(&sk.public(), &fields("s"), payload, "xx"),
            Err(VerifyError::Malformed)
        );
        assert_eq!(
            verify_message(&sk.public(), &fields("s"), "{", &sig),
            Err(VerifyError::PayloadNotJson)
        );
    }
}
