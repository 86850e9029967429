//! The agent communication policy (spec 03): what an agent may declare, and the route-time
//! check that refuses a recipient a `restricted` policy does not list
//! (`403 recipient_not_allowed`).

use amp_proto::{Address, ApiError, ErrorCode};
use amp_store::{AgentRecord, CommunicationPolicy, PolicyMode};
use serde::Deserialize;

/// The most `allowed_recipients` entries a policy may hold.
pub const MAX_ALLOWED_RECIPIENTS: usize = 256;
/// The longest entry (an address is at most 254 characters).
const MAX_PATTERN_LEN: usize = 254;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyBody {
    mode: String,
    #[serde(default)]
    allowed_recipients: Option<Vec<String>>,
}

/// Reads a `communication_policy` object as registration and `PATCH /v1/agents/me` receive
/// it. Entries are kept lowercased; `open` drops any list (it allows everyone).
///
/// Fails (`400 invalid_field`, field `communication_policy`) on an unknown mode or member, more
/// than [`MAX_ALLOWED_RECIPIENTS`] entries, or an entry that is not `name@domain` with `*` only
/// as the whole name, the whole domain, or a leading `*.` label.
pub fn parse(value: &serde_json::Value) -> Result<Option<CommunicationPolicy>, ApiError> {
    let field = "communication_policy";
    let body: PolicyBody = serde_json::from_value(value.clone()).map_err(|e| {
        ApiError::invalid(
            field,
            format!("communication_policy must be {{\"mode\", \"allowed_recipients\"}}: {e}"),
        )
    })?;
    let mode = match body.mode.as_str() {
        "open" => return Ok(None),
        "restricted" => PolicyMode::Restricted,
        other => {
            return Err(ApiError::invalid(
                field,
                format!("mode must be \"open\" or \"restricted\", not {other:?}"),
            ));
        }
    };
    let entries = body.allowed_recipients.unwrap_or_default();
    if entries.len() > MAX_ALLOWED_RECIPIENTS {
        return Err(ApiError::invalid(
            field,
            format!("allowed_recipients holds at most {MAX_ALLOWED_RECIPIENTS} entries"),
        ));
    }
    let mut allowed = Vec::with_capacity(entries.len());
    for entry in entries {
        let e = entry.trim().to_ascii_lowercase();
        if !valid_pattern(&e) {
            return Err(ApiError::invalid(
                field,
                format!(
                    "allowed_recipients entry {entry:?} is not name@domain (with * as the whole name, the whole domain or a leading *. label)"
                ),
            ));
        }
        allowed.push(e);
    }
    Ok(Some(CommunicationPolicy {
        mode,
        allowed_recipients: allowed,
    }))
}

fn valid_pattern(p: &str) -> bool {
    let Some((name, domain)) = p.rsplit_once('@') else {
        return false;
    };
    let plain = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    };
    p.len() <= MAX_PATTERN_LEN
        && (name == "*" || plain(name))
        && (domain == "*" || plain(domain) || domain.strip_prefix("*.").is_some_and(plain))
}

/// Whether `pattern` (validated by [`parse`]) matches `to`, by its full or its short address.
fn matches(pattern: &str, to: &Address) -> bool {
    let Some((name, domain)) = pattern.rsplit_once('@') else {
        return false;
    };
    if name != "*" && !name.eq_ignore_ascii_case(to.name()) {
        return false;
    }
    let full = to.as_str().rsplit_once('@').map_or("", |(_, d)| d);
    let short = format!("{}.{}", to.tenant(), to.provider());
    let candidates = [full, short.as_str()];
    if domain == "*" {
        return true;
    }
    if let Some(suffix) = domain.strip_prefix('*') {
        // `*.partnercorp.ai`: any tenant (and scope) on that provider.
        return candidates
            .iter()
            .any(|d| d.len() > suffix.len() && d.to_ascii_lowercase().ends_with(suffix));
    }
    candidates.iter().any(|d| d.eq_ignore_ascii_case(domain))
}

/// Refuses `to` when the sender's policy is `restricted` and no entry matches it (spec 03:
/// `403 recipient_not_allowed`); the refusal is logged for risk review.
///
/// Fails exactly then.
pub fn check_recipient(sender: &AgentRecord, to: &Address) -> Result<(), ApiError> {
    let Some(policy) = &sender.communication_policy else {
        return Ok(());
    };
    if policy.mode == PolicyMode::Open || policy.allowed_recipients.iter().any(|p| matches(p, to)) {
        return Ok(());
    }
    tracing::info!(
        tenant = %sender.tenant,
        agent = %sender.id,
        to = %to.as_str(),
        "route refused by the sender's communication policy"
    );
    Err(ApiError::new(
        ErrorCode::RecipientNotAllowed,
        "the sender's communication policy does not allow messaging this recipient",
    )
    .with_field("to"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use amp_proto::AddressContext;
    use serde_json::json;

    fn addr(s: &str) -> Address {
        Address::parse(
            s,
            AddressContext {
                local_domain: "crabmail.ai",
                default_tenant: None,
            },
        )
        .expect("address")
    }

    fn allows(patterns: &[&str], to: &str) -> bool {
        let policy = parse(&json!({"mode": "restricted", "allowed_recipients": patterns}))
            .expect("valid")
            .expect("restricted");
        policy
            .allowed_recipients
            .iter()
            .any(|p| matches(p, &addr(to)))
    }

    #[test]
    fn the_wildcards_of_spec_03() {
        assert!(allows(&["bob@acme.crabmail.ai"], "bob@acme.crabmail.ai"));
        assert!(allows(
            &["bob@acme.crabmail.ai"],
            "bob@repo.github.acme.crabmail.ai"
        ));
        assert!(!allows(&["bob@acme.crabmail.ai"], "eve@acme.crabmail.ai"));
        assert!(allows(&["*@acme.crabmail.ai"], "eve@acme.crabmail.ai"));
        assert!(!allows(&["*@acme.crabmail.ai"], "eve@other.crabmail.ai"));
        assert!(allows(&["*@*.partnercorp.ai"], "x@t.partnercorp.ai"));
        assert!(!allows(
            &["*@*.partnercorp.ai"],
            "x@t.partnercorp.ai.evil.com"
        ));
        assert!(allows(&["*@*"], "anyone@any.where.com"));
        assert!(!allows(&[], "bob@acme.crabmail.ai"));
    }

    #[test]
    fn malformed_policies_are_refused() {
        for bad in [
            json!({"mode": "closed"}),
            json!({"mode": "restricted", "allowed_recipients": ["no-at-sign"]}),
            json!({"mode": "restricted", "allowed_recipients": ["b*b@x.com"]}),
            json!({"mode": "restricted", "allowed_recipients": ["bob@x.*.com"]}),
            json!({"mode": "restricted", "extra": 1}),
            json!("restricted"),
        ] {
            assert!(parse(&bad).is_err(), "{bad}");
        }
        assert_eq!(parse(&json!({"mode": "open"})).expect("open"), None);
    }
}
