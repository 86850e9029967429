//! The spec's error body (`{"error", "message", "field"?, "details"?}`, spec 08) and every
//! error code of spec 03, 05, 06, 07, 08 and 12 with its HTTP status.

use serde::Serialize;
use serde_json::{Map, Value};

/// An error code with its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 400 `invalid_request`: malformed request (bad JSON, wrong content type).
    InvalidRequest,
    /// 400 `missing_field`.
    MissingField,
    /// 400 `invalid_field`.
    InvalidField,
    /// 401 `unauthorized`: missing or invalid credentials.
    Unauthorized,
    /// 403 `forbidden`.
    Forbidden,
    /// 404 `not_found`.
    NotFound,
    /// 405 `method_not_allowed`.
    MethodNotAllowed,
    /// 409 `name_taken` (spec 03).
    NameTaken,
    /// 409 `duplicate_message`: same sender and id with another signature.
    DuplicateMessage,
    /// 409 `duplicate_idempotency_key` (spec-next 08): the sender's key was used with another
    /// request.
    DuplicateIdempotencyKey,
    /// 410 `cursor_expired` (spec 12.3).
    CursorExpired,
    /// 413 `invalid_request`: the body is over the size limit.
    PayloadTooLarge,
    /// 413 `request_too_large` (spec-next 08): over a size limit (a tenant plan's message
    /// size).
    RequestTooLarge,
    /// 415 `invalid_request`: the body is not `application/json`.
    UnsupportedMediaType,
    /// 429 `rate_limited`.
    RateLimited,
    /// 400 `signature_missing` (spec 07).
    SignatureMissing,
    /// 400 `signature_invalid` (spec 07).
    SignatureInvalid,
    /// 400 `key_not_found` (spec 07).
    KeyNotFound,
    /// 403 `key_mismatch` (spec 07).
    KeyMismatch,
    /// 403 `tenant_access_denied` (spec 03).
    TenantAccessDenied,
    /// 403 `agent_suspended` (spec-next 07): the caller (or its tenant) is suspended.
    AgentSuspended,
    /// 403 `recipient_suspended` (spec-next 07): the recipient (or its tenant) is suspended.
    RecipientSuspended,
    /// 404 `recipient_not_found` (spec 06).
    RecipientNotFound,
    /// 404 `invalid_recipient` (spec 08, WebSocket).
    InvalidRecipient,
    /// 403 `provider_not_trusted` (spec 06).
    ProviderNotTrusted,
    /// 507 `mailbox_full`: the recipient's mailbox is at its quota.
    MailboxFull,
    /// 507 `storage_quota_exceeded`: the recipient's tenant holds its plan's `stored_bytes`
    /// (not a spec code: the spec names none for a tenant's storage quota).
    StorageQuotaExceeded,
    /// 500 `internal_error`.
    Internal,
    /// 501 `not_implemented`: a feature this provider does not (yet) offer.
    NotImplemented,
    /// 502 `bad_gateway`: a peer provider failed.
    BadGateway,
    /// 503 `service_unavailable`: a dependency (store, bus) is unavailable.
    Unavailable,
    /// 413 `attachment_too_large` (spec 08): over the per-attachment or per-message limit.
    AttachmentTooLarge,
    /// 400 `too_many_attachments` (spec 08).
    TooManyAttachments,
    /// 422 `attachment_rejected` (spec 05): the attachment failed its scan.
    AttachmentRejected,
    /// 404 `attachment_not_found` (spec 08).
    AttachmentNotFound,
    /// 410 `attachment_expired` (spec 08).
    AttachmentExpired,
    /// 409 `attachment_pending` (spec 05): the scan is not complete.
    AttachmentPending,
    /// 409 `attachment_already_used` (spec 04): referenced by another routed message.
    AttachmentAlreadyUsed,
    /// 422 `attachments_not_supported` (spec 06).
    AttachmentsNotSupported,
    /// 422 `invalid_digest_algorithm` (spec 08): a digest prefix other than `sha256:`.
    InvalidDigestAlgorithm,
    /// 409 `conflict`: the resource is not in a state that allows the request (a second
    /// upload to a single-use URL).
    Conflict,
    /// 403 `recipient_not_allowed`: the sender's communication policy does not allow this
    /// recipient (spec 03).
    RecipientNotAllowed,
    /// 403 `key_revoked` (spec-next 07): the message is signed with a revoked public key, or
    /// a registration presents one.
    KeyRevoked,
    /// 400 `timestamp_future` (spec-next 07, 08): the message's timestamp is more than 60 s
    /// ahead of this provider's clock.
    TimestampFuture,
    /// 410 `quarantine_expired` (spec-next 08): the quarantine entry expired unreviewed.
    QuarantineExpired,
}

