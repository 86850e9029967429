//! The one error type of the SDK.

use std::path::PathBuf;

/// A boxed transport cause (HTTP or WebSocket).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with [`ClientError`].
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Everything a call to a provider (or the identity files) can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The provider answered with a non-2xx status and (usually) the spec's error body
    /// `{error, message, field?}`. A body that is not that gets `error = "http_<status>"`.
    #[error("{error}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The spec's error code (`not_found`, `signature_invalid`, …).
        error: String,
        /// The provider's human-readable message.
        message: String,
        /// The request field at fault, when the provider names one.
        field: Option<String>,
        /// Seconds from a `Retry-After` header (429, 503), when present.
        retry_after: Option<u64>,
    },
    /// An `error` frame on the WebSocket (`unauthorized`, `invalid_recipient`, …).
    #[error("{error}: {message}")]
    Socket {
        /// The error code of the frame.
        error: String,
        /// Its message.
        message: String,
    },
    /// The provider closed the WebSocket (4001 unauthorized, 4008 auth timeout, 1008 first
    /// frame not auth, 1001 idle, or no close frame at all).
    #[error("websocket closed{}: {reason}", code.map(|c| format!(" ({c})")).unwrap_or_default())]
    Closed {
        /// The close code, when the provider sent a close frame.
        code: Option<u16>,
        /// The close reason, possibly empty.
        reason: String,
    },
    /// The request never got an answer: connection refused or reset, timeout, TLS.
    #[error("transport: {0}")]
    Transport(#[source] BoxError),
    /// A 2xx answer (or a frame) that is not what the protocol says it is.
    #[error("cannot decode the {what}: {source}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// Why it failed.
        #[source]
        source: serde_json::Error,
    },
    /// An argument the SDK refuses before sending anything (bad URL, payload not JSON).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// An identity or key file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl ClientError {
    /// The protocol error code for [`ClientError::Api`] and [`ClientError::Socket`]
    /// (`"not_found"`, `"unauthorized"`, …), a fixed word for the others (`"transport"`,
    /// `"decode"`, `"closed"`, `"invalid"`, `"io"`), so callers can count errors by code.
    pub fn code(&self) -> &str {
        match self {
            Self::Api { error, .. } | Self::Socket { error, .. } => error,
            Self::Closed { .. } => "closed",
            Self::Transport(_) => "transport",
            Self::Decode { .. } => "decode",
            Self::Invalid(_) => "invalid",
            Self::Io { .. } => "io",
        }
    }

    /// The human-readable part: the provider's message, or this error's own text.
    pub fn message(&self) -> String {
        match self {
            Self::Api { message, .. } | Self::Socket { message, .. } => message.clone(),
            other => match other {
                Self::Transport(e) => error_chain(e.as_ref()),
                _ => other.to_string(),
            },
        }
    }

    /// The HTTP status of an [`ClientError::Api`] error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub(crate) fn transport(e: impl Into<BoxError>) -> Self {
        Self::Transport(e.into())
    }

    pub(crate) fn decode(what: &'static str, source: serde_json::Error) -> Self {
        Self::Decode { what, source }
    }
}

impl From<reqwest::Error> for ClientError {
    fn from(e: reqwest::Error) -> Self {
        Self::transport(e)
    }
}

impl From<tokio_tungstenite::tungstenite::Error> for ClientError {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Self {
        Self::transport(e)
    }
}

/// `outer: inner: innermost`, since reqwest's own text hides the cause ("error sending
/// request") that tells a user what to fix ("connection refused").
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_messages() {
        let e = ClientError::Api {
            status: 404,
            error: "not_found".into(),
            message: "recipient not found".into(),
            field: Some("to".into()),
            retry_after: None,
        };
        assert_eq!(e.code(), "not_found");
        assert_eq!(e.message(), "recipient not found");
        assert_eq!(e.status(), Some(404));
        assert_eq!(e.to_string(), "not_found: recipient not found");
        let c = ClientError::Closed {
            code: Some(4001),
            reason: "unauthorized".into(),
        };
        assert_eq!(c.code(), "closed");
        assert_eq!(c.to_string(), "websocket closed (4001): unauthorized");
    }
}
