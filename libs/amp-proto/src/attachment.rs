//! Attachments (spec 04 "Attachments", 08 "Attachments"): ids, the `sha256:` digest, the
//! filename rules, scan statuses and the `attachments` array of a payload, as pure functions.
//!
//! What a provider does with them (storage, scanning, route-time checks) lives in
//! `amp-messaging::attachments`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ApiError, ErrorCode};
use crate::message::Timestamp;

/// Most `provider` attachments per message (spec 04).
pub const MAX_ATTACHMENTS_PER_MESSAGE: usize = 10;
/// Largest `provider` attachment, in bytes (25 MB, spec 04).
pub const MAX_ATTACHMENT_SIZE: u64 = 25 * 1024 * 1024;
/// Largest total of a message's `provider` attachments, in bytes (100 MB, spec 04).
pub const MAX_TOTAL_ATTACHMENT_SIZE: u64 = 100 * 1024 * 1024;
/// Longest filename, in characters (spec 04).
pub const MAX_FILENAME_CHARS: usize = 255;

/// Makes a fresh attachment id, `att_<unix seconds>_<16 hex>` (spec 04's format; the
/// plugin checks ids against `^att[_-][0-9]+[_-][a-zA-Z0-9]+$`).
pub fn generate_id(now: Timestamp) -> String {
    let random: [u8; 8] = rand::random();
    format!("att_{}_{}", now.unix_secs(), hex::encode(random))
}

/// Whether `id` has the form this provider assigns: `att_`, digits, `_`, lowercase hex.
/// Anything else (and so every path-traversal form: `/`, `\`, `..`, NUL) is refused before
/// it reaches a store key or a file name.
pub fn is_valid_id(id: &str) -> bool {
    let Some(rest) = id.strip_prefix("att_") else {
        return false;
    };
    let Some((ts, random)) = rest.split_once('_') else {
        return false;
    };
    (1..=20).contains(&ts.len())
        && ts.bytes().all(|b| b.is_ascii_digit())
        && (8..=64).contains(&random.len())
        && random
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A `sha256:<64 lowercase hex>` digest (spec 04 "Digest Algorithm").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest([u8; 32]);

impl Digest {
    /// Parses the wire form.
    ///
    /// Fails with `422 invalid_digest_algorithm` for any prefix other than `sha256:` (spec
    /// 08 MUST), and `400 invalid_field` for a `sha256:` value that is not 64 lowercase hex
    /// digits. `field` names the request field in the error.
    pub fn parse(field: &str, s: &str) -> Result<Self, ApiError> {
        let Some((algorithm, hex_part)) = s.split_once(':') else {
            return Err(ApiError::invalid(
                field,
                "digest must be sha256:<64 lowercase hex digits>",
            ));
        };
        if algorithm != "sha256" {
            return Err(ApiError::new(
                ErrorCode::InvalidDigestAlgorithm,
                "unsupported digest algorithm: only sha256: is accepted",
            )
            .with_field(field));
        }
        let lower = hex_part
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let mut out = [0u8; 32];
        if hex_part.len() != 64 || !lower || hex::decode_to_slice(hex_part, &mut out).is_err() {
            return Err(ApiError::invalid(
                field,
                "digest must be sha256:<64 lowercase hex digits>",
            ));
        }
        Ok(Self(out))
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        use sha2::Digest as _;
        Self(sha2::Sha256::digest(bytes).into())
    }

    /// From a finished SHA-256.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The wire form, `sha256:<hex>`.
    pub fn wire(&self) -> String {
        format!("sha256:{}", self.hex())
    }
}

/// Why a filename cannot be used at all (spec 04: double-encoded separators MUST be
/// rejected; everything else is sanitised).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilenameRejected;

/// The server-sanitised filename (spec 04): percent-encoded separators refused, characters
/// outside `[a-zA-Z0-9._-]` replaced by `_`, leading and trailing dots and spaces stripped,
/// reserved Windows device names prefixed with `_`, at most 255 characters; never empty.
///
/// Fails when the name carries an encoded `/` or `\` (once or twice encoded).
pub fn sanitize_filename(name: &str) -> Result<String, FilenameRejected> {
    let lower = name.to_ascii_lowercase();
    for encoded in ["%2f", "%5c", "%252f", "%255c"] {
        if lower.contains(encoded) {
            return Err(FilenameRejected);
        }
    }
    // The last path component only: a client that sent `dir/x.txt` meant `x.txt`.
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let base = base.trim_matches(|c: char| c == '.' || c == ' ');
    let mut out: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    out = out.trim_matches('.').to_owned();
    let stem = out.split('.').next().unwrap_or("").to_ascii_uppercase();
    let reserved = matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || ((stem.starts_with("COM") || stem.starts_with("LPT"))
            && stem.len() == 4
            && stem.as_bytes()[3].is_ascii_digit()
            && stem.as_bytes()[3] != b'0');
    if reserved {
        out.insert(0, '_');
    }
    if out.is_empty() {
        out.push_str("file");
    }
    out.truncate(MAX_FILENAME_CHARS);
    Ok(out)
}

/// An attachment's scan status (spec 04, 08). Moves only from `pending` to one terminal
/// value, and never again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanStatus {
    /// Uploaded or being scanned; never routed.
    Pending,
    /// Every check passed, including an antivirus scan.
    Clean,
    /// The required checks passed; no antivirus scan ran (spec 07).
    BasicClean,
    /// Deliverable, flagged for the recipient's caution.
    Suspicious,
    /// Failed a required check; never routed, its bytes deleted.
    Rejected,
    /// Local filesystem delivery only (spec 10); never in a provider's payload.
    Unscanned,
}

