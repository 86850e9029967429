//! Agent addresses (spec 02): `name@scope.provider`.
//!
//! # Where the provider ends and the scope begins
//!
//! An address does not say how many labels its provider domain has: in
//! `bob@team.agents.corp.io` the provider may be `corp.io` or `agents.corp.io`. We decide:
//!
//! 1. **Our own configured domain first.** If the part after `@` ends with `.<our domain>`,
//!    the provider is our domain, whatever its label count, and everything before it is scope.
//! 2. **Otherwise the two-label rule the clients use**: the provider is the last two labels,
//!    the rest is scope. (Federation discovery may later try longer suffixes of a foreign
//!    domain; that is a routing concern, not a parsing one.)
//!
//! Inside the scope, the **tenant is the rightmost label** and the labels to its left are
//! platform and repo (`agents-web.github.23blocks`: tenant `23blocks`), per spec 02/03.
//! The test-vector parser ([`parse_parts`]) instead reports the whole scope as `tenant`
//! (`bob@team.acme.crabmail.ai` gives `team.acme`), which is what the vectors expect.
//!
//! Everything is lowercased; names are `[a-z0-9_-]{1,63}`, scope and domain labels
//! `[a-z0-9-]{1,63}`, and a whole address is at most 254 characters.

use std::fmt;

/// Longest address accepted, as for e-mail.
pub const MAX_ADDRESS_LEN: usize = 254;
/// Longest name or label.
pub const MAX_LABEL_LEN: usize = 63;

/// Why an address is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Empty input.
    #[error("address is empty")]
    Empty,
    /// Longer than [`MAX_ADDRESS_LEN`].
    #[error("address is longer than {MAX_ADDRESS_LEN} characters")]
    TooLong,
    /// The name part is not 1-63 of `[a-z0-9_-]`.
    #[error("agent name must be 1-63 characters of a-z, 0-9, '-' and '_'")]
    InvalidName,
    /// A scope or domain label is not 1-63 of `[a-z0-9-]`.
    #[error("address label '{0}' must be 1-63 characters of a-z, 0-9 and '-'")]
    InvalidLabel(String),
    /// The domain leaves no room for a tenant (`bob@example.com`).
    #[error("address has no tenant before its provider domain")]
    NoTenant,
    /// A short form was given where no tenant or provider is known to expand it.
    #[error("short address cannot be expanded here")]
    CannotExpand,
}

/// An address as the test vectors parse it: provider = last two labels, tenant = the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressParts {
    /// The agent name.
    pub name: String,
    /// Everything between `@` and the provider; `None` for a short form.
    pub tenant: Option<String>,
    /// The last two labels; `None` for a short form.
    pub provider: Option<String>,
    /// Whether the provider is a local-network domain (`*.local`, …); `None` for a short form.
    pub is_local: Option<bool>,
}

/// Parses an address as the spec's test vectors and the clients do (two-label provider).
///
/// Fails when the name or a label is invalid, or the address is too long.
pub fn parse_parts(input: &str) -> Result<AddressParts, AddressError> {
    let input = input.trim().to_ascii_lowercase();
    check_len(&input)?;
    let Some((name, domain)) = input.split_once('@') else {
        check_name(&input)?;
        return Ok(AddressParts {
            name: input,
            tenant: None,
            provider: None,
            is_local: None,
        });
    };
    check_name(name)?;
    let labels = split_labels(domain)?;
    if labels.len() < 3 {
        return Err(AddressError::NoTenant);
    }
    let provider = labels[labels.len() - 2..].join(".");
    Ok(AddressParts {
        name: name.to_owned(),
        tenant: Some(labels[..labels.len() - 2].join(".")),
        is_local: Some(is_local_network_domain(&provider)),
        provider: Some(provider),
    })
}

/// Whether a domain is reserved for local networks (spec 06a): `*.local`, `*.internal`,
/// `*.localhost`.
pub fn is_local_network_domain(domain: &str) -> bool {
    let d = domain.trim_end_matches('.');
    ["local", "internal", "localhost"]
        .iter()
        .any(|tld| d == *tld || d.ends_with(&format!(".{tld}")))
}

/// A full, normalised agent address.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    text: String,
    at: usize,
    provider_start: usize,
}