impl ErrorCode {
    /// Every code, for tests and documentation.
    pub const ALL: [ErrorCode; 45] = [
        ErrorCode::InvalidRequest,
        ErrorCode::MissingField,
        ErrorCode::InvalidField,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::NameTaken,
        ErrorCode::DuplicateMessage,
        ErrorCode::DuplicateIdempotencyKey,
        ErrorCode::CursorExpired,
        ErrorCode::PayloadTooLarge,
        ErrorCode::RequestTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::RateLimited,
        ErrorCode::SignatureMissing,
        ErrorCode::SignatureInvalid,
        ErrorCode::KeyNotFound,
        ErrorCode::KeyMismatch,
        ErrorCode::TenantAccessDenied,
        ErrorCode::AgentSuspended,
        ErrorCode::RecipientSuspended,
        ErrorCode::RecipientNotFound,
        ErrorCode::InvalidRecipient,
        ErrorCode::ProviderNotTrusted,
        ErrorCode::MailboxFull,
        ErrorCode::StorageQuotaExceeded,
        ErrorCode::Internal,
        ErrorCode::NotImplemented,
        ErrorCode::BadGateway,
        ErrorCode::Unavailable,
        ErrorCode::AttachmentTooLarge,
        ErrorCode::TooManyAttachments,
        ErrorCode::AttachmentRejected,
        ErrorCode::AttachmentNotFound,
        ErrorCode::AttachmentExpired,
        ErrorCode::AttachmentPending,
        ErrorCode::AttachmentAlreadyUsed,
        ErrorCode::AttachmentsNotSupported,
        ErrorCode::InvalidDigestAlgorithm,
        ErrorCode::Conflict,
        ErrorCode::RecipientNotAllowed,
        ErrorCode::KeyRevoked,
        ErrorCode::TimestampFuture,
        ErrorCode::QuarantineExpired,
    ];

    /// The `error` string of the body.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest
            | ErrorCode::PayloadTooLarge
            | ErrorCode::UnsupportedMediaType => "invalid_request",
            ErrorCode::RequestTooLarge => "request_too_large",
            ErrorCode::MissingField => "missing_field",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::NameTaken => "name_taken",
            ErrorCode::DuplicateMessage => "duplicate_message",
            ErrorCode::DuplicateIdempotencyKey => "duplicate_idempotency_key",
            ErrorCode::CursorExpired => "cursor_expired",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::SignatureMissing => "signature_missing",
            ErrorCode::SignatureInvalid => "signature_invalid",
            ErrorCode::KeyNotFound => "key_not_found",
            ErrorCode::KeyMismatch => "key_mismatch",
            ErrorCode::TenantAccessDenied => "tenant_access_denied",
            ErrorCode::AgentSuspended => "agent_suspended",
            ErrorCode::RecipientSuspended => "recipient_suspended",
            ErrorCode::RecipientNotFound => "recipient_not_found",
            ErrorCode::InvalidRecipient => "invalid_recipient",
            ErrorCode::ProviderNotTrusted => "provider_not_trusted",
            ErrorCode::MailboxFull => "mailbox_full",
            ErrorCode::StorageQuotaExceeded => "storage_quota_exceeded",
            ErrorCode::Internal => "internal_error",
            ErrorCode::NotImplemented => "not_implemented",
            ErrorCode::BadGateway => "bad_gateway",
            ErrorCode::Unavailable => "service_unavailable",
            ErrorCode::AttachmentTooLarge => "attachment_too_large",
            ErrorCode::TooManyAttachments => "too_many_attachments",
            ErrorCode::AttachmentRejected => "attachment_rejected",
            ErrorCode::AttachmentNotFound => "attachment_not_found",
            ErrorCode::AttachmentExpired => "attachment_expired",
            ErrorCode::AttachmentPending => "attachment_pending",
            ErrorCode::AttachmentAlreadyUsed => "attachment_already_used",
            ErrorCode::AttachmentsNotSupported => "attachments_not_supported",
            ErrorCode::InvalidDigestAlgorithm => "invalid_digest_algorithm",
            ErrorCode::Conflict => "conflict",
            ErrorCode::RecipientNotAllowed => "recipient_not_allowed",
            ErrorCode::KeyRevoked => "key_revoked",
            ErrorCode::TimestampFuture => "timestamp_future",
            ErrorCode::QuarantineExpired => "quarantine_expired",
        }
    }

    /// The HTTP status.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::InvalidRequest
            | ErrorCode::MissingField
            | ErrorCode::InvalidField
            | ErrorCode::SignatureMissing
            | ErrorCode::SignatureInvalid
            | ErrorCode::KeyNotFound
            | ErrorCode::TooManyAttachments
            | ErrorCode::TimestampFuture => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden
            | ErrorCode::KeyMismatch
            | ErrorCode::TenantAccessDenied
            | ErrorCode::AgentSuspended
            | ErrorCode::RecipientSuspended
            | ErrorCode::ProviderNotTrusted
            | ErrorCode::RecipientNotAllowed
            | ErrorCode::KeyRevoked => 403,
            ErrorCode::NotFound
            | ErrorCode::RecipientNotFound
            | ErrorCode::InvalidRecipient
            | ErrorCode::AttachmentNotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::NameTaken
            | ErrorCode::DuplicateMessage
            | ErrorCode::DuplicateIdempotencyKey
            | ErrorCode::AttachmentPending
            | ErrorCode::AttachmentAlreadyUsed
            | ErrorCode::Conflict => 409,
            ErrorCode::CursorExpired
            | ErrorCode::AttachmentExpired
            | ErrorCode::QuarantineExpired => 410,
            ErrorCode::PayloadTooLarge
            | ErrorCode::RequestTooLarge
            | ErrorCode::AttachmentTooLarge => 413,
            ErrorCode::AttachmentRejected
            | ErrorCode::AttachmentsNotSupported
            | ErrorCode::InvalidDigestAlgorithm => 422,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::RateLimited => 429,
            ErrorCode::Internal => 500,
            ErrorCode::NotImplemented => 501,
            ErrorCode::BadGateway => 502,
            ErrorCode::Unavailable => 503,
            ErrorCode::MailboxFull | ErrorCode::StorageQuotaExceeded => 507,
        }
    }
}