impl ScanStatus {
    /// The wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            ScanStatus::Pending => "pending",
            ScanStatus::Clean => "clean",
            ScanStatus::BasicClean => "basic_clean",
            ScanStatus::Suspicious => "suspicious",
            ScanStatus::Rejected => "rejected",
            ScanStatus::Unscanned => "unscanned",
        }
    }

    /// Parses the wire form.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => ScanStatus::Pending,
            "clean" => ScanStatus::Clean,
            "basic_clean" => ScanStatus::BasicClean,
            "suspicious" => ScanStatus::Suspicious,
            "rejected" => ScanStatus::Rejected,
            "unscanned" => ScanStatus::Unscanned,
            _ => return None,
        })
    }

    /// Whether a provider may change `self` to `next` (spec 08: `pending` → a terminal
    /// value, once).
    pub fn may_become(self, next: ScanStatus) -> bool {
        self == ScanStatus::Pending
            && matches!(
                next,
                ScanStatus::Clean
                    | ScanStatus::BasicClean
                    | ScanStatus::Suspicious
                    | ScanStatus::Rejected
            )
    }

    /// Whether a message referencing it may be routed (spec 04: `clean`, `basic_clean`,
    /// `suspicious`).
    pub fn routable(self) -> bool {
        matches!(
            self,
            ScanStatus::Clean | ScanStatus::BasicClean | ScanStatus::Suspicious
        )
    }
}

/// One element of a payload's `attachments` array, its shape checked.
#[derive(Debug, Clone, PartialEq)]
pub enum PayloadAttachment {
    /// Stored by a provider (no `storage`, or `"provider"`).
    Provider {
        /// The provider-assigned id.
        id: String,
        /// The declared size.
        size: u64,
        /// The declared digest.
        digest: Digest,
        /// The declared scan status.
        scan_status: ScanStatus,
        /// The download URL the sender put in.
        url: String,
    },
    /// A reference into an AFP space (spec 04 "AFP Attachments"): passed through untouched.
    Afp {
        /// The declared size (not capped by the provider's limits).
        size: u64,
    },
}

