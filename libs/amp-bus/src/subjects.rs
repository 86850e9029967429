//! Subject names, token sanitising and NATS-style wildcard matching.
//!
//! A subject is a non-empty list of tokens joined by `.`. In a subscription pattern a token
//! may be `*` (exactly one token) or, as the last token, `>` (one or more tokens). Values
//! that become tokens (tenants, agent ids) go through [`sanitise_token`], so that no value can
//! add tokens or wildcards to a subject, and distinct values give distinct subjects.

use crate::{Error, Result};

/// Broadcast when a registry entry changes (key rotated, agent deleted, webhook changed), so
/// every replica's caches invalidate.
pub const REGISTRY_CHANGED: &str = "amp.registry.changed";

/// The subject on which replicas tell each other what the rate limiter `name` counted:
/// `amp.limits.<name>` (core NATS, best effort, like notify).
pub fn limits_subject(name: &str) -> String {
    format!("amp.limits.{}", sanitise_token(name))
}

/// The per-agent notify subject: `amp.notify.<tenant>.<agent_id>`.
pub fn notify_subject(tenant: &str, agent_id: &str) -> String {
    format!(
        "amp.notify.{}.{}",
        sanitise_token(tenant),
        sanitise_token(agent_id)
    )
}

/// The subject of accepted messages on [`crate::StreamName::Ingress`]:
/// `amp.ingress.<tenant>`.
pub fn ingress_subject(tenant: &str) -> String {
    format!("amp.ingress.{}", sanitise_token(tenant))
}

/// The subject of accepted messages for one mailbox (an agent id, or a remote address) on
/// [`crate::StreamName::Ingress`]: `amp.ingress.<tenant>.<mailbox>`. A partitioned ingress
/// keeps one subject, so one mailbox, on one partition.
pub fn mailbox_ingress_subject(tenant: &str, mailbox: &str) -> String {
    format!(
        "amp.ingress.{}.{}",
        sanitise_token(tenant),
        sanitise_token(mailbox)
    )
}

/// The subject of outbound messages on [`crate::StreamName::Federation`]:
/// `amp.federation.<tenant>`.
pub fn federation_subject(tenant: &str) -> String {
    format!("amp.federation.{}", sanitise_token(tenant))
}

/// Makes `value` safe as one subject token, injectively: `%`, `.`, `*`, `>`, whitespace,
/// control characters and non-ASCII bytes are percent-encoded (`a.b` → `a%2Eb`); the empty
/// string becomes `%`, which no other value produces.
pub fn sanitise_token(value: &str) -> String {
    if value.is_empty() {
        return "%".to_owned();
    }
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        let unsafe_byte = matches!(byte, b'%' | b'.' | b'*' | b'>')
            || byte.is_ascii_whitespace()
            || byte.is_ascii_control()
            || !byte.is_ascii();
        if unsafe_byte {
            out.push_str(&format!("%{byte:02X}"));
        } else {
            out.push(char::from(byte));
        }
    }
    out
}

/// Checks a literal subject (publish, notify): non-empty tokens, no wildcards, no whitespace.
/// Fails with [`Error::InvalidSubject`].
pub fn validate_subject(subject: &str) -> Result<()> {
    for token in subject.split('.') {
        if token.is_empty() || token == "*" || token == ">" || has_bad_chars(token) {
            return Err(Error::InvalidSubject(subject.to_owned()));
        }
    }
    Ok(())
}

/// Checks a subscription pattern: non-empty tokens, `*` and `>` only as whole tokens, `>`
/// only last, no whitespace. Fails with [`Error::InvalidSubject`].
pub fn validate_pattern(pattern: &str) -> Result<()> {
    let invalid = || Error::InvalidSubject(pattern.to_owned());
    let mut tokens = pattern.split('.').peekable();
    while let Some(token) = tokens.next() {
        let is_last = tokens.peek().is_none();
        match token {
            "" => return Err(invalid()),
            "*" => {}
            ">" if is_last => {}
            ">" => return Err(invalid()),
            _ if has_bad_chars(token) => return Err(invalid()),
            _ => {}
        }
    }
    Ok(())
}

/// Whether a literal `subject` matches a valid `pattern`.
pub fn matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for pattern_token in pattern.split('.') {
        match (pattern_token, subject_tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (p, Some(s)) if p == s => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

/// Whether `pattern` has wildcards (and so cannot be looked up by exact subject).
pub fn has_wildcards(pattern: &str) -> bool {
    pattern.split('.').any(|t| t == "*" || t == ">")
}

fn has_bad_chars(token: &str) -> bool {
    token
        .chars()
        .any(|c| c == '*' || c == '>' || c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_subjects() {
        assert_eq!(notify_subject("acme", "alice"), "amp.notify.acme.alice");
        assert_eq!(ingress_subject("acme"), "amp.ingress.acme");
        assert_eq!(
            mailbox_ingress_subject("acme", "a.b"),
            "amp.ingress.acme.a%2Eb"
        );
        assert_eq!(federation_subject("acme"), "amp.federation.acme");
        assert_eq!(REGISTRY_CHANGED, "amp.registry.changed");
        assert_eq!(limits_subject("messages"), "amp.limits.messages");
    }

    #[test]
    fn sanitises_tokens_injectively() {
        assert_eq!(sanitise_token("a.b"), "a%2Eb");
        assert_eq!(sanitise_token("a*>b"), "a%2A%3Eb");
        assert_eq!(sanitise_token("a b\tc\n"), "a%20b%09c%0A");
        assert_eq!(sanitise_token("100%"), "100%25");
        assert_eq!(sanitise_token(""), "%");
        assert_eq!(sanitise_token("é"), "%C3%A9");
        assert_eq!(sanitise_token("alice@example_1-2"), "alice@example_1-2");
        assert_ne!(sanitise_token("a.b"), sanitise_token("a%2Eb"));
        let subject = notify_subject("t.*", "> x");
        assert_eq!(subject.split('.').count(), 4);
        assert!(validate_subject(&subject).is_ok());
    }

    #[test]
    fn validates_subjects_and_patterns() {
        assert!(validate_subject("a.b.c").is_ok());
        for bad in ["", "a..b", ".a", "a.", "a.*", "a.>", "a b", "a.b*"] {
            assert!(validate_subject(bad).is_err(), "{bad:?}");
        }
        for good in ["a", "a.*", "a.>", "*.b.>", ">", "*"] {
            assert!(validate_pattern(good).is_ok(), "{good:?}");
        }
        for bad in ["", "a..b", "a.>.b", "a.b*", "a.>x", "a b"] {
            assert!(validate_pattern(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn matches_wildcards() {
        assert!(matches("a.b", "a.b"));
        assert!(!matches("a.b", "a.b.c"));
        assert!(!matches("a.b.c", "a.b"));
        assert!(matches("a.*", "a.b"));
        assert!(!matches("a.*", "a.b.c"));
        assert!(!matches("a.*", "a"));
        assert!(matches("a.>", "a.b"));
        assert!(matches("a.>", "a.b.c"));
        assert!(!matches("a.>", "a"));
        assert!(matches("*.b.>", "x.b.y.z"));
        assert!(matches(">", "x"));
        assert!(has_wildcards("a.*") && has_wildcards("a.>") && !has_wildcards("a.b"));
    }
}