/// An error as the API answers it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// The code (and so the status).
    pub code: ErrorCode,
    /// A human-readable sentence; never internal details for 5xx.
    pub message: String,
    /// The request field at fault, dotted (`payload.message`).
    pub field: Option<String>,
    /// Structured details.
    pub details: Option<Value>,
    /// Extra top-level members some errors carry (`suggestions`, `retry_after`, `accepted`).
    pub extra: Map<String, Value>,
}

impl ApiError {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: None,
            details: None,
            extra: Map::new(),
        }
    }

    /// Names the field at fault.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Adds structured details.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// Adds a top-level member (for example `suggestions` on `name_taken`).
    pub fn with_extra(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.to_owned(), value);
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.code.status()
    }

    /// `400 missing_field` for `field`.
    pub fn missing(field: &str) -> Self {
        Self::new(ErrorCode::MissingField, format!("{field} is required")).with_field(field)
    }

    /// `400 invalid_field` for `field`.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidField, message).with_field(field)
    }

    /// `401 unauthorized`.
    pub fn unauthorized() -> Self {
        Self::new(ErrorCode::Unauthorized, "missing or invalid API key")
    }

    /// `404 not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// `500 internal_error` with a message that reveals nothing.
    pub fn internal() -> Self {
        Self::new(ErrorCode::Internal, "internal error")
    }

    /// `503 service_unavailable`.
    pub fn unavailable() -> Self {
        Self::new(
            ErrorCode::Unavailable,
            "service temporarily unavailable, retry shortly",
        )
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let mut m = Map::new();
        m.insert("error".into(), Value::from(self.code.as_str()));
        m.insert("message".into(), Value::from(self.message.clone()));
        if let Some(f) = &self.field {
            m.insert("field".into(), Value::from(f.clone()));
        }
        if let Some(d) = &self.details {
            m.insert("details".into(), d.clone());
        }
        for (k, v) in &self.extra {
            m.entry(k.clone()).or_insert_with(|| v.clone());
        }
        Value::Object(m)
    }
}

impl Serialize for ApiError {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.body().serialize(s)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.code.as_str(),
            self.status(),
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl From<crate::message::ValidationError> for ApiError {
    fn from(e: crate::message::ValidationError) -> Self {
        use crate::message::ValidationError as V;
        let code = match e {
            V::Missing(_) => ErrorCode::MissingField,
            V::Invalid { .. } | V::TooLarge { .. } => ErrorCode::InvalidField,
            // The message as a whole, like a body over its limit: 413 (SPEC-CHECKLIST §4.22).
            V::MessageTooLarge { .. } => ErrorCode::PayloadTooLarge,
        };
        ApiError::new(code, e.to_string()).with_field(e.field())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_shape() {
        let e = ApiError::invalid("name", "bad name");
        assert_eq!(
            e.body(),
            serde_json::json!({"error":"invalid_field","message":"bad name","field":"name"})
        );
        let e = ApiError::new(ErrorCode::NameTaken, "taken")
            .with_extra("suggestions", serde_json::json!(["a-2"]));
        assert_eq!(e.status(), 409);
        assert_eq!(e.body()["suggestions"][0], "a-2");
        // An extra member never overrides the spec members.
        let e = ApiError::internal().with_extra("error", Value::from("x"));
        assert_eq!(e.body()["error"], "internal_error");
    }

    #[test]
    fn every_code_has_a_sane_status() {
        for c in ErrorCode::ALL {
            assert!((400..600).contains(&c.status()), "{c:?}");
            assert!(!c.as_str().is_empty());
        }
        assert_eq!(ErrorCode::CursorExpired.status(), 410);
        assert_eq!(ErrorCode::PayloadTooLarge.as_str(), "invalid_request");
    }
}
