//! Whether JetStream is refusing writes for lack of space, as this process last saw it.
//!
//! JetStream answers a publish it has no room for with `503 insufficient resources` (code
//! 10023; 10047 for an account's storage limit) once its `max_file_store` or an account
//! limit is reached, but nothing a client can ask tells it so beforehand: account info shows
//! the account's limits, not the server's. So every publish this process makes (the bus's and
//! the store's) reports here: a refusal for lack of space sets the flag, any stored message
//! clears it. Readiness asks [`out_of_space`] and, while it is set, proves recovery with a
//! write of its own (see `amp-store`'s JetStream backend).

use std::sync::atomic::{AtomicBool, Ordering};

static OUT_OF_SPACE: AtomicBool = AtomicBool::new(false);

/// JetStream's error codes for a write refused for lack of space.
const SPACE_CODES: [u64; 2] = [10023, 10047];

/// Whether an error (a JetStream API error's code, or its text) is a refusal for lack of
/// space.
pub fn is_space_refusal(err_code: Option<u64>, text: &str) -> bool {
    err_code.is_some_and(|c| SPACE_CODES.contains(&c))
        || text.contains("insufficient resources")
        || text.contains("insufficient storage")
}

/// Records the result of a publish: `Some(refused_for_space)` for a refusal, `None` for a
/// stored message.
pub fn note(refused_for_space: Option<bool>) {
    match refused_for_space {
        None => {
            if OUT_OF_SPACE.swap(false, Ordering::AcqRel) {
                tracing::info!("JetStream takes writes again");
            }
        }
        Some(true) => {
            if !OUT_OF_SPACE.swap(true, Ordering::AcqRel) {
                metrics::counter!("amp_nats_out_of_space_total").increment(1);
                tracing::error!(
                    "JetStream refuses writes for lack of space (max_file_store or an account limit)"
                );
            }
        }
        Some(false) => {}
    }
}

/// Whether the last word on space was a refusal (nothing stored since).
pub fn out_of_space() -> bool {
    OUT_OF_SPACE.load(Ordering::Acquire)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn space_refusals_are_recognised_by_code_or_text() {
        assert!(is_space_refusal(Some(10023), ""));
        assert!(is_space_refusal(Some(10047), ""));
        assert!(is_space_refusal(
            None,
            "JetStream publish: insufficient resources (code 10023)"
        ));
        assert!(!is_space_refusal(Some(10071), "wrong last sequence"));
        assert!(!is_space_refusal(None, "no responders"));
    }
}
