//! The crate's error type.

/// Why a bus operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bus was shut down (or its connection is gone for good).
    #[error("the bus is closed")]
    Closed,
    /// No consumer acknowledged the message within the publish timeout. The message is still
    /// queued and may be processed later; publishing it again with the same dedup id is safe.
    #[error("timed out waiting for the message to be accepted")]
    Timeout,
    /// The message was dead-lettered (terminated by a consumer, or out of delivery attempts).
    #[error("message dead-lettered: {0}")]
    DeadLettered(String),
    /// A subject or subscription pattern is malformed.
    #[error("invalid subject: {0}")]
    InvalidSubject(String),
    /// The backend failed (broker unreachable, misuse of a stream, ...).
    #[error("bus backend error: {0}")]
    Backend(String),
}

/// The crate's result alias.
pub type Result<T> = std::result::Result<T, Error>;