/// What a parser needs to know about where it runs: our provider domain, and for short forms
/// the sender's tenant.
#[derive(Debug, Clone, Copy)]
pub struct AddressContext<'a> {
    /// This provider's own domain (`crabmail.ai`).
    pub local_domain: &'a str,
    /// The tenant a bare name expands into (the sender's tenant), when known.
    pub default_tenant: Option<&'a str>,
}

impl Address {
    /// Parses a full address, or a short form expanded with `ctx` (spec 02: `bob` becomes
    /// `bob@<sender tenant>.<provider>`, `bob@acme` becomes `bob@acme.<provider>`).
    ///
    /// Fails on invalid names or labels, a missing tenant, or a short form with no tenant to
    /// expand it with.
    pub fn parse(input: &str, ctx: AddressContext<'_>) -> Result<Self, AddressError> {
        let input = input.trim().to_ascii_lowercase();
        if input.is_empty() {
            return Err(AddressError::Empty);
        }
        check_len(&input)?;
        let local = ctx.local_domain.to_ascii_lowercase();
        let (name, domain) = match input.split_once('@') {
            None => {
                let tenant = ctx.default_tenant.ok_or(AddressError::CannotExpand)?;
                check_name(&input)?;
                return Self::build(&input, &[tenant.to_ascii_lowercase()], &local);
            }
            Some(parts) => parts,
        };
        check_name(name)?;
        let labels = split_labels(domain)?;
        if labels.len() == 1 {
            // `bob@acme`: a tenant on this provider.
            return Self::build(name, &labels, &local);
        }
        if let Some(scope) = domain.strip_suffix(local.as_str()) {
            if let Some(scope) = scope.strip_suffix('.') {
                let scope: Vec<String> = scope.split('.').map(str::to_owned).collect();
                return Self::build(name, &scope, &local);
            }
            if scope.is_empty() {
                return Err(AddressError::NoTenant);
            }
        }
        if labels.len() < 3 {
            return Err(AddressError::NoTenant);
        }
        let (scope, provider) = labels.split_at(labels.len() - 2);
        Self::build(name, scope, &provider.join("."))
    }

    /// Parses a full address with no short-form expansion, where `local_domain` is ours.
    ///
    /// Fails as [`Address::parse`] does, and on any short form.
    pub fn parse_full(input: &str, local_domain: &str) -> Result<Self, AddressError> {
        if !input.contains('@') {
            return Err(AddressError::CannotExpand);
        }
        Self::parse(
            input,
            AddressContext {
                local_domain,
                default_tenant: None,
            },
        )
    }

    /// Builds an address from a name, its scope labels (left to right, tenant last) and a
    /// provider domain, validating each part.
    ///
    /// Fails when any part is invalid or the result is too long.
    pub fn build(name: &str, scope: &[String], provider: &str) -> Result<Self, AddressError> {
        let name = name.to_ascii_lowercase();
        check_name(&name)?;
        if scope.is_empty() {
            return Err(AddressError::NoTenant);
        }
        for s in scope {
            check_label(s)?;
        }
        let provider = provider.to_ascii_lowercase();
        let plabels = split_labels(&provider)?;
        if plabels.len() < 2 && provider != "localhost" {
            return Err(AddressError::InvalidLabel(provider));
        }
        let scope = scope.join(".").to_ascii_lowercase();
        let text = format!("{name}@{scope}.{provider}");
        check_len(&text)?;
        Ok(Self {
            at: name.len(),
            provider_start: text.len() - provider.len(),
            text,
        })
    }

    /// The whole address.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The agent name (local part).
    pub fn name(&self) -> &str {
        &self.text[..self.at]
    }

    /// The scope: everything between `@` and the provider (`agents-web.github.23blocks`).
    pub fn scope(&self) -> &str {
        &self.text[self.at + 1..self.provider_start - 1]
    }

    /// The tenant: the rightmost scope label.
    pub fn tenant(&self) -> &str {
        let scope = self.scope();
        scope.rsplit('.').next().unwrap_or(scope)
    }

    /// The provider domain.
    pub fn provider(&self) -> &str {
        &self.text[self.provider_start..]
    }

    /// `name@tenant.provider`: the address without platform or repo labels.
    pub fn short_address(&self) -> String {
        format!("{}@{}.{}", self.name(), self.tenant(), self.provider())
    }

    /// Whether the address has platform/repo labels beyond its tenant.
    pub fn is_scoped(&self) -> bool {
        self.scope().contains('.')
    }