/// The `attachments` of a payload, their shape checked (spec 04's field table, 05's checks
/// before delivery). An absent array is an empty list.
///
/// Fails with `400` for a malformed element, `too_many_attachments` past 10 `provider`
/// attachments, `attachment_too_large` past 25 MB each or 100 MB in all, and
/// `invalid_digest_algorithm` for a digest other than `sha256:`.
pub fn payload_attachments(payload: &Value) -> Result<Vec<PayloadAttachment>, ApiError> {
    let Some(list) = payload.get("attachments") else {
        return Ok(Vec::new());
    };
    let Some(list) = list.as_array() else {
        return Err(ApiError::invalid(
            "payload.attachments",
            "attachments must be an array",
        ));
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, a) in list.iter().enumerate() {
        let field = |name: &str| format!("payload.attachments[{i}].{name}");
        let Some(obj) = a.as_object() else {
            return Err(ApiError::invalid(
                &format!("payload.attachments[{i}]"),
                "each attachment must be an object",
            ));
        };
        let text = |name: &str| -> Result<&str, ApiError> {
            obj.get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| ApiError::missing(&field(name)))
        };
        let filename = text("filename")?;
        if filename.chars().count() > MAX_FILENAME_CHARS
            || filename
                .chars()
                .any(|c| c.is_control() || c == '/' || c == '\\')
        {
            return Err(ApiError::invalid(
                &field("filename"),
                "filename must be at most 255 characters, without path separators or control characters",
            ));
        }
        text("content_type")?;
        let size = obj
            .get("size")
            .and_then(Value::as_u64)
            .ok_or_else(|| ApiError::invalid(&field("size"), "size must be a whole number"))?;
        let digest = Digest::parse(&field("digest"), text("digest")?)?;
        match obj.get("storage").and_then(Value::as_str) {
            Some("afp") => {
                let r = text("ref")?;
                let well_formed = r
                    .strip_prefix("afp://")
                    .and_then(|rest| rest.split_once('/'))
                    .is_some_and(|(space, path)| !space.is_empty() && !path.is_empty());
                if !well_formed {
                    return Err(ApiError::invalid(
                        &field("ref"),
                        "ref must be afp://<space>/<path>",
                    ));
                }
                out.push(PayloadAttachment::Afp { size });
            }
            None | Some("provider") => {
                let id = text("id")?;
                if !is_valid_id(id) {
                    return Err(ApiError::new(
                        ErrorCode::AttachmentNotFound,
                        "no attachment has this id",
                    )
                    .with_field(field("id")));
                }
                let status_text = text("scan_status")?;
                let scan_status = ScanStatus::parse(status_text).ok_or_else(|| {
                    ApiError::invalid(&field("scan_status"), "unknown scan_status")
                })?;
                let url = text("url")?.to_owned();
                out.push(PayloadAttachment::Provider {
                    id: id.to_owned(),
                    size,
                    digest,
                    scan_status,
                    url,
                });
            }
            Some(_) => {
                return Err(ApiError::invalid(
                    &field("storage"),
                    "storage must be provider or afp",
                ));
            }
        }
    }
    let provider: Vec<u64> = out
        .iter()
        .filter_map(|a| match a {
            PayloadAttachment::Provider { size, .. } => Some(*size),
            PayloadAttachment::Afp { .. } => None,
        })
        .collect();
    if provider.len() > MAX_ATTACHMENTS_PER_MESSAGE {
        return Err(ApiError::new(
            ErrorCode::TooManyAttachments,
            "at most 10 attachments per message",
        )
        .with_field("payload.attachments"));
    }
    if provider.iter().any(|s| *s > MAX_ATTACHMENT_SIZE) {
        return Err(ApiError::new(
            ErrorCode::AttachmentTooLarge,
            "an attachment is larger than 25 MB",
        )
        .with_field("payload.attachments"));
    }
    if provider.iter().sum::<u64>() > MAX_TOTAL_ATTACHMENT_SIZE {
        return Err(ApiError::new(
            ErrorCode::AttachmentTooLarge,
            "the attachments of one message exceed 100 MB in all",
        )
        .with_field("payload.attachments"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const HEX: &str = "3b2c9f5da87e4f1c8b0a2d6e9f3c7a1b5d8e2f4a6c0b3d7e9f1a4c6d8e0b2a4f";

    #[test]
    fn spec_next_ids_have_the_assigned_form() {
        let id = generate_id(Timestamp::now());
        assert!(is_valid_id(&id), "{id}");
        for bad in [
            "att_1_../../x",
            "att_1_abc/def0",
            "att_x_abcdef01",
            "att_1_ABCDEF01",
            "att_1_abc",
            "msg_1_abcdef01",
            "att_1_abcdef01\0",
        ] {
            assert!(!is_valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn spec_next_digest_rule() {
        let d = Digest::parse("digest", &format!("sha256:{HEX}")).expect("valid");
        assert_eq!(d.wire(), format!("sha256:{HEX}"));
        let e = Digest::parse("digest", "md5:abc").expect_err("md5");
        assert_eq!(e.code, ErrorCode::InvalidDigestAlgorithm);
        assert_eq!(e.status(), 422);
        let e = Digest::parse("digest", &format!("sha1:{HEX}")).expect_err("sha1");
        assert_eq!(e.code, ErrorCode::InvalidDigestAlgorithm);
        let upper = format!("sha256:{}", HEX.to_ascii_uppercase());
        assert_eq!(
            Digest::parse("digest", &upper).expect_err("upper").code,
            ErrorCode::InvalidField
        );
        assert_eq!(
            Digest::parse("digest", "sha256:abcd")
                .expect_err("short")
                .code,
            ErrorCode::InvalidField
        );
        assert_eq!(
            Digest::parse("digest", HEX).expect_err("no prefix").code,
            ErrorCode::InvalidField
        );
    }

    #[test]
    fn spec_next_filenames_are_sanitised() {
        let s = |n: &str| sanitize_filename(n).expect("accepted");
        assert_eq!(s("puma.log"), "puma.log");
        assert_eq!(s("../../etc/passwd"), "passwd");
        assert_eq!(s("a b\u{7}c.txt"), "a_b_c.txt");
        assert_eq!(s("  .hidden. "), "hidden");
        assert_eq!(s("CON.txt"), "_CON.txt");
        assert_eq!(s("com1"), "_com1");
        assert_eq!(s("com0"), "com0");
        assert_eq!(s("résumé.pdf"), "r_sum_.pdf");
        assert_eq!(s("..."), "file");
        assert_eq!(s(&"x".repeat(300)).len(), 255);
        assert!(sanitize_filename("a%2Fb").is_err());
        assert!(sanitize_filename("a%252fb").is_err());
        assert!(sanitize_filename("a%5Cb").is_err());
    }

    #[test]
    fn spec_next_scan_status_only_moves_forward() {
        use ScanStatus::*;
        for t in [Clean, BasicClean, Suspicious, Rejected] {
            assert!(Pending.may_become(t));
            for u in [Pending, Clean, BasicClean, Suspicious, Rejected] {
                assert!(!t.may_become(u), "{t:?} -> {u:?}");
            }
        }
        assert!(!Pending.may_become(Pending));
        assert!(!Pending.may_become(Unscanned));
        assert!(Suspicious.routable() && BasicClean.routable() && Clean.routable());
        assert!(!Pending.routable() && !Rejected.routable() && !Unscanned.routable());
    }

    fn provider(id: &str, size: u64) -> Value {
        json!({"id": id, "filename": "a.txt", "content_type": "text/plain", "size": size,
               "digest": format!("sha256:{HEX}"), "url": "https://x/y", "scan_status": "clean",
               "uploaded_at": "2025-01-30T09:58:00Z", "expires_at": "2025-02-06T10:00:00Z"})
    }

    #[test]
    fn spec_next_payload_attachments_shape_and_limits() {
        assert!(
            payload_attachments(&json!({"message": "x"}))
                .expect("none")
                .is_empty()
        );
        let afp = json!({"storage": "afp", "filename": "r.pdf", "content_type": "application/pdf",
            "size": 500_000_000u64, "digest": format!("sha256:{HEX}"), "ref": "afp://artifacts/2026/r.pdf"});
        let got =
            payload_attachments(&json!({"attachments": [provider("att_1_abcdef01", 5), afp]}))
                .expect("valid");
        assert_eq!(got.len(), 2);
        assert!(matches!(
            got[1],
            PayloadAttachment::Afp { size: 500_000_000 }
        ));

        let eleven: Vec<Value> = (0..11)
            .map(|i| provider(&format!("att_1_abcdef{i:02}"), 1))
            .collect();
        let e = payload_attachments(&json!({ "attachments": eleven })).expect_err("11");
        assert_eq!(e.code, ErrorCode::TooManyAttachments);
        let e = payload_attachments(
            &json!({"attachments": [provider("att_1_abcdef01", MAX_ATTACHMENT_SIZE + 1)]}),
        )
        .expect_err("big");
        assert_eq!(e.code, ErrorCode::AttachmentTooLarge);
        let five: Vec<Value> = (0..5)
            .map(|i| provider(&format!("att_1_abcdef{i:02}"), MAX_ATTACHMENT_SIZE))
            .collect();
        let e = payload_attachments(&json!({ "attachments": five })).expect_err("total");
        assert_eq!(e.code, ErrorCode::AttachmentTooLarge);

        let mut bad = provider("att_1_abcdef01", 1);
        bad["digest"] = json!("md5:abc");
        let e = payload_attachments(&json!({ "attachments": [bad] })).expect_err("md5");
        assert_eq!(e.code, ErrorCode::InvalidDigestAlgorithm);
        let bad_ref = json!({"storage": "afp", "filename": "r.pdf", "content_type": "application/pdf",
            "size": 1, "digest": format!("sha256:{HEX}"), "ref": "https://x/y"});
        let e = payload_attachments(&json!({ "attachments": [bad_ref] })).expect_err("ref");
        assert_eq!(e.code, ErrorCode::InvalidField);
        let e = payload_attachments(&json!({"attachments": [provider("att_1_../x", 1)]}))
            .expect_err("traversal");
        assert_eq!(e.code, ErrorCode::AttachmentNotFound);
    }
}
