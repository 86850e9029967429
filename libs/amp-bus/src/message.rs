//! The values that travel over the bus.

use std::fmt;

use bytes::Bytes;

/// A durable work-queue stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamName {
    /// Accepted messages on their way to the router (`amp.ingress.<tenant>`).
    Ingress,
    /// Messages on their way to other providers (`amp.federation.<tenant>`).
    Federation,
}

impl StreamName {
    /// Every stream, in a fixed order.
    pub const ALL: [StreamName; 2] = [StreamName::Ingress, StreamName::Federation];

    /// The stream's broker name: `AMP_INGRESS` or `AMP_FEDERATION`.
    pub const fn as_str(self) -> &'static str {
        match self {
            StreamName::Ingress => "AMP_INGRESS",
            StreamName::Federation => "AMP_FEDERATION",
        }
    }

    /// The subject filter the stream captures: `amp.ingress.>` or `amp.federation.>`.
    pub const fn subject_filter(self) -> &'static str {
        match self {
            StreamName::Ingress => "amp.ingress.>",
            StreamName::Federation => "amp.federation.>",
        }
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The W3C Trace Context headers a message may carry (`traceparent`, `tracestate`), so one
/// message is one trace across services. Both backends carry them like any other header.
pub const TRACE_CONTEXT_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

fn is_trace_header(name: &str) -> bool {
    TRACE_CONTEXT_HEADERS
        .iter()
        .any(|h| h.eq_ignore_ascii_case(name))
}

/// A message: a subject, ordered headers and an opaque payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusMessage {
    /// The subject, dot-separated tokens without wildcards (see [`crate::subjects`]).
    pub subject: String,
    /// Headers in the order they were added; names may repeat.
    pub headers: Vec<(String, String)>,
    /// The payload; the bus never looks inside.
    pub payload: Bytes,
}

impl BusMessage {
    /// A message with no headers.
    pub fn new(subject: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Self {
            subject: subject.into(),
            headers: Vec::new(),
            payload: payload.into(),
        }
    }

    /// Adds a header and returns the message.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Attaches trace context: the `traceparent` / `tracestate` pairs of `headers` replace
    /// any the message had; other names are ignored. An empty `headers` (tracing off) leaves
    /// the message as it was.
    #[must_use]
    pub fn with_trace_context(
        mut self,
        headers: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        let mut headers = headers
            .into_iter()
            .filter(|(name, _)| is_trace_header(name))
            .peekable();
        if headers.peek().is_some() {
            self.headers.retain(|(name, _)| !is_trace_header(name));
            self.headers.extend(headers);
        }
        self
    }

    /// The message's trace-context headers (`traceparent`, `tracestate`), to make the
    /// consumer's span a child of the publisher's.
    pub fn trace_context(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers
            .iter()
            .filter(|(name, _)| is_trace_header(name))
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }

    /// The first value of header `name` (names compare case-insensitively, as in NATS).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What an `Ok` from [`crate::BusBackend::publish`] proves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acceptance {
    /// A consumer acked the message: its effect (e.g. a store commit) has happened. The
    /// in-process bus answers this way, because it keeps nothing durable itself.
    Processed,
    /// A broker stored the message durably (JetStream); a consumer will process it later.
    Persisted,
}

/// The answer to a successful publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishAck {
    /// The dedup id was already seen within the dedup window; the message was not enqueued
    /// again, and this ack reports the first publish's outcome.
    pub duplicate: bool,
    /// What the ack proves.
    pub acceptance: Acceptance,
    /// With [`Acceptance::Processed`], the bytes the consumer gave to
    /// [`crate::Delivery::ack_with`] (`None` after a plain ack). Brokers always give `None`.
    pub reply: Option<Bytes>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_context_replaces_and_filters() {
        let msg = BusMessage::new("a.b", Bytes::new())
            .with_header("Amp-Id", "1")
            .with_header("Traceparent", "old")
            .with_trace_context(Vec::new());
        assert_eq!(
            msg.trace_context().collect::<Vec<_>>(),
            [("Traceparent", "old")]
        );
        let msg = msg.with_trace_context([
            ("traceparent".to_owned(), "00-new".to_owned()),
            ("tracestate".to_owned(), "k=v".to_owned()),
            ("x-other".to_owned(), "dropped".to_owned()),
        ]);
        assert_eq!(
            msg.trace_context().collect::<Vec<_>>(),
            [("traceparent", "00-new"), ("tracestate", "k=v")]
        );
        assert_eq!(msg.header("amp-id"), Some("1"));
        assert_eq!(msg.header("x-other"), None);
    }
}