    /// Whether the provider is a local-network domain (spec 06a).
    pub fn is_local_network(&self) -> bool {
        is_local_network_domain(self.provider())
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({})", self.text)
    }
}

impl serde::Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

fn check_len(s: &str) -> Result<(), AddressError> {
    if s.chars().count() > MAX_ADDRESS_LEN {
        Err(AddressError::TooLong)
    } else {
        Ok(())
    }
}

/// Whether `name` is a valid (already lowercased) agent name.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_LABEL_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Whether `label` is a valid (already lowercased) scope or domain label.
pub fn is_valid_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= MAX_LABEL_LEN
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn check_name(name: &str) -> Result<(), AddressError> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(AddressError::InvalidName)
    }
}

fn check_label(label: &str) -> Result<(), AddressError> {
    if is_valid_label(label) {
        Ok(())
    } else {
        Err(AddressError::InvalidLabel(label.to_owned()))
    }
}

fn split_labels(domain: &str) -> Result<Vec<String>, AddressError> {
    domain
        .split('.')
        .map(|l| check_label(l).map(|()| l.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CTX: AddressContext<'static> = AddressContext {
        local_domain: "crabmail.ai",
        default_tenant: Some("acme"),
    };

    #[test]
    fn our_domain_wins_over_two_label_rule() {
        let ctx = AddressContext {
            local_domain: "agents.corp.io",
            default_tenant: None,
        };
        let a = Address::parse("bob@team.agents.corp.io", ctx).expect("ours");
        assert_eq!(a.provider(), "agents.corp.io");
        assert_eq!(a.tenant(), "team");
        let b = Address::parse("bob@team.agents.other.io", ctx).expect("foreign");
        assert_eq!(b.provider(), "other.io");
        assert_eq!(b.scope(), "team.agents");
        assert_eq!(b.tenant(), "agents");
    }

    #[test]
    fn scoped_addresses_have_tenant_rightmost() {
        let a = Address::parse(
            "Backend-Architect@Agents-Web.GitHub.23blocks.CrabMail.ai",
            CTX,
        )
        .expect("valid");
        assert_eq!(
            a.as_str(),
            "backend-architect@agents-web.github.23blocks.crabmail.ai"
        );
        assert_eq!(a.tenant(), "23blocks");
        assert_eq!(a.scope(), "agents-web.github.23blocks");
        assert_eq!(a.short_address(), "backend-architect@23blocks.crabmail.ai");
        assert!(a.is_scoped());
    }

    #[test]
    fn short_forms_expand() {
        assert_eq!(
            Address::parse("bob", CTX).expect("bare").as_str(),
            "bob@acme.crabmail.ai"
        );
        assert_eq!(
            Address::parse("bob@beta", CTX).expect("tenant").as_str(),
            "bob@beta.crabmail.ai"
        );
        assert_eq!(
            Address::parse_full("bob", "crabmail.ai"),
            Err(AddressError::CannotExpand)
        );
    }

    #[test]
    fn invalid_addresses() {
        for bad in [
            "",
            "@acme.crabmail.ai",
            "bo b@acme.crabmail.ai",
            "bob@ac_me.crabmail.ai",
            "bob@.crabmail.ai",
            "bob@crabmail.ai",
            "bob@example.com",
            "bob@acme..crabmail.ai",
            "bob@acme.crabmail.ai@x",
            "../x@acme.crabmail.ai",
        ] {
            assert!(Address::parse(bad, CTX).is_err(), "{bad:?} should fail");
        }
        let long = format!(
            "{}@{}.crabmail.ai",
            "a".repeat(63),
            vec!["b".repeat(63); 3].join(".")
        );
        assert_eq!(Address::parse(&long, CTX), Err(AddressError::TooLong));
        assert_eq!(
            Address::parse(&format!("{}@acme.crabmail.ai", "a".repeat(64)), CTX),
            Err(AddressError::InvalidName)
        );
    }

    #[test]
    fn local_network_domains() {
        assert!(is_local_network_domain("aimaestro.local"));
        assert!(is_local_network_domain("x.internal"));
        assert!(is_local_network_domain("localhost"));
        assert!(!is_local_network_domain("crabmail.ai"));
        assert!(!is_local_network_domain("notlocal.io"));
    }
}
